//! `sfu-bench`: N publishers and M viewers in one room against a `convo-server` process;
//! prints the SFU's cost and the media's quality. Figures, not assertions.
//!
//! ```sh
//! cargo build --release -p convo-server -p convo-e2e
//! target/release/sfu-bench --publishers 2 --viewers 4 --duration 20
//! ```
//!
//! Forwarded video streams = publishers × (publishers − 1 + viewers). The bots run in this
//! process (encoding and decoding real H.264 and Opus) on the same machine as the server, so
//! the server's CPU is measured from /proc for its process alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use convo_client::api::Api;
use convo_client::call::{self, CallOptions};
use convo_e2e::{bench_room, proc_usage, register, wait_until_serving};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let publishers = arg("--publishers", 2) as usize;
    let viewers = arg("--viewers", 4) as usize;
    let secs = arg("--duration", 20);
    let fps = arg("--fps", 15) as u32;
    let server_bin: PathBuf = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("convo-server");
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new(&server_bin)
        .env("CONVO_DATA_DIR", dir.path())
        .env("CONVO_BIND", format!("127.0.0.1:{port}"))
        // One account per bench participant, all from loopback.
        .env("CONVO_REGISTRATIONS_PER_HOUR", "0")
        .env("CONVO_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (build it with --release first)",
                server_bin.display()
            )
        });
    let base = format!("http://127.0.0.1:{port}");
    let api = Api::new(&base);
    wait_until_serving(&api).await;
    let mut tokens = Vec::new();
    for i in 0..publishers + viewers {
        tokens.push(register(&api, &format!("bench{i}")).await);
    }
    let room = bench_room(&api, &tokens[0]).await;
    let idle = proc_usage(server.id());
    let mut tasks = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let publish = i < publishers;
        let opts = CallOptions {
            room_id: room.clone(),
            audio: publish,
            video: publish,
            screen: false,
            fps,
            duration: Duration::from_secs(secs),
            ..Default::default()
        };
        let base = base.clone();
        tasks.push(tokio::spawn(
            async move { call::run(&base, &token, opts).await },
        ));
    }
    // Measure the server over the steady middle of the call.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu0, _) = proc_usage(server.id());
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs.saturating_sub(5).max(1))).await;
    let (cpu1, rss) = proc_usage(server.id());
    let window = t0.elapsed().as_secs_f64();
    let mut reports = Vec::new();
    for t in tasks {
        if let Ok(Ok(r)) = t.await {
            reports.push(r);
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    let streams = publishers * (publishers - 1 + viewers);
    let video: Vec<_> = reports
        .iter()
        .flat_map(|r| r.tracks.iter())
        .filter(|t| t.kind == "video")
        .collect();
    let packets: u64 = reports
        .iter()
        .flat_map(|r| r.tracks.iter())
        .map(|t| t.packets)
        .sum();
    let mut lat50: Vec<f64> = video
        .iter()
        .filter_map(|t| t.latency_p50_ms.map(f64::from))
        .collect();
    let mut lat99: Vec<f64> = video
        .iter()
        .filter_map(|t| t.latency_p99_ms.map(f64::from))
        .collect();
    let mut first: Vec<f64> = video
        .iter()
        .filter_map(|t| t.join_to_first_frame_ms.map(|v| v as f64))
        .collect();
    let expected_frames = (f64::from(fps) * (secs as f64 - 2.0)).max(1.0);
    let mut delivered: Vec<f64> = video
        .iter()
        .map(|t| (t.frames_decoded as f64 / expected_frames).min(1.0))
        .collect();
    let cpu_pct = (cpu1 - cpu0) / window * 100.0;
    println!(
        "participants {} (publishers {publishers}, viewers {viewers}), {fps} fps 320x240 H.264 + Opus, {secs} s",
        publishers + viewers
    );
    println!(
        "forwarded video streams      {streams} (received {} of them)",
        video.len()
    );
    println!(
        "content checks passed        {}/{}",
        video.iter().filter(|t| t.content_ok).count(),
        video.len()
    );
    println!(
        "server CPU                   {cpu_pct:.1} % of one core ({:.2} % per forwarded video stream)",
        cpu_pct / streams.max(1) as f64
    );
    println!(
        "server memory                {} MiB RSS ({} KiB idle; {:.0} KiB per participant)",
        rss / 1024,
        idle.1,
        (rss.saturating_sub(idle.1)) as f64 / (publishers + viewers) as f64
    );
    println!(
        "packets received by bots     {:.0} per second",
        packets as f64 / secs as f64
    );
    println!(
        "capture-to-decode latency    p50 {:.0} ms (median of tracks' p50), p99 {:.0} ms (worst track p99)",
        pct(&mut lat50, 0.5),
        pct(&mut lat99, 1.0)
    );
    println!(
        "join to first frame          p50 {:.0} ms, p99 {:.0} ms",
        pct(&mut first, 0.5),
        pct(&mut first, 0.99)
    );
    println!(
        "frames delivered             p50 {:.1} %, worst {:.1} % of those sent",
        pct(&mut delivered, 0.5) * 100.0,
        pct(&mut delivered, 0.0) * 100.0
    );
}
