//! Sample-rate conversion between a device's (or a file's) rate and the engine's 48 kHz.

/// Converts between the device's rate and 48 kHz by linear interpolation, keeping the phase
/// across calls.
#[derive(Debug)]
pub struct Resampler {
    step: f64,
    pos: f64,
    last: f32,
}

impl Resampler {
    pub fn new(from: u32, to: u32) -> Self {
        Resampler {
            step: f64::from(from) / f64::from(to),
            pos: 0.0,
            last: 0.0,
        }
    }

    pub fn run(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if (self.step - 1.0).abs() < f64::EPSILON {
            out.extend_from_slice(input);
            return;
        }
        // Positions are relative to `last` (index -1) and the input (0..n).
        while self.pos < input.len() as f64 {
            let i = self.pos.floor();
            let frac = (self.pos - i) as f32;
            let a = if i < 1.0 {
                self.last
            } else {
                input[i as usize - 1]
            };
            let b = input[i as usize];
            out.push(a + (b - a) * frac);
            self.pos += self.step;
        }
        self.pos -= input.len() as f64;
        if let Some(l) = input.last() {
            self.last = *l;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_keeps_pitch_and_length() {
        // 44.1 kHz 441 Hz tone to 48 kHz: still 441 Hz, 48000 samples per second.
        let input: Vec<f32> = (0..44_100)
            .map(|i| (i as f32 / 44_100.0 * 441.0 * std::f32::consts::TAU).sin())
            .collect();
        let mut r = Resampler::new(44_100, 48_000);
        let mut out = Vec::new();
        for chunk in input.chunks(441) {
            r.run(chunk, &mut out);
        }
        assert!((out.len() as i64 - 48_000).abs() <= 2, "{}", out.len());
        let pcm: Vec<i16> = out.iter().map(|s| (s * 12_000.0) as i16).collect();
        assert!(crate::synth::tone_share(&pcm[..9600], 441.0) > 0.9);
    }
}
