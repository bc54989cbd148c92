//! A call: join a room over signaling, publish audio, camera and screen from the backend's
//! sources on the `publish` connection, receive everyone else's on `subscribe` through a
//! jitter buffer, decode it, hand it to the backend's sinks, and measure it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use convo_shared::signal::TrackKind;
use convo_shared::signal::{ClientMessage, IceCandidate, ServerMessage, Transport};
use openh264::formats::YUVSource;
use tokio::sync::mpsc;
use webrtc::api::interceptor_registry::configure_twcc_sender_only;
use webrtc::api::media_engine::{MIME_TYPE_OPUS, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{API, APIBuilder};
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::interceptor::registry::Registry;
use webrtc::media::Sample;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
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
use crate::jitter::{JitterBuffer, Released};
use crate::media::{
    AUDIO_FRAME, AudioSink, AudioSource, Backend, DecodedVideo, MediaBackend, RemoteTrack,
    Synthetic, VideoSink, VideoSource,
};
use crate::reconnect::{Action, Seen};
use crate::signal::Signaling;
use crate::stats::{BotReport, RoundTrip, TrackStats};
use crate::synth::{self, MarkerDetector};

mod audio_path;
mod publish;
mod receive;

pub use publish::audio_level;
use publish::*;
pub(crate) use receive::has_idr;
use receive::*;

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
    /// Size of the synthetic camera's (and screen's) picture.
    pub video_size: synth::VideoSize,
    pub duration: Duration,
    /// Where media comes from and goes; `None` is [`Synthetic`] with `tone_hz` and `fps`.
    pub backend: Option<Backend>,
    /// Simulated loss: drop one in this many incoming video packets on first arrival (see
    /// [`crate::loss`]); 0 drops nothing.
    pub drop_video_one_in: u64,
    /// The size every remote video is drawn at (the server picks simulcast layers by it);
    /// `None` says nothing, which gets the best layer.
    pub view: Option<(u32, u32)>,
    /// The local addresses ICE may gather on; empty: all of them. Defaults to
    /// `CONVO_ICE_IPS` (comma-separated), which tests set to keep media on their own
    /// addresses.
    pub ice_ips: Vec<std::net::IpAddr>,
    /// What runs on the microphone before Opus (echo cancellation, noise suppression, gain
    /// control). Off here: a synthetic tone is what tests measure, and a suppressor would
    /// take a steady tone for noise. The desktop app turns it on (its settings).
    pub audio_processing: crate::apm::AudioProcessing,
    /// Effects on the camera (background blur or picture, touch-up), changeable while the
    /// call runs through the handle. `None` leaves frames as the backend gives them (the
    /// desktop app applies its effects in its backend, so the self view shows them too).
    pub video_effects: Option<crate::effects::EffectsControl>,
}

/// A camera with the call's effects, if it has any.
fn with_effects(
    effects: &Option<crate::effects::EffectsControl>,
    camera: Box<dyn VideoSource>,
) -> Box<dyn VideoSource> {
    match effects {
        Some(e) => e.wrap(camera),
        None => camera,
    }
}

/// The addresses in `CONVO_ICE_IPS` (comma-separated; what does not parse is ignored).
pub fn ice_ips_from_env() -> Vec<std::net::IpAddr> {
    std::env::var("CONVO_ICE_IPS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|ip| ip.trim().parse().ok())
        .collect()
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
            video_size: synth::VideoSize::default(),
            duration: Duration::from_secs(10),
            backend: None,
            drop_video_one_in: 0,
            view: None,
            ice_ips: ice_ips_from_env(),
            audio_processing: crate::apm::AudioProcessing::OFF,
            video_effects: None,
        }
    }
}

type Stats = Arc<Mutex<HashMap<String, TrackStats>>>;

const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The webrtc-rs API for the `publish` connection (`publish`) or the `subscribe` one. Only the
/// publishing one registers the MID and RID extensions simulcast needs: with them, webrtc-rs
/// probes a stream whose first packets beat its receiver for a RID, finds none, and closes
/// it under the receiver.
fn webrtc_api(
    loss: Option<crate::loss::DropVideo>,
    publish: Option<convo_shared::bwe::rtc::Bwe>,
    ice_ips: &[std::net::IpAddr],
) -> Result<API, ClientError> {
    let mut registry = Registry::new();
    // The uplink's estimator, closest to the wire: it sees the transport-wide numbers the
    // transport-cc sender (registered next) gives each packet.
    if let Some(bwe) = &publish {
        registry.add(convo_shared::bwe::rtc::builder(
            convo_shared::bwe::rtc::Source::Fixed(bwe.clone()),
        ));
    }
    let simulating = loss.is_some();
    // Closest to the network: before the NACK generator.
    if let Some(loss) = loss {
        registry.add(Box::new(loss));
    }
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
    // Simulcast layers by RID; keyframes marked in a header extension for the server.
    let extensions = if publish.is_some() {
        [
            webrtc::sdp::extmap::SDES_MID_URI,
            webrtc::sdp::extmap::SDES_RTP_STREAM_ID_URI,
            webrtc::sdp::extmap::SDES_REPAIR_RTP_STREAM_ID_URI,
            crate::video_out::FRAME_MARKING_URI,
        ]
        .as_slice()
    } else {
        &[]
    };
    for uri in extensions {
        m.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: (*uri).to_owned(),
            },
            RTPCodecType::Video,
            None,
        )?;
    }
    // The transport-cc sender inside the NACK responder: retransmissions get numbers too.
    if publish.is_some() {
        registry = configure_twcc_sender_only(registry, &mut m)?;
    }
    let registry = convo_shared::bwe::rtc::register_media_interceptors(registry, &mut m)?;
    let mut s = SettingEngine::default();
    s.set_include_loopback_candidate(true);
    // A path that goes quiet is noticed within ~3 s (keepalives every second; a machine
    // too busy to answer for a second or two is not a lost path), and the call reconnects
    // (see `reconnect`) rather than wait for ICE to fail. A vanished address is noticed at
    // once (`netwatch`).
    s.set_ice_timeouts(
        Some(Duration::from_secs(3)),
        Some(Duration::from_secs(8)),
        Some(Duration::from_secs(1)),
    );
    if !ice_ips.is_empty() {
        let allowed = ice_ips.to_vec();
        s.set_ip_filter(Box::new(move |ip| allowed.contains(&ip)));
    }
    if simulating {
        // Simulated drops happen after SRTP has decrypted the packet: its retransmission
        // would otherwise be refused as a replay.
        s.disable_srtp_replay_protection(true);
    }
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

/// What a running call tells its owner (the desktop app, a test): the signaling events that
/// change what the ui shows, remote tracks as they start, and the end.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallEvent {
    /// A remote track is being received (its media goes to the backend's sink).
    TrackStarted {
        participant_id: String,
        track_id: String,
        kind: TrackKind,
    },
    /// A signaling message from the server: participants, mute, tracks, speaker, errors.
    Signal { message: ServerMessage },
    /// Our microphone or camera could not open when the call started (its track is left
    /// out), or stopped during the call (unplugged, taken by another program). Either way it
    /// counts as muted, and everyone has been told, until another device is switched to
    /// ([`CallHandle::switch_microphone`], [`CallHandle::switch_camera`]) and unmuted.
    SourceFailed { kind: TrackKind, reason: String },
    /// Our screen share stopped without being asked (the shared window closed, capture
    /// failed); everyone has been told.
    ShareEnded { reason: String },
    /// The connection to the server was lost and the call is getting it back
    /// (`reconnecting`), or has it back: the others saw us as reconnecting, not leaving.
    Connection { reconnecting: bool },
    /// Our microphone is muted and we are talking (`true`), or no longer (`false`): the ui
    /// says "you are muted".
    TalkingWhileMuted { talking: bool },
    /// The camera's effects were switched off while running (`code`: `effects_too_slow`,
    /// `effects_model`, `effects_picture`); the ui says why.
    EffectsOff { code: String, message: String },
    /// The call is over (left, replaced by another device, removed, or the connection could
    /// not be got back within the server's grace period).
    Ended { reason: String },
}

/// A source for one of the tracks we publish.
enum Source {
    Audio(Box<dyn AudioSource>),
    Video(Box<dyn VideoSource>),
}

/// Something the owner asks of a running call.
enum Control {
    Mute(TrackKind, bool),
    /// Share this source as our screen, or stop sharing (`None`).
    Share(Option<Box<dyn VideoSource>>),
    /// Another microphone or camera: it replaces the one in use.
    Switch(Source),
    /// A source stopped by itself (its track's kind, its generation, why).
    SourceEnded(TrackKind, u64, String),
    /// A chat message to the room.
    Chat(String),
    /// As a host: let someone in from the waiting room, or not.
    Answer(String, bool),
    /// Every remote video is now drawn at this size.
    View(u32, u32),
    /// One remote video is now drawn at this size.
    TrackView(String, u32, u32),
    Leave,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Control::Mute(k, m) => write!(f, "Mute({k:?}, {m})"),
            Control::Share(s) => write!(f, "Share({})", s.is_some()),
            Control::Switch(Source::Audio(_)) => f.write_str("Switch(microphone)"),
            Control::Switch(Source::Video(_)) => f.write_str("Switch(camera)"),
            Control::SourceEnded(k, n, r) => write!(f, "SourceEnded({k:?}, {n}, {r})"),
            Control::Chat(t) => write!(f, "Chat({} chars)", t.chars().count()),
            Control::Answer(id, admit) => write!(f, "Answer({id}, {admit})"),
            Control::View(w, h) => write!(f, "View({w}x{h})"),
            Control::TrackView(t, w, h) => write!(f, "TrackView({t}, {w}x{h})"),
            Control::Leave => f.write_str("Leave"),
        }
    }
}

/// A running call.
#[derive(Debug)]
pub struct CallHandle {
    pub participant_id: String,
    /// Everyone in the room when we joined, with their tracks.
    pub participants: Vec<convo_shared::signal::ParticipantInfo>,
    ctl: mpsc::UnboundedSender<Control>,
    task: tokio::task::JoinHandle<Result<BotReport, ClientError>>,
    stats: Stats,
    tone_hz: f64,
    rtt: Arc<RoundTrip>,
    processing: audio_path::ProcessingSettings,
}

impl CallHandle {
    /// What has been received so far, per remote track (for a connection-quality indicator).
    pub fn reports(&self) -> Vec<crate::stats::TrackReport> {
        reports(&self.stats, self.tone_hz, &self.rtt)
    }

    /// Mutes or unmutes what we send: the source keeps running, nothing is encoded or sent,
    /// and everyone is told.
    pub fn set_muted(&self, kind: TrackKind, muted: bool) {
        let _ = self.ctl.send(Control::Mute(kind, muted));
    }

    /// Shares `source` as our screen (others see it as a `screen` track, shown large), or
    /// stops sharing with `None`. Sharing again replaces the source. (For calls started
    /// without `CallOptions::screen`.)
    pub fn share(&self, source: Option<Box<dyn VideoSource>>) {
        let _ = self.ctl.send(Control::Share(source));
    }

    /// Turns parts of the microphone's processing on or off; the next frame has it.
    pub fn set_audio_processing(&self, settings: crate::apm::AudioProcessing) {
        self.processing.set(settings);
    }

    /// Sends from another microphone: the one in use stops, the others hear the new one on
    /// the same track, muted or not as before. Without a microphone so far (none could
    /// open), the audio track is added.
    pub fn switch_microphone(&self, source: Box<dyn AudioSource>) {
        let _ = self.ctl.send(Control::Switch(Source::Audio(source)));
    }

    /// Sends from another camera, like [`CallHandle::switch_microphone`].
    pub fn switch_camera(&self, source: Box<dyn VideoSource>) {
        let _ = self.ctl.send(Control::Switch(Source::Video(source)));
    }

    /// Sends a chat message to everyone in the room; it comes back to us as a
    /// `chat_message` signal once kept (or as an `error` if refused).
    pub fn send_chat(&self, text: &str) {
        let _ = self.ctl.send(Control::Chat(text.to_string()));
    }

    /// As a host: lets someone in from the waiting room (`request_id` from `knocking`), or
    /// turns them away.
    pub fn answer_knock(&self, request_id: &str, admit: bool) {
        let _ = self
            .ctl
            .send(Control::Answer(request_id.to_string(), admit));
    }

    /// Every remote video is drawn at `width` × `height` from now on (`0 × 0`: hidden): the
    /// server forwards the simulcast layer that fits.
    pub fn set_view(&self, width: u32, height: u32) {
        let _ = self.ctl.send(Control::View(width, height));
    }

    /// The remote video `track_id` is drawn at `width` × `height` (`0 × 0`: not shown), as a
    /// window's tile resizes.
    pub fn set_track_view(&self, track_id: &str, width: u32, height: u32) {
        let _ = self
            .ctl
            .send(Control::TrackView(track_id.to_string(), width, height));
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Leaves (if still in the call) and reports every remote track.
    pub async fn leave(self) -> Result<BotReport, ClientError> {
        let _ = self.ctl.send(Control::Leave);
        self.task
            .await
            .map_err(|e| ClientError::Media(format!("the call task failed: {e}")))?
    }
}

/// Joins, publishes, receives for `opts.duration`, leaves, and reports every remote track.
pub async fn run(base: &str, token: &str, opts: CallOptions) -> Result<BotReport, ClientError> {
    run_telling(base, token, opts, None).await
}

/// [`run`], telling `events` what happens.
pub async fn run_telling(
    base: &str,
    token: &str,
    opts: CallOptions,
    events: Option<mpsc::UnboundedSender<CallEvent>>,
) -> Result<BotReport, ClientError> {
    let duration = opts.duration;
    let call = start(base, token, opts, events).await?;
    let deadline = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < deadline && !call.is_finished() {
        tokio::time::sleep(
            Duration::from_millis(50)
                .min(deadline.saturating_duration_since(tokio::time::Instant::now())),
        )
        .await;
    }
    call.leave().await
}

/// Joins and starts publishing and receiving; the call runs until [`CallHandle::leave`] or
/// until the server ends it. `events`, if given, hears what happens.
pub async fn start(
    base: &str,
    token: &str,
    opts: CallOptions,
    events: Option<mpsc::UnboundedSender<CallEvent>>,
) -> Result<CallHandle, ClientError> {
    let talk_events = events.clone();
    let effects_events = events.clone();
    let emit = move |e: CallEvent| {
        if let Some(tx) = &events {
            let _ = tx.send(e);
        }
    };
    let mut sig = Signaling::connect(base, token).await?;
    let joined_at = Instant::now();
    sig.send(ClientMessage::Join {
        room_id: opts.room_id.clone(),
        password: opts.room_password.clone(),
        audio_muted: !opts.audio,
        video_muted: !opts.video,
    });
    let (participant_id, participants, ice_servers, grace) = loop {
        match sig.recv().await {
            Some(ServerMessage::Joined {
                participant_id,
                participants,
                ice_servers,
                grace_seconds,
                ..
            }) => {
                break (
                    participant_id,
                    participants,
                    ice_servers,
                    Duration::from_secs(grace_seconds.into()),
                );
            }
            Some(ServerMessage::Error { code, message }) => {
                return Err(ClientError::Signal(format!("{code}: {message}")));
            }
            // A waiting room: told, then let in (`joined` follows) or turned away (an error).
            Some(message @ (ServerMessage::Waiting { .. } | ServerMessage::Admitted { .. })) => {
                emit(CallEvent::Signal { message });
                continue;
            }
            Some(_) => continue,
            None => return Err(ClientError::Signal("the server closed the socket".into())),
        }
    };
    let rtc_config = move || RTCConfiguration {
        ice_servers: ice_servers
            .iter()
            .map(|s| webrtc::ice_transport::ice_server::RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone().unwrap_or_default(),
                credential: s.credential.clone().unwrap_or_default(),
            })
            .collect(),
        ..Default::default()
    };
    let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let loss = (opts.drop_video_one_in > 0).then(|| crate::loss::DropVideo {
        one_in: opts.drop_video_one_in,
        dropped: dropped.clone(),
    });
    let api = Arc::new(webrtc_api(loss, None, &opts.ice_ips)?);
    let uplink_bwe = convo_shared::bwe::rtc::Bwe::new(convo_shared::bwe::Config::default());
    let publish_api = webrtc_api(None, Some(uplink_bwe.clone()), &opts.ice_ips)?;
    let stats: Stats = Arc::default();
    let rtt = Arc::new(RoundTrip::new());
    let handle_rtt = rtt.clone();

    let backend: Arc<dyn MediaBackend> = match &opts.backend {
        Some(b) => b.0.clone(),
        None => Arc::new(Synthetic {
            tone_hz: opts.tone_hz,
            fps: opts.fps,
            size: opts.video_size,
        }),
    };

    let audio_path = audio_path::AudioPath {
        settings: audio_path::ProcessingSettings::new(opts.audio_processing),
        muted: Arc::new(AtomicBool::new(false)),
        playout: backend.playout(),
        on_talking: Arc::new(move |talking| {
            if let Some(tx) = &talk_events {
                let _ = tx.send(CallEvent::TalkingWhileMuted { talking });
            }
        }),
    };
    let processing = audio_path.settings.clone();
    let video_effects = opts.video_effects.clone();
    if let (Some(fx), Some(tx)) = (&video_effects, effects_events) {
        fx.on_error(move |e| {
            let _ = tx.send(CallEvent::EffectsOff {
                code: e.code().into(),
                message: e.to_string(),
            });
        });
    }

    // Publish what can open. A source that cannot (no microphone, camera in use) leaves its
    // track out: the call goes on without it, as muted, and the owner hears why.
    let publish = Arc::new(publish_api.new_peer_connection(rtc_config()).await?);
    watch_candidates(&publish, Transport::Publish, sig.sender());
    let (health_tx, mut health) = mpsc::unbounded_channel::<Health>();
    watch_health(&publish, 0, 0, &health_tx);
    // Before any track: the probe track rides in the first offer.
    let uplink = Arc::new(
        crate::uplink::Uplink::start(&publish, uplink_bwe, crate::video_out::h264()).await?,
    );
    let (ctl_tx, mut ctl) = mpsc::unbounded_channel::<Control>();
    // Weak: dropping the handle still ends the call.
    let ctl_back = ctl_tx.downgrade();
    let mut outgoing: Vec<Outgoing> = Vec::new();
    // What the owner last asked (or a failure decided) per kind: a track added later starts so.
    let mut muted_kinds: HashMap<TrackKind, bool> = HashMap::new();
    for (on, kind) in [
        (opts.audio, TrackKind::Audio),
        (opts.video, TrackKind::Video),
        (opts.screen, TrackKind::Screen),
    ] {
        if !on {
            continue;
        }
        let source = match kind {
            TrackKind::Audio => backend
                .microphone()
                .map(|m| Source::Audio(audio_path.wrap(m))),
            TrackKind::Video => backend
                .camera()
                .map(|c| Source::Video(with_effects(&opts.video_effects, c))),
            TrackKind::Screen => backend.screen().map(Source::Video),
        };
        match source {
            Ok(source) => {
                let mut o =
                    Outgoing::add(&publish, kind, &participant_id, false, &rtt, &uplink).await?;
                o.feed(source, ctl_back.clone(), sig.sender());
                outgoing.push(o);
            }
            Err(e) => {
                tracing::warn!(?kind, error = %e, "source unavailable");
                emit(CallEvent::SourceFailed {
                    kind,
                    reason: e.to_string(),
                });
                muted_kinds.insert(kind, true);
                sig.send(ClientMessage::Mute { kind, muted: true });
            }
        }
    }
    let publishing = !outgoing.is_empty();
    if publishing {
        send_offer(&publish, &sig).await?;
    }

    // Receive until told to leave or the server ends the call.
    let handle_participants = participants.clone();
    let (handle_stats, handle_tone) = (stats.clone(), opts.tone_hz);
    let handle_pid = participant_id.clone();
    let (base, token) = (base.to_string(), token.to_string());
    let task = tokio::spawn(async move {
        let participant_id = handle_pid;
        let mut publish = publish;
        // Reconnection: the policy, the connections' generation (events of older ones are
        // stale), whether the socket is up, and the watch on local addresses.
        let mut policy = crate::reconnect::Reconnect::new(grace);
        if publishing {
            policy.using(0);
        }
        let mut generation = 0_u64;
        let mut sig_alive = true;
        let mut was_reconnecting = false;
        let (lost_tx, mut address_lost) = mpsc::unbounded_channel::<()>();
        let watcher = crate::netwatch::watch(opts.ice_ips.clone(), lost_tx);
        let mut subscribe: Option<Arc<RTCPeerConnection>> = None;
        // Offers answered on the current `subscribe` connection.
        let mut subscribe_answers = 0_u64;
        let mut active_speaker: Option<String> = None;
        // The size remote videos are drawn at, for tracks that start later.
        let views: Arc<Mutex<Option<(u32, u32)>>> = Arc::new(Mutex::new(opts.view));
        // Every remote track's receiving task.
        let receivers: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let emit = Arc::new(emit);
        let mut ended = "left".to_string();
        let mut offers = Offers {
            publish: publish.clone(),
            pending: publishing,
            again: false,
            rtt: rtt.clone(),
            uplink: uplink.clone(),
            sent: u64::from(publishing),
            answered: 0,
        };
        let outcome: Result<(), ClientError> = async {
            loop {
                while let Some(action) = policy.poll(Instant::now()) {
                    match action {
                        Action::GiveUp => {
                            ended = "the connection to the server was lost".into();
                            return Ok(());
                        }
                        Action::Reconnect { attempt } => {
                            tracing::warn!(attempt, "the connection was lost: reconnecting");
                            generation += 1;
                            sig_alive = false;
                            let (old_pub, old_sub) = (publish.clone(), subscribe.take());
                            tokio::spawn(async move {
                                let _ = old_pub.close().await;
                                if let Some(pc) = old_sub {
                                    let _ = pc.close().await;
                                }
                            });
                            let muted = |k| muted_kinds.get(&k).copied().unwrap_or(false);
                            let join = ClientMessage::Join {
                                room_id: opts.room_id.clone(),
                                password: opts.room_password.clone(),
                                audio_muted: !opts.audio || muted(TrackKind::Audio),
                                video_muted: !opts.video || muted(TrackKind::Video),
                            };
                            let attempt = async {
                                rejoin(&mut sig, &base, &token, join, &participant_id).await?;
                                sig_alive = true;
                                let bwe = convo_shared::bwe::rtc::Bwe::new(
                                    convo_shared::bwe::Config::default(),
                                );
                                let api = webrtc_api(None, Some(bwe.clone()), &opts.ice_ips)?;
                                let pc = Arc::new(api.new_peer_connection(rtc_config()).await?);
                                watch_candidates(&pc, Transport::Publish, sig.sender());
                                watch_health(&pc, generation, 0, &health_tx);
                                let uplink = Arc::new(
                                    crate::uplink::Uplink::start(&pc, bwe, crate::video_out::h264())
                                        .await?,
                                );
                                for o in &mut outgoing {
                                    o.attach(&pc, &rtt, &uplink).await?;
                                }
                                offers = Offers {
                                    publish: pc.clone(),
                                    pending: false,
                                    again: false,
                                    rtt: rtt.clone(),
                                    uplink,
                                    sent: 0,
                                    answered: 0,
                                };
                                publish = pc;
                                if !outgoing.is_empty() {
                                    policy.using(0);
                                    offers.renegotiate(&sig).await?;
                                }
                                Ok::<(), ClientError>(())
                            };
                            let seen = match tokio::time::timeout(
                                crate::reconnect::ATTEMPT_TIMEOUT,
                                attempt,
                            )
                            .await
                            {
                                Ok(Ok(())) => Seen::Rejoined,
                                Ok(Err(e)) => {
                                    tracing::info!(error = %e, "reconnection failed");
                                    Seen::AttemptFailed
                                }
                                Err(_) => Seen::AttemptFailed,
                            };
                            policy.handle(seen, Instant::now());
                        }
                    }
                }
                if policy.reconnecting() != was_reconnecting {
                    was_reconnecting = policy.reconnecting();
                    emit(CallEvent::Connection {
                        reconnecting: was_reconnecting,
                    });
                }
                let deadline = policy.deadline().map(tokio::time::Instant::from_std);
                let msg = tokio::select! {
                    Some((g, pc, state)) = health.recv() => {
                        use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState as S;
                        let seen = match state {
                            S::Connected => Some(Seen::Up(pc)),
                            S::Disconnected => Some(Seen::Down(pc)),
                            S::Failed => Some(Seen::Failed(pc)),
                            _ => None,
                        };
                        if let (Some(seen), true) = (seen, g == generation) {
                            tracing::debug!(?seen, "connection");
                            policy.handle(seen, Instant::now());
                        }
                        continue;
                    }
                    Some(()) = address_lost.recv() => {
                        policy.handle(Seen::AddressLost, Instant::now());
                        continue;
                    }
                    _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => continue,
                    c = ctl.recv() => match c {
                        Some(Control::Share(Some(source))) => {
                            let screen = published(&mut outgoing, TrackKind::Screen, false, &mut offers, &sig, &participant_id).await?;
                            if screen.muted.swap(false, Ordering::Relaxed) {
                                sig.send(ClientMessage::Mute { kind: TrackKind::Screen, muted: false });
                            }
                            screen.feed(Source::Video(source), ctl_back.clone(), sig.sender());
                            continue;
                        }
                        Some(Control::Share(None)) => {
                            if let Some(screen) = outgoing.iter_mut().find(|o| o.kind == TrackKind::Screen) {
                                screen.stop();
                                screen.muted.store(true, Ordering::Relaxed);
                                sig.send(ClientMessage::Mute { kind: TrackKind::Screen, muted: true });
                            }
                            continue;
                        }
                        Some(Control::Switch(source)) => {
                            let (kind, source) = match source {
                                Source::Audio(a) => (TrackKind::Audio, Source::Audio(audio_path.wrap(a))),
                                Source::Video(v) => (TrackKind::Video, Source::Video(with_effects(&video_effects, v))),
                            };
                            let muted = muted_kinds.get(&kind).copied().unwrap_or(false);
                            published(&mut outgoing, kind, muted, &mut offers, &sig, &participant_id)
                                .await?
                                .feed(source, ctl_back.clone(), sig.sender());
                            continue;
                        }
                        Some(Control::SourceEnded(kind, generation, reason)) => {
                            // Only the current source's end counts: a replaced one's does not.
                            if let Some(o) = outgoing.iter_mut().find(|o| {
                                o.kind == kind && o.generation == generation && o.halt.is_some()
                            }) {
                                o.stop();
                                o.muted.store(true, Ordering::Relaxed);
                                muted_kinds.insert(kind, true);
                                sig.send(ClientMessage::Mute { kind, muted: true });
                                emit(if kind == TrackKind::Screen {
                                    CallEvent::ShareEnded { reason }
                                } else {
                                    CallEvent::SourceFailed { kind, reason }
                                });
                            }
                            continue;
                        }
                        Some(Control::Chat(text)) => {
                            sig.send(ClientMessage::Chat { text });
                            continue;
                        }
                        Some(Control::View(width, height)) => {
                            *lock(&views) = Some((width, height));
                            let video: Vec<String> = lock(&stats)
                                .values()
                                .filter(|t| t.kind != TrackKind::Audio.as_str())
                                .map(|t| t.track_id.clone())
                                .collect();
                            for track_id in video {
                                sig.send(ClientMessage::View { track_id, width, height });
                            }
                            continue;
                        }
                        Some(Control::TrackView(track_id, width, height)) => {
                            sig.send(ClientMessage::View { track_id, width, height });
                            continue;
                        }
                        Some(Control::Answer(request_id, admit)) => {
                            sig.send(if admit {
                                ClientMessage::Admit { request_id }
                            } else {
                                ClientMessage::Deny { request_id }
                            });
                            continue;
                        }
                        Some(Control::Mute(kind, muted)) => {
                            for o in outgoing.iter().filter(|o| o.kind == kind) {
                                o.muted.store(muted, Ordering::Relaxed);
                                if let (false, Some(v)) = (muted, o.video()) {
                                    v.request_keyframe();
                                }
                            }
                            muted_kinds.insert(kind, muted);
                            if kind == TrackKind::Audio {
                                audio_path.muted.store(muted, Ordering::Relaxed);
                            }
                            sig.send(ClientMessage::Mute { kind, muted });
                            continue;
                        }
                        Some(Control::Leave) | None => break,
                    },
                    m = sig.recv(), if sig_alive => m,
                };
                let Some(msg) = msg else {
                    tracing::info!("the signaling socket closed");
                    sig_alive = false;
                    policy.handle(Seen::SignalLost, Instant::now());
                    continue;
                };
                match msg {
                    ServerMessage::Answer {
                        target: Transport::Publish,
                        sdp,
                    } => {
                        publish
                            .set_remote_description(RTCSessionDescription::answer(sdp)?)
                            .await?;
                        offers.answered(&sig).await?;
                        // A server that never says `publish_ready` (an older one) still gets
                        // the media, a few seconds late.
                        let waiting: Vec<Arc<AtomicBool>> = outgoing
                            .iter()
                            .filter(|o| o.offered_in <= offers.answered)
                            .map(|o| o.ready.clone())
                            .collect();
                        tokio::spawn(async move {
                            tokio::time::sleep(PUBLISH_READY_FALLBACK).await;
                            for ready in waiting {
                                ready.store(true, Ordering::Relaxed);
                            }
                        });
                    }
                    ServerMessage::Offer {
                        target: Transport::Subscribe,
                        sdp,
                        restart,
                    } => {
                        if restart && let Some(old) = subscribe.take() {
                            // The server replaces the connection (the same tracks come again
                            // on the new one).
                            old.on_peer_connection_state_change(Box::new(|_| Box::pin(async {})));
                            tokio::spawn(async move {
                                let _ = old.close().await;
                            });
                        }
                        let pc = match &subscribe {
                            Some(pc) => pc.clone(),
                            None => {
                                let pc = Arc::new(api.new_peer_connection(rtc_config()).await?);
                                watch_candidates(&pc, Transport::Subscribe, sig.sender());
                                watch_health(&pc, generation, 1, &health_tx);
                                policy.using(1);
                                let (views, sig_tx) = (views.clone(), sig.sender());
                                let stats = stats.clone();
                                let weak = Arc::downgrade(&pc);
                                let backend = backend.clone();
                                let emit = emit.clone();
                                let receivers = receivers.clone();
                                pc.on_track(Box::new(move |track, _, _| {
                                    // The server's probe padding: read (so that it is
                                    // acknowledged) and dropped.
                                    if track.id() == convo_shared::bwe::rtc::PROBE_TRACK_ID {
                                        tokio::spawn(async move {
                                            while track.read_rtp().await.is_ok() {}
                                        });
                                        return Box::pin(async {});
                                    }
                                    let stats = stats.clone();
                                    let pc = weak.clone();
                                    let backend = backend.clone();
                                    if let (Some((width, height)), false) =
                                        (*lock(&views), kind_of(&track) == TrackKind::Audio)
                                    {
                                        let _ = sig_tx.send(ClientMessage::View {
                                            track_id: track.id(),
                                            width,
                                            height,
                                        });
                                    }
                                    emit(CallEvent::TrackStarted {
                                        participant_id: track.stream_id(),
                                        track_id: track.id(),
                                        kind: kind_of(&track),
                                    });
                                    let task = tokio::spawn(async move {
                                        receive(track, stats, joined_at, pc, backend).await;
                                    });
                                    let mut all = lock(&receivers);
                                    all.retain(|t| !t.is_finished());
                                    all.push(task);
                                    Box::pin(async {})
                                }));
                                subscribe = Some(pc.clone());
                                subscribe_answers = 0;
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
                        subscribe_answers += 1;
                        // webrtc-rs opens the receivers a moment after answering (after the
                        // connection is up, the first time); the server waits to be told, for
                        // this offer (a later one may be answered before these are open).
                        let (pc, tx, offer) = (pc.clone(), sig.sender(), subscribe_answers);
                        tokio::spawn(async move {
                            let deadline = Instant::now() + Duration::from_secs(10);
                            while !receivers_open(&pc).await && Instant::now() < deadline {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            let _ = tx.send(ClientMessage::SubscribeReady { offer: Some(offer) });
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
                    ServerMessage::PublishReady { offer } => {
                        // For what the offers it speaks of covered (a track added since waits
                        // for the next).
                        let upto = offer.map_or(offers.answered, |n| n.min(offers.answered));
                        for o in outgoing.iter().filter(|o| o.offered_in <= upto) {
                            if !o.ready.swap(true, Ordering::Relaxed)
                                && let Some(v) = o.video()
                            {
                                v.request_keyframe();
                            }
                        }
                    }
                    ServerMessage::LayersWanted { kind, ref rids } => {
                        if let Some(v) = outgoing.iter().find(|o| o.kind == kind).and_then(Outgoing::video) {
                            v.set_wanted(rids);
                        }
                        emit(CallEvent::Signal { message: msg });
                    }
                    ServerMessage::Left { reason } => {
                        ended = serde_json::to_value(reason)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_else(|| "left".into());
                        break;
                    }
                    other => {
                        match &other {
                            ServerMessage::Error { code, message } => {
                                tracing::warn!(%code, %message, "server error");
                            }
                            ServerMessage::ActiveSpeaker { participant_id } => {
                                active_speaker.clone_from(participant_id);
                            }
                            _ => {}
                        }
                        emit(CallEvent::Signal { message: other });
                    }
                }
            }
            Ok(())
        }
        .await;
        // Whatever ended the call: stop the media threads and close the connections.
        watcher.abort();
        for o in &mut outgoing {
            o.stop();
        }
        sig.send(ClientMessage::Leave {});
        let _ = publish.close().await;
        if let Some(pc) = subscribe {
            let _ = pc.close().await;
        }
        // The report once every receiver has put its last frame through: its counts and
        // what the sinks were given agree.
        let tasks: Vec<_> = lock(&receivers).drain(..).collect();
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        let tracks = reports(&stats, opts.tone_hz, &rtt);
        if let Err(e) = outcome {
            emit(CallEvent::Ended {
                reason: e.to_string(),
            });
            return Err(e);
        }
        emit(CallEvent::Ended { reason: ended });
        Ok(BotReport {
            participant_id,
            room_id: opts.room_id,
            active_speaker,
            tracks,
            simulated_drops: dropped.load(Ordering::Relaxed),
            uplink: offers.uplink.timeline(),
        })
    });
    Ok(CallHandle {
        participant_id,
        participants: handle_participants,
        ctl: ctl_tx,
        task,
        stats: handle_stats,
        tone_hz: handle_tone,
        rtt: handle_rtt,
        processing,
    })
}

/// A peer connection's state, with the generation and index (0 publish, 1 subscribe) of the
/// connection it comes from.
type Health = (
    u64,
    usize,
    webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState,
);

fn watch_health(
    pc: &RTCPeerConnection,
    generation: u64,
    index: usize,
    to: &mpsc::UnboundedSender<Health>,
) {
    let to = to.clone();
    pc.on_peer_connection_state_change(Box::new(move |state| {
        let _ = to.send((generation, index, state));
        Box::pin(async {})
    }));
}

/// A reconnection's socket and join: the signaling socket re-dialled and the room joined
/// again, our place taken back (`participant_id`; the others saw us reconnecting).
async fn rejoin(
    sig: &mut Signaling,
    base: &str,
    token: &str,
    join: ClientMessage,
    participant_id: &str,
) -> Result<(), ClientError> {
    sig.redial(base, token).await?;
    sig.send(join);
    loop {
        match sig.recv().await {
            Some(ServerMessage::Joined {
                participant_id: back,
                resumed,
                ..
            }) => {
                return if resumed && back == participant_id {
                    Ok(())
                } else {
                    Err(ClientError::Signal(
                        "our place in the room is gone: joined as someone new".into(),
                    ))
                };
            }
            Some(ServerMessage::Error { code, message }) => {
                return Err(ClientError::Signal(format!("{code}: {message}")));
            }
            Some(_) => continue,
            None => return Err(ClientError::Signal("the server closed the socket".into())),
        }
    }
}

/// Whether every receiving transceiver of `pc` has its receiver started (its tracks made):
/// packets that arrive before are taken by webrtc-rs for an unknown stream and lost.
async fn receivers_open(pc: &RTCPeerConnection) -> bool {
    for t in pc.get_transceivers().await {
        if t.current_direction().has_recv() && t.receiver().await.tracks().await.is_empty() {
            return false;
        }
    }
    true
}

/// What a remote track carries: its codec says audio or video, its id tells screen from camera.
fn kind_of(track: &TrackRemote) -> TrackKind {
    match track.kind() {
        RTPCodecType::Audio => TrackKind::Audio,
        _ if track.id().ends_with("screen") => TrackKind::Screen,
        _ => TrackKind::Video,
    }
}

/// The report of every remote track, in track id order.
fn reports(stats: &Stats, tone_hz: f64, rtt: &RoundTrip) -> Vec<crate::stats::TrackReport> {
    let rtt = rtt.get();
    let mut v: Vec<_> = lock(stats)
        .values()
        .map(|s| s.report(tone_hz, rtt))
        .collect();
    v.sort_by(|a, b| a.track_id.cmp(&b.track_id));
    v
}

/// Media goes out this long after the server answered an offer if it has not said
/// `publish_ready` by then.
const PUBLISH_READY_FALLBACK: Duration = Duration::from_secs(20);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idr_units_are_recognised() {
        // SPS, PPS, IDR slice.
        let idr = [
            0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xCE, 0, 0, 1, 0x65, 0x88,
        ];
        assert!(has_idr(&idr));
        // A non-IDR slice.
        assert!(!has_idr(&[0, 0, 0, 1, 0x41, 0x9A, 0x02]));
        assert!(!has_idr(&[]));
    }

    #[test]
    fn levels_follow_loudness() {
        assert_eq!(audio_level(&[]), 127);
        assert_eq!(audio_level(&[0; 960]), 127);
        let loud = synth::tone(440.0, 0, 960);
        let quiet: Vec<i16> = loud.iter().map(|s| s / 100).collect();
        assert!(audio_level(&loud) < 15);
        assert!(audio_level(&quiet) > audio_level(&loud) + 35);
    }
}
