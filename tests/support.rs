//! Harness for end-to-end tests: a real server on loopback over SQLite or a fresh PostgreSQL
//! database, and helpers to make accounts and rooms through the client engine's REST client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod chromium;
pub mod webdriver;
#[cfg(target_os = "linux")]
pub mod x11;

use convo_client::api::Api;
use convo_server::{Config, Server, ServerArgs};
use convo_shared::auth::RegisterRequest;
use convo_shared::rooms::{CreateRoomRequest, Privacy};
use sqlx::Connection;

pub const PASSWORD: &str = "correct horse battery";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named test function once per database.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(convo_e2e::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(convo_e2e::Backend::Postgres).await
            }
        }
    )*};
}

fn postgres_admin_url() -> String {
    std::env::var("CONVO_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// `CONVO_TEST_LOG=convo_server=debug` (a tracing filter) shows the logs of the clients
/// running in the test's process with the test's output ([`test_logging`] does it for a
/// server process).
pub fn client_logging() {
    if let Ok(filter) = std::env::var("CONVO_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A running server and what it runs on; the PostgreSQL database is dropped at the end.
pub struct Env {
    pub server: Option<Server>,
    pub base: String,
    pub api: Api,
    _dir: tempfile::TempDir,
    pg_database: Option<String>,
}

impl Env {
    pub async fn start(backend: Backend) -> Env {
        client_logging();
        let dir = tempfile::tempdir().unwrap();
        let (database_url, pg_database) = match backend {
            Backend::Sqlite => (None, None),
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("convo_e2e_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("PostgreSQL is not reachable at {admin} ({e}); see .ci/run")
                    });
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                (Some(format!("{base}/{name}")), Some(name))
            }
        };
        let config = Config::from_args(&ServerArgs {
            bind: "127.0.0.1:0".parse().unwrap(),
            data_dir: Some(dir.path().to_path_buf()),
            database_url,
            public_url: None,
            smtp_url: None,
            smtp_from: None,
            jwt_secret: None,
            cors_origins: vec![],
            ice_servers: vec![],
            turn_username: None,
            turn_credential: None,
            reconnect_grace_secs: 15,
            udp_ports: None,
            public_ip: None,
            public_ip_alongside: false,
            ice_ips: vec!["127.0.0.1".parse().unwrap()],
            trusted_proxies: vec![],
            registrations_per_hour: 0,
        })
        .unwrap();
        let server = Server::start(config).await.unwrap();
        let base = format!("http://{}", server.addr);
        Env {
            api: Api::new(&base),
            base,
            server: Some(server),
            _dir: dir,
            pg_database,
        }
    }

    /// Registers `name` and signs in; the access token.
    pub async fn user(&self, name: &str) -> String {
        register(&self.api, name).await
    }

    pub async fn room(&self, token: &str, name: &str) -> String {
        public_room(&self.api, token, name).await
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let Some(name) = self.pg_database.take() else {
            return;
        };
        let admin = postgres_admin_url();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Registers `name` (password [`PASSWORD`]) on the server `api` talks to and signs in; the
/// access token.
pub async fn register(api: &Api, name: &str) -> String {
    api.register(&RegisterRequest {
        username: name.into(),
        email: format!("{name}@example.com"),
        password: PASSWORD.into(),
        display_name: None,
    })
    .await
    .unwrap();
    api.login(name, PASSWORD).await.unwrap().access_token
}

/// A public room without a password or a waiting room, owned by the holder of `token`.
pub async fn public_room(api: &Api, token: &str, name: &str) -> String {
    api.create_room(
        token,
        &CreateRoomRequest {
            name: name.into(),
            privacy: Privacy::Public,
            password: None,
            max_participants: None,
            expires_at: None,
            waiting_room: false,
        },
    )
    .await
    .unwrap()
    .id
}

/// A public room for up to 500 participants (the benches' load), owned by the holder of
/// `token`.
pub async fn bench_room(api: &Api, token: &str) -> String {
    api.create_room(
        token,
        &CreateRoomRequest {
            name: "bench".into(),
            privacy: Privacy::Public,
            password: None,
            max_participants: Some(500),
            expires_at: None,
            waiting_room: false,
        },
    )
    .await
    .unwrap()
    .id
}

/// Sets the logging of a server process a test starts: `CONVO_TEST_LOG`'s filter, to the
/// test's output, when it is set; warnings, to nowhere, otherwise.
pub fn test_logging(cmd: &mut std::process::Command) -> &mut std::process::Command {
    let filter = std::env::var("CONVO_TEST_LOG").ok();
    cmd.env("CONVO_LOG", filter.as_deref().unwrap_or("warn"))
        .stdout(if filter.is_some() {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        })
}

/// Waits until a server answers at `api`'s address (any answer of the API, a refusal
/// included); fails the test after 30 s.
pub async fn wait_until_serving(api: &Api) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while api
        .login("nobody", "x")
        .await
        .is_err_and(|e| e.to_string().contains("reach"))
    {
        assert!(
            std::time::Instant::now() < end,
            "no server answered at {} within 30 s",
            api.base()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Polls `ok` every 100 ms until it holds; fails the test after `secs` seconds, naming `what`.
pub async fn until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    until_async(what, secs, || std::future::ready(ok())).await;
}

/// [`until`] for a condition that has to be awaited (a request to the server).
pub async fn until_async<F: Future<Output = bool>>(
    what: &str,
    secs: u64,
    mut ok: impl FnMut() -> F,
) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !ok().await {
        assert!(
            std::time::Instant::now() < end,
            "not within {secs} s: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A binary of the workspace in the target directory (`convo-server`, `convo-bot`): `cargo
/// test --workspace` builds them (a package's binaries are built for its integration tests);
/// alone, `cargo build --workspace --bins`.
pub fn binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --workspace --bins)",
        bin.display()
    );
    bin
}

/// (CPU seconds used, resident memory in KiB) of a process, from /proc.
pub fn proc_usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of stat; after the ")" they are 12th and 13th.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    (ticks / 100.0, rss)
}
