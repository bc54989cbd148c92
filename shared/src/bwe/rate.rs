//! Turning the detector's verdicts and the measured throughput into a target bitrate: the
//! AIMD controller (GCC's delay-based rate control), the loss-based bound, and the rate the
//! far end acknowledged receiving.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::delay::Usage;

/// Multiplicative increase per second while far from the last known capacity.
const INCREASE_PER_SEC: f64 = 1.08;
/// Decrease to this share of what is getting through.
const BETA: f64 = 0.85;
/// The estimate may run ahead of the acknowledged rate by this much (what the sender does not
/// send is not known to fit).
const ACKED_HEADROOM: f64 = 1.5;
const ACKED_HEADROOM_BPS: f64 = 10_000.0;

/// Rate control state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Hold,
    Increase,
    Decrease,
}

/// The delay-based AIMD controller.
#[derive(Debug)]
pub struct Aimd {
    state: State,
    estimate: f64,
    min: f64,
    max: f64,
    last_update: Option<Instant>,
    last_decrease: Option<Instant>,
    /// Throughput (bps) when the last decreases happened, averaged: near it, increase
    /// additively.
    capacity: Option<f64>,
    capacity_var: f64,
}

impl Aimd {
    pub fn new(start: u64, min: u64, max: u64) -> Self {
        Aimd {
            state: State::Increase,
            estimate: start as f64,
            min: min as f64,
            max: max as f64,
            last_update: None,
            last_decrease: None,
            capacity: None,
            capacity_var: 0.4,
        }
    }

    pub fn estimate(&self) -> u64 {
        self.estimate as u64
    }

    /// A probe found the path takes at least `bps`.
    pub fn probe_result(&mut self, bps: u64) {
        let bps = (bps as f64).clamp(self.min, self.max);
        if bps > self.estimate {
            self.estimate = bps;
            self.capacity = None;
        }
    }

    /// One detector verdict. `acked`: what the far end received lately (bps); `sent`: what
    /// was sent lately (bps); `rtt`.
    pub fn update(
        &mut self,
        usage: Usage,
        acked: Option<u64>,
        sent: Option<u64>,
        rtt: Duration,
        now: Instant,
    ) {
        let dt = self
            .last_update
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
            .min(Duration::from_secs(1));
        self.last_update = Some(now);
        self.state = match (usage, self.state) {
            (Usage::Over, _) => State::Decrease,
            (Usage::Under, _) => State::Hold,
            (Usage::Normal, State::Hold | State::Decrease) => State::Increase,
            (Usage::Normal, s) => s,
        };
        let acked = acked.map(|a| a as f64);
        match self.state {
            State::Hold => {}
            State::Increase => {
                let near = match (self.capacity, acked) {
                    (Some(c), Some(a)) => {
                        let sd = (self.capacity_var * c).sqrt();
                        // Far above what was seen: the capacity changed, forget it.
                        if a > c + 3.0 * sd {
                            self.capacity = None;
                            false
                        } else {
                            true
                        }
                    }
                    _ => false,
                };
                let next = if near {
                    // About one packet (1200 bytes) more per response time.
                    let response = rtt.as_secs_f64() + 0.1;
                    let per_sec = (1200.0 * 8.0 / response).max(4000.0);
                    self.estimate + per_sec * dt.as_secs_f64()
                } else {
                    self.estimate * INCREASE_PER_SEC.powf(dt.as_secs_f64())
                };
                let ceiling = acked.map_or(f64::MAX, |a| {
                    (a * ACKED_HEADROOM + ACKED_HEADROOM_BPS).max(self.estimate)
                });
                self.estimate = next.min(ceiling);
            }
            State::Decrease => {
                // At most once per round trip: the previous decrease has not taken effect yet.
                let settled = self.last_decrease.is_none_or(|t| {
                    now.saturating_duration_since(t) >= rtt.max(Duration::from_millis(100))
                });
                if settled && let Some(a) = acked {
                    // Sending well under the estimate (some streams paused), the queue is
                    // not of our making at the estimate's rate: come down from the estimate,
                    // not to what little went through (which would pause more, and so on).
                    let app_limited = sent.is_some_and(|s| (s as f64) < 0.5 * self.estimate);
                    let base = if app_limited { self.estimate } else { a };
                    let next = BETA * base;
                    if next < self.estimate {
                        self.estimate = next;
                    }
                    self.observe_capacity(a);
                    self.last_decrease = Some(now);
                }
                self.state = State::Hold;
            }
        }
        self.estimate = self.estimate.clamp(self.min, self.max);
    }

    fn observe_capacity(&mut self, acked: f64) {
        let c = self.capacity.get_or_insert(acked);
        let alpha = 0.05;
        let norm = c.max(1.0);
        let err = *c - acked;
        *c = (1.0 - alpha) * *c + alpha * acked;
        self.capacity_var =
            ((1.0 - alpha) * self.capacity_var + alpha * err * err / norm).clamp(0.4, 2.5);
    }
}

/// The bound from packet loss: above 10 % the rate comes down by half the loss, below 5 % the
/// bound lifts again by 8 % a second (and is gone after 2 s); in between it holds.
#[derive(Debug, Default)]
pub struct LossBound {
    bound: Option<f64>,
    last_change: Option<Instant>,
    /// Since when loss has stayed under 2 %.
    clean_since: Option<Instant>,
}

/// After this long without loss the bound is gone (the delay-based estimate rules).
const CLEAN_FOR: Duration = Duration::from_secs(2);
/// Loss under this counts as none. (GCC says 2 %; webrtc-rs's feedback, read on loopback
/// links with room to spare, shows a few percent where nothing is dropped.)
const CLEAN_LOSS: f64 = 0.05;

impl LossBound {
    pub fn bound(&self) -> Option<u64> {
        self.bound.map(|b| b as u64)
    }

    /// A probe got `bps` through.
    pub fn lift(&mut self, bps: u64) {
        if self.bound.is_some_and(|b| b < bps as f64) {
            self.bound = Some(bps as f64);
        }
    }

    /// `loss`: the share of packets lost lately; `target`: what is sent now.
    pub fn update(&mut self, loss: f64, target: u64, rtt: Duration, now: Instant) {
        if loss < CLEAN_LOSS {
            let since = *self.clean_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= CLEAN_FOR {
                self.bound = None;
            }
        } else {
            self.clean_since = None;
        }
        let since = self.last_change.map(|t| now.saturating_duration_since(t));
        if loss > 0.10 {
            // Once per round trip (plus 300 ms): the last cut needs time to show.
            if since.is_none_or(|s| s >= rtt + Duration::from_millis(300)) {
                let base = self.bound.map_or(target as f64, |b| b.min(target as f64));
                self.bound = Some(base * (1.0 - 0.5 * loss));
                self.last_change = Some(now);
            }
        } else if loss < CLEAN_LOSS {
            if let Some(b) = self.bound {
                let dt = since.unwrap_or(Duration::ZERO).min(Duration::from_secs(1));
                let next = b * INCREASE_PER_SEC.powf(dt.as_secs_f64());
                self.bound = (next < target as f64 * 1.5).then_some(next);
                self.last_change = Some(now);
            }
        } else {
            self.last_change = Some(now);
        }
    }
}

/// The rate the far end received, from acknowledged packets over a sliding window of
/// arrival times.
#[derive(Debug, Default)]
pub struct AckedRate {
    /// (arrival µs, bytes)
    samples: VecDeque<(i64, usize)>,
}

const ACKED_WINDOW_US: i64 = 500_000;

impl AckedRate {
    pub fn add(&mut self, arrival_us: i64, bytes: usize) {
        // Kept in arrival order (feedback lists packets by sequence; arrivals may be reordered).
        let at = self
            .samples
            .iter()
            .rposition(|&(t, _)| t <= arrival_us)
            .map_or(0, |p| p + 1);
        self.samples.insert(at, (arrival_us, bytes));
        let newest = self.samples.back().map_or(arrival_us, |s| s.0);
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| newest - t > ACKED_WINDOW_US)
        {
            self.samples.pop_front();
        }
        while self.samples.len() > 4096 {
            self.samples.pop_front();
        }
    }

    /// Bits per second over the window, once it spans at least 150 ms.
    pub fn rate(&self) -> Option<u64> {
        let (first, last) = (self.samples.front()?.0, self.samples.back()?.0);
        let span = (last - first).max(0);
        if span < 150_000 {
            return None;
        }
        let bytes: usize = self.samples.iter().skip(1).map(|s| s.1).sum();
        Some((bytes as f64 * 8.0 * 1_000_000.0 / span as f64) as u64)
    }
}
