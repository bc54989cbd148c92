//! Meeting logs (the seed's "Meeting Logs Collection"): when each meeting in a room started and
//! ended, and when each participant joined and left. Written by the room actors, read at
//! `GET /api/rooms/{id}/sessions`.

use std::collections::HashMap;

use axum::extract::State;
use convo_shared::rooms::{Attendance, MeetingSession, MeetingSessionList};
use serde::Deserialize;
use sqlx::Row;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::db::{Db, from_ms, now_ms};
use crate::error::ApiResult;
use crate::extract::{Json, Query};
use crate::users::summary_from_row;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_sessions))
}

/// Records `user_id` entering the room's current meeting, starting one if none is open.
pub async fn record_join(db: &Db, room_id: &str, user_id: &str) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    // Write first (see docs/ARCHITECTURE.md): serialises concurrent first joins.
    sqlx::query("UPDATE rooms SET updated_at = updated_at WHERE id = $1")
        .bind(room_id)
        .execute(&mut *tx)
        .await?;
    let open: Option<String> = sqlx::query_scalar(
        "SELECT id FROM meeting_sessions WHERE room_id = $1 AND ended_at IS NULL",
    )
    .bind(room_id)
    .fetch_optional(&mut *tx)
    .await?;
    let session_id = match open {
        Some(id) => id,
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            sqlx::query(
                "INSERT INTO meeting_sessions (id, room_id, started_at) VALUES ($1, $2, $3)",
            )
            .bind(&id)
            .bind(room_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            id
        }
    };
    sqlx::query(
        "INSERT INTO meeting_attendance (id, session_id, user_id, joined_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(&session_id)
    .bind(user_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    // The seat: taken when they were let in, unless the leave of an earlier stay, recorded
    // after that (left and joined again at once), gave it back.
    sqlx::query(
        "INSERT INTO room_participants (room_id, user_id, joined_at) VALUES ($1, $2, $3)
         ON CONFLICT (room_id, user_id) DO NOTHING",
    )
    .bind(room_id)
    .bind(user_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Records `user_id` leaving; ends the meeting when nobody is left. Also clears their
/// participant record.
pub async fn record_leave(
    db: &Db,
    room_id: &str,
    user_id: &str,
    room_now_empty: bool,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE meeting_attendance SET left_at = $1
         WHERE user_id = $2 AND left_at IS NULL AND session_id IN
             (SELECT id FROM meeting_sessions WHERE room_id = $3 AND ended_at IS NULL)",
    )
    .bind(now)
    .bind(user_id)
    .bind(room_id)
    .execute(&mut *tx)
    .await?;
    if room_now_empty {
        sqlx::query(
            "UPDATE meeting_sessions SET ended_at = $1 WHERE room_id = $2 AND ended_at IS NULL",
        )
        .bind(now)
        .bind(room_id)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("DELETE FROM room_participants WHERE room_id = $1 AND user_id = $2")
        .bind(room_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Gives back a seat taken for someone who never got into the meeting (a WHEP offer that
/// could not be answered).
pub async fn release_seat(db: &Db, room_id: &str, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM room_participants WHERE room_id = $1 AND user_id = $2")
        .bind(room_id)
        .bind(user_id)
        .execute(db)
        .await
        .map(|_| ())
}

/// At start: nobody is connected after a restart, so open meetings end now and rooms are empty.
pub async fn recover(db: &Db) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE meeting_attendance SET left_at = $1 WHERE left_at IS NULL")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE meeting_sessions SET ended_at = $1 WHERE ended_at IS NULL")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM room_participants")
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct SessionsQuery {
    /// Number of meetings, 1 to 100 (default 20), newest first.
    limit: Option<u32>,
}

/// The room's meetings, newest first, with who attended when. Host, members and admins only.
#[utoipa::path(get, path = "/api/rooms/{id}/sessions", tag = "rooms",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Room id"), SessionsQuery),
    responses(
        (status = 200, body = MeetingSessionList),
        (status = 403, body = convo_shared::ErrorBody),
        (status = 404, body = convo_shared::ErrorBody),
    ))]
async fn list_sessions(
    State(state): State<AppState>,
    me: AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(q): Query<SessionsQuery>,
) -> ApiResult<Json<MeetingSessionList>> {
    let limit = crate::validate::page_limit(q.limit)?;
    crate::rooms::require_member(
        &state,
        &id,
        &me,
        "Only the room's host and members can read its meeting logs.",
    )
    .await?;
    let rows = sqlx::query(
        "SELECT id, started_at, ended_at FROM meeting_sessions WHERE room_id = $1
         ORDER BY started_at DESC, id DESC LIMIT $2",
    )
    .bind(&id)
    .bind(i64::from(limit))
    .fetch_all(&state.db)
    .await?;
    let now = now_ms();
    let mut sessions = Vec::with_capacity(rows.len());
    let mut index = HashMap::new();
    for row in &rows {
        let sid: String = row.try_get("id")?;
        let started: i64 = row.try_get("started_at")?;
        let ended: Option<i64> = row.try_get("ended_at")?;
        index.insert(sid.clone(), sessions.len());
        sessions.push(MeetingSession {
            id: sid,
            room_id: id.clone(),
            started_at: from_ms(started),
            ended_at: ended.map(from_ms),
            duration_seconds: u64::try_from((ended.unwrap_or(now) - started) / 1000).unwrap_or(0),
            attendance: Vec::new(),
        });
    }
    if !sessions.is_empty() {
        let placeholders: Vec<String> = (1..=sessions.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT a.session_id, a.joined_at, a.left_at, a.user_id, u.username, u.display_name,
                    u.avatar_type, u.avatar_version
             FROM meeting_attendance a JOIN users u ON u.id = a.user_id
             WHERE a.session_id IN ({}) ORDER BY a.joined_at, a.id",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for s in &sessions {
            query = query.bind(s.id.clone());
        }
        for row in query.fetch_all(&state.db).await? {
            let sid: String = row.try_get("session_id")?;
            let joined: i64 = row.try_get("joined_at")?;
            let left: Option<i64> = row.try_get("left_at")?;
            if let Some(&i) = index.get(&sid) {
                sessions[i].attendance.push(Attendance {
                    user: summary_from_row(&row)?,
                    joined_at: from_ms(joined),
                    left_at: left.map(from_ms),
                });
            }
        }
    }
    Ok(Json(MeetingSessionList { sessions }))
}
