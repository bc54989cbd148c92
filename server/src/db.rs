//! Storage: one sqlx `Any` pool over SQLite (embedded default) or PostgreSQL, and the
//! migrations, which are written once in SQL both understand.

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

/// The database pool every service function takes.
pub type Db = AnyPool;

/// Which engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Self {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

/// Migrations in order. Never edit one that has shipped: add the next.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "accounts and rooms",
        include_str!("../migrations/0001_accounts_rooms.sql"),
    ),
    (
        2,
        "meeting logs",
        include_str!("../migrations/0002_meeting_logs.sql"),
    ),
    (3, "chat", include_str!("../migrations/0003_chat.sql")),
    (
        4,
        "waiting rooms",
        include_str!("../migrations/0004_waiting_room.sql"),
    ),
    (
        5,
        "scheduled meetings",
        include_str!("../migrations/0005_scheduled_meetings.sql"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migration {version} ({description}) failed: {source}")]
    Migration {
        version: i64,
        description: &'static str,
        source: sqlx::Error,
    },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Connects and brings the schema up to date.
pub async fn connect(url: &str) -> Result<Db, DbError> {
    install_default_drivers();
    let backend = Backend::of_url(url);
    let pool = AnyPoolOptions::new()
        .max_connections(match backend {
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        })
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(DbError::Connect)?;
    if backend == Backend::Sqlite {
        // WAL lets readers proceed while one writer writes; it persists in the file.
        pool.execute("PRAGMA journal_mode = WAL")
            .await
            .map_err(DbError::Connect)?;
    }
    migrate(&pool).await?;
    Ok(pool)
}

async fn migrate(pool: &Db) -> Result<(), DbError> {
    pool.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at BIGINT NOT NULL
        )",
    )
    .await?;
    for &(version, description, sql) in MIGRATIONS {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(pool)
                .await?;
        if applied.is_some() {
            continue;
        }
        let fail = |source| DbError::Migration {
            version,
            description,
            source,
        };
        let mut tx = pool.begin().await.map_err(fail)?;
        for stmt in split_statements(sql) {
            tx.execute(stmt.as_str()).await.map_err(fail)?;
        }
        sqlx::query(
            "INSERT INTO schema_migrations (version, description, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(version)
        .bind(description)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(version, description, "applied migration");
    }
    Ok(())
}

/// Splits a migration into statements: drops `--` comments, splits on `;`.
fn split_statements(sql: &str) -> Vec<String> {
    let without_comments: String = sql
        .lines()
        .map(|l| l.split("--").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether the database answers.
pub async fn ping(pool: &Db) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}

/// Now, in unix milliseconds: the one time format stored.
pub fn now_ms() -> i64 {
    to_ms(time::OffsetDateTime::now_utc())
}

pub fn to_ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

pub fn from_ms(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Microseconds, where milliseconds cannot keep a burst in order (chat).
pub fn now_us() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000)
        .unwrap_or(i64::MAX)
}

pub fn from_us(us: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_migrations() {
        let stmts = split_statements(
            "-- head\nCREATE TABLE a (x TEXT); -- tail\n\nCREATE INDEX i ON a(x);\n",
        );
        assert_eq!(
            stmts,
            vec!["CREATE TABLE a (x TEXT)", "CREATE INDEX i ON a(x)"]
        );
        for (_, _, sql) in MIGRATIONS {
            assert!(!split_statements(sql).is_empty());
        }
    }

    #[test]
    fn millis_round_trip() {
        let t = time::macros::datetime!(2026-11-25 10:00:00.123 UTC);
        assert_eq!(from_ms(to_ms(t)), t);
    }
}
