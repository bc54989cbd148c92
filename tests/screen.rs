//! Screen and window capture on a real X server (Xvfb in `tests/desktop.sh`): the monitors
//! and windows are listed, a window and a monitor are captured with the right size and
//! colour, and a window that closes ends its source with a reason. Ignored by a plain
//! `cargo test` (it needs a display).
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(target_os = "linux")]

use std::time::Instant;

use convo_client::media::{MediaError, SourceKind, VideoFrame, VideoSource};
use convo_client::screen::{X11Screen, list};
use convo_e2e::x11::TestWindow;

/// Y, U and V at (x, y) of an I420 frame.
fn yuv_at(f: &VideoFrame, x: usize, y: usize) -> (u8, u8, u8) {
    let (w, h) = (f.width, f.height);
    let u0 = w * h;
    let v0 = u0 + (w / 2) * (h / 2);
    let c = (y / 2) * (w / 2) + x / 2;
    (f.i420[y * w + x], f.i420[u0 + c], f.i420[v0 + c])
}

// Pure red in BT.601 limited range.
const RED: (u8, u8, u8) = (82, 90, 240);

#[test]
#[ignore = "needs an X display: run tests/desktop.sh"]
fn monitors_and_windows_are_listed_and_captured() {
    let window = TestWindow::open("Convo capture test", (40, 60, 202, 120), 0xFF0000);
    let sources = list();
    let monitor = sources
        .iter()
        .find(|s| s.kind == SourceKind::Monitor)
        .unwrap_or_else(|| panic!("no monitor in {sources:?}"));
    let listed = sources
        .iter()
        .find(|s| s.name == "Convo capture test")
        .unwrap_or_else(|| panic!("the test window is not listed: {sources:?}"));
    assert_eq!(listed.kind, SourceKind::Window);
    assert_eq!((listed.width, listed.height), (202, 120));
    assert_eq!(listed.id, format!("x11:window:{}", window.id));

    // The window: its size, all red.
    let mut source = X11Screen::open(Some(&listed.id)).expect("open the window");
    assert_eq!(source.name(), "Convo capture test");
    let f = source.next_frame().expect("a frame of the window");
    assert_eq!((f.width, f.height), (202, 120));
    for (x, y) in [(0, 0), (100, 60), (201, 119)] {
        assert_eq!(yuv_at(&f, x, y), RED, "at {x},{y}");
    }

    // The monitor: the whole screen, the window where it is.
    let mut screen = X11Screen::open(Some(&monitor.id)).expect("open the monitor");
    let started = Instant::now();
    let mut frames = Vec::new();
    for _ in 0..10 {
        frames.push(screen.next_frame().expect("a frame of the screen"));
    }
    let per_second = 10.0 / started.elapsed().as_secs_f64();
    let f = frames.pop().unwrap();
    assert_eq!(
        (f.width, f.height),
        (
            usize::from(monitor.width) & !1,
            usize::from(monitor.height) & !1
        )
    );
    assert_eq!(yuv_at(&f, 140, 120), RED);
    assert_ne!(yuv_at(&f, 20, 20), RED, "outside the window is not red");
    // A figure, not a check: the source paces itself at its frame rate.
    println!(
        "{}×{} screen: {per_second:.1} frames/s (paced at {})",
        f.width,
        f.height,
        screen.fps()
    );

    // A window that closes ends its source with a reason.
    window.close();
    let mut ended = None;
    for _ in 0..20 {
        if let Err(e) = source.next_frame() {
            ended = Some(e);
            break;
        }
    }
    match ended {
        Some(MediaError::Stopped { reason, .. }) => {
            assert!(reason.contains("closed"), "{reason}")
        }
        other => panic!("the closed window's source went on: {other:?}"),
    }
    assert!(!list().iter().any(|s| s.name == "Convo capture test"));

    // Ids that are not sources are refused with a reason.
    for bad in [
        "x11:window:1",
        "x11:window:nope",
        "x11:monitor:nope",
        "webcam",
    ] {
        let e = X11Screen::open(Some(bad)).err().expect(bad);
        assert!(matches!(e, MediaError::Unavailable { .. }), "{bad}: {e}");
    }
}

/// Where the system has no screen-sharing service (here: a D-Bus session without
/// xdg-desktop-portal, as in CI), the system-picker backend says so — scap's panic is caught,
/// the app goes on.
#[test]
#[ignore = "needs a D-Bus session: run tests/desktop.sh"]
fn the_system_picker_fails_cleanly_without_a_portal() {
    let e = convo_client::portal::PortalScreen::open(10)
        .err()
        .expect("no portal here, so no capture");
    match e {
        MediaError::Unavailable { reason, .. } => assert!(!reason.is_empty()),
        other => panic!("{other:?}"),
    }
}
