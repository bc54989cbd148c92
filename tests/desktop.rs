//! The desktop app end to end: the real app (built with its ui embedded), under Xvfb, driven
//! through tauri-driver and WebKitWebDriver like a person would — register, sign in, create a
//! room, join — while a `convo-bot` joins the same room. The app must show the bot's video
//! (frames keep coming and their codes read back, in order) and play the bot's audio to its
//! speaker (a PulseAudio null sink, recorded back from its monitor), and the bot must decode
//! the app's audio and video. The room has a waiting room: the bot knocks, the app (its host)
//! is notified and lets it in with the Admit button. The app shares a window (a real X11 window on the Xvfb display,
//! picked in the share picker) and the bot decodes it with the window's colour; closing the
//! window ends the share with a message. The bot's joining, while another window has the
//! focus, raises a desktop notification (seen by a notification server on the test's D-Bus
//! session), and so does the bot's chat message, which the chat panel then shows; the app's
//! answer is kept with the room. A `convoconnect://join/<room>` link launched while the app runs opens that
//! room's pre-join. A meeting scheduled two minutes ahead brings a reminder notification and
//! shows on Home, as does one scheduled with Home's form. A restarted app is still signed in (the refresh token in the Secret
//! Service, gnome-keyring). Screenshots of pre-join and the call go to `target/e2e/`.
//!
//! Needs what `tests/desktop.sh` prepares (the ui built, the app built with
//! `--features custom-protocol`, tauri-driver, WebKitWebDriver, a display), so it is ignored
//! by a plain `cargo test` and run by that script, which the README's test command calls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use convo_client::call::{self, CallOptions};
use convo_client::media::{
    AudioSource, DecodedVideo, MediaBackend, MediaError, RemoteTrack, Synthetic, VideoSink,
    VideoSource,
};
use convo_client::synth;
use convo_e2e::webdriver::{PIXELS, launch};
use convo_e2e::x11::TestWindow;
use convo_e2e::{Backend, Env, PASSWORD};
use convo_shared::signal::TrackKind;
use serde_json::json;

/// The bot: synthetic sources; the centre pixel (Y, U, V) of every screen and camera frame
/// it decodes.
struct Watcher {
    synthetic: Synthetic,
    screen_centre: Arc<Mutex<Vec<(u8, u8, u8)>>>,
    camera_centre: Arc<Mutex<Vec<(u8, u8, u8)>>>,
}

struct CentreSink(Arc<Mutex<Vec<(u8, u8, u8)>>>);

impl VideoSink for CentreSink {
    fn frame(&mut self, f: &DecodedVideo<'_>) {
        let (x, y) = (f.width / 2, f.height / 2);
        let c = (y / 2) * f.strides.1 + x / 2;
        let px = (
            f.y[y * f.strides.0 + x],
            f.u[c],
            f.v[(y / 2) * f.strides.2 + x / 2],
        );
        self.0.lock().unwrap().push(px);
    }
}

impl MediaBackend for Watcher {
    fn microphone(&self) -> Result<Box<dyn AudioSource>, MediaError> {
        self.synthetic.microphone()
    }
    fn camera(&self) -> Result<Box<dyn VideoSource>, MediaError> {
        self.synthetic.camera()
    }
    fn screen(&self) -> Result<Box<dyn VideoSource>, MediaError> {
        self.synthetic.screen()
    }
    fn video_sink(&self, track: &RemoteTrack) -> Option<Box<dyn VideoSink>> {
        let centres = match track.kind {
            TrackKind::Screen => &self.screen_centre,
            TrackKind::Video => &self.camera_centre,
            TrackKind::Audio => return None,
        };
        Some(Box::new(CentreSink(centres.clone())))
    }
}

async fn text_of(d: &convo_e2e::webdriver::Driver, css: &str) -> String {
    d.script(
        &format!("const e = document.querySelector(\"{css}\"); return e ? e.textContent : ''"),
        json!([]),
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// An accessibility audit of what `screen` shows (axe-core, from the ui's npm packages; WCAG
/// 2 A and AA rules): every control has a name a screen reader can say, every image a text,
/// every colour enough contrast. Returns what it found, one line per problem and element.
async fn audit(d: &convo_e2e::webdriver::Driver, screen: &str) -> Vec<String> {
    let axe = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ui/node_modules/axe-core/axe.min.js"
    ))
    .expect("axe-core (npm ci in ui/)");
    d.script(&format!("{axe}; return true;"), json!([])).await;
    let found = d
        .script_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa'] } })
               .then((r) => done(r.violations.flatMap((v) => v.nodes.map((n) => `${v.id}: ${n.target.join(' ')} (${v.impact})`))))
               .catch((e) => done(['axe failed: ' + e]));",
            json!([]),
        )
        .await;
    let found: Vec<String> = found
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    eprintln!("accessibility audit of {screen}: {found:#?}");
    found
}

/// What `screen` shows, audited and saved as `shot` in the dark theme; the theme it had is put
/// back after.
async fn in_dark_theme(d: &convo_e2e::webdriver::Driver, screen: &str, shot: &str) -> Vec<String> {
    d.script(
        "window.__theme = document.documentElement.dataset.theme;
         document.documentElement.dataset.theme = 'dark'; return true;",
        json!([]),
    )
    .await;
    let found = audit(d, &format!("{screen}, dark")).await;
    d.screenshot(shot).await;
    d.script(
        "if (window.__theme === undefined) delete document.documentElement.dataset.theme;
         else document.documentElement.dataset.theme = window.__theme;
         return true;",
        json!([]),
    )
    .await;
    found
}

/// The call screen fits the window with `panel` open: nothing scrolls sideways, every control
/// is inside the window (the chat panel once cut the left tile and pushed the controls out).
async fn fits(d: &convo_e2e::webdriver::Driver, panel: &str) {
    let v = d
        .script(
            "const w = window.innerWidth, h = window.innerHeight;
             const out = [...document.querySelectorAll('#call button, #call aside, #call .tile')]
               .map((e) => [e.id || e.className, e.getBoundingClientRect()])
               .filter(([, r]) => r.width > 0 && (r.left < -1 || r.right > w + 1 || r.bottom > h + 1))
               .map(([n, r]) => `${n} ${Math.round(r.left)}..${Math.round(r.right)}`);
             return [w, h, document.scrollingElement.scrollWidth, out];",
            json!([]),
        )
        .await;
    let (w, scroll) = (v[0].as_i64().unwrap_or(0), v[2].as_i64().unwrap_or(0));
    assert!(
        scroll <= w && v[3].as_array().is_some_and(Vec::is_empty),
        "with the {panel} panel open the call does not fit {}x{}: {v}",
        v[0],
        v[1]
    );
}

/// Waits (20 s at most) for the test's notification server to have shown a notification
/// containing `needle`.
async fn notified(log_path: &str, needle: &str, missing: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        if log
            .lines()
            .any(|l| l.starts_with("NOTIFY") && l.contains(needle))
        {
            return;
        }
        assert!(
            Instant::now() < end,
            "{missing}; the notification server saw: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (20 s at most) until the element's text contains `needle`.
async fn shows(d: &convo_e2e::webdriver::Driver, css: &str, needle: &str, missing: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    while !text_of(d, css).await.contains(needle) {
        assert!(Instant::now() < end, "{missing}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The app is single-instance: a second launch would hand over to the first and exit. The
/// tests here take turns.
static APP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the built app, tauri-driver and a display: run tests/desktop.sh"]
async fn the_app_joins_a_call_and_sees_a_bot() {
    let _turn = APP.lock().await;
    let app = std::env::var("CONVO_DESKTOP_BIN").expect("CONVO_DESKTOP_BIN: run tests/desktop.sh");
    let notifications =
        std::env::var("CONVO_NOTIFY_LOG").expect("CONVO_NOTIFY_LOG: run tests/desktop.sh");
    let env = Env::start(Backend::Sqlite).await;
    let (_driver, d) = launch(
        &app,
        &[
            ("CONVO_SERVER", &env.base),
            ("CONVO_MEDIA", "synthetic"),
            ("CONVO_AGENDA_POLL_SECS", "2"),
        ],
    )
    .await;

    let mut problems = Vec::new();
    d.wait("#register-link", 30).await;
    problems.extend(audit(&d, "sign-in").await);
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
    d.click("#room-waiting").await;
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

    problems.extend(audit(&d, "pre-join").await);
    d.screenshot("pre-join").await;
    d.click("#join").await;
    d.wait("#call", 30).await;

    // The person shares another window, and switches to it (the app loses the focus).
    let window = TestWindow::open("Slides to share", (760, 420, 320, 240), 0xFF0000);
    d.click("#toggle-share").await;
    let pick = format!("button.share-source[data-id='x11:window:{}']", window.id);
    d.wait(&pick, 20).await;
    d.screenshot("share-picker").await;
    d.click(&pick).await;
    let end = Instant::now() + Duration::from_secs(20);
    while text_of(&d, "#toggle-share").await != "Stop sharing" {
        assert!(Instant::now() < end, "sharing did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    window.focus();

    // A bot joins the same room.
    let bot_token = env.user("bot").await;
    let chat_token = bot_token.clone();
    let screen_centre = Arc::new(Mutex::new(Vec::new()));
    let camera_centre = Arc::new(Mutex::new(Vec::new()));
    let bot = {
        let (base, room) = (env.base.clone(), room.clone());
        let backend = Watcher {
            // A camera at 1280 × 720, 30 fps: the app draws it through the video channel.
            synthetic: Synthetic {
                fps: 30,
                size: synth::VideoSize {
                    width: 1280,
                    height: 720,
                },
                ..Synthetic::default()
            },
            screen_centre: screen_centre.clone(),
            camera_centre: camera_centre.clone(),
        };
        // In the call until it leaves, at the end of the test.
        tokio::spawn(async move {
            let o = CallOptions {
                room_id: room,
                backend: Some(convo_client::media::Backend(Arc::new(backend))),
                ..Default::default()
            };
            call::start(&base, &bot_token, o, None).await.unwrap()
        })
    };

    // The room has a waiting room: the bot knocks, the host (the app, in the background) is
    // notified and lets it in.
    notified(
        &notifications,
        "bot is waiting to join",
        "no notification of the bot waiting",
    )
    .await;
    d.wait(".knock button.admit", 20).await;
    assert!(text_of(&d, "#knocks").await.contains("bot wants to join"));
    d.screenshot("waiting-room").await;
    d.click(".knock button.admit").await;
    let bot = bot.await.unwrap();

    // Its joining, while the app is in the background, is a desktop notification.
    notified(
        &notifications,
        "joined the meeting",
        "no notification of the bot joining",
    )
    .await;

    // The bot writes in the chat, the app still in the background: a notification, and the
    // message in the chat panel; the app's answer is kept with the room.
    let rest = convo_client::api::Api::new(&env.base);
    rest.send_chat(&chat_token, &room, "Slides look good 👍")
        .await
        .unwrap();
    notified(
        &notifications,
        "bot: Slides look good 👍",
        "no notification of the bot's message",
    )
    .await;
    assert_eq!(text_of(&d, "#chat-unread").await, "1");
    d.click("#toggle-chat").await;
    shows(
        &d,
        "#chat-messages",
        "Slides look good 👍",
        "the bot's message is not in the chat panel",
    )
    .await;
    d.type_in("#chat-input", "Thanks, bot").await;
    d.click("#chat-send").await;
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let history = rest.chat_history(&chat_token, &room).await.unwrap();
        if history
            .messages
            .iter()
            .any(|m| m.text == "Thanks, bot" && m.user.username == "desktop")
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "the app's answer was not kept: {history:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Emoji are drawn from a colour font (the .deb depends on one), not as empty boxes: the
    // glyph drawn in black comes out in colour.
    let coloured = d
        .script(
            "const c = document.createElement('canvas'); c.width = c.height = 48;
             const g = c.getContext('2d'); g.fillStyle = '#000';
             g.font = '32px ' + getComputedStyle(document.body).fontFamily;
             g.fillText('\u{1F44D}', 4, 38);
             const p = g.getImageData(0, 0, 48, 48).data; let n = 0;
             for (let i = 0; i < p.length; i += 4) if (p[i + 3] > 0 && Math.max(p[i], p[i + 1], p[i + 2]) - Math.min(p[i], p[i + 1], p[i + 2]) > 40) n++;
             return n;",
            json!([]),
        )
        .await;
    assert!(
        coloured.as_i64().is_some_and(|n| n > 50),
        "the emoji is not drawn in colour ({coloured} coloured pixels)"
    );
    // A 1024×640 window holds the call with the chat open.
    d.call(
        reqwest::Method::POST,
        "/window/rect",
        Some(json!({"width": 1024, "height": 640})),
    )
    .await;
    fits(&d, "chat").await;
    problems.extend(audit(&d, "call with chat").await);
    d.screenshot("chat").await;
    problems.extend(in_dark_theme(&d, "call with chat", "chat-dark").await);
    d.click("#toggle-chat").await;
    d.click("#toggle-people").await;
    fits(&d, "people").await;
    d.screenshot("people").await;
    d.click("#toggle-people").await;

    // The bot sees the shared window (a still window sends few frames: wait for three)
    // before it is closed.
    let end = Instant::now() + Duration::from_secs(30);
    while !bot
        .reports()
        .iter()
        .any(|t| t.kind == "screen" && t.frames_decoded >= 3)
    {
        assert!(
            Instant::now() < end,
            "the bot got no frames of the shared window: {:#?}",
            bot.reports()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Closing the shared window ends the share, with a message.
    window.close();
    let end = Instant::now() + Duration::from_secs(20);
    while text_of(&d, "#toggle-share").await != "Share screen" {
        assert!(
            Instant::now() < end,
            "the share went on after its window closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let toast = text_of(&d, ".toast").await;
    assert!(toast.contains("Screen sharing stopped"), "{toast}");

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
    // The bot's camera is 720p, sent as 1280, 640 and 320 pixels wide: once the layers ramp
    // up (the downlink's estimate starts low), the app is sent the smallest that fills the
    // tile it draws (the tile's size goes to the server), as the SFU's `desired_layer` picks.
    let end = Instant::now() + Duration::from_secs(30);
    let layer = loop {
        let v = d
            .script(
                &format!(
                    "const c = document.querySelector(\"{tile}\");
                     const r = c.closest('figure').getBoundingClientRect();
                     return [c.width, Math.round(r.width * devicePixelRatio), Math.round(r.height * devicePixelRatio)]"
                ),
                json!([]),
            )
            .await;
        let n = |i: usize| v[i].as_u64().unwrap_or(0);
        let (drawn, tile_w, tile_h) = (n(0), n(1), n(2));
        let wanted = [(320u64, 180u64), (640, 360), (1280, 720)]
            .into_iter()
            .find(|(w, h)| w * 10 >= tile_w * 9 || h * 10 >= tile_h * 9)
            .map_or(1280, |(w, _)| w);
        if drawn == wanted {
            eprintln!("the tile is {tile_w}x{tile_h}: the {drawn}-pixel layer is drawn");
            break (wanted as usize, wanted as usize * 9 / 16);
        }
        assert!(
            Instant::now() < end,
            "the tile is {tile_w}x{tile_h}: wanted the {wanted}-pixel layer, drawing {drawn}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (mut codes, mut ages, mut shown, mut renderers, mut sizes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        // The code strips, from the pixels the app drew.
        let drawn = d.drawn(tile).await;
        let code = drawn.code.expect("the drawn frame carries the bot's code");
        // How old the frame was when the app drew it (from the bot's capture, one clock); and,
        // for the log, how old when read back.
        ages.push(drawn.age_ms().unwrap_or(u32::MAX));
        shown.push(drawn.shown_ms().unwrap_or(u32::MAX));
        sizes.push((drawn.width, drawn.height));
        renderers.push(drawn.renderer);
        codes.push(code.counter);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(
        codes.windows(2).all(|p| p[1] > p[0]),
        "frames advance in order: {codes:?}"
    );
    eprintln!(
        "drawn frames: codes {codes:?}, age when drawn {ages:?} ms, when read back {shown:?} ms, \
         {renderers:?}, {sizes:?}"
    );
    // The video channel's path: the layer drawn whole with WebGL, and nothing stale on
    // screen.
    assert!(
        sizes.iter().all(|&s| s == layer),
        "drawn at {sizes:?}, wanted {layer:?}"
    );
    assert!(renderers.iter().all(|r| r == "webgl"), "{renderers:?}");
    assert!(
        ages.iter().all(|&a| a <= 200),
        "a frame older than 200 ms was drawn: {ages:?} ms"
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

    // Another camera, mid-call, from the Devices panel: the bot sees the new one (synthetic
    // camera 2 paints a grey checkerboard; the first camera's picture is tinted) on the same
    // track, its frames' codes still in order.
    d.click("#toggle-devices").await;
    d.wait(
        "#devices-panel #pick-camera option[value='synthetic-2']",
        20,
    )
    .await;
    let before = camera_centre.lock().unwrap().len();
    assert!(before > 20, "the bot saw the first camera: {before} frames");
    d.script(
        "const s = document.querySelector('#devices-panel #pick-camera');\
         s.value = 'synthetic-2';\
         s.dispatchEvent(new Event('change', { bubbles: true }));",
        json!([]),
    )
    .await;
    let grey = |&(_, u, v): &(u8, u8, u8)| u.abs_diff(128) <= 8 && v.abs_diff(128) <= 8;
    let end = Instant::now() + Duration::from_secs(20);
    while camera_centre.lock().unwrap()[before..]
        .iter()
        .filter(|p| grey(p))
        .count()
        < 15
    {
        assert!(Instant::now() < end, "the bot never saw the second camera");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let centres = camera_centre.lock().unwrap().clone();
    assert!(
        centres[..before].iter().all(|p| !grey(p)),
        "the first camera's picture is tinted"
    );
    // The self view follows: its centre pixel turns grey (R = G = B).
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let px = d
            .script(
                &format!("{PIXELS}const c = document.querySelector(\"canvas[data-track='local:video']\");\
                 return Array.from(pixels(c).getImageData(c.width / 2, c.height / 2, 1, 1).data);"),
                json!([]),
            )
            .await;
        let rgb: Vec<i64> = px
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        if (rgb[0] - rgb[2]).abs() < 16 && (rgb[0] - rgb[1]).abs() < 16 {
            break;
        }
        assert!(
            Instant::now() < end,
            "the self view still shows the first camera: {rgb:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fits(&d, "devices").await;
    problems.extend(audit(&d, "devices").await);
    d.screenshot("devices").await;
    d.click("#toggle-devices").await;

    // The bot decoded the app's camera and microphone.
    let report = bot.leave().await.unwrap();
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
    // ... and the shared window: its frames, red (BT.601 Y 82, U 90, V 240, give or take
    // what H.264 does to a flat colour).
    let screen = from_app
        .iter()
        .find(|t| t.kind == "screen")
        .unwrap_or_else(|| panic!("no screen share from the app: {report:#?}"));
    // A still window: the encoder sends few frames (it skips what does not change).
    assert!(screen.frames_decoded >= 3, "{screen:?}");
    let centres = screen_centre.lock().unwrap().clone();
    let red = centres
        .iter()
        .filter(|(y, u, v)| y.abs_diff(82) <= 6 && u.abs_diff(90) <= 6 && v.abs_diff(240) <= 6)
        .count();
    assert!(
        red * 10 >= centres.len() * 9 && !centres.is_empty(),
        "{red} of {} shared frames are the window's red: {:?}",
        centres.len(),
        &centres[..centres.len().min(5)]
    );

    d.click_until("#leave", "#room-name", 20).await;

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
    d.click_until("#prejoin button.link", "#room-name", 20)
        .await; // Back

    // Scheduling: a meeting two minutes from now (scheduled over the API) brings a reminder
    // and shows on Home; one scheduled with Home's form is listed too.
    let me = rest.login("desktop", PASSWORD).await.unwrap();
    let soon = convo_shared::schedule::ScheduleMeetingRequest {
        room_id: room.clone(),
        title: "Standup".into(),
        starts_at: time::OffsetDateTime::now_utc() + time::Duration::minutes(2),
        duration_minutes: 15,
        invitees: vec!["bot".into()],
    };
    rest.schedule_meeting(&me.access_token, &soon)
        .await
        .unwrap();
    notified(
        &notifications,
        "“Standup” starts in",
        "no reminder of the meeting",
    )
    .await;
    shows(
        &d,
        "#meetings",
        "Standup",
        "the meeting is not listed on Home",
    )
    .await;
    d.click("#schedule-open").await;
    d.type_in("#schedule-title", "Planning").await;
    d.script(
        "const i = document.querySelector('#schedule-at');\
         Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set.call(i, '2027-03-04T10:30');\
         i.dispatchEvent(new Event('input', { bubbles: true }));",
        json!([]),
    )
    .await;
    d.click("#schedule-submit").await;
    shows(
        &d,
        "#meetings",
        "Planning",
        "the meeting scheduled from Home is not listed",
    )
    .await;
    problems.extend(audit(&d, "home").await);
    d.screenshot("home-upcoming").await;
    problems.extend(in_dark_theme(&d, "home", "home-upcoming-dark").await);
    assert!(
        problems.is_empty(),
        "the accessibility audit found problems: {problems:#?}"
    );
    d.call(reqwest::Method::DELETE, "", None).await;
    drop(_driver);

    // Started again, the app is still signed in: the refresh token was in the keyring.
    let end = Instant::now() + Duration::from_secs(20);
    while Command::new("pgrep")
        .args(["-f", &app])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(Instant::now() < end, "the app did not quit");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_driver, d) = launch(
        &app,
        &[
            ("CONVO_SERVER", &env.base),
            ("CONVO_MEDIA", "synthetic"),
            ("CONVO_AGENDA_POLL_SECS", "2"),
        ],
    )
    .await;
    d.wait("#room-name", 30).await;
    d.call(reqwest::Method::DELETE, "", None).await;
    env.stop().await;
}

/// The number of frames the pre-join self view has drawn.
async fn preview_frames(d: &convo_e2e::webdriver::Driver) -> u64 {
    d.script(
        "return Number(document.querySelector(\"canvas[data-track='local:video']\")?.dataset.frames || 0)",
        json!([]),
    )
    .await
    .as_u64()
    .unwrap_or(0)
}

/// Waits (20 s at most) for the self view to draw `more` frames after now.
async fn preview_goes_on(d: &convo_e2e::webdriver::Driver, more: u64, what: &str) {
    let from = preview_frames(d).await;
    let end = Instant::now() + Duration::from_secs(20);
    while preview_frames(d).await < from + more {
        assert!(
            Instant::now() < end,
            "{what}: the self view stopped at {}",
            preview_frames(d).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Backgrounds in pre-join: a person (the synthetic camera shows a photograph) blurred, then
/// in front of a built-in picture, then in front of a picture of the user's that the app
/// keeps; a file that is not a picture is refused with a message and changes nothing.
/// Screenshots of each (target/e2e/pre-join-*.png).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the built app, tauri-driver and a display: run tests/desktop.sh"]
async fn pre_join_offers_backgrounds_and_shows_them_in_the_self_view() {
    let _turn = APP.lock().await;
    let app = std::env::var("CONVO_DESKTOP_BIN").expect("CONVO_DESKTOP_BIN: run tests/desktop.sh");
    let photo = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../client-tauri/effects/tests/data/person.jpg"
    );
    let env = Env::start(Backend::Sqlite).await;
    let (_driver, d) = launch(
        &app,
        &[
            ("CONVO_SERVER", &env.base),
            ("CONVO_MEDIA", "synthetic"),
            ("CONVO_SYNTH_VIDEO", "640x360@15"),
            ("CONVO_SYNTH_CAMERA_IMAGE", photo),
        ],
    )
    .await;
    env.user("effects").await;
    d.wait("#login", 30).await;
    d.type_in("#login", "effects").await;
    d.type_in("#password", PASSWORD).await;
    d.click("#sign-in").await;
    d.type_in("#room-name", "Backgrounds").await;
    d.click("#create-room").await;
    d.wait("#prejoin", 20).await;
    d.wait("#effects", 20).await;
    preview_goes_on(&d, 3, "pre-join").await;
    d.screenshot("pre-join-no-effect").await;

    d.click("#effects input[value='blur-strong']").await;
    preview_goes_on(&d, 10, "blur").await;
    assert_eq!(text_of(&d, "#effects-error").await, "", "blur was refused");
    d.screenshot("pre-join-blur").await;

    d.click("#effects input[value='builtin:dusk']").await;
    preview_goes_on(&d, 10, "a built-in picture").await;
    assert_eq!(
        text_of(&d, "#effects-error").await,
        "",
        "the picture was refused"
    );
    d.click("#touch-up").await;
    preview_goes_on(&d, 10, "touch-up").await;
    d.screenshot("pre-join-picture").await;
    problems_free(audit(&d, "pre-join with effects").await);

    // A picture of the user's, handed over as the file input would (a data transfer).
    let upload = |bytes: &[u8], name: &str| {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        format!(
            "const bytes = Uint8Array.from(atob('{b64}'), (c) => c.charCodeAt(0));
             const input = document.querySelector('#background-file');
             const t = new DataTransfer();
             t.items.add(new File([bytes], '{name}', {{ type: 'image/jpeg' }}));
             input.files = t.files;
             input.dispatchEvent(new Event('change', {{ bubbles: true }}));
             return true;"
        )
    };
    d.script(&upload(b"not a picture at all", "notes.jpg"), json!([]))
        .await;
    shows(
        &d,
        "#effects-error",
        "notes.jpg",
        "a file that is not a picture was not refused",
    )
    .await;
    assert!(
        d.script(
            "return document.querySelector(\"#effects input[value='builtin:dusk']\").checked",
            json!([])
        )
        .await
        .as_bool()
        .unwrap_or(false),
        "a refused file changed the background"
    );
    let own = std::fs::read(photo).unwrap();
    d.script(&upload(&own, "me.jpg"), json!([])).await;
    let end = Instant::now() + Duration::from_secs(20);
    while !d
        .script(
            "return document.querySelector(\"#effects input[value='file']\").checked",
            json!([]),
        )
        .await
        .as_bool()
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < end,
            "the user's picture was not taken: {}",
            text_of(&d, "#effects-error").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    preview_goes_on(&d, 10, "the user's picture").await;
    d.screenshot("pre-join-own-picture").await;
    // Back to none, so the kept settings leave the next test's camera as it is.
    d.click("#effects input[value='none']").await;
    d.click("#touch-up").await;
    preview_goes_on(&d, 5, "no effect").await;
    assert!(
        !d.script(
            "return document.querySelector('#touch-up').checked",
            json!([])
        )
        .await
        .as_bool()
        .unwrap_or(true),
        "touch-up stayed on"
    );
}

fn problems_free(found: Vec<String>) {
    assert!(found.is_empty(), "accessibility problems: {found:#?}");
}
