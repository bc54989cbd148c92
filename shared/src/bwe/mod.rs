//! Send-side bandwidth estimation from transport-wide congestion control feedback
//! (draft-holmer-rmcat-transport-wide-cc-extensions, GCC as in draft-ietf-rmcat-gcc and
//! libwebrtc, after str0m's port): sans IO. The sender tells it what it sent
//! ([`SendSideBwe::on_sent`], with the transport-wide sequence number) and what the far end
//! reported ([`SendSideBwe::on_feedback`]); it answers with a target bitrate
//! ([`SendSideBwe::target`]) and, while probing, how much padding to send now
//! ([`SendSideBwe::padding`]). Time comes in as arguments, so tests run on simulated clocks.
//!
//! Parts: [`delay`] (the delay-gradient trend and its overuse detector), [`rate`] (the AIMD
//! controller, the loss bound, the acknowledged rate), [`probe`] (bursts that find out whether
//! more fits).

pub mod delay;
pub mod probe;
pub mod rate;
#[cfg(feature = "webrtc")]
pub mod rtc;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use delay::{DelayDetector, Usage};
use probe::{ClusterStats, ProbeControl};
use rate::{AckedRate, Aimd, LossBound};

/// Packets remembered for feedback (about 10 s of a 720p call).
const HISTORY: usize = 8192;
/// Clusters whose results are awaited.
const CLUSTERS: usize = 8;
/// The send rate is measured over this.
const SENT_WINDOW: Duration = Duration::from_millis(500);
/// Feedback older than this means the far end stopped reporting: the estimate is not used.
pub const FEEDBACK_STALE: Duration = Duration::from_secs(3);

/// What a camera picture costs at full quality and `fps` frames a second: about 0.06 bits per
/// pixel (1280 × 720 at 30 fps ~1.7 Mbit/s, 640 × 360 ~430 kbit/s), at least 130 kbit/s (with
/// less, OpenH264 drops frames of a real 320 × 180 picture to hold the rate) and at most
/// 2.5 Mbit/s. Clients encode a camera layer at it; the server counts a layer it has not
/// measured yet at it.
pub fn camera_bps(width: u64, height: u64, fps: u64) -> u64 {
    (width * height * fps / 16).clamp(130_000, 2_500_000)
}

/// Limits and the start of the estimate.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub start_bps: u64,
    pub min_bps: u64,
    pub max_bps: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            start_bps: 300_000,
            min_bps: 50_000,
            max_bps: 20_000_000,
        }
    }
}

/// One transport-wide feedback report: packet `base_seq + i` arrived at `arrivals[i]`
/// (microseconds on the far end's clock), or was not received (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    pub base_seq: u16,
    pub arrivals: Vec<Option<i64>>,
}

/// What the far end said of a packet so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    None,
    Lost,
    Received,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    size: usize,
    at: Instant,
    cluster: Option<u32>,
    report: Report,
}

/// The estimator of one connection's sending direction.
#[derive(Debug)]
pub struct SendSideBwe {
    cfg: Config,
    /// Sent packets by extended sequence number; `first_ext` is the first's.
    sent: VecDeque<Sent>,
    first_ext: i64,
    last_seq: Option<(u16, i64)>,
    delay: DelayDetector,
    aimd: Aimd,
    loss: LossBound,
    acked: AckedRate,
    probes: ProbeControl,
    clusters: HashMap<u32, ClusterStats>,
    /// Bytes sent since the active probe began.
    probe_sent: usize,
    /// Padding handed out for the active probe (what `probe_sent` must at least hold, if
    /// the padding went out unseen).
    probe_padded: usize,
    rtt: Option<Duration>,
    lost: u32,
    counted: u32,
    loss_at: Option<Instant>,
    last_loss: f64,
    last_feedback: Option<Instant>,
    wanted: u64,
    sent_total: u64,
    first_sent: Option<Instant>,
    /// (when, bytes) of the last half second's sends.
    recent: VecDeque<(Instant, usize)>,
    /// Probes started, probes that gave a result, and the last result (for logs).
    probe_log: (u32, u32, Option<u64>),
    /// The path said something of its capacity: overuse, a loss bound, a probe's result.
    measured: bool,
}

impl SendSideBwe {
    pub fn new(cfg: Config) -> Self {
        SendSideBwe {
            cfg,
            sent: VecDeque::new(),
            first_ext: 0,
            last_seq: None,
            delay: DelayDetector::default(),
            aimd: Aimd::new(cfg.start_bps, cfg.min_bps, cfg.max_bps),
            loss: LossBound::default(),
            acked: AckedRate::default(),
            probes: ProbeControl::default(),
            clusters: HashMap::new(),
            probe_sent: 0,
            probe_padded: 0,
            rtt: None,
            lost: 0,
            counted: 0,
            loss_at: None,
            last_loss: 0.0,
            last_feedback: None,
            wanted: 0,
            sent_total: 0,
            first_sent: None,
            recent: VecDeque::new(),
            probe_log: (0, 0, None),
            measured: false,
        }
    }

    /// The bitrate to send at, all streams together.
    pub fn target(&self) -> u64 {
        let t = self.aimd.estimate();
        self.loss
            .bound()
            .map_or(t, |b| t.min(b))
            .max(self.cfg.min_bps)
    }

    /// The bitrate to hold to (bps), or `None` when the far end does not report at all (no
    /// transport-cc feedback for `FEEDBACK_STALE` since sending began): then nothing should
    /// be limited. Before the first report it is the start rate, and a far end that stops
    /// reporting keeps the last estimate.
    pub fn budget(&self, now: Instant) -> Option<u64> {
        let reporting = self.last_feedback.is_some()
            || self
                .first_sent
                .is_some_and(|t| now.saturating_duration_since(t) < FEEDBACK_STALE);
        reporting.then(|| self.target())
    }

    /// Feedback arrived lately: the far end reports, and [`SendSideBwe::target`] means
    /// something. Without it (a receiver without transport-cc) nothing should be limited.
    pub fn is_live(&self, now: Instant) -> bool {
        self.last_feedback
            .is_some_and(|t| now.saturating_duration_since(t) < FEEDBACK_STALE)
    }

    /// The estimate rests on what the path showed (a probe's result, overuse, a loss
    /// bound), not only on where it started and what was sent so far. An estimate that was
    /// never measured must not stop a stream: what little is sent holds it down (it may be
    /// at most 1.5× the acknowledged rate), and only a probe would lift it.
    pub fn is_measured(&self) -> bool {
        self.measured
    }

    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// The share of packets lost in the last loss window.
    pub fn loss(&self) -> f64 {
        self.last_loss
    }

    /// What was sent over the last half second (bps).
    pub fn sent_bps(&self, now: Instant) -> Option<u64> {
        let first = self.first_sent?;
        let span = now.saturating_duration_since(first).min(SENT_WINDOW);
        if span < Duration::from_millis(100) {
            return None;
        }
        let bytes: usize = self
            .recent
            .iter()
            .filter(|&&(t, _)| now.saturating_duration_since(t) <= SENT_WINDOW)
            .map(|r| r.1)
            .sum();
        Some((bytes as f64 * 8.0 / span.as_secs_f64()) as u64)
    }

    /// A one-line account of the estimator's state, for logs.
    pub fn summary(&self, now: Instant) -> String {
        format!(
            "target={} delay={} loss_bound={:?} acked={:?} loss={:.3} usage={:?} rtt={:?} live={} measured={} probing={} probes={:?}",
            self.target(),
            self.aimd.estimate(),
            self.loss.bound(),
            self.acked.rate(),
            self.last_loss,
            self.delay.usage(),
            self.rtt,
            self.is_live(now),
            self.measured,
            self.probing(now),
            self.probe_log
        )
    }

    /// Bytes sent in all (media and padding, RTP headers included).
    pub fn sent_bytes(&self) -> u64 {
        self.sent_total
    }

    /// What the sender would send if the path took it (probing aims for it).
    pub fn set_wanted(&mut self, bps: u64) {
        self.wanted = bps;
    }

    fn extend(&mut self, seq: u16) -> i64 {
        let ext = match self.last_seq {
            None => i64::from(seq),
            Some((last, last_ext)) => last_ext + i64::from(seq.wrapping_sub(last) as i16),
        };
        if self.last_seq.is_none_or(|(_, e)| ext > e) {
            self.last_seq = Some((seq, ext));
        }
        ext
    }

    /// A packet went out with transport-wide sequence number `seq` and `size` bytes.
    pub fn on_sent(&mut self, seq: u16, size: usize, now: Instant) {
        let ext = self.extend(seq);
        self.sent_total += size as u64;
        self.first_sent.get_or_insert(now);
        self.recent.push_back((now, size));
        while self.recent.len() > 8192
            || self
                .recent
                .front()
                .is_some_and(|&(t, _)| now.saturating_duration_since(t) > SENT_WINDOW)
        {
            self.recent.pop_front();
        }
        let cluster = self
            .probes
            .active
            .and_then(|p| p.is_running(now).then_some(p.cluster));
        if let Some(c) = cluster {
            self.probe_sent += size;
            let stats = self.clusters.entry(c).or_default();
            stats.sent_packets += 1;
        }
        let entry = Sent {
            size,
            at: now,
            cluster,
            report: Report::None,
        };
        if self.sent.is_empty() {
            self.first_ext = ext;
        }
        let idx = ext - self.first_ext;
        if idx < 0 {
            return;
        }
        let idx = idx as usize;
        if idx < self.sent.len() {
            // A retransmission under the same number: the newest send counts.
            self.sent[idx] = entry;
        } else {
            while self.sent.len() < idx {
                self.sent.push_back(Sent {
                    report: Report::Received,
                    ..entry
                });
            }
            self.sent.push_back(entry);
        }
        while self.sent.len() > HISTORY {
            self.sent.pop_front();
            self.first_ext += 1;
        }
    }

    /// A feedback report came in.
    pub fn on_feedback(&mut self, fb: &Feedback, now: Instant) {
        let Some((last, last_ext)) = self.last_seq else {
            return;
        };
        let behind = i64::from(last.wrapping_sub(fb.base_seq) as i16);
        let base_ext = last_ext - behind;
        self.last_feedback = Some(now);
        let mut newest_rtt: Option<Duration> = None;
        let mut probe_clusters: Vec<u32> = Vec::new();
        let mut received: Vec<(Instant, i64)> = Vec::new();
        for (i, arrival) in fb.arrivals.iter().enumerate() {
            let idx = base_ext + i as i64 - self.first_ext;
            if idx < 0 {
                continue;
            }
            let Some(s) = self.sent.get_mut(idx as usize) else {
                break;
            };
            // Each packet counts once: a report covers everything from its lowest number on,
            // packets reported before included.
            let before = s.report;
            let s = *s;
            match (arrival, before) {
                (_, Report::Received) | (None, Report::Lost) => {}
                (Some(at), _) => {
                    self.sent[idx as usize].report = Report::Received;
                    self.acked.add(*at, s.size);
                    if before == Report::Lost {
                        // Late, not lost (reordered): it counts as received, and is too late
                        // to say anything of the delay trend.
                        self.lost = self.lost.saturating_sub(1);
                        continue;
                    }
                    self.counted += 1;
                    received.push((s.at, *at));
                    let rtt = now.saturating_duration_since(s.at);
                    newest_rtt = Some(newest_rtt.map_or(rtt, |r| r.min(rtt)));
                    if let Some(c) = s.cluster
                        && let Some(stats) = self.clusters.get_mut(&c)
                    {
                        stats.received.push((s.at, *at, s.size));
                        probe_clusters.push(c);
                    }
                }
                (None, Report::None) => {
                    self.sent[idx as usize].report = Report::Lost;
                    self.lost += 1;
                    self.counted += 1;
                }
            }
        }
        // The delay trend reads packets in the order they arrived.
        received.sort_by_key(|&(sent, at)| (at, sent));
        for (sent, at) in received {
            self.delay.feed(sent, at);
        }
        if let Some(r) = newest_rtt {
            self.rtt = Some(match self.rtt {
                None => r,
                Some(old) => (old * 7 + r) / 8,
            });
        }
        let rtt = self.rtt.unwrap_or(Duration::from_millis(100));
        probe_clusters.sort_unstable();
        probe_clusters.dedup();
        for c in probe_clusters {
            if let Some(result) = self.clusters.get(&c).and_then(ClusterStats::result) {
                self.clusters.remove(&c);
                self.probe_log.1 += 1;
                self.probe_log.2 = Some(result);
                if self.delay.usage() != Usage::Over {
                    self.aimd.probe_result(result);
                    self.loss.lift(result);
                }
                self.probes.on_result(result, self.wanted);
            }
        }
        let sent = self.sent_bps(now);
        self.aimd
            .update(self.delay.usage(), self.acked.rate(), sent, rtt, now);
        self.measured |= self.probe_log.1 > 0 || self.delay.usage() == Usage::Over;
        let window_done = self
            .loss_at
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_millis(200));
        if self.counted >= 20 && window_done {
            self.last_loss = f64::from(self.lost) / f64::from(self.counted);
            self.loss
                .update(self.last_loss, self.aimd.estimate(), rtt, now);
            self.measured |= self.loss.bound().is_some();
            self.lost = 0;
            self.counted = 0;
            self.loss_at = Some(now);
        }
    }

    /// A probe is being sent (pace padding finely).
    pub fn probing(&self, now: Instant) -> bool {
        self.probes.active.is_some_and(|p| p.is_running(now))
    }

    /// Bytes of padding to send now (a probe runs); 0 otherwise. Call every few milliseconds
    /// while media flows, and send what it says.
    pub fn padding(&mut self, now: Instant) -> usize {
        if !self.is_live(now) {
            return 0;
        }
        // Not while the path says it is full (overuse, heavy loss).
        let calm = self.delay.usage() != Usage::Over && self.last_loss < 0.10;
        let target = self.target();
        if let Some(p) = self.probes.poll(target, self.wanted, calm, now) {
            self.probe_log.0 += 1;
            self.probe_sent = 0;
            self.probe_padded = 0;
            self.clusters.insert(
                p.cluster,
                ClusterStats {
                    probed_bps: p.bps,
                    ..ClusterStats::default()
                },
            );
            if self.clusters.len() > CLUSTERS
                && let Some(&oldest) = self.clusters.keys().min()
            {
                self.clusters.remove(&oldest);
            }
        }
        let Some(p) = self.probes.active else {
            return 0;
        };
        let elapsed = now.saturating_duration_since(p.start).min(p.duration);
        // A little ahead of the clock, so that the burst starts at once.
        let due =
            (p.bps as f64 / 8.0 * (elapsed + Duration::from_millis(5)).as_secs_f64()) as usize;
        let pad = due.saturating_sub(self.probe_sent.max(self.probe_padded));
        self.probe_padded += pad;
        pad
    }
}

#[cfg(test)]
mod tests;
