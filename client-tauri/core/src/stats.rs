//! What a receiver measures of one remote track, and the report `convo-bot` prints.

use std::collections::VecDeque;

use serde::Serialize;

use crate::synth::FrameCode;

/// A gap between decoded video frames is a freeze when it is longer than three frame
/// intervals (of the frame rate seen so far) and at least this long.
pub const FREEZE_MIN_MS: u64 = 200;
/// Seconds of timeline kept per track (the oldest go first).
const TIMELINE_SECONDS: usize = 3600;

/// One second of a track, counted from the call's start.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Second {
    /// Seconds since joining.
    pub t: u64,
    pub frames: u32,
    pub bitrate_kbps: u32,
    /// Size of the last frame decoded in that second (video).
    pub width: u32,
    pub height: u32,
    pub freezes: u32,
}

/// Per-second pitch measurements kept for the report's median (a minute).
const PITCHES_KEPT: usize = 60;

/// Running statistics of one remote track. Fed by the receive pipeline; pure.
#[derive(Debug, Clone, Default)]
pub struct TrackStats {
    pub participant_id: String,
    pub track_id: String,
    pub kind: String,
    pub packets: u64,
    pub frames_decoded: u64,
    pub frames_failed_check: u64,
    pub out_of_order: u64,
    /// The same picture twice at a simulcast layer switch (see `video_frame`).
    pub repeated: u64,
    pub freezes: u64,
    last_counter: Option<u32>,
    first_frame_at_ms: Option<u64>,
    last_frame_at_ms: Option<u64>,
    pub join_to_first_frame_ms: Option<u64>,
    latencies_ms: Vec<u32>,
    /// Audio: the pitch measured over each of the last seconds (at most [`PITCHES_KEPT`]).
    pitches: VecDeque<f64>,
    /// Audio: marker onsets found, and how many came at the wrong time.
    pub markers: u64,
    pub marker_errors: u64,
    last_marker_ms: Option<u64>,
    /// Audio frames made up for lost packets; video frames not decoded while waiting for a
    /// keyframe.
    pub concealed_frames: u64,
    /// Audio frames rebuilt from the next packet's in-band FEC in place of lost ones.
    pub recovered_frames: u64,
    pub frames_skipped: u64,
    /// What the jitter buffer saw.
    pub jitter: crate::jitter::JitterStats,
    pub ended: bool,
    /// Video: size of the last decoded frame.
    pub width: u32,
    pub height: u32,
    /// RTP payload bytes, and when the first and last packet came (ms since joining).
    pub bytes: u64,
    first_packet_ms: Option<u64>,
    last_packet_ms: Option<u64>,
    /// RFC 3550 interarrival jitter, in milliseconds, and the last packet's transit time.
    jitter_ms: f64,
    last_transit_ms: Option<f64>,
    /// Mean gap between decoded frames (moving average), and the freezes' total length.
    interval_ms: Option<f64>,
    pub freeze_ms: u64,
    pub longest_freeze_ms: u64,
    timeline: VecDeque<Second>,
}

impl TrackStats {
    pub fn new(participant_id: &str, track_id: &str, kind: &str) -> Self {
        TrackStats {
            participant_id: participant_id.into(),
            track_id: track_id.into(),
            kind: kind.into(),
            ..Default::default()
        }
    }

    /// The second of the timeline `at_ms` falls in.
    fn second(&mut self, at_ms: u64) -> &mut Second {
        let t = at_ms / 1000;
        if self.timeline.back().is_none_or(|s| s.t != t) {
            if self.timeline.len() == TIMELINE_SECONDS {
                self.timeline.pop_front();
            }
            self.timeline.push_back(Second {
                t,
                ..Default::default()
            });
        }
        self.timeline.back_mut().expect("just pushed")
    }

    /// An RTP packet arrived: `at_ms` since joining, its payload's length, its timestamp at
    /// `clock_rate`.
    pub fn packet(&mut self, at_ms: u64, payload: usize, timestamp: u32, clock_rate: u32) {
        self.packets += 1;
        self.bytes += payload as u64;
        self.first_packet_ms.get_or_insert(at_ms);
        self.last_packet_ms = Some(at_ms);
        let bits = (payload * 8) as u32;
        let s = self.second(at_ms);
        // Bits this second, turned into kbit/s when reported.
        s.bitrate_kbps = s.bitrate_kbps.saturating_add(bits);
        let transit = at_ms as f64 - f64::from(timestamp) * 1000.0 / f64::from(clock_rate.max(1));
        if let Some(last) = self.last_transit_ms {
            let d = (transit - last).abs();
            // A timestamp jump (a new source) is not jitter.
            if d < 1000.0 {
                self.jitter_ms += (d - self.jitter_ms) / 16.0;
            }
        }
        self.last_transit_ms = Some(transit);
    }

    /// A decoded video frame of `width` × `height`: `code` is what it carried (None: the
    /// check failed); `at_ms` is the time since the bot joined; `latency_ms`
    /// capture-to-decode.
    pub fn video_frame(
        &mut self,
        code: Option<FrameCode>,
        at_ms: u64,
        latency_ms: Option<u32>,
        (width, height): (u32, u32),
    ) {
        self.frames_decoded += 1;
        if self.first_frame_at_ms.is_none() {
            self.first_frame_at_ms = Some(at_ms);
            self.join_to_first_frame_ms = Some(at_ms);
        }
        let mut froze = false;
        if let Some(last) = self.last_frame_at_ms {
            let gap = at_ms.saturating_sub(last) as f64;
            let mean = *self.interval_ms.get_or_insert(gap.min(100.0));
            if gap > (3.0 * mean).max(FREEZE_MIN_MS as f64) {
                froze = true;
                self.freezes += 1;
                self.freeze_ms += gap as u64;
                self.longest_freeze_ms = self.longest_freeze_ms.max(gap as u64);
            } else {
                self.interval_ms = Some(mean * 0.9 + gap * 0.1);
            }
        }
        self.last_frame_at_ms = Some(at_ms);
        let s = self.second(at_ms);
        s.frames += 1;
        (s.width, s.height) = (width, height);
        s.freezes += u32::from(froze);
        match code {
            None => self.frames_failed_check += 1,
            Some(c) => {
                match self.last_counter {
                    // The same picture again, from another simulcast layer: a layer switch
                    // starts at the new layer's keyframe, which may be of the frame the old
                    // layer carried last (layers are numbered independently, so the server
                    // cannot tell). Not a step back in time.
                    Some(prev)
                        if c.counter == prev && (width, height) != (self.width, self.height) =>
                    {
                        self.repeated += 1;
                    }
                    Some(prev) if c.counter <= prev => self.out_of_order += 1,
                    _ => {}
                }
                self.last_counter = Some(c.counter);
            }
        }
        (self.width, self.height) = (width, height);
        if let Some(l) = latency_ms {
            self.latencies_ms.push(l);
        }
    }

    /// A decoded audio frame; `pitch_hz` is a second's measurement when one completes.
    pub fn audio_frame(&mut self, at_ms: u64, pitch_hz: Option<f64>) {
        self.frames_decoded += 1;
        self.second(at_ms).frames += 1;
        if self.first_frame_at_ms.is_none() {
            self.first_frame_at_ms = Some(at_ms);
            self.join_to_first_frame_ms = Some(at_ms);
        }
        self.last_frame_at_ms = Some(at_ms);
        if let Some(hz) = pitch_hz {
            if self.pitches.len() == PITCHES_KEPT {
                self.pitches.pop_front();
            }
            self.pitches.push_back(hz);
        }
    }

    /// An audio marker's onset decoded at unix time `now_ms`, `latency_ms` after its capture.
    /// Markers start every wall-clock second: one that does not follow the previous by a
    /// whole number of seconds (±250 ms) means audio arrived out of order or at the wrong pace.
    /// The onset is timed where it is decoded, so a starved receiver misplaces one now and
    /// then: the content check allows one in four.
    pub fn audio_marker(&mut self, now_ms: u64, latency_ms: u32) {
        self.markers += 1;
        if let Some(last) = self.last_marker_ms {
            let gap = now_ms.saturating_sub(last);
            let off = (gap + 500) % 1000;
            if gap < 750 || !(250..=750).contains(&off) {
                self.marker_errors += 1;
            }
        }
        self.last_marker_ms = Some(now_ms);
        self.latencies_ms.push(latency_ms);
    }

    fn percentile(&self, p: f64) -> Option<u32> {
        if self.latencies_ms.is_empty() {
            return None;
        }
        let mut v = self.latencies_ms.clone();
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        v.get(i).copied()
    }

    /// The report of this track; `expected_hz` is the tone audio should carry, `rtt_ms` the
    /// round trip to the server as last measured.
    /// The tone's pitch: the median of the last seconds' measurements, so that one second
    /// spoiled at the edge of the call (the last frames as a sender stops) does not decide.
    pub fn pitch_hz(&self) -> Option<f64> {
        let mut p: Vec<f64> = self.pitches.iter().copied().collect();
        p.sort_by(f64::total_cmp);
        p.get(p.len() / 2).copied()
    }

    pub fn report(&self, expected_hz: f64, rtt_ms: Option<u32>) -> TrackReport {
        let pitch_hz = self.pitch_hz();
        let span_ms = match (self.first_frame_at_ms, self.last_frame_at_ms) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => 0,
        };
        let fps = if span_ms > 0 {
            (self.frames_decoded.saturating_sub(1)) as f64 * 1000.0 / span_ms as f64
        } else {
            0.0
        };
        let content_ok = self.frames_decoded > 0
            && match self.kind.as_str() {
                // The tone's pitch, and its second markers, on time.
                "audio" => {
                    pitch_hz.is_some_and(|hz| (hz - expected_hz).abs() < expected_hz * 0.03)
                        && self.markers > 0
                        && self.marker_errors * 4 <= self.markers
                }
                _ => {
                    // Every frame's code read back, in order (a lost frame is fine; a
                    // garbled or reordered one is not).
                    self.frames_failed_check == 0 && self.out_of_order == 0
                }
            };
        TrackReport {
            participant_id: self.participant_id.clone(),
            track_id: self.track_id.clone(),
            kind: self.kind.clone(),
            packets: self.packets,
            frames_decoded: self.frames_decoded,
            fps: (fps * 10.0).round() / 10.0,
            freezes: self.freezes,
            content_ok,
            pitch_hz: pitch_hz.map(|h| h.round()),
            join_to_first_frame_ms: self.join_to_first_frame_ms,
            latency_p50_ms: self.percentile(0.5),
            latency_p99_ms: self.percentile(0.99),
            markers: self.markers,
            lost_packets: self.jitter.lost,
            reordered_packets: self.jitter.reordered,
            concealed_frames: self.concealed_frames,
            recovered_frames: self.recovered_frames,
            frames_skipped: self.frames_skipped,
            ended: self.ended,
            width: self.width,
            height: self.height,
            frames_failed_check: self.frames_failed_check,
            out_of_order: self.out_of_order,
            repeated: self.repeated,
            bitrate_kbps: match (self.first_packet_ms, self.last_packet_ms) {
                (Some(a), Some(b)) if b > a => (self.bytes * 8 / (b - a)) as u32,
                _ => 0,
            },
            jitter_ms: (self.jitter_ms * 10.0).round() / 10.0,
            rtt_ms,
            freeze_ms: self.freeze_ms,
            longest_freeze_ms: self.longest_freeze_ms,
            timeline: self
                .timeline
                .iter()
                .map(|s| Second {
                    bitrate_kbps: s.bitrate_kbps / 1000,
                    ..s.clone()
                })
                .collect(),
        }
    }
}

/// One remote track in `convo-bot`'s JSON report.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct TrackReport {
    pub participant_id: String,
    pub track_id: String,
    pub kind: String,
    pub packets: u64,
    pub frames_decoded: u64,
    pub fps: f64,
    pub freezes: u64,
    pub content_ok: bool,
    pub pitch_hz: Option<f64>,
    pub join_to_first_frame_ms: Option<u64>,
    /// Capture-to-decode latency: of video frames (their capture time), of audio markers.
    pub latency_p50_ms: Option<u32>,
    pub latency_p99_ms: Option<u32>,
    /// Audio: second markers found.
    pub markers: u64,
    /// Packets the jitter buffer gave up on, and packets it put back in order.
    pub lost_packets: u64,
    pub reordered_packets: u64,
    /// Audio frames concealed (packet loss concealment) in place of lost packets.
    pub concealed_frames: u64,
    /// Audio frames rebuilt from in-band FEC (Opus) in place of lost packets.
    #[serde(default)]
    pub recovered_frames: u64,
    /// Video frames not decoded while waiting for a keyframe (after a loss, or at the start).
    pub frames_skipped: u64,
    pub ended: bool,
    /// Video: size of the last frame decoded.
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
    /// Video: frames whose code did not read back (garbled), that came before one already
    /// shown, and pictures shown twice at a simulcast layer switch.
    #[serde(default)]
    pub frames_failed_check: u64,
    #[serde(default)]
    pub out_of_order: u64,
    #[serde(default)]
    pub repeated: u64,
    /// Mean RTP payload bit rate from the first packet to the last.
    #[serde(default)]
    pub bitrate_kbps: u32,
    /// RFC 3550 interarrival jitter.
    #[serde(default)]
    pub jitter_ms: f64,
    /// Round trip to the server (RTCP receiver reports on what we publish); `None` when we
    /// publish nothing.
    #[serde(default)]
    pub rtt_ms: Option<u32>,
    /// Freezes (`freezes`: gaps of more than three frame intervals and at least 200 ms) in
    /// all, in milliseconds.
    #[serde(default)]
    pub freeze_ms: u64,
    /// The longest freeze (a reconnection's gap, say), in milliseconds.
    #[serde(default)]
    pub longest_freeze_ms: u64,
    /// Second by second since joining: frames, bit rate, size, freezes.
    #[serde(default)]
    pub timeline: Vec<Second>,
}

/// `convo-bot --report json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct BotReport {
    pub participant_id: String,
    pub room_id: String,
    /// The last active speaker the server announced.
    pub active_speaker: Option<String>,
    pub tracks: Vec<TrackReport>,
    /// Incoming video packets dropped by simulated loss (`--drop-video-one-in`).
    #[serde(default)]
    pub simulated_drops: u64,
    /// What we sent, second by second since joining: the rate on the publish connection
    /// (media, probes and headers) and the uplink's estimate at the time.
    #[serde(default)]
    pub uplink: Vec<UplinkSecond>,
}

/// One second of the uplink.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct UplinkSecond {
    pub t: u64,
    pub sent_kbps: u32,
    /// `None` while the server's feedback is not live.
    pub estimate_kbps: Option<u32>,
}

/// Round trips to the server, from the RTCP receiver reports it sends about what we publish
/// (RFC 3550 §6.4.1: arrival − LSR − DLSR). Shared by every published track's RTCP reader.
#[derive(Debug, Default)]
pub struct RoundTrip {
    /// Milliseconds, or `u32::MAX` before the first measurement.
    last_ms: std::sync::atomic::AtomicU32,
}

impl RoundTrip {
    pub fn new() -> Self {
        RoundTrip {
            last_ms: std::sync::atomic::AtomicU32::new(u32::MAX),
        }
    }

    pub fn get(&self) -> Option<u32> {
        let v = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
        (v != u32::MAX).then_some(v)
    }

    /// Reads the receiver reports in a batch of RTCP that arrived at `now`.
    pub fn observe(
        &self,
        packets: &[Box<dyn webrtc::rtcp::packet::Packet + Send + Sync>],
        now: std::time::SystemTime,
    ) {
        use webrtc::rtcp::receiver_report::ReceiverReport;
        let arrival = ntp_middle(now);
        for p in packets {
            let Some(rr) = p.as_any().downcast_ref::<ReceiverReport>() else {
                continue;
            };
            for r in rr.reports.iter().filter(|r| r.last_sender_report != 0) {
                if let Some(ms) = round_trip_ms(arrival, r.last_sender_report, r.delay) {
                    self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }
}

/// The middle 32 bits of the NTP time of `t` (seconds since 1900 in 16.16 fixed point).
pub fn ntp_middle(t: std::time::SystemTime) -> u32 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(d.subsec_nanos()) << 16) / 1_000_000_000;
    (((secs & 0xFFFF) << 16) | frac) as u32
}

/// RTT in milliseconds from a report's arrival, LSR and DLSR (all 16.16 seconds); `None`
/// when the numbers cannot be right (a clock jump, a report about another sender report).
pub fn round_trip_ms(arrival: u32, lsr: u32, dlsr: u32) -> Option<u32> {
    let rtt = arrival.wrapping_sub(lsr).wrapping_sub(dlsr);
    // More than 60 s is a wrap or garbage.
    (rtt < 60 << 16).then(|| ((u64::from(rtt) * 1000) >> 16) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(counter: u32) -> Option<FrameCode> {
        Some(FrameCode {
            counter,
            capture_ms: 0,
        })
    }

    #[test]
    fn video_content_fps_freezes_latency() {
        let mut s = TrackStats::new("p", "p:video", "video");
        for i in 0..30u32 {
            s.video_frame(
                code(i),
                1000 + u64::from(i) * 100,
                Some(20 + i % 3),
                (320, 240),
            );
        }
        // A one-second gap: a freeze.
        s.video_frame(code(40), 1000 + 29 * 100 + 1000, Some(25), (640, 360));
        let r = s.report(0.0, None);
        assert!(r.content_ok);
        assert_eq!(r.frames_decoded, 31);
        assert_eq!(r.freezes, 1);
        assert_eq!(r.freeze_ms, 1000);
        assert_eq!(r.longest_freeze_ms, 1000);
        assert_eq!((r.width, r.height), (640, 360));
        // Seconds 1 to 4 of the timeline: 10 frames a second at 320 × 240, then the freeze.
        let t: Vec<(u64, u32, u32)> = r
            .timeline
            .iter()
            .map(|s| (s.t, s.frames, s.freezes))
            .collect();
        assert_eq!(t, [(1, 10, 0), (2, 10, 0), (3, 10, 0), (4, 1, 1)]);
        assert_eq!(r.timeline[0].width, 320);
        assert_eq!(r.join_to_first_frame_ms, Some(1000));
        assert_eq!(r.latency_p50_ms, Some(21));
        // 30 intervals over 3.9 s.
        assert!((r.fps - 7.7).abs() < 0.05, "{}", r.fps);
    }

    #[test]
    fn a_picture_repeated_at_a_layer_switch_is_not_disorder() {
        let mut s = TrackStats::new("p", "t", "video");
        s.video_frame(code(5), 0, None, (1280, 720));
        s.video_frame(code(5), 60, None, (320, 180));
        s.video_frame(code(6), 120, None, (320, 180));
        assert!(s.report(0.0, None).content_ok);
        assert_eq!(s.repeated, 1);
        // The same picture at the same size is a step back.
        s.video_frame(code(6), 180, None, (320, 180));
        assert!(!s.report(0.0, None).content_ok);
    }

    #[test]
    fn garbled_or_reordered_video_fails_the_check() {
        let mut s = TrackStats::new("p", "t", "video");
        s.video_frame(code(5), 0, None, (320, 240));
        s.video_frame(code(4), 10, None, (320, 240));
        assert!(!s.report(0.0, None).content_ok);
        let mut s = TrackStats::new("p", "t", "video");
        s.video_frame(None, 0, None, (320, 240));
        assert!(!s.report(0.0, None).content_ok);
        assert!(
            !TrackStats::new("p", "t", "video")
                .report(0.0, None)
                .content_ok
        );
    }

    #[test]
    fn audio_checks_the_pitch_and_the_markers() {
        let mut s = TrackStats::new("p", "t", "audio");
        s.audio_frame(0, Some(441.0));
        // No marker yet: not proven.
        assert!(!s.report(440.0, None).content_ok);
        s.audio_marker(10_030, 30);
        s.audio_marker(11_045, 45);
        // One lost marker is a loss, not disorder.
        s.audio_marker(13_020, 20);
        let r = s.report(440.0, None);
        assert!(r.content_ok, "{r:?}");
        assert_eq!(r.markers, 3);
        assert_eq!(r.latency_p50_ms, Some(30));
        assert!(!s.report(660.0, None).content_ok);
        // Markers half a second off: wrong (one in four is forgiven).
        s.audio_marker(13_520, 20);
        assert!(s.report(440.0, None).content_ok);
        s.audio_marker(14_020, 20);
        assert!(!s.report(440.0, None).content_ok);
    }

    #[test]
    fn the_pitch_is_the_median_of_the_seconds_measured() {
        let mut s = TrackStats::new("p", "t", "audio");
        for hz in [440.0, 441.0, 439.0, 440.0, 454.0] {
            s.audio_frame(0, Some(hz));
            s.audio_frame(0, None);
        }
        // The last second, spoiled as the sender stopped, does not decide.
        assert_eq!(s.pitch_hz(), Some(440.0));
        // Only the last minute counts.
        for _ in 0..PITCHES_KEPT {
            s.audio_frame(0, Some(660.0));
        }
        assert_eq!(s.pitch_hz(), Some(660.0));
        assert_eq!(TrackStats::new("p", "t", "audio").pitch_hz(), None);
    }

    #[test]
    fn bitrate_and_jitter_from_packets() {
        let mut s = TrackStats::new("p", "t", "video");
        // 1000-byte packets every 10 ms for 2 s, timestamps in step: 800 kbit/s, no jitter.
        for i in 0..=200u64 {
            s.packet(i * 10, 1000, (i * 900) as u32, 90_000);
        }
        let r = s.report(0.0, Some(12));
        // 201 packets over 2 s.
        assert!((800..=805).contains(&r.bitrate_kbps), "{}", r.bitrate_kbps);
        assert!(r.jitter_ms < 0.1, "{}", r.jitter_ms);
        assert_eq!(r.rtt_ms, Some(12));
        assert_eq!(r.timeline[0].bitrate_kbps, 800);
        // Every other packet 20 ms late: jitter climbs towards 20 ms.
        let mut s = TrackStats::new("p", "t", "audio");
        for i in 0..500u64 {
            s.packet(i * 20 + (i % 2) * 20, 100, (i * 960) as u32, 48_000);
        }
        let j = s.report(0.0, None).jitter_ms;
        assert!((15.0..=21.0).contains(&j), "{j}");
    }

    #[test]
    fn round_trips_from_receiver_reports() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_250);
        let now = ntp_middle(t);
        // Sent 100 ms ago, held 30 ms at the far end: 70 ms.
        let lsr = now.wrapping_sub(100 * 65_536 / 1000);
        let dlsr = 30 * 65_536 / 1000;
        assert_eq!(
            round_trip_ms(now, lsr, dlsr).map(|ms| ms.abs_diff(70) <= 1),
            Some(true)
        );
        // Across the 16-bit seconds wrap.
        assert_eq!(
            round_trip_ms(5, u32::MAX - 65_536 / 10, 0).map(|ms| ms.abs_diff(100) <= 1),
            Some(true)
        );
        // A delay longer than the time since: garbage.
        assert_eq!(round_trip_ms(now, lsr, 200 * 65_536 / 1000), None);
        let rtt = RoundTrip::new();
        assert_eq!(rtt.get(), None);
        let report: Box<dyn webrtc::rtcp::packet::Packet + Send + Sync> =
            Box::new(webrtc::rtcp::receiver_report::ReceiverReport {
                reports: vec![webrtc::rtcp::reception_report::ReceptionReport {
                    last_sender_report: lsr,
                    delay: dlsr,
                    ..Default::default()
                }],
                ..Default::default()
            });
        rtt.observe(&[report], t);
        assert!(rtt.get().is_some_and(|ms| ms.abs_diff(70) <= 1));
    }
}
