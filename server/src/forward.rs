//! The packet layer's decisions, sans IO: which simulcast layer each subscriber gets, where a
//! layer switch may happen, and the rewriting that keeps a subscriber's stream continuous
//! across switches (of layer, or of publisher for a WHEP viewer that follows the speaker).
//!
//! Everything here reads RTP headers and header extensions only — never the codec payload —
//! so it keeps working when rooms are end-to-end encrypted (SFrame): a keyframe is known from
//! the frame-marking extension our clients send. [`h264_keyframe_start`] is the fallback for
//! publishers that do not send it (browsers over WHIP); it reads the payload and is used only
//! when the extension was not negotiated.
//!
//! Nothing here knows of rooms, participants or sockets: the SFU feeds packets and clock
//! readings in and carries the verdicts out.

use std::time::{Duration, Instant};

/// The frame-marking RTP header extension (draft-ietf-avtext-framemarking): one byte,
/// `S E I D B TID`. Our clients set `I` (and `B`) on every packet of a keyframe.
pub const FRAME_MARKING_URI: &str = "urn:ietf:params:rtp-hdrext:framemarking";
/// `I`: the frame can be decoded on its own.
pub const FRAME_MARKING_INDEPENDENT: u8 = 0x20;
/// `B`: base-layer sync (set with `I` on keyframes).
pub const FRAME_MARKING_BASE_SYNC: u8 = 0x08;

/// A layer that sent nothing for this long is not being encoded.
pub const LAYER_IDLE: Duration = Duration::from_millis(1500);

/// Whether a packet with this frame-marking byte belongs to a keyframe.
pub fn marked_keyframe(frame_marking: &[u8]) -> bool {
    frame_marking
        .first()
        .is_some_and(|b| b & FRAME_MARKING_INDEPENDENT != 0)
}

/// The H.264 fallback (RFC 6184 payloads): the packet carries an SPS or the start of an IDR
/// slice — where a decoder can start.
pub fn h264_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1F {
        5 | 7 => true,
        // STAP-A: aggregated NAL units, each behind a 16-bit size.
        24 => {
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let Some(&nal) = rest.get(2) else { break };
                if matches!(nal & 0x1F, 5 | 7) {
                    return true;
                }
                rest = rest.get(2 + size..).unwrap_or_default();
            }
            false
        }
        // FU-A: the fragment that starts an IDR slice.
        28 => payload
            .get(1)
            .is_some_and(|h| h & 0x80 != 0 && h & 0x1F == 5),
        _ => false,
    }
}

/// Finds, in one layer's packets, the first packet of each keyframe: a keyframe packet whose
/// timestamp starts a new frame. Only the newest packets count: a retransmission (or a late
/// packet) of an old keyframe starts nothing — a switch there would be a switch into the
/// middle of a picture that is long gone.
#[derive(Debug, Default)]
pub struct KeyframeStarts {
    last_ts: Option<u32>,
    highest_seq: Option<u16>,
    in_keyframe: bool,
}

impl KeyframeStarts {
    /// Whether a packet with this timestamp starts a new frame.
    pub fn is_new_frame(&self, timestamp: u32) -> bool {
        self.last_ts != Some(timestamp)
    }

    /// `keyframe`: the packet belongs to a keyframe (by its frame marking, or the fallback).
    pub fn feed(&mut self, seq: u16, timestamp: u32, keyframe: bool) -> bool {
        if self.highest_seq.is_some_and(|h| !seq_before(h, seq)) {
            return false;
        }
        self.highest_seq = Some(seq);
        let new_frame = self.last_ts != Some(timestamp);
        if new_frame {
            self.last_ts = Some(timestamp);
            self.in_keyframe = false;
        }
        // The fallback sees the SPS (or the IDR's first fragment) only in some packet of the
        // frame: the first such packet of a frame starts it.
        if keyframe && !self.in_keyframe {
            self.in_keyframe = true;
            return true;
        }
        false
    }
}

/// One simulcast layer as the SFU knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    pub width: u32,
    pub height: u32,
    /// Packets arrived lately (the publisher encodes it).
    pub active: bool,
    /// What it carries (bits per second, headers included) while active; 0 when not known.
    pub bitrate: u64,
}

/// The size a subscriber draws a track at, in pixels; `0 × 0` when it is not shown at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewSize {
    pub width: u32,
    pub height: u32,
}

impl ViewSize {
    pub const HIDDEN: ViewSize = ViewSize {
        width: 0,
        height: 0,
    };

    pub fn is_hidden(self) -> bool {
        self.width == 0 || self.height == 0
    }
}

/// The layer a subscriber should see, by the size it draws the track at (`None`: not told,
/// which gets the best there is): the smallest layer that fills the view (a tenth of slack,
/// so a 1270-pixel tile still takes the 1280 layer's neighbour below only when that one
/// fills it), else the largest. `None` when the view is hidden or there are no layers.
pub fn desired_layer(layers: &[Layer], view: Option<ViewSize>) -> Option<usize> {
    if layers.is_empty() {
        return None;
    }
    let top = layers.len() - 1;
    let Some(view) = view else {
        return Some(top);
    };
    if view.is_hidden() {
        return None;
    }
    let fills = |l: &Layer| {
        u64::from(l.width) * 10 >= u64::from(view.width) * 9
            || u64::from(l.height) * 10 >= u64::from(view.height) * 9
    };
    Some(layers.iter().position(fills).unwrap_or(top))
}

/// The layer to forward now: the desired one if it is being encoded, else the nearest active
/// one below it, else the nearest above. `None` when nothing is desired or nothing is active.
pub fn available_layer(layers: &[Layer], desired: Option<usize>) -> Option<usize> {
    let d = desired?.min(layers.len().checked_sub(1)?);
    (0..=d)
        .rev()
        .find(|&i| layers[i].active)
        .or_else(|| (d + 1..layers.len()).find(|&i| layers[i].active))
}

/// What to do with one packet for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it with these sequence number and timestamp.
    Forward {
        seq: u16,
        timestamp: u32,
    },
    Drop,
}

/// One subscriber's stream of one video track (the LiveKit down-track): which layer it is on,
/// which it waits to switch to, and the offsets that make its sequence numbers and timestamps
/// continue across switches.
#[derive(Debug)]
pub struct DownTrack {
    clock_rate: u32,
    /// The layer being forwarded, and the first sequence number forwarded from it.
    current: Option<(usize, u16)>,
    /// The layer wanted; a switch happens at its next keyframe.
    target: Option<usize>,
    seq_offset: u16,
    ts_offset: u32,
    /// The last packet sent: sequence number, timestamp, when.
    last: Option<(u16, u32, Instant)>,
    /// The last packet sent ended a frame (its marker bit).
    frame_ended: bool,
}

/// `a` comes before `b` in sequence-number order (RFC 1982 arithmetic).
fn seq_before(a: u16, b: u16) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000
}

impl DownTrack {
    pub fn new(clock_rate: u32) -> Self {
        DownTrack {
            clock_rate: clock_rate.max(1),
            current: None,
            target: None,
            seq_offset: 0,
            ts_offset: 0,
            last: None,
            frame_ended: true,
        }
    }

    pub fn current(&self) -> Option<usize> {
        self.current.map(|(l, _)| l)
    }

    pub fn target(&self) -> Option<usize> {
        self.target
    }

    /// Nothing was ever forwarded on it: a track without layers may start at any frame
    /// (the subscriber asks for a keyframe itself), not only at a keyframe.
    pub fn is_fresh(&self) -> bool {
        self.last.is_none()
    }

    /// Wants `layer` (`None`: nothing, forwarding stops at once). True when a keyframe of
    /// that layer is needed to get there (ask the publisher for one).
    pub fn set_target(&mut self, layer: Option<usize>) -> bool {
        self.target = layer;
        match layer {
            None => {
                self.current = None;
                false
            }
            Some(l) => self.current() != Some(l),
        }
    }

    /// The source changes (a viewer following another speaker): whatever comes next starts at
    /// a keyframe of the new source, continuing this stream's numbering.
    pub fn switch_source(&mut self) {
        self.current = None;
    }

    /// One packet of `layer`. `keyframe_start`: it is the first packet of a keyframe;
    /// `marker`: its marker bit (the last packet of a frame).
    pub fn on_packet(
        &mut self,
        layer: usize,
        seq: u16,
        timestamp: u32,
        keyframe_start: bool,
        marker: bool,
        now: Instant,
    ) -> Verdict {
        if self.target == Some(layer) && self.current() != Some(layer) && keyframe_start {
            self.switch_to(layer, seq, timestamp, now);
        }
        let Some((on, first)) = self.current else {
            return Verdict::Drop;
        };
        // Another layer, or a straggler from before the switch point.
        if on != layer || seq_before(seq, first) {
            return Verdict::Drop;
        }
        let out_seq = seq.wrapping_sub(self.seq_offset);
        let out_ts = timestamp.wrapping_sub(self.ts_offset);
        match self.last {
            Some((s, _, _)) if !seq_before(s, out_seq) => {}
            _ => {
                self.last = Some((out_seq, out_ts, now));
                self.frame_ended = marker;
            }
        }
        Verdict::Forward {
            seq: out_seq,
            timestamp: out_ts,
        }
    }

    fn switch_to(&mut self, layer: usize, seq: u16, timestamp: u32, now: Instant) {
        match self.last {
            // The first packet ever: numbers go out as they came.
            None => {
                self.seq_offset = 0;
                self.ts_offset = 0;
            }
            Some((last_seq, last_ts, at)) => {
                // The next sequence number; a timestamp as far on as the wall clock went (at
                // least one tick), so players pace the new frames right.
                let ticks = (now.saturating_duration_since(at).as_secs_f64()
                    * f64::from(self.clock_rate)) as u32;
                // Cut off mid-frame (the old layer's frame had more packets to come): one
                // number is left out, so the receiver sees a loss and drops the part it has
                // instead of gluing it to the keyframe.
                let gap = if self.frame_ended { 1 } else { 2 };
                let out_seq = last_seq.wrapping_add(gap);
                let out_ts = last_ts.wrapping_add(ticks.max(1));
                self.seq_offset = seq.wrapping_sub(out_seq);
                self.ts_offset = timestamp.wrapping_sub(out_ts);
            }
        }
        self.current = Some((layer, seq));
    }
}

/// Simulcast layer index of a RID: the names browsers and WHIP clients use, lowest first. An
/// unknown RID gets `None` (the SFU then ranks it by the order layers arrived in).
pub fn rid_rank(rid: &str) -> Option<usize> {
    match rid.to_ascii_lowercase().as_str() {
        "q" | "l" | "low" | "0" => Some(0),
        "h" | "m" | "mid" | "medium" | "1" => Some(1),
        "f" | "hi" | "high" | "full" | "2" => Some(2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn layers(active: [bool; 3]) -> Vec<Layer> {
        [(320, 180), (640, 360), (1280, 720)]
            .iter()
            .zip(active)
            .map(|(&(width, height), active)| Layer {
                width,
                height,
                active,
                bitrate: 0,
            })
            .collect()
    }

    fn view(width: u32, height: u32) -> Option<ViewSize> {
        Some(ViewSize { width, height })
    }

    #[test]
    fn the_view_size_picks_the_layer() {
        let all = layers([true; 3]);
        // Speaker view: the full layer; a 5 × 5 grid tile: the lowest.
        assert_eq!(desired_layer(&all, view(1280, 720)), Some(2));
        assert_eq!(desired_layer(&all, view(1920, 1080)), Some(2));
        assert_eq!(desired_layer(&all, view(256, 144)), Some(0));
        assert_eq!(desired_layer(&all, view(600, 338)), Some(1));
        assert_eq!(desired_layer(&all, view(660, 371)), Some(1), "10% slack");
        assert_eq!(desired_layer(&all, view(800, 450)), Some(2));
        // Not told: the best; hidden: nothing.
        assert_eq!(desired_layer(&all, None), Some(2));
        assert_eq!(desired_layer(&all, Some(ViewSize::HIDDEN)), None);
        assert_eq!(desired_layer(&[], view(100, 100)), None);
    }

    #[test]
    fn a_layer_not_encoded_is_stood_in_for() {
        assert_eq!(
            available_layer(&layers([true, false, false]), Some(2)),
            Some(0)
        );
        assert_eq!(
            available_layer(&layers([true, true, false]), Some(2)),
            Some(1)
        );
        assert_eq!(
            available_layer(&layers([false, false, true]), Some(0)),
            Some(2)
        );
        assert_eq!(available_layer(&layers([false; 3]), Some(1)), None);
        assert_eq!(available_layer(&layers([true; 3]), None), None);
        assert_eq!(available_layer(&layers([true; 3]), Some(7)), Some(2));
    }

    /// A publisher's three layers, frame by frame: two packets per frame, keyframes where
    /// asked; what one subscriber gets.
    struct Sim {
        seq: [u16; 3],
        ts: [u32; 3],
        starts: [KeyframeStarts; 3],
        now: Instant,
    }

    impl Sim {
        fn new() -> Self {
            Sim {
                seq: [100, 30_000, 65_500],
                ts: [1_000, 900_000, 4_294_000_000],
                starts: Default::default(),
                now: Instant::now(),
            }
        }

        /// One frame on every layer (keyframes on `key`); what `down` forwards.
        fn frame(&mut self, down: &mut DownTrack, key: &[usize]) -> Vec<(usize, u16, u32)> {
            let mut out = Vec::new();
            for layer in 0..3 {
                for _ in 0..2 {
                    let start = self.starts[layer].feed(
                        self.seq[layer],
                        self.ts[layer],
                        key.contains(&layer),
                    );
                    let marker = self.seq[layer] % 2 == 1;
                    if let Verdict::Forward { seq, timestamp } = down.on_packet(
                        layer,
                        self.seq[layer],
                        self.ts[layer],
                        start,
                        marker,
                        self.now,
                    ) {
                        out.push((layer, seq, timestamp));
                    }
                    self.seq[layer] = self.seq[layer].wrapping_add(1);
                }
                self.ts[layer] = self.ts[layer].wrapping_add(3_000);
            }
            self.now += 33 * MS;
            out
        }
    }

    #[test]
    fn switches_happen_on_keyframes_and_the_stream_stays_continuous() {
        let mut sim = Sim::new();
        let mut down = DownTrack::new(90_000);
        assert!(down.set_target(Some(0)), "a keyframe is needed to start");
        // Nothing before the first keyframe.
        assert!(sim.frame(&mut down, &[]).is_empty());
        let mut got = sim.frame(&mut down, &[0]);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|(l, _, _)| *l == 0));
        // First packets go out as they came.
        assert_eq!(got[0].1, 102);
        got.extend(sim.frame(&mut down, &[]));
        // Up to the full layer: layer 0 goes on until layer 2's keyframe.
        assert!(down.set_target(Some(2)));
        got.extend(sim.frame(&mut down, &[]));
        got.extend(sim.frame(&mut down, &[2]));
        got.extend(sim.frame(&mut down, &[]));
        let layers_seen: Vec<usize> = got.iter().map(|g| g.0).collect();
        assert_eq!(layers_seen, [0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2]);
        // Sequence numbers continue without a gap across the switch; timestamps move on.
        for w in got.windows(2) {
            assert_eq!(w[1].1, w[0].1.wrapping_add(1), "{got:?}");
            assert!(w[1].2.wrapping_sub(w[0].2) < 10_000, "{got:?}");
        }
        // Down again, then paused: nothing more.
        assert!(down.set_target(Some(1)));
        assert!(sim.frame(&mut down, &[0]).iter().all(|g| g.0 == 2));
        assert!(sim.frame(&mut down, &[1]).iter().all(|g| g.0 == 1));
        assert!(!down.set_target(None));
        assert!(sim.frame(&mut down, &[0, 1, 2]).is_empty());
    }

    #[test]
    fn stragglers_from_before_a_switch_are_dropped_and_retransmissions_keep_their_number() {
        let mut down = DownTrack::new(90_000);
        let t0 = Instant::now();
        down.set_target(Some(1));
        assert_eq!(
            down.on_packet(1, 500, 9_000, true, false, t0),
            Verdict::Forward {
                seq: 500,
                timestamp: 9_000
            }
        );
        // A late packet of the frame before the keyframe.
        assert_eq!(
            down.on_packet(1, 499, 6_000, false, true, t0),
            Verdict::Drop
        );
        assert!(matches!(
            down.on_packet(1, 501, 9_000, false, true, t0),
            Verdict::Forward { seq: 501, .. }
        ));
        // A retransmission of 500 maps to the same number again.
        assert!(matches!(
            down.on_packet(1, 500, 9_000, false, false, t0),
            Verdict::Forward { seq: 500, .. }
        ));
    }

    #[test]
    fn a_new_source_continues_the_numbering_at_its_keyframe() {
        let mut down = DownTrack::new(90_000);
        let t0 = Instant::now();
        down.set_target(Some(0));
        down.on_packet(0, 10, 100, true, true, t0);
        down.switch_source();
        // The new speaker's packets: nothing until its keyframe, then seq 11.
        assert_eq!(
            down.on_packet(0, 7_000, 55, false, false, t0 + 10 * MS),
            Verdict::Drop
        );
        assert_eq!(
            down.on_packet(0, 7_001, 3_055, true, false, t0 + 100 * MS),
            Verdict::Forward {
                seq: 11,
                timestamp: 100 + 9_000
            }
        );
        // Switched away in the middle of that frame: the next source starts one number
        // later, so the receiver drops the cut-off frame.
        down.switch_source();
        assert_eq!(
            down.on_packet(0, 300, 77, true, true, t0 + 200 * MS),
            Verdict::Forward {
                seq: 13,
                timestamp: 100 + 9_000 + 9_000
            }
        );
    }

    #[test]
    fn keyframe_starts_from_marking_or_h264() {
        let mut k = KeyframeStarts::default();
        // Frame marking: every packet of the keyframe is marked; the first one starts it.
        assert!(k.feed(10, 1, true));
        assert!(!k.feed(11, 1, true));
        assert!(!k.feed(12, 2, false));
        assert!(k.feed(13, 3, true));
        // A retransmission of the first keyframe's packet (old number, old time) starts
        // nothing, nor does a duplicate.
        assert!(!k.feed(10, 1, true));
        assert!(!k.feed(13, 3, true));
        assert!(!k.feed(14, 3, true));
        assert!(k.feed(15, 4, true));
        assert!(marked_keyframe(&[
            FRAME_MARKING_INDEPENDENT | FRAME_MARKING_BASE_SYNC
        ]));
        assert!(!marked_keyframe(&[0x80]));
        assert!(!marked_keyframe(&[]));
        // H.264: SPS, IDR, STAP-A with SPS, FU-A starting an IDR; not a P slice or a middle
        // fragment.
        assert!(h264_keyframe_start(&[0x67, 0x42]));
        assert!(h264_keyframe_start(&[0x65, 0x88]));
        assert!(h264_keyframe_start(&[
            0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68
        ]));
        assert!(h264_keyframe_start(&[0x7C, 0x85, 0x00]));
        assert!(!h264_keyframe_start(&[0x7C, 0x05, 0x00]));
        assert!(!h264_keyframe_start(&[0x41, 0x9A]));
        assert!(!h264_keyframe_start(&[0x78, 0x00, 0x09]));
        assert!(!h264_keyframe_start(&[]));
    }

    #[test]
    fn rids_rank_lowest_first() {
        assert_eq!(rid_rank("q"), Some(0));
        assert_eq!(rid_rank("h"), Some(1));
        assert_eq!(rid_rank("F"), Some(2));
        assert_eq!(rid_rank("high"), Some(2));
        assert_eq!(rid_rank("x"), None);
    }
}
