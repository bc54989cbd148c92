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
