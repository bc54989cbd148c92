//! Playout: every remote participant's decoded audio mixed into one stream for the output
//! device. Each participant has a playout buffer that starts playing once it holds
//! `target` worth of audio (absorbing network and decoding jitter), refills the same way after
//! running dry, and is trimmed back to `target` when it grows past `max` (the sender's clock
//! runs faster than the sound card's, or a burst arrived). The output device's callback pulls
//! with [`Mixer::fill`]; the call pushes through [`MixerSink`]s, one per remote audio track.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::apm::EchoReference;
use crate::media::{AudioSink, SAMPLE_RATE};

/// What the mixer saw of one source.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SourceStats {
    /// Times the buffer ran dry while playing.
    pub underruns: u64,
    /// Samples dropped to bring an overfull buffer back to the target.
    pub trimmed: u64,
    /// Samples played.
    pub played: u64,
}

#[derive(Debug, Default)]
struct Source {
    queue: VecDeque<i16>,
    playing: bool,
    stats: SourceStats,
}

#[derive(Debug)]
struct State {
    target: usize,
    max: usize,
    sources: HashMap<String, Source>,
    /// Hears everything mixed: the echo canceller's far end.
    reference: Option<EchoReference>,
}

/// The mix of all remote audio. Cheap to clone; clones share the mix.
#[derive(Debug, Clone)]
pub struct Mixer(Arc<Mutex<State>>);

fn samples(d: Duration) -> usize {
    (d.as_micros() * u128::from(SAMPLE_RATE) / 1_000_000) as usize
}

impl Mixer {
    /// `target`: how much audio a source holds before it plays; `max`: how much it may hold.
    pub fn new(target: Duration, max: Duration) -> Self {
        let target = samples(target);
        Mixer(Arc::new(Mutex::new(State {
            target,
            max: samples(max).max(target + 960),
            sources: HashMap::new(),
            reference: None,
        })))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on everything mixed (what the speaker plays) also goes to `reference`, the
    /// echo canceller of the microphone in use; `None` stops that.
    pub fn set_echo_reference(&self, reference: Option<EchoReference>) {
        self.state().reference = reference;
    }

    /// A sink feeding the mix as `id`; the source leaves the mix when the sink is dropped.
    pub fn sink(&self, id: &str) -> MixerSink {
        self.state().sources.entry(id.to_string()).or_default();
        MixerSink {
            mixer: self.clone(),
            id: id.to_string(),
        }
    }

    fn push(&self, id: &str, pcm: &[i16]) {
        let mut st = self.state();
        let (target, max) = (st.target, st.max);
        let src = st.sources.entry(id.to_string()).or_default();
        src.queue.extend(pcm);
        if src.queue.len() > max {
            let excess = src.queue.len() - target;
            src.queue.drain(..excess);
            src.stats.trimmed += excess as u64;
        }
    }

    /// Mixes the next `out.len()` samples (mono, 48 kHz) into `out`; silence where nobody
    /// speaks. Returns how many sources contributed.
    pub fn fill(&self, out: &mut [i16]) -> usize {
        let mut st = self.state();
        let target = st.target;
        let mut acc = vec![0i32; out.len()];
        let mut active = 0;
        for src in st.sources.values_mut() {
            if !src.playing {
                if src.queue.len() < target.max(1) {
                    continue;
                }
                src.playing = true;
            }
            active += 1;
            let n = out.len().min(src.queue.len());
            for (a, s) in acc.iter_mut().zip(src.queue.drain(..n)) {
                *a += i32::from(s);
            }
            src.stats.played += n as u64;
            if n < out.len() {
                // Ran dry: refill to the target before playing again.
                src.playing = false;
                src.stats.underruns += 1;
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = a.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
        }
        if let Some(r) = st.reference.as_mut() {
            r.played(out);
        }
        active
    }

    /// The stats of one source, while it is in the mix.
    pub fn stats(&self, id: &str) -> Option<SourceStats> {
        self.state().sources.get(id).map(|s| s.stats)
    }

    /// How many sources are in the mix.
    pub fn sources(&self) -> usize {
        self.state().sources.len()
    }
}

/// One remote track's way into the mix.
#[derive(Debug)]
pub struct MixerSink {
    mixer: Mixer,
    id: String,
}

impl AudioSink for MixerSink {
    fn play(&mut self, pcm: &[i16]) {
        self.mixer.push(&self.id, pcm);
    }
}

impl Drop for MixerSink {
    fn drop(&mut self) {
        self.mixer.state().sources.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{tone, tone_share};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn two_voices_are_heard_together() {
        let m = Mixer::new(ms(40), ms(200));
        let (mut a, mut b) = (m.sink("a"), m.sink("b"));
        let mut out = vec![0i16; 960];
        for f in 0..10u64 {
            a.play(&tone(440.0, f * 960, 960));
            b.play(&tone(1000.0, f * 960, 960));
        }
        assert_eq!(m.fill(&mut out), 2);
        let (sa, sb) = (tone_share(&out, 440.0), tone_share(&out, 1000.0));
        assert!(sa > 0.35 && sb > 0.35, "{sa} {sb}");
        drop(a);
        assert_eq!(m.sources(), 1);
        assert_eq!(m.fill(&mut out), 1);
        assert!(tone_share(&out, 1000.0) > 0.9);
        assert!(tone_share(&out, 440.0) < 0.01);
    }

    #[test]
    fn a_source_waits_for_its_target_and_refills_after_running_dry() {
        let m = Mixer::new(ms(40), ms(200));
        let mut a = m.sink("a");
        let mut out = vec![0i16; 960];
        // 20 ms held, 40 ms wanted: silence.
        a.play(&tone(440.0, 0, 960));
        assert_eq!(m.fill(&mut out), 0);
        assert!(out.iter().all(|s| *s == 0));
        a.play(&tone(440.0, 960, 960));
        assert_eq!(m.fill(&mut out), 1);
        assert_eq!(m.fill(&mut out), 1);
        // Now dry: the next pull plays nothing and counts an underrun.
        assert_eq!(m.fill(&mut out), 1);
        let st = m.stats("a").expect("in the mix");
        assert_eq!((st.underruns, st.played), (1, 1920));
        a.play(&tone(440.0, 1920, 960));
        assert_eq!(m.fill(&mut out), 0, "refilling to the target first");
    }

    #[test]
    fn an_overfull_buffer_is_trimmed_to_the_target() {
        let m = Mixer::new(ms(40), ms(100));
        let mut a = m.sink("a");
        for f in 0..6u64 {
            a.play(&tone(440.0, f * 960, 960));
        }
        // 120 ms pushed, 100 allowed: back to 40 ms.
        assert_eq!(m.stats("a").expect("in the mix").trimmed, 6 * 960 - 1920);
    }

    #[test]
    fn loud_voices_clip_instead_of_wrapping() {
        let m = Mixer::new(ms(0), ms(100));
        let (mut a, mut b) = (m.sink("a"), m.sink("b"));
        a.play(&[30_000; 960]);
        b.play(&[30_000; 960]);
        let mut out = vec![0i16; 960];
        m.fill(&mut out);
        assert!(out.iter().all(|s| *s == i16::MAX));
    }
}
