//! The uplink: the bandwidth estimate of the `publish` connection (transport-cc feedback from
//! the server, [`convo_shared::bwe`]), its probing, and the plan that fits what we send into
//! it: audio first, then a shared screen, then the camera's simulcast layers from the lowest
//! up; a layer that does not fit is not encoded, and the last layer standing gives up frame
//! rate before it gives up more picture.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use convo_shared::bwe::rtc::{Bwe, start_probing};
use convo_shared::signal::TrackKind;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;

use crate::video_out::{MIN_LAYER_WIDTH, start_bitrate};

/// Opus voice with its headers.
pub const AUDIO_BPS: u64 = 48_000;
/// Below this a layer is not worth sending at all.
const MIN_LAYER_BPS: u64 = 80_000;
/// A camera layer sent alone runs at its full frame rate from its nominal rate or this one up
/// (at less, each frame would be too coarse: it sends every other frame instead).
const FULL_FPS_MIN_BPS: u64 = 250_000;
/// How often the plan is made again.
const PLAN_EVERY: Duration = Duration::from_millis(250);

/// What the encoder of one layer is told.
#[derive(Debug)]
pub struct LayerControl {
    /// The uplink has room for it.
    pub on: AtomicBool,
    /// Its bit rate (bps); 0 until planned (the encoder uses its nominal rate).
    pub bps: AtomicU32,
    /// Send every other frame.
    pub half_fps: AtomicBool,
    /// Sent though nobody asked for it, in place of a wanted layer the uplink cannot carry.
    pub stand_in: AtomicBool,
}

impl Default for LayerControl {
    fn default() -> Self {
        LayerControl {
            on: AtomicBool::new(true),
            bps: AtomicU32::new(0),
            half_fps: AtomicBool::new(false),
            stand_in: AtomicBool::new(false),
        }
    }
}

/// The uplink's say over one published video track.
#[derive(Debug, Default)]
pub struct SendControl {
    /// Lowest layer first.
    pub layers: [LayerControl; 3],
    /// The source's picture and frame rate, once known.
    pub source: Mutex<Option<(usize, usize, u32)>>,
    /// The layers the server wants (by index), from `layers_wanted`.
    pub wanted: [AtomicBool; 3],
}

/// One layer as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerNeed {
    /// Its rate at full quality.
    pub nominal_bps: u64,
    /// Somebody watches it.
    pub wanted: bool,
}

/// What one layer gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerPlan {
    pub on: bool,
    pub bps: u64,
    pub half_fps: bool,
}

const OFF: LayerPlan = LayerPlan {
    on: false,
    bps: 0,
    half_fps: false,
};

/// Fits `tracks` (screen and camera; their layers lowest first) into `budget_bps`, audio
/// (when sent) first. The lowest wanted layer of each track always goes (at no less than
/// [`MIN_LAYER_BPS`]): the picture never stops for lack of room, it gets coarser.
pub fn plan(
    budget_bps: u64,
    audio: bool,
    tracks: &[(TrackKind, Vec<LayerNeed>)],
) -> Vec<Vec<LayerPlan>> {
    let mut left = budget_bps as i64 - if audio { AUDIO_BPS as i64 } else { 0 };
    let mut out: Vec<Vec<LayerPlan>> = tracks.iter().map(|(_, l)| vec![OFF; l.len()]).collect();
    let mut order: Vec<usize> = (0..tracks.len()).collect();
    // A shared screen is what everybody looks at: it comes before the camera.
    order.sort_by_key(|&i| tracks[i].0 != TrackKind::Screen);
    let mut lowest: Vec<Option<usize>> = vec![None; tracks.len()];
    for &t in &order {
        let (_, layers) = &tracks[t];
        let Some(first) = layers.iter().position(|l| l.wanted) else {
            continue;
        };
        // When the lowest layer anybody wants does not fit, a smaller picture that does is
        // sent in its place (the server forwards the nearest layer there is): resolution
        // gives way before the frame rate, and a 720p encoder squeezed to a tenth of its rate
        // sends keyframes bigger than the link. The smallest when none fits.
        let sized = |i: &usize| layers[*i].nominal_bps > 0;
        let first = if layers[first].nominal_bps as i64 <= left {
            first
        } else {
            (0..first)
                .rev()
                .filter(sized)
                .find(|&i| layers[i].nominal_bps as i64 <= left)
                .or_else(|| (0..first).find(sized))
                .unwrap_or(first)
        };
        let bps = layers[first]
            .nominal_bps
            .min(left.max(0) as u64)
            .max(MIN_LAYER_BPS);
        out[t][first] = LayerPlan {
            on: true,
            bps,
            half_fps: false,
        };
        lowest[t] = Some(first);
        left -= bps as i64;
    }
    for &t in &order {
        let (_, layers) = &tracks[t];
        let Some(first) = lowest[t] else { continue };
        for (i, l) in layers.iter().enumerate().skip(first + 1) {
            if !l.wanted {
                continue;
            }
            if l.nominal_bps as i64 > left {
                break;
            }
            left -= l.nominal_bps as i64;
            out[t][i] = LayerPlan {
                on: true,
                bps: l.nominal_bps,
                half_fps: false,
            };
        }
    }
    // What is left lifts a track that sends one layer only, up to three times its rate (in steps,
    // so that every change of the estimate does not restart its encoder).
    for &t in &order {
        let Some(first) = lowest[t] else { continue };
        let alone = out[t].iter().filter(|p| p.on).count() == 1;
        if alone && left > 0 {
            let p = &mut out[t][first];
            let lifted = (p.bps + left as u64).min(3 * tracks[t].1[first].nominal_bps);
            let lifted = lifted / 50_000 * 50_000;
            if lifted > p.bps {
                left -= (lifted - p.bps) as i64;
                p.bps = lifted;
            }
        }
    }
    for (t, (kind, _)) in tracks.iter().enumerate() {
        if *kind == TrackKind::Screen {
            continue;
        }
        // Only a layer sent alone (a narrow uplink) trades frames for sharpness: beside
        // others, the lowest one is what small tiles and narrow downlinks get, and they want
        // motion as smooth as everyone's (browsers send it at the full frame rate too).
        let alone = out[t].iter().filter(|p| p.on).count() == 1;
        for (p, need) in out[t].iter_mut().zip(&tracks[t].1).filter(|(p, _)| p.on) {
            p.half_fps = alone && p.bps < need.nominal_bps.min(FULL_FPS_MIN_BPS);
        }
    }
    out
}

/// The layers of a camera or screen whose full picture is `w × h` at `fps`, lowest first, as
/// the encoder sends them (halving down to [`MIN_LAYER_WIDTH`]).
pub fn layer_rates(kind: TrackKind, w: usize, h: usize, fps: u32, count: usize) -> Vec<u64> {
    (0..count)
        .map(|i| {
            let shift = count - 1 - i;
            let (lw, lh) = (w >> shift, h >> shift);
            if i + 1 < count && lw < MIN_LAYER_WIDTH {
                0
            } else {
                u64::from(start_bitrate(kind, lw, lh, fps))
            }
        })
        .collect()
}

/// The video tracks the plan covers.
type Registered = Mutex<Vec<(TrackKind, Weak<SendControl>)>>;

/// The estimator of the `publish` connection and the tasks that act on it.
pub struct Uplink {
    tracks: Arc<Registered>,
    timeline: Arc<Mutex<Vec<crate::stats::UplinkSecond>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Uplink {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Uplink")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Uplink {
    /// Adds the probe track to `publish` and starts probing and planning. `audio`: a
    /// microphone track is sent.
    pub async fn start(
        publish: &RTCPeerConnection,
        bwe: Bwe,
        codec: RTCRtpCodecCapability,
    ) -> Result<Uplink, webrtc::Error> {
        let pacer = start_probing(publish, bwe.clone(), codec).await?;
        let tracks: Arc<Registered> = Arc::default();
        let timeline: Arc<Mutex<Vec<crate::stats::UplinkSecond>>> = Arc::default();
        let planner = {
            let (bwe, tracks, timeline) = (bwe.clone(), tracks.clone(), timeline.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(PLAN_EVERY);
                let start = Instant::now();
                let mut second = (0u64, 0u64);
                loop {
                    every.tick().await;
                    Self::replan(&bwe, &tracks);
                    let t = start.elapsed().as_secs();
                    if t > second.0 {
                        let b = bwe.lock();
                        let sent = b.sent_bytes();
                        let estimate = b
                            .is_live(Instant::now())
                            .then(|| (b.target() / 1000).min(u64::from(u32::MAX)) as u32);
                        drop(b);
                        let mut tl = lock(&timeline);
                        // About 10 hours at most.
                        if tl.len() < 36_000 {
                            tl.push(crate::stats::UplinkSecond {
                                t: second.0,
                                sent_kbps: ((sent - second.1) * 8 / 1000 / (t - second.0))
                                    .min(u64::from(u32::MAX))
                                    as u32,
                                estimate_kbps: estimate,
                            });
                        }
                        second = (t, sent);
                    }
                }
            })
        };
        Ok(Uplink {
            tracks,
            timeline,
            tasks: vec![pacer, planner],
        })
    }

    /// A video track to keep within the uplink.
    pub fn register(&self, kind: TrackKind, control: &Arc<SendControl>) {
        let mut t = lock(&self.tracks);
        t.retain(|(_, w)| w.strong_count() > 0);
        t.push((kind, Arc::downgrade(control)));
    }

    /// What was sent, second by second.
    pub fn timeline(&self) -> Vec<crate::stats::UplinkSecond> {
        lock(&self.timeline).clone()
    }

    fn replan(bwe: &Bwe, tracks: &Registered) {
        let live: Vec<(TrackKind, Arc<SendControl>)> = lock(tracks)
            .iter()
            .filter_map(|(k, w)| w.upgrade().map(|c| (*k, c)))
            .collect();
        let needs: Vec<(TrackKind, Vec<LayerNeed>)> = live
            .iter()
            .map(|(kind, c)| {
                let source = *lock(&c.source);
                let count = if *kind == TrackKind::Screen { 1 } else { 3 };
                let rates = match source {
                    Some((w, h, fps)) => layer_rates(*kind, w, h, fps, count),
                    None => vec![0; count],
                };
                let needs = rates
                    .iter()
                    .enumerate()
                    .map(|(i, &nominal_bps)| LayerNeed {
                        nominal_bps,
                        wanted: nominal_bps > 0
                            && (count == 1 || c.wanted[i].load(Ordering::Relaxed)),
                    })
                    .collect();
                (*kind, needs)
            })
            .collect();
        let wanted: u64 = AUDIO_BPS
            + needs
                .iter()
                .flat_map(|(_, l)| l.iter().filter(|l| l.wanted).map(|l| l.nominal_bps))
                .sum::<u64>();
        let budget = {
            let mut b = bwe.lock();
            // Past the cost: the plan keeps a tenth in hand.
            b.set_wanted(wanted / 4 * 5);
            b.budget(Instant::now())
        };
        // Without feedback nothing is limited: every wanted layer at its nominal rate.
        let plans = plan(budget.map_or(u64::MAX / 4, |b| b / 10 * 9), true, &needs);
        tracing::debug!(
            ?budget,
            plan = ?plans
                .iter()
                .map(|p| p.iter().map(|l| if l.on { l.bps / 1000 } else { 0 }).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            // (Fields are only worked out when the debug level is on.)
            bwe = bwe.lock().summary(Instant::now()),
            "uplink plan"
        );
        for (((_, c), p), (_, need)) in live.iter().zip(plans).zip(&needs) {
            for ((l, p), need) in c.layers.iter().zip(p).zip(need) {
                l.stand_in
                    .store(budget.is_some() && p.on && !need.wanted, Ordering::Relaxed);
                l.on.store(p.on || budget.is_none(), Ordering::Relaxed);
                l.bps.store(
                    if budget.is_none() {
                        0
                    } else {
                        p.bps.min(u64::from(u32::MAX)) as u32
                    },
                    Ordering::Relaxed,
                );
                l.half_fps.store(p.half_fps, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera() -> (TrackKind, Vec<LayerNeed>) {
        let rates = layer_rates(TrackKind::Video, 1280, 720, 30, 3);
        (
            TrackKind::Video,
            rates
                .into_iter()
                .map(|nominal_bps| LayerNeed {
                    nominal_bps,
                    wanted: true,
                })
                .collect(),
        )
    }

    fn on(p: &[LayerPlan]) -> Vec<bool> {
        p.iter().map(|l| l.on).collect()
    }

    #[test]
    fn camera_layers_cost_what_the_server_expects() {
        assert_eq!(
            layer_rates(TrackKind::Video, 1280, 720, 30, 3),
            [130_000, 432_000, 1_728_000]
        );
        // A 480p camera has no quarter layer narrower than 320 pixels.
        assert_eq!(layer_rates(TrackKind::Video, 640, 480, 30, 3)[0], 0);
    }

    #[test]
    fn a_wide_uplink_sends_every_layer() {
        let p = plan(5_000_000, true, &[camera()]);
        assert_eq!(on(&p[0]), [true, true, true]);
        // Every layer at the full frame rate, the lowest one too (small tiles and narrow
        // downlinks get it).
        assert!(p[0].iter().all(|l| !l.half_fps));
    }

    #[test]
    fn layers_drop_from_the_top_then_the_frame_rate() {
        // 1 Mbit/s: audio, quarter and half (48k + 130k + 432k); the full layer does not fit.
        let p = plan(1_000_000, true, &[camera()]);
        assert_eq!(on(&p[0]), [true, true, false]);
        // 360 kbit/s (a 400 kbit/s link): the quarter layer only, lifted to full frame rate.
        let p = plan(360_000, true, &[camera()]);
        assert_eq!(on(&p[0]), [true, false, false]);
        assert_eq!(p[0][0].bps, 300_000);
        assert!(!p[0][0].half_fps);
        // 150 kbit/s: the quarter layer at half the frame rate, never less than 80 kbit/s.
        let p = plan(150_000, true, &[camera()]);
        assert_eq!(on(&p[0]), [true, false, false]);
        assert!(p[0][0].half_fps && p[0][0].bps >= 80_000);
    }

    #[test]
    fn a_shared_screen_comes_before_the_camera() {
        let screen = (
            TrackKind::Screen,
            vec![LayerNeed {
                nominal_bps: 1_296_000,
                wanted: true,
            }],
        );
        let p = plan(1_600_000, true, &[camera(), screen]);
        assert_eq!(on(&p[1]), [true]);
        assert!(p[1][0].bps >= 1_296_000);
        assert_eq!(on(&p[0]), [true, false, false]);
        assert!(!p[1][0].half_fps);
    }

    #[test]
    fn a_smaller_picture_replaces_a_wanted_layer_that_does_not_fit() {
        // Only the full layer is watched; the uplink falls to 400 kbit/s (a 360k budget).
        let (kind, mut layers) = camera();
        layers[0].wanted = false;
        layers[1].wanted = false;
        let p = plan(360_000, true, &[(kind, layers.clone())]);
        // The quarter layer instead, lifted, at the full frame rate.
        assert_eq!(on(&p[0]), [true, false, false]);
        assert_eq!(p[0][0].bps, 300_000);
        assert!(!p[0][0].half_fps);
        // 700 kbit/s: the half layer fits and is sent instead.
        let p = plan(700_000, true, &[(kind, layers.clone())]);
        assert_eq!(on(&p[0]), [false, true, false]);
        // Room for it: the full layer itself.
        let p = plan(3_000_000, true, &[(kind, layers)]);
        assert_eq!(on(&p[0]), [false, false, true]);
    }

    #[test]
    fn layers_nobody_watches_are_not_sent() {
        let (kind, mut layers) = camera();
        layers[2].wanted = false;
        layers[0].wanted = false;
        let p = plan(5_000_000, true, &[(kind, layers)]);
        assert_eq!(on(&p[0]), [false, true, false]);
    }
}
