//! Failed-attempt throttling as a plain state machine: the caller passes the clock.
//!
//! Each key (an account, a client address, a room password target) may fail `max` times
//! within `window`; after that, attempts are refused until the oldest failure leaves the window.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Keys kept at most; beyond it the stalest keys are dropped first.
const MAX_KEYS: usize = 100_000;

#[derive(Debug)]
pub struct Throttle {
    max: u32,
    window: Duration,
    failures: HashMap<String, VecDeque<Instant>>,
}

impl Throttle {
    pub fn new(max: u32, window: Duration) -> Self {
        Throttle {
            max: max.max(1),
            window,
            failures: HashMap::new(),
        }
    }

    /// `Err(retry_after)` while `key` has used up its failures.
    pub fn check(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        let window = self.window;
        let Some(q) = self.failures.get_mut(key) else {
            return Ok(());
        };
        while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
            q.pop_front();
        }
        if q.is_empty() {
            self.failures.remove(key);
            return Ok(());
        }
        if q.len() >= self.max as usize {
            let oldest = q.front().copied().unwrap_or(now);
            return Err(window.saturating_sub(now.duration_since(oldest)));
        }
        Ok(())
    }

    /// Records one failure for `key`.
    pub fn fail(&mut self, key: &str, now: Instant) {
        if self.failures.len() >= MAX_KEYS && !self.failures.contains_key(key) {
            self.prune(now);
        }
        let q = self.failures.entry(key.to_string()).or_default();
        q.push_back(now);
        while q.len() > self.max as usize {
            q.pop_front();
        }
    }

    /// Counts one attempt for `key` before it is verified: refused (`Err(retry_after)`) while
    /// `key` has used up its attempts, else recorded as a failure at once, so that guesses
    /// made in parallel cannot all pass the check while the first is still being verified. A
    /// success then takes it back with [`Throttle::clear`] or [`Throttle::forgive`].
    pub fn attempt(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        self.check(key, now)?;
        self.fail(key, now);
        Ok(())
    }

    /// Takes back the latest attempt recorded for `key` (it succeeded), keeping the others.
    pub fn forgive(&mut self, key: &str) {
        if let Some(q) = self.failures.get_mut(key) {
            q.pop_back();
            if q.is_empty() {
                self.failures.remove(key);
            }
        }
    }

    /// Forgets `key`'s failures (after a success).
    pub fn clear(&mut self, key: &str) {
        self.failures.remove(key);
    }

    fn prune(&mut self, now: Instant) {
        let window = self.window;
        self.failures
            .retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        if self.failures.len() >= MAX_KEYS {
            // Still full of live keys: drop the ones whose last failure is oldest.
            let mut by_age: Vec<(Instant, String)> = self
                .failures
                .iter()
                .filter_map(|(k, q)| q.back().map(|t| (*t, k.clone())))
                .collect();
            by_age.sort();
            for (_, k) in by_age.into_iter().take(MAX_KEYS / 10) {
                self.failures.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_until_window_passes() {
        let t0 = Instant::now();
        let mut th = Throttle::new(3, Duration::from_secs(60));
        for i in 0..3 {
            assert!(th.check("a", t0 + Duration::from_secs(i)).is_ok());
            th.fail("a", t0 + Duration::from_secs(i));
        }
        let retry = th
            .check("a", t0 + Duration::from_secs(10))
            .expect_err("blocked");
        assert_eq!(retry, Duration::from_secs(50));
        // Other keys are unaffected.
        assert!(th.check("b", t0).is_ok());
        // Once the first failure ages out, one more attempt is allowed.
        assert!(th.check("a", t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn success_clears() {
        let t0 = Instant::now();
        let mut th = Throttle::new(2, Duration::from_secs(60));
        th.fail("a", t0);
        th.fail("a", t0);
        assert!(th.check("a", t0).is_err());
        th.clear("a");
        assert!(th.check("a", t0).is_ok());
    }

    #[test]
    fn attempts_count_before_they_are_verified() {
        let t0 = Instant::now();
        let mut th = Throttle::new(3, Duration::from_secs(60));
        // Ten guesses arrive together: only three get past the throttle, whatever their result.
        let admitted = (0..10).filter(|_| th.attempt("a", t0).is_ok()).count();
        assert_eq!(admitted, 3);
        // A success takes its own attempt back and no other.
        th.forgive("a");
        assert!(th.attempt("a", t0).is_ok());
        assert!(th.attempt("a", t0).is_err());
        th.forgive("b");
        assert!(th.attempt("b", t0).is_ok());
        th.forgive("b");
        assert!(!th.failures.contains_key("b"));
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut th = Throttle::new(2, Duration::from_secs(1));
        for i in 0..(MAX_KEYS + 10) {
            th.fail(&format!("k{i}"), t0 + Duration::from_millis(i as u64));
        }
        assert!(th.failures.len() <= MAX_KEYS);
    }
}
