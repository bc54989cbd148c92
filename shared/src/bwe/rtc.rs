//! The estimator wired into webrtc-rs (feature `webrtc`): an interceptor that notes every
//! packet a connection sends with its transport-wide sequence number and hands the far end's
//! transport-cc feedback to a [`SendSideBwe`], and a probe track that carries the padding a
//! probe asks for (a dedicated SSRC that the receiving side reads and drops, as mediasoup's
//! "probator" does: padding on a media SSRC would need RTX, which webrtc-rs does not send, and
//! repeated packets die in the receiver's SRTP replay check).
//!
//! Register [`builder`]'s interceptor *first*, then `configure_twcc_sender_only`, then
//! webrtc-rs's defaults: interceptors registered first sit closest to the wire, so it sees
//! each packet after the transport-cc sender numbered it, and the NACK responder's
//! retransmissions are numbered afresh (with their old numbers, a report would span
//! everything back to them).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use webrtc::interceptor::stream_info::StreamInfo;
use webrtc::interceptor::{
    Attributes, Interceptor, InterceptorBuilder, RTCPReader, RTCPWriter, RTPReader, RTPWriter,
};
use webrtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, SymbolTypeTcc, TransportLayerCc,
};
use webrtc::rtp::extension::transport_cc_extension::TransportCcExtension;
use webrtc::util::{MarshalSize, Unmarshal};

use super::{Config, Feedback, SendSideBwe};

/// The transport-wide sequence number extension.
pub const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
/// The probe track's id and stream id (receivers drop what arrives on it).
pub const PROBE_TRACK_ID: &str = "convo-probe";

/// One connection's estimator, shared between its interceptor and the code that reads it.
#[derive(Clone, Debug)]
pub struct Bwe(Arc<Mutex<SendSideBwe>>);

impl Bwe {
    pub fn new(cfg: Config) -> Self {
        Bwe(Arc::new(Mutex::new(SendSideBwe::new(cfg))))
    }

    /// The estimator itself, to read or steer.
    pub fn lock(&self) -> MutexGuard<'_, SendSideBwe> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Packets of each sent video stream kept for retransmission: 512 (2^9), 2 s at 2 Mbit/s,
/// 17 s at the lowest layer. webrtc-rs keeps 8 192 by default, allocated up front: ~1 MiB per
/// stream from its first packet, and ~10 MiB once full — the SFU's memory per forwarded
/// video (a retransmission older than a second or two is of no use to anyone).
pub const NACK_HISTORY_LOG2: u8 = 9;

/// webrtc-rs's default interceptors (NACK generator and responder, RTCP reports, transport-cc
/// receiver), with a retransmission history of [`NACK_HISTORY_LOG2`] instead of webrtc-rs's.
/// Registered after [`builder`] and webrtc-rs's `configure_twcc_sender_only` where they are
/// used.
pub fn register_media_interceptors(
    mut registry: webrtc::interceptor::registry::Registry,
    media_engine: &mut webrtc::api::media_engine::MediaEngine,
) -> Result<webrtc::interceptor::registry::Registry, webrtc::Error> {
    use webrtc::api::interceptor_registry::{configure_rtcp_reports, configure_twcc_receiver_only};
    use webrtc::interceptor::nack::{generator::Generator, responder::Responder};
    use webrtc::rtp_transceiver::RTCPFeedback;
    use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
    for parameter in ["", "pli"] {
        media_engine.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RTPCodecType::Video,
        );
    }
    registry.add(Box::new(
        Responder::builder().with_log2_size(NACK_HISTORY_LOG2),
    ));
    registry.add(Box::new(Generator::builder()));
    let registry = configure_rtcp_reports(registry);
    configure_twcc_receiver_only(registry, media_engine)
}

/// The transport-cc feedback of one report, as arrivals per sequence number (µs).
pub fn feedback_of(tcc: &TransportLayerCc) -> Feedback {
    let count = usize::from(tcc.packet_status_count);
    let mut statuses: Vec<SymbolTypeTcc> = Vec::with_capacity(count);
    for chunk in &tcc.packet_chunks {
        match chunk {
            PacketStatusChunk::RunLengthChunk(c) => {
                let n = usize::from(c.run_length).min(count - statuses.len());
                statuses.extend(std::iter::repeat_n(c.packet_status_symbol, n));
            }
            PacketStatusChunk::StatusVectorChunk(c) => {
                let n = c.symbol_list.len().min(count - statuses.len());
                statuses.extend(c.symbol_list.iter().take(n).copied());
            }
        }
        if statuses.len() >= count {
            break;
        }
    }
    let mut at = i64::from(tcc.reference_time) * 64_000;
    let mut deltas = tcc.recv_deltas.iter();
    let arrivals = statuses
        .iter()
        .map(|s| match s {
            SymbolTypeTcc::PacketReceivedSmallDelta | SymbolTypeTcc::PacketReceivedLargeDelta => {
                let d = deltas.next()?;
                at += d.delta;
                Some(at)
            }
            _ => None,
        })
        .collect();
    Feedback {
        base_seq: tcc.base_sequence_number,
        arrivals,
    }
}

/// Hands out one [`Bwe`] per connection built from an API.
#[derive(Clone, Debug)]
pub enum Source {
    /// Every connection of the API shares this one (an API per connection).
    Fixed(Bwe),
    /// A new one per connection, left in the slot for the code that created the connection
    /// to take ([`Slot::take`]); hold [`Slot::lock_creation`] around creating it.
    PerConnection(Config, Slot),
}

/// Where a per-connection estimator waits to be taken.
#[derive(Clone, Debug, Default)]
pub struct Slot {
    built: Arc<Mutex<Option<Bwe>>>,
    creating: Arc<tokio::sync::Mutex<()>>,
}

impl Slot {
    /// Held while a connection is created and its estimator taken.
    pub async fn lock_creation(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.creating.lock().await
    }

    pub fn take(&self) -> Option<Bwe> {
        self.built
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// The interceptor builder to register first.
pub fn builder(source: Source) -> Box<dyn InterceptorBuilder + Send + Sync> {
    Box::new(Builder(source))
}

struct Builder(Source);

impl InterceptorBuilder for Builder {
    fn build(
        &self,
        _id: &str,
    ) -> Result<Arc<dyn Interceptor + Send + Sync>, webrtc::interceptor::Error> {
        let bwe = match &self.0 {
            Source::Fixed(b) => b.clone(),
            Source::PerConnection(cfg, slot) => {
                let b = Bwe::new(*cfg);
                *slot.built.lock().unwrap_or_else(PoisonError::into_inner) = Some(b.clone());
                b
            }
        };
        Ok(Arc::new(BweInterceptor {
            bwe,
            resends: Arc::new(Mutex::new(ResendBudget {
                tokens: 0.0,
                at: None,
            })),
        }))
    }
}

struct BweInterceptor {
    bwe: Bwe,
    resends: Arc<Mutex<ResendBudget>>,
}

/// Retransmissions never get less than this.
const RESEND_FLOOR_BPS: u64 = 100_000;

/// Retransmissions (answers to NACKs) may take a quarter of the estimate (at least 100 kbit/s). webrtc-rs's NACK
/// generator asks again for every missing packet every 100 ms, without end: on a link that
/// is already full, unbounded answers are a storm that starves the media.
#[derive(Debug)]
struct ResendBudget {
    tokens: f64,
    at: Option<Instant>,
}

impl ResendBudget {
    fn allow(&mut self, bytes: usize, target_bps: u64, now: Instant) -> bool {
        // At least 100 kbit/s: when loss itself has brought the estimate down, repairing
        // that loss must still get through.
        let rate = (target_bps / 4).max(RESEND_FLOOR_BPS) as f64 / 8.0;
        let elapsed = self
            .at
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.at = Some(now);
        // A tenth of a second's worth in hand, at least a few packets.
        self.tokens = (self.tokens + rate * elapsed).min((rate / 10.0).max(4.0 * 1200.0));
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

struct SentWriter {
    next: Arc<dyn RTPWriter + Send + Sync>,
    ext_id: u8,
    bwe: Bwe,
    resends: Arc<Mutex<ResendBudget>>,
    /// The newest RTP sequence number sent on this stream: anything not newer is a
    /// retransmission.
    newest: Mutex<Option<u16>>,
}

impl SentWriter {
    fn is_resend(&self, seq: u16) -> bool {
        let mut newest = self.newest.lock().unwrap_or_else(PoisonError::into_inner);
        match *newest {
            Some(n) if seq.wrapping_sub(n) == 0 || seq.wrapping_sub(n) >= 0x8000 => true,
            _ => {
                *newest = Some(seq);
                false
            }
        }
    }
}

#[async_trait::async_trait]
impl RTPWriter for SentWriter {
    async fn write(
        &self,
        pkt: &webrtc::rtp::packet::Packet,
        attributes: &Attributes,
    ) -> Result<usize, webrtc::interceptor::Error> {
        let now = Instant::now();
        let size = pkt.header.marshal_size() + pkt.payload.len();
        if self.is_resend(pkt.header.sequence_number) {
            // Probe padding is never sent twice (nothing waits for it); other resends within
            // the budget. A packet left out leaves a gap in the transport-wide numbers,
            // which the estimator takes for a packet never sent.
            let padding = pkt.payload.len() == PROBE_PACKET && pkt.payload.first() == Some(&0);
            let target = self.bwe.lock().target();
            let allowed = !padding
                && self
                    .resends
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .allow(size, target, now);
            if !allowed {
                return Ok(0);
            }
        }
        if let Some(mut ext) = pkt.header.get_extension(self.ext_id)
            && let Ok(tcc) = TransportCcExtension::unmarshal(&mut ext)
        {
            self.bwe.lock().on_sent(tcc.transport_sequence, size, now);
        }
        self.next.write(pkt, attributes).await
    }
}

struct FeedbackReader {
    next: Arc<dyn RTCPReader + Send + Sync>,
    bwe: Bwe,
}

#[async_trait::async_trait]
impl RTCPReader for FeedbackReader {
    async fn read(
        &self,
        buf: &mut [u8],
        attributes: &Attributes,
    ) -> Result<
        (
            Vec<Box<dyn webrtc::rtcp::packet::Packet + Send + Sync>>,
            Attributes,
        ),
        webrtc::interceptor::Error,
    > {
        let (packets, attrs) = self.next.read(buf, attributes).await?;
        for p in &packets {
            if let Some(tcc) = p.as_any().downcast_ref::<TransportLayerCc>() {
                let fb = feedback_of(tcc);
                self.bwe.lock().on_feedback(&fb, Instant::now());
            }
        }
        Ok((packets, attrs))
    }
}

#[async_trait::async_trait]
impl Interceptor for BweInterceptor {
    async fn bind_rtcp_reader(
        &self,
        reader: Arc<dyn RTCPReader + Send + Sync>,
    ) -> Arc<dyn RTCPReader + Send + Sync> {
        Arc::new(FeedbackReader {
            next: reader,
            bwe: self.bwe.clone(),
        })
    }

    async fn bind_rtcp_writer(
        &self,
        writer: Arc<dyn RTCPWriter + Send + Sync>,
    ) -> Arc<dyn RTCPWriter + Send + Sync> {
        writer
    }

    async fn bind_local_stream(
        &self,
        info: &StreamInfo,
        writer: Arc<dyn RTPWriter + Send + Sync>,
    ) -> Arc<dyn RTPWriter + Send + Sync> {
        let id = info
            .rtp_header_extensions
            .iter()
            .find(|e| e.uri == TRANSPORT_CC_URI)
            .and_then(|e| u8::try_from(e.id).ok())
            .filter(|&id| id != 0);
        match id {
            Some(ext_id) => Arc::new(SentWriter {
                next: writer,
                ext_id,
                bwe: self.bwe.clone(),
                resends: self.resends.clone(),
                newest: Mutex::new(None),
            }),
            None => writer,
        }
    }

    async fn unbind_local_stream(&self, _info: &StreamInfo) {}

    async fn bind_remote_stream(
        &self,
        _info: &StreamInfo,
        reader: Arc<dyn RTPReader + Send + Sync>,
    ) -> Arc<dyn RTPReader + Send + Sync> {
        reader
    }

    async fn unbind_remote_stream(&self, _info: &StreamInfo) {}

    async fn close(&self) -> Result<(), webrtc::interceptor::Error> {
        Ok(())
    }
}

/// While a probe runs, padding goes out this often; otherwise the pacer looks this often
/// whether one should start.
const PROBE_TICK: std::time::Duration = std::time::Duration::from_millis(5);
const IDLE_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Adds the probe track to `pc` (it goes out with the next offer) and sends the padding
/// `bwe`'s probes ask for on it until the returned task is aborted. `codec`: a video codec
/// the connection offers (the padding is never decoded).
pub async fn start_probing(
    pc: &webrtc::peer_connection::RTCPeerConnection,
    bwe: Bwe,
    codec: webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability,
) -> Result<tokio::task::JoinHandle<()>, webrtc::Error> {
    use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
    use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};
    let track = Arc::new(TrackLocalStaticRTP::new(
        codec,
        PROBE_TRACK_ID.to_string(),
        PROBE_TRACK_ID.to_string(),
    ));
    let sender = pc
        .add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>)
        .await?;
    // Its RTCP is read (the transport-cc feedback may name its SSRC).
    tokio::spawn(async move { while sender.read_rtcp().await.is_ok() {} });
    Ok(tokio::spawn(async move {
        let mut probe = ProbeSender::new();
        loop {
            let bytes = bwe.lock().padding(Instant::now());
            if bytes > 0 {
                tracing::trace!(bytes, "probe padding");
            }
            for p in probe.packets(bytes) {
                if let Err(e) = track.write_rtp(&p).await {
                    tracing::debug!(error = %e, "probe padding not sent");
                    break;
                }
            }
            let probing = bwe.lock().probing(Instant::now());
            tokio::time::sleep(if probing { PROBE_TICK } else { IDLE_TICK }).await;
        }
    }))
}

/// Padding for probes, on a track of its own.
#[derive(Debug)]
pub struct ProbeSender {
    seq: u16,
    ts: u32,
}

/// Bytes of padding per probe packet.
pub const PROBE_PACKET: usize = 1000;

impl Default for ProbeSender {
    fn default() -> Self {
        Self::new()
    }
}

impl ProbeSender {
    pub fn new() -> Self {
        ProbeSender { seq: 0, ts: 0 }
    }

    /// Packets carrying at least `bytes` of padding.
    pub fn packets(&mut self, bytes: usize) -> Vec<webrtc::rtp::packet::Packet> {
        let n = bytes.div_ceil(PROBE_PACKET).min(64);
        self.ts = self.ts.wrapping_add(3000);
        (0..n)
            .map(|_| {
                self.seq = self.seq.wrapping_add(1);
                webrtc::rtp::packet::Packet {
                    header: webrtc::rtp::header::Header {
                        version: 2,
                        sequence_number: self.seq,
                        timestamp: self.ts,
                        marker: true,
                        ..Default::default()
                    },
                    payload: bytes::Bytes::from_static(&[0u8; PROBE_PACKET]),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use webrtc::interceptor::twcc::Recorder;

    #[test]
    fn feedback_reads_back_what_the_receiver_recorded() {
        let mut r = Recorder::new(1);
        // Packets 100..120 arrive 2 ms apart except 105 and 110..=112 (lost), with a long
        // gap before 115 (a large delta).
        let mut expected = Vec::new();
        for seq in 100u16..120 {
            let lost = seq == 105 || (110..=112).contains(&seq);
            let at = 1_000_000 + i64::from(seq - 100) * 2_000 + if seq >= 115 { 80_000 } else { 0 };
            if !lost {
                r.record(7, seq, at);
            }
            expected.push((!lost).then_some(at));
        }
        let packets = r.build_feedback_packet();
        let tcc = packets
            .iter()
            .find_map(|p| p.as_any().downcast_ref::<TransportLayerCc>())
            .expect("a transport-cc report");
        let fb = feedback_of(tcc);
        assert_eq!(fb.base_seq, 100);
        assert_eq!(fb.arrivals.len(), expected.len());
        // The report's clock starts at its reference time: compare differences, to the
        // report's 250 µs resolution.
        let first = fb.arrivals[0].expect("first received");
        for (got, want) in fb.arrivals.iter().zip(&expected) {
            match (got, want) {
                (Some(g), Some(w)) => {
                    assert!((g - first - (w - 1_000_000)).abs() <= 250, "{g} {w}")
                }
                (None, None) => {}
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn probe_packets_cover_the_bytes_asked() {
        let mut p = ProbeSender::new();
        let a = p.packets(2500);
        assert_eq!(a.len(), 3);
        assert_eq!(a[1].header.sequence_number, a[0].header.sequence_number + 1);
        assert!(p.packets(0).is_empty());
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use webrtc::interceptor::twcc::Recorder;

    #[test]
    fn any_pattern_of_arrivals_reads_back() {
        let mut x: u32 = 7;
        let mut whole = 0;
        for round in 0..200 {
            let mut r = Recorder::new(1);
            let n = 2 + round % 150;
            let base: u16 = 65_500u16.wrapping_add((round * 37) as u16);
            let mut want = Vec::new();
            for i in 0..n {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let got = i == 0 || i == n - 1 || !x.is_multiple_of(4);
                let at =
                    5_000_000 + i64::from(i) * (if x.is_multiple_of(7) { 70_000 } else { 1_000 });
                if got {
                    r.record(1, base.wrapping_add(i as u16), at);
                }
                want.push(got);
            }
            // Split reports may overlap: every packet must read back as it was, wherever
            // it is reported.
            let mut seen = vec![None; want.len()];
            let reports = r.build_feedback_packet();
            // A report webrtc-rs splits in two is garbled (the second starts at sequence
            // number 0 and misplaces the packet that split it): only whole ones are read.
            if reports.len() > 1 {
                continue;
            }
            for p in reports {
                let tcc = p
                    .as_any()
                    .downcast_ref::<TransportLayerCc>()
                    .expect("a transport-cc report");
                let fb = feedback_of(tcc);
                for (i, a) in fb.arrivals.iter().enumerate() {
                    let k = usize::from(fb.base_seq.wrapping_add(i as u16).wrapping_sub(base));
                    assert!(k < want.len(), "round {round}: outside the range");
                    if a.is_some() || seen[k].is_none() {
                        seen[k] = Some(a.is_some());
                    }
                }
            }
            let covered = seen.iter().filter(|s| s.is_some()).count();
            assert_eq!(covered, want.len(), "round {round}");
            whole += 1;
            for (k, s) in seen.iter().enumerate() {
                if let Some(got) = s {
                    assert_eq!(*got, want[k], "round {round}, packet {k}");
                }
            }
        }
        assert!(whole > 150, "only {whole} whole reports");
    }
}
