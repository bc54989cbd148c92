//! Real sound devices through cpal: a tone mixed and played to the default speaker comes back
//! through the default microphone. Run by `tests/desktop.sh`, which starts PulseAudio with a
//! null sink as the default speaker and its monitor as the default microphone (on a desktop,
//! the same test would play out loud and need a real loopback).
#![cfg(feature = "devices")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use convo_client::devices::{self, CpalMic, CpalSpeaker};
use convo_client::media::{AudioSink, AudioSource};
use convo_client::mixer::Mixer;
use convo_client::synth;

#[test]
#[ignore = "needs a sound server with a loopback: run tests/desktop.sh"]
fn a_tone_played_to_the_speaker_comes_back_from_the_microphone() {
    let list = devices::list();
    assert!(!list.inputs.is_empty(), "no microphone: {list:?}");
    assert!(!list.outputs.is_empty(), "no speaker: {list:?}");
    assert!(list.outputs.iter().any(|d| d.default), "{list:?}");

    let mut mic = CpalMic::open(None).expect("the default microphone opens");
    // The first capture can take a few seconds (the sound server's buffers fill).
    assert!(
        (0..5).any(|_| mic.read().is_ok()),
        "the microphone never delivered"
    );
    let mixer = Mixer::new(Duration::from_millis(40), Duration::from_millis(400));
    let _speaker = CpalSpeaker::open(None, mixer.clone()).expect("the default speaker opens");
    let mut sink = mixer.sink("tone");
    let feeder = std::thread::spawn(move || {
        let start = Instant::now();
        for n in 0..250u64 {
            sink.play(&synth::tone(440.0, n * 960, 960));
            let due = start + Duration::from_millis(20 * (n + 1));
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
        }
    });
    let (mut heard, mut frames) = (0, 0);
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        let pcm = mic.read().expect("the microphone delivers");
        assert_eq!(pcm.len(), 960);
        frames += 1;
        if synth::tone_share(&pcm, 440.0) > 0.5 {
            heard += 1;
        }
    }
    feeder.join().unwrap();
    eprintln!("{list:?}: {frames} frames, the tone in {heard}");
    assert!(frames > 50, "{frames} frames from the microphone");
    // At least a second of the tone came back.
    assert!(heard >= 50, "the tone was in {heard} of {frames} frames");
}
