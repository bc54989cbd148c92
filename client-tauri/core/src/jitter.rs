//! The receive side's jitter buffer: RTP packets in, the same packets out in sequence order,
//! with gaps declared lost once the packet after them has waited long enough for the missing
//! one (a NACK retransmission or a late arrival). Sans-IO: the caller supplies the time, so
//! the behaviour is tested without sleeping.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What the buffer releases, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Released<T> {
    /// The next packet in sequence.
    Packet(T),
    /// This many packets before the next one never came.
    Lost(u64),
}

/// Counters for the report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets that arrived out of order and were put back in order.
    pub reordered: u64,
    /// Packets given up on.
    pub lost: u64,
    /// Packets that came after their place was given up (or twice), and were dropped.
    pub late_or_duplicate: u64,
}

impl JitterStats {
    /// Both counts added (a track's receivers before and after a reconnection).
    pub fn plus(self, other: JitterStats) -> JitterStats {
        JitterStats {
            reordered: self.reordered + other.reordered,
            lost: self.lost + other.lost,
            late_or_duplicate: self.late_or_duplicate + other.late_or_duplicate,
        }
    }
}

/// Reorders by extended sequence number; waits at most `max_wait` for a missing packet.
#[derive(Debug)]
pub struct JitterBuffer<T> {
    max_wait: Duration,
    capacity: usize,
    /// Extended sequence number → (arrival, packet).
    held: BTreeMap<u64, (Instant, T)>,
    /// The extended sequence number to release next.
    next: Option<u64>,
    highest: Option<u64>,
    pub stats: JitterStats,
}

impl<T> JitterBuffer<T> {
    pub fn new(max_wait: Duration, capacity: usize) -> Self {
        JitterBuffer {
            max_wait,
            capacity: capacity.max(1),
            held: BTreeMap::new(),
            next: None,
            highest: None,
            stats: JitterStats::default(),
        }
    }

    /// The 16-bit sequence number extended past wraps, relative to the highest seen.
    fn extend(&self, seq: u16) -> u64 {
        let Some(high) = self.highest else {
            // Start well away from zero so that a slightly older packet still extends.
            return (1 << 32) + u64::from(seq);
        };
        let cycle = high & !0xFFFF;
        let candidates = [
            cycle.wrapping_sub(1 << 16) | u64::from(seq),
            cycle | u64::from(seq),
            (cycle + (1 << 16)) | u64::from(seq),
        ];
        candidates
            .into_iter()
            .min_by_key(|c| c.abs_diff(high))
            .unwrap_or(cycle | u64::from(seq))
    }

    /// A packet arrived.
    pub fn push(&mut self, seq: u16, now: Instant, packet: T) {
        let ext = self.extend(seq);
        if self.next.is_some_and(|n| ext < n) || self.held.contains_key(&ext) {
            self.stats.late_or_duplicate += 1;
            return;
        }
        if self.highest.is_some_and(|h| ext < h) {
            self.stats.reordered += 1;
        }
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        if self.next.is_none() {
            self.next = Some(ext);
        }
        self.held.insert(ext, (now, packet));
    }

    /// The next thing to hand on, if any is due at `now`.
    pub fn pop(&mut self, now: Instant) -> Option<Released<T>> {
        let next = self.next?;
        let (&first, &(arrived, _)) = self.held.iter().next()?;
        if first == next {
            let (_, packet) = self.held.remove(&first)?;
            self.next = Some(next + 1);
            return Some(Released::Packet(packet));
        }
        // A gap before `first`: give up on it when `first` has waited long enough, or when
        // too much is held.
        if now.duration_since(arrived) >= self.max_wait || self.held.len() > self.capacity {
            let missing = first - next;
            self.stats.lost += missing;
            self.next = Some(first);
            return Some(Released::Lost(missing));
        }
        None
    }

    /// When `pop` may next have something, if a gap is being waited on.
    pub fn deadline(&self) -> Option<Instant> {
        let next = self.next?;
        let (&first, &(arrived, _)) = self.held.iter().next()?;
        (first != next).then(|| arrived + self.max_wait)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(jb: &mut JitterBuffer<u16>, now: Instant) -> Vec<Released<u16>> {
        std::iter::from_fn(|| jb.pop(now)).collect()
    }

    #[test]
    fn in_order_packets_pass_at_once() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(50), 64);
        for s in 10..15 {
            jb.push(s, t, s);
        }
        let out = drain(&mut jb, t);
        assert_eq!(out, (10..15).map(Released::Packet).collect::<Vec<_>>());
        assert!(jb.is_empty());
        assert_eq!(jb.stats, JitterStats::default());
    }

    #[test]
    fn reordered_packets_come_out_in_order() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(50), 64);
        jb.push(1, t, 1);
        jb.push(3, t, 3);
        jb.push(4, t, 4);
        // 2 is missing: 1 goes, 3 and 4 wait.
        assert_eq!(drain(&mut jb, t), vec![Released::Packet(1)]);
        assert_eq!(jb.deadline(), Some(t + Duration::from_millis(50)));
        jb.push(2, t + Duration::from_millis(10), 2);
        assert_eq!(
            drain(&mut jb, t + Duration::from_millis(10)),
            vec![
                Released::Packet(2),
                Released::Packet(3),
                Released::Packet(4)
            ]
        );
        assert_eq!(jb.stats.reordered, 1);
        assert_eq!(jb.stats.lost, 0);
    }

    #[test]
    fn a_gap_is_given_up_after_the_wait() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(50), 64);
        jb.push(100, t, 100);
        assert_eq!(jb.pop(t), Some(Released::Packet(100)));
        jb.push(103, t, 103);
        assert_eq!(jb.pop(t + Duration::from_millis(49)), None);
        assert_eq!(
            drain(&mut jb, t + Duration::from_millis(50)),
            vec![Released::Lost(2), Released::Packet(103)]
        );
        // The lost ones turning up later are dropped, not replayed out of order.
        jb.push(101, t + Duration::from_millis(60), 101);
        assert_eq!(jb.pop(t + Duration::from_millis(60)), None);
        assert_eq!(jb.stats.lost, 2);
        assert_eq!(jb.stats.late_or_duplicate, 1);
    }

    #[test]
    fn duplicates_are_dropped() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(50), 64);
        jb.push(7, t, 7);
        jb.push(7, t, 7);
        assert_eq!(drain(&mut jb, t), vec![Released::Packet(7)]);
        jb.push(7, t, 7);
        assert!(drain(&mut jb, t).is_empty());
        assert_eq!(jb.stats.late_or_duplicate, 2);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(50), 64);
        for s in [65_533u16, 65_535, 0, 65_534, 1] {
            jb.push(s, t, s);
        }
        assert_eq!(
            drain(&mut jb, t),
            [65_533u16, 65_534, 65_535, 0, 1]
                .into_iter()
                .map(Released::Packet)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_full_buffer_stops_waiting() {
        let t = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_secs(10), 4);
        jb.push(0, t, 0);
        assert_eq!(jb.pop(t), Some(Released::Packet(0)));
        for s in 2..8 {
            jb.push(s, t, s);
        }
        let out = drain(&mut jb, t);
        assert_eq!(out[0], Released::Lost(1));
        assert_eq!(out.len(), 7);
    }
}
