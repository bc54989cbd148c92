//! API throughput and latency: prints figures, asserts nothing.
//!
//! `cargo bench -p convo-server --bench api` starts the real server in-process on SQLite (or on
//! PostgreSQL when `CONVO_BENCH_DATABASE_URL` names an existing, empty database) and drives it
//! over loopback HTTP. Client and server share the machine, so figures are for comparing
//! changes on one machine, not absolute capacity.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use convo_server::{Config, Server, ServerArgs};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

struct Figures {
    name: &'static str,
    n: usize,
    concurrency: usize,
    wall: Duration,
    lat: Vec<Duration>,
}

impl Figures {
    fn print(mut self) {
        self.lat.sort();
        let pct = |p: f64| {
            let i = ((self.lat.len() as f64 - 1.0) * p).round() as usize;
            self.lat[i].as_secs_f64() * 1000.0
        };
        println!(
            "{:<28} {:>6} {:>5} {:>10.0} {:>9.2} {:>9.2} {:>9.2}",
            self.name,
            self.n,
            self.concurrency,
            self.n as f64 / self.wall.as_secs_f64(),
            pct(0.5),
            pct(0.99),
            pct(1.0),
        );
    }
}

/// Runs `n` calls of `f` with `concurrency` in flight; `f` gets the call's index.
async fn run<F, Fut>(name: &'static str, n: usize, concurrency: usize, f: F) -> Figures
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let f = f.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                f(i).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    Figures {
        name,
        n,
        concurrency,
        wall: start.elapsed(),
        lat,
    }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let db = std::env::var("CONVO_BENCH_DATABASE_URL").ok();
    let backend = if db.is_some() { "postgresql" } else { "sqlite" };
    let config = Config::from_args(&ServerArgs {
        bind: "127.0.0.1:0".parse().unwrap(),
        data_dir: Some(dir.path().to_path_buf()),
        database_url: db,
        public_url: None,
        smtp_url: None,
        smtp_from: None,
        jwt_secret: None,
        cors_origins: vec![],
        ice_servers: vec![],
        turn_username: None,
        turn_credential: None,
        udp_ports: None,
        public_ip: None,
        public_ip_alongside: false,
        ice_ips: vec![],
        reconnect_grace_secs: 15,
        trusted_proxies: vec![],
        registrations_per_hour: 0,
    })
    .unwrap();
    let server = Server::start(config).await.unwrap();
    let base = Arc::new(format!("http://{}", server.addr));
    let http = reqwest::Client::new();

    println!(
        "ConvoConnect API bench on {backend}, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<28} {:>6} {:>5} {:>10} {:>9} {:>9} {:>9}",
        "operation", "n", "conc", "req/s", "p50 ms", "p99 ms", "max ms"
    );

    let (h, b) = (http.clone(), base.clone());
    run("register (argon2id hash)", 40, 2, move |i| {
        let (h, b) = (h.clone(), b.clone());
        async move {
            let r = h
                .post(format!("{b}/api/auth/register"))
                .json(&json!({"username": format!("user{i}"), "email": format!("user{i}@example.com"), "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
    })
    .await
    .print();

    let (h, b) = (http.clone(), base.clone());
    let tokens = Arc::new(std::sync::Mutex::new(Vec::new()));
    let t2 = tokens.clone();
    run("login (argon2id verify)", 40, 2, move |i| {
        let (h, b, t2) = (h.clone(), b.clone(), t2.clone());
        async move {
            let r: Value = h
                .post(format!("{b}/api/auth/login"))
                .json(&json!({"login": format!("user{i}"), "password": PASSWORD}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            t2.lock()
                .unwrap()
                .push(r["access_token"].as_str().unwrap().to_string());
        }
    })
    .await
    .print();
    let tokens: Arc<Vec<String>> = Arc::new(tokens.lock().unwrap().clone());

    let (h, b, t) = (http.clone(), base.clone(), tokens.clone());
    run("GET /api/users/me", 4000, 16, move |i| {
        let (h, b, t) = (h.clone(), b.clone(), t.clone());
        async move {
            let r = h
                .get(format!("{b}/api/users/me"))
                .bearer_auth(&t[i % t.len()])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }
    })
    .await
    .print();

    let (h, b, t) = (http.clone(), base.clone(), tokens.clone());
    let rooms = Arc::new(std::sync::Mutex::new(Vec::new()));
    let r2 = rooms.clone();
    run("POST /api/rooms", 400, 8, move |i| {
        let (h, b, t, r2) = (h.clone(), b.clone(), t.clone(), r2.clone());
        async move {
            let r: Value = h
                .post(format!("{b}/api/rooms"))
                .bearer_auth(&t[i % t.len()])
                .json(&json!({"name": format!("Room {i}"), "privacy": "public"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r2.lock()
                .unwrap()
                .push(r["id"].as_str().unwrap().to_string());
        }
    })
    .await
    .print();
    let rooms: Arc<Vec<String>> = Arc::new(rooms.lock().unwrap().clone());

    let (h, b, t) = (http.clone(), base.clone(), tokens.clone());
    run("GET /api/rooms (page of 20)", 2000, 16, move |i| {
        let (h, b, t) = (h.clone(), b.clone(), t.clone());
        async move {
            let r = h
                .get(format!("{b}/api/rooms?limit=20"))
                .bearer_auth(&t[i % t.len()])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }
    })
    .await
    .print();

    let (h, b, t, rm) = (http.clone(), base.clone(), tokens.clone(), rooms.clone());
    run("POST join + leave", 2000, 16, move |i| {
        let (h, b, t, rm) = (h.clone(), b.clone(), t.clone(), rm.clone());
        async move {
            let room = &rm[i % rm.len()];
            let tok = &t[(i / rm.len() + i) % t.len()];
            let r = h
                .post(format!("{b}/api/rooms/{room}/join"))
                .bearer_auth(tok)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{:?}", r.text().await);
            let r = h
                .post(format!("{b}/api/rooms/{room}/leave"))
                .bearer_auth(tok)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 204);
        }
    })
    .await
    .print();

    server.stop().await;
}
