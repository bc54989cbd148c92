//! Signals to measure the audio processing with, and the measures: speech rendered by
//! espeak-ng (Debian's `espeak-ng`; run as a program, its WAV read back), fan-like and
//! keyboard-like noise from a seeded generator, an echo path (delay and attenuation), and
//! the figures the tests and `apm-bench` print — echo return loss enhancement, signal to
//! noise ratio, speech level.
//!
//! All signals are 48 kHz mono i16, as the engine's microphone delivers.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::media::SAMPLE_RATE;
use crate::resample::Resampler;

/// Why a signal could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("espeak-ng could not run (install Debian's espeak-ng): {0}")]
    Espeak(String),
    #[error("the rendered speech is not readable: {0}")]
    Wav(String),
}

/// Text spoken by espeak-ng with `voice` (e.g. `en-us`, `en-gb+f3`), resampled to 48 kHz.
pub fn speech(text: &str, voice: &str) -> Result<Vec<i16>, SignalError> {
    let dir = std::env::temp_dir().join(format!("convo-speech-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| SignalError::Espeak(e.to_string()))?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let file = dir.join(format!("{}.wav", NEXT.fetch_add(1, Ordering::Relaxed)));
    let out = Command::new("espeak-ng")
        .args(["-v", voice, "-s", "150", "-w"])
        .arg(&file)
        .arg(text)
        .output()
        .map_err(|e| SignalError::Espeak(e.to_string()))?;
    if !out.status.success() {
        return Err(SignalError::Espeak(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    let pcm = read_wav(&file);
    let _ = std::fs::remove_file(&file);
    pcm
}

/// A mono 16-bit WAV file at any rate, as 48 kHz samples.
pub fn read_wav(path: &Path) -> Result<Vec<i16>, SignalError> {
    let mut reader = hound::WavReader::open(path).map_err(|e| SignalError::Wav(e.to_string()))?;
    let spec = reader.spec();
    if spec.bits_per_sample != 16 || spec.channels != 1 {
        return Err(SignalError::Wav(format!("{spec:?}: want 16-bit mono")));
    }
    let samples: Vec<f32> = reader
        .samples::<i16>()
        .map(|s| s.map(|s| f32::from(s) / 32768.0))
        .collect::<Result<_, _>>()
        .map_err(|e| SignalError::Wav(e.to_string()))?;
    let mut out =
        Vec::with_capacity(samples.len() * SAMPLE_RATE as usize / spec.sample_rate as usize + 1);
    Resampler::new(spec.sample_rate, SAMPLE_RATE).run(&samples, &mut out);
    Ok(out
        .iter()
        .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16)
        .collect())
}

/// A small seeded generator (xorshift), so that noise is the same on every run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Fan-like noise: low-passed noise with a hum at 100 Hz and its harmonics, plus keyboard-like
/// clicks (a few milliseconds of decaying noise, a few a second); `n` samples at unit RMS
/// scale (scale it with [`scale_to_dbfs`]).
pub fn fan_and_keys(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let (mut lp1, mut lp2) = (0.0f32, 0.0f32);
    let mut click_left = 0usize;
    let mut next_click = 4000usize;
    (0..n)
        .map(|i| {
            let w = rng.uniform();
            lp1 += 0.15 * (w - lp1);
            lp2 += 0.15 * (lp1 - lp2);
            let t = i as f32 / SAMPLE_RATE as f32;
            let hum = 0.3 * (std::f32::consts::TAU * 100.0 * t).sin()
                + 0.15 * (std::f32::consts::TAU * 200.0 * t).sin();
            if i == next_click {
                click_left = 240;
                next_click = i + 6000 + (rng.uniform().abs() * 12_000.0) as usize;
            }
            let click = if click_left > 0 {
                click_left -= 1;
                rng.uniform() * 3.0 * (click_left as f32 / 240.0).powi(2)
            } else {
                0.0
            };
            3.0 * lp2 + hum + click
        })
        .collect()
}

/// RMS of samples (i16 scale).
pub fn rms(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    (pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt()
}

/// A level in dBFS of an RMS on the i16 scale.
pub fn dbfs(rms: f64) -> f64 {
    20.0 * (rms.max(1e-3) / 32768.0).log10()
}

/// The 10 ms frames of `clean` that hold speech: within 30 dB of its loudest frame.
pub fn speech_frames(clean: &[i16]) -> Vec<bool> {
    let levels: Vec<f64> = clean.chunks(480).map(rms).collect();
    let loudest = levels.iter().copied().fold(0.0, f64::max);
    levels.iter().map(|l| *l > loudest * 0.0316).collect()
}

/// RMS over the frames `mask` selects (10 ms frames).
pub fn masked_rms(pcm: &[i16], mask: &[bool]) -> f64 {
    let (sum, n) =
        pcm.chunks(480)
            .zip(mask)
            .filter(|(_, m)| **m)
            .fold((0.0, 0usize), |(s, n), (c, _)| {
                (
                    s + c.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>(),
                    n + c.len(),
                )
            });
    if n == 0 { 0.0 } else { (sum / n as f64).sqrt() }
}

/// Scales `signal` (any scale) so that its RMS over `mask`'s frames (all when empty) is
/// `dbfs`.
pub fn scale_to_dbfs(signal: &[f32], mask: &[bool], dbfs: f64) -> Vec<f32> {
    let (sum, n) = signal
        .chunks(480)
        .enumerate()
        .filter(|(i, _)| mask.is_empty() || mask.get(*i).copied().unwrap_or(false))
        .fold((0.0f64, 0usize), |(s, n), (_, c)| {
            (
                s + c.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>(),
                n + c.len(),
            )
        });
    let now = (sum / n.max(1) as f64).sqrt().max(1e-9);
    let want = 10f64.powf(dbfs / 20.0);
    let g = (want / now) as f32;
    signal.iter().map(|s| s * g).collect()
}

pub fn to_f32(pcm: &[i16]) -> Vec<f32> {
    pcm.iter().map(|s| f32::from(*s) / 32768.0).collect()
}

pub fn to_i16(signal: &[f32]) -> Vec<i16> {
    signal
        .iter()
        .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16)
        .collect()
}

/// What a microphone picks up of a speaker playing `far`: `delay_ms` later, `gain_db` quieter.
pub fn echo_of(far: &[i16], delay_ms: u32, gain_db: f64) -> Vec<i16> {
    let delay = (delay_ms * SAMPLE_RATE / 1000) as usize;
    let g = 10f64.powf(gain_db / 20.0);
    (0..far.len())
        .map(|i| {
            i.checked_sub(delay)
                .map_or(0, |a| (f64::from(far[a]) * g) as i16)
        })
        .collect()
}

/// Sample-wise sum, clipped.
pub fn mix(a: &[i16], b: &[i16]) -> Vec<i16> {
    (0..a.len().max(b.len()))
        .map(|i| {
            let s = i32::from(a.get(i).copied().unwrap_or(0))
                + i32::from(b.get(i).copied().unwrap_or(0));
            s.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
        })
        .collect()
}

/// Repeats `pcm` (with `gap_ms` of silence between) until it is `n` samples long.
pub fn repeat_to(pcm: &[i16], gap_ms: u32, n: usize) -> Vec<i16> {
    let gap = vec![0i16; (gap_ms * SAMPLE_RATE / 1000) as usize];
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.extend_from_slice(pcm);
        out.extend_from_slice(&gap);
    }
    out.truncate(n);
    out
}

/// The share of `reference`'s energy that is in `out` (the least-squares gain of `out` on
/// `reference`, squared, at the best alignment up to 10 ms late: the module's band filters
/// delay what it processes by a few milliseconds): 1.0 when `out` holds all of it,
/// whatever else it holds.
pub fn energy_kept(reference: &[i16], out: &[i16]) -> f64 {
    (0..480)
        .map(|lag| energy_kept_at(reference, out.get(lag..).unwrap_or(&[])))
        .fold(0.0, f64::max)
}

/// [`energy_kept`] at one alignment.
fn energy_kept_at(reference: &[i16], out: &[i16]) -> f64 {
    let (dot, rr) = reference
        .iter()
        .zip(out)
        .fold((0.0f64, 0.0f64), |(d, r), (a, b)| {
            (d + f64::from(*a) * f64::from(*b), r + f64::from(*a).powi(2))
        });
    if rr == 0.0 { 0.0 } else { (dot / rr).powi(2) }
}

/// Signal to noise ratio (dB) of `pcm` given which 10 ms frames hold speech, from frame
/// `skip` on: the power of the speech frames less that of the others, over that of the others.
pub fn snr_db(pcm: &[i16], speech: &[bool], skip: usize) -> f64 {
    let speech_mask: Vec<bool> = speech
        .iter()
        .enumerate()
        .map(|(i, s)| *s && i >= skip)
        .collect();
    let noise_mask: Vec<bool> = speech
        .iter()
        .enumerate()
        .map(|(i, s)| !s && i >= skip)
        .collect();
    let p_all = masked_rms(pcm, &speech_mask).powi(2);
    let p_noise = masked_rms(pcm, &noise_mask).powi(2).max(1e-6);
    10.0 * ((p_all - p_noise).max(1e-6) / p_noise).log10()
}

/// A microphone that hears a recording, over and over, at the pace of a sound card (each
/// 20 ms frame handed over at its end).
#[derive(Debug)]
pub struct PlaybackMic {
    pcm: Vec<i16>,
    at: usize,
    opened: std::time::Instant,
    frames: u32,
}

impl PlaybackMic {
    pub fn new(pcm: Vec<i16>) -> Self {
        PlaybackMic {
            pcm,
            at: 0,
            opened: std::time::Instant::now(),
            frames: 0,
        }
    }
}

impl crate::media::AudioSource for PlaybackMic {
    fn read(&mut self) -> Result<Vec<i16>, crate::media::MediaError> {
        use crate::media::AUDIO_FRAME;
        let frame = std::time::Duration::from_millis(20);
        self.frames += 1;
        let due = self.opened + frame * self.frames;
        if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
        if self.pcm.is_empty() {
            return Ok(vec![0; AUDIO_FRAME]);
        }
        let out = (0..AUDIO_FRAME)
            .map(|i| self.pcm[(self.at + i) % self.pcm.len()])
            .collect();
        self.at = (self.at + AUDIO_FRAME) % self.pcm.len();
        Ok(out)
    }
}
