//! Sound a person can live with: echo cancellation, noise suppression and automatic gain
//! control on the microphone's frames before Opus, and voice activity for "you are muted but
//! talking" — WebRTC's audio-processing module (PulseAudio's packaging of it, through the
//! `webrtc-audio-processing` binding).
//!
//! The far-end reference for the echo canceller is what the speaker plays: the [`Mixer`]
//! hands every block it mixes to an [`EchoReference`] (whichever device plays the mix, so
//! the reference follows a speaker switch), and the microphone's frames pass through
//! [`ProcessedMic`]. The canceller runs delay-agnostic with the extended filter: it finds the
//! echo path's delay itself (sound servers add tens of milliseconds) and follows it as it
//! drifts, as it does when microphone and speaker are different devices with clocks of their
//! own.
//!
//! [`Mixer`]: crate::mixer::Mixer

mod level;
pub mod signals;
pub mod talk;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use webrtc_audio_processing as wap;

use crate::media::{AUDIO_FRAME, AudioSource, MediaError};

/// Samples in the module's unit of work: 10 ms at 48 kHz.
pub const APM_FRAME: usize = wap::NUM_SAMPLES_PER_FRAME as usize;

/// Where the gain control brings speech: the level (dBFS, an envelope near the peaks) it aims
/// for, as the module takes it (3 is -3 dBFS).
pub const AGC_TARGET_DBFS: i32 = 3;

/// What that makes of speech: the RMS level (dBFS) of a voice's speech frames once the gain
/// control has settled, whatever level it was captured at.
pub const SPEECH_TARGET_DBFS: f64 = -18.0;

/// Which processing runs on the microphone. Voice activity is always detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AudioProcessing {
    pub echo_cancellation: bool,
    pub noise_suppression: bool,
    pub gain_control: bool,
}

impl Default for AudioProcessing {
    /// Everything on, as people expect of a call.
    fn default() -> Self {
        AudioProcessing {
            echo_cancellation: true,
            noise_suppression: true,
            gain_control: true,
        }
    }
}

impl AudioProcessing {
    /// Nothing but voice activity: the microphone's samples go out as captured.
    pub const OFF: AudioProcessing = AudioProcessing {
        echo_cancellation: false,
        noise_suppression: false,
        gain_control: false,
    };

    fn config(self) -> wap::Config {
        wap::Config {
            echo_cancellation: self.echo_cancellation.then_some(wap::EchoCancellation {
                suppression_level: wap::EchoCancellationSuppressionLevel::Lowest,
                enable_extended_filter: true,
                enable_delay_agnostic: true,
                // None: the delay is found by the module (delay-agnostic); a value would switch
                // that off and leave it to the extended filter, which reaches ~100 ms.
                stream_delay_ms: None,
            }),
            gain_control: self.gain_control.then_some(wap::GainControl {
                mode: wap::GainControlMode::AdaptiveDigital,
                target_level_dbfs: AGC_TARGET_DBFS,
                compression_gain_db: 9,
                enable_limiter: true,
            }),
            noise_suppression: self.noise_suppression.then_some(wap::NoiseSuppression {
                suppression_level: wap::NoiseSuppressionLevel::VeryHigh,
            }),
            voice_detection: Some(wap::VoiceDetection {
                detection_likelihood: wap::VoiceDetectionLikelihood::Low,
            }),
            // The module's transient (keyboard) suppressor wants to be told of key presses and,
            // without, smears speech: SNR gain 4 dB with it, 11 dB without on our recordings.
            enable_transient_suppressor: false,
            // What the canceller and the suppressor need below them (DC and rumble out).
            enable_high_pass_filter: self.echo_cancellation
                || self.noise_suppression
                || self.gain_control,
        }
    }
}

fn to_f32(pcm: &[i16], out: &mut [f32]) {
    for (o, s) in out.iter_mut().zip(pcm) {
        *o = f32::from(*s) / 32768.0;
    }
}

fn to_i16(pcm: &[f32], out: &mut [i16]) {
    for (o, s) in out.iter_mut().zip(pcm) {
        *o = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
    }
}

/// The audio-processing module of one microphone: its capture side. Clones of its
/// [`EchoReference`] feed the far end from the playout thread.
pub struct Apm {
    processor: wap::Processor,
    settings: AudioProcessing,
    voice: Arc<AtomicBool>,
    buf: Vec<f32>,
    level: level::LevelControl,
    /// What the speaker took from the mix, 10 ms frames, oldest first (see [`EchoReference`]).
    played: Arc<Mutex<VecDeque<Vec<f32>>>>,
    render: Vec<f32>,
    /// Frames until the far end counts as quiet again (it played lately).
    far_hold: u32,
}

/// The far end counts as playing above this RMS (-50 dBFS, on the module's ±1 scale), and
/// for this many 10 ms frames after (the echo's tail).
const FAR_ACTIVE_RMS: f32 = 0.003_16;
const FAR_HOLD_FRAMES: u32 = 30;

impl std::fmt::Debug for Apm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apm")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Apm {
    pub fn new(settings: AudioProcessing) -> Result<Apm, MediaError> {
        let mut processor = wap::Processor::new(&wap::InitializationConfig {
            num_capture_channels: 1,
            num_render_channels: 1,
            ..wap::InitializationConfig::default()
        })
        .map_err(|e| MediaError::Unavailable {
            device: "audio processing".into(),
            reason: e.to_string(),
        })?;
        processor.set_config(settings.config());
        Ok(Apm {
            processor,
            settings,
            voice: Arc::new(AtomicBool::new(false)),
            buf: vec![0.0; APM_FRAME],
            level: level::LevelControl::default(),
            played: Arc::default(),
            render: vec![0.0; APM_FRAME],
            far_hold: 0,
        })
    }

    pub fn settings(&self) -> AudioProcessing {
        self.settings
    }

    /// Switches parts on or off mid-call (each keeps what it learned while on).
    pub fn set(&mut self, settings: AudioProcessing) {
        self.settings = settings;
        self.processor.set_config(settings.config());
    }

    /// The echo canceller's delay estimate: median and deviation (ms), and the share of
    /// estimates too poor to use.
    pub fn delay_estimate(&self) -> (Option<i32>, Option<i32>, Option<f64>) {
        let s = self.processor.get_stats();
        (
            s.delay_median_ms,
            s.delay_standard_deviation_ms,
            s.delay_fraction_poor_delays,
        )
    }

    /// The far-end side: hand it everything the speaker plays.
    pub fn reference(&self) -> EchoReference {
        EchoReference {
            queue: self.played.clone(),
            pending: Vec::with_capacity(APM_FRAME * 2),
        }
    }

    /// Whether the last frame held a voice (the microphone's, after echo cancellation).
    pub fn voice_flag(&self) -> Arc<AtomicBool> {
        self.voice.clone()
    }

    /// Processes captured samples in place, 10 ms at a time (a trailing part shorter than
    /// that passes unprocessed); returns whether a voice was heard in them.
    pub fn process(&mut self, pcm: &mut [i16]) -> bool {
        let mut voice = false;
        for chunk in pcm.chunks_exact_mut(APM_FRAME) {
            // Everything the speaker has taken since, oldest first: the speaker takes its
            // buffer's worth ahead of playing it, so each of these plays now or soon and its
            // echo is yet to come — the canceller must have the far end before its echo (it
            // finds the delay itself, delay-agnostic). Fed here, on the capture side, so far
            // and near end reach the module interleaved, as it wants.
            self.far_hold = self.far_hold.saturating_sub(1);
            loop {
                let next = self
                    .played
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop_front();
                let Some(frame) = next else { break };
                let power = frame.iter().map(|x| x * x).sum::<f32>() / frame.len() as f32;
                if power.sqrt() > FAR_ACTIVE_RMS {
                    self.far_hold = FAR_HOLD_FRAMES;
                }
                self.render.copy_from_slice(&frame);
                if let Err(e) = self.processor.process_render_frame(&mut self.render) {
                    tracing::debug!(error = %e, "the echo reference skipped a frame");
                }
            }
            to_f32(chunk, &mut self.buf);
            match self.processor.process_capture_frame(&mut self.buf) {
                Ok(()) => {
                    to_i16(&self.buf, chunk);
                    let heard = self.processor.get_stats().has_voice.unwrap_or(false);
                    if self.settings.gain_control {
                        // The level is learnt from the near end alone: while the far end
                        // plays, what sounds like a voice may be its echo's remains, and
                        // lifting those would undo the canceller.
                        self.level.process(chunk, heard && self.far_hold == 0);
                    }
                    voice |= heard;
                }
                Err(e) => tracing::debug!(error = %e, "audio processing skipped a frame"),
            }
        }
        self.voice.store(voice, Ordering::Relaxed);
        voice
    }
}

/// Runs whole signals through a fresh module, 20 ms at a time as a call does: the speaker
/// plays `far` while the microphone hears `mic`; returns what would be sent.
pub fn process_signals(
    settings: AudioProcessing,
    far: &[i16],
    mic: &[i16],
) -> Result<Vec<i16>, MediaError> {
    let mut apm = Apm::new(settings)?;
    let mut reference = apm.reference();
    let mut out = Vec::with_capacity(mic.len());
    for (i, chunk) in mic.chunks(AUDIO_FRAME).enumerate() {
        let played = far
            .get(i * AUDIO_FRAME..(i + 1) * AUDIO_FRAME)
            .unwrap_or(&[]);
        if played.len() == AUDIO_FRAME {
            reference.played(played);
        } else {
            reference.played(&[0; AUDIO_FRAME]);
        }
        let mut pcm = chunk.to_vec();
        apm.process(&mut pcm);
        out.extend_from_slice(&pcm);
    }
    Ok(out)
}

/// What the speaker plays, for the echo canceller. Fed on the playout thread in blocks of any
/// size; kept in 10 ms frames (at most [`REFERENCE_BACKLOG`]) until the capture side hands
/// them to the module, one per frame it captures — the module wants far and near end
/// interleaved, which two devices' callbacks are not.
pub struct EchoReference {
    queue: Arc<Mutex<VecDeque<Vec<f32>>>>,
    pending: Vec<f32>,
}

/// Far-end frames kept for the capture side (2 s): past that the oldest go (a microphone
/// that stopped, a speaker clock faster than the microphone's).
pub const REFERENCE_BACKLOG: usize = 200;

impl std::fmt::Debug for EchoReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoReference")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl EchoReference {
    /// `pcm` (48 kHz mono) was just handed to the speaker.
    pub fn played(&mut self, pcm: &[i16]) {
        self.pending
            .extend(pcm.iter().map(|s| f32::from(*s) / 32768.0));
        if self.pending.len() < APM_FRAME {
            return;
        }
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let mut at = 0;
        while self.pending.len() - at >= APM_FRAME {
            queue.push_back(self.pending[at..at + APM_FRAME].to_vec());
            at += APM_FRAME;
        }
        while queue.len() > REFERENCE_BACKLOG {
            queue.pop_front();
        }
        drop(queue);
        self.pending.drain(..at);
    }
}

/// A microphone whose frames pass through an [`Apm`] before anyone hears them.
#[derive(Debug)]
pub struct ProcessedMic<S> {
    inner: S,
    apm: Apm,
}

impl<S: AudioSource> ProcessedMic<S> {
    pub fn new(inner: S, apm: Apm) -> Self {
        ProcessedMic { inner, apm }
    }
}

impl<S: AudioSource> AudioSource for ProcessedMic<S> {
    fn read(&mut self) -> Result<Vec<i16>, MediaError> {
        let mut pcm = self.inner.read()?;
        self.apm.process(&mut pcm);
        Ok(pcm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{tone, tone_share};

    #[test]
    fn with_everything_off_the_samples_pass_unchanged() {
        let mut apm = Apm::new(AudioProcessing::OFF).expect("the module opens");
        for f in 0..50u64 {
            let input = tone(440.0, f * 960, 960);
            let mut pcm = input.clone();
            apm.process(&mut pcm);
            assert_eq!(pcm, input, "frame {f}");
        }
    }

    #[test]
    fn a_far_end_tone_that_comes_back_is_cancelled() {
        let mut apm = Apm::new(AudioProcessing {
            noise_suppression: false,
            gain_control: false,
            ..AudioProcessing::default()
        })
        .expect("the module opens");
        let mut reference = apm.reference();
        // The speaker plays a sweep of tones; the microphone hears it 40 ms later at half
        // the level.
        let far: Vec<i16> = (0..300u64)
            .flat_map(|f| tone(300.0 + (f % 7) as f64 * 110.0, f * 960, 960))
            .collect();
        let delay = 1920;
        let (mut before, mut after) = (0.0f64, 0.0f64);
        for f in 0..300usize {
            reference.played(&far[f * 960..(f + 1) * 960]);
            let mut mic: Vec<i16> = (0..960)
                .map(|i| {
                    let at = (f * 960 + i).checked_sub(delay);
                    at.map_or(0, |a| far[a] / 2)
                })
                .collect();
            let energy = |p: &[i16]| p.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>();
            let e0 = energy(&mic);
            apm.process(&mut mic);
            if f >= 150 {
                before += e0;
                after += energy(&mic);
            }
        }
        let erle = 10.0 * (before / after.max(1.0)).log10();
        assert!(erle > 15.0, "echo return loss enhancement {erle:.1} dB");
        // And a tone of our own, with nothing played, goes through.
        let mut own = tone(1000.0, 0, 960);
        for f in 0..30u64 {
            own = tone(1000.0, f * 960, 960);
            reference.played(&[0; 960]);
            apm.process(&mut own);
        }
        assert!(tone_share(&own, 1000.0) > 0.5);
    }
}
