//! Where the person is: the segmentation model on a downscaled copy of the frame, its
//! per-pixel person probability smoothed over time so edges do not flicker.

use std::path::{Path, PathBuf};

use crate::EffectsError;
use crate::net::Net;

/// The model file's name (MediaPipe's landscape selfie segmentation: 256×144 in, a person
/// probability per pixel out).
pub const MODEL_FILE: &str = "selfie_segmentation_landscape.tflite";

/// How much of each new mask is taken (the rest is the previous one): enough to follow a
/// moving person within a few frames, little enough that a pixel at the edge does not blink.
const SMOOTHING: f32 = 0.55;

/// An I420 picture, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct I420<'a> {
    pub width: usize,
    pub height: usize,
    pub data: &'a [u8],
}

impl I420<'_> {
    /// Whether `data` holds a whole picture of this size (even sides, three planes).
    pub fn is_valid(&self) -> bool {
        self.width >= 2
            && self.height >= 2
            && self.width.is_multiple_of(2)
            && self.height.is_multiple_of(2)
            && self.data.len() == self.width * self.height * 3 / 2
    }

    /// BT.601 (video range) RGB, 0..1, of the pixel at (x, y).
    pub fn rgb(&self, x: usize, y: usize) -> [f32; 3] {
        let (w, h) = (self.width, self.height);
        let luma = f32::from(self.data[y * w + x]);
        let c = (y / 2) * (w / 2) + x / 2;
        let u = f32::from(self.data[w * h + c]) - 128.0;
        let v = f32::from(self.data[w * h + w * h / 4 + c]) - 128.0;
        let l = (luma - 16.0) * 1.164;
        [
            ((l + 1.596 * v) / 255.0).clamp(0.0, 1.0),
            ((l - 0.392 * u - 0.813 * v) / 255.0).clamp(0.0, 1.0),
            ((l + 2.017 * u) / 255.0).clamp(0.0, 1.0),
        ]
    }
}

/// The model, loaded, with the last mask.
#[derive(Debug)]
pub struct Segmenter {
    net: Net,
    /// The smoothed mask at the model's resolution, and the frame size it is for.
    mask: Vec<f32>,
    for_size: (usize, usize),
    smoothing: f32,
}

impl Segmenter {
    /// Loads a model from its bytes; it must take one RGB picture and give one mask.
    pub fn from_bytes(bytes: &[u8]) -> Result<Segmenter, EffectsError> {
        let net = Net::load(bytes)?;
        let (h, w, c) = net.input_shape();
        let (oh, ow, oc) = net.output_shape();
        if c != 3 || oc != 1 || (oh, ow) != (h, w) {
            return Err(EffectsError::Model(format!(
                "a model from {h}×{w}×{c} to {oh}×{ow}×{oc} is not a segmentation model"
            )));
        }
        Ok(Segmenter {
            net,
            mask: vec![0.0; w * h],
            for_size: (0, 0),
            smoothing: SMOOTHING,
        })
    }

    /// Loads the model file at `path`.
    pub fn open(path: &Path) -> Result<Segmenter, EffectsError> {
        let bytes = std::fs::read(path)
            .map_err(|e| EffectsError::Model(format!("{}: {e}", path.display())))?;
        Segmenter::from_bytes(&bytes)
    }

    /// Loads the model from where it is installed (see [`model_path`]).
    pub fn installed() -> Result<Segmenter, EffectsError> {
        let path = model_path().ok_or_else(|| {
            EffectsError::Model(format!(
                "{MODEL_FILE} not found (set CONVO_SEGMENTATION_MODEL to its path)"
            ))
        })?;
        Segmenter::open(&path)
    }

    /// The mask's width and height (the model's).
    pub fn mask_size(&self) -> (usize, usize) {
        let (h, w, _) = self.net.input_shape();
        (w, h)
    }

    /// The model's own time per kind of operator on the last input (for the benchmark).
    pub fn profile(&mut self) -> Vec<(&'static str, f64)> {
        self.net.profile()
    }

    /// How much of each new mask is taken, 0..=1 (1: no smoothing over time).
    pub fn set_smoothing(&mut self, share: f32) {
        self.smoothing = share.clamp(0.01, 1.0);
    }

    /// Forgets the previous masks (the next one is taken as it is).
    pub fn reset(&mut self) {
        self.for_size = (0, 0);
    }

    /// The person's probability per pixel of the model's grid (row-major, [`Self::mask_size`]),
    /// the frame stretched to it, smoothed with the previous frames' masks.
    pub fn segment(&mut self, frame: I420<'_>) -> &[f32] {
        let (mw, mh) = self.mask_size();
        let input = self.net.input_mut();
        // Each model pixel is the mean of four samples spread over its footprint: less
        // aliasing and sensor noise than one (which makes a mask's edge shimmer).
        let quarter = |i: usize, n: usize, size: usize| -> [usize; 2] {
            [
                ((i * 4 + 1) * size / (n * 4)).min(size - 1),
                ((i * 4 + 3) * size / (n * 4)).min(size - 1),
            ]
        };
        for y in 0..mh {
            let ys = quarter(y, mh, frame.height);
            for x in 0..mw {
                let xs = quarter(x, mw, frame.width);
                let mut acc = [0.0f32; 3];
                for fy in ys {
                    for fx in xs {
                        let p = frame.rgb(fx, fy);
                        acc.iter_mut().zip(p).for_each(|(a, v)| *a += v * 0.25);
                    }
                }
                input[(y * mw + x) * 3..][..3].copy_from_slice(&acc);
            }
        }
        let fresh = self.for_size != (frame.width, frame.height);
        self.for_size = (frame.width, frame.height);
        let out = self.net.run();
        for (m, p) in self.mask.iter_mut().zip(out) {
            *m = if fresh {
                *p
            } else {
                *m + (p - *m) * self.smoothing
            };
        }
        &self.mask
    }
}

/// Where the model is looked for: `CONVO_SEGMENTATION_MODEL`; next to the executable and in
/// the package's resource directories (the .deb puts it in `/usr/lib/ConvoConnect`); the ui's
/// npm dependencies in this source tree (development builds and tests).
pub fn model_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CONVO_SEGMENTATION_MODEL") {
        return Some(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join(MODEL_FILE));
        candidates.push(dir.join("../lib/ConvoConnect").join(MODEL_FILE));
        candidates.push(dir.join("../lib/convo-desktop").join(MODEL_FILE));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../ui/node_modules/@mediapipe/selfie_segmentation")
            .join(MODEL_FILE),
    );
    candidates.into_iter().find(|p| p.is_file())
}
