//! Video to the ui: decoded frames (and the local preview) are kept, newest only, per track,
//! as they come: I420 planes behind a [`HEADER`], ready to go out as one message of the video
//! channel ([`crate::frame_ws`]) without another copy. Frames nobody asks for cost the copy
//! of their planes and nothing else; nothing here converts to RGB (the webview does, on the
//! GPU).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use convo_client::media::{DecodedVideo, VideoFrame, VideoSink, VideoSource};

/// Bytes before the planes: `CVF1`, width and height (u32, little-endian), `seq` (u64), and
/// four reserved bytes.
pub const HEADER: usize = 24;

/// One frame: the header, then its I420 planes (packed: Y, then U, then V, no row padding).
#[derive(Debug, Clone)]
pub struct Frame {
    /// Grows with every frame of the store, whatever the track or writer: a ui asking for
    /// frames after the last one it drew still gets those of a new writer of the same track
    /// (another camera).
    pub seq: u64,
    pub width: usize,
    pub height: usize,
    data: Bytes,
    /// Who wrote it (a sink or a preview).
    writer: u64,
}

impl Frame {
    /// The frame as the video channel sends it (shares the buffer).
    pub fn message(&self) -> Bytes {
        self.data.clone()
    }

    /// The planes, packed.
    pub fn i420(&self) -> &[u8] {
        &self.data[HEADER..]
    }
}

/// The newest frame of every track. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FrameStore {
    frames: Arc<Mutex<HashMap<String, Frame>>>,
    /// The last frame's `seq`, and the last writer's id.
    seq: Arc<AtomicU64>,
    writers: Arc<AtomicU64>,
    /// Ticks with every frame stored (the video channel's connections wait on it).
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for FrameStore {
    fn default() -> Self {
        FrameStore {
            frames: Arc::default(),
            seq: Arc::default(),
            writers: Arc::default(),
            changed: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

impl FrameStore {
    fn frames(&self) -> std::sync::MutexGuard<'_, HashMap<String, Frame>> {
        self.frames.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn writer(&self) -> u64 {
        self.writers.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Stores a frame made by [`pack_i420`] (its header is filled in here).
    fn put(&self, track: &str, writer: u64, width: usize, height: usize, mut data: Vec<u8>) {
        let mut m = self.frames();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(h) = data.get_mut(..HEADER) {
            h[..4].copy_from_slice(b"CVF1");
            h[4..8].copy_from_slice(&(width as u32).to_le_bytes());
            h[8..12].copy_from_slice(&(height as u32).to_le_bytes());
            h[12..20].copy_from_slice(&seq.to_le_bytes());
        }
        m.insert(
            track.to_string(),
            Frame {
                seq,
                width,
                height,
                data: Bytes::from(data),
                writer,
            },
        );
        drop(m);
        self.changed.send_replace(seq);
    }

    /// Wakes with every frame stored.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
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

/// `width` × `height` I420 planes packed in one buffer after [`HEADER`] bytes (Y, then U,
/// then V, no row padding), taking every `step`-th pixel of every `step`-th row (a picture
/// `step` times smaller).
fn pack_i420(
    width: usize,
    height: usize,
    (y, u, v): (&[u8], &[u8], &[u8]),
    (ys, us, vs): (usize, usize, usize),
    step: usize,
) -> (usize, usize, Vec<u8>) {
    let (ow, oh) = (width / step, height / step);
    let (cw, ch) = (ow.div_ceil(2), oh.div_ceil(2));
    let mut out = Vec::with_capacity(HEADER + ow * oh + 2 * cw * ch);
    out.resize(HEADER, 0);
    // Rows missing from a malformed frame are black.
    let mut rows = |plane: &[u8], stride: usize, n: usize, len: usize, fill: u8| {
        for row in 0..n {
            let line = plane.get(row * step * stride..).unwrap_or_default();
            match line.get(..len) {
                Some(l) if step == 1 => out.extend_from_slice(l),
                _ => out.extend((0..len).map(|col| line.get(col * step).copied().unwrap_or(fill))),
            }
        }
    };
    rows(y, ys, oh, ow, 16);
    // Chroma of output row 2·row: input row 2·row·step, chroma row row·step.
    rows(u, us, ch, cw, 128);
    rows(v, vs, ch, cw, 128);
    (ow, oh, out)
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

/// `%XX` escapes decoded (a track id in a URL).
pub(crate) fn percent_decode(s: &str) -> String {
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
    fn a_large_picture_is_previewed_smaller() {
        // 4 × 2: the left half black, the right half white; every other pixel of every other
        // row is one black and one white pixel.
        let y = [16, 16, 235, 235, 16, 16, 235, 235];
        let (w, h, data) = pack_i420(4, 2, (&y, &[128, 128], &[128, 128]), (4, 2, 2), 2);
        assert_eq!((w, h, data.len()), (2, 1, HEADER + 2 + 1 + 1));
        assert_eq!(&data[HEADER..], &[16, 235, 128, 128]);
    }

    #[test]
    fn rows_are_packed_without_their_padding_and_short_planes_filled() {
        // 2 × 2 with a stride of 3 (one byte of padding per row).
        let y = [1, 2, 0, 3, 4, 0];
        let (_, _, data) = pack_i420(2, 2, (&y, &[5], &[6]), (3, 1, 1), 1);
        assert_eq!(&data[HEADER..], &[1, 2, 3, 4, 5, 6]);
        let (_, _, data) = pack_i420(2, 2, (&y[..3], &[], &[]), (3, 1, 1), 1);
        assert_eq!(&data[HEADER..], &[1, 2, 16, 16, 128, 128]);
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
    fn the_store_keeps_the_newest_frame_with_its_header() {
        let store = FrameStore::default();
        let changes = store.changes();
        let mut sink = store.sink("p:video");
        sink.frame(&black());
        sink.frame(&black());
        assert!(changes.has_changed().unwrap_or(false));
        let f = store.newer("p:video", 0).expect("a frame");
        assert_eq!((f.seq, f.width, f.height), (2, 4, 4));
        let m = f.message();
        assert_eq!(&m[..4], b"CVF1");
        assert_eq!(&m[4..8], &4u32.to_le_bytes());
        assert_eq!(&m[12..20], &2u64.to_le_bytes());
        assert_eq!(f.i420().len(), 16 + 4 + 4);
        assert!(store.newer("p:video", 2).is_none());
        assert!(store.newer("nobody", 0).is_none());
        drop(sink);
        assert!(store.newer("p:video", 0).is_none());
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
