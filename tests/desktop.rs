//! The desktop app end to end: the real app (built with its ui embedded), under Xvfb, driven
//! through tauri-driver and WebKitWebDriver like a person would — register, sign in, create a
//! room, join — while a `convo-bot` joins the same room. The app must show the bot's video
//! (frames keep coming and their codes read back, in order) and play the bot's audio to its
//! speaker (a PulseAudio null sink, recorded back from its monitor), and the bot must decode
//! the app's audio and video; a `convoconnect://join/<room>` link launched while the app runs
//! opens that room's pre-join. Screenshots of pre-join and the call go to `target/e2e/`.
//!
//! Needs what `tests/desktop.sh` prepares (the ui built, the app built with
//! `--features custom-protocol`, tauri-driver, WebKitWebDriver, a display), so it is ignored
//! by a plain `cargo test` and run by that script, which the README's test command calls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use convo_client::call::{self, CallOptions};
use convo_client::synth;
use convo_e2e::webdriver::launch;
use convo_e2e::{Backend, Env, PASSWORD};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the built app, tauri-driver and a display: run tests/desktop.sh"]
async fn the_app_joins_a_call_and_sees_a_bot() {
    let app = std::env::var("CONVO_DESKTOP_BIN").expect("CONVO_DESKTOP_BIN: run tests/desktop.sh");
    let env = Env::start(Backend::Sqlite).await;
    let (_driver, d) = launch(
        &app,
        &[("CONVO_SERVER", &env.base), ("CONVO_MEDIA", "synthetic")],
    )
    .await;

    // Register and sign in, as a person would.
    d.click("#register-link").await;
    d.type_in("#reg-username", "desktop").await;
    d.type_in("#reg-email", "desktop@example.com").await;
    d.type_in("#reg-display", "Desk Top").await;
    d.type_in("#reg-password", PASSWORD).await;
    d.click("#register").await;
    d.wait(".notice", 20).await;
    d.type_in("#login", "desktop").await;
    d.type_in("#password", PASSWORD).await;
    d.click("#sign-in").await;

    // Create a room; pre-join; join.
    d.type_in("#room-name", "Desk meeting").await;
    d.click("#create-room").await;
    d.wait("#prejoin", 20).await;
    let room = d
        .script(
            "return document.querySelector('#prejoin code').textContent",
            json!([]),
        )
        .await
        .as_str()
        .unwrap()
        .to_string();
    // Pre-join shows the camera preview, the microphone's level and the device pickers.
    d.wait("#pick-mic", 30).await;
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let v = d
            .script(
                "return [Number(document.querySelector(\"canvas[data-track='local:video']\").dataset.frames), \
                 parseFloat(document.querySelector('#mic-meter span').style.width) || 0]",
                json!([]),
            )
            .await;
        let (preview, meter) = (v[0].as_u64().unwrap_or(0), v[1].as_f64().unwrap_or(0.0));
        if preview >= 3 && meter > 20.0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "pre-join: {preview} preview frames, meter at {meter} %"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.screenshot("pre-join").await;
    d.click("#join").await;
    d.wait("#call", 30).await;

    // A bot joins the same room.
    let bot_token = env.user("bot").await;
    let bot = {
        let (base, room) = (env.base.clone(), room.clone());
        tokio::spawn(async move {
            let o = CallOptions {
                room_id: room,
                duration: Duration::from_secs(14),
                ..Default::default()
            };
            call::run(&base, &bot_token, o).await.unwrap()
        })
    };

    // The app shows the bot's video: frames keep coming, and they are the bot's frames, in order.
    let tile = "canvas[data-track$=':video']:not([data-track='local:video'])";
    d.wait(tile, 30).await;
    let frames_script = format!("return Number(document.querySelector(\"{tile}\").dataset.frames)");
    let end = Instant::now() + Duration::from_secs(30);
    while d
        .script(&frames_script, json!([]))
        .await
        .as_u64()
        .unwrap_or(0)
        < 10
    {
        assert!(Instant::now() < end, "the bot's video never showed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The connection-quality indicator has measured the call.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let q = d
            .script(
                "return document.querySelector('#quality').textContent",
                json!([]),
            )
            .await;
        if q.as_str().is_some_and(|t| t.contains("Good connection")) {
            break;
        }
        assert!(Instant::now() < end, "quality indicator says {q}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut codes = Vec::new();
    for _ in 0..5 {
        // Luma of the top 48 rows (the code strips), from the pixels the app drew.
        let luma = d
            .script(
                &format!(
                    "const c = document.querySelector(\"{tile}\");\
                     const px = c.getContext('2d').getImageData(0, 0, c.width, 48).data;\
                     const y = [];\
                     for (let i = 0; i < px.length; i += 4) y.push(Math.round(16 + (66 * px[i] + 129 * px[i + 1] + 25 * px[i + 2]) / 256));\
                     return [c.width, c.height, y];"
                ),
                json!([]),
            )
            .await;
        let (w, h) = (
            luma[0].as_u64().unwrap() as usize,
            luma[1].as_u64().unwrap() as usize,
        );
        let y: Vec<u8> = luma[2]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap_or(0) as u8)
            .collect();
        let code = synth::read_code(&y, w, w, h).expect("the drawn frame carries the bot's code");
        codes.push(code.counter);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(
        codes.windows(2).all(|p| p[1] > p[0]),
        "frames advance in order: {codes:?}"
    );
    d.screenshot("in-call").await;

    // The app plays the bot's tone to its speaker: record the null sink's monitor for 2 s.
    let rec = tokio::task::spawn_blocking(|| {
        Command::new("timeout")
            .args([
                "2",
                "parec",
                "--raw",
                "--format=s16le",
                "--rate=48000",
                "--channels=1",
                "-d",
                "convo_null.monitor",
            ])
            .output()
            .expect("parec (pulseaudio-utils)")
    })
    .await
    .unwrap();
    let pcm: Vec<i16> = rec
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let toned = pcm
        .chunks_exact(960)
        .filter(|c| synth::tone_share(c, 440.0) > 0.5)
        .count();
    assert!(
        toned >= 25,
        "the bot's 440 Hz tone was in {toned} of {} recorded frames",
        pcm.len() / 960
    );

    // The bot decoded the app's camera and microphone.
    let report = bot.await.unwrap();
    let from_app: Vec<_> = report
        .tracks
        .iter()
        .filter(|t| t.participant_id != report.participant_id)
        .collect();
    for kind in ["audio", "video"] {
        let t = from_app
            .iter()
            .find(|t| t.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} from the app: {report:#?}"));
        assert!(t.frames_decoded > 20, "{t:?}");
        assert!(t.content_ok, "{t:?}");
    }

    d.click("#leave").await;
    d.wait("#room-name", 20).await;

    // A convoconnect:// link opens the room's pre-join in the running app: the second launch
    // hands the link over (single instance, over D-Bus) and exits.
    let second = tokio::task::spawn_blocking({
        let (app, link) = (app.clone(), format!("convoconnect://join/{room}"));
        move || {
            let mut child = Command::new(app)
                .arg(link)
                .env("CONVO_MEDIA", "synthetic")
                .spawn()
                .expect("second launch");
            let end = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return Some(status);
                }
                if Instant::now() > end {
                    let _ = child.kill();
                    return None;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    })
    .await
    .unwrap();
    assert!(
        second.is_some_and(|s| s.success()),
        "the second launch did not hand over and exit: {second:?}"
    );
    d.wait("#prejoin", 20).await;
    let linked = d
        .script(
            "return document.querySelector('#prejoin code').textContent",
            json!([]),
        )
        .await;
    assert_eq!(linked.as_str(), Some(room.as_str()));
    d.click("#prejoin button.link").await; // Back
    d.wait("#room-name", 20).await;
    d.call(reqwest::Method::DELETE, "", None).await;
    env.stop().await;
}
