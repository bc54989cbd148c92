//! Calls on networks built on this machine (see `netbed.rs`): a 720p simulcast publisher and
//! subscribers behind bandwidth caps, a cap lifted mid-call, a publisher whose uplink drops, a
//! lossy and jittery path (through `impair-relay`), a subscriber whose address changes, a
//! client that reaches only its TURN server. Each scenario asserts what a person in that call
//! would see. Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod netbed;

use std::time::{Duration, Instant};

use convo_client::stats::{BotReport, Second, TrackReport};
use netbed::Bed;

/// A publisher's camera (and microphone) at 1280 × 720, 30 fps.
const PUBLISH_720P30: [&str; 6] = [
    "--publish",
    "audio,video",
    "--video",
    "1280x720",
    "--fps",
    "30",
];
/// A subscriber that publishes nothing and draws every video at 1280 × 720.
const WATCH_720P: [&str; 4] = ["--publish", "none", "--view", "1280x720"];

/// One scenario at a time: each keeps both cores busy with 720p encoding and decoding.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The bed itself: a bot in a namespace of its own hears and sees another through the server
/// in a third, with ICE finding its way over the veth links only, and every namespace and
/// link is gone afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn bots_in_their_own_namespaces_call_through_the_server() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut bed = Bed::new().await;
    for u in ["left", "right"] {
        bed.user(u).await;
    }
    let room = bed.room("left").await;
    let (ll, lr) = (bed.link(), bed.link());
    // A cap that binds nothing here: the qdisc is in place and traffic passes it.
    bed.cap_down(&lr, Some(5000));
    let args = ["--publish", "audio,video", "--duration", "8s"];
    let (left, right) = (
        bed.bot(&ll, "left", &room, &args),
        bed.bot(&lr, "right", &room, &args),
    );
    let (left, right) = (left.report().await, right.report().await);
    for r in [&left, &right] {
        let (a, v) = (track(r, "audio"), track(r, "video"));
        assert!(a.markers >= 3 && a.content_ok, "audio: {a:?}");
        assert!(v.frames_decoded >= 30 && v.content_ok, "video: {v:?}");
    }
    let namespaces = bed.namespaces();
    drop(bed);
    let left_over = String::from_utf8(
        std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for ns in namespaces {
        assert!(!left_over.contains(&ns), "{ns} left behind: {left_over}");
    }
}

fn track<'a>(r: &'a BotReport, kind: &str) -> &'a TrackReport {
    r.tracks
        .iter()
        .find(|t| t.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} track in {r:#?}"))
}

/// The seconds `from..=to` of a timeline.
fn seconds(t: &TrackReport, from: u64, to: u64) -> Vec<&Second> {
    t.timeline
        .iter()
        .filter(|s| (from..=to).contains(&s.t))
        .collect()
}

fn summary(t: &TrackReport) -> String {
    t.timeline
        .iter()
        .map(|s| {
            format!(
                "{}s:{}x{}@{}f/{}k/{}fz",
                s.t, s.width, s.height, s.frames, s.bitrate_kbps, s.freezes
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Scenarios 1 and 2: one publisher at 1280 × 720, 30 fps, three layers; three subscribers
/// that draw it at 1280 × 720: one uncapped, one behind 600 kbit/s (lifted after 22 s), one
/// behind 250 kbit/s.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "does not pass yet: a layer switch's second drops under 20 fps behind 600 kbit/s, \
            and behind 250 kbit/s audio and the lowest layer need more than the estimate (README)"]
async fn each_subscriber_gets_the_layer_its_link_carries() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut bed = Bed::new().await;
    for u in ["pub", "wide", "mid", "narrow"] {
        bed.user(u).await;
    }
    let room = bed.room("pub").await;
    let (lp, la, lb, lc) = (bed.link(), bed.link(), bed.link(), bed.link());
    bed.cap_down(&lb, Some(600));
    bed.cap_down(&lc, Some(250));
    let publisher = bed.bot(
        &lp,
        "pub",
        &room,
        &[&PUBLISH_720P30[..], &["--duration", "50s"]].concat(),
    );
    let watch = [&WATCH_720P[..], &["--duration", "45s"]].concat();
    let started = Instant::now();
    let wide = bed.bot(&la, "wide", &room, &watch);
    let mid = bed.bot(&lb, "mid", &room, &watch);
    let narrow = bed.bot(&lc, "narrow", &room, &watch);
    tokio::time::sleep_until((started + Duration::from_secs(22)).into()).await;
    bed.cap_down(&lb, None);
    let (wide, mid, narrow) = (
        wide.report().await,
        mid.report().await,
        narrow.report().await,
    );
    drop(publisher);
    for (name, r) in [("uncapped", &wide), ("600k", &mid), ("250k", &narrow)] {
        eprintln!("{name}: {}", summary(track(r, "video")));
    }

    // Uncapped: the full layer at its full rate.
    let v = track(&wide, "video");
    let last = seconds(v, 30, 42);
    assert!(!last.is_empty(), "{}", summary(v));
    assert!(
        last.iter().all(|s| s.width == 1280),
        "uncapped: {}",
        summary(v)
    );
    let mean = last.iter().map(|s| u64::from(s.bitrate_kbps)).sum::<u64>() / last.len() as u64;
    assert!(mean >= 1200, "uncapped gets {mean} kbit/s: {}", summary(v));

    // 600 kbit/s: a lower layer at 20 fps or more, and no freeze once settled (10 s on).
    let v = track(&mid, "video");
    let capped = seconds(v, 10, 20);
    assert!(!capped.is_empty(), "{}", summary(v));
    assert!(
        capped
            .iter()
            .all(|s| s.width > 0 && s.width < 1280 && s.frames >= 20 && s.freezes == 0),
        "600 kbit/s: {}",
        summary(v)
    );
    // Lifted at 22 s: back on the full layer within 15 s.
    assert!(
        seconds(v, 22, 37).iter().any(|s| s.width == 1280),
        "after the cap was lifted: {}",
        summary(v)
    );

    // 250 kbit/s: the lowest layer, and every second's audio marker.
    let v = track(&narrow, "video");
    let last = seconds(v, 10, 42);
    assert!(!last.is_empty(), "{}", summary(v));
    assert!(
        last.iter().all(|s| s.width == 320),
        "250 kbit/s: {}",
        summary(v)
    );
    let (a_wide, a_narrow) = (track(&wide, "audio"), track(&narrow, "audio"));
    assert!(
        a_narrow.markers + 1 >= a_wide.markers && a_narrow.markers >= 35,
        "audio markers: {} behind 250 kbit/s, {} uncapped",
        a_narrow.markers,
        a_wide.markers
    );
}

/// Scenario 3: a publisher's uplink drops from 3 Mbit/s to 400 kbit/s mid-call: within 5 s it
/// sends less than the link carries, and the subscriber still gets 15 frames a second.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "does not pass yet: after the drop the estimate drifts to a quarter to a half of \
            the link with loss reported at a 5 ms round trip, and the stand-in layer runs at \
            11-15 fps (README)"]
async fn a_publisher_fits_a_shrinking_uplink() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut bed = Bed::new().await;
    for u in ["pub", "sub"] {
        bed.user(u).await;
    }
    let room = bed.room("pub").await;
    let (lp, ls) = (bed.link(), bed.link());
    bed.cap_up(&lp, Some(3000));
    let started = Instant::now();
    let publisher = bed.bot(
        &lp,
        "pub",
        &room,
        &[&PUBLISH_720P30[..], &["--duration", "40s"]].concat(),
    );
    let sub = bed.bot(
        &ls,
        "sub",
        &room,
        &[&WATCH_720P[..], &["--duration", "38s"]].concat(),
    );
    tokio::time::sleep_until((started + Duration::from_secs(15)).into()).await;
    bed.cap_up(&lp, Some(400));
    let (publisher, sub) = (publisher.report().await, sub.report().await);

    let up: Vec<String> = publisher
        .uplink
        .iter()
        .map(|s| format!("{}s:{}k/{:?}k", s.t, s.sent_kbps, s.estimate_kbps))
        .collect();
    let before: Vec<_> = publisher
        .uplink
        .iter()
        .filter(|s| (8..=13).contains(&s.t))
        .collect();
    assert!(
        before.iter().any(|s| s.sent_kbps > 1000),
        "before the drop the publisher sends its layers: {up:?}"
    );
    let after: Vec<_> = publisher
        .uplink
        .iter()
        .filter(|s| (21..=36).contains(&s.t))
        .collect();
    assert!(!after.is_empty(), "{up:?}");
    assert!(
        after.iter().all(|s| s.sent_kbps <= 400),
        "5 s after the drop to 400 kbit/s: {up:?}"
    );
    let v = track(&sub, "video");
    let seen = seconds(v, 22, 36);
    assert!(!seen.is_empty(), "{}", summary(v));
    assert!(
        seen.iter().all(|s| s.frames >= 15),
        "the subscriber after the drop: {}",
        summary(v)
    );
}

/// Scenario 5: a subscriber's address changes mid-call (its link renumbered, as when a laptop
/// moves from Wi-Fi to Ethernet): its call notices, reconnects by itself, has video again
/// within 2 s, and the others never see it leave.
#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_whose_address_changes_stays_in_the_call() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut bed = Bed::new().await;
    for u in ["sender", "mover"] {
        bed.user(u).await;
    }
    let room = bed.room("sender").await;
    let (ls, lm) = (bed.link(), bed.link());
    let sender = bed.bot(
        &ls,
        "sender",
        &room,
        &["--publish", "audio,video", "--duration", "20s", "--events"],
    );
    let mut mover = bed.bot(
        &lm,
        "mover",
        &room,
        &["--publish", "audio", "--duration", "14s", "--events"],
    );
    mover
        .event(60, "the sender's video", |e| {
            e["type"] == "track_started" && e["kind"] == "video"
        })
        .await;
    // Some call time on the first address (the move happens mid-call, not at its start).
    tokio::time::sleep(Duration::from_secs(3)).await;
    bed.renumber(&lm, 3);
    let moved = Instant::now();
    mover
        .event(30, "the mover reconnecting", |e| {
            e["type"] == "connection" && e["reconnecting"] == true
        })
        .await;
    mover
        .event(30, "the mover back", |e| {
            e["type"] == "connection" && e["reconnecting"] == false
        })
        .await;
    eprintln!("mover back {:?} after the move", moved.elapsed());
    let (mover, _) = mover.finish().await;
    let (sender, sender_saw) = sender.finish().await;

    let video = track(&mover, "video");
    eprintln!(
        "mover's video: longest freeze {} ms; {}",
        video.longest_freeze_ms,
        summary(video)
    );
    assert!(
        video.longest_freeze_ms <= 2000,
        "video came back {} ms after it stopped (more than 2 s): {}",
        video.longest_freeze_ms,
        summary(video)
    );
    // And it went on to the end of the mover's call (the last second, cut short by the
    // leave, aside).
    let last = video.timeline.last().map_or(0, |s| s.t);
    let tail = seconds(video, last.saturating_sub(4), last.saturating_sub(1));
    assert!(
        tail.iter().all(|s| s.frames > 0),
        "video stopped after the move: {}",
        summary(video)
    );
    // The sender hears the mover after the move too, and never saw it leave but at its end.
    let audio = track(&sender, "audio");
    assert!(audio.markers >= 8 && audio.content_ok, "audio: {audio:?}");
    let left: Vec<&serde_json::Value> = sender_saw
        .iter()
        .filter(|e| e["message"]["type"] == "participant_left")
        .collect();
    assert!(
        left.iter().all(|e| e["message"]["reason"] == "left"),
        "the sender saw the mover leave before the end: {left:#?}"
    );
}

/// Scenario 6: a client whose network lets nothing through but its TURN server (coturn, from
/// `CONVO_ICE_SERVERS`) sends and receives through the relay.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_reaches_only_the_turn_server_sends_and_receives() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut bed = Bed::with_server_env(&netbed::TURN_ENV).await;
    for u in ["open", "relayed"] {
        bed.user(u).await;
    }
    let room = bed.room("open").await;
    let (lo, lr) = (bed.link(), bed.turn_link());
    let args = ["--publish", "audio,video", "--duration", "10s"];
    let (open, relayed) = (
        bed.bot(&lo, "open", &room, &args),
        bed.bot(&lr, "relayed", &room, &args),
    );
    let (open, relayed) = (open.report().await, relayed.report().await);
    let log = bed.turn_log();
    let tail = &log[log.len().saturating_sub(4000)..];
    let track = |r: &BotReport, kind: &str| -> TrackReport {
        r.tracks
            .iter()
            .find(|t| t.kind == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} track in {r:#?}\ncoturn's log ends: {tail}"))
    };
    for (who, r) in [("open", &open), ("relayed", &relayed)] {
        let (a, v) = (track(r, "audio"), track(r, "video"));
        assert!(a.markers >= 4 && a.content_ok, "{who} hears: {a:?}");
        assert!(
            v.frames_decoded >= 45 && v.content_ok,
            "{who} sees: {}",
            summary(&v)
        );
    }
    assert!(
        log.contains("ALLOCATE processed, success"),
        "the relayed client's media did not go through coturn: {log}"
    );
}

/// Scenario 4: a subscriber whose path to the server drops 5 % of the packets and delays the
/// rest by 40 ± 20 ms, each way (the seeded `impair-relay`): 720p at ≥ 25 fps, and under 5 %
/// of its audio frames concealed. Does not pass yet (see the README's figures).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "does not pass yet: the estimate falls to the lower layers under jitter (README)"]
async fn a_lossy_jittery_path_keeps_720p_smooth_and_audio_whole() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut bed = Bed::with_server_env(&netbed::IMPAIRED_ENV).await;
    for u in ["publisher", "listener"] {
        bed.user(u).await;
    }
    let room = bed.room("publisher").await;
    let (lp, ll) = (bed.link(), bed.impaired_link(40, 20, 0.05, 7));
    let publisher = bed.bot(
        &lp,
        "publisher",
        &room,
        &[&PUBLISH_720P30[..], &["--duration", "24s"]].concat(),
    );
    let listener = bed.bot(
        &ll,
        "listener",
        &room,
        &[&WATCH_720P[..], &["--duration", "22s"]].concat(),
    );
    let (_, listener) = (publisher.report().await, listener.report().await);
    let (video, audio) = (track(&listener, "video"), track(&listener, "audio"));
    eprintln!(
        "video: {}\naudio: {} frames, {} concealed, {} lost packets",
        summary(video),
        audio.frames_decoded,
        audio.concealed_frames,
        audio.lost_packets
    );
    let steady = seconds(video, 8, 20);
    let frames: u32 = steady.iter().map(|s| s.frames).sum();
    let fps = f64::from(frames) / steady.len().max(1) as f64;
    assert!(
        fps >= 25.0 && steady.iter().all(|s| s.width == 1280),
        "720p at {fps:.1} fps (wants ≥ 25): {}",
        summary(video)
    );
    let concealed = audio.concealed_frames as f64 / audio.frames_decoded.max(1) as f64;
    assert!(
        concealed < 0.05,
        "{:.1} % of the audio concealed (wants < 5 %)",
        concealed * 100.0
    );
}

/// Scenario 7: Chromium (Debian's package, headless, fake camera at 1280 × 720, 30 fps)
/// publishes three simulcast layers by WHIP, standard SDP (RIDs); the SFU gives an uncapped
/// bot the full layer and one behind 600 kbit/s a lower one.
#[tokio::test(flavor = "multi_thread")]
async fn a_browser_publishes_simulcast_by_whip_and_each_viewer_gets_its_layer() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut bed = Bed::new().await;
    for u in ["browser", "wide", "capped"] {
        bed.user(u).await;
    }
    let room = bed.room("browser").await;
    let (lb, lw, lc) = (bed.link(), bed.link(), bed.link());
    bed.cap_down(&lc, Some(600));
    let watch = [&WATCH_720P[..], &["--duration", "40s"]].concat();
    let wide = bed.bot(&lw, "wide", &room, &watch);
    let capped = bed.bot(&lc, "capped", &room, &watch);
    let token = bed.token("browser").await;
    let whip = format!("{}/api/rooms/{room}/whip", lb.server_url());
    let mut browser = bed.chromium(
        &lb,
        &format!(
            "whip_simulcast.html#url={whip}&token={token}&seconds=30&width=1280&height=720&fps=30"
        ),
    );
    let publishing = browser.said(60, "that it publishes").await;
    assert_eq!(publishing["state"], "publishing", "{publishing}");
    assert_eq!(publishing["simulcast_offered"], true, "{publishing}");
    assert_eq!(publishing["simulcast_answered"], true, "{publishing}");
    let done = browser.said(90, "what it sent").await;
    assert_eq!(done["state"], "done", "{done}");
    drop(browser);
    let (wide, capped) = (wide.report().await, capped.report().await);
    eprintln!("chromium sent: {}", done["layers"]);
    for (name, r) in [("uncapped", &wide), ("600k", &capped)] {
        eprintln!("{name}: {}", summary(track(r, "video")));
    }

    // The browser sent all three layers, each at its own size.
    let layers = done["layers"].as_array().expect("layers");
    let mut widths: Vec<u64> = layers
        .iter()
        .filter(|l| l["frames"].as_u64() > Some(100))
        .map(|l| l["width"].as_u64().unwrap_or(0))
        .collect();
    widths.sort_unstable();
    assert_eq!(widths, [320, 640, 1280], "layers sent: {layers:?}");

    // Uncapped: the full layer once the browser's estimate lets it send it. (Chromium's fake
    // camera carries none of the bots' frame codes: what is checked is what arrives.)
    let v = track(&wide, "video");
    let full = v.timeline.iter().filter(|s| s.width == 1280).count();
    assert!(full >= 5, "uncapped: {}", summary(v));

    // 600 kbit/s: once settled (10 s on), on a lower layer at 20 fps or more in four seconds
    // of five.
    let v = track(&capped, "video");
    let settled = seconds(v, 10, 28);
    let lower = settled
        .iter()
        .filter(|s| s.width > 0 && s.width < 1280 && s.frames >= 20)
        .count();
    assert!(
        !settled.is_empty() && lower * 5 >= settled.len() * 4,
        "600 kbit/s: {}",
        summary(v)
    );
}
