//! The SFU: every participant sends their media to the server once, on a `publish` peer
//! connection, and receives everyone else's on a `subscribe` peer connection; the server
//! forwards RTP packets between them without decoding (webrtc-rs).
//!
//! One [`RoomMedia`] belongs to each room actor; it owns the room's peer connections and
//! forwarding tasks. webrtc-rs callbacks never touch its state: they post [`MediaEvent`]s to
//! the actor's channel, and the actor calls back in.

mod api;
mod downlink;
mod fanout;
mod whep;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use convo_shared::bwe::rtc::{self as bwe_rtc, Bwe};
use convo_shared::signal::{
    IceCandidate, IceServer, ServerMessage, TrackInfo, TrackKind, Transport,
};
use webrtc::api::interceptor_registry::configure_twcc_sender_only;
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
use webrtc::track::track_local::TrackLocal;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_remote::TrackRemote;

use crate::allocate::{Demand, allocate};

/// RFC 6464 client-to-mixer audio level.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// A keyframe is asked of a publisher at most this often per layer.
const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);
/// Every subscriber's layer is chosen again this often (and at once when a view changes).
const PLAN_INTERVAL: Duration = Duration::from_millis(250);
/// The largest view size or picture size a client may tell.
pub const MAX_PIXELS_SIDE: u32 = 16_384;

/// Network settings of the media plane.
#[derive(Debug, Clone, Default)]
pub struct SfuConfig {
    /// UDP ports for ICE, inclusive; `None` lets the OS choose.
    pub udp_ports: Option<(u16, u16)>,
    /// The public address to announce when behind 1:1 NAT.
    pub public_ip: Option<String>,
    /// `public_ip` as a server-reflexive candidate beside the host ones (else in their place).
    pub public_ip_alongside: bool,
    /// The local addresses ICE gathers on; empty: all.
    pub ice_ips: Vec<std::net::IpAddr>,
}

pub use api::Sfu;
use api::h264_capability;

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
    /// One of the layers `fan` forwards ended.
    TrackEnded {
        participant_id: String,
        track_id: String,
        fan: std::sync::Weak<fanout::Fanout>,
    },
    /// A subscriber asked for a keyframe of a track it receives.
    KeyframeWanted {
        track_id: String,
        subscriber: String,
    },
    /// Time to choose every subscriber's layer again.
    Tick,
    /// A publisher's receivers on `pc` are open for its first `offer` offers.
    PublishReady {
        participant_id: String,
        offer: u64,
        pc: Arc<RTCPeerConnection>,
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
            MediaEvent::Tick => f.write_str("Tick"),
            MediaEvent::PublishReady {
                participant_id,
                offer,
                ..
            } => {
                write!(f, "PublishReady({participant_id}, {offer})")
            }
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

/// One forwarded track: a down-track per subscriber (its own layer, its own numbering, and
/// nothing sent before the subscriber can receive it).
struct Published {
    info: TrackInfo,
    fan: Arc<fanout::Fanout>,
    muted: Arc<AtomicBool>,
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
    /// The id it gave frame marking, if it offered it.
    frame_marking_id: Option<u8>,
    /// The full size of its camera's picture, if told.
    camera_size: Option<(u32, u32)>,
    /// A WHIP publisher only sends: it gets no `subscribe` connection.
    publish_only: bool,
    /// The estimate of `subscribe`'s downlink and its probing.
    downlink: Option<downlink::Downlink>,
    /// Offers answered on `publish`.
    publish_offers: u64,
    /// Subscribe offers sent so far, and the last one answered.
    offers: u64,
    answered: u64,
}

/// Why a WHEP offer got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewError {
    /// Nobody (or not the one asked for) publishes audio or video.
    NothingToWatch(String),
    /// The caller watches this room enough times already.
    TooManyViewers(String),
    /// The offer could not be used.
    Refused(String),
}

/// A WHEP viewer: one peer connection receiving one participant's audio and camera, through
/// down-tracks of its own, moved to the next speaker's tracks when it follows the speaker.
struct Viewer {
    pc: Arc<RTCPeerConnection>,
    /// The participant shown; `None` follows the active speaker.
    pinned: Option<String>,
    showing: String,
    /// Which of the shown participant's tracks it has a down-track of (audio, camera).
    carries: (bool, bool),
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
    /// Sends [`MediaEvent::Tick`] while the room is live.
    ticker: tokio::task::JoinHandle<()>,
}

fn kind_of(track_id: &str, codec: RTPCodecType) -> TrackKind {
    match (track_id, codec) {
        (_, RTPCodecType::Audio) => TrackKind::Audio,
        (id, _) if id.starts_with("screen") => TrackKind::Screen,
        _ => TrackKind::Video,
    }
}

/// Dead m-lines a `subscribe` connection may gather before it is replaced
/// (`RoomMedia::rebuild_subscribe`): about 15 KB of SDP.
const MAX_DEAD_TRANSCEIVERS: usize = 64;

/// Transceivers of `pc` whose track was removed (their m-lines stay, inactive).
async fn dead_transceivers(pc: &RTCPeerConnection) -> usize {
    let mut n = 0;
    for t in pc.get_transceivers().await {
        if t.sender().await.track().await.is_none() {
            n += 1;
        }
    }
    n
}

/// Whether every receiving transceiver of `pc` has its receiver started.
async fn receivers_open(pc: &RTCPeerConnection) -> bool {
    for t in pc.get_transceivers().await {
        if t.current_direction().has_recv() && t.receiver().await.tracks().await.is_empty() {
            return false;
        }
    }
    true
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
        let tick = events.clone();
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(PLAN_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                tick(MediaEvent::Tick);
            }
        });
        RoomMedia {
            sfu,
            ice,
            events,
            peers: HashMap::new(),
            speaker: Default::default(),
            viewers: HashMap::new(),
            ticker,
        }
    }

    /// The forwarding of a track, by its id (`<publisher>:<kind>`).
    fn fan_of(&self, track_id: &str) -> Option<(String, Arc<fanout::Fanout>)> {
        let publisher = track_id.split(':').next()?;
        let fan = self
            .peers
            .get(publisher)?
            .published
            .get(track_id)?
            .fan
            .clone();
        Some((publisher.to_string(), fan))
    }

    /// Every forwarded track.
    fn fans(&self) -> Vec<Arc<fanout::Fanout>> {
        self.peers
            .values()
            .flat_map(|p| p.published.values().map(|t| t.fan.clone()))
            .collect()
    }

    /// Carries out a video track's plan: keyframe requests to its publisher, and the layers
    /// wanted of it when they changed.
    async fn apply(&self, track_id: &str) -> Vec<Outgoing> {
        let Some((publisher, v)) = self.fan_of(track_id) else {
            return Vec::new();
        };
        let plan = v.plan(Instant::now(), KEYFRAME_INTERVAL);
        self.ask_keyframes(&publisher, &plan.keyframes).await;
        let kind = self
            .peers
            .get(&publisher)
            .and_then(|p| p.published.get(track_id))
            .map(|p| p.info.kind);
        match (plan.wanted, kind) {
            (Some(rids), Some(kind)) => {
                vec![(publisher, ServerMessage::LayersWanted { kind, rids })]
            }
            _ => Vec::new(),
        }
    }

    async fn ask_keyframes(&self, publisher: &str, ssrcs: &[u32]) {
        let Some(pc) = self.peers.get(publisher).and_then(|p| p.publish.clone()) else {
            return;
        };
        for &media_ssrc in ssrcs {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            };
            if let Err(e) = pc.write_rtcp(&[Box::new(pli)]).await {
                tracing::debug!(error = %e, "PLI not sent");
            }
        }
    }

    /// Shares each subscriber's estimated downlink among the tracks it receives: the highest
    /// layer each may have. Without a live estimate (a client that sends no transport-cc
    /// feedback) nothing is limited.
    fn share_downlinks(&self) {
        let now = Instant::now();
        let fans = self.fans();
        for (pid, peer) in &self.peers {
            let Some(dl) = &peer.downlink else { continue };
            let mine: Vec<(&Arc<fanout::Fanout>, Demand)> = fans
                .iter()
                .filter_map(|f| f.demand(pid, now).map(|d| (f, d)))
                .collect();
            let Some(budget) = dl.budget(now) else {
                for (f, _) in &mine {
                    f.set_cap(pid, None);
                }
                continue;
            };
            let demands: Vec<Demand> = mine.iter().map(|(_, d)| d.clone()).collect();
            // A little under the estimate: headers and retransmissions ride on top.
            let mut a = allocate(budget / 20 * 19, &demands);
            // Until the subscriber's reports measured the path the estimate is only where it
            // starts: it limits the layer, it pauses nothing. (A joiner receiving four
            // voices and a camera at the 300k start estimate had the camera paused, and
            // paused it stayed when the probes that should lift it gave no result: the
            // estimate may not exceed 1.5x what arrives, and only audio arrived.)
            if !dl.is_measured(now) {
                for cap in &mut a.caps {
                    cap.get_or_insert(0);
                }
            }
            // Probes aim past the cost: an upgrade needs room to spare (and the headroom
            // kept above).
            dl.set_wanted(a.wanted_bps / 4 * 5);
            tracing::debug!(subscriber = %pid, budget, wanted = a.wanted_bps, caps = ?a.caps, bwe = dl.summary(now), "downlink shared");
            for ((f, _), cap) in mine.iter().zip(a.caps) {
                f.set_cap(pid, Some(cap));
            }
        }
    }

    /// Every video track's plan (layers become active or idle with time).
    pub async fn tick(&mut self) -> Vec<Outgoing> {
        self.share_downlinks();
        let tracks: Vec<String> = self
            .peers
            .values()
            .flat_map(|p| p.published.keys().cloned())
            .collect();
        let mut out = Vec::new();
        for track_id in tracks {
            out.extend(self.apply(&track_id).await);
        }
        out
    }

    /// `pid`'s receivers are open for what it answered up to its `offer`-th offer (all it
    /// answered when not said): those down-tracks start (from a keyframe, asked for now).
    /// A client that answered again before saying so is not taken to be ready for the later
    /// offer's tracks.
    pub async fn subscribe_ready(&mut self, pid: &str, offer: Option<u64>) -> Vec<Outgoing> {
        let Some(answered) = self
            .peers
            .get(pid)
            .map(|p| offer.map_or(p.answered, |o| o.min(p.answered)))
        else {
            return Vec::new();
        };
        let ready: Vec<String> = self
            .peers
            .values()
            .flat_map(|p| {
                p.published
                    .iter()
                    .filter(|(_, t)| t.fan.mark_ready(pid, answered))
                    .map(|(id, _)| id.clone())
            })
            .collect();
        let mut out = Vec::new();
        for track_id in ready {
            out.extend(self.apply(&track_id).await);
        }
        out
    }

    /// `pid` draws `track_id` at `width` × `height`.
    pub async fn view(
        &mut self,
        pid: &str,
        track_id: &str,
        width: u32,
        height: u32,
    ) -> Vec<Outgoing> {
        if width > MAX_PIXELS_SIDE || height > MAX_PIXELS_SIDE {
            return vec![(
                pid.into(),
                error(
                    "invalid_message",
                    format!("A view is at most {MAX_PIXELS_SIDE} pixels a side."),
                ),
            )];
        }
        let Some((_, v)) = self.fan_of(track_id) else {
            // A track that just ended, or another's id: nothing to do.
            return Vec::new();
        };
        if !v.set_view(pid, crate::forward::ViewSize { width, height }) {
            return Vec::new();
        }
        self.apply(track_id).await
    }

    /// `pid`'s camera (or screen) picture is `width` × `height` at its full layer.
    pub fn source_size(
        &mut self,
        pid: &str,
        kind: TrackKind,
        width: u32,
        height: u32,
    ) -> Vec<Outgoing> {
        if !(16..=MAX_PIXELS_SIDE).contains(&width) || !(16..=MAX_PIXELS_SIDE).contains(&height) {
            return vec![(
                pid.into(),
                error(
                    "invalid_message",
                    format!("A picture is 16 to {MAX_PIXELS_SIDE} pixels a side."),
                ),
            )];
        }
        let Some(peer) = self.peers.get_mut(pid) else {
            return Vec::new();
        };
        if kind == TrackKind::Video {
            peer.camera_size = Some((width, height));
        }
        if let Some(p) = peer.published.get(&format!("{pid}:{}", kind.as_str())) {
            p.fan.set_top(width, height);
        }
        Vec::new()
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
        let peer = self.peers.entry(pid.to_string()).or_default();
        let publish_only = peer.publish_only;
        let pc = match peer.publish.clone() {
            Some(pc) => pc,
            None => {
                // Our clients may add a simulcast camera later; a WHIP publisher offers once.
                let simulcast = !publish_only || sdp.contains("a=simulcast:");
                let pc = match self.sfu.peer(&self.ice, simulcast).await {
                    Ok((pc, _)) => pc,
                    Err(e) => return vec![(pid.into(), error("media_failed", e.to_string()))],
                };
                self.watch_candidates(&pc, pid, Transport::Publish);
                let events = self.events.clone();
                let owner = pid.to_string();
                pc.on_track(Box::new(move |track, _receiver, _transceiver| {
                    // The client's probe padding: read (so that it is acknowledged) and
                    // dropped.
                    if track.id() == bwe_rtc::PROBE_TRACK_ID {
                        tokio::spawn(async move { while track.read_rtp().await.is_ok() {} });
                        return Box::pin(async {});
                    }
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
            p.frame_marking_id = extmap_id(&sdp, crate::forward::FRAME_MARKING_URI);
        }
        let answer = async {
            let offer = RTCSessionDescription::offer(unify_bundle(&sdp))?;
            pc.set_remote_description(offer).await?;
            let answer = pc.create_answer(None).await?;
            pc.set_local_description(answer.clone()).await?;
            Ok::<_, webrtc::Error>(answer.sdp)
        }
        .await;
        if answer.is_ok() {
            // webrtc-rs opens the receivers a moment after answering (once connected, the
            // first time): the publisher is told when it may send.
            let offer = self.peers.get_mut(pid).map_or(0, |p| {
                p.publish_offers += 1;
                p.publish_offers
            });
            let (events, owner, pc) = (self.events.clone(), pid.to_string(), pc.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(15);
                while !receivers_open(&pc).await && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                events(MediaEvent::PublishReady {
                    participant_id: owner,
                    offer,
                    pc,
                });
            });
        }
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
        peer.answered = peer.offers;
        let (answered, again) = (peer.answered, std::mem::take(&mut peer.renegotiate));
        let now = Instant::now();
        for fan in self.fans() {
            fan.mark_answered(pid, answered, now);
        }
        if again {
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
        let tracks: Vec<String> = self
            .peers
            .iter()
            .filter(|(other, _)| other.as_str() != pid)
            .flat_map(|(_, p)| p.published.keys().cloned())
            .collect();
        self.peers.entry(pid.to_string()).or_default();
        let mut changed = false;
        for track_id in &tracks {
            changed |= self.subscribe(pid, track_id).await;
        }
        let mut out = if changed {
            self.offer(pid).await
        } else {
            Vec::new()
        };
        for track_id in &tracks {
            out.extend(self.apply(track_id).await);
        }
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
        let (pc, bwe) = self.sfu.peer(&self.ice, false).await.ok()?;
        self.watch_candidates(&pc, pid, Transport::Subscribe);
        let downlink = match bwe {
            Some(bwe) => match downlink::Downlink::start(&pc, bwe, h264_capability()).await {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!(error = %e, "no probe track: the downlink is not estimated");
                    None
                }
            },
            None => None,
        };
        let peer = self.peers.entry(pid.to_string()).or_default();
        peer.subscribe = Some(pc.clone());
        peer.downlink = downlink;
        Some(pc)
    }

    /// A new down-track that carries `track_id` to `subscriber`.
    fn outgoing_for(&self, subscriber: &str, track_id: &str) -> Option<Arc<TrackLocalStaticRTP>> {
        Some(self.fan_of(track_id)?.1.attach(subscriber))
    }

    /// Adds one forwarded track to `pid`'s `subscribe` connection.
    async fn subscribe(&mut self, pid: &str, track_id: &str) -> bool {
        let Some(pc) = self.subscribe_pc(pid).await else {
            return false;
        };
        let Some(local) = self.outgoing_for(pid, track_id) else {
            return false;
        };
        // A transceiver of its own, always: webrtc-rs 0.17's `add_track` reuses the
        // transceiver a track of the same id was removed from, and fails there for good
        // ("new track must have the same envelope") once it had sent — a participant who
        // reconnected (same track ids) was never seen or heard again.
        let sender = match pc
            .add_transceiver_from_track(local as Arc<dyn TrackLocal + Send + Sync>, None)
            .await
        {
            Ok(t) => t.sender().await,
            Err(e) => {
                tracing::warn!(error = %e, "adding a track to a subscriber failed");
                return false;
            }
        };
        // The subscriber's RTCP: keyframe requests go to the publisher (NACKs are answered
        // by the interceptors from their packet cache).
        let events = self.events.clone();
        let tid = track_id.to_string();
        let subscriber = pid.to_string();
        let reader = sender.clone();
        tokio::spawn(async move {
            while let Ok((packets, _)) = reader.read_rtcp().await {
                let wants_keyframe = packets.iter().any(|p| {
                    let any = p.as_any();
                    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
                });
                if wants_keyframe {
                    events(MediaEvent::KeyframeWanted {
                        track_id: tid.clone(),
                        subscriber: subscriber.clone(),
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
        let Some(mut pc) = peer.subscribe.clone() else {
            return Vec::new();
        };
        if peer.offer_outstanding {
            peer.renegotiate = true;
            return Vec::new();
        }
        let restart = dead_transceivers(&pc).await > MAX_DEAD_TRANSCEIVERS;
        if restart {
            match self.rebuild_subscribe(pid).await {
                Some(new) => pc = new,
                None => return Vec::new(),
            }
        }
        let Some(peer) = self.peers.get_mut(pid) else {
            return Vec::new();
        };
        let offer = async {
            let offer = pc.create_offer(None).await?;
            pc.set_local_description(offer.clone()).await?;
            Ok::<_, webrtc::Error>(offer.sdp)
        }
        .await;
        match offer {
            Ok(sdp) => {
                peer.offer_outstanding = true;
                peer.offers += 1;
                let n = peer.offers;
                for fan in self.fans() {
                    fan.mark_offered(pid, n);
                }
                vec![(
                    pid.into(),
                    ServerMessage::Offer {
                        target: Transport::Subscribe,
                        sdp,
                        restart,
                    },
                )]
            }
            Err(e) => {
                tracing::warn!(error = %e, "subscribe offer failed");
                Vec::new()
            }
        }
    }

    /// Replaces `pid`'s `subscribe` connection by a new one carrying the same tracks (its
    /// offer says `restart`). webrtc-rs 0.17 never reuses the m-line of a removed track: a
    /// participant who stays while others come and go gathers one dead m-line per track that
    /// left, every offer and answer carries them all, and after some 300 the answer outgrew
    /// the signaling socket's 64 KiB message limit — the socket closed and the participant
    /// reconnected (the leak test's host, every 80 s).
    async fn rebuild_subscribe(&mut self, pid: &str) -> Option<Arc<RTCPeerConnection>> {
        let peer = self.peers.get_mut(pid)?;
        let old = peer.subscribe.take()?;
        let tracks: Vec<String> = std::mem::take(&mut peer.subscriptions)
            .into_keys()
            .collect();
        peer.downlink = None;
        peer.offers = 0;
        peer.answered = 0;
        peer.renegotiate = false;
        tracing::debug!(participant_id = %pid, tracks = tracks.len(), "subscribe connection rebuilt");
        for fan in self.fans() {
            fan.detach(pid);
        }
        let _ = old.close().await;
        for track_id in &tracks {
            self.subscribe(pid, track_id).await;
        }
        match self.peers.get(pid).and_then(|p| p.subscribe.clone()) {
            Some(pc) => Some(pc),
            // Nothing to carry: the next track gets a connection of its own.
            None => self.subscribe_pc(pid).await,
        }
    }

    /// A publisher's track arrived: forward it to everyone else. A simulcast layer of a
    /// track already forwarded joins it.
    pub async fn track_arrived(
        &mut self,
        pid: &str,
        remote: Arc<TrackRemote>,
        audio_muted: bool,
        video_muted: bool,
    ) -> Vec<Outgoing> {
        let Some(peer) = self.peers.get(pid) else {
            return Vec::new();
        };
        let (audio_level_id, marking_id, camera_size) =
            (peer.audio_level_id, peer.frame_marking_id, peer.camera_size);
        let kind = kind_of(&remote.id(), remote.kind());
        let track_id = format!("{pid}:{}", kind.as_str());
        // Says which fan-out ended: a reconnected publisher's track of the same id may be
        // forwarded by a new one by the time the old one's end is handled.
        let ended = |fan: &Arc<fanout::Fanout>| -> Box<dyn FnOnce() + Send> {
            let events = self.events.clone();
            let (owner, tid, fan) = (pid.to_string(), track_id.clone(), Arc::downgrade(fan));
            Box::new(move || {
                events(MediaEvent::TrackEnded {
                    participant_id: owner,
                    track_id: tid,
                    fan,
                })
            })
        };
        let rid = remote.rid().to_string();
        let levels = match (kind, audio_level_id) {
            (TrackKind::Audio, Some(id)) => {
                let (events, owner) = (self.events.clone(), pid.to_string());
                Some(fanout::Levels {
                    id,
                    report: Box::new(move |level| {
                        events(MediaEvent::AudioLevel {
                            participant_id: owner.clone(),
                            level,
                        })
                    }),
                })
            }
            _ => None,
        };
        if !rid.is_empty()
            && let Some(p) = peer.published.get(&track_id)
            && p.fan.is_simulcast()
        {
            // Another layer of a track everyone already receives.
            p.fan
                .add_layer(remote, marking_id, p.muted.clone(), None, ended(&p.fan));
            return self.apply(&track_id).await;
        }
        let muted = match kind {
            TrackKind::Audio => audio_muted,
            TrackKind::Video => video_muted,
            TrackKind::Screen => false,
        };
        let muted_flag = Arc::new(AtomicBool::new(muted));
        let info = TrackInfo {
            track_id: track_id.clone(),
            kind,
            muted,
        };
        let fan = Arc::new(fanout::Fanout::new(
            &track_id,
            pid,
            kind,
            remote.codec().capability,
            !rid.is_empty(),
        ));
        if let (TrackKind::Video, Some((w, h))) = (kind, camera_size) {
            fan.set_top(w, h);
        }
        let on_end = ended(&fan);
        fan.add_layer(remote, marking_id, muted_flag.clone(), levels, on_end);
        let Some(peer) = self.peers.get_mut(pid) else {
            return Vec::new();
        };
        if let Some(old) = peer.published.insert(
            track_id.clone(),
            Published {
                info: info.clone(),
                fan,
                muted: muted_flag,
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
            if self.subscribe(&other, &track_id).await {
                out.extend(self.offer(&other).await);
            }
        }
        out.extend(self.apply(&track_id).await);
        out
    }

    /// A published track ended (its publisher left or stopped it), if `fan` still forwards
    /// it: the end of a track a reconnection replaced must not take the new one away.
    pub async fn track_ended(
        &mut self,
        pid: &str,
        track_id: &str,
        fan: &std::sync::Weak<fanout::Fanout>,
    ) -> Vec<Outgoing> {
        let Some(peer) = self.peers.get_mut(pid) else {
            return Vec::new();
        };
        let current = peer
            .published
            .get(track_id)
            .is_some_and(|p| std::ptr::eq(Arc::as_ptr(&p.fan), fan.as_ptr()));
        if !current {
            tracing::debug!(participant_id = %pid, track_id, "the end of a replaced track");
            return Vec::new();
        }
        peer.published.remove(track_id);
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
        for fan in self.fans() {
            fan.detach(pid);
        }
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
    /// `pid`'s receivers on `pc` are open for its first `offer` offers: it is told it may send
    /// them, unless `pc` is no longer its `publish` connection (it reconnected meanwhile: the
    /// new one's readiness is its own).
    pub fn publish_ready(
        &self,
        pid: &str,
        offer: u64,
        pc: &Arc<RTCPeerConnection>,
    ) -> Vec<Outgoing> {
        let current = self
            .peers
            .get(pid)
            .and_then(|p| p.publish.as_ref())
            .is_some_and(|p| Arc::ptr_eq(p, pc));
        if !current {
            return Vec::new();
        }
        vec![(
            pid.to_string(),
            ServerMessage::PublishReady { offer: Some(offer) },
        )]
    }

    pub fn mute(&mut self, pid: &str, kind: TrackKind, muted: bool) {
        if let Some(peer) = self.peers.get_mut(pid) {
            for p in peer.published.values_mut().filter(|p| p.info.kind == kind) {
                p.muted.store(muted, Ordering::Relaxed);
                p.info.muted = muted;
            }
        }
    }

    /// `subscriber` asked for a keyframe of `track_id`: the publisher is asked for one on the
    /// layer it gets, at most every [`KEYFRAME_INTERVAL`] per layer.
    pub async fn keyframe_wanted(&mut self, track_id: &str, subscriber: &str) {
        let Some((publisher, v)) = self.fan_of(track_id) else {
            return;
        };
        if let Some(ssrc) = v.keyframe_for(subscriber, Instant::now(), KEYFRAME_INTERVAL) {
            self.ask_keyframes(&publisher, &[ssrc]).await;
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

    pub fn viewer_count(&self) -> usize {
        self.viewers.len()
    }

    pub async fn close(&mut self) {
        self.ticker.abort();
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
