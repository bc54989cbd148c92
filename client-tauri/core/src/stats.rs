//! What a receiver measures of one remote track, and the report `convo-bot` prints.

use serde::Serialize;

use crate::synth::FrameCode;

/// A decoded video frame is a freeze's end when it follows the previous one by more than this.
pub const FREEZE_GAP_MS: u64 = 500;

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
    pub freezes: u64,
    last_counter: Option<u32>,
    first_frame_at_ms: Option<u64>,
    last_frame_at_ms: Option<u64>,
    pub join_to_first_frame_ms: Option<u64>,
    latencies_ms: Vec<u32>,
    /// Audio: the measured pitch of the last second.
    pub pitch_hz: Option<f64>,
    /// Audio: marker onsets found, and how many came at the wrong time.
    pub markers: u64,
    pub marker_errors: u64,
    last_marker_ms: Option<u64>,
    /// Audio frames made up for lost packets; video frames not decoded while waiting for a
    /// keyframe.
    pub concealed_frames: u64,
    pub frames_skipped: u64,
    /// What the jitter buffer saw.
    pub jitter: crate::jitter::JitterStats,
    pub ended: bool,
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

    /// A decoded video frame: `code` is what it carried (None: the check failed); `at_ms` is
    /// the time since the bot joined; `latency_ms` capture-to-decode.
    pub fn video_frame(&mut self, code: Option<FrameCode>, at_ms: u64, latency_ms: Option<u32>) {
        self.frames_decoded += 1;
        if self.first_frame_at_ms.is_none() {
            self.first_frame_at_ms = Some(at_ms);
            self.join_to_first_frame_ms = Some(at_ms);
        }
        if let Some(last) = self.last_frame_at_ms
            && at_ms.saturating_sub(last) > FREEZE_GAP_MS
        {
            self.freezes += 1;
        }
        self.last_frame_at_ms = Some(at_ms);
        match code {
            None => self.frames_failed_check += 1,
            Some(c) => {
                if let Some(prev) = self.last_counter
                    && c.counter <= prev
                {
                    self.out_of_order += 1;
                }
                self.last_counter = Some(c.counter);
            }
        }
        if let Some(l) = latency_ms {
            self.latencies_ms.push(l);
        }
    }

    /// A decoded audio frame.
    pub fn audio_frame(&mut self, at_ms: u64, pitch_hz: Option<f64>) {
        self.frames_decoded += 1;
        if self.first_frame_at_ms.is_none() {
            self.first_frame_at_ms = Some(at_ms);
            self.join_to_first_frame_ms = Some(at_ms);
        }
        self.last_frame_at_ms = Some(at_ms);
        if pitch_hz.is_some() {
            self.pitch_hz = pitch_hz;
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

    /// The report of this track; `expected_hz` is the tone audio should carry.
    pub fn report(&self, expected_hz: f64) -> TrackReport {
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
                    self.pitch_hz
                        .is_some_and(|hz| (hz - expected_hz).abs() < expected_hz * 0.03)
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
            pitch_hz: self.pitch_hz.map(|h| h.round()),
            join_to_first_frame_ms: self.join_to_first_frame_ms,
            latency_p50_ms: self.percentile(0.5),
            latency_p99_ms: self.percentile(0.99),
            markers: self.markers,
            lost_packets: self.jitter.lost,
            reordered_packets: self.jitter.reordered,
            concealed_frames: self.concealed_frames,
            frames_skipped: self.frames_skipped,
            ended: self.ended,
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
    /// Video frames not decoded while waiting for a keyframe (after a loss, or at the start).
    pub frames_skipped: u64,
    pub ended: bool,
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
            s.video_frame(code(i), 1000 + u64::from(i) * 100, Some(20 + i % 3));
        }
        // A one-second gap: a freeze.
        s.video_frame(code(40), 1000 + 29 * 100 + 1000, Some(25));
        let r = s.report(0.0);
        assert!(r.content_ok);
        assert_eq!(r.frames_decoded, 31);
        assert_eq!(r.freezes, 1);
        assert_eq!(r.join_to_first_frame_ms, Some(1000));
        assert_eq!(r.latency_p50_ms, Some(21));
        // 30 intervals over 3.9 s.
        assert!((r.fps - 7.7).abs() < 0.05, "{}", r.fps);
    }

    #[test]
    fn garbled_or_reordered_video_fails_the_check() {
        let mut s = TrackStats::new("p", "t", "video");
        s.video_frame(code(5), 0, None);
        s.video_frame(code(4), 10, None);
        assert!(!s.report(0.0).content_ok);
        let mut s = TrackStats::new("p", "t", "video");
        s.video_frame(None, 0, None);
        assert!(!s.report(0.0).content_ok);
        assert!(!TrackStats::new("p", "t", "video").report(0.0).content_ok);
    }

    #[test]
    fn audio_checks_the_pitch_and_the_markers() {
        let mut s = TrackStats::new("p", "t", "audio");
        s.audio_frame(0, Some(441.0));
        // No marker yet: not proven.
        assert!(!s.report(440.0).content_ok);
        s.audio_marker(10_030, 30);
        s.audio_marker(11_045, 45);
        // One lost marker is a loss, not disorder.
        s.audio_marker(13_020, 20);
        let r = s.report(440.0);
        assert!(r.content_ok, "{r:?}");
        assert_eq!(r.markers, 3);
        assert_eq!(r.latency_p50_ms, Some(30));
        assert!(!s.report(660.0).content_ok);
        // Markers half a second off: wrong (one in four is forgiven).
        s.audio_marker(13_520, 20);
        assert!(s.report(440.0).content_ok);
        s.audio_marker(14_020, 20);
        assert!(!s.report(440.0).content_ok);
    }
}
