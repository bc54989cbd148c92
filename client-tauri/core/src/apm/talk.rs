//! "You are muted but talking": from the processor's voice verdicts on the microphone's
//! 20 ms frames while muted. Talking starts when at least 15 of the last 50 frames (a
//! second) held a voice, and ends when at most 2 of them did — a cough does not raise it, a
//! pause between words does not drop it. Unmuting ends it at once. Sans IO.

/// Frames looked back over.
const WINDOW: u32 = 50;
const START: u32 = 15;
const END: u32 = 2;

#[derive(Debug, Clone, Default)]
pub struct TalkWatch {
    /// The last `WINDOW` verdicts, newest in bit 0.
    history: u64,
    talking: bool,
}

impl TalkWatch {
    /// One frame's verdict; returns the new state when it changed.
    pub fn feed(&mut self, voice: bool, muted: bool) -> Option<bool> {
        let mask = (1u64 << WINDOW) - 1;
        self.history = ((self.history << 1) | u64::from(voice && muted)) & mask;
        let voiced = self.history.count_ones();
        let now = if !muted {
            self.history = 0;
            false
        } else if self.talking {
            voiced > END
        } else {
            voiced >= START
        };
        (now != self.talking).then(|| {
            self.talking = now;
            now
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn talking_while_muted_is_raised_held_through_pauses_and_dropped() {
        let mut w = TalkWatch::default();
        // A short cough (5 frames) raises nothing.
        assert!((0..5).all(|_| w.feed(true, true).is_none()));
        assert!((0..60).all(|_| w.feed(false, true).is_none()));
        // Speech: raised on the 15th voiced frame.
        let raised: Vec<usize> = (0..30).filter(|_| w.feed(true, true).is_some()).collect();
        assert_eq!(raised.len(), 1);
        // A pause of 10 frames between words keeps it.
        assert!((0..10).all(|_| w.feed(false, true).is_none()));
        assert!((0..10).all(|_| w.feed(true, true).is_none()));
        // Silence ends it within a second.
        let dropped = (0..50).position(|_| w.feed(false, true) == Some(false));
        assert!(dropped.is_some());
        // Unmuted: never talking-while-muted, and unmuting ends it at once.
        assert!((0..50).all(|_| w.feed(true, false).is_none()));
        for _ in 0..20 {
            w.feed(true, true);
        }
        assert_eq!(w.feed(true, false), Some(false));
    }
}
