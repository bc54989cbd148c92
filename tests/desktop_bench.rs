//! `desktop-bench`: figures for the desktop app, printed, not asserted. Drives the built app
//! (`CONVO_DESKTOP_BIN`, as `tests/desktop.sh` builds it) through tauri-driver under a display
//! (`xvfb-run`), with synthetic media, and measures the app's processes (the app and its
//! WebKit processes): CPU (share of one core) and memory (RSS, and PSS — shared pages counted
//! once) idle, in a 2-person and in a
//! 5-person call (the others are bots), in the 2-person call while sharing the whole screen,
//! and the time from clicking Join to the first remote frame drawn on screen.
//!
//! ```sh
//! bash tests/desktop.sh   # builds the ui and the app, installs tauri-driver
//! CONVO_DESKTOP_BIN=target/e2e/convo-desktop xvfb-run -a -s "-screen 0 1280x800x24" cargo run -p convo-e2e --bin desktop-bench
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use convo_client::call::{self, CallOptions};
use convo_e2e::webdriver::{Driver, launch};
use convo_e2e::{Backend, Env, PASSWORD};
use serde_json::json;

/// (pid, parent pid, name, cpu ticks, rss pages) of every process.
fn processes() -> Vec<(u32, u32, String, u64, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // Fields after the name: state(0) ppid(1) … utime(11) stime(12) … rss(21).
        out.push((pid, num(1) as u32, name, num(11) + num(12), num(21)));
    }
    out
}

/// The app's process and its descendants (WebKit's web and network processes).
fn app_tree() -> Vec<u32> {
    let ps = processes();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in &ps {
        children.entry(p.1).or_default().push(p.0);
    }
    let mut todo: Vec<u32> = ps
        .iter()
        .filter(|p| p.2.starts_with("convo-desktop"))
        .map(|p| p.0)
        .collect();
    let mut all = Vec::new();
    while let Some(p) = todo.pop() {
        all.push(p);
        todo.extend(children.get(&p).cloned().unwrap_or_default());
    }
    all
}

/// A process's proportional set size (KiB): its private pages, and its share of the pages it
/// shares (the WebKitGTK, JavaScriptCore and ICU libraries every WebKit process maps, which RSS
/// counts once per process).
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU (% of one core), RSS and PSS (MiB) of the app's processes over `secs`.
async fn sample(secs: u64) -> (f64, f64, f64) {
    let tree = app_tree();
    let ticks = |tree: &[u32]| -> (u64, u64) {
        processes()
            .into_iter()
            .filter(|p| tree.contains(&p.0))
            .fold((0, 0), |(t, r), p| (t + p.3, r + p.4))
    };
    let (t0, _) = ticks(&tree);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (t1, rss_pages) = ticks(&tree);
    let hz = 100.0; // USER_HZ on Linux
    let cpu = t1.saturating_sub(t0) as f64 / hz / start.elapsed().as_secs_f64() * 100.0;
    let pss: u64 = tree.iter().map(|&p| pss_kib(p)).sum();
    (
        cpu,
        rss_pages as f64 * 4096.0 / 1_048_576.0,
        pss as f64 / 1024.0,
    )
}

async fn join_by_id(d: &Driver, room: &str) -> f64 {
    d.click("button.link").await; // Home
    d.type_in("#join-id", room).await;
    d.click("#join-open").await;
    d.wait("#prejoin", 20).await;
    d.wait("#pick-mic", 30).await;
    d.click("#join").await;
    d.wait("#call", 30).await;
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let v = d
            .script(
                "return (window.__firstRemoteFrameAt ?? 0) - (window.__joinAt ?? 0)",
                json!([]),
            )
            .await;
        let ms = v.as_f64().unwrap_or(-1.0);
        if ms > 0.0 {
            return ms;
        }
        assert!(Instant::now() < end, "no remote frame");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn bots(env: &Env, tokens: Vec<String>, room: &str, secs: u64) -> Vec<tokio::task::JoinHandle<()>> {
    tokens
        .into_iter()
        .map(|t| {
            let (base, room) = (env.base.clone(), room.to_string());
            tokio::spawn(async move {
                let o = CallOptions {
                    room_id: room,
                    duration: Duration::from_secs(secs),
                    ..Default::default()
                };
                let _ = call::run(&base, &t, o).await;
            })
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let app = std::env::var("CONVO_DESKTOP_BIN").expect("CONVO_DESKTOP_BIN (see tests/desktop.sh)");
    let secs = 10;
    let env = Env::start(Backend::Sqlite).await;
    let mut tokens = Vec::new();
    for i in 0..4 {
        tokens.push(env.user(&format!("bench-bot-{i}")).await);
    }
    let me = env.user("bench-user").await;
    let (_driver, d) = launch(
        &app,
        &[("CONVO_SERVER", &env.base), ("CONVO_MEDIA", "synthetic")],
    )
    .await;
    d.type_in("#login", "bench-user").await;
    d.type_in("#password", PASSWORD).await;
    d.click("#sign-in").await;
    d.wait("#room-name", 30).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = sample(secs).await;

    let mut rows = vec![("idle (home screen)".to_string(), idle, None)];
    for (n, label) in [(1usize, "2-person call"), (4, "5-person call")] {
        let room = env.room(&me, label).await;
        let running = bots(&env, tokens[..n].to_vec(), &room, secs + 40);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let first = join_by_id(&d, &room).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let figures = sample(secs).await;
        rows.push((label.to_string(), figures, Some(first)));
        if n == 1 {
            // The same call while sharing the whole screen (X11 capture at 10 fps, encoded).
            d.click("#toggle-share").await;
            d.click("button.share-source[data-id^='x11:monitor:']")
                .await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let sharing = sample(secs).await;
            rows.push((
                "2-person call, sharing the whole screen".to_string(),
                sharing,
                None,
            ));
            d.click("#toggle-share").await;
        }
        d.click("#leave").await;
        d.wait("#room-name", 20).await;
        for b in running {
            b.abort();
        }
    }
    println!(
        "\n| desktop app (synthetic media, 320×240 15 fps) | CPU (one core) | memory (RSS, app + WebKit) | memory (PSS: shared pages once) | Join → first remote frame |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (label, (cpu, rss, pss), first) in rows {
        println!(
            "| {label} | {cpu:.1} % | {rss:.0} MiB | {pss:.0} MiB | {} |",
            first.map_or("—".into(), |ms| format!("{ms:.0} ms"))
        );
    }
    d.call(reqwest::Method::DELETE, "", None).await;
    env.stop().await;
}
