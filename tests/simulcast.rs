//! Simulcast end to end: a bot publishes its camera at 1280 × 720 as three layers; the SFU
//! forwards each subscriber the layer that fits the size it draws the video at, switches
//! layers on keyframes without a garbled or out-of-order frame, and asks the publisher to
//! encode only the layers somebody watches.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use convo_client::call::{self, CallEvent, CallHandle, CallOptions};
use convo_client::stats::TrackReport;
use convo_client::synth::VideoSize;
use convo_e2e::{Backend, Env, on_both_databases, until};
use convo_shared::signal::{ServerMessage, TrackKind};
use tokio::sync::mpsc;

on_both_databases!(layers_follow_the_size_each_subscriber_draws);

fn video_of(call: &CallHandle, publisher: &str) -> Option<TrackReport> {
    call.reports()
        .into_iter()
        .find(|t| t.participant_id == publisher && t.kind == "video")
}

/// The next `layers_wanted` the publisher hears, skipping other events.
async fn layers_wanted(events: &mut mpsc::UnboundedReceiver<CallEvent>) -> Vec<String> {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("layers_wanted within 30 s")
            .expect("the call runs");
        if let CallEvent::Signal {
            message: ServerMessage::LayersWanted { kind, rids },
        } = e
        {
            assert_eq!(kind, TrackKind::Video);
            return rids;
        }
    }
}

async fn layers_follow_the_size_each_subscriber_draws(backend: Backend) {
    let env = Env::start(backend).await;
    let (tp, tbig, tsmall) = (
        env.user("presenter").await,
        env.user("big-screen").await,
        env.user("small-tile").await,
    );
    let room = env.room(&tp, "Simulcast").await;
    let (ptx, mut pevents) = mpsc::unbounded_channel();
    let publisher = call::start(
        &env.base,
        &tp,
        CallOptions {
            room_id: room.clone(),
            video_size: VideoSize::new(1280, 720),
            fps: 15,
            ..Default::default()
        },
        Some(ptx),
    )
    .await
    .unwrap();
    let pid = publisher.participant_id.clone();
    let watcher = |token: String, view: Option<(u32, u32)>| {
        let (base, room) = (env.base.clone(), room.clone());
        async move {
            call::start(
                &base,
                &token,
                CallOptions {
                    room_id: room,
                    audio: false,
                    video: false,
                    view,
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap()
        }
    };
    // One draws the camera large (it says nothing: the best layer), one as a small tile.
    let big = watcher(tbig, None).await;
    let small = watcher(tsmall, Some((320, 180))).await;
    until("the large view gets the full layer", 30, || {
        video_of(&big, &pid).is_some_and(|t| t.width == 1280 && t.frames_decoded > 10)
    })
    .await;
    until("the small tile gets the quarter layer", 30, || {
        video_of(&small, &pid).is_some_and(|t| t.width == 320 && t.height == 180)
    })
    .await;
    // Nobody watches the half layer: the publisher is told to encode the other two only.
    let mut wanted = layers_wanted(&mut pevents).await;
    while wanted != ["q", "f"] {
        wanted = layers_wanted(&mut pevents).await;
    }

    // The tile grows: the full layer, from a keyframe on.
    let before = video_of(&small, &pid).unwrap().frames_decoded;
    small.set_view(1280, 720);
    until("the grown tile gets the full layer", 30, || {
        video_of(&small, &pid).is_some_and(|t| t.width == 1280 && t.frames_decoded > before + 10)
    })
    .await;
    let mut wanted = layers_wanted(&mut pevents).await;
    while wanted != ["f"] {
        wanted = layers_wanted(&mut pevents).await;
    }
    // Hidden: nothing more arrives for it, and the big screen still gets its video.
    small.set_view(0, 0);
    let small_report = small.leave().await.unwrap();
    let big_report = big.leave().await.unwrap();
    publisher.leave().await.unwrap();
    for r in [&small_report, &big_report] {
        let v = r
            .tracks
            .iter()
            .find(|t| t.participant_id == pid && t.kind == "video")
            .unwrap();
        // Every frame's code read back, in order, across the switch between layers.
        assert!(v.content_ok, "{v:?}");
        assert!(v.timeline.iter().any(|s| s.width == 1280), "{v:?}");
    }
    env.stop().await;
}
