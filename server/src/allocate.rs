//! Sharing one subscriber's downlink among the tracks it receives, sans IO: audio first
//! (always), then every shown video at its lowest layer, biggest tile first, then upgrades
//! toward the layer each tile's size asks for, again biggest first, while the estimate
//! allows (with a tenth to spare). A simulcast video that does not fit even at its lowest
//! layer is paused (the app shows the person's name instead of a frozen picture); one
//! without layers is never paused.

use crate::forward::Layer;

/// A layer must fit with this much room to spare before a subscriber is moved up to it, so
/// that an estimate hovering around a layer's rate does not flip the picture back and forth.
const UPGRADE_MARGIN: f64 = 1.1;
/// The layer being forwarded is kept while the estimate dips below its rate by less than
/// this: the keyframe a switch up sends queues on a link that carries the new layer well,
/// the delay estimate reads the queue as overuse and dips for a moment — stepping back down
/// at once would flip the picture every few seconds. A real drop goes on (with loss, further
/// overuse) and takes the layer down.
const KEEP_MARGIN: f64 = 0.85;
/// Audio not measured yet (Opus voice with headers).
const AUDIO_NOMINAL: u64 = 48_000;

/// What a layer costs before it was measured: the rate our clients encode a camera at, at
/// 30 fps.
pub fn nominal_bps(l: &Layer) -> u64 {
    convo_shared::bwe::camera_bps(l.width.into(), l.height.into(), 30)
}

/// What a layer costs: measured while it is sent, else its nominal rate.
pub fn layer_bps(l: &Layer) -> u64 {
    if l.active && l.bitrate > 0 {
        l.bitrate
    } else {
        nominal_bps(l)
    }
}

/// One track a subscriber receives.
#[derive(Debug, Clone)]
pub struct Demand {
    pub audio: bool,
    /// Lowest first; one for a track without simulcast.
    pub layers: Vec<Layer>,
    /// The layer the tile's size asks for (`None`: not shown).
    pub desired: Option<usize>,
    /// The layer forwarded now.
    pub current: Option<usize>,
    /// Larger is served first (the tile's area).
    pub priority: u64,
}

/// The plan for one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Per demand, the highest layer it may have (`None`: paused).
    pub caps: Vec<Option<usize>>,
    /// What everything desired would cost: where probing aims.
    pub wanted_bps: u64,
    /// What the caps cost.
    pub used_bps: u64,
}

pub fn allocate(budget_bps: u64, demands: &[Demand]) -> Allocation {
    let mut caps: Vec<Option<usize>> = vec![None; demands.len()];
    let mut left = budget_bps as i64;
    let mut wanted = 0u64;
    let rate = |d: &Demand, i: usize| d.layers.get(i).map_or(0, layer_bps);
    for (i, d) in demands.iter().enumerate().filter(|(_, d)| d.audio) {
        let r = d
            .layers
            .first()
            .filter(|l| l.active && l.bitrate > 0)
            .map_or(AUDIO_NOMINAL, |l| l.bitrate);
        caps[i] = Some(0);
        left -= r as i64;
        wanted += r;
    }
    let mut order: Vec<usize> = (0..demands.len())
        .filter(|&i| {
            !demands[i].audio && demands[i].desired.is_some() && !demands[i].layers.is_empty()
        })
        .collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(demands[i].priority), i));
    for &i in &order {
        let d = &demands[i];
        if let Some(want) = d.desired {
            wanted += rate(d, want.min(d.layers.len() - 1));
        }
        let r = rate(d, 0) as i64;
        // A track without layers (a browser's or OBS's over WHIP) has nothing to step down
        // to and is never paused: coming back needs a keyframe from a publisher that may not
        // send one when asked. It still costs what it costs.
        if r <= left || d.layers.len() == 1 {
            caps[i] = Some(0);
            left -= r;
        }
    }
    // Upgrades, one layer at a time, biggest tile first, until nothing more fits.
    loop {
        let mut moved = false;
        for &i in &order {
            let d = &demands[i];
            let (Some(cap), Some(want)) = (caps[i], d.desired) else {
                continue;
            };
            let next = cap + 1;
            if next > want.min(d.layers.len() - 1) {
                continue;
            }
            let margin = if d.current.is_none_or(|c| next > c) {
                UPGRADE_MARGIN
            } else {
                KEEP_MARGIN
            };
            let extra = (rate(d, next) as f64 * margin) as i64 - rate(d, cap) as i64;
            if extra <= left {
                left -= rate(d, next) as i64 - rate(d, cap) as i64;
                caps[i] = Some(next);
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    let used = (budget_bps as i64 - left).max(0) as u64;
    Allocation {
        caps,
        wanted_bps: wanted,
        used_bps: used,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 720p camera's three layers as our clients send them (q 130k, h 432k, f 1.73M).
    fn camera(active: bool) -> Vec<Layer> {
        [(320, 180), (640, 360), (1280, 720)]
            .into_iter()
            .map(|(width, height)| Layer {
                width,
                height,
                active,
                bitrate: 0,
            })
            .collect()
    }

    fn video(priority: u64, desired: usize) -> Demand {
        Demand {
            audio: false,
            layers: camera(true),
            desired: Some(desired),
            current: None,
            priority,
        }
    }

    fn audio() -> Demand {
        Demand {
            audio: true,
            layers: vec![Layer {
                width: 0,
                height: 0,
                active: true,
                bitrate: 40_000,
            }],
            desired: Some(0),
            current: Some(0),
            priority: 0,
        }
    }

    #[test]
    fn a_wide_link_gets_what_the_tiles_ask_for() {
        let a = allocate(10_000_000, &[audio(), video(100, 2), video(10, 0)]);
        assert_eq!(a.caps, [Some(0), Some(2), Some(0)]);
        assert_eq!(a.wanted_bps, 40_000 + 1_728_000 + 130_000);
    }

    #[test]
    fn layers_step_down_to_fit_and_audio_comes_first() {
        // 600 kbit/s: audio, then the camera's half layer (432k) fits, the full one does not.
        let a = allocate(600_000, &[audio(), video(100, 2)]);
        assert_eq!(a.caps, [Some(0), Some(1)]);
        // 250 kbit/s: the lowest layer.
        let a = allocate(250_000, &[audio(), video(100, 2)]);
        assert_eq!(a.caps, [Some(0), Some(0)]);
        // 100 kbit/s: audio only, the video is paused.
        let a = allocate(100_000, &[audio(), video(100, 2)]);
        assert_eq!(a.caps, [Some(0), None]);
        // Nothing at all: audio is still allocated (it is never cut).
        let a = allocate(0, &[audio(), video(100, 2)]);
        assert_eq!(a.caps, [Some(0), None]);
    }

    #[test]
    fn the_biggest_tile_is_served_first_and_everyone_gets_something() {
        // The speaker (big tile) and two small tiles that want the half layer.
        let d = [video(10, 1), video(1000, 2), video(10, 1)];
        let a = allocate(1_200_000, &d);
        // Everyone's lowest (450k), then the speaker climbs to the half layer (+282k; the
        // full one does not fit), then the first small tile (+282k); the second does not fit.
        assert_eq!(a.caps, [Some(1), Some(1), Some(0)]);
    }

    #[test]
    fn moving_up_needs_room_to_spare_staying_does_not() {
        // Half layer measured at 500k; 530k of budget fits it but not with 10 % to spare.
        let mut d = video(100, 1);
        d.layers[1].bitrate = 500_000;
        d.layers[0].bitrate = 150_000;
        assert_eq!(allocate(530_000, std::slice::from_ref(&d)).caps, [Some(0)]);
        d.current = Some(1);
        assert_eq!(allocate(530_000, &[d]).caps, [Some(1)]);
    }

    #[test]
    fn a_dip_after_a_switch_keeps_the_layer_a_drop_does_not() {
        // Audio 40k, lowest 150k, half 365k (a browser's): moved up at 600k of budget.
        let mut d = video(100, 1);
        d.layers[0].bitrate = 150_000;
        d.layers[1].bitrate = 365_000;
        d.current = Some(1);
        // The switch's keyframe made the estimate dip to 363k: the half layer stays.
        assert_eq!(
            allocate(363_000, &[audio(), d.clone()]).caps,
            [Some(0), Some(1)]
        );
        // A real drop (to 300k) takes it down; not moved up again at 363k.
        assert_eq!(
            allocate(300_000, &[audio(), d.clone()]).caps,
            [Some(0), Some(0)]
        );
        d.current = Some(0);
        assert_eq!(allocate(363_000, &[audio(), d]).caps, [Some(0), Some(0)]);
    }

    #[test]
    fn a_video_without_layers_is_never_paused_but_costs_its_rate() {
        let mut d = video(100, 0);
        d.layers.truncate(1);
        d.layers[0].bitrate = 400_000;
        let a = allocate(150_000, &[d.clone(), video(10, 0)]);
        assert_eq!(a.caps, [Some(0), None]);
        assert_eq!(
            allocate(1_000_000, &[d, video(10, 0)]).caps,
            [Some(0), Some(0)]
        );
    }

    #[test]
    fn hidden_tiles_cost_nothing() {
        let mut hidden = video(0, 0);
        hidden.desired = None;
        let a = allocate(200_000, &[hidden, video(5, 0)]);
        assert_eq!(a.caps, [None, Some(0)]);
        assert_eq!(a.wanted_bps, 130_000);
    }
}
