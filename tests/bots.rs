//! Bots in a room, end to end: every bot decodes every other bot's audio, camera and screen,
//! and the content checks pass; a late joiner gets video at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convo_client::call::{self, CallEvent, CallOptions};
use convo_client::media::{self, MediaBackend};
use convo_client::mixer::Mixer;
use convo_client::stats::{BotReport, TrackReport};
use convo_client::synth;
use convo_e2e::{Backend, Env, on_both_databases, until};
use convo_shared::signal::TrackKind;

on_both_databases!(
    everyone_is_heard_in_the_mix,
    lost_video_packets_are_retransmitted,
    three_bots_see_and_hear_each_other,
    late_joiner_gets_video_at_once,
    the_one_speaking_is_the_active_speaker,
    devices_are_switched_mid_call,
);

/// No database in it beyond signing in: SQLite only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_who_stays_hears_everyone_who_comes_and_goes() {
    stayer_hears_every_visit(Backend::Sqlite).await;
}

fn opts(room: &str, secs: u64) -> CallOptions {
    CallOptions {
        room_id: room.to_string(),
        duration: Duration::from_secs(secs),
        ..Default::default()
    }
}

fn track<'a>(r: &'a BotReport, from: &str, kind: &str) -> &'a TrackReport {
    r.tracks
        .iter()
        .find(|t| t.participant_id == from && t.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} from {from} in {r:#?}"))
}

fn assert_good(t: &TrackReport) {
    assert!(t.frames_decoded > 0, "nothing decoded: {t:?}");
    assert!(t.content_ok, "content check failed: {t:?}");
}

async fn three_bots_see_and_hear_each_other(backend: Backend) {
    let env = Env::start(backend).await;
    let (ta, tb, tc) = (
        env.user("bot-a").await,
        env.user("bot-b").await,
        env.user("bot-c").await,
    );
    let room = env.room(&ta, "Bots").await;
    let base = env.base.clone();
    let run = |token: String, o: CallOptions| {
        let base = base.clone();
        tokio::spawn(async move { call::run(&base, &token, o).await.unwrap() })
    };
    let a = run(
        ta,
        CallOptions {
            screen: true,
            ..opts(&room, 8)
        },
    );
    let b = run(tb, opts(&room, 8));
    let c = run(tc, opts(&room, 8));
    let (a, b, c) = (a.await.unwrap(), b.await.unwrap(), c.await.unwrap());
    let summary: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|r| {
            let got: Vec<String> = r
                .tracks
                .iter()
                .map(|t| format!("{}({})", t.track_id, t.frames_decoded))
                .collect();
            format!("{} got {:?}", r.participant_id, got)
        })
        .collect();
    eprintln!("{summary:#?}");
    for (me, others) in [(&a, [&b, &c]), (&b, [&a, &c]), (&c, [&a, &b])] {
        assert!(
            me.tracks
                .iter()
                .all(|t| t.participant_id != me.participant_id),
            "no echo"
        );
        for other in others {
            let audio = track(me, &other.participant_id, "audio");
            assert_good(audio);
            // (content_ok holds the pitch to 440 Hz ± 3 %.)
            assert!(audio.pitch_hz.is_some(), "{audio:?}");
            // Every second's marker arrived, in order, soon after it was captured.
            assert!(audio.markers >= 3, "{audio:?}");
            assert!(audio.latency_p50_ms.is_some_and(|l| l < 500), "{audio:?}");
            let video = track(me, &other.participant_id, "video");
            assert_good(video);
            assert!(video.latency_p50_ms.is_some());
        }
    }
    // A's screen reached both others.
    for me in [&b, &c] {
        assert_good(track(me, &a.participant_id, "screen"));
    }
    env.stop().await;
}

async fn late_joiner_gets_video_at_once(backend: Backend) {
    let env = Env::start(backend).await;
    let (ta, tb) = (env.user("early").await, env.user("late").await);
    let room = env.room(&ta, "Late").await;
    let base = env.base.clone();
    let early = {
        let (base, room) = (base.clone(), room.clone());
        tokio::spawn(async move { call::run(&base, &ta, opts(&room, 10)).await.unwrap() })
    };
    // Join once the early bot's stream has long passed its first (and only scheduled)
    // keyframe: the next scheduled one is 30 s away.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The late joiner hands what it decodes to sinks of its own backend.
    let sinks = Recorder::default();
    let late = call::run(
        &base,
        &tb,
        CallOptions {
            audio: false,
            video: false,
            backend: Some(media::Backend(Arc::new(sinks.clone()))),
            ..opts(&room, 4)
        },
    )
    .await
    .unwrap();
    let early = early.await.unwrap();
    let video = track(&late, &early.participant_id, "video");
    assert_good(video);
    assert!(video.frames_decoded > 10, "{video:?}");
    let audio = track(&late, &early.participant_id, "audio");
    assert_good(audio);
    // Every decoded frame reached the sinks, whole, for the right track.
    let got = sinks.0.lock().unwrap().clone();
    let video_id = format!("{}:video", early.participant_id);
    let audio_id = format!("{}:audio", early.participant_id);
    assert_eq!(got.get(&video_id).map(|r| r.0), Some(video.frames_decoded));
    assert_eq!(got[&video_id].1, (320, 240));
    assert_eq!(
        got.get(&audio_id).map(|r| r.0),
        Some(audio.frames_decoded + audio.concealed_frames)
    );
    assert_eq!(got[&audio_id].1, (960, 1));
    env.stop().await;
}

/// Per track: frames given, and the last one's size.
type Seen = HashMap<String, (u64, (usize, usize))>;

/// A backend whose sinks count what they are given.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Seen>>);

struct RecorderSink(Recorder, String);

impl media::VideoSink for RecorderSink {
    fn frame(&mut self, f: &media::DecodedVideo<'_>) {
        assert!(f.y.len() >= f.strides.0 * f.height, "whole Y plane");
        let mut m = self.0.0.lock().unwrap();
        let e = m.entry(self.1.clone()).or_default();
        e.0 += 1;
        e.1 = (f.width, f.height);
    }
}

impl media::AudioSink for RecorderSink {
    fn play(&mut self, pcm: &[i16]) {
        let mut m = self.0.0.lock().unwrap();
        let e = m.entry(self.1.clone()).or_default();
        e.0 += 1;
        e.1 = (pcm.len(), 1);
    }
}

impl MediaBackend for Recorder {
    fn microphone(&self) -> Result<Box<dyn media::AudioSource>, media::MediaError> {
        media::Synthetic::default().microphone()
    }
    fn camera(&self) -> Result<Box<dyn media::VideoSource>, media::MediaError> {
        media::Synthetic::default().camera()
    }
    fn screen(&self) -> Result<Box<dyn media::VideoSource>, media::MediaError> {
        Err(media::MediaError::Unavailable {
            device: "screen".into(),
            reason: "not in this test".into(),
        })
    }
    fn audio_sink(&self, t: &media::RemoteTrack) -> Option<Box<dyn media::AudioSink>> {
        Some(Box::new(RecorderSink(self.clone(), t.track_id.clone())))
    }
    fn video_sink(&self, t: &media::RemoteTrack) -> Option<Box<dyn media::VideoSink>> {
        Some(Box::new(RecorderSink(self.clone(), t.track_id.clone())))
    }
}

/// Two bots speak at 440 and 660 Hz; a listener mixes what it decodes (playout buffers and
/// the mixer the desktop app plays from) and its "sound card" hears both voices at once.
async fn everyone_is_heard_in_the_mix(backend: Backend) {
    let env = Env::start(backend).await;
    let (ta, tb, tl) = (
        env.user("low").await,
        env.user("high").await,
        env.user("listener").await,
    );
    let room = env.room(&ta, "Mix").await;
    let speak = |token: String, hz: f64| {
        let (base, room) = (env.base.clone(), room.clone());
        tokio::spawn(async move {
            let o = CallOptions {
                video: false,
                tone_hz: hz,
                ..opts(&room, 7)
            };
            call::run(&base, &token, o).await.unwrap()
        })
    };
    let (a, b) = (speak(ta, 440.0), speak(tb, 660.0));
    let mixer = Mixer::new(Duration::from_millis(60), Duration::from_millis(300));
    // The output device: pulls 20 ms every 20 ms and keeps it.
    let heard = Arc::new(Mutex::new(Vec::<i16>::new()));
    let device = {
        let (mixer, heard) = (mixer.clone(), heard.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut buf = vec![0i16; 960];
            for _ in 0..300 {
                tick.tick().await;
                mixer.fill(&mut buf);
                heard.lock().unwrap().extend_from_slice(&buf);
            }
        })
    };
    let listener = call::run(
        &env.base,
        &tl,
        CallOptions {
            audio: false,
            video: false,
            backend: Some(media::Backend(Arc::new(Tap {
                mixer: Some(mixer.clone()),
                ..Tap::default()
            }))),
            ..opts(&room, 5)
        },
    )
    .await
    .unwrap();
    device.abort();
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    for who in [&a, &b] {
        let t = track(&listener, &who.participant_id, "audio");
        assert!(t.frames_decoded > 100, "{t:?}");
    }
    // The sinks left the mix with their tracks.
    assert_eq!(mixer.sources(), 0);
    // Both voices, together, in 200 ms stretches of what the device played (markers aside).
    let pcm = heard.lock().unwrap().clone();
    let both = pcm
        .chunks_exact(9600)
        .filter(|c| {
            synth::tone_share(c, 440.0) > 0.2
                && synth::tone_share(c, 660.0) > 0.2
                && synth::tone_share(c, synth::MARKER_HZ) < 0.05
        })
        .count();
    assert!(both >= 5, "{both} stretches with both voices");
    env.stop().await;
}

fn unavailable(device: &str) -> media::MediaError {
    media::MediaError::Unavailable {
        device: device.into(),
        reason: "not in this test".into(),
    }
}

/// One in 8 video packets never reaches the subscriber's stack on first arrival: its NACKs
/// make the server resend them from its packet cache, in time for the jitter buffer.
async fn lost_video_packets_are_retransmitted(backend: Backend) {
    let env = Env::start(backend).await;
    let (ta, tb) = (env.user("sender").await, env.user("lossy").await);
    let room = env.room(&ta, "Lossy").await;
    let sender = {
        let (base, room) = (env.base.clone(), room.clone());
        tokio::spawn(async move {
            let o = CallOptions {
                audio: false,
                ..opts(&room, 8)
            };
            call::run(&base, &ta, o).await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lossy = call::run(
        &env.base,
        &tb,
        CallOptions {
            audio: false,
            video: false,
            drop_video_one_in: 8,
            ..opts(&room, 6)
        },
    )
    .await
    .unwrap();
    let sender = sender.await.unwrap();
    let video = track(&lossy, &sender.participant_id, "video");
    let drops = lossy.simulated_drops;
    assert!(drops >= 5, "the loss was simulated: {lossy:?}");
    assert_good(video);
    assert!(video.frames_decoded > 30, "{video:?}");
    // Dropped packets came back, out of order, before the jitter buffer gave up on them.
    // (Without retransmission every drop is lost. On a loaded machine a retransmission can
    // miss the 150 ms wait now and then, so this asks for most, not all.)
    assert!(video.lost_packets * 2 < drops, "{drops} dropped: {video:?}");
    // Retransmissions come after the packets that followed the lost one.
    assert!(video.reordered_packets > 0, "{drops} dropped: {video:?}");
    env.stop().await;
}

async fn the_one_speaking_is_the_active_speaker(backend: Backend) {
    let env = Env::start(backend).await;
    let (ta, tb, tc) = (
        env.user("talker").await,
        env.user("quiet1").await,
        env.user("quiet2").await,
    );
    let room = env.room(&ta, "Speaker").await;
    let base = env.base.clone();
    let run = |token: String, o: CallOptions| {
        let base = base.clone();
        tokio::spawn(async move { call::run(&base, &token, o).await.unwrap() })
    };
    // Only A makes a sound; B and C send silence. Nobody needs video here.
    let quiet = |room: &str| CallOptions {
        video: false,
        tone_hz: 0.0,
        ..opts(room, 5)
    };
    // A stays longest: when the speaker leaves, the others are told nobody is speaking.
    let a = run(
        ta,
        CallOptions {
            video: false,
            ..opts(&room, 7)
        },
    );
    let b = run(tb, quiet(&room));
    let c = run(tc, quiet(&room));
    let (a, b, c) = (a.await.unwrap(), b.await.unwrap(), c.await.unwrap());
    for r in [&a, &b, &c] {
        assert_eq!(
            r.active_speaker.as_deref(),
            Some(a.participant_id.as_str()),
            "{r:#?}"
        );
    }
    env.stop().await;
}

/// A listener on a machine without devices (its own sources are all unavailable). What it
/// is given, as it comes: audio samples (or, with `mixer`, audio to that mixer's playout
/// buffers instead), and per video frame the counter its code carries (`u32::MAX` when
/// unreadable) and the chroma (U, V) at its centre.
#[derive(Clone, Default)]
struct Tap {
    audio: Arc<Mutex<Vec<i16>>>,
    video: Arc<Mutex<Vec<(u32, u8, u8)>>>,
    mixer: Option<Mixer>,
}

struct TapSink(Tap);

impl media::AudioSink for TapSink {
    fn play(&mut self, pcm: &[i16]) {
        self.0.audio.lock().unwrap().extend_from_slice(pcm);
    }
}

impl media::VideoSink for TapSink {
    fn frame(&mut self, f: &media::DecodedVideo<'_>) {
        let code =
            synth::read_code(f.y, f.strides.0, f.width, f.height).map_or(u32::MAX, |c| c.counter);
        let (row, col) = (f.height / 4, f.width / 4);
        let (u, v) = (f.u[row * f.strides.1 + col], f.v[row * f.strides.2 + col]);
        self.0.video.lock().unwrap().push((code, u, v));
    }
}

impl MediaBackend for Tap {
    fn microphone(&self) -> Result<Box<dyn media::AudioSource>, media::MediaError> {
        Err(unavailable("microphone"))
    }
    fn camera(&self) -> Result<Box<dyn media::VideoSource>, media::MediaError> {
        Err(unavailable("camera"))
    }
    fn screen(&self) -> Result<Box<dyn media::VideoSource>, media::MediaError> {
        Err(unavailable("screen"))
    }
    fn audio_sink(&self, t: &media::RemoteTrack) -> Option<Box<dyn media::AudioSink>> {
        Some(match &self.mixer {
            Some(mixer) => Box::new(mixer.sink(&t.track_id)),
            None => Box::new(TapSink(self.clone())),
        })
    }
    fn video_sink(&self, _: &media::RemoteTrack) -> Option<Box<dyn media::VideoSink>> {
        Some(Box::new(TapSink(self.clone())))
    }
}

/// A microphone that gives `left` 20 ms frames of a tone, then fails like an unplugged one.
struct Unplugged {
    mic: synth::SyntheticMic,
    left: u32,
}

impl media::AudioSource for Unplugged {
    fn read(&mut self) -> Result<Vec<i16>, media::MediaError> {
        if self.left == 0 {
            return Err(media::MediaError::Stopped {
                device: "the test microphone".into(),
                reason: "unplugged".into(),
            });
        }
        self.left -= 1;
        self.mic.read()
    }
}

/// How many of the last second's 20 ms frames carry `hz` (markers and gaps do not).
fn last_second_at(pcm: &[i16], hz: f64) -> usize {
    pcm[pcm.len().saturating_sub(48_000)..]
        .chunks_exact(960)
        .filter(|c| synth::tone_share(c, hz) > 0.5)
        .count()
}

/// Camera pattern (tinted) or screen pattern (grey), from a frame's centre chroma.
fn tinted(&(_, u, v): &(u32, u8, u8)) -> bool {
    u.abs_diff(90) <= 8 && v.abs_diff(160) <= 8
}
fn grey(&(_, u, v): &(u32, u8, u8)) -> bool {
    u.abs_diff(128) <= 8 && v.abs_diff(128) <= 8
}

/// Devices changed mid-call: a participant whose microphone and camera could not open joins
/// without them (told why, counted as muted), switches to ones that work (the tracks are
/// added), then to others (the same tracks carry on); the listener hears and sees each in
/// turn, with every frame's code still in order. A microphone that dies mid-call is
/// reported and muted.
async fn devices_are_switched_mid_call(backend: Backend) {
    let env = Env::start(backend).await;
    let (ta, tb) = (env.user("switcher").await, env.user("listener").await);
    let room = env.room(&ta, "Switch").await;
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let with = |tap: &Tap| Some(media::Backend(Arc::new(tap.clone())));
    let a = call::start(
        &env.base,
        &ta,
        CallOptions {
            backend: with(&Tap::default()),
            ..opts(&room, 0)
        },
        Some(events_tx),
    )
    .await
    .unwrap();
    let mut failed = Vec::new();
    while failed.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
        if let Ok(Some(CallEvent::SourceFailed { kind, .. })) = e {
            failed.push(kind);
        } else {
            assert!(e.is_ok(), "both sources reported as failed: {failed:?}");
        }
    }
    assert!(failed.contains(&TrackKind::Audio) && failed.contains(&TrackKind::Video));

    let tap = Tap::default();
    let b = call::start(
        &env.base,
        &tb,
        CallOptions {
            audio: false,
            video: false,
            backend: with(&tap),
            ..opts(&room, 0)
        },
        None,
    )
    .await
    .unwrap();

    // Devices that work: their tracks are added; a failed source counted as muted.
    a.switch_microphone(Box::new(synth::SyntheticMic::new(440.0)));
    a.switch_camera(Box::new(synth::SyntheticVideo::new(
        synth::Pattern::Camera,
        synth::VideoSize::default(),
        15,
    )));
    a.set_muted(TrackKind::Audio, false);
    a.set_muted(TrackKind::Video, false);
    until(
        "the first microphone and camera reach the listener",
        20,
        || {
            last_second_at(&tap.audio.lock().unwrap(), 440.0) >= 35
                && tap
                    .video
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|f| tinted(f))
                    .count()
                    >= 15
        },
    )
    .await;

    // Other devices, on the same tracks.
    let (heard, seen) = (
        tap.audio.lock().unwrap().len(),
        tap.video.lock().unwrap().len(),
    );
    a.switch_microphone(Box::new(synth::SyntheticMic::new(660.0)));
    a.switch_camera(Box::new(synth::SyntheticVideo::new(
        synth::Pattern::Screen,
        synth::VideoSize::default(),
        15,
    )));
    until(
        "the second microphone and camera reach the listener",
        20,
        || {
            let audio = tap.audio.lock().unwrap();
            last_second_at(&audio[heard..], 660.0) >= 35
                && tap.video.lock().unwrap()[seen..]
                    .iter()
                    .filter(|f| grey(f))
                    .count()
                    >= 15
        },
    )
    .await;
    let video = tap.video.lock().unwrap().clone();
    assert!(
        video
            .windows(2)
            .all(|w| w[1].0 > w[0].0 && w[1].0 != u32::MAX),
        "every frame's code read back, in order, across the switch"
    );
    let first_grey = video.iter().position(grey).unwrap();
    assert!(
        video[first_grey..].iter().all(grey),
        "once switched, only the new camera's frames"
    );

    // A microphone that stops mid-call: reported, and nothing more is heard.
    a.switch_microphone(Box::new(Unplugged {
        mic: synth::SyntheticMic::new(440.0),
        left: 25,
    }));
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(CallEvent::SourceFailed {
                kind: TrackKind::Audio,
                reason,
            })) => break reason,
            Ok(Some(_)) => continue,
            other => panic!("the dead microphone was not reported: {other:?}"),
        }
    };
    assert!(reason.contains("unplugged"), "{reason}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = tap.audio.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        tap.audio.lock().unwrap().len(),
        before,
        "silence after the microphone died"
    );

    let a_id = a.participant_id.clone();
    let report = b.leave().await.unwrap();
    a.leave().await.unwrap();
    assert_good(track(&report, &a_id, "video"));
    env.stop().await;
}

/// A participant stays while another comes and goes 80 times (each time with new audio and
/// video tracks): every visit is heard, and the one who stays is never dropped. Every track that left
/// leaves a dead m-line on the stayer's `subscribe` connection (webrtc-rs never reuses
/// them): the server replaces the connection past 64 of them — before, the offer and
/// answer outgrew the signaling socket's 64 KiB message limit after ~300 and the stayer
/// was cut off and reconnected.
async fn stayer_hears_every_visit(backend: Backend) {
    const VISITS: usize = 80;
    let env = Env::start(backend).await;
    let (stays, visits) = (env.user("stays").await, env.user("visits").await);
    let room = env.room(&stays, "Door").await;
    let ice = vec!["127.0.0.1".parse().unwrap()];
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let stayer = call::start(
        &env.base,
        &stays,
        CallOptions {
            audio: false,
            video: false,
            ice_ips: ice.clone(),
            ..opts(&room, 0)
        },
        Some(tx),
    )
    .await
    .unwrap();
    for visit in 1..=VISITS {
        let visitor = call::start(
            &env.base,
            &visits,
            CallOptions {
                ice_ips: ice.clone(),
                ..opts(&room, 0)
            },
            None,
        )
        .await
        .unwrap();
        // Heard: one more of the visitor's audio tracks decoded.
        let end = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let heard = stayer
                .reports()
                .iter()
                .filter(|t| t.kind == "audio" && t.frames_decoded > 0)
                .count();
            if heard >= visit {
                break;
            }
            assert!(
                std::time::Instant::now() < end,
                "visit {visit} not heard within 60 s: {:?}",
                stayer.reports()
            );
            assert!(!stayer.is_finished(), "the stayer's call ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        visitor.leave().await.unwrap();
    }
    let report = stayer.leave().await.unwrap();
    let mut reconnects = 0;
    while let Ok(e) = events.try_recv() {
        if matches!(e, CallEvent::Connection { reconnecting: true }) {
            reconnects += 1;
        }
    }
    assert_eq!(reconnects, 0, "the stayer was cut off");
    assert_eq!(
        report
            .tracks
            .iter()
            .filter(|t| t.kind == "audio" && t.frames_decoded > 0)
            .count(),
        VISITS
    );
    env.stop().await;
}
