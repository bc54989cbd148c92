//! Forwarding of one published track to its subscribers: the track's layers (one per
//! simulcast RID, or a single one) and a down-track per subscriber, each with its own
//! outgoing track so that it can be on its own layer, start at its own keyframe and wait
//! until the subscriber can receive. The decisions are `crate::forward`'s; this carries them
//! out on packets.
//!
//! A subscriber's down-track sends nothing until the subscriber says its receivers are open
//! (`subscribe_ready`), or a while after it answered the offer that added the track: webrtc-rs
//! opens receivers after answering, and packets that come first are taken for an unknown
//! stream, probed and dropped, and the stream closed under the receiver.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use convo_shared::signal::TrackKind;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::track::track_local::TrackLocalWriter;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_remote::TrackRemote;

use crate::allocate::Demand;
use crate::forward::{self, DownTrack, KeyframeStarts, LAYER_IDLE, Layer, ViewSize};

/// RIDs our clients use, lowest layer first.
pub const RIDS: [&str; 3] = ["q", "h", "f"];
/// The full layer's size until the publisher says (`source_size`).
const ASSUMED_TOP: (u32, u32) = (1280, 720);
/// A subscriber that answered but never said it is ready gets media this long after: longer
/// than our engine waits for its receivers before it says so anyway (10 s), so that the
/// fallback never races a slow connection's receivers (a 1.5 s fallback lost a joiner's
/// video now and then on a busy 2-core machine, where the connection took longer to come up).
const READY_FALLBACK: Duration = Duration::from_secs(15);

/// One received layer.
struct LayerIn {
    rid: String,
    ssrc: u32,
    last_packet: Option<Instant>,
    starts: KeyframeStarts,
    last_keyframe_request: Option<Instant>,
    rate: RateMeter,
}

/// A layer's bitrate over windows of about a second.
#[derive(Default)]
struct RateMeter {
    since: Option<Instant>,
    bytes: u64,
    bps: u64,
}

/// Per packet on the wire beyond its payload: RTP header, extensions, SRTP tag, UDP and IP.
const PACKET_OVERHEAD: u64 = 12 + 12 + 10 + 8 + 20;

impl RateMeter {
    fn add(&mut self, bytes: usize, now: Instant) {
        let since = *self.since.get_or_insert(now);
        self.bytes += bytes as u64 + PACKET_OVERHEAD;
        let span = now.saturating_duration_since(since);
        // A first reading early (the first plans need one), then one a second.
        let window = if self.bps == 0 {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        };
        if span >= window {
            let bps = self.bytes * 8 * 1000 / (span.as_millis() as u64).max(1);
            // Smoothed: keyframes make single windows jump.
            self.bps = if self.bps == 0 {
                bps
            } else {
                (self.bps + bps) / 2
            };
            self.bytes = 0;
            self.since = Some(now);
        }
    }
}

/// One subscriber's (or WHEP viewer's) stream of this track.
pub struct Down {
    local: Arc<TrackLocalStaticRTP>,
    state: DownTrack,
    view: Option<ViewSize>,
    /// The highest layer the subscriber's downlink allows (`None`: no limit known;
    /// `Some(None)`: none fits, paused).
    cap: Option<Option<usize>>,
    /// The subscribe offer that first carried it (0: not offered yet), when that offer was
    /// answered, and whether the subscriber can receive it.
    offered_in: u64,
    answered_at: Option<Instant>,
    ready: bool,
}

struct Shared {
    /// By rank, lowest first; one slot for a track without simulcast.
    layers: Vec<Option<LayerIn>>,
    top: (u32, u32),
    downs: HashMap<String, Down>,
    /// The RIDs last asked of the publisher.
    wanted: Option<Vec<String>>,
}

/// What [`Fanout::plan`] wants done.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Ask the publisher for a keyframe on these SSRCs.
    pub keyframes: Vec<u32>,
    /// Tell the publisher which layers to encode (when it changed).
    pub wanted: Option<Vec<String>>,
}

/// Audio levels (RFC 6464) of an audio track, reported as they are read.
pub struct Levels {
    /// The extension's id on the publish connection.
    pub id: u8,
    /// Called with the loudest level of each ~100 ms.
    pub report: Box<dyn Fn(u8) + Send + Sync>,
}

/// Audio levels are reported this often per track.
const LEVEL_INTERVAL: Duration = Duration::from_millis(100);

/// A published track as forwarded.
pub struct Fanout {
    track_id: String,
    publisher: String,
    kind: TrackKind,
    codec: RTCRtpCodecCapability,
    simulcast: bool,
    shared: Arc<Mutex<Shared>>,
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn layer_view(&self, now: Instant) -> Vec<Layer> {
        let n = self.layers.len();
        self.layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let shift = (n - 1 - i) as u32;
                let active = l.as_ref().is_some_and(|l| {
                    l.last_packet
                        .is_some_and(|t| now.saturating_duration_since(t) < LAYER_IDLE)
                });
                Layer {
                    width: self.top.0 >> shift,
                    height: self.top.1 >> shift,
                    active,
                    bitrate: l.as_ref().filter(|_| active).map_or(0, |l| l.rate.bps),
                }
            })
            .collect()
    }

    /// The SSRC to ask a keyframe of on `layer`, unless one was asked lately.
    fn keyframe_request(&mut self, layer: usize, now: Instant, every: Duration) -> Option<u32> {
        let l = self.layers.get_mut(layer)?.as_mut()?;
        if l.last_keyframe_request
            .is_some_and(|t| now.saturating_duration_since(t) < every)
        {
            return None;
        }
        l.last_keyframe_request = Some(now);
        Some(l.ssrc)
    }

    fn rid_of(&self, layer: usize) -> String {
        match self.layers.get(layer) {
            Some(Some(l)) => l.rid.clone(),
            _ => RIDS
                .get(layer)
                .map_or_else(String::new, |r| (*r).to_string()),
        }
    }
}

impl Fanout {
    pub fn new(
        track_id: &str,
        publisher: &str,
        kind: TrackKind,
        codec: RTCRtpCodecCapability,
        simulcast: bool,
    ) -> Self {
        let simulcast = simulcast && kind != TrackKind::Audio;
        let slots = if simulcast { RIDS.len() } else { 1 };
        Fanout {
            track_id: track_id.to_string(),
            publisher: publisher.to_string(),
            kind,
            codec,
            simulcast,
            shared: Arc::new(Mutex::new(Shared {
                layers: (0..slots).map(|_| None).collect(),
                top: ASSUMED_TOP,
                downs: HashMap::new(),
                wanted: None,
            })),
        }
    }

    pub fn is_simulcast(&self) -> bool {
        self.simulcast
    }

    /// The publisher's full picture size.
    pub fn set_top(&self, width: u32, height: u32) {
        lock(&self.shared).top = (width.max(2), height.max(2));
    }

    /// A received layer arrived (`on_track`): forward it. `marking_id`: the frame-marking
    /// extension's id on the publish connection, when negotiated (else keyframes are found
    /// in the H.264 payload). `on_end` runs when the last layer ends.
    pub fn add_layer(
        &self,
        remote: Arc<TrackRemote>,
        marking_id: Option<u8>,
        muted: Arc<AtomicBool>,
        levels: Option<Levels>,
        on_end: Box<dyn FnOnce() + Send>,
    ) {
        let rid = remote.rid().to_string();
        let slot = {
            let mut sh = lock(&self.shared);
            let slot = if self.simulcast {
                forward::rid_rank(&rid)
                    .filter(|&i| sh.layers[i].is_none())
                    .or_else(|| sh.layers.iter().position(Option::is_none))
            } else {
                Some(0)
            };
            let Some(slot) = slot else {
                tracing::warn!(track = %self.track_id, %rid, "a layer too many, not forwarded");
                return;
            };
            sh.layers[slot] = Some(LayerIn {
                rid,
                ssrc: remote.ssrc(),
                last_packet: None,
                starts: KeyframeStarts::default(),
                last_keyframe_request: None,
                rate: RateMeter::default(),
            });
            slot
        };
        let shared = self.shared.clone();
        let keyframes = if self.kind == TrackKind::Audio {
            Keyframes::Every
        } else {
            match marking_id {
                Some(id) => Keyframes::Marked(id),
                None => Keyframes::H264,
            }
        };
        let simulcast = self.simulcast;
        tokio::spawn(async move {
            forward_layer(remote, slot, keyframes, simulcast, muted, levels, &shared).await;
            let mut sh = lock(&shared);
            sh.layers[slot] = None;
            let last = sh.layers.iter().all(Option::is_none);
            drop(sh);
            if last {
                on_end();
            }
        });
    }

    /// A subscriber's stream of this track: a new outgoing track to add to its connection.
    /// It carries nothing until the subscriber is ready ([`Fanout::mark_ready`]).
    pub fn attach(&self, subscriber: &str) -> Arc<TrackLocalStaticRTP> {
        self.attach_with(subscriber, false)
    }

    /// A WHEP viewer's stream: it offered, so its receivers are ready when it gets the answer.
    pub fn attach_ready(&self, viewer: &str) -> Arc<TrackLocalStaticRTP> {
        self.attach_with(viewer, true)
    }

    fn attach_with(&self, subscriber: &str, ready: bool) -> Arc<TrackLocalStaticRTP> {
        let local = Arc::new(TrackLocalStaticRTP::new(
            self.codec.clone(),
            self.track_id.clone(),
            self.publisher.clone(),
        ));
        lock(&self.shared).downs.insert(
            subscriber.to_string(),
            Down {
                local: local.clone(),
                state: DownTrack::new(self.codec.clock_rate),
                view: None,
                cap: None,
                offered_in: 0,
                answered_at: None,
                ready,
            },
        );
        local
    }

    /// Takes over a down-track from another track (a viewer following the speaker): its
    /// numbering goes on from where it was, at this track's next keyframe.
    pub fn insert(&self, subscriber: &str, mut down: Down) {
        down.state.switch_source();
        lock(&self.shared)
            .downs
            .insert(subscriber.to_string(), down);
    }

    pub fn detach(&self, subscriber: &str) -> Option<Down> {
        lock(&self.shared).downs.remove(subscriber)
    }

    /// The subscribe offer numbered `offer` carries `subscriber`'s down-track, if it is new.
    pub fn mark_offered(&self, subscriber: &str, offer: u64) {
        if let Some(d) = lock(&self.shared).downs.get_mut(subscriber)
            && d.offered_in == 0
        {
            d.offered_in = offer;
        }
    }

    /// `subscriber` answered offers up to `offer`.
    pub fn mark_answered(&self, subscriber: &str, offer: u64, now: Instant) {
        if let Some(d) = lock(&self.shared).downs.get_mut(subscriber)
            && d.offered_in != 0
            && d.offered_in <= offer
        {
            d.answered_at.get_or_insert(now);
        }
    }

    /// `subscriber`'s receivers are open for what it answered up to `offer`. True when this
    /// track's down-track became ready.
    pub fn mark_ready(&self, subscriber: &str, offer: u64) -> bool {
        match lock(&self.shared).downs.get_mut(subscriber) {
            Some(d) if !d.ready && d.offered_in != 0 && d.offered_in <= offer => {
                d.ready = true;
                true
            }
            _ => false,
        }
    }

    /// The size `subscriber` draws this track at.
    pub fn set_view(&self, subscriber: &str, view: ViewSize) -> bool {
        match lock(&self.shared).downs.get_mut(subscriber) {
            Some(d) => {
                d.view = Some(view);
                true
            }
            None => false,
        }
    }

    /// What `subscriber` asks of this track, for sharing its downlink
    /// ([`crate::allocate`]).
    pub fn demand(&self, subscriber: &str, now: Instant) -> Option<Demand> {
        let sh = lock(&self.shared);
        let d = sh.downs.get(subscriber)?;
        let layers = sh.layer_view(now);
        let desired = forward::desired_layer(&layers, d.view);
        let priority = d.view.map_or(u64::from(u32::MAX), |v| {
            u64::from(v.width) * u64::from(v.height)
        });
        Some(Demand {
            audio: self.kind == TrackKind::Audio,
            layers,
            desired,
            current: d.state.current(),
            priority,
        })
    }

    /// The highest layer `subscriber`'s downlink allows (see [`Down`]'s `cap`).
    pub fn set_cap(&self, subscriber: &str, cap: Option<Option<usize>>) {
        if let Some(d) = lock(&self.shared).downs.get_mut(subscriber) {
            d.cap = cap;
        }
    }

    /// Chooses every subscriber's layer now: targets change, keyframes are asked for where a
    /// ready subscriber waits for one, and the layers anyone wants are told to the publisher
    /// when they changed.
    pub fn plan(&self, now: Instant, keyframe_every: Duration) -> Plan {
        let mut sh = lock(&self.shared);
        let layers = sh.layer_view(now);
        let mut waiting_on: Vec<usize> = Vec::new();
        let mut wanted: Vec<usize> = Vec::new();
        for d in sh.downs.values_mut() {
            if !d.ready
                && d.answered_at
                    .is_some_and(|t| now.saturating_duration_since(t) >= READY_FALLBACK)
            {
                d.ready = true;
            }
            let desired = match d.cap {
                None => forward::desired_layer(&layers, d.view),
                Some(cap) => forward::desired_layer(&layers, d.view)
                    .and_then(|want| cap.map(|c| want.min(c))),
            };
            // A layer not encoded yet is waited for when nothing else is (it was just asked for).
            let target = forward::available_layer(&layers, desired).or(desired);
            d.state.set_target(target);
            if let Some(t) = target.filter(|&t| d.ready && d.state.current() != Some(t)) {
                waiting_on.push(t);
            }
            wanted.extend(desired);
            // The layer it is on stays encoded until the switch is done.
            wanted.extend(d.state.current());
        }
        let mut plan = Plan::default();
        if self.kind != TrackKind::Audio {
            waiting_on.sort_unstable();
            waiting_on.dedup();
            for layer in waiting_on {
                plan.keyframes
                    .extend(sh.keyframe_request(layer, now, keyframe_every));
            }
        }
        if self.simulcast {
            wanted.sort_unstable();
            wanted.dedup();
            let rids: Vec<String> = wanted.into_iter().map(|l| sh.rid_of(l)).collect();
            if sh.wanted.as_ref() != Some(&rids) {
                sh.wanted = Some(rids.clone());
                plan.wanted = Some(rids);
            }
        }
        plan
    }

    /// A subscriber asked for a keyframe: the SSRC of the layer it is on (or waits for).
    pub fn keyframe_for(&self, subscriber: &str, now: Instant, every: Duration) -> Option<u32> {
        if self.kind == TrackKind::Audio {
            return None;
        }
        let mut sh = lock(&self.shared);
        let layer = sh
            .downs
            .get(subscriber)
            .filter(|d| d.ready)
            .and_then(|d| d.state.target().or(d.state.current()))?;
        sh.keyframe_request(layer, now, every)
    }
}

/// Where a layer's keyframes are seen.
#[derive(Clone, Copy)]
enum Keyframes {
    /// The frame-marking extension, by its id.
    Marked(u8),
    /// The H.264 payload (publishers without frame marking).
    H264,
    /// Audio: any packet will do.
    Every,
}

/// Reads one layer until it ends and writes each packet to every ready down-track that
/// takes it.
async fn forward_layer(
    remote: Arc<TrackRemote>,
    slot: usize,
    keyframes: Keyframes,
    simulcast: bool,
    muted: Arc<AtomicBool>,
    levels: Option<Levels>,
    shared: &Mutex<Shared>,
) {
    let mut writes: Vec<(Arc<TrackLocalStaticRTP>, u16, u32)> = Vec::new();
    // Loudest level seen since the last report, and when that was.
    let mut loudest: Option<u8> = None;
    let mut reported = Instant::now();
    while let Ok((mut packet, _)) = remote.read_rtp().await {
        if muted.load(Ordering::Relaxed) {
            continue;
        }
        let now = Instant::now();
        if let Some(levels) = &levels
            && let Some(level) = packet
                .header
                .get_extension(levels.id)
                .and_then(|b| b.first().map(|v| v & 0x7F))
        {
            loudest = Some(loudest.map_or(level, |l| l.min(level)));
            if now.saturating_duration_since(reported) >= LEVEL_INTERVAL
                && let Some(level) = loudest.take()
            {
                reported = now;
                (levels.report)(level);
            }
        }
        let keyframe = match keyframes {
            Keyframes::Marked(id) => packet
                .header
                .get_extension(id)
                .is_some_and(|b| forward::marked_keyframe(&b)),
            Keyframes::H264 => forward::h264_keyframe_start(&packet.payload),
            Keyframes::Every => true,
        };
        // The publisher's header extensions use the ids of the publish connection; each
        // subscribe connection negotiated its own. Strip them: the sender's interceptors add
        // what the subscriber's connection needs (transport-cc).
        packet.header.extension = false;
        packet.header.extension_profile = 0;
        packet.header.extensions.clear();
        packet.header.extensions_padding = 0;
        {
            let mut sh = lock(shared);
            let Some(layer) = sh.layers.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            layer.last_packet = Some(now);
            layer.rate.add(packet.payload.len(), now);
            let new_frame = layer.starts.is_new_frame(packet.header.timestamp);
            let start = layer.starts.feed(
                packet.header.sequence_number,
                packet.header.timestamp,
                keyframe,
            );
            let (seq, ts, marker) = (
                packet.header.sequence_number,
                packet.header.timestamp,
                packet.header.marker,
            );
            for d in sh.downs.values_mut().filter(|d| d.ready) {
                // Without layers, a new subscriber starts at the next frame: its decoder
                // waits for a keyframe and asks for one (some publishers never send another
                // IDR with its parameter sets).
                let start = start || (!simulcast && new_frame && d.state.is_fresh());
                if let forward::Verdict::Forward { seq, timestamp } =
                    d.state.on_packet(slot, seq, ts, start, marker, now)
                {
                    writes.push((d.local.clone(), seq, timestamp));
                }
            }
        }
        for (local, seq, timestamp) in writes.drain(..) {
            packet.header.sequence_number = seq;
            packet.header.timestamp = timestamp;
            if let Err(e) = local.write_rtp(&packet).await
                && !matches!(e, webrtc::Error::ErrClosedPipe)
            {
                tracing::debug!(error = %e, "forwarding write failed");
            }
        }
    }
}
