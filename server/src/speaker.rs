//! Active-speaker detection from RFC 6464 audio levels, as a state machine fed with
//! (participant, level, time) and answering only when the active speaker changes.
//!
//! Levels are −dBov, 0 (loudest) to 127 (silence). Each participant's loudness is averaged
//! over [`WINDOW`]; someone counts as speaking above [`SPEAKING_LEVEL`]. The loudest speaker
//! takes over only when clearly louder ([`MARGIN_DB`]) or when the current one has fallen
//! silent, and never within [`MIN_HOLD`] of the last change: no flapping between two voices.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_millis(600);
/// −50 dBov: quieter than this is background.
pub const SPEAKING_LEVEL: u8 = 50;
pub const MARGIN_DB: f64 = 6.0;
pub const MIN_HOLD: Duration = Duration::from_millis(1000);

#[derive(Debug, Default)]
pub struct SpeakerDetector {
    levels: HashMap<String, VecDeque<(Instant, u8)>>,
    current: Option<String>,
    changed_at: Option<Instant>,
}

impl SpeakerDetector {
    /// Average loudness (127 − level, so higher is louder) over the window, if any samples.
    fn loudness(&self, pid: &str, now: Instant) -> Option<f64> {
        let q = self.levels.get(pid)?;
        let recent: Vec<u8> = q
            .iter()
            .filter(|(t, _)| now.duration_since(*t) < WINDOW)
            .map(|(_, l)| *l)
            .collect();
        if recent.is_empty() {
            return None;
        }
        Some(recent.iter().map(|l| 127.0 - f64::from(*l)).sum::<f64>() / recent.len() as f64)
    }

    fn speaking(&self, pid: &str, now: Instant) -> Option<f64> {
        self.loudness(pid, now)
            .filter(|l| *l >= 127.0 - f64::from(SPEAKING_LEVEL))
    }

    /// Records a level; returns the new active speaker when it changes.
    pub fn observe(&mut self, pid: &str, level: u8, now: Instant) -> Option<String> {
        let q = self.levels.entry(pid.to_string()).or_default();
        q.push_back((now, level.min(127)));
        while q
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= WINDOW)
        {
            q.pop_front();
        }
        if self
            .changed_at
            .is_some_and(|t| now.duration_since(t) < MIN_HOLD)
        {
            return None;
        }
        let (best, best_loudness) = self
            .levels
            .keys()
            .filter_map(|p| self.speaking(p, now).map(|l| (p.clone(), l)))
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        if self.current.as_deref() == Some(best.as_str()) {
            return None;
        }
        let current_loudness = self.current.as_deref().and_then(|c| self.speaking(c, now));
        let takes_over = match current_loudness {
            None => true,
            Some(cur) => best_loudness - cur >= MARGIN_DB,
        };
        if !takes_over {
            return None;
        }
        self.current = Some(best.clone());
        self.changed_at = Some(now);
        Some(best)
    }

    /// Forgets a participant who left; if they were the speaker, nobody is until someone speaks.
    pub fn remove(&mut self, pid: &str) {
        self.levels.remove(pid);
        if self.current.as_deref() == Some(pid) {
            self.current = None;
            self.changed_at = None;
        }
    }

    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pid` at `level` every 20 ms for `ms`, from `t`; returns changes.
    fn feed(d: &mut SpeakerDetector, t: &mut Instant, who: &[(&str, u8)], ms: u64) -> Vec<String> {
        let mut changes = Vec::new();
        for _ in 0..ms / 20 {
            *t += Duration::from_millis(20);
            for (p, l) in who {
                changes.extend(d.observe(p, *l, *t));
            }
        }
        changes
    }

    #[test]
    fn loudest_speaker_wins_once() {
        let mut d = SpeakerDetector::default();
        let mut t = Instant::now();
        let changes = feed(&mut d, &mut t, &[("a", 10), ("b", 120)], 2000);
        assert_eq!(
            changes,
            vec!["a".to_string()],
            "announced once, not per packet"
        );
        assert_eq!(d.current(), Some("a"));
    }

    #[test]
    fn silence_announces_nobody() {
        let mut d = SpeakerDetector::default();
        let mut t = Instant::now();
        assert!(feed(&mut d, &mut t, &[("a", 100), ("b", 127)], 2000).is_empty());
    }

    #[test]
    fn close_voices_do_not_flap() {
        let mut d = SpeakerDetector::default();
        let mut t = Instant::now();
        feed(&mut d, &mut t, &[("a", 20)], 1500);
        // b is only slightly louder than a: a stays.
        let changes = feed(&mut d, &mut t, &[("a", 20), ("b", 17)], 3000);
        assert!(changes.is_empty(), "{changes:?}");
        // b clearly louder: b takes over, once.
        let changes = feed(&mut d, &mut t, &[("a", 30), ("b", 10)], 3000);
        assert_eq!(changes, vec!["b".to_string()]);
    }

    #[test]
    fn a_silent_speaker_hands_over_and_leaving_clears() {
        let mut d = SpeakerDetector::default();
        let mut t = Instant::now();
        feed(&mut d, &mut t, &[("a", 10)], 1500);
        let changes = feed(&mut d, &mut t, &[("a", 127), ("b", 40)], 2000);
        assert_eq!(changes, vec!["b".to_string()]);
        d.remove("b");
        assert_eq!(d.current(), None);
    }
}
