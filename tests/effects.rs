//! Background replacement in a call: a participant whose camera shows a photograph of a
//! person (client-tauri/effects/tests/data/person.jpg) publishes it with the built-in "dusk"
//! background; the other decodes the call's video and finds the background region showing
//! the picture and the person region showing the camera. The whole engine runs: the effects
//! on the camera's frames, H.264, WebRTC through the server. Needs the ui's npm dependencies
//! (the segmentation model, `@mediapipe/selfie_segmentation`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convo_client::call::{self, CallOptions};
use convo_client::effects::{Background, Effects, EffectsControl, PictureCamera};
use convo_client::media::{self, DecodedVideo, MediaBackend, MediaError, Synthetic};
use convo_e2e::{Backend, Env};

const W: usize = 640;
const H: usize = 360;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../client-tauri/effects/tests/data")
        .join(name)
}

/// A camera showing the photograph; audio and screen synthetic.
struct Photo(Synthetic);

impl MediaBackend for Photo {
    fn microphone(&self) -> Result<Box<dyn media::AudioSource>, MediaError> {
        self.0.microphone()
    }
    fn camera(&self) -> Result<Box<dyn media::VideoSource>, MediaError> {
        Ok(Box::new(PictureCamera::open(
            &data("person.jpg"),
            W,
            H,
            15,
        )?))
    }
    fn screen(&self) -> Result<Box<dyn media::VideoSource>, MediaError> {
        self.0.screen()
    }
}

/// A decoded picture's width, height and Y plane.
type Picture = (usize, usize, Vec<u8>);

/// The viewer keeps the last decoded picture (width, height, Y plane) and counts them.
#[derive(Clone, Default)]
struct Viewer {
    last: Arc<Mutex<Option<Picture>>>,
    frames: Arc<Mutex<u32>>,
}

struct Keep(Viewer);

impl media::VideoSink for Keep {
    fn frame(&mut self, f: &DecodedVideo<'_>) {
        let mut y = Vec::with_capacity(f.width * f.height);
        for row in 0..f.height {
            y.extend_from_slice(&f.y[row * f.strides.0..][..f.width]);
        }
        *self.0.last.lock().unwrap() = Some((f.width, f.height, y));
        *self.0.frames.lock().unwrap() += 1;
    }
}

struct ViewerBackend(Synthetic, Viewer);

impl MediaBackend for ViewerBackend {
    fn microphone(&self) -> Result<Box<dyn media::AudioSource>, MediaError> {
        self.0.microphone()
    }
    fn camera(&self) -> Result<Box<dyn media::VideoSource>, MediaError> {
        self.0.camera()
    }
    fn screen(&self) -> Result<Box<dyn media::VideoSource>, MediaError> {
        self.0.screen()
    }
    fn video_sink(&self, t: &media::RemoteTrack) -> Option<Box<dyn media::VideoSink>> {
        (t.kind == convo_shared::signal::TrackKind::Video)
            .then(|| Box::new(Keep(self.1.clone())) as _)
    }
}

/// The reference mask (the person, made once with MediaPipe), shrunk by `margin` pixels on
/// both sides of its edge: (surely the person, surely the background).
fn regions(margin: isize) -> (Vec<bool>, Vec<bool>) {
    let m = image::open(data("person_mask.png")).unwrap().to_luma8();
    let r: Vec<bool> = m.pixels().map(|p| p.0[0] > 127).collect();
    let all = |i: usize, want: bool| {
        let (x, y) = ((i % W) as isize, (i / W) as isize);
        (-margin..=margin).all(|dy| {
            (-margin..=margin).all(|dx| {
                let (xx, yy) = (x + dx, y + dy);
                xx < 0
                    || yy < 0
                    || xx >= W as isize
                    || yy >= H as isize
                    || r[yy as usize * W + xx as usize] == want
            })
        })
    };
    (
        (0..W * H).map(|i| all(i, true)).collect(),
        (0..W * H).map(|i| all(i, false)).collect(),
    )
}

/// Mean absolute difference of two lumas (`got` at its own size, scaled to W×H) in a region.
fn diff(got: &Picture, want: &[u8], region: &[bool]) -> f64 {
    let (gw, gh, y) = got;
    let (mut sum, mut n) = (0u64, 0u64);
    for (i, inside) in region.iter().enumerate() {
        if !inside {
            continue;
        }
        let (x, yy) = (i % W, i / W);
        let g = y[(yy * gh / H) * gw + x * gw / W];
        sum += u64::from(g.abs_diff(want[i]));
        n += 1;
    }
    sum as f64 / n.max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_the_chosen_picture_behind_the_person() {
    assert!(
        convo_effects_model_installed(),
        "the segmentation model: run `npm ci` in ui/ (it installs @mediapipe/selfie_segmentation)"
    );
    let env = Env::start(Backend::Sqlite).await;
    let (alice, bob) = (env.user("alice").await, env.user("bob").await);
    let room = env.room(&alice, "Effects").await;
    let synthetic = Synthetic {
        tone_hz: 440.0,
        fps: 15,
        size: convo_client::synth::VideoSize {
            width: W,
            height: H,
        },
    };
    let effects = EffectsControl::default();
    effects
        .set(Effects {
            background: Background::Builtin { id: "dusk".into() },
            touch_up: false,
        })
        .unwrap();
    let viewer = Viewer::default();
    let opts = |b: media::Backend, fx: Option<EffectsControl>, video: bool| CallOptions {
        room_id: room.clone(),
        video,
        fps: 15,
        duration: Duration::from_secs(12),
        backend: Some(b),
        video_effects: fx,
        ..Default::default()
    };
    let base = env.base.clone();
    let a = {
        let (base, o) = (
            base.clone(),
            opts(
                media::Backend(Arc::new(Photo(synthetic))),
                Some(effects.clone()),
                true,
            ),
        );
        tokio::spawn(async move { call::run(&base, &alice, o).await.unwrap() })
    };
    let b = {
        let o = opts(
            media::Backend(Arc::new(ViewerBackend(synthetic, viewer.clone()))),
            None,
            false,
        );
        tokio::spawn(async move { call::run(&base, &bob, o).await.unwrap() })
    };
    let (_, report) = (a.await.unwrap(), b.await.unwrap());
    let frames = *viewer.frames.lock().unwrap();
    let last = viewer
        .last
        .lock()
        .unwrap()
        .clone()
        .expect("the viewer decoded video");
    let (person, background) = regions(8);
    let photo = convo_effects_fit(&data("person.jpg"));
    let dusk = convo_client::effects::builtin_picture("dusk", W, H);
    let to_picture = diff(&last, &dusk[..W * H], &background);
    let to_camera = diff(&last, &photo[..W * H], &person);
    let camera_vs_picture = diff(
        &(W, H, photo[..W * H].to_vec()),
        &dusk[..W * H],
        &background,
    );
    eprintln!(
        "{frames} frames decoded, the last {}x{}; background {to_picture:.1} levels from the picture (the camera's own is {camera_vs_picture:.1} away), person {to_camera:.1} from the camera; tracks: {}",
        last.0,
        last.1,
        report.tracks.len()
    );
    assert!(frames > 30, "{frames} frames");
    assert!(camera_vs_picture > 20.0);
    // Coding costs a few levels; the wrong picture would cost tens.
    assert!(
        to_picture < 8.0,
        "the background is {to_picture:.1} levels from the picture"
    );
    assert!(
        to_camera < 8.0,
        "the person is {to_camera:.1} levels from the camera"
    );
}

fn convo_effects_model_installed() -> bool {
    convo_client::effects::model_installed()
}

fn convo_effects_fit(path: &Path) -> Vec<u8> {
    convo_client::effects::load_picture(path, W, H).unwrap()
}
