//! Sending video: a camera is published as up to three simulcast layers (RIDs `q`, `h`,
//! `f`: a quarter, half and the full picture), each encoded with OpenH264 only while the
//! server says somebody watches it; a screen share is one layer, tuned for sharp text at a
//! low frame rate. Every packet of a keyframe carries the frame-marking extension, so the
//! server can switch a subscriber's layer without reading the payload.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use convo_shared::signal::{ClientMessage, TrackKind};
use openh264::OpenH264API;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, UsageType};
use openh264::formats::YUVSlices;
use tokio::sync::mpsc;
use webrtc::api::media_engine::MIME_TYPE_H264;
use webrtc::media::Sample;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::extension::HeaderExtension;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::track::track_local::TrackLocal;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;

use crate::ClientError;
use crate::media::{VideoFrame, VideoSource};
use crate::stats::RoundTrip;
use crate::uplink::SendControl;

/// The frame-marking RTP header extension (draft-ietf-avtext-framemarking).
pub const FRAME_MARKING_URI: &str = "urn:ietf:params:rtp-hdrext:framemarking";
/// Its `I` (independent) and `B` (base-layer sync) bits: set on every packet of a keyframe.
/// `S` and `E` stay clear (a sample's packets all carry the same extension; the RTP marker
/// bit ends a frame).
const MARK_KEYFRAME: u8 = 0x20 | 0x08;

/// Simulcast RIDs, lowest layer first (what the server expects).
const RIDS: [&str; 3] = ["q", "h", "f"];
/// A lower layer narrower than this is not sent (the next one up does as well).
pub const MIN_LAYER_WIDTH: usize = 320;

/// One encoding of a published video track.
struct Layer {
    rid: Option<&'static str>,
    track: Arc<TrackLocalStaticSample>,
    /// Raised when the server relays a keyframe request for this layer (PLI/FIR).
    keyframe: Arc<AtomicBool>,
}

/// A published video track (camera or screen) and its layers.
pub struct VideoOut {
    kind: TrackKind,
    layers: Vec<Layer>,
    /// What the uplink allows each layer.
    control: Arc<SendControl>,
}

impl std::fmt::Debug for VideoOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VideoOut({:?}, {} layers)", self.kind, self.layers.len())
    }
}

pub fn h264() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
            .to_owned(),
        ..Default::default()
    }
}

/// Raises `flag` whenever a batch of RTCP holds a keyframe request, and measures the round
/// trip from receiver reports. Reading is also what lets the NACK responder answer
/// retransmission requests, so every layer is read.
fn watch_rtcp<F, Fut>(read: F, flag: Arc<AtomicBool>, rtt: Arc<RoundTrip>)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<
            Output = Result<
                Vec<Box<dyn webrtc::rtcp::packet::Packet + Send + Sync>>,
                webrtc::Error,
            >,
        > + Send,
{
    tokio::spawn(async move {
        while let Ok(packets) = read().await {
            rtt.observe(&packets, std::time::SystemTime::now());
            if packets.iter().any(|p| {
                p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>()
            }) {
                flag.store(true, Ordering::Relaxed);
            }
        }
    });
}

impl VideoOut {
    /// Adds the track `kind` (`video`: simulcast, `screen`: one layer) to `publish`; the caller
    /// offers.
    pub async fn add(
        publish: &RTCPeerConnection,
        kind: TrackKind,
        participant_id: &str,
        rtt: Arc<RoundTrip>,
    ) -> Result<VideoOut, ClientError> {
        let rids: Vec<Option<&'static str>> = if kind == TrackKind::Video {
            RIDS.iter().map(|r| Some(*r)).collect()
        } else {
            vec![None]
        };
        let layers = rids
            .into_iter()
            .map(|rid| Layer {
                rid,
                track: Arc::new(match rid {
                    Some(rid) => TrackLocalStaticSample::new_with_rid(
                        h264(),
                        kind.as_str().to_owned(),
                        rid.to_owned(),
                        participant_id.to_owned(),
                    ),
                    None => TrackLocalStaticSample::new(
                        h264(),
                        kind.as_str().to_owned(),
                        participant_id.to_owned(),
                    ),
                }),
                keyframe: Arc::new(AtomicBool::new(false)),
            })
            .collect();
        // Everything is wanted until the server says otherwise.
        let control = Arc::new(SendControl::default());
        for w in &control.wanted {
            w.store(true, Ordering::Relaxed);
        }
        let out = VideoOut {
            kind,
            layers,
            control,
        };
        out.attach(publish, rtt).await?;
        Ok(out)
    }

    /// Sends the track on `publish` (a new connection after a reconnection: the encoders and
    /// their source go on as they were); the caller offers.
    pub async fn attach(
        &self,
        publish: &RTCPeerConnection,
        rtt: Arc<RoundTrip>,
    ) -> Result<(), ClientError> {
        let mut sender = None;
        for layer in &self.layers {
            let as_local = layer.track.clone() as Arc<dyn TrackLocal + Send + Sync>;
            let s = match &sender {
                None => {
                    let s = publish.add_track(as_local).await?;
                    sender = Some(s.clone());
                    s
                }
                Some(s) => {
                    s.add_encoding(as_local).await?;
                    s.clone()
                }
            };
            let keyframe = layer.keyframe.clone();
            match layer.rid {
                Some(rid) => watch_rtcp(
                    move || {
                        let s = s.clone();
                        async move { s.read_rtcp_simulcast(rid).await.map(|r| r.0) }
                    },
                    keyframe,
                    rtt.clone(),
                ),
                None => watch_rtcp(
                    move || {
                        let s = s.clone();
                        async move { s.read_rtcp().await.map(|r| r.0) }
                    },
                    keyframe,
                    rtt.clone(),
                ),
            }
        }
        Ok(())
    }

    /// What the uplink allows its layers ([`crate::uplink`]).
    pub fn control(&self) -> &Arc<SendControl> {
        &self.control
    }

    /// A keyframe on every layer (after unmuting, or when a new source starts).
    pub fn request_keyframe(&self) {
        for l in &self.layers {
            l.keyframe.store(true, Ordering::Relaxed);
        }
    }

    /// The server's `layers_wanted`: encode these RIDs only (a layer coming back starts with a
    /// keyframe).
    pub fn set_wanted(&self, rids: &[String]) {
        for (i, l) in self.layers.iter().enumerate() {
            let Some(rid) = l.rid else { continue };
            let on = rids.iter().any(|r| r == rid);
            let Some(wanted) = self.control.wanted.get(i) else {
                continue;
            };
            if !wanted.swap(on, Ordering::Relaxed) && on {
                l.keyframe.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Sends frames from `source` until `stop` is raised (none before `ready`): encoding on a
    /// thread of its own
    /// (the encoder is not `Send`; the source blocks until its next frame), writing from a
    /// task. The full picture's size goes to the server (`source_size`) whenever it changes.
    /// `on_end` hears why, if the source stops by itself.
    pub fn feed(
        &self,
        mut source: Box<dyn VideoSource>,
        muted: Arc<AtomicBool>,
        ready: Arc<AtomicBool>,
        stop: Arc<AtomicBool>,
        sig: mpsc::UnboundedSender<ClientMessage>,
        on_end: Box<dyn FnOnce(String) + Send>,
    ) {
        let fps = source.fps().clamp(1, 60);
        let interval = Duration::from_secs_f64(1.0 / f64::from(fps));
        let kind = self.kind;
        let n = self.layers.len();
        let keyframes: Vec<Arc<AtomicBool>> =
            self.layers.iter().map(|l| l.keyframe.clone()).collect();
        let tracks: Vec<Arc<TrackLocalStaticSample>> =
            self.layers.iter().map(|l| l.track.clone()).collect();
        let control = self.control.clone();
        // (layer, picture, frames since that layer's previous picture)
        let (tx, mut rx) = mpsc::channel::<(usize, Vec<u8>, u32)>(8 * n);
        std::thread::spawn(move || {
            let mut encoders: Vec<Option<LayerEncoder>> = (0..n).map(|_| None).collect();
            let mut told: Option<(usize, usize)> = None;
            let mut frame_no: u64 = 0;
            // The frame each layer sent last: a sample's duration spans the frames it stands
            // for (left out at half rate, or skipped by the encoder), so timestamps keep
            // pace with the clock.
            let mut last_sent: Vec<Option<u64>> = vec![None; n];
            while !stop.load(Ordering::Relaxed) {
                let frame = match source.next_frame() {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(error = %e, "video source stopped");
                        if !stop.load(Ordering::Relaxed) {
                            on_end(e.to_string());
                        }
                        return;
                    }
                };
                // Replaced while it waited for the frame: the next source's frames follow.
                if muted.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                    continue;
                }
                if frame.width % 2 != 0 || frame.height % 2 != 0 {
                    tracing::warn!(frame.width, frame.height, "odd frame size dropped");
                    continue;
                }
                if told != Some((frame.width, frame.height)) {
                    told = Some((frame.width, frame.height));
                    *control
                        .source
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some((frame.width, frame.height, fps));
                    let _ = sig.send(ClientMessage::SourceSize {
                        kind,
                        width: frame.width as u32,
                        height: frame.height as u32,
                    });
                }
                // Nothing is encoded before the server can receive it (a keyframe is asked
                // for then).
                if !ready.load(Ordering::Relaxed) {
                    continue;
                }
                frame_no += 1;
                // Top layer first, halving on the way down.
                let mut picture = frame;
                for layer in (0..n).rev() {
                    let keyframe = &keyframes[layer];
                    let sent = layer == n - 1 || picture.width >= MIN_LAYER_WIDTH;
                    // The uplink has room for it (a single layer always goes, coarser).
                    let room = n == 1 || control.layers[layer].on.load(Ordering::Relaxed);
                    let half = control.layers[layer].half_fps.load(Ordering::Relaxed);
                    let rate = match control.layers[layer].bps.load(Ordering::Relaxed) {
                        0 => start_bitrate(kind, picture.width, picture.height, fps),
                        bps => bps,
                    };
                    let layer_fps = if half { (fps / 2).max(1) } else { fps };
                    let wanted = control.wanted[layer].load(Ordering::Relaxed)
                        || control.layers[layer].stand_in.load(Ordering::Relaxed);
                    // At half the frame rate, every other frame is left out.
                    let skipped = half && frame_no % 2 == 1;
                    if sent && room && wanted && !skipped {
                        let force = keyframe.swap(false, Ordering::Relaxed);
                        let enc = match &mut encoders[layer] {
                            Some(e) if e.fits(&picture) && e.suits(rate, layer_fps) => e,
                            slot => {
                                *slot = LayerEncoder::new(kind, &picture, layer_fps, rate);
                                // A new encoder starts with a keyframe anyway.
                                match slot {
                                    Some(e) => e,
                                    None => break,
                                }
                            }
                        };
                        if let Some(data) = enc.encode(&picture, force) {
                            let span = last_sent[layer]
                                .map_or(1, |l| frame_no.saturating_sub(l).clamp(1, 3600) as u32);
                            last_sent[layer] = Some(frame_no);
                            if tx.blocking_send((layer, data, span)).is_err() {
                                return;
                            }
                        }
                    } else if !wanted || !room {
                        // Paused: when it is wanted again it starts afresh.
                        encoders[layer] = None;
                    }
                    if layer > 0 {
                        picture = match crate::convert::halve_i420(&picture) {
                            Some(p) => p,
                            None => break,
                        };
                    }
                }
            }
        });
        tokio::spawn(async move {
            while let Some((layer, data, span)) = rx.recv().await {
                let key = crate::call::has_idr(&data);
                let sample = Sample {
                    data: Bytes::from(data),
                    duration: interval * span,
                    ..Default::default()
                };
                let marking = HeaderExtension::Custom {
                    uri: FRAME_MARKING_URI.into(),
                    extension: Box::new(FrameMarking(if key { MARK_KEYFRAME } else { 0 })),
                };
                // A failed write (a connection closing under a reconnection) loses that
                // frame only: the next goes to the connection that replaced it. The feed ends
                // when it is stopped.
                if let Err(e) = tracks[layer]
                    .write_sample_with_extensions(&sample, &[marking])
                    .await
                {
                    tracing::debug!(error = %e, "a video frame was not sent");
                }
            }
        });
    }
}

/// The frame-marking extension's one byte.
#[derive(Debug)]
struct FrameMarking(u8);

impl webrtc::util::MarshalSize for FrameMarking {
    fn marshal_size(&self) -> usize {
        1
    }
}

impl webrtc::util::Marshal for FrameMarking {
    fn marshal_to(&self, buf: &mut [u8]) -> Result<usize, webrtc::util::Error> {
        match buf.first_mut() {
            Some(b) => {
                *b = self.0;
                Ok(1)
            }
            None => Err(webrtc::util::Error::Other(
                "no room for frame marking".into(),
            )),
        }
    }
}

/// One layer's OpenH264 encoder, for one picture size.
struct LayerEncoder {
    enc: Encoder,
    width: usize,
    height: usize,
    bps: u32,
    fps: u32,
}

impl LayerEncoder {
    /// OpenH264's rate cannot be changed safely while it runs: a new encoder (and a
    /// keyframe) when the rate wanted moved by more than a quarter, or the frame rate changed.
    fn suits(&self, bps: u32, fps: u32) -> bool {
        let (a, b) = (u64::from(self.bps), u64::from(bps));
        fps == self.fps && b * 4 >= a * 3 && b * 3 <= a * 4
    }

    fn new(kind: TrackKind, picture: &VideoFrame, fps: u32, bps: u32) -> Option<LayerEncoder> {
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bps))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            // A screen is coded as screen content (sharp text and edges, mostly still).
            .usage_type(if kind == TrackKind::Screen {
                UsageType::ScreenContentRealTime
            } else {
                UsageType::CameraVideoRealTime
            })
            // Frames are dropped rather than blurred when the rate runs short.
            .skip_frames(true)
            // Long: a newcomer's keyframe must come from a request, not from the schedule.
            .intra_frame_period(IntraFramePeriod::from_num_frames(fps * 30));
        match Encoder::with_api_config(OpenH264API::from_source(), config) {
            Ok(enc) => Some(LayerEncoder {
                enc,
                width: picture.width,
                height: picture.height,
                bps,
                fps,
            }),
            Err(e) => {
                tracing::error!(error = %e, "OpenH264 encoder unavailable");
                None
            }
        }
    }

    fn fits(&self, picture: &VideoFrame) -> bool {
        (self.width, self.height) == (picture.width, picture.height)
    }

    fn encode(&mut self, picture: &VideoFrame, keyframe: bool) -> Option<Vec<u8>> {
        if keyframe {
            self.enc.force_intra_frame();
        }
        // Encoded from the picture where it lies (it is halved for the next layer after).
        let (w, h) = (picture.width, picture.height);
        let (y, uv) = picture.i420.split_at(w * h);
        let (u, v) = uv.split_at(w * h / 4);
        let yuv = YUVSlices::new((y, u, v), (w, h), (w, w / 2, w / 2));
        let bits = self.enc.encode(&yuv).ok()?.to_vec();
        (!bits.is_empty()).then_some(bits)
    }
}

/// The encoder's nominal bit rate for a picture: a camera what
/// [`convo_shared::bwe::camera_bps`] says (the lowest layer, 320 × 180, at its floor — that
/// layer is what small tiles and narrow downlinks see, at the full frame rate); a screen,
/// mostly still and full of text, twice that per pixel at its low frame rate.
pub fn start_bitrate(kind: TrackKind, width: usize, height: usize, fps: u32) -> u32 {
    let (w, h, fps) = (width as u64, height as u64, u64::from(fps));
    let bps = match kind {
        TrackKind::Screen => (w * h * fps / 8).clamp(300_000, 2_500_000),
        _ => convo_shared::bwe::camera_bps(w, h, fps),
    };
    bps as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_rates_follow_the_picture() {
        assert_eq!(start_bitrate(TrackKind::Video, 1280, 720, 30), 1_728_000);
        assert_eq!(start_bitrate(TrackKind::Video, 640, 360, 30), 432_000);
        assert_eq!(start_bitrate(TrackKind::Video, 320, 180, 30), 130_000);
        assert_eq!(start_bitrate(TrackKind::Video, 3840, 2160, 60), 2_500_000);
        assert_eq!(start_bitrate(TrackKind::Screen, 1920, 1080, 5), 1_296_000);
    }
}
