//! WHIP and WHEP against an independent WebRTC implementation (aiortc, Debian's
//! `python3-aiortc`): an aiortc publisher joins a room and a bot receives its media; an aiortc
//! viewer receives and decodes a bot's audio and video.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use convo_client::call::{self, CallOptions};
use convo_client::synth::VideoSize;
use convo_e2e::{Backend, Env, on_both_databases, until_async};
use serde_json::Value;

on_both_databases!(
    aiortc_whip_publisher_reaches_a_bot,
    aiortc_whep_viewer_receives_a_bot,
    whep_viewer_gets_the_layer_for_its_size
);

/// Runs one of the aiortc scripts with Debian's Python (where python3-aiortc lives).
async fn aiortc(script: &str, url: String, token: String, secs: u32) -> Value {
    let path = format!("{}/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("/usr/bin/python3")
            .args([
                path.as_str(),
                url.as_str(),
                token.as_str(),
                &secs.to_string(),
            ])
            .output()
            .expect("/usr/bin/python3 runs (apt-get install python3-aiortc)")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("JSON from the script")
}

async fn aiortc_whip_publisher_reaches_a_bot(backend: Backend) {
    let env = Env::start(backend).await;
    let (publisher, watcher) = (env.user("aiortc").await, env.user("watcher").await);
    let room = env.room(&publisher, "Interop").await;
    let bot = {
        let (base, room) = (env.base.clone(), room.clone());
        tokio::spawn(async move {
            let opts = CallOptions {
                room_id: room,
                audio: false,
                video: false,
                duration: Duration::from_secs(9),
                ..Default::default()
            };
            call::run(&base, &watcher, opts).await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = format!("{}/api/rooms/{room}/whip", env.base);
    let result = aiortc("whip_publish.py", url, publisher, 6).await;
    assert_eq!(result["answer_has_h264"], true);
    let location = result["location"].as_str().unwrap();
    let pid = location.rsplit('/').next().unwrap();
    let report = bot.await.unwrap();
    let track = |kind: &str| {
        report
            .tracks
            .iter()
            .find(|t| t.participant_id == pid && t.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} from the WHIP publisher: {report:#?}"))
            .clone()
    };
    let (audio, video) = (track("audio"), track("video"));
    // aiortc's Opus is decoded by the bot.
    assert!(audio.frames_decoded > 10, "{audio:?}");
    // Its H.264 arrives too. (aiortc 1.4 answers keyframe requests with non-IDR I-frames
    // without SPS/PPS, so a subscriber that missed the first IDR cannot decode it; browsers
    // and OBS send IDRs.)
    assert!(video.packets > 10, "{video:?}");
    // The publisher's DELETE ended its tracks.
    assert!(audio.ended && video.ended, "{audio:?} {video:?}");
    env.stop().await;
}

async fn aiortc_whep_viewer_receives_a_bot(backend: Backend) {
    let env = Env::start(backend).await;
    let (talker, viewer) = (env.user("talker").await, env.user("viewer").await);
    let room = env.room(&talker, "Watched").await;
    let url = format!("{}/api/rooms/{room}/whep", env.base);
    let bot = {
        let (base, room) = (env.base.clone(), room.clone());
        tokio::spawn(async move {
            let opts = CallOptions {
                room_id: room,
                duration: Duration::from_secs(10),
                ..Default::default()
            };
            call::run(&base, &talker, opts).await.unwrap()
        })
    };
    // Let the bot start publishing (and become the active speaker).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let counts = aiortc("whep_view.py", url, viewer, 5).await;
    assert!(counts["video_frames"].as_u64().unwrap() > 10, "{counts}");
    assert!(counts["audio_frames"].as_u64().unwrap() > 10, "{counts}");
    assert_eq!(counts["width"], 320);
    assert_eq!(counts["height"], 240);
    bot.await.unwrap();
    env.stop().await;
}

/// A WHEP viewer that says the size it draws at (`?width=&height=`) gets the simulcast layer
/// that fills it: a 320×180 viewer of a 1280×720 publisher receives the quarter layer. Half a
/// size is refused with `validation_failed`.
async fn whep_viewer_gets_the_layer_for_its_size(backend: Backend) {
    let env = Env::start(backend).await;
    let (talker, viewer) = (env.user("talker").await, env.user("viewer").await);
    let room = env.room(&talker, "Sized").await;
    let opts = CallOptions {
        room_id: room.clone(),
        video_size: VideoSize {
            width: 1280,
            height: 720,
        },
        duration: Duration::from_secs(120),
        ..Default::default()
    };
    let call = call::start(&env.base, &talker, opts, None).await.unwrap();
    let pid = call.participant_id.clone();
    let url = format!("{}/api/rooms/{room}/whep?participant={pid}", env.base);
    let http = reqwest::Client::new();
    let post = |q: &str| {
        http.post(format!("{url}{q}"))
            .bearer_auth(&viewer)
            .header("Content-Type", "application/sdp")
            .body("v=0\r\n")
            .send()
    };
    for q in [
        "&width=320",
        "&height=180",
        "&width=0&height=180",
        "&width=320&height=99999",
    ] {
        let res = post(q).await.unwrap();
        assert_eq!(res.status(), 422, "{q}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "validation_failed", "{q}: {body}");
    }
    // The bot's camera is there to watch once a (bogus) offer is refused for its SDP, not for
    // nothing to watch.
    until_async("the bot publishes", 60, || {
        let sent = post("&width=320&height=180");
        async move {
            let status = sent.await.unwrap().status();
            if status == reqwest::StatusCode::CONFLICT {
                return false;
            }
            assert_eq!(status, 400);
            true
        }
    })
    .await;
    let counts = aiortc(
        "whep_view.py",
        format!("{url}&width=320&height=180"),
        viewer,
        5,
    )
    .await;
    assert!(counts["video_frames"].as_u64().unwrap() > 10, "{counts}");
    assert_eq!(counts["width"], 320, "{counts}");
    assert_eq!(counts["height"], 180, "{counts}");
    call.leave().await.unwrap();
    env.stop().await;
}
