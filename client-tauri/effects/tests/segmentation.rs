//! The segmentation model on a photograph of a person (NASA's portrait of Eileen Collins,
//! public domain, from scikit-image's data images) set against a striped wall: the mask it
//! finds against a reference made once with MediaPipe's own runtime (its largest region,
//! `tests/data/person_mask.png`), and the effects composed with it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use convo_effects::composite::{Background, Effects, Processor, fit_picture};
use convo_effects::segment::{I420, Segmenter, model_path};

const W: usize = 640;
const H: usize = 360;
/// The photograph's columns in the test picture; left and right of it is the wall only.
const PHOTO: std::ops::Range<usize> = 140..500;

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn person() -> Vec<u8> {
    let img = image::open(data("person.jpg")).unwrap().to_rgb8();
    assert_eq!((img.width(), img.height()), (W as u32, H as u32));
    fit_picture(&img, W, H)
}

fn reference() -> Vec<bool> {
    let m = image::open(data("person_mask.png")).unwrap().to_luma8();
    m.pixels().map(|p| p.0[0] > 127).collect()
}

fn segmenter() -> Segmenter {
    let path = model_path().expect(
        "the model: run `npm ci` in ui/ (it installs @mediapipe/selfie_segmentation) or set CONVO_SEGMENTATION_MODEL",
    );
    Segmenter::open(&path).unwrap()
}

/// The model's mask stretched to the frame and cut at one half.
fn mask_of(seg: &mut Segmenter, frame: &[u8]) -> Vec<bool> {
    let (mw, mh) = seg.mask_size();
    let mask = seg
        .segment(I420 {
            width: W,
            height: H,
            data: frame,
        })
        .to_vec();
    (0..W * H)
        .map(|i| {
            let (x, y) = (i % W, i / W);
            mask[(y * mh / H) * mw + x * mw / W] > 0.5
        })
        .collect()
}

fn iou(a: &[bool], b: &[bool]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    inter as f64 / union.max(1) as f64
}

#[test]
fn the_mask_covers_the_person_and_not_the_wall() {
    let mut seg = segmenter();
    let mask = mask_of(&mut seg, &person());
    let reference = reference();
    let iou = iou(&mask, &reference);
    let wall = (0..W * H).filter(|i| !PHOTO.contains(&(i % W)));
    let (wall_n, wall_hit) = wall.fold((0, 0), |(n, k), i| (n + 1, k + usize::from(mask[i])));
    let wall_share = wall_hit as f64 / wall_n as f64;
    eprintln!(
        "IoU with the reference {iou:.3}; the wall covered {:.2} %",
        wall_share * 100.0
    );
    assert!(iou >= 0.8, "IoU {iou:.3}");
    assert!(
        wall_share < 0.01,
        "{:.2} % of the wall taken for the person",
        wall_share * 100.0
    );
}

/// The reference mask shrunk by `margin` pixels (what is surely the person), and its
/// complement shrunk likewise (surely not), so edges do not decide a comparison.
fn regions(margin: usize) -> (Vec<bool>, Vec<bool>) {
    let r = reference();
    let near = |i: usize, want: bool| {
        let (x, y) = ((i % W) as isize, (i / W) as isize);
        let m = margin as isize;
        (-m..=m).all(|dy| {
            (-m..=m).all(|dx| {
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
        (0..W * H).map(|i| near(i, true)).collect(),
        (0..W * H).map(|i| near(i, false)).collect(),
    )
}

fn mean_abs_diff(a: &[u8], b: &[u8], region: &[bool]) -> f64 {
    let (sum, n) = a
        .iter()
        .zip(b)
        .zip(region)
        .filter(|(_, r)| **r)
        .fold((0u64, 0u64), |(s, n), ((x, y), _)| {
            (s + u64::from(x.abs_diff(*y)), n + 1)
        });
    sum as f64 / n.max(1) as f64
}

/// High-frequency energy of the luma in a region: the mean absolute difference between
/// horizontal neighbours (the wall's stripes are 4 pixels wide).
fn detail(luma: &[u8], region: &[bool]) -> f64 {
    let (sum, n) = (0..W * H)
        .filter(|i| i % W + 1 < W && region[*i] && region[*i + 1])
        .fold((0u64, 0u64), |(s, n), i| {
            (s + u64::from(luma[i].abs_diff(luma[i + 1])), n + 1)
        });
    sum as f64 / n.max(1) as f64
}

fn processed(effects: Effects) -> Vec<u8> {
    let mut p = Processor::with_segmenter(segmenter());
    p.set(effects).unwrap();
    let mut frame = person();
    // A few frames, as a camera gives them: the mask settles.
    for _ in 0..3 {
        frame = person();
        p.process(W, H, &mut frame).unwrap();
    }
    frame
}

#[test]
fn blur_takes_the_detail_out_of_the_background_only() {
    let (person_region, background) = regions(6);
    let original = person();
    let luma = |f: &[u8]| f[..W * H].to_vec();
    let before = (
        detail(&original, &background),
        detail(&original, &person_region),
    );
    for strong in [false, true] {
        let out = processed(Effects {
            background: Background::Blur { strong },
            touch_up: false,
        });
        let after = (detail(&out, &background), detail(&out, &person_region));
        let person_change = mean_abs_diff(&luma(&out), &luma(&original), &person_region);
        eprintln!(
            "blur (strong: {strong}): background detail {:.2} -> {:.2}, person {:.2} -> {:.2}, person changed by {person_change:.2} levels",
            before.0, after.0, before.1, after.1
        );
        assert!(
            after.0 < before.0 * 0.25,
            "the background kept its detail: {before:?} -> {after:?}"
        );
        assert!(
            after.1 > before.1 * 0.9,
            "the person lost detail: {before:?} -> {after:?}"
        );
        assert!(
            person_change < 2.0,
            "the person changed by {person_change:.2}"
        );
    }
}

#[test]
fn a_picture_replaces_the_background_and_keeps_the_person() {
    let (person_region, background) = regions(6);
    let out = processed(Effects {
        background: Background::Builtin { id: "dusk".into() },
        touch_up: false,
    });
    let dusk = convo_effects::composite::builtin("dusk", W, H);
    let original = person();
    let to_picture = mean_abs_diff(&out[..W * H], &dusk[..W * H], &background);
    let to_camera = mean_abs_diff(&out[..W * H], &original[..W * H], &person_region);
    let was = mean_abs_diff(&original[..W * H], &dusk[..W * H], &background);
    eprintln!(
        "background: {to_picture:.2} levels from the picture (the camera's was {was:.2}); person: {to_camera:.2} from the camera"
    );
    assert!(to_picture < 5.0 && was > 20.0, "{to_picture:.2} / {was:.2}");
    assert!(to_camera < 2.0, "{to_camera:.2}");
}

#[test]
fn touch_up_brightens_the_person_and_leaves_the_background() {
    let (person_region, background) = regions(6);
    let original = person();
    let out = processed(Effects {
        background: Background::None,
        touch_up: true,
    });
    let mean = |f: &[u8], r: &[bool]| {
        let (s, n) = f[..W * H]
            .iter()
            .zip(r)
            .filter(|(_, r)| **r)
            .fold((0u64, 0u64), |(s, n), (v, _)| (s + u64::from(*v), n + 1));
        s as f64 / n as f64
    };
    let lift = mean(&out, &person_region) - mean(&original, &person_region);
    let bg_change = mean_abs_diff(&out[..W * H], &original[..W * H], &background);
    eprintln!(
        "touch-up: the person {lift:+.1} levels brighter; the background changed by {bg_change:.2}"
    );
    assert!(lift > 4.0, "{lift:.1}");
    assert!(bg_change < 0.5, "{bg_change:.2}");
}

#[test]
fn a_picture_that_is_not_one_is_refused_and_changes_nothing() {
    let mut p = Processor::with_segmenter(segmenter());
    let dir = std::env::temp_dir().join(format!("convo-effects-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("not-a-picture.png");
    std::fs::write(&bad, b"hello").unwrap();
    let err = p
        .set(Effects {
            background: Background::File { path: bad },
            touch_up: false,
        })
        .unwrap_err();
    assert_eq!(err.code(), "effects_picture");
    let mut frame = person();
    p.process(W, H, &mut frame).unwrap();
    assert_eq!(
        frame,
        person(),
        "a refused picture left the frame as it was"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_that_is_not_a_model_is_a_clear_error() {
    let err = Segmenter::from_bytes(b"TFL2 not a model").unwrap_err();
    assert_eq!(err.code(), "effects_model");
    let mut bytes = std::fs::read(model_path().unwrap()).unwrap();
    bytes.truncate(bytes.len() / 3);
    assert_eq!(
        Segmenter::from_bytes(&bytes).unwrap_err().code(),
        "effects_model"
    );
}

#[test]
fn a_machine_too_slow_for_the_effects_gets_them_switched_off_with_a_reason() {
    // A limit no machine meets: after a window of frames the effects go, with the reason.
    let mut p = Processor::with_segmenter(segmenter()).with_time_limit(0.0);
    p.set(Effects {
        background: Background::Blur { strong: true },
        touch_up: false,
    })
    .unwrap();
    let mut outcome = Ok(());
    for _ in 0..convo_effects::composite::SLOW_WINDOW {
        let mut frame = person();
        outcome = p.process(W, H, &mut frame);
    }
    let err = outcome.unwrap_err();
    assert_eq!(err.code(), "effects_too_slow");
    assert!(err.to_string().contains("too slow"), "{err}");
    assert!(p.effects().is_none());
    let mut frame = person();
    p.process(W, H, &mut frame).unwrap();
    assert_eq!(
        frame,
        person(),
        "after switching off, frames pass untouched"
    );
}

/// The share of pixels whose mask flips (crosses one half) from one frame to the next, over
/// frames of the photograph with a little sensor noise (seeded).
fn flicker(smoothing: f32) -> f64 {
    let mut seg = segmenter();
    seg.set_smoothing(smoothing);
    let clean = person();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut previous: Option<Vec<bool>> = None;
    let (mut flips, mut total) = (0usize, 0usize);
    for _ in 0..24 {
        let noisy: Vec<u8> = clean
            .iter()
            .map(|v| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (i32::from(*v) + (seed % 13) as i32 - 6).clamp(0, 255) as u8
            })
            .collect();
        let m = seg
            .segment(I420 {
                width: W,
                height: H,
                data: &noisy,
            })
            .iter()
            .map(|p| *p > 0.5)
            .collect::<Vec<_>>();
        if let Some(prev) = &previous {
            flips += prev.iter().zip(&m).filter(|(a, b)| a != b).count();
            total += m.len();
        }
        previous = Some(m);
    }
    flips as f64 / total as f64
}

#[test]
fn the_mask_edge_holds_still_on_a_still_picture() {
    let (raw, smoothed) = (flicker(1.0), flicker(0.55));
    eprintln!(
        "mask pixels flipping per frame: {:.3} % unsmoothed, {:.3} % smoothed",
        raw * 100.0,
        smoothed * 100.0
    );
    // ±6 levels of noise on every pixel, more than a camera in daylight: the edge moves by a
    // pixel here and there, half as often as unsmoothed.
    assert!(
        smoothed < raw * 0.6,
        "smoothing did not steady the edge: {raw} -> {smoothed}"
    );
    assert!(
        smoothed < 0.005,
        "{:.3} % of the mask flips every frame",
        smoothed * 100.0
    );
}
