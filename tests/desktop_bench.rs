//! `desktop-bench`: figures for the desktop app beside Debian's Chromium holding the same call,
//! printed, not asserted. Drives the built app (`CONVO_DESKTOP_BIN`, as `tests/desktop.sh`
//! builds it) through tauri-driver under a display (`xvfb-run`) with synthetic media at
//! 1280×720 30 fps; then opens `tests/interop/call_bench.html` in Chromium on the same display,
//! which publishes its fake 720p30 camera by WHIP (simulcast, as the app does), shows it as a
//! self view and watches every other participant by WHEP at the size of its tile (the SFU then
//! sends the layer that fills it, as for the app's tiles). The others are bots publishing
//! 720p30 synthetic cameras, the same for both clients.
//!
//! Rows: idle (signed in at the home screen; Chromium: an empty page), a 2-, 5- and 9-person
//! call, and the 2-person call while sharing the whole screen (the display should be
//! 1920×1080). For each client: CPU (all its processes summed, share of one core), memory (RSS
//! summed, and PSS: shared pages counted once), and the time from joining (the app: clicking
//! Join; Chromium: starting to publish, its camera already open) to the first remote frame
//! drawn. `--json` prints one JSON array instead of the table, an object per row and client.
//!
//! Media stays on loopback: the bench runs itself in a network namespace of its own with only
//! `lo` (`unshare --net`; needs root), so ICE sees no other address; `--no-netns` skips that.
//!
//! ```sh
//! bash tests/desktop.sh   # builds the ui and the app, installs tauri-driver
//! cargo build --release -p convo-e2e --bin desktop-bench
//! CONVO_DESKTOP_BIN=target/e2e/convo-desktop PATH="$HOME/.cargo/bin:$PATH" \
//!   xvfb-run -a -s "-screen 0 1920x1080x24" target/release/desktop-bench
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use convo_client::call::{self, CallHandle, CallOptions};
use convo_client::synth::VideoSize;
use convo_e2e::chromium::{self, Browser};
use convo_e2e::webdriver::{Driver, launch};
use convo_e2e::{Backend, Env, PASSWORD, bench_room};
use serde_json::json;

/// How long each row is measured.
const SECS: u64 = 10;
/// The camera every participant sends.
const CAMERA: VideoSize = VideoSize {
    width: 1280,
    height: 720,
};
const FPS: u32 = 30;
/// The calls: the other participants (bots) and the row's name.
const CALLS: [(usize, &str); 3] = [(1, "2-person"), (4, "5-person"), (8, "9-person")];
/// How many times the app joins a 2-person call for the join → first frame figures.
const JOINS: usize = 10;
/// Set in the namespace the bench runs itself in.
const IN_NETNS: &str = "CONVO_BENCH_IN_NETNS";

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

/// Which processes are a client's.
#[derive(Clone, Copy)]
enum Client {
    /// The app's process and its descendants (WebKit's web and network processes).
    Convo,
    /// The browser and its descendants (zygotes, renderers, the GPU and utility processes).
    Chromium(u32),
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Convo => "convo",
            Client::Chromium(_) => "chromium",
        }
    }

    fn tree(self) -> Vec<u32> {
        let ps = processes();
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for p in &ps {
            children.entry(p.1).or_default().push(p.0);
        }
        let mut todo: Vec<u32> = match self {
            Client::Convo => ps
                .iter()
                .filter(|p| p.2.starts_with("convo-desktop"))
                .map(|p| p.0)
                .collect(),
            Client::Chromium(pid) => vec![pid],
        };
        let mut all = Vec::new();
        while let Some(p) = todo.pop() {
            all.push(p);
            todo.extend(children.get(&p).cloned().unwrap_or_default());
        }
        all
    }
}

/// A process's proportional set size (KiB): its private pages, and its share of the pages it
/// shares (the WebKitGTK or Chromium libraries every process of a client maps, which RSS counts
/// once per process).
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

/// One row's figures for one client.
struct Figures {
    row: &'static str,
    client: &'static str,
    cpu_percent: f64,
    rss_mib: f64,
    pss_mib: f64,
    first_frame_ms: Option<f64>,
    /// Capture → drawn, p50 and p99 (ms), of the frames read back from a remote tile.
    glass_ms: Option<(u32, u32)>,
}

/// CPU (% of one core), RSS and PSS (MiB) of a client's processes over [`SECS`].
async fn sample(client: Client, row: &'static str, first_frame_ms: Option<f64>) -> Figures {
    let tree = client.tree();
    let ticks = |tree: &[u32]| -> (u64, u64) {
        processes()
            .into_iter()
            .filter(|p| tree.contains(&p.0))
            .fold((0, 0), |(t, r), p| (t + p.3, r + p.4))
    };
    let (t0, _) = ticks(&tree);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(SECS)).await;
    let (t1, rss_pages) = ticks(&tree);
    let hz = 100.0; // USER_HZ on Linux
    let cpu = t1.saturating_sub(t0) as f64 / hz / start.elapsed().as_secs_f64() * 100.0;
    let pss: u64 = tree.iter().map(|&p| pss_kib(p)).sum();
    Figures {
        row,
        client: client.name(),
        cpu_percent: cpu,
        rss_mib: rss_pages as f64 * 4096.0 / 1_048_576.0,
        pss_mib: pss as f64 / 1024.0,
        first_frame_ms,
        glass_ms: None,
    }
}

/// Glass to glass: how old each of a remote tile's frames was when the app drew it (the bot's
/// capture stamp, read back from the drawn pixels, against the draw time; one clock), over
/// `n` distinct frames: (p50, p99) in ms.
async fn glass_to_glass(d: &Driver, n: usize) -> Option<(u32, u32)> {
    let tile = "canvas[data-track$=':video']:not([data-track^='local:'])";
    let (mut ages, mut seen) = (Vec::new(), std::collections::HashSet::new());
    let end = Instant::now() + Duration::from_secs(120);
    while ages.len() < n && Instant::now() < end {
        let drawn = d.drawn(tile).await;
        if let (Some(code), Some(age)) = (drawn.code, drawn.age_ms())
            && seen.insert(code.counter)
        {
            ages.push(age);
        }
    }
    ages.sort_unstable();
    let at = |q: f64| ages[((ages.len() - 1) as f64 * q).round() as usize];
    (!ages.is_empty()).then(|| (at(0.5), at(0.99)))
}

/// Waits for `what` to hold (polled), up to `secs`; says so on stderr when it does not (the
/// figures are taken anyway, and marked by the message).
async fn settle(what: &str, secs: u64, mut holds: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !holds().await {
        if Instant::now() > end {
            eprintln!("desktop-bench: {what} did not happen within {secs} s; measuring anyway");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Joins `room` from the home screen; the time from clicking Join to the first remote frame
/// drawn, then waits until `remotes` remote videos are drawing.
async fn app_join(d: &Driver, room: &str, remotes: usize) -> f64 {
    d.click("button.link").await; // Home
    d.type_in("#join-id", room).await;
    d.click("#join-open").await;
    d.wait("#prejoin", 20).await;
    d.wait("#pick-mic", 30).await;
    d.click("#join").await;
    d.wait("#call", 30).await;
    let mut first = 0.0;
    settle("the first remote frame (app)", 60, async || {
        let v = d
            .script(
                "return (window.__firstRemoteFrameAt ?? 0) - (window.__joinAt ?? 0)",
                json!([]),
            )
            .await;
        first = v.as_f64().unwrap_or(-1.0);
        first > 0.0
    })
    .await;
    settle("every remote video drawing (app)", 60, async || {
        let n = d
            .script(
                "return [...document.querySelectorAll(\"canvas[data-track$=':video']\")]\
                 .filter((c) => !c.dataset.track.startsWith('local:') && Number(c.dataset.frames) > 0).length",
                json!([]),
            )
            .await;
        n.as_u64().unwrap_or(0) as usize >= remotes
    })
    .await;
    first
}

/// `n` bots in `room`, each sending a 720p30 synthetic camera and a tone, and watching the
/// others at a small size (as in a grid: their decoding is not what is measured).
async fn bots(env: &Env, tokens: &[String], room: &str) -> Vec<CallHandle> {
    let mut out = Vec::new();
    for t in tokens {
        let o = CallOptions {
            room_id: room.to_string(),
            duration: Duration::from_secs(600),
            fps: FPS,
            video_size: CAMERA,
            view: Some((320, 180)),
            ice_ips: vec!["127.0.0.1".parse().unwrap()],
            ..Default::default()
        };
        out.push(
            call::start(&env.base, t, o, None)
                .await
                .expect("a bot joins the call"),
        );
    }
    out
}

async fn leave(bots: Vec<CallHandle>) {
    for b in bots {
        let _ = b.leave().await;
    }
}

/// The app's rows.
async fn app_rows(env: &Env, bot_tokens: &[String], out: &mut Vec<Figures>, joins: &mut Vec<f64>) {
    let app = std::env::var("CONVO_DESKTOP_BIN").expect("CONVO_DESKTOP_BIN (see tests/desktop.sh)");
    let me = env.user("bench-user").await;
    let (driver, d) = launch(
        &app,
        &[
            ("CONVO_SERVER", &env.base),
            ("CONVO_MEDIA", "synthetic"),
            ("CONVO_SYNTH_VIDEO", "1280x720@30"),
            ("CONVO_ICE_IPS", "127.0.0.1"),
        ],
    )
    .await;
    d.type_in("#login", "bench-user").await;
    d.type_in("#password", PASSWORD).await;
    d.click("#sign-in").await;
    d.wait("#room-name", 30).await;
    // Past start-up work (the first paint, fonts, the session check).
    tokio::time::sleep(Duration::from_secs(3)).await;
    out.push(sample(Client::Convo, "idle", None).await);
    for (n, row) in CALLS {
        let room = bench_room(&env.api, &me).await;
        let running = bots(env, &bot_tokens[..n], &room).await;
        let first = app_join(&d, &room, n).await;
        out.push(sample(Client::Convo, row, Some(first)).await);
        if n == 1 {
            out.last_mut().unwrap().glass_ms = glass_to_glass(&d, 200).await;
            // The same call while sharing the whole screen (X11 capture at 10 fps, encoded).
            d.click("#toggle-share").await;
            d.click("button.share-source[data-id^='x11:monitor:']")
                .await;
            settle("the screen share drawing (app)", 60, async || {
                let n = d
                    .script(
                        "const c = document.querySelector(\"canvas[data-track='local:screen']\");\
                         return c ? Number(c.dataset.frames) : 0",
                        json!([]),
                    )
                    .await;
                n.as_u64().unwrap_or(0) > 0
            })
            .await;
            out.push(sample(Client::Convo, "share", None).await);
            d.click("#toggle-share").await;
        }
        d.click("#leave").await;
        d.wait("#room-name", 20).await;
        leave(running).await;
    }
    // Join → first remote frame, joined again and again (a fresh call each time, one bot).
    let room = bench_room(&env.api, &me).await;
    let running = bots(env, &bot_tokens[..1], &room).await;
    for _ in 0..JOINS {
        let ms = app_join(&d, &room, 1).await;
        joins.push(ms);
        d.click("#leave").await;
        d.wait("#room-name", 20).await;
    }
    leave(running).await;
    d.call(reqwest::Method::DELETE, "", None).await;
    drop(driver);
}

/// Chromium with the bench's flags, on the display the app used.
fn browser(fragment: &str) -> Browser {
    chromium::launch(
        &[],
        &format!("call_bench.html#{fragment}"),
        &[
            "--window-size=1280,800",
            "--autoplay-policy=no-user-gesture-required",
            // Only `lo` is here: let WebRTC gather on it.
            "--allow-loopback-in-peer-connection",
            // Share the whole screen without asking.
            "--auto-select-desktop-capture-source=Entire screen",
        ],
    )
}

/// Chromium's rows: the same calls, from a page.
async fn chromium_rows(env: &Env, bot_tokens: &[String], out: &mut Vec<Figures>) {
    let publisher = env.user("bench-browser").await;
    let viewers = [publisher.clone(), env.user("bench-browser-2").await];
    let sharer = env.user("bench-browser-share").await;
    {
        let mut b = browser("");
        b.said(60, "that it is idle").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        out.push(sample(Client::Chromium(b.pid()), "idle", None).await);
    }
    for (n, row) in CALLS {
        let shares: &[bool] = if n == 1 { &[false, true] } else { &[false] };
        for &share in shares {
            let room = bench_room(&env.api, &publisher).await;
            let running = bots(env, &bot_tokens[..n], &room).await;
            let peers: Vec<&str> = running.iter().map(|b| b.participant_id.as_str()).collect();
            let mut fragment = format!(
                "base={}&room={room}&token={publisher}&viewers={}&peers={}&width={}&height={}&fps={FPS}",
                env.base,
                viewers.join(","),
                peers.join(","),
                CAMERA.width,
                CAMERA.height,
            );
            if share {
                fragment.push_str(&format!("&sharer={sharer}"));
            }
            let mut b = browser(&fragment);
            let mut first = None;
            loop {
                let said = b.said(90, "that it is in the call").await;
                match said["state"].as_str() {
                    Some("first-frame") => first = said["ms"].as_f64(),
                    Some("in-call") => break,
                    _ => panic!("the browser's call failed: {said}"),
                }
            }
            // Past the joining work (the first key frames, the estimates ramping up).
            tokio::time::sleep(Duration::from_secs(3)).await;
            let (row, first) = if share { ("share", None) } else { (row, first) };
            out.push(sample(Client::Chromium(b.pid()), row, first).await);
            drop(b);
            leave(running).await;
        }
    }
}

fn print_table(rows: &[Figures]) {
    println!(
        "\n| 720p30 synthetic camera | app CPU (one core) | Chromium CPU | app ÷ Chromium | app RSS (PSS) | Chromium RSS (PSS) | join → first remote frame, app / Chromium |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let ms = |f: &Figures| {
        f.first_frame_ms
            .map_or("—".into(), |ms| format!("{ms:.0} ms"))
    };
    for row in ["idle", "2-person", "5-person", "9-person", "share"] {
        let find = |client: &str| rows.iter().find(|f| f.row == row && f.client == client);
        let (Some(a), Some(c)) = (find("convo"), find("chromium")) else {
            continue;
        };
        println!(
            "| {row} | {:.1} % | {:.1} % | {:.2} | {:.0} MiB ({:.0}) | {:.0} MiB ({:.0}) | {} / {} |",
            a.cpu_percent,
            c.cpu_percent,
            a.cpu_percent / c.cpu_percent.max(0.1),
            a.rss_mib,
            a.pss_mib,
            c.rss_mib,
            c.pss_mib,
            ms(a),
            ms(c),
        );
    }
    if let Some((p50, p99)) = rows.iter().find_map(|f| f.glass_ms) {
        println!(
            "\nApp, 2-person call: glass to glass (capture → drawn, read back from the pixels) p50 {p50} ms, p99 {p99} ms"
        );
    }
}

/// Runs the bench again in a network namespace with only `lo` up, unless it is in one.
fn into_netns() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(IN_NETNS).is_some() || std::env::args().any(|a| a == "--no-netns") {
        return;
    }
    let me = std::env::current_exe().expect("the bench's path");
    let err = std::process::Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(me)
        .args(std::env::args().skip(1))
        .env(IN_NETNS, "1")
        .exec();
    panic!("unshare --net (needs root; or pass --no-netns): {err}");
}

#[tokio::main]
async fn main() {
    into_netns();
    let as_json = std::env::args().any(|a| a == "--json");
    let env = Env::start(Backend::Sqlite).await;
    let mut bot_tokens = Vec::new();
    for i in 0..8 {
        bot_tokens.push(env.user(&format!("bench-bot-{i}")).await);
    }
    let (mut rows, mut joins) = (Vec::new(), Vec::new());
    app_rows(&env, &bot_tokens, &mut rows, &mut joins).await;
    chromium_rows(&env, &bot_tokens, &mut rows).await;
    if as_json {
        let list: Vec<_> = rows
            .iter()
            .map(|f| {
                json!({
                    "row": f.row,
                    "client": f.client,
                    "cpu_percent": (f.cpu_percent * 10.0).round() / 10.0,
                    "rss_mib": f.rss_mib.round(),
                    "pss_mib": f.pss_mib.round(),
                    "first_frame_ms": f.first_frame_ms.map(f64::round),
                    "glass_to_glass_ms": f.glass_ms.map(|(p50, p99)| json!({"p50": p50, "p99": p99})),
                    // The app's 2-person row: join → first remote frame in each of JOINS joins.
                    "first_frame_runs_ms": (f.glass_ms.is_some()).then_some(&joins),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list).unwrap());
    } else {
        print_table(&rows);
        let fast = joins.iter().filter(|&&ms| ms <= 400.0).count();
        let list: Vec<String> = joins.iter().map(|ms| format!("{ms:.0}")).collect();
        println!(
            "App, 2-person call joined {} times: join → first remote frame {} ms ({fast} of them ≤ 400 ms)",
            joins.len(),
            list.join(", ")
        );
    }
    env.stop().await;
}
