//! The desktop app end to end: the real app (built with its ui embedded), under Xvfb, driven
//! through tauri-driver and WebKitWebDriver like a person would — register, sign in, create a
//! room, join — while a `convo-bot` joins the same room. The app must show the bot's video
//! (frames keep coming and their codes read back, in order) and play the bot's audio to its
//! speaker (a PulseAudio null sink, recorded back from its monitor), and the bot must decode
//! the app's audio and video. Screenshots of pre-join and the call go to `target/e2e/`.
//!
//! Needs what `tests/desktop.sh` prepares (the ui built, the app built with
//! `--features custom-protocol`, tauri-driver, WebKitWebDriver, a display), so it is ignored
//! by a plain `cargo test` and run by that script, which the README's test command calls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use convo_client::call::{self, CallOptions};
use convo_client::synth;
use convo_e2e::{Backend, Env, PASSWORD};
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A W3C WebDriver session, over plain HTTP.
struct Driver {
    http: reqwest::Client,
    url: String,
}

impl Driver {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .timeout(Duration::from_secs(60));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("WebDriver reachable");
        let v: Value = resp.json().await.expect("WebDriver JSON");
        if v["value"]["error"].is_string() {
            panic!("WebDriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    async fn find(&self, css: &str) -> Option<String> {
        let mut req = self
            .http
            .post(format!("{}/element", self.url))
            .json(&json!({"using": "css selector", "value": css}));
        req = req.timeout(Duration::from_secs(10));
        let v: Value = req.send().await.ok()?.json().await.ok()?;
        v["value"][ELEMENT].as_str().map(str::to_string)
    }

    /// Waits up to `secs` for an element.
    async fn wait(&self, css: &str, secs: u64) -> String {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            if Instant::now() > end {
                let shot = self.screenshot("failure").await;
                let text = self
                    .script("return document.body.innerText", json!([]))
                    .await;
                panic!("no {css} within {secs} s; screen says {text}; see {shot:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn click(&self, css: &str) {
        let e = self.wait(css, 20).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_in(&self, css: &str, text: &str) {
        let e = self.wait(css, 20).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn script(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap_or_default();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/e2e");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the built app, tauri-driver and a display: run tests/desktop.sh"]
async fn the_app_joins_a_call_and_sees_a_bot() {
    let app = std::env::var("CONVO_DESKTOP_BIN").expect("CONVO_DESKTOP_BIN: run tests/desktop.sh");
    let env = Env::start(Backend::Sqlite).await;
    let (port, native) = (free_port(), free_port());
    let _driver = Kill(
        Command::new("tauri-driver")
            .args([
                "--port",
                &port.to_string(),
                "--native-port",
                &native.to_string(),
            ])
            .env("CONVO_SERVER", &env.base)
            .env("CONVO_MEDIA", "synthetic")
            .stdout(Stdio::null())
            .spawn()
            .expect("tauri-driver on PATH (cargo install tauri-driver)"),
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    // tauri-driver listening, and a moment for it to start WebKitWebDriver.
    let end = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "tauri-driver did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let session = {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let r = http
                .post(format!("{base}/session"))
                .timeout(Duration::from_secs(60))
                .json(&json!({"capabilities": {"alwaysMatch": {"tauri:options": {"application": app}}}}))
                .send()
                .await;
            if let Ok(r) = r
                && let Ok(v) = r.json::<Value>().await
                && let Some(id) = v["value"]["sessionId"].as_str()
            {
                break id.to_string();
            }
            assert!(Instant::now() < end, "no WebDriver session");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let d = Driver {
        http,
        url: format!("{base}/session/{session}"),
    };

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
    d.call(reqwest::Method::DELETE, "", None).await;
    env.stop().await;
}
