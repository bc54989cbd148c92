//! Cameras through nokhwa (feature `camera`): V4L2 on Linux, Media Foundation on Windows,
//! AVFoundation on macOS.
//!
//! A camera is opened and read on a thread of its own (nokhwa's camera is not `Send`); frames
//! cross to the encoder's thread through a short channel, the newest winning. The mode is the
//! best the camera offers ([`pick`]): 1280 × 720, else 640 × 480 or 640 × 360, else smaller, at
//! 24 fps or more if it can; uncompressed (YUYV, NV12) rather than MJPEG at the same size and
//! rate, MJPEG (what most USB 2 cameras give at 720p30) decoded here in pure Rust (zune-jpeg).
//! Every picture is converted to I420.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
};

use crate::convert::{nv12_to_i420, rgb_to_i420, yuyv_to_i420};
use crate::media::{DeviceInfo, MediaError, VideoFrame, VideoSource};

/// How long a camera may go without a frame before it counts as stopped.
const STALL: Duration = Duration::from_secs(5);

fn unavailable(reason: impl ToString) -> MediaError {
    MediaError::Unavailable {
        device: "camera".into(),
        reason: reason.to_string(),
    }
}

/// On Linux a camera's stable id is its `/dev/v4l/by-id` name (the same after replugging or
/// rebooting, unlike `/dev/videoN`); elsewhere, and for devices without one, the index.
#[cfg(target_os = "linux")]
fn stable_ids() -> Vec<(String, u32)> {
    let Ok(dir) = std::fs::read_dir("/dev/v4l/by-id") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            let n = target
                .file_name()?
                .to_str()?
                .strip_prefix("video")?
                .parse()
                .ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), n))
        })
        .collect()
}

#[cfg(not(target_os = "linux"))]
fn stable_ids() -> Vec<(String, u32)> {
    Vec::new()
}

/// A V4L2 node that is a camera's second interface (metadata), not a picture source.
#[cfg(target_os = "linux")]
fn is_metadata_node(n: u32) -> bool {
    std::fs::read_to_string(format!("/sys/class/video4linux/video{n}/index"))
        .is_ok_and(|i| i.trim() != "0")
}

#[cfg(not(target_os = "linux"))]
fn is_metadata_node(_: u32) -> bool {
    false
}

fn index_number(i: &CameraIndex) -> Option<u32> {
    match i {
        CameraIndex::Index(n) => Some(*n),
        CameraIndex::String(s) => s.parse().ok(),
    }
}

/// The cameras present now, the first one the default (asked afresh each time: cameras come
/// and go).
pub fn list() -> Vec<DeviceInfo> {
    let found = match nokhwa::query(ApiBackend::Auto) {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!(error = %e, "no camera list");
            return Vec::new();
        }
    };
    let ids = stable_ids();
    found
        .iter()
        .filter_map(|c| {
            let n = index_number(c.index())?;
            if is_metadata_node(n) {
                return None;
            }
            let id = ids
                .iter()
                .find(|(_, m)| *m == n)
                .map_or_else(|| format!("index:{n}"), |(id, _)| id.clone());
            Some((id, c.human_name()))
        })
        .enumerate()
        .map(|(i, (id, name))| DeviceInfo {
            id,
            name,
            default: i == 0,
        })
        .collect()
}

/// The index of a camera id from [`list`]; `None` picks the first camera.
fn resolve(id: Option<&str>) -> Result<u32, MediaError> {
    let Some(id) = id else {
        return list()
            .first()
            .and_then(|d| resolve(Some(&d.id)).ok())
            .ok_or_else(|| unavailable("no camera is connected"));
    };
    if let Some(n) = id
        .strip_prefix("index:")
        .and_then(|n| n.parse::<u32>().ok())
    {
        if cfg!(target_os = "linux") && !std::path::Path::new(&format!("/dev/video{n}")).exists() {
            return Err(unavailable(format!("the camera “{id}” is not connected")));
        }
        return Ok(n);
    }
    stable_ids()
        .into_iter()
        .find(|(s, _)| s == id)
        .map(|(_, n)| n)
        .ok_or_else(|| unavailable(format!("the camera “{id}” is not connected")))
}

/// The formats frames can be read in.
const READABLE: [FrameFormat; 3] = [FrameFormat::YUYV, FrameFormat::NV12, FrameFormat::MJPEG];

/// The best of the modes a camera offers for a call: 720p, else 480p/360p, else smaller (none
/// wider than 1280: more costs the encoder and no layer uses it), at ≥ 24 fps when it can;
/// uncompressed before MJPEG at the same size and rate (no decoding), then the higher rate.
pub fn pick(offered: &[CameraFormat]) -> Option<CameraFormat> {
    let size_class = |f: &CameraFormat| match (f.width(), f.height()) {
        (1280, 720) => 3,
        (w, h) if (640..1280).contains(&w) && (360..=720).contains(&h) => 2,
        (w, _) if (320..640).contains(&w) => 1,
        _ => 0,
    };
    offered
        .iter()
        .filter(|f| READABLE.contains(&f.format()) && f.width() <= 1280 && f.frame_rate() > 0)
        .max_by_key(|f| {
            (
                f.frame_rate() >= 24,
                size_class(f),
                f.format() != FrameFormat::MJPEG,
                f.frame_rate().min(30),
                f.width(),
            )
        })
        .copied()
}

/// Opens the camera in the mode [`pick`] chooses from what it offers; when it cannot say what
/// it offers, the first of YUYV and NV12 near 640 × 480, 1280 × 720, 320 × 240 that opens.
fn open_camera(index: u32) -> Result<nokhwa::Camera, MediaError> {
    let any = RequestedFormat::with_formats(RequestedFormatType::None, &READABLE);
    if let Ok(mut probe) = nokhwa::Camera::new(CameraIndex::Index(index), any)
        && let Some(best) = probe
            .compatible_camera_formats()
            .ok()
            .as_deref()
            .and_then(pick)
    {
        drop(probe);
        let formats = [best.format()];
        let wanted = RequestedFormat::with_formats(RequestedFormatType::Exact(best), &formats);
        match nokhwa::Camera::new(CameraIndex::Index(index), wanted) {
            Ok(mut cam) => match cam.open_stream() {
                Ok(()) => {
                    tracing::info!(mode = %best, "camera open");
                    return Ok(cam);
                }
                Err(e) => tracing::debug!(error = %e, mode = %best, "camera mode refused"),
            },
            Err(e) => tracing::debug!(error = %e, mode = %best, "camera mode refused"),
        }
    }
    let mut last = String::from("no mode tried");
    for format in [FrameFormat::YUYV, FrameFormat::NV12] {
        for (w, h) in [(640, 480), (1280, 720), (320, 240)] {
            let formats = [format];
            let wanted = RequestedFormat::with_formats(
                RequestedFormatType::Closest(CameraFormat::new_from(w, h, format, 30)),
                &formats,
            );
            match nokhwa::Camera::new(CameraIndex::Index(index), wanted) {
                Ok(mut cam) => match cam.open_stream() {
                    Ok(()) => return Ok(cam),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
        }
    }
    Err(unavailable(format!(
        "it offers no uncompressed (YUYV or NV12) picture at 320×240, 640×480 or 1280×720 ({last})"
    )))
}

/// A JPEG picture (a camera's MJPEG frame) in I420.
pub fn mjpeg_to_i420(jpeg: &[u8]) -> Option<VideoFrame> {
    let mut decoder = zune_jpeg::JpegDecoder::new(jpeg);
    let rgb = decoder.decode().ok()?;
    let (w, h) = decoder.dimensions()?;
    rgb_to_i420(&rgb, w, h)
}

fn convert(buf: &nokhwa::Buffer) -> Option<VideoFrame> {
    let res = buf.resolution();
    let (w, h) = (res.width() as usize, res.height() as usize);
    match buf.source_frame_format() {
        FrameFormat::YUYV => yuyv_to_i420(buf.buffer(), w, h),
        FrameFormat::NV12 => nv12_to_i420(buf.buffer(), w, h),
        FrameFormat::MJPEG => mjpeg_to_i420(buf.buffer()),
        _ => None,
    }
}

/// A camera as a [`VideoSource`].
pub struct Camera {
    frames: mpsc::Receiver<Result<VideoFrame, String>>,
    stop: Arc<AtomicBool>,
    fps: u32,
    name: String,
}

impl Camera {
    /// Opens a camera from [`list`] by id (`None`: the first) and starts capturing.
    pub fn open(id: Option<&str>) -> Result<Camera, MediaError> {
        let index = resolve(id)?;
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(u32, String), MediaError>>();
        let (tx, frames) = mpsc::sync_channel(2);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::Builder::new()
            .name("camera".into())
            .spawn(move || {
                let mut cam = match open_camera(index) {
                    Ok(cam) => cam,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let fps = cam.camera_format().frame_rate().clamp(1, 60);
                let _ = ready_tx.send(Ok((fps, cam.info().human_name())));
                while !stop2.load(Ordering::Relaxed) {
                    let frame = match cam.frame() {
                        Ok(buf) => convert(&buf).ok_or_else(|| {
                            format!("unreadable {:?} frame", buf.source_frame_format())
                        }),
                        Err(e) => Err(e.to_string()),
                    };
                    let failed = frame.is_err();
                    // Full: the encoder is behind, this frame is dropped.
                    if let Err(mpsc::TrySendError::Disconnected(_)) = tx.try_send(frame) {
                        break;
                    }
                    if failed {
                        break;
                    }
                }
                let _ = cam.stop_stream();
            })
            .map_err(unavailable)?;
        let (fps, name) = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| unavailable("it did not answer"))??;
        Ok(Camera {
            frames,
            stop,
            fps,
            name,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl VideoSource for Camera {
    fn next_frame(&mut self) -> Result<VideoFrame, MediaError> {
        let stopped = |reason: String| MediaError::Stopped {
            device: format!("camera “{}”", self.name),
            reason,
        };
        match self.frames.recv_timeout(STALL) {
            Ok(frame) => frame.map_err(stopped),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(stopped("no picture for 5 seconds".into())),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(stopped("it was unplugged".into())),
        }
    }

    fn fps(&self) -> u32 {
        self.fps
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_cameras_are_refused_with_a_reason() {
        let e = Camera::open(Some("usb-Nothing_Such-video-index0"))
            .err()
            .expect("no such camera");
        assert!(e.to_string().contains("is not connected"), "{e}");
        let e = Camera::open(Some("index:250"))
            .err()
            .expect("no such camera");
        assert!(e.to_string().starts_with("camera is not available"), "{e}");
    }

    #[test]
    fn listed_cameras_open_or_say_why() {
        // Whatever this machine has (CI has none): every listed camera has an id that
        // resolves, and opening one gives frames or a reason, never a panic.
        for cam in list() {
            assert!(resolve(Some(&cam.id)).is_ok(), "{cam:?}");
            match Camera::open(Some(&cam.id)) {
                Ok(mut c) => {
                    let f = c.next_frame().expect("a frame");
                    assert_eq!(f.i420.len(), f.width * f.height * 3 / 2);
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
        if list().is_empty() {
            let e = Camera::open(None).err().expect("no camera");
            assert!(e.to_string().contains("no camera is connected"), "{e}");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod modes {
    use super::*;
    use nokhwa::utils::Resolution;

    fn mode(w: u32, h: u32, format: FrameFormat, fps: u32) -> CameraFormat {
        CameraFormat::new(Resolution::new(w, h), format, fps)
    }

    #[test]
    fn the_best_mode_for_a_call_is_picked() {
        use FrameFormat::{MJPEG, NV12, YUYV};
        // A typical USB 2 camera: 720p30 only as MJPEG, uncompressed 720p at 10 fps.
        let usb2 = [
            mode(640, 480, YUYV, 30),
            mode(1280, 720, YUYV, 10),
            mode(1280, 720, MJPEG, 30),
            mode(1920, 1080, MJPEG, 30),
            mode(320, 240, YUYV, 30),
        ];
        assert_eq!(pick(&usb2), Some(mode(1280, 720, MJPEG, 30)));
        // Uncompressed 720p30 beats MJPEG at the same size and rate.
        let usb3 = [mode(1280, 720, MJPEG, 30), mode(1280, 720, NV12, 30)];
        assert_eq!(pick(&usb3), Some(mode(1280, 720, NV12, 30)));
        // Without 720p at 24 fps or more: 480p at 30 rather than 720p at 10.
        let old = [mode(1280, 720, YUYV, 10), mode(640, 480, YUYV, 30)];
        assert_eq!(pick(&old), Some(mode(640, 480, YUYV, 30)));
        // 360p when that is the best, and something rather than nothing.
        let small = [mode(640, 360, YUYV, 30), mode(320, 180, YUYV, 30)];
        assert_eq!(pick(&small), Some(mode(640, 360, YUYV, 30)));
        assert_eq!(
            pick(&[mode(1280, 720, YUYV, 5)]),
            Some(mode(1280, 720, YUYV, 5))
        );
        assert_eq!(pick(&[mode(1920, 1080, MJPEG, 30)]), None);
    }

    #[test]
    fn mjpeg_frames_become_i420() {
        let (w, h) = (64usize, 48usize);
        let rgb: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [(x * 4) as u8, (y * 5) as u8, 128]
            })
            .collect();
        let mut jpeg = Vec::new();
        jpeg_encoder::Encoder::new(&mut jpeg, 95)
            .encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        let got = mjpeg_to_i420(&jpeg).unwrap();
        let want = rgb_to_i420(&rgb, w, h).unwrap();
        assert_eq!((got.width, got.height), (w, h));
        let diff = got.i420[..w * h]
            .iter()
            .zip(&want.i420[..w * h])
            .map(|(a, b)| u32::from(a.abs_diff(*b)))
            .sum::<u32>() as f64
            / (w * h) as f64;
        assert!(diff < 3.0, "mean luma difference {diff}");
        assert!(mjpeg_to_i420(b"not a jpeg").is_none());
    }
}
