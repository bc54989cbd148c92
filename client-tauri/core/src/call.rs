//! A call: join a room over signaling, publish synthetic audio, camera and screen on the
//! `publish` connection, receive and decode everyone else's on `subscribe`, and measure it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use convo_shared::signal::{ClientMessage, IceCandidate, ServerMessage, Transport};
use openh264::OpenH264API;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod};
use openh264::formats::{YUVBuffer, YUVSource};
use tokio::sync::mpsc;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{API, APIBuilder};
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::interceptor::registry::Registry;
use webrtc::media::Sample;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::codecs::h264::H264Packet;
use webrtc::rtp::extension::HeaderExtension;
use webrtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use webrtc::rtp::packetizer::Depacketizer;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpHeaderExtensionCapability, RTPCodecType,
};
use webrtc::track::track_local::TrackLocal;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;
use webrtc::track::track_remote::TrackRemote;

use crate::ClientError;
use crate::signal::Signaling;
use crate::stats::{BotReport, TrackStats};
use crate::synth::{self, FrameCode, Pattern};

/// What to publish and for how long.
#[derive(Debug, Clone)]
pub struct CallOptions {
    pub room_id: String,
    pub room_password: Option<String>,
    pub audio: bool,
    pub video: bool,
    pub screen: bool,
    /// Pitch of the synthetic tone; receivers check for the same. 0 sends silence.
    pub tone_hz: f64,
    pub fps: u32,
    pub duration: Duration,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            room_id: String::new(),
            room_password: None,
            audio: true,
            video: true,
            screen: false,
            tone_hz: 440.0,
            fps: 15,
            duration: Duration::from_secs(10),
        }
    }
}

type Stats = Arc<Mutex<HashMap<String, TrackStats>>>;

const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// RFC 6464 level of a frame: −dBov, 0 loudest, 127 silent.
pub fn audio_level(pcm: &[i16]) -> u8 {
    if pcm.is_empty() {
        return 127;
    }
    let mean_sq = pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / pcm.len() as f64;
    let rms = mean_sq.sqrt() / 32768.0;
    if rms <= 0.0 {
        return 127;
    }
    (-20.0 * rms.log10()).clamp(0.0, 127.0) as u8
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn webrtc_api() -> Result<API, ClientError> {
    let mut m = MediaEngine::default();
    m.register_default_codecs()?;
    // Audio levels let the server find the active speaker.
    m.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: AUDIO_LEVEL_URI.to_owned(),
        },
        RTPCodecType::Audio,
        None,
    )?;
    let registry = register_default_interceptors(Registry::new(), &mut m)?;
    let mut s = SettingEngine::default();
    s.set_include_loopback_candidate(true);
    Ok(APIBuilder::new()
        .with_media_engine(m)
        .with_interceptor_registry(registry)
        .with_setting_engine(s)
        .build())
}

fn watch_candidates(
    pc: &RTCPeerConnection,
    target: Transport,
    out: mpsc::UnboundedSender<ClientMessage>,
) {
    pc.on_ice_candidate(Box::new(move |c| {
        let out = out.clone();
        Box::pin(async move {
            let Some(Ok(init)) = c.map(|c| c.to_json()) else {
                return;
            };
            let _ = out.send(ClientMessage::Candidate {
                target,
                candidate: IceCandidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_mline_index: init.sdp_mline_index,
                },
            });
        })
    }));
}

/// Joins, publishes, receives for `opts.duration`, leaves, and reports every remote track.
pub async fn run(base: &str, token: &str, opts: CallOptions) -> Result<BotReport, ClientError> {
    let mut sig = Signaling::connect(base, token).await?;
    let joined_at = Instant::now();
    sig.send(ClientMessage::Join {
        room_id: opts.room_id.clone(),
        password: opts.room_password.clone(),
        audio_muted: !opts.audio,
        video_muted: !opts.video,
    });
    let participant_id = loop {
        match sig.recv().await {
            Some(ServerMessage::Joined { participant_id, .. }) => break participant_id,
            Some(ServerMessage::Error { code, message }) => {
                return Err(ClientError::Signal(format!("{code}: {message}")));
            }
            Some(_) => continue,
            None => return Err(ClientError::Signal("the server closed the socket".into())),
        }
    };
    let api = Arc::new(webrtc_api()?);
    let stop = Arc::new(AtomicBool::new(false));
    let stats: Stats = Arc::default();

    // Publish.
    let publish = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
    watch_candidates(&publish, Transport::Publish, sig.sender());
    if opts.audio {
        let track = Arc::new(TrackLocalStaticSample::new(
            RTCRtpCodecCapability {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                ..Default::default()
            },
            "audio".to_owned(),
            participant_id.clone(),
        ));
        publish
            .add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>)
            .await?;
        tokio::spawn(send_tone(track, opts.tone_hz, stop.clone()));
    }
    for (on, id, pattern) in [
        (opts.video, "video", Pattern::Camera),
        (opts.screen, "screen", Pattern::Screen),
    ] {
        if !on {
            continue;
        }
        let track = Arc::new(TrackLocalStaticSample::new(
            RTCRtpCodecCapability {
                mime_type: MIME_TYPE_H264.to_owned(),
                clock_rate: 90_000,
                sdp_fmtp_line:
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                        .to_owned(),
                ..Default::default()
            },
            id.to_owned(),
            participant_id.clone(),
        ));
        let sender = publish
            .add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>)
            .await?;
        let keyframe = Arc::new(AtomicBool::new(false));
        // Keyframe requests (PLI/FIR) relayed by the server.
        let kf = keyframe.clone();
        tokio::spawn(async move {
            while let Ok((packets, _)) = sender.read_rtcp().await {
                if packets.iter().any(|p| {
                    p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>()
                }) {
                    kf.store(true, Ordering::Relaxed);
                }
            }
        });
        send_video(track, pattern, opts.fps, keyframe, stop.clone());
    }
    if opts.audio || opts.video || opts.screen {
        let offer = publish.create_offer(None).await?;
        publish.set_local_description(offer.clone()).await?;
        sig.send(ClientMessage::Offer {
            target: Transport::Publish,
            sdp: offer.sdp,
        });
    }

    // Receive until the time is up.
    let mut subscribe: Option<Arc<RTCPeerConnection>> = None;
    let mut active_speaker: Option<String> = None;
    let deadline = tokio::time::sleep(opts.duration);
    tokio::pin!(deadline);
    loop {
        let msg = tokio::select! {
            () = &mut deadline => break,
            m = sig.recv() => m,
        };
        let Some(msg) = msg else { break };
        match msg {
            ServerMessage::Answer {
                target: Transport::Publish,
                sdp,
            } => {
                publish
                    .set_remote_description(RTCSessionDescription::answer(sdp)?)
                    .await?;
            }
            ServerMessage::Offer {
                target: Transport::Subscribe,
                sdp,
            } => {
                let pc = match &subscribe {
                    Some(pc) => pc.clone(),
                    None => {
                        let pc =
                            Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
                        watch_candidates(&pc, Transport::Subscribe, sig.sender());
                        let stats = stats.clone();
                        let weak = Arc::downgrade(&pc);
                        pc.on_track(Box::new(move |track, _, _| {
                            let stats = stats.clone();
                            let pc = weak.clone();
                            tokio::spawn(async move {
                                receive(track, stats, joined_at, pc).await;
                            });
                            Box::pin(async {})
                        }));
                        subscribe = Some(pc.clone());
                        pc
                    }
                };
                pc.set_remote_description(RTCSessionDescription::offer(sdp)?)
                    .await?;
                let answer = pc.create_answer(None).await?;
                pc.set_local_description(answer.clone()).await?;
                sig.send(ClientMessage::Answer {
                    target: Transport::Subscribe,
                    sdp: answer.sdp,
                });
            }
            ServerMessage::Candidate { target, candidate } => {
                let pc = match target {
                    Transport::Publish => Some(publish.clone()),
                    Transport::Subscribe => subscribe.clone(),
                };
                if let Some(pc) = pc {
                    let init = RTCIceCandidateInit {
                        candidate: candidate.candidate,
                        sdp_mid: candidate.sdp_mid,
                        sdp_mline_index: candidate.sdp_mline_index,
                        username_fragment: None,
                    };
                    if let Err(e) = pc.add_ice_candidate(init).await {
                        tracing::debug!(error = %e, "candidate refused");
                    }
                }
            }
            ServerMessage::Error { code, message } => {
                tracing::warn!(%code, %message, "server error");
            }
            ServerMessage::ActiveSpeaker { participant_id } => active_speaker = participant_id,
            ServerMessage::Left { .. } => break,
            _ => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    sig.send(ClientMessage::Leave {});
    let _ = publish.close().await;
    if let Some(pc) = subscribe {
        let _ = pc.close().await;
    }
    let tone = opts.tone_hz;
    let mut tracks: Vec<_> = lock(&stats).values().map(|s| s.report(tone)).collect();
    tracks.sort_by(|a, b| a.track_id.cmp(&b.track_id));
    Ok(BotReport {
        participant_id,
        room_id: opts.room_id,
        active_speaker,
        tracks,
    })
}

/// Opus-encoded tone in 20 ms frames, in real time.
async fn send_tone(track: Arc<TrackLocalStaticSample>, hz: f64, stop: Arc<AtomicBool>) {
    let Ok(mut enc) = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Audio)
    else {
        return;
    };
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let mut n: u64 = 0;
    let mut buf = vec![0u8; 4000];
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        let pcm = synth::tone(hz, n, 960);
        n += 960;
        let Ok(len) = enc.encode(&pcm, &mut buf) else {
            continue;
        };
        let sample = Sample {
            data: Bytes::copy_from_slice(&buf[..len]),
            duration: Duration::from_millis(20),
            ..Default::default()
        };
        let level = HeaderExtension::AudioLevel(AudioLevelExtension {
            level: audio_level(&pcm),
            voice: hz > 0.0,
        });
        if track
            .write_sample_with_extensions(&sample, &[level])
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Synthetic frames encoded with OpenH264 on a thread of their own (the encoder is not
/// `Send`), handed to an async writer.
fn send_video(
    track: Arc<TrackLocalStaticSample>,
    pattern: Pattern,
    fps: u32,
    keyframe: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let fps = fps.clamp(1, 60);
    let interval = Duration::from_secs_f64(1.0 / f64::from(fps));
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(800_000))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .skip_frames(true)
            // Long: a newcomer's keyframe must come from a request, not from the schedule.
            .intra_frame_period(IntraFramePeriod::from_num_frames(fps * 30));
        let Ok(mut enc) = Encoder::with_api_config(OpenH264API::from_source(), config) else {
            tracing::error!("OpenH264 encoder unavailable");
            return;
        };
        let start = Instant::now();
        let mut n: u32 = 0;
        while !stop2.load(Ordering::Relaxed) {
            if keyframe.swap(false, Ordering::Relaxed) {
                enc.force_intra_frame();
            }
            let code = FrameCode {
                counter: n,
                capture_ms: synth::now_ms32(),
            };
            let yuv = YUVBuffer::from_vec(synth::frame(code, pattern), synth::WIDTH, synth::HEIGHT);
            if let Ok(bits) = enc.encode(&yuv) {
                let data = bits.to_vec();
                if !data.is_empty() && tx.blocking_send(data).is_err() {
                    return;
                }
            }
            n += 1;
            let next = start + interval * n;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    });
    tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            let sample = Sample {
                data: Bytes::from(data),
                duration: interval,
                ..Default::default()
            };
            if track.write_sample(&sample).await.is_err() {
                stop.store(true, Ordering::Relaxed);
                return;
            }
        }
    });
}

/// Receives one remote track until it ends: counts packets, reassembles and decodes frames,
/// checks their content.
async fn receive(
    track: Arc<TrackRemote>,
    stats: Stats,
    joined_at: Instant,
    pc: std::sync::Weak<RTCPeerConnection>,
) {
    let participant = track.stream_id();
    let track_id = track.id();
    let kind = match track.kind() {
        RTPCodecType::Audio => "audio",
        _ if track_id.ends_with("screen") => "screen",
        _ => "video",
    };
    lock(&stats).insert(
        track_id.clone(),
        TrackStats::new(&participant, &track_id, kind),
    );
    let since_join = move || joined_at.elapsed().as_millis() as u64;
    if kind == "audio" {
        let Ok(mut dec) = opus::Decoder::new(48_000, opus::Channels::Mono) else {
            return;
        };
        let mut pcm = vec![0i16; 5760];
        let mut window: Vec<i16> = Vec::new();
        while let Ok((packet, _)) = track.read_rtp().await {
            let decoded = dec.decode(&packet.payload, &mut pcm, false).ok();
            let mut pitch = None;
            if let Some(n) = decoded {
                window.extend_from_slice(&pcm[..n]);
                if window.len() >= 48_000 + 5 * 960 {
                    let w = &window[window.len() - 48_000..];
                    pitch = Some(synth::pitch(w, 48_000));
                    window.drain(..window.len() - 48_000);
                }
            }
            let mut s = lock(&stats);
            if let Some(t) = s.get_mut(&track_id) {
                t.packets += 1;
                if decoded.is_some() {
                    t.audio_frame(since_join(), pitch);
                }
            }
        }
    } else {
        // Decoding on a thread of its own (the decoder is not `Send`).
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let decoded_any = Arc::new(AtomicBool::new(false));
        let (stats2, tid, flag) = (stats.clone(), track_id.clone(), decoded_any.clone());
        std::thread::spawn(move || {
            let Ok(mut dec) = openh264::decoder::Decoder::new() else {
                return;
            };
            while let Ok(frame) = rx.recv() {
                let yuv = match dec.decode(&frame) {
                    Ok(Some(yuv)) => yuv,
                    Ok(None) => continue,
                    Err(e) => {
                        // Typically: P-frames before the first keyframe.
                        tracing::debug!(error = %e, "frame not decoded");
                        continue;
                    }
                };
                let (w, h) = yuv.dimensions();
                let code = synth::read_code(yuv.y(), yuv.strides().0, w, h);
                let latency = code.map(|c| synth::elapsed_ms(c.capture_ms, synth::now_ms32()));
                flag.store(true, Ordering::Relaxed);
                if let Some(t) = lock(&stats2).get_mut(&tid) {
                    t.video_frame(code, since_join(), latency);
                }
            }
        });
        // Until the first frame decodes, ask for a keyframe every half second.
        let media_ssrc = track.ssrc();
        let pli_flag = decoded_any.clone();
        tokio::spawn(async move {
            while !pli_flag.load(Ordering::Relaxed) {
                let Some(pc) = pc.upgrade() else { return };
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                };
                if pc.write_rtcp(&[Box::new(pli)]).await.is_err() {
                    return;
                }
                drop(pc);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let mut depacketizer = H264Packet::default();
        let mut frame = BytesMut::new();
        while let Ok((packet, _)) = track.read_rtp().await {
            if let Some(t) = lock(&stats).get_mut(&track_id) {
                t.packets += 1;
            }
            if let Ok(nals) = depacketizer.depacketize(&packet.payload) {
                frame.extend_from_slice(&nals);
            }
            if packet.header.marker && !frame.is_empty() {
                let _ = tx.send(frame.split().to_vec());
            }
        }
    }
    if let Some(t) = lock(&stats).get_mut(&track_id) {
        t.ended = true;
    }
}
