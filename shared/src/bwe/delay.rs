//! Delay-based detection (GCC, draft-ietf-rmcat-gcc-02 and libwebrtc's trendline estimator):
//! packets sent in one burst form a group; the growth of one group's transit time over the
//! previous one's is the delay gradient; a least-squares trend over the last groups, compared
//! with an adaptive threshold, says whether the path is being overused (a queue builds),
//! underused (a queue drains) or neither.

use std::time::{Duration, Instant};

/// Packets sent within this of a group's first belong to it (a burst).
const BURST: Duration = Duration::from_millis(5);
/// Groups in the trend's window.
const WINDOW: usize = 20;
/// Smoothing of the accumulated delay.
const SMOOTHING: f64 = 0.9;
/// The trend's slope is scaled by this before it meets the threshold.
const THRESHOLD_GAIN: f64 = 4.0;
/// The adaptive threshold (ms): where it starts, its bounds, how fast it follows the trend
/// up and down.
const THRESHOLD_INITIAL: f64 = 12.5;
const THRESHOLD_MIN: f64 = 6.0;
const THRESHOLD_MAX: f64 = 600.0;
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
/// A trend must stay above the threshold this long before it counts as overuse.
const OVERUSE_TIME_MS: f64 = 10.0;

/// What the trend says of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Normal,
    Over,
    Under,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_send: Instant,
    last_send: Instant,
    /// Remote clock, microseconds.
    first_arrival: i64,
    /// Remote clock, microseconds.
    last_arrival: i64,
}

/// Groups packets into bursts and yields the delay variation between consecutive groups.
#[derive(Debug, Default)]
struct InterArrival {
    current: Option<Group>,
    previous: Option<Group>,
}

impl InterArrival {
    /// One received packet (in send order). Returns `(send delta, arrival delta)` in ms when
    /// the packet started a new group and the previous two groups are complete.
    fn feed(&mut self, send: Instant, arrival_us: i64) -> Option<(f64, f64)> {
        let Some(cur) = self.current.as_mut() else {
            self.current = Some(Group {
                first_send: send,
                last_send: send,
                first_arrival: arrival_us,
                last_arrival: arrival_us,
            });
            return None;
        };
        // Reordered (sent before this group began): ignored.
        if send < cur.first_send {
            return None;
        }
        // Packets that arrive in a burst (closer together than they were sent, within 5 ms of
        // the last) were queued together: one group (libwebrtc's burst rule).
        let send_delta_us = send.saturating_duration_since(cur.last_send).as_micros() as i64;
        let arrival_delta_us = arrival_us - cur.last_arrival;
        let burst = arrival_delta_us - send_delta_us < 0
            && arrival_delta_us <= 5_000
            && arrival_us - cur.first_arrival < 100_000;
        if burst || send.saturating_duration_since(cur.first_send) <= BURST {
            cur.last_send = cur.last_send.max(send);
            cur.last_arrival = cur.last_arrival.max(arrival_us);
            return None;
        }
        let done = *cur;
        let out = self.previous.map(|prev| {
            let send_delta = done
                .last_send
                .saturating_duration_since(prev.last_send)
                .as_secs_f64()
                * 1000.0;
            let arrival_delta = (done.last_arrival - prev.last_arrival) as f64 / 1000.0;
            (send_delta, arrival_delta)
        });
        self.previous = Some(done);
        self.current = Some(Group {
            first_send: send,
            last_send: send,
            first_arrival: arrival_us,
            last_arrival: arrival_us,
        });
        out
    }
}

/// The trendline estimator with its overuse detector.
#[derive(Debug)]
pub struct DelayDetector {
    arrivals: InterArrival,
    first_arrival_ms: Option<f64>,
    arrival_ms: f64,
    accumulated: f64,
    smoothed: f64,
    /// (arrival time ms, smoothed accumulated delay ms)
    window: std::collections::VecDeque<(f64, f64)>,
    deltas: u32,
    threshold: f64,
    last_threshold_update: Option<f64>,
    time_over: Option<f64>,
    overuse_count: u32,
    prev_trend: f64,
    usage: Usage,
}

impl Default for DelayDetector {
    fn default() -> Self {
        DelayDetector {
            arrivals: InterArrival::default(),
            first_arrival_ms: None,
            arrival_ms: 0.0,
            accumulated: 0.0,
            smoothed: 0.0,
            window: std::collections::VecDeque::with_capacity(WINDOW + 1),
            deltas: 0,
            threshold: THRESHOLD_INITIAL,
            last_threshold_update: None,
            time_over: None,
            overuse_count: 0,
            prev_trend: 0.0,
            usage: Usage::Normal,
        }
    }
}

impl DelayDetector {
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// One packet the far end received, in the order packets were sent.
    pub fn feed(&mut self, send: Instant, arrival_us: i64) -> Usage {
        if let Some((send_delta, arrival_delta)) = self.arrivals.feed(send, arrival_us) {
            let arrival_ms = arrival_us as f64 / 1000.0;
            self.update(arrival_delta - send_delta, send_delta, arrival_ms);
        }
        self.usage
    }

    fn update(&mut self, delay_delta: f64, send_delta: f64, arrival_ms: f64) {
        self.deltas = self.deltas.saturating_add(1);
        self.accumulated += delay_delta;
        self.smoothed = SMOOTHING * self.smoothed + (1.0 - SMOOTHING) * self.accumulated;
        let first = *self.first_arrival_ms.get_or_insert(arrival_ms);
        self.arrival_ms = arrival_ms;
        self.window.push_back((arrival_ms - first, self.smoothed));
        if self.window.len() > WINDOW {
            self.window.pop_front();
        }
        let mut trend = self.prev_trend;
        if self.window.len() == WINDOW
            && let Some(slope) = slope(&self.window)
        {
            trend = slope;
        }
        self.detect(trend, send_delta, arrival_ms);
    }

    fn detect(&mut self, trend: f64, send_delta: f64, now_ms: f64) {
        let modified = f64::from(self.deltas.min(60)) * trend * THRESHOLD_GAIN;
        if modified > self.threshold {
            let t = self.time_over.get_or_insert(send_delta / 2.0);
            *t += send_delta;
            self.overuse_count += 1;
            if *t > OVERUSE_TIME_MS && self.overuse_count > 1 && trend >= self.prev_trend {
                self.time_over = Some(0.0);
                self.overuse_count = 0;
                self.usage = Usage::Over;
            }
        } else if modified < -self.threshold {
            self.time_over = None;
            self.overuse_count = 0;
            self.usage = Usage::Under;
        } else {
            self.time_over = None;
            self.overuse_count = 0;
            self.usage = Usage::Normal;
        }
        self.prev_trend = trend;
        self.adapt_threshold(modified, now_ms);
    }

    fn adapt_threshold(&mut self, modified: f64, now_ms: f64) {
        let last = *self.last_threshold_update.get_or_insert(now_ms);
        // A spike far above the threshold (a route change, a burst) does not move it.
        if modified.abs() > self.threshold + 15.0 {
            self.last_threshold_update = Some(now_ms);
            return;
        }
        let k = if modified.abs() < self.threshold {
            K_DOWN
        } else {
            K_UP
        };
        let dt = (now_ms - last).clamp(0.0, 100.0);
        self.threshold += k * (modified.abs() - self.threshold) * dt;
        self.threshold = self.threshold.clamp(THRESHOLD_MIN, THRESHOLD_MAX);
        self.last_threshold_update = Some(now_ms);
    }
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &std::collections::VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), &(x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den != 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packets every 10 ms; each arrives `base + extra(i)` later.
    fn run(extra: impl Fn(u32) -> f64, n: u32) -> Vec<Usage> {
        let t0 = Instant::now();
        let mut d = DelayDetector::default();
        (0..n)
            .map(|i| {
                let send = t0 + Duration::from_millis(u64::from(i) * 10);
                let arrival = (f64::from(i) * 10_000.0 + 20_000.0 + extra(i) * 1000.0) as i64;
                d.feed(send, arrival)
            })
            .collect()
    }

    #[test]
    fn a_steady_path_is_normal() {
        let u = run(|_| 0.0, 300);
        assert!(u.iter().all(|&u| u == Usage::Normal), "{u:?}");
    }

    #[test]
    fn a_growing_queue_is_overuse_and_a_draining_one_underuse() {
        // From packet 100 on, each packet waits 2 ms longer than the one before (a queue
        // growing at a fifth of the send rate).
        let u = run(
            |i| {
                if i < 100 {
                    0.0
                } else {
                    f64::from(i - 100) * 2.0
                }
            },
            200,
        );
        assert!(u[..100].iter().all(|&u| u == Usage::Normal));
        assert!(u[100..].contains(&Usage::Over), "{u:?}");
        // A queue of 200 ms drains by 2 ms per packet.
        let u = run(
            |i| {
                if i < 100 {
                    200.0
                } else {
                    (200.0 - f64::from(i - 100) * 2.0).max(0.0)
                }
            },
            200,
        );
        assert!(u[100..].contains(&Usage::Under), "{u:?}");
    }

    #[test]
    fn jitter_alone_is_not_overuse() {
        // ±15 ms of arrival jitter on packets 10 ms apart (much reordering), no trend (a fixed pseudo-random pattern).
        let mut x: u32 = 12345;
        let jitter: Vec<f64> = (0..400)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                f64::from((x >> 16) % 31) - 15.0
            })
            .collect();
        let u = run(|i| jitter[i as usize] + 15.0, 400);
        // Once the threshold has adapted to it (the first two seconds).
        let over = u[200..].iter().filter(|&&u| u == Usage::Over).count();
        assert!(over < 4, "{over} overuse verdicts on jitter alone");
    }
}
