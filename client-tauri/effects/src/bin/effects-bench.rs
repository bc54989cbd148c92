//! The video effects' cost per frame, on one core: `cargo run --release -p convo-effects
//! --bin effects-bench`. Prints milliseconds per frame at 640×360 and 1280×720 for the
//! segmentation alone and for each effect, against the 10 ms target at 640×360.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use convo_effects::composite::{Background, Effects, Processor, fit_picture};
use convo_effects::segment::{I420, Segmenter, model_path};

fn main() {
    let path =
        model_path().expect("the model: run `npm ci` in ui/ or set CONVO_SEGMENTATION_MODEL");
    let photo = image::open(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/person.jpg"
    ))
    .expect("the test photograph")
    .to_rgb8();
    let frames = 120;
    {
        let mut s = Segmenter::open(&path).unwrap();
        let frame = fit_picture(&photo, 640, 360);
        s.segment(I420 {
            width: 640,
            height: 360,
            data: &frame,
        });
        let mut total: Vec<(&str, f64)> = Vec::new();
        for _ in 0..20 {
            for (k, ms) in s.profile() {
                match total.iter_mut().find(|(t, _)| *t == k) {
                    Some(e) => e.1 += ms / 20.0,
                    None => total.push((k, ms / 20.0)),
                }
            }
        }
        total.sort_by(|a, b| b.1.total_cmp(&a.1));
        let parts: Vec<String> = total.iter().map(|(k, ms)| format!("{k} {ms:.2}")).collect();
        println!("the model's time by operator (ms): {}", parts.join(", "));
    }
    println!("video effects, per frame (one core, {frames} frames each; target at 640x360: 10 ms)");
    println!("{:<30} {:>10} {:>10}", "", "640x360", "1280x720");
    let blur = |strong| Effects {
        background: Background::Blur { strong },
        touch_up: false,
    };
    let dusk = |touch_up| Effects {
        background: Background::Builtin { id: "dusk".into() },
        touch_up,
    };
    let cases: Vec<(&str, Option<Effects>)> = vec![
        ("segmentation only", None),
        ("blur", Some(blur(false))),
        ("blur, strong", Some(blur(true))),
        ("picture (dusk)", Some(dusk(false))),
        ("picture + touch-up", Some(dusk(true))),
    ];
    let rows: Vec<(String, Option<Effects>, u32)> = cases
        .iter()
        .map(|(n, e)| (format!("{n}, every frame"), e.clone(), 1))
        .chain(
            cases
                .iter()
                .filter(|(_, e)| e.is_some())
                .map(|(n, e)| (format!("{n}, at 30 fps"), e.clone(), 30)),
        )
        .collect();
    for (name, effects, fps) in rows {
        let mut row = Vec::new();
        for (w, h) in [(640usize, 360usize), (1280, 720)] {
            let frame = fit_picture(&photo, w, h);
            let ms = match &effects {
                None => {
                    let mut s = Segmenter::open(&path).unwrap();
                    s.segment(I420 {
                        width: w,
                        height: h,
                        data: &frame,
                    });
                    let t = Instant::now();
                    for _ in 0..frames {
                        s.segment(I420 {
                            width: w,
                            height: h,
                            data: &frame,
                        });
                    }
                    t.elapsed().as_secs_f64() * 1000.0 / f64::from(frames)
                }
                Some(e) => {
                    let mut p = Processor::with_segmenter(Segmenter::open(&path).unwrap())
                        .without_time_limit();
                    p.set_camera_fps(fps);
                    p.set(e.clone()).unwrap();
                    let mut f = frame.clone();
                    p.process(w, h, &mut f).unwrap();
                    let t = Instant::now();
                    for _ in 0..frames {
                        f.copy_from_slice(&frame);
                        p.process(w, h, &mut f).unwrap();
                    }
                    t.elapsed().as_secs_f64() * 1000.0 / f64::from(frames)
                }
            };
            row.push(ms);
        }
        println!(
            "{name:<30} {:>7.2} ms {:>7.2} ms   ({:.2}x the target at 640x360)",
            row[0],
            row[1],
            row[0] / 10.0
        );
    }
}
