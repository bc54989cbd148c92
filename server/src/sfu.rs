//! The SFU: every participant sends their media to the server once, on a `publish` peer
//! connection, and receives everyone else's on a `subscribe` peer connection; the server
//! forwards RTP packets between them without decoding (webrtc-rs).
//!
//! One [`RoomMedia`] belongs to each room actor; it owns the room's peer connections and
//! forwarding tasks. webrtc-rs callbacks never touch its state: they post [`MediaEvent`]s to
//! the actor's channel, and the actor calls back in.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use convo_shared::signal::{
    IceCandidate, IceServer, ServerMessage, TrackInfo, TrackKind, Transport,
};
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{API, APIBuilder};
use webrtc::ice::udp_network::{EphemeralUDP, UDPNetwork};
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::ice_transport::ice_candidate_type::RTCIceCandidateType;
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::RTCPFeedback;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RTPCodecType,
};
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};
use webrtc::track::track_remote::TrackRemote;

/// RFC 6464 client-to-mixer audio level.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// Audio levels are reported to the room this often per track.
const LEVEL_INTERVAL: Duration = Duration::from_millis(100);

/// A keyframe is asked of a publisher at most this often per track.
const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

/// Network settings of the media plane.
#[derive(Debug, Clone, Default)]
pub struct SfuConfig {
    /// UDP ports for ICE, inclusive; `None` lets the OS choose.
    pub udp_ports: Option<(u16, u16)>,
    /// The public address to announce when behind 1:1 NAT.
    pub public_ip: Option<String>,
}

/// The webrtc-rs API with our codecs and interceptors (NACK, RTCP reports, TWCC).
pub struct Sfu {
    api: API,
}

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sfu")
    }
}

fn feedback(typ: &str, parameter: &str) -> RTCPFeedback {
    RTCPFeedback {
        typ: typ.to_string(),
        parameter: parameter.to_string(),
    }
}

impl Sfu {
    pub fn new(cfg: &SfuConfig) -> Result<Self, webrtc::Error> {
        let mut m = MediaEngine::default();
        m.register_codec(
            RTCRtpCodecParameters {
                capability: RTCRtpCodecCapability {
                    mime_type: MIME_TYPE_OPUS.to_owned(),
                    clock_rate: 48000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                    rtcp_feedback: vec![feedback("transport-cc", "")],
                },
                payload_type: 111,
                ..Default::default()
            },
            RTPCodecType::Audio,
        )?;
        m.register_codec(
            RTCRtpCodecParameters {
                capability: RTCRtpCodecCapability {
                    mime_type: MIME_TYPE_H264.to_owned(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line:
                        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                            .to_owned(),
                    rtcp_feedback: vec![
                        feedback("goog-remb", ""),
                        feedback("ccm", "fir"),
                        feedback("nack", ""),
                        feedback("nack", "pli"),
                        feedback("transport-cc", ""),
                    ],
                },
                payload_type: 102,
                ..Default::default()
            },
            RTPCodecType::Video,
        )?;
        m.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: AUDIO_LEVEL_URI.to_owned(),
            },
            RTPCodecType::Audio,
            None,
        )?;
        let registry = register_default_interceptors(Registry::new(), &mut m)?;
        let mut s = SettingEngine::default();
        if let Some((lo, hi)) = cfg.udp_ports {
            s.set_udp_network(UDPNetwork::Ephemeral(EphemeralUDP::new(lo, hi)?));
        }
        if let Some(ip) = &cfg.public_ip {
            s.set_nat_1to1_ips(vec![ip.clone()], RTCIceCandidateType::Host);
        }
        // Lets participants on the server's own machine (tests, a local bot) connect.
        s.set_include_loopback_candidate(true);
        let api = APIBuilder::new()
            .with_media_engine(m)
            .with_interceptor_registry(registry)
            .with_setting_engine(s)
            .build();
        Ok(Sfu { api })
    }

    async fn peer(&self, ice: &[IceServer]) -> Result<Arc<RTCPeerConnection>, webrtc::Error> {
        let config = RTCConfiguration {
            ice_servers: ice
                .iter()
                .map(|s| RTCIceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone().unwrap_or_default(),
                    credential: s.credential.clone().unwrap_or_default(),
                })
                .collect(),
            ..Default::default()
        };
        Ok(Arc::new(self.api.new_peer_connection(config).await?))
    }
}

/// What webrtc-rs callbacks and forwarding tasks report to the room actor.
pub enum MediaEvent {
    LocalCandidate {
        participant_id: String,
        target: Transport,
        candidate: IceCandidate,
    },
    TrackArrived {
        participant_id: String,
        track: Arc<TrackRemote>,
    },
    /// A WHIP publisher's connection failed or closed.
    PublisherGone { participant_id: String },
    /// A WHEP viewer asked for a keyframe (or just connected).
    ViewerWantsKeyframe { viewer_id: String },
    /// A WHEP viewer's connection failed or closed without a `DELETE`.
    ViewerGone { viewer_id: String },
    /// The loudest level (RFC 6464, 0 loudest … 127 silent) of the last ~100 ms of a track.
    AudioLevel { participant_id: String, level: u8 },
    TrackEnded {
        participant_id: String,
        track_id: String,
    },
    KeyframeWanted {
        publisher_id: String,
        track_id: String,
    },
}

impl std::fmt::Debug for MediaEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaEvent::LocalCandidate { participant_id, .. } => {
                write!(f, "LocalCandidate({participant_id})")
            }
            MediaEvent::TrackArrived { participant_id, .. } => {
                write!(f, "TrackArrived({participant_id})")
            }
            MediaEvent::TrackEnded { track_id, .. } => write!(f, "TrackEnded({track_id})"),
            MediaEvent::KeyframeWanted { track_id, .. } => write!(f, "KeyframeWanted({track_id})"),
            MediaEvent::PublisherGone { participant_id } => {
                write!(f, "PublisherGone({participant_id})")
            }
            MediaEvent::ViewerWantsKeyframe { viewer_id } => {
                write!(f, "ViewerWantsKeyframe({viewer_id})")
            }
            MediaEvent::ViewerGone { viewer_id } => write!(f, "ViewerGone({viewer_id})"),
            MediaEvent::AudioLevel {
                participant_id,
                level,
            } => {
                write!(f, "AudioLevel({participant_id}, {level})")
            }
        }
    }
}

/// Sends media events into the room actor.
pub type EventSink = Arc<dyn Fn(MediaEvent) + Send + Sync>;

/// One forwarded track.
struct Published {
    info: TrackInfo,
    local: Arc<TrackLocalStaticRTP>,
    muted: Arc<AtomicBool>,
    media_ssrc: u32,
    last_keyframe_request: Option<Instant>,
}

#[derive(Default)]
struct Peer {
    publish: Option<Arc<RTCPeerConnection>>,
    subscribe: Option<Arc<RTCPeerConnection>>,
    /// By track id.
    published: HashMap<String, Published>,
    /// What this participant receives: track id → sender on `subscribe`.
    subscriptions: HashMap<String, Arc<RTCRtpSender>>,
    /// An offer on `subscribe` awaits its answer.
    offer_outstanding: bool,
    /// The track set changed while an offer was outstanding.
    renegotiate: bool,
    /// The id the publisher's offer gave the RFC 6464 audio-level header extension.
    audio_level_id: Option<u8>,
    /// A WHIP publisher only sends: it gets no `subscribe` connection.
    publish_only: bool,
}

/// Why a WHEP offer got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewError {
    /// Nobody (or not the one asked for) publishes audio or video.
    NothingToWatch(String),
    /// The offer could not be used.
    Refused(String),
}

/// A WHEP viewer: one peer connection receiving one participant's audio and camera.
struct Viewer {
    pc: Arc<RTCPeerConnection>,
    /// The participant shown; `None` follows the active speaker.
    pinned: Option<String>,
    showing: String,
    audio: Option<Arc<RTCRtpSender>>,
    video: Option<Arc<RTCRtpSender>>,
}

/// A message for one participant.
pub type Outgoing = (String, ServerMessage);

/// The media of one room.
pub struct RoomMedia {
    sfu: Arc<Sfu>,
    ice: Vec<IceServer>,
    events: EventSink,
    peers: HashMap<String, Peer>,
    speaker: crate::speaker::SpeakerDetector,
    viewers: HashMap<String, Viewer>,
}

fn kind_of(track_id: &str, codec: RTPCodecType) -> TrackKind {
    match (track_id, codec) {
        (_, RTPCodecType::Audio) => TrackKind::Audio,
        (id, _) if id.starts_with("screen") => TrackKind::Screen,
        _ => TrackKind::Video,
    }
}

/// The local description once ICE gathering is complete (at most 5 s).
async fn complete_sdp(pc: &RTCPeerConnection) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pc.ice_gathering_state()
        != webrtc::ice_transport::ice_gathering_state::RTCIceGatheringState::Complete
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or_else(|| "no local description".to_string())
}

/// Makes a BUNDLE offer use one set of ICE credentials. Some stacks (aiortc) offer a transport
/// per m-line and drop all but the first once BUNDLE is accepted; webrtc-rs wants a single set.
/// The first m-line's credentials and candidates stand for all.
pub fn unify_bundle(sdp: &str) -> String {
    if !sdp.lines().any(|l| l.starts_with("a=group:BUNDLE")) {
        return sdp.to_string();
    }
    let first = |key: &str| {
        sdp.lines()
            .find_map(|l| l.trim_end().strip_prefix(key).map(str::to_string))
    };
    let (Some(ufrag), Some(pwd)) = (first("a=ice-ufrag:"), first("a=ice-pwd:")) else {
        return sdp.to_string();
    };
    let mut section = 0usize;
    let mut out = Vec::new();
    for line in sdp.lines() {
        let l = line.trim_end();
        if l.starts_with("m=") {
            section += 1;
        }
        if section > 1 && (l.starts_with("a=candidate:") || l == "a=end-of-candidates") {
            continue;
        }
        if l.starts_with("a=ice-ufrag:") {
            out.push(format!("a=ice-ufrag:{ufrag}"));
        } else if l.starts_with("a=ice-pwd:") {
            out.push(format!("a=ice-pwd:{pwd}"));
        } else {
            out.push(l.to_string());
        }
    }
    out.join("\r\n") + "\r\n"
}

/// The id of a header extension in an SDP (`a=extmap:<id>[/direction] <uri>`).
fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("a=extmap:")?;
        let (id, u) = rest.split_once(' ')?;
        (u.split_whitespace().next() == Some(uri))
            .then(|| id.split('/').next()?.parse().ok())
            .flatten()
    })
}

fn to_init(c: &IceCandidate) -> RTCIceCandidateInit {
    RTCIceCandidateInit {
        candidate: c.candidate.clone(),
        sdp_mid: c.sdp_mid.clone(),
        sdp_mline_index: c.sdp_mline_index,
        username_fragment: None,
    }
}

fn error(code: &str, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error {
        code: code.into(),
        message: message.into(),
    }
}

impl RoomMedia {
    pub fn new(sfu: Arc<Sfu>, ice: Vec<IceServer>, events: EventSink) -> Self {
        RoomMedia {
            sfu,
            ice,
            events,
            peers: HashMap::new(),
            speaker: Default::default(),
            viewers: HashMap::new(),
        }
    }

    fn watch_candidates(&self, pc: &Arc<RTCPeerConnection>, pid: &str, target: Transport) {
        let events = self.events.clone();
        let pid = pid.to_string();
        pc.on_ice_candidate(Box::new(move |c| {
            let events = events.clone();
            let pid = pid.clone();
            Box::pin(async move {
                let Some(c) = c else { return };
                let Ok(init) = c.to_json() else { return };
                events(MediaEvent::LocalCandidate {
                    participant_id: pid,
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

    /// The client's offer on `publish`: answer it; its tracks arrive through `on_track`.
    pub async fn publish_offer(&mut self, pid: &str, sdp: String) -> Vec<Outgoing> {
        let pc = match self
            .peers
            .entry(pid.to_string())
            .or_default()
            .publish
            .clone()
        {
            Some(pc) => pc,
            None => {
                let pc = match self.sfu.peer(&self.ice).await {
                    Ok(pc) => pc,
                    Err(e) => return vec![(pid.into(), error("media_failed", e.to_string()))],
                };
                self.watch_candidates(&pc, pid, Transport::Publish);
                let events = self.events.clone();
                let owner = pid.to_string();
                pc.on_track(Box::new(move |track, _receiver, _transceiver| {
                    events(MediaEvent::TrackArrived {
                        participant_id: owner.clone(),
                        track,
                    });
                    Box::pin(async {})
                }));
                if let Some(p) = self.peers.get_mut(pid) {
                    p.publish = Some(pc.clone());
                }
                pc
            }
        };
        if let Some(p) = self.peers.get_mut(pid) {
            p.audio_level_id = extmap_id(&sdp, AUDIO_LEVEL_URI);
        }
        let answer = async {
            let offer = RTCSessionDescription::offer(unify_bundle(&sdp))?;
            pc.set_remote_description(offer).await?;
            let answer = pc.create_answer(None).await?;
            pc.set_local_description(answer.clone()).await?;
            Ok::<_, webrtc::Error>(answer.sdp)
        }
        .await;
        match answer {
            Ok(sdp) => vec![(
                pid.into(),
                ServerMessage::Answer {
                    target: Transport::Publish,
                    sdp,
                },
            )],
            Err(e) => vec![(
                pid.into(),
                error("invalid_sdp", format!("The offer was refused: {e}")),
            )],
        }
    }

    /// The client's answer on `subscribe`.
    pub async fn subscribe_answer(&mut self, pid: &str, sdp: String) -> Vec<Outgoing> {
        let Some(peer) = self.peers.get_mut(pid) else {
            return vec![(
                pid.into(),
                error("no_offer", "There is no offer to answer."),
            )];
        };
        let Some(pc) = peer.subscribe.clone().filter(|_| peer.offer_outstanding) else {
            return vec![(
                pid.into(),
                error("no_offer", "There is no offer to answer."),
            )];
        };
        let result = async {
            pc.set_remote_description(RTCSessionDescription::answer(sdp)?)
                .await
        }
        .await;
        peer.offer_outstanding = false;
        if let Err(e) = result {
            return vec![(
                pid.into(),
                error("invalid_sdp", format!("The answer was refused: {e}")),
            )];
        }
        if std::mem::take(&mut peer.renegotiate) {
            return self.offer(pid).await;
        }
        Vec::new()
    }

    pub async fn remote_candidate(
        &mut self,
        pid: &str,
        target: Transport,
        c: &IceCandidate,
    ) -> Vec<Outgoing> {
        let pc = self.peers.get(pid).and_then(|p| match target {
            Transport::Publish => p.publish.clone(),
            Transport::Subscribe => p.subscribe.clone(),
        });
        let Some(pc) = pc else {
            return vec![(
                pid.into(),
                error("no_connection", "That connection is not set up yet."),
            )];
        };
        match pc.add_ice_candidate(to_init(c)).await {
            Ok(()) => Vec::new(),
            Err(e) => vec![(pid.into(), error("invalid_candidate", e.to_string()))],
        }
    }

    /// A newcomer: set up their `subscribe` connection with everything already published.
    pub async fn joined(&mut self, pid: &str) -> Vec<Outgoing> {
        if self.peers.get(pid).is_some_and(|p| p.publish_only) {
            return Vec::new();
        }
        let tracks: Vec<(String, Arc<TrackLocalStaticRTP>)> = self
            .peers
            .iter()
            .filter(|(other, _)| other.as_str() != pid)
            .flat_map(|(_, p)| {
                p.published
                    .iter()
                    .map(|(id, t)| (id.clone(), t.local.clone()))
            })
            .collect();
        self.peers.entry(pid.to_string()).or_default();
        let mut changed = false;
        for (track_id, local) in tracks {
            changed |= self.subscribe(pid, &track_id, local).await;
        }
        let mut out = if changed {
            self.offer(pid).await
        } else {
            Vec::new()
        };
        // Newcomers learn who is speaking now, not only at the next change.
        if let Some(speaker) = self.speaker.current().filter(|s| *s != pid) {
            out.push((
                pid.to_string(),
                ServerMessage::ActiveSpeaker {
                    participant_id: Some(speaker.to_string()),
                },
            ));
        }
        out
    }

    async fn subscribe_pc(&mut self, pid: &str) -> Option<Arc<RTCPeerConnection>> {
        if let Some(pc) = self.peers.get(pid).and_then(|p| p.subscribe.clone()) {
            return Some(pc);
        }
        let pc = self.sfu.peer(&self.ice).await.ok()?;
        self.watch_candidates(&pc, pid, Transport::Subscribe);
        self.peers.entry(pid.to_string()).or_default().subscribe = Some(pc.clone());
        Some(pc)
    }

    /// Adds one forwarded track to `pid`'s `subscribe` connection.
    async fn subscribe(
        &mut self,
        pid: &str,
        track_id: &str,
        local: Arc<TrackLocalStaticRTP>,
    ) -> bool {
        let Some(pc) = self.subscribe_pc(pid).await else {
            return false;
        };
        let sender = match pc
            .add_track(local as Arc<dyn TrackLocal + Send + Sync>)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "adding a track to a subscriber failed");
                return false;
            }
        };
        // The subscriber's RTCP: keyframe requests go to the publisher (NACKs are answered
        // by the interceptors from their packet cache).
        let events = self.events.clone();
        let publisher = track_id.split(':').next().unwrap_or_default().to_string();
        let tid = track_id.to_string();
        let reader = sender.clone();
        tokio::spawn(async move {
            while let Ok((packets, _)) = reader.read_rtcp().await {
                let wants_keyframe = packets.iter().any(|p| {
                    let any = p.as_any();
                    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
                });
                if wants_keyframe {
                    events(MediaEvent::KeyframeWanted {
                        publisher_id: publisher.clone(),
                        track_id: tid.clone(),
                    });
                }
            }
        });
        if let Some(p) = self.peers.get_mut(pid) {
            p.subscriptions.insert(track_id.to_string(), sender);
        }
        true
    }

    /// Sends (or queues) an offer on `pid`'s `subscribe` connection.
    async fn offer(&mut self, pid: &str) -> Vec<Outgoing> {
        let Some(peer) = self.peers.get_mut(pid) else {
            return Vec::new();
        };
        let Some(pc) = peer.subscribe.clone() else {
            return Vec::new();
        };
        if peer.offer_outstanding {
            peer.renegotiate = true;
            return Vec::new();
        }
        let offer = async {
            let offer = pc.create_offer(None).await?;
            pc.set_local_description(offer.clone()).await?;
            Ok::<_, webrtc::Error>(offer.sdp)
        }
        .await;
        match offer {
            Ok(sdp) => {
                peer.offer_outstanding = true;
                vec![(
                    pid.into(),
                    ServerMessage::Offer {
                        target: Transport::Subscribe,
                        sdp,
                    },
                )]
            }
            Err(e) => {
                tracing::warn!(error = %e, "subscribe offer failed");
                Vec::new()
            }
        }
    }

    /// A publisher's track arrived: forward it to everyone else.
    pub async fn track_arrived(
        &mut self,
        pid: &str,
        remote: Arc<TrackRemote>,
        audio_muted: bool,
        video_muted: bool,
    ) -> Vec<Outgoing> {
        let audio_level_id = self.peers.get(pid).and_then(|p| p.audio_level_id);
        let kind = kind_of(&remote.id(), remote.kind());
        let track_id = format!("{pid}:{}", kind.as_str());
        let muted = match kind {
            TrackKind::Audio => audio_muted,
            TrackKind::Video => video_muted,
            TrackKind::Screen => false,
        };
        let local = Arc::new(TrackLocalStaticRTP::new(
            remote.codec().capability,
            track_id.clone(),
            pid.to_string(),
        ));
        let muted_flag = Arc::new(AtomicBool::new(muted));
        let info = TrackInfo {
            track_id: track_id.clone(),
            kind,
            muted,
        };
        // Forwarding: one task per published track, writing to every subscriber's binding.
        {
            let local = local.clone();
            let muted = muted_flag.clone();
            let events = self.events.clone();
            let (owner, tid) = (pid.to_string(), track_id.clone());
            let remote = remote.clone();
            let level_id = if kind == TrackKind::Audio {
                audio_level_id
            } else {
                None
            };
            tokio::spawn(async move {
                // Loudest level seen since the last report, and when that was.
                let mut loudest: Option<u8> = None;
                let mut reported = Instant::now();
                while let Ok((packet, _)) = remote.read_rtp().await {
                    if muted.load(Ordering::Relaxed) {
                        continue;
                    }
                    if let Some(level) = level_id
                        .and_then(|id| packet.header.get_extension(id))
                        .and_then(|b| b.first().map(|v| v & 0x7F))
                    {
                        loudest = Some(loudest.map_or(level, |l| l.min(level)));
                        if reported.elapsed() >= LEVEL_INTERVAL
                            && let Some(level) = loudest.take()
                        {
                            reported = Instant::now();
                            events(MediaEvent::AudioLevel {
                                participant_id: owner.clone(),
                                level,
                            });
                        }
                    }
                    // The publisher's header extensions use the ids of the publish connection;
                    // each subscribe connection negotiated its own. Strip them: the sender's
                    // interceptors add what the subscriber's connection needs (transport-cc).
                    let mut packet = packet;
                    packet.header.extension = false;
                    packet.header.extension_profile = 0;
                    packet.header.extensions.clear();
                    if let Err(e) = local.write_rtp(&packet).await
                        && !matches!(e, webrtc::Error::ErrClosedPipe)
                    {
                        tracing::debug!(error = %e, "forwarding write failed");
                    }
                }
                events(MediaEvent::TrackEnded {
                    participant_id: owner,
                    track_id: tid,
                });
            });
        }
        let Some(peer) = self.peers.get_mut(pid) else {
            return Vec::new();
        };
        if let Some(old) = peer.published.insert(
            track_id.clone(),
            Published {
                info: info.clone(),
                local: local.clone(),
                muted: muted_flag,
                media_ssrc: remote.ssrc(),
                last_keyframe_request: None,
            },
        ) {
            drop(old);
        }
        // The publisher hears of its own track too: confirmation for it, and the room records
        // the track from this message (so it is listed to newcomers even when nobody else is in
        // the room yet).
        let mut out = vec![(
            pid.to_string(),
            ServerMessage::TrackPublished {
                participant_id: pid.to_string(),
                track: info.clone(),
            },
        )];
        let others: Vec<String> = self
            .peers
            .iter()
            .filter(|(p, peer)| p.as_str() != pid && !peer.publish_only)
            .map(|(p, _)| p.clone())
            .collect();
        for other in others {
            out.push((
                other.clone(),
                ServerMessage::TrackPublished {
                    participant_id: pid.to_string(),
                    track: info.clone(),
                },
            ));
            if self.subscribe(&other, &track_id, local.clone()).await {
                out.extend(self.offer(&other).await);
            }
        }
        out
    }

    /// A published track ended (its publisher left or stopped it).
    pub async fn track_ended(&mut self, pid: &str, track_id: &str) -> Vec<Outgoing> {
        let Some(peer) = self.peers.get_mut(pid) else {
            return Vec::new();
        };
        if peer.published.remove(track_id).is_none() {
            return Vec::new();
        }
        self.unsubscribe_all(pid, track_id).await
    }

    async fn unsubscribe_all(&mut self, pid: &str, track_id: &str) -> Vec<Outgoing> {
        let mut out = vec![(
            pid.to_string(),
            ServerMessage::TrackUnpublished {
                participant_id: pid.to_string(),
                track_id: track_id.to_string(),
            },
        )];
        let others: Vec<String> = self
            .peers
            .keys()
            .filter(|p| p.as_str() != pid)
            .cloned()
            .collect();
        for other in others {
            out.push((
                other.clone(),
                ServerMessage::TrackUnpublished {
                    participant_id: pid.to_string(),
                    track_id: track_id.to_string(),
                },
            ));
            let Some(peer) = self.peers.get_mut(&other) else {
                continue;
            };
            let (Some(sender), Some(pc)) =
                (peer.subscriptions.remove(track_id), peer.subscribe.clone())
            else {
                continue;
            };
            if pc.remove_track(&sender).await.is_ok() {
                out.extend(self.offer(&other).await);
            }
        }
        out
    }

    /// A level report: tells everyone when the active speaker changes.
    pub async fn audio_level(&mut self, pid: &str, level: u8) -> Vec<Outgoing> {
        match self.speaker.observe(pid, level, Instant::now()) {
            Some(speaker) => {
                self.follow_speaker(&speaker).await;
                self.to_all(&ServerMessage::ActiveSpeaker {
                    participant_id: Some(speaker),
                })
            }
            None => Vec::new(),
        }
    }

    fn to_all(&self, msg: &ServerMessage) -> Vec<Outgoing> {
        self.peers
            .keys()
            .map(|p| (p.clone(), msg.clone()))
            .collect()
    }

    /// A participant is gone: close their connections, stop forwarding their tracks.
    pub async fn left(&mut self, pid: &str) -> Vec<Outgoing> {
        let was_speaker = self.speaker.current() == Some(pid);
        self.speaker.remove(pid);
        let Some(peer) = self.peers.remove(pid) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if was_speaker {
            out.extend(self.to_all(&ServerMessage::ActiveSpeaker {
                participant_id: None,
            }));
        }
        for track_id in peer.published.keys() {
            out.extend(self.unsubscribe_all(pid, track_id).await);
        }
        for pc in [peer.publish, peer.subscribe].into_iter().flatten() {
            let _ = pc.close().await;
        }
        // Viewers that followed the leaver go on with whoever speaks (or publishes) now.
        if let Some(next) = self.speaker_or_publisher() {
            self.follow_speaker(&next).await;
        }
        out
    }

    /// Mute stops forwarding at the server, whatever the client keeps sending.
    pub fn mute(&mut self, pid: &str, kind: TrackKind, muted: bool) {
        if let Some(peer) = self.peers.get_mut(pid) {
            for p in peer.published.values_mut().filter(|p| p.info.kind == kind) {
                p.muted.store(muted, Ordering::Relaxed);
                p.info.muted = muted;
            }
        }
    }

    /// Asks a publisher for a keyframe, at most every [`KEYFRAME_INTERVAL`] per track.
    pub async fn keyframe_wanted(&mut self, publisher: &str, track_id: &str) {
        let Some(peer) = self.peers.get_mut(publisher) else {
            return;
        };
        let Some(pc) = peer.publish.clone() else {
            return;
        };
        let Some(p) = peer.published.get_mut(track_id) else {
            return;
        };
        if p.info.kind == TrackKind::Audio
            || p.last_keyframe_request
                .is_some_and(|t| t.elapsed() < KEYFRAME_INTERVAL)
        {
            return;
        }
        p.last_keyframe_request = Some(Instant::now());
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: p.media_ssrc,
        };
        if let Err(e) = pc.write_rtcp(&[Box::new(pli)]).await {
            tracing::debug!(error = %e, "PLI not sent");
        }
    }

    /// WHIP: the offer of a publish-only participant. Answers with every candidate in the
    /// SDP (WHIP clients need not trickle).
    pub async fn whip_offer(&mut self, pid: &str, sdp: String) -> Result<String, String> {
        self.peers.entry(pid.to_string()).or_default().publish_only = true;
        let out = self.publish_offer(pid, sdp).await;
        if let Some((_, ServerMessage::Error { message, .. })) = out.first() {
            return Err(message.clone());
        }
        let pc = self
            .peers
            .get(pid)
            .and_then(|p| p.publish.clone())
            .ok_or("no connection")?;
        let events = self.events.clone();
        let owner = pid.to_string();
        pc.on_peer_connection_state_change(Box::new(move |s| {
            use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState as S;
            if matches!(s, S::Failed | S::Closed) {
                events(MediaEvent::PublisherGone {
                    participant_id: owner.clone(),
                });
            }
            Box::pin(async {})
        }));
        complete_sdp(&pc).await
    }

    /// Whom a viewer that follows the speaker shows: the active speaker, else anyone who
    /// publishes.
    fn speaker_or_publisher(&self) -> Option<String> {
        self.speaker.current().map(str::to_string).or_else(|| {
            self.peers
                .iter()
                .find(|(_, p)| !p.published.is_empty())
                .map(|(id, _)| id.clone())
        })
    }

    /// The audio and camera tracks a participant publishes.
    fn av_tracks(&self, pid: &str) -> Vec<(TrackKind, Arc<TrackLocalStaticRTP>)> {
        self.peers
            .get(pid)
            .map(|p| {
                p.published
                    .values()
                    .filter(|t| t.info.kind != TrackKind::Screen)
                    .map(|t| (t.info.kind, t.local.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// WHEP: a viewer of one participant (`pinned`) or of whoever is speaking, following the
    /// active speaker as it changes. Answers with every candidate in the SDP.
    pub async fn whep_offer(
        &mut self,
        viewer_id: &str,
        pinned: Option<String>,
        sdp: String,
    ) -> Result<String, ViewError> {
        let nothing = |m: &str| ViewError::NothingToWatch(m.to_string());
        let target = match &pinned {
            Some(p) if self.peers.contains_key(p) => p.clone(),
            Some(_) => return Err(nothing("No such participant in the room.")),
            None => self
                .speaker_or_publisher()
                .ok_or_else(|| nothing("Nobody in the room is publishing yet."))?,
        };
        let tracks = self.av_tracks(&target);
        if tracks.is_empty() {
            return Err(nothing("That participant publishes no audio or video."));
        }
        let refused = |e: webrtc::Error| ViewError::Refused(e.to_string());
        let pc = self.sfu.peer(&self.ice).await.map_err(refused)?;
        // Tracks first: the offer's receive-only m-lines then take them as they are matched.
        let mut viewer = Viewer {
            pc: pc.clone(),
            pinned,
            showing: target.clone(),
            audio: None,
            video: None,
        };
        for (kind, local) in tracks {
            let sender = pc
                .add_track(local as Arc<dyn TrackLocal + Send + Sync>)
                .await
                .map_err(refused)?;
            if kind == TrackKind::Audio {
                viewer.audio = Some(sender);
            } else {
                let events = self.events.clone();
                let (reader, vid) = (sender.clone(), viewer_id.to_string());
                tokio::spawn(async move {
                    while let Ok((packets, _)) = reader.read_rtcp().await {
                        if packets.iter().any(|p| {
                            p.as_any().is::<PictureLossIndication>()
                                || p.as_any().is::<FullIntraRequest>()
                        }) {
                            events(MediaEvent::ViewerWantsKeyframe {
                                viewer_id: vid.clone(),
                            });
                        }
                    }
                });
                viewer.video = Some(sender);
            }
        }
        let answer = async {
            pc.set_remote_description(RTCSessionDescription::offer(unify_bundle(&sdp))?)
                .await?;
            let answer = pc.create_answer(None).await?;
            pc.set_local_description(answer).await?;
            Ok::<_, webrtc::Error>(())
        }
        .await;
        if let Err(e) = answer {
            let _ = pc.close().await;
            return Err(ViewError::Refused(e.to_string()));
        }
        self.viewers.insert(viewer_id.to_string(), viewer);
        // A keyframe as soon as the viewer can receive it (one sent before its connection is up
        // is lost, and not every stack asks for another), and once more in case the first
        // request fell inside the publisher's rate limit.
        let (events, vid) = (self.events.clone(), viewer_id.to_string());
        pc.on_peer_connection_state_change(Box::new(move |s| {
            use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState as S;
            let (events, vid) = (events.clone(), vid.clone());
            match s {
                S::Connected => {
                    tokio::spawn(async move {
                        for wait in [0, KEYFRAME_INTERVAL.as_millis() as u64 + 100] {
                            tokio::time::sleep(Duration::from_millis(wait)).await;
                            events(MediaEvent::ViewerWantsKeyframe {
                                viewer_id: vid.clone(),
                            });
                        }
                    });
                }
                S::Failed | S::Closed => events(MediaEvent::ViewerGone { viewer_id: vid }),
                _ => {}
            }
            Box::pin(async {})
        }));
        complete_sdp(&pc).await.map_err(ViewError::Refused)
    }

    /// Viewers that follow the speaker switch to `speaker`'s tracks.
    async fn follow_speaker(&mut self, speaker: &str) {
        let tracks = self.av_tracks(speaker);
        if tracks.is_empty() {
            return;
        }
        let mut switched = false;
        for v in self.viewers.values_mut() {
            if v.pinned.is_some() || v.showing == speaker {
                continue;
            }
            v.showing = speaker.to_string();
            for (kind, local) in &tracks {
                let sender = if *kind == TrackKind::Audio {
                    &v.audio
                } else {
                    &v.video
                };
                if let Some(s) = sender
                    && let Err(e) = s
                        .replace_track(Some(local.clone() as Arc<dyn TrackLocal + Send + Sync>))
                        .await
                {
                    tracing::debug!(error = %e, "viewer not switched");
                }
            }
            switched = true;
        }
        if switched {
            self.keyframe_wanted(speaker, &format!("{speaker}:video"))
                .await;
        }
    }

    /// A viewer's keyframe request, for whoever it shows.
    pub async fn viewer_wants_keyframe(&mut self, viewer_id: &str) {
        if let Some(target) = self.viewers.get(viewer_id).map(|v| v.showing.clone()) {
            self.keyframe_wanted(&target, &format!("{target}:video"))
                .await;
        }
    }

    /// Ends a viewer if `user_id` opened it (or is an admin).
    /// A viewer whose connection is gone.
    pub async fn viewer_gone(&mut self, viewer_id: &str) {
        if let Some(v) = self.viewers.remove(viewer_id) {
            let _ = v.pc.close().await;
        }
    }

    pub fn viewer_count(&self) -> usize {
        self.viewers.len()
    }

    pub async fn close(&mut self) {
        for (_, v) in self.viewers.drain() {
            let _ = v.pc.close().await;
        }
        for (_, peer) in self.peers.drain() {
            for pc in [peer.publish, peer.subscribe].into_iter().flatten() {
                let _ = pc.close().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_offers_get_one_set_of_credentials() {
        let sdp = "v=0\r\na=group:BUNDLE 0 1\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:aaaa\r\na=ice-pwd:pa\r\n\
                   a=candidate:1 1 udp 1 10.0.0.1 1000 typ host\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=ice-ufrag:bbbb\r\na=ice-pwd:pb\r\n\
                   a=candidate:2 1 udp 1 10.0.0.1 2000 typ host\r\na=end-of-candidates\r\n";
        let u = unify_bundle(sdp);
        assert!(!u.contains("bbbb") && !u.contains("ice-pwd:pb"), "{u}");
        assert_eq!(u.matches("a=ice-ufrag:aaaa").count(), 2);
        assert!(u.contains(" 1000 typ host") && !u.contains(" 2000 typ host"));
        // Without BUNDLE nothing changes.
        let plain = "v=0\r\nm=audio 9 X 0\r\na=ice-ufrag:x\r\n";
        assert_eq!(unify_bundle(plain), plain);
    }

    #[test]
    fn finds_the_audio_level_extension() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
                   a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
                   a=extmap:7/sendonly urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n";
        assert_eq!(extmap_id(sdp, AUDIO_LEVEL_URI), Some(7));
        assert_eq!(extmap_id("v=0\r\n", AUDIO_LEVEL_URI), None);
    }
}
