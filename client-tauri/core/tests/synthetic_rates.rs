//! The synthetic camera costs what a camera costs: each simulcast layer, cut from a 1280 × 720
//! picture as the sender cuts it, encodes at the rate asked for with (nearly) every frame.
//! Without that, no bandwidth limit in the network tests would bind, or every one would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use convo_client::media::VideoFrame;
use convo_client::synth::{self, FrameCode, Pattern, VideoSize};
use convo_client::video_out::start_bitrate;
use convo_shared::signal::TrackKind;
use openh264::OpenH264API;
use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, UsageType};
use openh264::formats::YUVSlices;

/// Encodes two seconds (after one to settle) of the layer `halvings` below 1280 × 720 at
/// `fps`; the bit rate (kbit/s) and the share of frames the encoder did not skip.
fn encode(halvings: u32, bps: u32, fps: u32, skip: bool) -> (u64, f64) {
    let cfg = EncoderConfig::new()
        .bitrate(BitRate::from_bps(bps))
        .max_frame_rate(FrameRate::from_hz(fps as f32))
        .usage_type(UsageType::CameraVideoRealTime)
        .skip_frames(skip);
    let mut enc = Encoder::with_api_config(OpenH264API::from_source(), cfg).expect("OpenH264");
    let (mut bytes, mut kept, mut counted) = (0usize, 0u32, 0u32);
    for i in (0..90u32).step_by((30 / fps) as usize) {
        let mut f = VideoFrame {
            width: 1280,
            height: 720,
            i420: synth::frame(
                FrameCode {
                    counter: i,
                    capture_ms: 0,
                },
                Pattern::Camera,
                VideoSize::new(1280, 720),
            ),
        };
        for _ in 0..halvings {
            f = convo_client::convert::halve_i420(&f).unwrap();
        }
        let (w, h) = (f.width, f.height);
        let (y, uv) = f.i420.split_at(w * h);
        let (u, v) = uv.split_at(w * h / 4);
        let out = enc
            .encode(&YUVSlices::new((y, u, v), (w, h), (w, w / 2, w / 2)))
            .unwrap()
            .to_vec();
        if i >= 30 {
            counted += 1;
            if !out.is_empty() {
                bytes += out.len();
                kept += 1;
            }
        }
    }
    (
        bytes as u64 * 8 / 2 / 1000,
        f64::from(kept) / f64::from(counted),
    )
}

#[test]
fn every_layer_costs_its_rate() {
    // (halvings, frame rate, rate): the full layer, the half, the quarter at its own rate at
    // full and half frame rate (a narrow uplink), and lifted (the only layer sent).
    let nominal =
        |halvings: u32| start_bitrate(TrackKind::Video, 1280 >> halvings, 720 >> halvings, 30);
    for (halvings, fps, bps) in [
        (0, 30, nominal(0)),
        (1, 30, nominal(1)),
        (2, 30, nominal(2)),
        (2, 15, nominal(2)),
        (2, 30, 300_000),
    ] {
        let (w, h) = (1280 >> halvings, 720 >> halvings);
        let (kbps, kept) = encode(halvings, bps, fps, true);
        let want = u64::from(bps / 1000);
        assert!(
            kbps * 100 >= want * 85 && kbps * 100 <= want * 115,
            "{w}x{h}@{fps}: {kbps} kbit/s for {want}"
        );
        assert!(
            kept >= 0.9,
            "{w}x{h}@{fps}: {:.0} % of frames kept",
            kept * 100.0
        );
    }
}
