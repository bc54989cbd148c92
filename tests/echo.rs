//! Echo cancellation in a call: one participant's speech comes out of the other's speaker
//! and back into that one's microphone (an acoustic path in software: 60 ms later, 10 dB
//! quieter), and the first measures what it hears of itself in what it decodes. The whole
//! engine runs: Opus, WebRTC through the server, the mixer as the far-end reference, the
//! audio processing on the microphone. Needs Debian's `espeak-ng` for the speech.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use convo_client::apm::AudioProcessing;
use convo_client::apm::signals::{self, PlaybackMic};
use convo_client::call::{self, CallOptions};
use convo_client::media::{self, AUDIO_FRAME, MediaBackend, MediaError};
use convo_client::mixer::Mixer;
use convo_e2e::{Backend, Env};

fn unavailable(what: &str) -> MediaError {
    MediaError::Unavailable {
        device: what.into(),
        reason: "not in this test".into(),
    }
}

/// The talker: speaks a recording, keeps everything it decodes.
#[derive(Clone)]
struct Talker {
    speech: Vec<i16>,
    heard: Arc<Mutex<Vec<i16>>>,
}

struct Keep(Arc<Mutex<Vec<i16>>>);

impl media::AudioSink for Keep {
    fn play(&mut self, pcm: &[i16]) {
        self.0.lock().unwrap().extend_from_slice(pcm);
    }
}

impl MediaBackend for Talker {
    fn microphone(&self) -> Result<Box<dyn media::AudioSource>, MediaError> {
        Ok(Box::new(PlaybackMic::new(self.speech.clone())))
    }
    fn camera(&self) -> Result<Box<dyn media::VideoSource>, MediaError> {
        Err(unavailable("camera"))
    }
    fn screen(&self) -> Result<Box<dyn media::VideoSource>, MediaError> {
        Err(unavailable("screen"))
    }
    fn audio_sink(&self, _: &media::RemoteTrack) -> Option<Box<dyn media::AudioSink>> {
        Some(Box::new(Keep(self.heard.clone())))
    }
}

/// The laptop: its speaker plays the mix, its microphone hears the speaker (and nothing
/// else: the near end is silent). It keeps what the microphone picked up.
#[derive(Clone)]
struct Laptop {
    mixer: Mixer,
    picked_up: Arc<Mutex<Vec<i16>>>,
}

/// Speaker and microphone on one clock, as on one sound card: every 20 ms the speaker plays
/// the next 20 ms of the mix and the microphone hands over what reached it.
struct LaptopMic {
    mixer: Mixer,
    path: VecDeque<i16>,
    picked_up: Arc<Mutex<Vec<i16>>>,
    opened: Instant,
    frames: u32,
}

/// The acoustic path: 60 ms, -10 dB.
const DELAY: usize = 60 * 48;
const GAIN: f32 = 0.316;

impl media::AudioSource for LaptopMic {
    fn read(&mut self) -> Result<Vec<i16>, MediaError> {
        self.frames += 1;
        let due = self.opened + Duration::from_millis(20) * self.frames;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut played = vec![0i16; AUDIO_FRAME];
        self.mixer.fill(&mut played);
        self.path
            .extend(played.iter().map(|s| (f32::from(*s) * GAIN) as i16));
        let heard: Vec<i16> = self.path.drain(..AUDIO_FRAME).collect();
        self.picked_up.lock().unwrap().extend_from_slice(&heard);
        Ok(heard)
    }
}

impl MediaBackend for Laptop {
    fn microphone(&self) -> Result<Box<dyn media::AudioSource>, MediaError> {
        Ok(Box::new(LaptopMic {
            mixer: self.mixer.clone(),
            path: std::iter::repeat_n(0, DELAY).collect(),
            picked_up: self.picked_up.clone(),
            opened: Instant::now(),
            frames: 0,
        }))
    }
    fn camera(&self) -> Result<Box<dyn media::VideoSource>, MediaError> {
        Err(unavailable("camera"))
    }
    fn screen(&self) -> Result<Box<dyn media::VideoSource>, MediaError> {
        Err(unavailable("screen"))
    }
    fn playout(&self) -> Option<Mixer> {
        Some(self.mixer.clone())
    }
    fn audio_sink(&self, t: &media::RemoteTrack) -> Option<Box<dyn media::AudioSink>> {
        Some(Box::new(self.mixer.sink(&t.track_id)))
    }
}

/// RMS of the last `secs` seconds.
fn tail_rms(pcm: &[i16], secs: usize) -> f64 {
    signals::rms(&pcm[pcm.len().saturating_sub(secs * 48_000)..])
}

/// One call: the talker speaks for `secs`, the laptop runs `processing`. Returns (what the
/// laptop's microphone picked up, what the talker heard back) as RMS over the last 6 s.
async fn call_with(
    env: &Env,
    (tt, tl): (String, String),
    processing: AudioProcessing,
    speech: &[i16],
) -> (f64, f64) {
    let room = env.room(&tt, "Echo").await;
    let talker = Talker {
        speech: speech.to_vec(),
        heard: Arc::default(),
    };
    let laptop = Laptop {
        mixer: Mixer::new(Duration::from_millis(40), Duration::from_millis(400)),
        picked_up: Arc::default(),
    };
    let opts = |b: media::Backend, processing| CallOptions {
        room_id: room.clone(),
        video: false,
        duration: Duration::from_secs(14),
        backend: Some(b),
        audio_processing: processing,
        ..Default::default()
    };
    let base = env.base.clone();
    let l = {
        let (base, o) = (
            base.clone(),
            opts(media::Backend(Arc::new(laptop.clone())), processing),
        );
        tokio::spawn(async move { call::run(&base, &tl, o).await.unwrap() })
    };
    let t = {
        let o = opts(
            media::Backend(Arc::new(talker.clone())),
            AudioProcessing::OFF,
        );
        tokio::spawn(async move { call::run(&base, &tt, o).await.unwrap() })
    };
    let (l, t) = (l.await.unwrap(), t.await.unwrap());
    let picked = laptop.picked_up.lock().unwrap().clone();
    let heard = talker.heard.lock().unwrap().clone();
    eprintln!(
        "{processing:?}: the laptop picked up {} s, the talker heard {} s back ({} / {} tracks)",
        picked.len() / 48_000,
        heard.len() / 48_000,
        l.tracks.len(),
        t.tracks.len()
    );
    assert!(
        picked.len() > 8 * 48_000 && heard.len() > 8 * 48_000,
        "too little audio"
    );
    (tail_rms(&picked, 6), tail_rms(&heard, 6))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_of_a_laptop_speaker_is_not_sent_back() {
    let env = Env::start(Backend::Sqlite).await;
    let speech = signals::speech(
        "Good morning everyone. Let us start with the budget for the next quarter, \
         then the hiring plan, and we finish with questions from the team.",
        "en-us",
    )
    .unwrap();
    let speech = signals::repeat_to(&speech, 300, 60 * 48_000);
    let who = (env.user("talker").await, env.user("laptop").await);
    let (picked_on, heard_on) =
        call_with(&env, who.clone(), AudioProcessing::default(), &speech).await;
    let (picked_off, heard_off) = call_with(&env, who, AudioProcessing::OFF, &speech).await;
    let erle = |picked: f64, heard: f64| 20.0 * (picked / heard.max(1e-3)).log10();
    let (on, off) = (erle(picked_on, heard_on), erle(picked_off, heard_off));
    eprintln!(
        "echo picked up at {:.1} dBFS; heard back at {:.1} dBFS with processing (ERLE {on:.1} dB), {:.1} dBFS without ({off:.1} dB)",
        signals::dbfs(picked_on),
        signals::dbfs(heard_on),
        signals::dbfs(heard_off)
    );
    assert!(
        signals::dbfs(picked_on) > -45.0,
        "the echo path carried nothing"
    );
    assert!(on >= 25.0, "ERLE {on:.1} dB with echo cancellation");
    assert!(off < 6.0, "without it the echo is heard: {off:.1} dB");
    env.stop().await;
}
