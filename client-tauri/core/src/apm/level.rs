//! The slow half of gain control: the module's gain control compresses and limits, but brings
//! a quiet voice up by only ~12 dB (-40 dBFS speech leaves it at -28). This stage measures the
//! level of the frames the module says hold a voice and moves a gain, slowly, so that speech
//! sits at [`SPEECH_TARGET_DBFS`] — up to +30 dB, down to -10 dB — and limits peaks. Noise
//! between words does not move it. Sans IO: 10 ms frames in, with the module's verdict.

use super::{APM_FRAME, SPEECH_TARGET_DBFS};

/// The most the stage lifts (dB) and lowers.
const MAX_GAIN_DB: f64 = 30.0;
const MIN_GAIN_DB: f64 = -10.0;
/// How fast the measured level follows voiced frames (share per 10 ms frame: ~0.5 s).
const LEVEL_FOLLOW: f64 = 0.02;
/// How fast the gain moves toward where it should be (dB per 10 ms frame: 10 dB/s).
const SLEW_DB: f64 = 0.1;
/// Peaks are held under this (i16 scale, about -1 dBFS).
const PEAK: f64 = 29_000.0;

#[derive(Debug, Clone, Default)]
pub struct LevelControl {
    /// Mean power of voiced frames (i16 scale, squared).
    power: Option<f64>,
    gain_db: f64,
}

impl LevelControl {
    /// The gain applied now (dB).
    #[cfg(test)]
    pub fn gain_db(&self) -> f64 {
        self.gain_db
    }

    /// One 10 ms frame, in place; `voice`: whether it holds speech.
    pub fn process(&mut self, frame: &mut [i16], voice: bool) {
        debug_assert_eq!(frame.len(), APM_FRAME);
        if voice {
            let p = frame.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / frame.len() as f64;
            self.power = Some(self.power.map_or(p, |m| m + LEVEL_FOLLOW * (p - m)));
        }
        let want = self.power.map_or(0.0, |p| {
            let level = 10.0 * (p.max(1.0) / (32768.0f64 * 32768.0)).log10();
            (SPEECH_TARGET_DBFS - level).clamp(MIN_GAIN_DB, MAX_GAIN_DB)
        });
        let from = self.gain_db;
        let to = from + (want - from).clamp(-SLEW_DB, SLEW_DB);
        self.gain_db = to;
        let n = frame.len() as f64;
        for (i, s) in frame.iter_mut().enumerate() {
            let g = 10f64.powf((from + (to - from) * (i as f64 / n)) / 20.0);
            let x = f64::from(*s) * g;
            // Soft above the peak: the excess is squeezed, never wrapped.
            let y = if x.abs() > PEAK {
                x.signum()
                    * (PEAK + (32_767.0 - PEAK) * ((x.abs() - PEAK) / (32_767.0 - PEAK)).tanh())
            } else {
                x
            };
            *s = y.round().clamp(-32_768.0, 32_767.0) as i16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::tone;

    fn level_of(pcm: &[i16]) -> f64 {
        let p = pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / pcm.len() as f64;
        10.0 * (p / (32768.0f64 * 32768.0)).log10()
    }

    #[test]
    fn a_quiet_voice_is_lifted_to_the_target_and_silence_is_left_alone() {
        let mut lc = LevelControl::default();
        // A tone at -40 dBFS RMS, "voiced", for 5 s.
        let amp = 10f64.powf(-40.0 / 20.0) * 32768.0 * std::f64::consts::SQRT_2;
        let mut last = Vec::new();
        for f in 0..500u64 {
            let mut frame: Vec<i16> = tone(440.0, f * 480, 480)
                .iter()
                .map(|s| (f64::from(*s) / 12_000.0 * amp) as i16)
                .collect();
            lc.process(&mut frame, true);
            last = frame;
        }
        assert!(
            (level_of(&last) - SPEECH_TARGET_DBFS).abs() < 1.0,
            "{}",
            level_of(&last)
        );
        // Unvoiced frames do not move the gain.
        let g = lc.gain_db();
        for _ in 0..100 {
            lc.process(&mut [3; 480], false);
        }
        assert!((lc.gain_db() - g).abs() < 1e-9);
    }

    #[test]
    fn loud_peaks_are_limited_not_wrapped() {
        let mut lc = LevelControl {
            power: Some(1e3),
            gain_db: 30.0,
        };
        let mut frame = [20_000i16; 480];
        lc.process(&mut frame, false);
        assert!(frame.iter().all(|s| *s > 28_000), "{:?}", &frame[..4]);
    }
}
