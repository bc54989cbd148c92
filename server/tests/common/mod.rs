//! Test harness: the real server on a loopback port over a real database (a SQLite file in a
//! temporary directory, or a fresh PostgreSQL database created and dropped per test), an HTTP
//! client, and an SMTP sink that receives the server's mail over TCP.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;

use base64::Engine;
use convo_server::{Config, Server, ServerArgs};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

pub mod ws;

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
pub const PASSWORD: &str = "correct horse battery";

/// Runs each named test function once per database.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await
            }
        }
    )*};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where PostgreSQL is; the tests fail (never skip) when it is not reachable.
pub fn postgres_admin_url() -> String {
    std::env::var("CONVO_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A data directory and a database, kept across server restarts within one test.
pub struct TestEnv {
    pub backend: Backend,
    pub data_dir: tempfile::TempDir,
    pub database_url: String,
    pg_database: Option<String>,
    pub smtp_url: Option<String>,
    /// `None` lets the server generate and keep its own signing secret.
    pub jwt_secret: Option<String>,
    /// How long a dropped signaling connection keeps its place.
    pub grace_secs: u64,
    /// `CONVO_TRUSTED_PROXIES`.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `CONVO_REGISTRATIONS_PER_HOUR`.
    pub registrations_per_hour: u32,
    /// Access tokens' lifetime, when not the default 15 minutes.
    pub access_ttl: Option<std::time::Duration>,
}

impl TestEnv {
    pub async fn new(backend: Backend) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let (database_url, pg_database) =
            match backend {
                Backend::Sqlite => (
                    format!(
                        "sqlite://{}?mode=rwc",
                        data_dir.path().join("convo.db").display()
                    ),
                    None,
                ),
                Backend::Postgres => {
                    let admin = postgres_admin_url();
                    let name = format!(
                        "convo_test_{}_{}",
                        std::process::id(),
                        uuid::Uuid::new_v4().simple()
                    );
                    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is not reachable at {admin} ({e}). Start it (see .ci/run) \
                         or point CONVO_TEST_POSTGRES at one."
                    )
                });
                    sqlx::query(&format!("CREATE DATABASE {name}"))
                        .execute(&mut conn)
                        .await
                        .expect("create test database");
                    conn.close().await.ok();
                    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                    (format!("{base}/{name}"), Some(name))
                }
            };
        TestEnv {
            backend,
            data_dir,
            database_url,
            pg_database,
            smtp_url: None,
            jwt_secret: Some(SECRET.to_string()),
            grace_secs: 15,
            trusted_proxies: Vec::new(),
            registrations_per_hour: 30,
            access_ttl: None,
        }
    }

    pub fn config(&self) -> Config {
        let args = ServerArgs {
            bind: "127.0.0.1:0".parse().expect("addr"),
            data_dir: Some(self.data_dir.path().to_path_buf()),
            database_url: Some(self.database_url.clone()),
            public_url: Some("https://meet.example.com".into()),
            smtp_url: self.smtp_url.clone(),
            smtp_from: None,
            jwt_secret: self.jwt_secret.clone(),
            cors_origins: vec!["http://localhost:5173".into()],
            ice_servers: vec!["stun:stun.example.com:3478".into()],
            turn_username: None,
            turn_credential: None,
            udp_ports: None,
            public_ip: None,
            public_ip_alongside: false,
            ice_ips: vec!["127.0.0.1".parse().expect("loopback")],
            reconnect_grace_secs: self.grace_secs,
            trusted_proxies: self.trusted_proxies.clone(),
            registrations_per_hour: self.registrations_per_hour,
        };
        let mut config = Config::from_args(&args).expect("config");
        if let Some(ttl) = self.access_ttl {
            config.access_token_ttl = ttl;
        }
        config
    }

    pub async fn start(&self) -> TestServer {
        if std::env::var_os("CONVO_TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    "debug,sqlx=warn,hyper=info",
                ))
                .with_test_writer()
                .try_init();
        }
        let server = Server::start(self.config()).await.expect("server starts");
        TestServer::new(server)
    }

    pub fn data_path(&self) -> PathBuf {
        self.data_dir.path().to_path_buf()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let Some(name) = self.pg_database.take() else {
            return;
        };
        let admin = postgres_admin_url();
        // Drop runs outside async; use a runtime of our own on a plain thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
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

/// A running server and a client for it.
pub struct TestServer {
    pub server: Server,
    pub base: String,
    pub http: reqwest::Client,
}

/// An answer: status, JSON body (or `Null`), headers.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Reply {
    /// The error code of an error answer, after checking the envelope's shape.
    pub fn code(&self) -> &str {
        let err = self
            .body
            .get("error")
            .unwrap_or_else(|| panic!("not an error envelope: {} {}", self.status, self.body));
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.body
        );
        err["code"].as_str().expect("code is a string")
    }

    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected answer: {}",
            self.body
        );
        &self.body
    }

    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected answer: {}",
            self.body
        );
        assert_eq!(self.code(), code, "{}", self.body);
    }
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub access: String,
    pub refresh: String,
    pub user: Value,
}

impl Session {
    pub fn id(&self) -> &str {
        self.user["id"].as_str().expect("user id")
    }

    /// The session id inside the access token.
    pub fn session_id(&self) -> String {
        let payload = self.access.split('.').nth(1).expect("jwt payload");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64");
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        v["sid"].as_str().expect("sid").to_string()
    }
}

impl TestServer {
    pub fn new(server: Server) -> Self {
        let base = format!("http://{}", server.addr);
        TestServer {
            server,
            base,
            http: reqwest::Client::new(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body").to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_client_error() || status.is_server_error() {
            assert!(
                headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/json")),
                "error answers are JSON: {status} {:?}",
                String::from_utf8_lossy(&bytes)
            );
            assert_ne!(status.as_u16(), 500, "server error: {body}");
        }
        Reply {
            status,
            body,
            headers,
            bytes,
        }
    }

    pub fn req(&self, method: Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut r = self.req(method, path, token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        self.send(r).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    pub async fn register(&self, username: &str) -> Value {
        self.post(
            "/api/auth/register",
            None,
            json!({"username": username, "email": format!("{username}@example.com"), "password": PASSWORD}),
        )
        .await
        .expect(201)
        .clone()
    }

    pub async fn login(&self, login: &str, password: &str) -> Reply {
        self.post(
            "/api/auth/login",
            None,
            json!({"login": login, "password": password}),
        )
        .await
    }

    pub async fn session(&self, login: &str, password: &str) -> Session {
        let r = self.login(login, password).await;
        let b = r.expect(200);
        Session {
            access: b["access_token"].as_str().expect("access").to_string(),
            refresh: b["refresh_token"].as_str().expect("refresh").to_string(),
            user: b["user"].clone(),
        }
    }

    /// Registers `username` and signs in.
    pub async fn user(&self, username: &str) -> Session {
        self.register(username).await;
        self.session(username, PASSWORD).await
    }

    pub async fn create_room(&self, s: &Session, body: Value) -> Value {
        self.post("/api/rooms", Some(&s.access), body)
            .await
            .expect(201)
            .clone()
    }

    /// Creates a room and gives its id.
    pub async fn room_id(&self, s: &Session, body: Value) -> String {
        self.create_room(s, body).await["id"]
            .as_str()
            .expect("a room id")
            .to_string()
    }
}

/// A mail the sink received.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

/// A minimal SMTP server on loopback that accepts every mail and hands it to the test.
pub struct SmtpSink {
    pub url: String,
    rx: mpsc::UnboundedReceiver<Mail>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = serve_smtp(sock, tx).await;
                });
            }
        });
        SmtpSink {
            url: format!("smtp://{addr}"),
            rx,
        }
    }

    /// The next mail; fails the test if none arrives within 20 s.
    pub async fn next(&mut self) -> Mail {
        tokio::time::timeout(std::time::Duration::from_secs(20), self.rx.recv())
            .await
            .expect("a mail arrives")
            .expect("sink open")
    }
}

async fn serve_smtp(
    sock: tokio::net::TcpStream,
    tx: mpsc::UnboundedSender<Mail>,
) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut lines = BufReader::new(r);
    w.write_all(b"220 sink.test ESMTP\r\n").await?;
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            w.write_all(b"250-sink.test\r\n250 8BITMIME\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            from = cmd[10..].trim().to_string();
            to.clear();
            w.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(cmd[8..].trim().trim_matches(['<', '>']).to_string());
            w.write_all(b"250 OK\r\n").await?;
        } else if upper == "DATA" {
            w.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(&line);
            }
            let _ = tx.send(Mail {
                from: from.clone(),
                to: to.clone(),
                data,
            });
            w.write_all(b"250 queued\r\n").await?;
        } else if upper == "QUIT" {
            w.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            w.write_all(b"250 OK\r\n").await?;
        }
    }
}

/// Undoes quoted-printable (soft line breaks and `=XX`), which long lines get.
pub fn unquote(mail: &str) -> String {
    let joined = mail.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

pub fn reset_token(mail: &str) -> String {
    let mail = unquote(mail);
    let start = mail.find("token=").expect("link in mail") + "token=".len();
    mail[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// Waits until `ok` holds (asked every 50 ms); fails the test after `within`.
pub async fn until(what: &str, within: std::time::Duration, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
