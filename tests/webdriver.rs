//! A small W3C WebDriver client over plain HTTP (reqwest), for driving the desktop app through
//! tauri-driver, plus the pieces a session needs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A script prefix: `pixels(canvas)` copies what a tile drew (WebGL or 2D) to a 2D canvas whose
/// pixels can be read.
pub const PIXELS: &str = "const pixels = (c) => { const s = document.createElement('canvas'); \
    s.width = c.width; s.height = c.height; const g = s.getContext('2d'); g.drawImage(c, 0, 0); \
    return g; };";

/// What one of the app's video canvases shows, read back from its pixels.
pub struct Drawn {
    pub width: usize,
    pub height: usize,
    /// The synthetic source's code in the picture (its frame counter and capture time).
    pub code: Option<convo_client::synth::FrameCode>,
    /// When the ui drew the frame, and when it was read back (wall clock, ms, mod 2^32: the
    /// synthetic source's clock).
    pub drawn_at: u32,
    pub read_at: u32,
    /// `webgl` or `2d`.
    pub renderer: String,
}

impl Drawn {
    /// How old the frame was when drawn: from capture to the draw.
    pub fn age_ms(&self) -> Option<u32> {
        self.code
            .map(|c| convo_client::synth::elapsed_ms(c.capture_ms, self.drawn_at))
    }

    /// How old it was when read back (it stays on screen until the next one, and reading 720p
    /// back takes its own time on a busy machine).
    pub fn shown_ms(&self) -> Option<u32> {
        self.code
            .map(|c| convo_client::synth::elapsed_ms(c.capture_ms, self.read_at))
    }
}

/// A W3C WebDriver session, over plain HTTP.
pub struct Driver {
    http: reqwest::Client,
    url: String,
}

impl Driver {
    pub fn new(http: reqwest::Client, url: String) -> Self {
        Driver { http, url }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
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

    pub async fn find(&self, css: &str) -> Option<String> {
        let mut req = self
            .http
            .post(format!("{}/element", self.url))
            .json(&json!({"using": "css selector", "value": css}));
        req = req.timeout(Duration::from_secs(10));
        let v: Value = req.send().await.ok()?.json().await.ok()?;
        v["value"][ELEMENT].as_str().map(str::to_string)
    }

    /// Waits up to `secs` for an element.
    pub async fn wait(&self, css: &str, secs: u64) -> String {
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

    pub async fn click(&self, css: &str) {
        let e = self.wait(css, 20).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Clicks `css` until `then` appears (a click that lands while the page re-renders is
    /// lost); fails after `secs`.
    pub async fn click_until(&self, css: &str, then: &str, secs: u64) {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(e) = self.find(css).await {
                // A stale element (the page changed under it) is just another lost click.
                let _ = self
                    .http
                    .post(format!("{}/element/{e}/click", self.url))
                    .json(&json!({}))
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
            }
            for _ in 0..10 {
                if self.find(then).await.is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if Instant::now() > end {
                self.wait(then, 0).await;
                return;
            }
        }
    }

    pub async fn type_in(&self, css: &str, text: &str) {
        let e = self.wait(css, 20).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// What the canvas `css` shows: the luma of its top fifth (the code strips of a synthetic
    /// picture) read back from the pixels drawn, with its code decoded.
    pub async fn drawn(&self, css: &str) -> Drawn {
        let v = self
            .script(
                &format!(
                    "{PIXELS}const c = document.querySelector(\"{css}\");\
                     const drawnAt = Number(c.dataset.drawnAt);\
                     const px = pixels(c).getImageData(0, 0, c.width, Math.ceil(c.height / 5)).data;\
                     const y = [];\
                     for (let i = 0; i < px.length; i += 4) y.push(Math.round(16 + (66 * px[i] + 129 * px[i + 1] + 25 * px[i + 2]) / 256));\
                     return [c.width, c.height, y, drawnAt, c.dataset.renderer, Date.now() % 4294967296];"
                ),
                json!([]),
            )
            .await;
        let (width, height) = (
            v[0].as_u64().unwrap_or(0) as usize,
            v[1].as_u64().unwrap_or(0) as usize,
        );
        let y: Vec<u8> = v[2]
            .as_array()
            .map(|a| a.iter().map(|p| p.as_u64().unwrap_or(0) as u8).collect())
            .unwrap_or_default();
        Drawn {
            width,
            height,
            code: convo_client::synth::read_code(&y, width, width, height),
            drawn_at: v[3].as_u64().unwrap_or(0) as u32,
            renderer: v[4].as_str().unwrap_or("none").to_string(),
            read_at: v[5].as_u64().unwrap_or(0) as u32,
        }
    }

    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.execute("sync", script, args).await
    }

    /// Runs `script` as an asynchronous script: it ends by calling its last argument.
    pub async fn script_async(&self, script: &str, args: Value) -> Value {
        self.execute("async", script, args).await
    }

    async fn execute(&self, how: &str, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            &format!("/execute/{how}"),
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    pub async fn screenshot(&self, name: &str) -> PathBuf {
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

pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child started as the leader of its own process group, killed with the whole group:
/// tauri-driver starts WebKitWebDriver, which outlived it (one more left running after every
/// test or bench).
pub struct KillGroup(pub Child);

impl Drop for KillGroup {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts tauri-driver (with `envs` for the app it launches) and a session of `app`.
pub async fn launch(app: &str, envs: &[(&str, &str)]) -> (KillGroup, Driver) {
    use std::os::unix::process::CommandExt;
    let (port, native) = (free_port(), free_port());
    let driver = KillGroup(
        Command::new("tauri-driver")
            .args([
                "--port",
                &port.to_string(),
                "--native-port",
                &native.to_string(),
            ])
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .process_group(0)
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
    (
        driver,
        Driver::new(http, format!("{base}/session/{session}")),
    )
}
