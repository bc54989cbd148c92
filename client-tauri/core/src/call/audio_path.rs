//! The microphone's way into a call: every source (the first, and each one switched to)
//! passes through the audio processing ([`crate::apm`]) with the call's settings, which can
//! change mid-call, its echo canceller hearing what the backend's speaker plays; and while
//! the microphone is muted its voice verdicts say whether the user is talking anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::apm::talk::TalkWatch;
use crate::apm::{Apm, AudioProcessing};
use crate::media::{AudioSource, MediaError};
use crate::mixer::Mixer;

fn bits(s: AudioProcessing) -> u8 {
    u8::from(s.echo_cancellation)
        | u8::from(s.noise_suppression) << 1
        | u8::from(s.gain_control) << 2
}

fn from_bits(b: u8) -> AudioProcessing {
    AudioProcessing {
        echo_cancellation: b & 1 != 0,
        noise_suppression: b & 2 != 0,
        gain_control: b & 4 != 0,
    }
}

/// The settings of a call's audio processing, shared with its microphone's thread.
#[derive(Debug, Clone)]
pub(crate) struct ProcessingSettings(Arc<AtomicU8>);

impl ProcessingSettings {
    pub(crate) fn new(s: AudioProcessing) -> Self {
        ProcessingSettings(Arc::new(AtomicU8::new(bits(s))))
    }

    pub(crate) fn set(&self, s: AudioProcessing) {
        self.0.store(bits(s), Ordering::Relaxed);
    }

    fn get(&self) -> AudioProcessing {
        from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// What a call keeps to wrap its microphones.
pub(super) struct AudioPath {
    pub(super) settings: ProcessingSettings,
    /// Whether our microphone is muted (mirrors the call's state).
    pub(super) muted: Arc<AtomicBool>,
    pub(super) playout: Option<Mixer>,
    pub(super) on_talking: Arc<dyn Fn(bool) + Send + Sync>,
}

impl AudioPath {
    /// `source`, processed. If the module cannot start, the source goes out as captured.
    pub(super) fn wrap(&self, source: Box<dyn AudioSource>) -> Box<dyn AudioSource> {
        let applied = self.settings.get();
        let apm = match Apm::new(applied) {
            Ok(apm) => apm,
            Err(e) => {
                tracing::warn!(error = %e, "audio processing unavailable: the microphone goes out as captured");
                return source;
            }
        };
        if let Some(m) = &self.playout {
            m.set_echo_reference(Some(apm.reference()));
        }
        Box::new(CallMic {
            inner: source,
            apm,
            applied,
            settings: self.settings.clone(),
            muted: self.muted.clone(),
            watch: TalkWatch::default(),
            on_talking: self.on_talking.clone(),
        })
    }
}

struct CallMic {
    inner: Box<dyn AudioSource>,
    apm: Apm,
    applied: AudioProcessing,
    settings: ProcessingSettings,
    muted: Arc<AtomicBool>,
    watch: TalkWatch,
    on_talking: Arc<dyn Fn(bool) + Send + Sync>,
}

impl AudioSource for CallMic {
    fn read(&mut self) -> Result<Vec<i16>, MediaError> {
        let mut pcm = self.inner.read()?;
        let wanted = self.settings.get();
        if wanted != self.applied {
            self.apm.set(wanted);
            self.applied = wanted;
        }
        let voice = self.apm.process(&mut pcm);
        if let Some(talking) = self.watch.feed(voice, self.muted.load(Ordering::Relaxed)) {
            (self.on_talking)(talking);
        }
        Ok(pcm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_survive_the_trip_through_bits() {
        for b in 0..8 {
            assert_eq!(bits(from_bits(b)), b);
        }
        assert_eq!(
            from_bits(bits(AudioProcessing::default())),
            AudioProcessing::default()
        );
    }
}
