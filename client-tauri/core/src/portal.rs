//! Screen capture through scap (feature `portal`): the desktop's own screen-sharing interface
//! — the xdg-desktop-portal ScreenCast dialog on Linux (Wayland, and X11 desktops that run a
//! portal), Windows.Graphics.Capture, ScreenCaptureKit on macOS. The person picks the screen
//! or window in the system's dialog.
//!
//! scap panics where it cannot capture (on Linux: no portal on the session bus, or the dialog
//! cancelled), so it is built and read on a thread of its own under `catch_unwind`: a failure
//! becomes a [`MediaError`], never a crash. Frames cross to the encoder's thread through a
//! short channel, the newest winning.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use scap::capturer::{Capturer, Options, Resolution};
use scap::frame::{Frame, FrameType};

use crate::convert::{Packed, packed_to_i420, rgb_to_i420};
use crate::media::{MediaError, VideoFrame, VideoSource};

/// The system dialog may wait for the person this long (scap's own limit is two minutes).
const PICK_TIMEOUT: Duration = Duration::from_secs(150);
/// The first frame should come within this.
const FIRST_FRAME: Duration = Duration::from_secs(10);

fn unavailable(reason: impl ToString) -> MediaError {
    MediaError::Unavailable {
        device: "screen (system picker)".into(),
        reason: reason.to_string(),
    }
}

/// A scap frame as I420, if its format is one scap delivers as packed pixels.
fn convert(frame: Frame) -> Option<VideoFrame> {
    let (w, h, data, layout) = match frame {
        Frame::BGRA(f) => (f.width, f.height, f.data, Packed::Bgrx),
        Frame::BGRx(f) => (f.width, f.height, f.data, Packed::Bgrx),
        Frame::RGBx(f) => (f.width, f.height, f.data, Packed::Rgbx),
        Frame::RGB(f) => {
            let (w, h) = (
                usize::try_from(f.width).ok()?,
                usize::try_from(f.height).ok()?,
            );
            return rgb_to_i420(&f.data, w, h);
        }
        _ => return None,
    };
    let (w, h) = (usize::try_from(w).ok()?, usize::try_from(h).ok()?);
    packed_to_i420(&data, w, h, w * 4, layout)
}

/// What the panic said, for the error message.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "it failed".into())
}

/// A screen or window picked in the system's dialog, as a [`VideoSource`].
pub struct PortalScreen {
    frames: mpsc::Receiver<VideoFrame>,
    stop: Arc<AtomicBool>,
    fps: u32,
    /// A still screen sends no new frames: the last one is repeated at the frame rate.
    last: Option<VideoFrame>,
}

impl PortalScreen {
    /// Asks the system for a screen or window (its dialog opens) and starts capturing.
    pub fn open(fps: u32) -> Result<PortalScreen, MediaError> {
        if !scap::is_supported() {
            return Err(unavailable("this system has no screen-capture interface"));
        }
        if !scap::has_permission() && !scap::request_permission() {
            return Err(unavailable(
                "permission to record the screen was not given (see the system's privacy settings)",
            ));
        }
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), MediaError>>();
        let (tx, frames) = mpsc::sync_channel(2);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::Builder::new()
            .name("screen-portal".into())
            .spawn(move || {
                let options = Options {
                    fps,
                    show_cursor: true,
                    show_highlight: false,
                    target: None,
                    crop_area: None,
                    output_type: FrameType::BGRAFrame,
                    output_resolution: Resolution::Captured,
                    excluded_targets: None,
                };
                let built = catch_unwind(AssertUnwindSafe(|| {
                    let mut c = Capturer::build(options)?;
                    c.start_capture();
                    Ok::<_, scap::capturer::CapturerBuildError>(c)
                }));
                let mut capturer = match built {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        let _ = ready_tx.send(Err(unavailable(e)));
                        return;
                    }
                    Err(p) => {
                        let _ = ready_tx.send(Err(unavailable(format!(
                            "the desktop's screen-sharing service did not answer ({})",
                            panic_text(p.as_ref())
                        ))));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                while !stop2.load(Ordering::Relaxed) {
                    let next = catch_unwind(AssertUnwindSafe(|| capturer.get_next_frame()));
                    let Ok(Ok(frame)) = next else { break };
                    let Some(frame) = convert(frame) else {
                        continue;
                    };
                    // Full: the encoder is behind; this frame is dropped.
                    if let Err(mpsc::TrySendError::Disconnected(_)) = tx.try_send(frame) {
                        break;
                    }
                }
                let _ = catch_unwind(AssertUnwindSafe(|| capturer.stop_capture()));
            })
            .map_err(unavailable)?;
        ready_rx
            .recv_timeout(PICK_TIMEOUT)
            .map_err(|_| unavailable("nothing was picked"))??;
        Ok(PortalScreen {
            frames,
            stop,
            fps: fps.max(1),
            last: None,
        })
    }
}

impl VideoSource for PortalScreen {
    fn next_frame(&mut self) -> Result<VideoFrame, MediaError> {
        let wait = match self.last {
            Some(_) => Duration::from_secs_f64(1.0 / f64::from(self.fps)),
            None => FIRST_FRAME,
        };
        let stopped = |reason: &str| MediaError::Stopped {
            device: "screen sharing".into(),
            reason: reason.into(),
        };
        match self.frames.recv_timeout(wait) {
            Ok(frame) => {
                self.last = Some(frame.clone());
                Ok(frame)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => self
                .last
                .clone()
                .ok_or_else(|| stopped("no picture came from the system")),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(stopped("the system stopped the capture"))
            }
        }
    }

    fn fps(&self) -> u32 {
        self.fps
    }
}

impl Drop for PortalScreen {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
