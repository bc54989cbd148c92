//! Probing: a short burst above the current estimate (media plus padding) whose arrival rate
//! at the far end shows whether the path takes more. Without it an SFU whose next layer is
//! three times the current one could never learn that the next layer fits.

use std::time::{Duration, Instant};

/// How long one probe lasts at least.
pub const PROBE_DURATION: Duration = Duration::from_millis(40);
/// A probe carries at least this many bytes (ten padding packets: its rate is read over the
/// later half of them).
pub const PROBE_MIN_BYTES: u64 = 10 * 1000;
/// Probes while the app wants more than the estimate, at most this often.
const PROBE_EVERY: Duration = Duration::from_secs(4);

/// A probe being sent: its id, rate and when it started.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub cluster: u32,
    pub bps: u64,
    pub start: Instant,
    pub duration: Duration,
}

impl Probe {
    pub fn is_running(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.start) < self.duration
    }
}

/// Sends of one cluster and their arrivals, for the rate they show.
#[derive(Debug, Default, Clone)]
pub struct ClusterStats {
    /// The rate the probe was sent at: it proves no more than that (0: unknown).
    pub probed_bps: u64,
    pub sent_packets: u32,
    /// (send, arrival µs, bytes) of received packets.
    pub received: Vec<(Instant, i64, usize)>,
}

impl ClusterStats {
    /// The rate the probe proved (bps), once enough of it arrived; libwebrtc's rules: 80 % of
    /// its packets; the slower of send and receive rate. At least six packets (the receive
    /// rate is read over the later half), and never more than the rate probed: a burst of
    /// media that went out in the probe's time (a keyframe's packets back to back) shows a
    /// send rate of the machine's, not of the path's.
    pub fn result(&self) -> Option<u64> {
        let n = self.received.len();
        if n < 6 || (n as f64) < 0.8 * f64::from(self.sent_packets) {
            return None;
        }
        let first_send = self.received.iter().map(|r| r.0).min()?;
        let last_send = self.received.iter().map(|r| r.0).max()?;
        let send_s = last_send
            .saturating_duration_since(first_send)
            .as_secs_f64();
        // The receive rate is read over the later half of the arrivals: a token bucket on
        // the way (a policer, `tbf`) lets the first packets of a burst through at once, and
        // only those after them come at the link's own rate.
        let mut arrivals: Vec<(i64, usize)> = self.received.iter().map(|r| (r.1, r.2)).collect();
        arrivals.sort_unstable_by_key(|a| a.0);
        let from = (n - 1) / 2;
        let recv_s = (arrivals[n - 1].0 - arrivals[from].0) as f64 / 1e6;
        if send_s <= 0.0 || recv_s <= 0.0 || send_s > 1.0 || recv_s > 1.0 {
            return None;
        }
        let bytes: usize = self.received.iter().map(|r| r.2).sum();
        // Exclude the last packet sent from the send rate (the interval spans n - 1 packets),
        // and from the receive rate the packets up to the half's first.
        let last_size = self.received.iter().max_by_key(|r| r.0).map_or(0, |r| r.2);
        let recv_bytes: usize = arrivals[from + 1..].iter().map(|a| a.1).sum();
        let send_rate = (bytes - last_size) as f64 * 8.0 / send_s;
        let recv_rate = recv_bytes as f64 * 8.0 / recv_s;
        if recv_rate > 2.0 * send_rate {
            return None;
        }
        let r = if recv_rate < 0.9 * send_rate {
            0.95 * recv_rate
        } else {
            send_rate.min(recv_rate)
        };
        let r = r as u64;
        Some(if self.probed_bps > 0 {
            r.min(self.probed_bps)
        } else {
            r
        })
    }
}

/// When to probe and at what rate.
#[derive(Debug, Default)]
pub struct ProbeControl {
    next_cluster: u32,
    /// Probes asked for at start (3× and 6× the start rate).
    initial: Vec<u64>,
    started: bool,
    pub active: Option<Probe>,
    last_probe: Option<Instant>,
    /// The rate of the last probe, to go on when its result came close to it.
    last_rate: u64,
}

impl ProbeControl {
    /// Whether a probe should start now. `estimate`: the current one; `wanted`: what the app
    /// would send if it could; `calm`: no overuse or heavy loss lately.
    pub fn poll(&mut self, estimate: u64, wanted: u64, calm: bool, now: Instant) -> Option<Probe> {
        if let Some(p) = self.active {
            if p.is_running(now) {
                return None;
            }
            self.active = None;
        }
        if !self.started {
            self.started = true;
            self.initial = vec![estimate * 6, estimate * 3];
        }
        let due = self
            .last_probe
            .is_none_or(|t| now.saturating_duration_since(t) >= PROBE_EVERY);
        let rate = if let Some(r) = self.initial.pop() {
            // The start probes go one after the other, 100 ms apart.
            if self
                .last_probe
                .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_millis(100))
            {
                self.initial.push(r);
                return None;
            }
            r
        } else if calm && due && wanted > estimate + estimate / 20 {
            // Half again as much: enough to find the next layer, little enough that a
            // full link's queue takes the burst.
            wanted.min(estimate + estimate / 2)
        } else {
            return None;
        };
        self.next_cluster = self.next_cluster.wrapping_add(1);
        let rate = rate.max(1);
        let p = Probe {
            cluster: self.next_cluster,
            bps: rate,
            start: now,
            duration: PROBE_DURATION.max(Duration::from_secs_f64(
                PROBE_MIN_BYTES as f64 * 8.0 / rate as f64,
            )),
        };
        self.active = Some(p);
        self.last_probe = Some(now);
        self.last_rate = rate;
        Some(p)
    }

    /// A probe's result came: when it reached most of the probed rate and more is wanted,
    /// the next probe (twice as high) may come at once.
    pub fn on_result(&mut self, result: u64, wanted: u64) {
        if result as f64 > 0.7 * self.last_rate as f64 && wanted > result && self.initial.is_empty()
        {
            self.last_probe = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` packets of `size` bytes, sent `send_gap` apart and arriving `arrival_gap` apart.
    fn cluster(
        probed_bps: u64,
        n: u32,
        size: usize,
        send_gap: Duration,
        arrival_gap: i64,
    ) -> ClusterStats {
        let t0 = Instant::now();
        ClusterStats {
            probed_bps,
            sent_packets: n,
            received: (0..n)
                .map(|i| (t0 + send_gap * i, i64::from(i) * arrival_gap, size))
                .collect(),
        }
    }

    #[test]
    fn a_probe_proves_the_slower_of_its_send_and_arrival_rates() {
        // 10 × 1000 B sent over 90 ms (~0.8 Mbit/s), arriving at 600 kbit/s (13.3 ms apart).
        let r = cluster(800_000, 10, 1000, Duration::from_millis(10), 13_333).result();
        assert!(r.is_some_and(|r| (540_000..=600_000).contains(&r)), "{r:?}");
    }

    #[test]
    fn media_sent_back_to_back_proves_no_more_than_the_rate_probed() {
        // A keyframe's packets inside the probe's time: out and in at 10 Mbit/s.
        let r = cluster(800_000, 10, 1200, Duration::from_micros(900), 960).result();
        assert_eq!(r, Some(800_000));
    }

    #[test]
    fn too_few_packets_prove_nothing() {
        assert_eq!(
            cluster(800_000, 5, 1000, Duration::from_millis(10), 10_000).result(),
            None
        );
    }
}
