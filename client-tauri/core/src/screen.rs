//! Screen and window capture on X11 (feature `screen`): the monitors (RandR) and the
//! top-level windows of the display in `DISPLAY`, each with a stable id, and a
//! [`VideoSource`] that captures one of them.
//!
//! X11 is what Linux desktops without a compositor-mediated portal offer, and what Xvfb offers
//! the tests. Wayland sessions (and Windows and macOS) capture through the desktop's own
//! interfaces instead; see the README for what is and is not covered.
//!
//! Capture reads the area from the root window (GetImage), so a shared window shows what is
//! on screen where it is — including what overlaps it — and follows it when it moves. A
//! window that closes or unmaps ends the source with [`MediaError::Stopped`].

use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::protocol::randr::ConnectionExt as _;
use x11rb::protocol::xproto::{
    AtomEnum, ConnectionExt as _, ImageFormat, ImageOrder, MapState, Window,
};
use x11rb::rust_connection::RustConnection;

use crate::convert::{Packed, packed_to_i420};
use crate::media::{MediaError, SCREEN_FPS, ScreenSource, SourceKind, VideoFrame, VideoSource};

fn unavailable(reason: impl ToString) -> MediaError {
    MediaError::Unavailable {
        device: "screen".into(),
        reason: reason.to_string(),
    }
}

struct Display {
    conn: RustConnection,
    root: Window,
    width: u16,
    height: u16,
    /// How to read GetImage's pixels, checked once.
    layout: Packed,
    /// `_NET_WM_NAME`, `UTF8_STRING`, `_NET_CLIENT_LIST`, interned once (0 if the server
    /// would not).
    atoms: [u32; 3],
}

impl Display {
    fn open() -> Result<Display, MediaError> {
        if std::env::var_os("DISPLAY").is_none() {
            return Err(unavailable(
                "no X11 display (DISPLAY is not set); on Wayland, share through the desktop's portal",
            ));
        }
        let (conn, n) = x11rb::connect(None)
            .map_err(|e| unavailable(format!("cannot open the display: {e}")))?;
        let setup = conn.setup();
        let screen = setup
            .roots
            .get(n)
            .ok_or_else(|| unavailable("the display has no screen"))?;
        let depth_ok = setup
            .pixmap_formats
            .iter()
            .any(|f| f.depth == screen.root_depth && f.bits_per_pixel == 32);
        if !depth_ok || !(screen.root_depth == 24 || screen.root_depth == 32) {
            return Err(unavailable(format!(
                "the display's depth ({} bits) is not supported; use 24-bit colour",
                screen.root_depth
            )));
        }
        let layout = if setup.image_byte_order == ImageOrder::LSB_FIRST {
            Packed::Bgrx
        } else {
            // Most significant byte first: X R G B; read from byte 1 on.
            Packed::Rgbx
        };
        // Sent together, answered together: one round trip.
        let cookies = [&b"_NET_WM_NAME"[..], b"UTF8_STRING", b"_NET_CLIENT_LIST"]
            .map(|name| conn.intern_atom(false, name).ok());
        let atoms = cookies.map(|c| c.and_then(|c| c.reply().ok()).map_or(0, |r| r.atom));
        Ok(Display {
            root: screen.root,
            width: screen.width_in_pixels,
            height: screen.height_in_pixels,
            layout,
            atoms,
            conn,
        })
    }

    fn monitors(&self) -> Vec<(String, i16, i16, u16, u16)> {
        let listed = self
            .conn
            .randr_get_monitors(self.root, true)
            .ok()
            .and_then(|c| c.reply().ok())
            .map(|r| r.monitors)
            .unwrap_or_default();
        let mut out: Vec<_> = listed
            .iter()
            .filter(|m| m.width > 0 && m.height > 0)
            .map(|m| {
                let name = self
                    .conn
                    .get_atom_name(m.name)
                    .ok()
                    .and_then(|c| c.reply().ok())
                    .map(|r| String::from_utf8_lossy(&r.name).into_owned())
                    .unwrap_or_else(|| format!("monitor-{}", m.name));
                (name, m.x, m.y, m.width, m.height)
            })
            .collect();
        if out.is_empty() {
            // No RandR monitors: the whole screen.
            out.push(("screen".into(), 0, 0, self.width, self.height));
        }
        out
    }

    fn window_name(&self, w: Window) -> Option<String> {
        let [net_name, utf8, _] = self.atoms;
        for (prop, ty) in [
            (net_name, utf8),
            (AtomEnum::WM_NAME.into(), AtomEnum::STRING.into()),
        ] {
            if prop == 0 {
                continue;
            }
            let value = self
                .conn
                .get_property(false, w, prop, ty, 0, 256)
                .ok()?
                .reply()
                .ok()?
                .value;
            if !value.is_empty() {
                return Some(String::from_utf8_lossy(&value).into_owned());
            }
        }
        None
    }

    /// Top-level windows: the window manager's client list, or without one the root's mapped
    /// children that have a name.
    fn windows(&self) -> Vec<Window> {
        let from_wm = Some(self.atoms[2]).filter(|a| *a != 0).and_then(|a| {
            let r = self
                .conn
                .get_property(false, self.root, a, AtomEnum::WINDOW, 0, 4096)
                .ok()?
                .reply()
                .ok()?;
            let ids: Vec<u32> = r.value32()?.collect();
            (!ids.is_empty()).then_some(ids)
        });
        if let Some(ids) = from_wm {
            return ids;
        }
        self.conn
            .query_tree(self.root)
            .ok()
            .and_then(|c| c.reply().ok())
            .map(|t| t.children)
            .unwrap_or_default()
    }

    /// A window's area on the screen, if it is shown.
    fn window_rect(&self, w: Window) -> Option<(i16, i16, u16, u16)> {
        let attrs = self.conn.get_window_attributes(w).ok()?.reply().ok()?;
        if attrs.map_state != MapState::VIEWABLE || attrs.override_redirect {
            return None;
        }
        let geo = self.conn.get_geometry(w).ok()?.reply().ok()?;
        let at = self
            .conn
            .translate_coordinates(w, self.root, 0, 0)
            .ok()?
            .reply()
            .ok()?;
        Some((at.dst_x, at.dst_y, geo.width, geo.height))
    }

    /// The part of a rectangle that is on the screen.
    fn clip(&self, (x, y, w, h): (i16, i16, u16, u16)) -> Option<(i16, i16, u16, u16)> {
        let x0 = i32::from(x).max(0);
        let y0 = i32::from(y).max(0);
        let x1 = (i32::from(x) + i32::from(w)).min(i32::from(self.width));
        let y1 = (i32::from(y) + i32::from(h)).min(i32::from(self.height));
        (x1 - x0 >= 2 && y1 - y0 >= 2)
            .then(|| (x0 as i16, y0 as i16, (x1 - x0) as u16, (y1 - y0) as u16))
    }

    fn grab(&self, (x, y, w, h): (i16, i16, u16, u16)) -> Result<VideoFrame, String> {
        let image = self
            .conn
            .get_image(ImageFormat::Z_PIXMAP, self.root, x, y, w, h, !0)
            .map_err(|e| e.to_string())?
            .reply()
            .map_err(|e| e.to_string())?;
        let (w, h) = (usize::from(w), usize::from(h));
        let (data, layout) = match self.layout {
            Packed::Bgrx => (&image.data[..], Packed::Bgrx),
            Packed::Rgbx => (image.data.get(1..).unwrap_or_default(), Packed::Rgbx),
        };
        packed_to_i420(data, w, h, w * 4, layout)
            .ok_or_else(|| format!("the display sent {} bytes for {w}×{h}", image.data.len()))
    }
}

/// The monitors and windows that can be shared now (empty where there is no X11 display).
pub fn list() -> Vec<ScreenSource> {
    let Ok(d) = Display::open() else {
        return Vec::new();
    };
    let monitors = d.monitors();
    let single = monitors.len() == 1;
    let mut out: Vec<ScreenSource> = monitors
        .into_iter()
        .map(|(name, _, _, width, height)| ScreenSource {
            id: format!("x11:monitor:{name}"),
            name: if single {
                "Entire screen".into()
            } else {
                format!("Screen {name}")
            },
            kind: SourceKind::Monitor,
            width,
            height,
        })
        .collect();
    for w in d.windows() {
        let (Some(rect), Some(name)) = (d.window_rect(w), d.window_name(w)) else {
            continue;
        };
        if rect.2 < 16 || rect.3 < 16 || name.trim().is_empty() {
            continue;
        }
        out.push(ScreenSource {
            id: format!("x11:window:{w}"),
            name,
            kind: SourceKind::Window,
            width: rect.2,
            height: rect.3,
        });
    }
    out
}

enum Target {
    Area(i16, i16, u16, u16),
    Window(Window),
}

/// A monitor or window captured at [`SCREEN_FPS`].
pub struct X11Screen {
    display: Display,
    target: Target,
    name: String,
    fps: u32,
    next: Instant,
}

impl X11Screen {
    /// Opens a source from [`list`] by id; `None` is the first monitor.
    pub fn open(id: Option<&str>) -> Result<X11Screen, MediaError> {
        let display = Display::open()?;
        let (target, name) = match id.map(|i| i.split(':').collect::<Vec<_>>()).as_deref() {
            None => {
                let (name, x, y, w, h) = display
                    .monitors()
                    .into_iter()
                    .next()
                    .ok_or_else(|| unavailable("no monitor"))?;
                (Target::Area(x, y, w, h), name)
            }
            Some(["x11", "monitor", name]) => {
                let (n, x, y, w, h) = display
                    .monitors()
                    .into_iter()
                    .find(|m| m.0 == *name)
                    .ok_or_else(|| unavailable(format!("monitor {name} is gone")))?;
                (Target::Area(x, y, w, h), n)
            }
            Some(["x11", "window", wid]) => {
                let w: Window = wid
                    .parse()
                    .map_err(|_| unavailable(format!("{wid} is not a window id")))?;
                let name = display.window_name(w).unwrap_or_else(|| "window".into());
                display
                    .window_rect(w)
                    .ok_or_else(|| unavailable(format!("the window “{name}” is not shown")))?;
                (Target::Window(w), name)
            }
            Some(_) => {
                return Err(unavailable(format!(
                    "“{}” is not a screen or window of this display",
                    id.unwrap_or_default()
                )));
            }
        };
        Ok(X11Screen {
            display,
            target,
            name,
            fps: SCREEN_FPS,
            next: Instant::now(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn stopped(&self, reason: impl ToString) -> MediaError {
        MediaError::Stopped {
            device: format!("sharing “{}”", self.name),
            reason: reason.to_string(),
        }
    }
}

impl VideoSource for X11Screen {
    fn next_frame(&mut self) -> Result<VideoFrame, MediaError> {
        let now = Instant::now();
        if self.next > now {
            std::thread::sleep(self.next - now);
        }
        self.next = self.next.max(now) + Duration::from_secs_f64(1.0 / f64::from(self.fps));
        let rect = match self.target {
            Target::Area(x, y, w, h) => (x, y, w, h),
            Target::Window(w) => self
                .display
                .window_rect(w)
                .ok_or_else(|| self.stopped("the window was closed or hidden"))?,
        };
        let rect = self
            .display
            .clip(rect)
            .ok_or_else(|| self.stopped("the window is off screen"))?;
        self.display.grab(rect).map_err(|e| self.stopped(e))
    }

    fn fps(&self) -> u32 {
        self.fps
    }
}
