//! Video to the ui: decoded frames (and the local preview) are kept, newest only, per track,
//! as they come (I420); the ui pulls them from the `frames:` URI scheme
//! (`frames://localhost/<track id>?after=<seq>`), one binary response per frame, at the rate it
//! can draw — no JSON, no base64, and a slow ui skips frames instead of queueing them. A frame
//! is converted to RGBA when the ui first asks for it, and only then: frames the ui skips, and
//! every frame of a tile it does not draw (a hidden window, a tile out of view), cost a copy
//! of their planes, not a conversion.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use convo_client::media::{DecodedVideo, VideoFrame, VideoSink, VideoSource};

/// One frame: its I420 planes (packed: Y, then U, then V), and its RGBA pixels once asked for.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Grows with every frame of the store, whatever the track or writer: a ui asking for
    /// frames after the last one it drew still gets those of a new writer of the same track
    /// (another camera).
    pub seq: u64,
    pub width: usize,
    pub height: usize,
    i420: Arc<Vec<u8>>,
    rgba: Arc<std::sync::OnceLock<Vec<u8>>>,
    /// Who wrote it (a sink or a preview).
    writer: u64,
}

impl Frame {
    /// The RGBA pixels, converted on the first call.
    pub fn rgba(&self) -> &[u8] {
        self.rgba.get_or_init(|| {
            let (w, h) = (self.width, self.height);
            let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
            let (y, rest) = self.i420.split_at((w * h).min(self.i420.len()));
            let (u, v) = rest.split_at((cw * ch).min(rest.len()));
            i420_to_rgba(w, h, (y, u, v), (w, cw, cw))
        })
    }
}

/// The newest frame of every track. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct FrameStore {
    frames: Arc<Mutex<HashMap<String, Frame>>>,
    /// The last frame's `seq`, and the last writer's id.
    seq: Arc<AtomicU64>,
    writers: Arc<AtomicU64>,
}

impl FrameStore {
    fn frames(&self) -> std::sync::MutexGuard<'_, HashMap<String, Frame>> {
        self.frames.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn writer(&self) -> u64 {
        self.writers.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn put(&self, track: &str, writer: u64, width: usize, height: usize, i420: Vec<u8>) {
        let mut m = self.frames();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        m.insert(
            track.to_string(),
            Frame {
                seq,
                width,
                height,
                i420: Arc::new(i420),
                rgba: Arc::default(),
                writer,
            },
        );
    }

    /// The newest frame of `track` if it is newer than `after`.
    pub fn newer(&self, track: &str, after: u64) -> Option<Frame> {
        self.frames().get(track).filter(|f| f.seq > after).cloned()
    }

    pub fn remove(&self, track: &str) {
        self.frames().remove(track);
    }

    /// Forgets `track` if its newest frame is `writer`'s: a writer replaced by another (a
    /// camera by the next) leaves the newer one's frames alone.
    fn remove_from(&self, track: &str, writer: u64) {
        let mut m = self.frames();
        if m.get(track).is_some_and(|f| f.writer == writer) {
            m.remove(track);
        }
    }

    pub fn clear(&self) {
        self.frames().clear();
    }

    /// A sink that keeps `track`'s frames here.
    pub fn sink(&self, track: &str) -> StoreSink {
        StoreSink {
            store: self.clone(),
            track: track.to_string(),
            writer: self.writer(),
        }
    }
}

/// `width` × `height` I420 planes packed in one buffer (Y, then U, then V, no row padding),
/// taking every `step`-th pixel of every `step`-th row (a picture `step` times smaller).
fn pack_i420(
    width: usize,
    height: usize,
    (y, u, v): (&[u8], &[u8], &[u8]),
    (ys, us, vs): (usize, usize, usize),
    step: usize,
) -> (usize, usize, Vec<u8>) {
    let (ow, oh) = (width / step, height / step);
    let (cw, ch) = (ow.div_ceil(2), oh.div_ceil(2));
    let mut out = Vec::with_capacity(ow * oh + 2 * cw * ch);
    for row in 0..oh {
        let line = y.get(row * step * ys..).unwrap_or_default();
        out.extend((0..ow).map(|col| line.get(col * step).copied().unwrap_or(16)));
    }
    for (plane, stride) in [(u, us), (v, vs)] {
        for row in 0..ch {
            // Chroma of output row 2·row: input row 2·row·step, chroma row row·step.
            let line = plane.get(row * step * stride..).unwrap_or_default();
            out.extend((0..cw).map(|col| line.get(col * step).copied().unwrap_or(128)));
        }
    }
    (ow, oh, out)
}

/// BT.601 limited range YUV to RGBA. Rows whose planes are short (a malformed frame) are
/// drawn grey.
pub fn i420_to_rgba(
    width: usize,
    height: usize,
    (y, u, v): (&[u8], &[u8], &[u8]),
    (ys, us, vs): (usize, usize, usize),
) -> Vec<u8> {
    let mut out = vec![255u8; width * height * 4];
    if width == 0 {
        return out;
    }
    let cw = width.div_ceil(2);
    for (row, line) in out.chunks_exact_mut(width * 4).enumerate() {
        let planes = (
            y.get(row * ys..).and_then(|l| l.get(..width)),
            u.get((row / 2) * us..).and_then(|l| l.get(..cw)),
            v.get((row / 2) * vs..).and_then(|l| l.get(..cw)),
        );
        let (Some(yl), Some(ul), Some(vl)) = planes else {
            line.iter_mut().for_each(|b| *b = 128);
            continue;
        };
        for (col, px) in line.chunks_exact_mut(4).enumerate() {
            let c = 298 * (i32::from(yl[col]) - 16);
            let uu = i32::from(ul[col / 2]) - 128;
            let vv = i32::from(vl[col / 2]) - 128;
            px[0] = ((c + 409 * vv + 128) >> 8).clamp(0, 255) as u8;
            px[1] = ((c - 100 * uu - 208 * vv + 128) >> 8).clamp(0, 255) as u8;
            px[2] = ((c + 516 * uu + 128) >> 8).clamp(0, 255) as u8;
            px[3] = 255;
        }
    }
    out
}

/// Keeps a remote track's decoded frames in the store.
#[derive(Debug)]
pub struct StoreSink {
    store: FrameStore,
    track: String,
    writer: u64,
}

impl VideoSink for StoreSink {
    fn frame(&mut self, f: &DecodedVideo<'_>) {
        let (w, h, i420) = pack_i420(f.width, f.height, (f.y, f.u, f.v), f.strides, 1);
        self.store.put(&self.track, self.writer, w, h, i420);
    }
}

impl Drop for StoreSink {
    fn drop(&mut self) {
        self.store.remove_from(&self.track, self.writer);
    }
}

/// The self view is a small tile: wider pictures (a shared screen) are drawn at a half, a
/// third, … of their size rather than converted and shipped to the ui whole.
const PREVIEW_MAX_WIDTH: usize = 640;

/// A camera or screen whose frames also go to the store (the self view).
pub struct Preview {
    inner: Box<dyn VideoSource>,
    store: FrameStore,
    track: String,
    writer: u64,
}

impl Preview {
    pub fn new(inner: Box<dyn VideoSource>, store: &FrameStore, track: &str) -> Preview {
        Preview {
            inner,
            store: store.clone(),
            track: track.into(),
            writer: store.writer(),
        }
    }
}

impl VideoSource for Preview {
    fn next_frame(&mut self) -> Result<VideoFrame, convo_client::media::MediaError> {
        let f = self.inner.next_frame()?;
        let (w, h) = (f.width, f.height);
        let (y, rest) = f.i420.split_at((w * h).min(f.i420.len()));
        let (u, v) = rest.split_at((w * h / 4).min(rest.len()));
        let step = w.div_ceil(PREVIEW_MAX_WIDTH).max(1);
        let (pw, ph, i420) = pack_i420(w, h, (y, u, v), (w, w / 2, w / 2), step);
        self.store.put(&self.track, self.writer, pw, ph, i420);
        Ok(f)
    }

    fn fps(&self) -> u32 {
        self.inner.fps()
    }
}

impl Drop for Preview {
    fn drop(&mut self) {
        self.store.remove_from(&self.track, self.writer);
    }
}

/// Answers `frames://localhost/<track>?after=<seq>`: 200 with the RGBA pixels and `x-width`,
/// `x-height`, `x-seq` headers, or 204 when there is nothing newer.
pub fn respond(store: &FrameStore, uri: &str) -> tauri::http::Response<Vec<u8>> {
    let path = uri.split('?').next().unwrap_or_default();
    let track = path.rsplit('/').next().unwrap_or_default();
    let track = percent_decode(track);
    let after = uri
        .split_once("after=")
        .and_then(|(_, v)| v.split('&').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let builder = tauri::http::Response::builder()
        .header("Access-Control-Allow-Origin", "*")
        .header("Access-Control-Expose-Headers", "x-width, x-height, x-seq")
        .header("Cache-Control", "no-store");
    let response = match store.newer(&track, after) {
        Some(f) => builder
            .status(200)
            .header("Content-Type", "application/octet-stream")
            .header("x-width", f.width.to_string())
            .header("x-height", f.height.to_string())
            .header("x-seq", f.seq.to_string())
            .body(f.rgba().to_vec()),
        None => builder.status(204).body(Vec::new()),
    };
    response.unwrap_or_else(|_| tauri::http::Response::new(Vec::new()))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_and_colours_convert() {
        // Mid grey.
        let px = i420_to_rgba(2, 2, (&[126; 4], &[128], &[128]), (2, 1, 1));
        assert!(
            px.chunks(4)
                .all(|p| p[0] == p[1] && p[1] == p[2] && p[3] == 255)
        );
        assert!((i32::from(px[0]) - 128).abs() <= 2);
        // Pure red in BT.601: Y 81, U 90, V 240.
        let px = i420_to_rgba(2, 2, (&[81; 4], &[90], &[240]), (2, 1, 1));
        assert!(px[0] > 240 && px[1] < 15 && px[2] < 15, "{:?}", &px[..4]);
    }

    #[test]
    fn a_large_picture_is_previewed_smaller() {
        // 4 × 2: the left half black, the right half white; every other pixel of every other
        // row is one black and one white pixel.
        let y = [16, 16, 235, 235, 16, 16, 235, 235];
        let (w, h, i420) = pack_i420(4, 2, (&y, &[128, 128], &[128, 128]), (4, 2, 2), 2);
        assert_eq!((w, h, i420.len()), (2, 1, 2 + 1 + 1));
        let px = i420_to_rgba(w, h, (&i420[..2], &i420[2..3], &i420[3..]), (2, 1, 1));
        assert_eq!(px.len(), 2 * 4);
        assert!(px[0] < 5 && px[4] > 250, "{px:?}");
    }

    /// A black 4 × 4 frame.
    fn black() -> DecodedVideo<'static> {
        const Y: [u8; 16] = [16; 16];
        const UV: [u8; 4] = [128; 4];
        DecodedVideo {
            width: 4,
            height: 4,
            y: &Y,
            u: &UV,
            v: &UV,
            strides: (4, 2, 2),
        }
    }

    #[test]
    fn the_protocol_serves_only_newer_frames() {
        let store = FrameStore::default();
        let mut sink = store.sink("p:video");
        sink.frame(&black());
        let r = respond(&store, "frames://localhost/p%3Avideo?after=0");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-width"], "4");
        assert_eq!(r.headers()["x-seq"], "1");
        assert_eq!(r.body().len(), 4 * 4 * 4);
        assert_eq!(
            respond(&store, "frames://localhost/p%3Avideo?after=1").status(),
            204
        );
        assert_eq!(respond(&store, "frames://localhost/nobody").status(), 204);
        drop(sink);
        assert_eq!(
            respond(&store, "frames://localhost/p:video?after=0").status(),
            204
        );
    }

    #[test]
    fn frames_are_converted_only_when_the_ui_asks_and_once() {
        let store = FrameStore::default();
        let mut sink = store.sink("p:video");
        for _ in 0..5 {
            sink.frame(&black());
        }
        let f = store.newer("p:video", 0).expect("a frame");
        assert!(f.rgba.get().is_none(), "converted before it was asked for");
        let r = respond(&store, "frames://localhost/p%3Avideo?after=0");
        assert_eq!(r.status(), 200);
        assert!(r.body().chunks(4).all(|p| p[0] < 5 && p[3] == 255));
        // The frame kept in the store carries its conversion: asked again, not converted again.
        assert!(
            store
                .newer("p:video", 0)
                .is_some_and(|f| f.rgba.get().is_some())
        );
        // A newer frame nobody asked for is not converted.
        sink.frame(&black());
        assert!(
            store
                .newer("p:video", 0)
                .is_some_and(|f| f.rgba.get().is_none())
        );
    }

    #[test]
    fn a_replaced_writer_leaves_the_next_ones_frames() {
        let store = FrameStore::default();
        let frame = black();
        let mut first = store.sink("local:video");
        for _ in 0..3 {
            first.frame(&frame);
        }
        let seen = store
            .newer("local:video", 0)
            .expect("the first writer's frames")
            .seq;
        // The next camera starts while the first one's thread is still winding down.
        let mut next = store.sink("local:video");
        next.frame(&frame);
        drop(first);
        let f = store
            .newer("local:video", seen)
            .expect("the next writer's frame, newer than the last one seen");
        assert!(f.seq > seen);
        drop(next);
        assert!(store.newer("local:video", 0).is_none());
    }
}
