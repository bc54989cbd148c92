//! The estimator against a simulated bottleneck: a sender that sends what the estimate allows
//! (up to what it wants) plus probe padding, a FIFO link of a given capacity with a drop-tail
//! queue, optional random loss, and feedback every 100 ms. All on simulated time.

use super::*;

struct Link {
    /// Bits per second, changeable mid-run.
    capacity: u64,
    /// Drop a packet that would wait longer than this in the queue.
    max_queue: Duration,
    /// One-way propagation.
    delay: Duration,
    /// Random loss, per mille (seeded).
    loss_permille: u32,
    /// Extra delay of up to this, per packet, after the queue (a busy receiver), not
    /// reordering.
    jitter: Duration,
    /// A token bucket's depth (bytes), as `tbf`'s burst: that much passes at once after a
    /// quiet moment. 0: a plain FIFO at `capacity`.
    burst: f64,
    tokens: f64,
    last_arrival: Instant,
    free_at: Instant,
    rng: u32,
}

impl Link {
    fn new(capacity: u64, start: Instant) -> Self {
        Link {
            capacity,
            max_queue: Duration::from_millis(150),
            delay: Duration::from_millis(20),
            loss_permille: 0,
            jitter: Duration::ZERO,
            burst: 0.0,
            tokens: 0.0,
            last_arrival: start,
            free_at: start,
            rng: 0x1234_5678,
        }
    }

    /// When the packet arrives, or `None` when it is dropped.
    fn send(&mut self, size: usize, now: Instant) -> Option<Instant> {
        self.rng = self.rng.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        if (self.rng >> 8) % 1000 < self.loss_permille {
            return None;
        }
        let start = self.free_at.max(now);
        if start.saturating_duration_since(now) > self.max_queue {
            return None;
        }
        // Tokens gathered since the link was last busy, up to the bucket's depth.
        let bytes_per_s = self.capacity as f64 / 8.0;
        let idle = start.saturating_duration_since(self.free_at).as_secs_f64();
        self.tokens = (self.tokens + idle * bytes_per_s).min(self.burst);
        let size = size as f64;
        let tx = if self.tokens >= size {
            self.tokens -= size;
            Duration::ZERO
        } else {
            let wait = (size - self.tokens) / bytes_per_s;
            self.tokens = 0.0;
            Duration::from_secs_f64(wait)
        };
        self.free_at = start + tx;
        self.rng = self.rng.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let extra = self
            .jitter
            .mul_f64(f64::from(self.rng >> 8) / f64::from(1u32 << 24));
        let at = (self.free_at + self.delay + extra).max(self.last_arrival);
        self.last_arrival = at;
        Some(at)
    }
}

struct Sim {
    bwe: SendSideBwe,
    link: Link,
    t0: Instant,
    now: Instant,
    seq: u16,
    /// (seq, arrival) of packets not yet reported.
    pending: Vec<(u16, Option<Instant>)>,
    next_feedback: Instant,
    wanted: u64,
    /// Bytes the sender put on the wire in the last second (media and padding), by 10 ms slot.
    sent_log: VecDeque<usize>,
    /// Media goes out as 30 frames a second, each a burst.
    frames: bool,
    /// Probe padding is asked for but never goes out.
    no_padding: bool,
}

impl Sim {
    fn new(capacity: u64, wanted: u64) -> Self {
        let t0 = Instant::now();
        let mut bwe = SendSideBwe::new(Config::default());
        bwe.set_wanted(wanted);
        Sim {
            bwe,
            link: Link::new(capacity, t0),
            t0,
            now: t0,
            seq: 0,
            pending: Vec::new(),
            next_feedback: t0 + Duration::from_millis(100),
            wanted,
            sent_log: VecDeque::new(),
            frames: false,
            no_padding: false,
        }
    }

    fn send(&mut self, size: usize) {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.bwe.on_sent(seq, size, self.now);
        let arrival = self.link.send(size, self.now);
        self.pending.push((seq, arrival));
        if let Some(b) = self.sent_log.back_mut() {
            *b += size;
        }
    }

    /// Runs for `d` in 10 ms steps: media at the target (up to what is wanted) in 1200-byte
    /// packets, padding as asked, feedback every 100 ms for what arrived by then.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        let mut credit = 0.0f64;
        while self.now < end {
            self.sent_log.push_back(0);
            if self.sent_log.len() > 100 {
                self.sent_log.pop_front();
            }
            let rate = self.bwe.target().min(self.wanted) as f64;
            credit += rate / 8.0 * 0.01;
            let frame_due =
                !self.frames || (self.now.saturating_duration_since(self.t0).as_millis() % 33) < 10;
            while frame_due && credit >= 1200.0 {
                credit -= 1200.0;
                self.send(1200);
            }
            let mut pad = self.bwe.padding(self.now);
            if self.no_padding {
                pad = 0;
            }
            while pad > 0 {
                self.send(255);
                pad = pad.saturating_sub(255);
            }
            if self.now >= self.next_feedback {
                self.feedback();
                self.next_feedback += Duration::from_millis(100);
            }
            self.now += Duration::from_millis(10);
        }
    }

    fn feedback(&mut self) {
        // Report up to the newest packet that has arrived (later ones are in flight).
        let arrived_by = self.now - self.link.delay;
        let Some(last) = self
            .pending
            .iter()
            .rposition(|(_, a)| a.is_some_and(|a| a <= arrived_by))
        else {
            return;
        };
        let batch: Vec<_> = self.pending.drain(..=last).collect();
        let base_seq = batch[0].0;
        let arrivals = batch
            .iter()
            .map(|(_, a)| {
                a.filter(|&a| a <= arrived_by)
                    .map(|a| a.saturating_duration_since(self.t0).as_micros() as i64 + 5_000_000)
            })
            .collect();
        // The report reaches the sender one propagation delay later; close enough to hand it
        // over now with the clock as it is.
        self.bwe
            .on_feedback(&Feedback { base_seq, arrivals }, self.now);
    }

    fn sent_bps(&self) -> u64 {
        self.sent_log.iter().sum::<usize>() as u64 * 8 * 100 / self.sent_log.len().max(1) as u64
    }
}

#[test]
fn an_open_path_is_found_quickly() {
    let mut s = Sim::new(50_000_000, 2_500_000);
    s.run(Duration::from_secs(3));
    assert!(
        s.bwe.target() >= 2_000_000,
        "target {} after 3 s",
        s.bwe.target()
    );
}

#[test]
fn the_estimate_settles_under_a_bottleneck() {
    for capacity in [250_000u64, 600_000, 2_000_000] {
        let mut s = Sim::new(capacity, 3_000_000);
        s.run(Duration::from_secs(15));
        let mut lo = u64::MAX;
        let mut hi = 0;
        for _ in 0..50 {
            s.run(Duration::from_millis(100));
            lo = lo.min(s.bwe.target());
            hi = hi.max(s.bwe.target());
        }
        assert!(
            lo as f64 >= 0.5 * capacity as f64 && hi as f64 <= 1.3 * capacity as f64,
            "capacity {capacity}: target between {lo} and {hi}"
        );
        assert!(
            s.sent_bps() as f64 <= 1.15 * capacity as f64,
            "capacity {capacity}: sending {}",
            s.sent_bps()
        );
    }
}

/// A token bucket lets a short probe through faster than the link's rate (the first few
/// packets at once): the probe must not be taken for the link's capacity. `tbf` with the
/// smallest burst it takes (two full packets) at 600 kbit/s, as in the network bed.
#[test]
fn a_token_buckets_burst_is_not_taken_for_capacity() {
    for capacity in [600_000u64, 1_000_000] {
        let mut s = Sim::new(capacity, 3_000_000);
        s.link.burst = 3000.0;
        s.run(Duration::from_secs(10));
        let mut hi = 0;
        for _ in 0..200 {
            s.run(Duration::from_millis(100));
            hi = hi.max(s.bwe.target());
        }
        assert!(
            hi as f64 <= 1.2 * capacity as f64,
            "capacity {capacity}: target up to {hi}"
        );
    }
}

#[test]
fn a_capacity_drop_is_followed_within_seconds_and_a_rise_found_again() {
    let mut s = Sim::new(3_000_000, 2_500_000);
    s.run(Duration::from_secs(8));
    assert!(s.bwe.target() >= 2_000_000, "start: {}", s.bwe.target());
    s.link.capacity = 400_000;
    s.run(Duration::from_secs(4));
    assert!(
        s.bwe.target() <= 420_000 && s.sent_bps() <= 440_000,
        "4 s after the drop: target {}, sending {}",
        s.bwe.target(),
        s.sent_bps()
    );
    s.link.capacity = 3_000_000;
    s.run(Duration::from_secs(12));
    assert!(
        s.bwe.target() >= 1_500_000,
        "12 s after the rise: {}",
        s.bwe.target()
    );
}

#[test]
fn random_loss_alone_does_not_collapse_the_rate() {
    let mut s = Sim::new(10_000_000, 2_000_000);
    s.link.loss_permille = 50;
    s.run(Duration::from_secs(15));
    assert!(
        s.bwe.target() >= 1_000_000,
        "target {} at 5 % loss",
        s.bwe.target()
    );
    // The loss seen, over many windows.
    let mut sum = 0.0;
    for _ in 0..50 {
        s.run(Duration::from_millis(200));
        sum += s.bwe.loss();
    }
    assert!((0.03..0.08).contains(&(sum / 50.0)), "loss {}", sum / 50.0);
}

#[test]
fn heavy_loss_brings_the_rate_down() {
    let mut s = Sim::new(10_000_000, 2_000_000);
    s.run(Duration::from_secs(5));
    let before = s.bwe.target();
    s.link.loss_permille = 300;
    s.run(Duration::from_secs(3));
    assert!(s.bwe.target() < before / 2, "{before} → {}", s.bwe.target());
}

#[test]
fn an_estimate_is_measured_only_once_the_path_said_something() {
    // Little media on an open path, no probe sent: live, but only the start rate.
    let mut s = Sim::new(10_000_000, 200_000);
    s.no_padding = true;
    s.run(Duration::from_secs(5));
    assert!(s.bwe.is_live(s.now));
    assert!(!s.bwe.is_measured(), "{}", s.bwe.summary(s.now));
    // A probe that gets through measures it.
    s.no_padding = false;
    s.bwe.set_wanted(2_000_000);
    s.wanted = 2_000_000;
    s.run(Duration::from_secs(5));
    assert!(s.bwe.is_measured(), "{}", s.bwe.summary(s.now));
}

#[test]
fn a_full_link_measures_the_estimate_without_probes() {
    // More media than the link carries: the queue (overuse) or the loss tells.
    let mut s = Sim::new(150_000, 280_000);
    s.no_padding = true;
    s.run(Duration::from_secs(5));
    assert!(s.bwe.is_measured(), "{}", s.bwe.summary(s.now));
}

#[test]
fn without_feedback_the_estimate_is_not_live_and_nothing_is_padded() {
    let mut b = SendSideBwe::new(Config::default());
    b.set_wanted(2_000_000);
    let t = Instant::now();
    for i in 0..100u16 {
        b.on_sent(i, 1000, t + Duration::from_millis(u64::from(i)));
    }
    assert!(!b.is_live(t + Duration::from_millis(100)));
    assert_eq!(b.padding(t + Duration::from_millis(100)), 0);
}

#[test]
fn feedback_across_the_sequence_wrap_is_matched() {
    let mut b = SendSideBwe::new(Config::default());
    let t = Instant::now();
    for (i, seq) in (65_530u16..=65_535).chain(0..10).enumerate() {
        b.on_sent(seq, 1000, t + Duration::from_millis(i as u64 * 10));
    }
    let arrivals = (0..16).map(|i| Some(1_000_000 + i * 10_000)).collect();
    b.on_feedback(
        &Feedback {
            base_seq: 65_530,
            arrivals,
        },
        t + Duration::from_millis(200),
    );
    assert!(b.is_live(t + Duration::from_millis(200)));
    assert_eq!(b.loss(), 0.0);
    assert!(b.rtt().is_some());
}

#[test]
fn bursts_and_jitter_still_find_the_capacity() {
    // Media in frame bursts (30 a second) and up to 8 ms of extra delay per packet (a busy
    // receiver): the estimate still settles near the capacity, and what is sent under it.
    for capacity in [250_000u64, 600_000, 2_000_000] {
        let mut s = Sim::new(capacity, 3_000_000);
        s.frames = true;
        s.link.jitter = Duration::from_millis(8);
        s.run(Duration::from_secs(10));
        let (mut target, mut sent) = (0, 0);
        for _ in 0..100 {
            s.run(Duration::from_millis(100));
            target += s.bwe.target();
            sent += s.sent_bps();
        }
        let (target, sent) = (target / 100, sent / 100);
        assert!(
            target * 10 >= capacity * 8 && sent * 100 <= capacity * 105,
            "capacity {capacity}: mean target {target}, sent {sent}"
        );
    }
}
