//! Putting the person over a new background: blur (two strengths), a picture (built in or
//! the user's own), and a touch-up, on I420 frames in place.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::EffectsError;
use crate::segment::{I420, Segmenter};

/// What is behind the person.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Background {
    /// The camera's own.
    #[default]
    None,
    /// Blurred: `strong` hides a room, the light one softens it.
    Blur { strong: bool },
    /// One of [`BUILT_IN`] by its id.
    Builtin { id: String },
    /// A PNG or JPEG of the user's.
    File { path: PathBuf },
}

/// The built-in pictures (drawn at the frame's size, so they are sharp at any resolution).
pub const BUILT_IN: [(&str, &str); 3] =
    [("dusk", "Dusk"), ("studio", "Studio"), ("aurora", "Aurora")];

/// What the camera's frames get, as the settings keep it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Effects {
    pub background: Background,
    /// Brighter, slightly smoothed skin ("touch up my appearance").
    pub touch_up: bool,
}

impl Effects {
    pub const NONE: Effects = Effects {
        background: Background::None,
        touch_up: false,
    };

    /// Whether anything is to be done (nothing is segmented otherwise).
    pub fn is_none(&self) -> bool {
        self.background == Background::None && !self.touch_up
    }
}

/// Segmentation slower than this per frame, on average over [`SLOW_WINDOW`] frames, switches
/// the background off: the camera would drop frames for everyone.
pub const SLOW_MS: f64 = 40.0;
pub const SLOW_WINDOW: u32 = 30;

/// How often a second the person is looked for, at most.
pub const SEGMENT_HZ: u32 = 15;

/// The effects on a stream of frames: the model (loaded the first time one is needed), the
/// prepared background, the time each frame took.
#[derive(Debug, Default)]
pub struct Processor {
    effects: Effects,
    segmenter: Option<Segmenter>,
    picture: Option<Picture>,
    /// Scratch: the per-pixel alpha and the shrunk plane the blur works on.
    alpha: Vec<u8>,
    small: Vec<f32>,
    /// Milliseconds of the last frames (sum, count), for [`SLOW_MS`].
    cost: (f64, u32),
    last_ms: f64,
    /// Segment every this many frames (see [`Processor::set_camera_fps`]); 0 or 1: every one.
    segment_every: u32,
    frame_no: u32,
    /// The average milliseconds a frame may take ([`SLOW_MS`] unless changed).
    limit_ms: Option<f64>,
}

#[derive(Debug)]
struct Picture {
    source: Background,
    size: (usize, usize),
    i420: Vec<u8>,
}

impl Processor {
    /// A processor with a model already loaded (tests, benchmarks); [`Processor::default`]
    /// loads the installed one when an effect first needs it.
    pub fn with_segmenter(segmenter: Segmenter) -> Processor {
        Processor {
            segmenter: Some(segmenter),
            ..Processor::default()
        }
    }

    /// Never switches the effects off for being slow (what a benchmark wants).
    pub fn without_time_limit(self) -> Processor {
        self.with_time_limit(f64::INFINITY)
    }

    /// Switches the effects off when frames take longer than `ms` on average.
    pub fn with_time_limit(mut self, ms: f64) -> Processor {
        self.limit_ms = Some(ms);
        self
    }

    /// The camera's frame rate: the person is found at most [`SEGMENT_HZ`] times a second.
    pub fn set_camera_fps(&mut self, fps: u32) {
        self.segment_every = (fps / SEGMENT_HZ).max(1);
    }

    pub fn effects(&self) -> &Effects {
        &self.effects
    }

    /// Changes the effects; a picture that cannot be read or a model that cannot be loaded
    /// leaves the background as the camera's and says why.
    pub fn set(&mut self, effects: Effects) -> Result<(), EffectsError> {
        self.cost = (0.0, 0);
        if effects.is_none() {
            self.effects = effects;
            return Ok(());
        }
        if self.segmenter.is_none() {
            match Segmenter::installed() {
                Ok(s) => self.segmenter = Some(s),
                Err(e) => {
                    self.effects = Effects::NONE;
                    return Err(e);
                }
            }
        }
        if let Background::File { path } = &effects.background {
            // Read now, so that a bad file is refused when chosen, not at the next frame.
            if let Err(e) = image::open(path) {
                self.effects = Effects {
                    background: Background::None,
                    ..effects
                };
                return Err(EffectsError::Picture(format!("{}: {e}", path.display())));
            }
        }
        if let Some(s) = self.segmenter.as_mut() {
            s.reset();
        }
        self.picture = None;
        self.effects = effects;
        Ok(())
    }

    /// The time the last frame took, in milliseconds.
    pub fn last_ms(&self) -> f64 {
        self.last_ms
    }

    /// Applies the effects to one frame in place. `Err(TooSlow)` once when the effects have
    /// been switched off because this machine cannot keep up (the frame is left as it was).
    pub fn process(
        &mut self,
        width: usize,
        height: usize,
        i420: &mut [u8],
    ) -> Result<(), EffectsError> {
        if self.effects.is_none() {
            return Ok(());
        }
        let frame = I420 {
            width,
            height,
            data: i420,
        };
        if !frame.is_valid() {
            return Ok(());
        }
        let Some(segmenter) = self.segmenter.as_mut() else {
            return Ok(());
        };
        let started = Instant::now();
        // The person is found at most 15 times a second (every other frame at 30 fps): a
        // person moves little in 66 ms, and the mask is smoothed over frames anyway.
        let fresh_size = self.alpha.len() != width * height;
        if fresh_size || self.frame_no.is_multiple_of(self.segment_every.max(1)) {
            let (mw, mh) = segmenter.mask_size();
            let mask = segmenter.segment(frame);
            upsample_alpha(mask, mw, mh, width, height, &mut self.alpha);
        }
        self.frame_no = self.frame_no.wrapping_add(1);
        match &self.effects.background {
            Background::None => {}
            Background::Blur { strong } => {
                let radius = if *strong { 6 } else { 2 };
                blur_behind(i420, &self.alpha, width, height, radius, &mut self.small);
            }
            source @ (Background::Builtin { .. } | Background::File { .. }) => {
                // The picture is drawn (or read) again only when it or the frame size changes.
                let stale = self
                    .picture
                    .as_ref()
                    .is_none_or(|p| p.source != *source || p.size != (width, height));
                if stale {
                    let i420 = match source {
                        Background::Builtin { id } => builtin(id, width, height),
                        Background::File { path } => load_picture(path, width, height)?,
                        _ => Vec::new(),
                    };
                    self.picture = Some(Picture {
                        source: source.clone(),
                        size: (width, height),
                        i420,
                    });
                }
                if let Some(p) = &self.picture {
                    blend(i420, &p.i420, &self.alpha, width, height);
                }
            }
        }
        if self.effects.touch_up {
            touch_up(i420, &self.alpha, width, height);
        }
        self.last_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.cost.0 += self.last_ms;
        self.cost.1 += 1;
        if self.cost.1 >= SLOW_WINDOW {
            let average = self.cost.0 / f64::from(self.cost.1);
            self.cost = (0.0, 0);
            if average > self.limit_ms.unwrap_or(SLOW_MS) {
                self.effects = Effects::NONE;
                return Err(EffectsError::TooSlow { ms: average });
            }
        }
        Ok(())
    }
}

/// The mask (model grid) as 0..255 — its probabilities sharpened around one half so the
/// edge is a few pixels wide, not a haze — stretched bilinearly to the frame's luma grid.
fn upsample_alpha(mask: &[f32], mw: usize, mh: usize, w: usize, h: usize, out: &mut Vec<u8>) {
    out.resize(w * h, 0);
    let grid: Vec<u32> = mask
        .iter()
        .map(|p| {
            // Smoothstep from 0.25 to 0.75, in 0..=255.
            let t = ((p - 0.25) * 2.0).clamp(0.0, 1.0);
            (t * t * (3.0 - 2.0 * t) * 255.0 + 0.5) as u32
        })
        .collect();
    // Positions and weights in 1/256ths.
    let taps = |n: usize, m: usize| -> Vec<(usize, usize, u32)> {
        (0..n)
            .map(|i| {
                let v = ((i as f32 + 0.5) * m as f32 / n as f32 - 0.5).max(0.0);
                let i0 = (v as usize).min(m - 1);
                (i0, (i0 + 1).min(m - 1), ((v - i0 as f32) * 256.0) as u32)
            })
            .collect()
    };
    let (cols, rows) = (taps(w, mw), taps(h, mh));
    let mut line = vec![0u32; mw];
    for (y, &(y0, y1, fy)) in rows.iter().enumerate() {
        let (r0, r1) = (&grid[y0 * mw..][..mw], &grid[y1 * mw..][..mw]);
        for ((l, a), b) in line.iter_mut().zip(r0).zip(r1) {
            *l = a * (256 - fy) + b * fy;
        }
        for (o, &(x0, x1, fx)) in out[y * w..][..w].iter_mut().zip(&cols) {
            *o = ((line[x0] * (256 - fx) + line[x1] * fx + (1 << 15)) >> 16) as u8;
        }
    }
}

/// `frame = alpha·frame + (1 − alpha)·back`, per plane (chroma with alpha's 2×2 average).
fn blend(frame: &mut [u8], back: &[u8], alpha: &[u8], w: usize, h: usize) {
    let mix =
        |f: u8, b: u8, a: u32| ((u32::from(f) * a + u32::from(b) * (255 - a) + 127) / 255) as u8;
    for ((f, b), a) in frame[..w * h].iter_mut().zip(&back[..w * h]).zip(alpha) {
        *f = mix(*f, *b, u32::from(*a));
    }
    let (cw, ch) = (w / 2, h / 2);
    for plane in 0..2 {
        let start = w * h + plane * cw * ch;
        for cy in 0..ch {
            for cx in 0..cw {
                let i = start + cy * cw + cx;
                let a = (u32::from(alpha[2 * cy * w + 2 * cx])
                    + u32::from(alpha[2 * cy * w + 2 * cx + 1])
                    + u32::from(alpha[(2 * cy + 1) * w + 2 * cx])
                    + u32::from(alpha[(2 * cy + 1) * w + 2 * cx + 1])
                    + 2)
                    / 4;
                frame[i] = mix(frame[i], back[i], a);
            }
        }
    }
}

/// Blurs the frame where it is not the person: each plane shrunk 4×, box-blurred three
/// times with `radius` (of the small grid; about a Gaussian), stretched back and mixed in by
/// `1 − alpha` — only where alpha is not the person's whole.
fn blur_behind(
    frame: &mut [u8],
    alpha: &[u8],
    w: usize,
    h: usize,
    radius: usize,
    small: &mut Vec<f32>,
) {
    let (cw, ch) = (w / 2, h / 2);
    let planes = [
        (0, w, h, radius, 1),
        (w * h, cw, ch, radius.div_ceil(2), 2),
        (w * h + cw * ch, cw, ch, radius.div_ceil(2), 2),
    ];
    for (start, pw, ph, r, sub) in planes {
        let plane = &mut frame[start..start + pw * ph];
        let (sw, sh) = (pw.div_ceil(4), ph.div_ceil(4));
        small.clear();
        small.resize(sw * sh, 0.0);
        // Shrink: sums of 4×4 blocks (the last row and column of blocks may be partial).
        let mut counts = vec![0u32; sw * sh];
        for (y, row) in plane.chunks_exact(pw).enumerate() {
            let srow = &mut small[(y / 4) * sw..][..sw];
            let crow = &mut counts[(y / 4) * sw..][..sw];
            for (x, v) in row.iter().enumerate() {
                srow[x / 4] += f32::from(*v);
                crow[x / 4] += 1;
            }
        }
        for (v, n) in small.iter_mut().zip(&counts) {
            *v /= (*n).max(1) as f32;
        }
        for _ in 0..3 {
            box_blur(small, sw, sh, r);
        }
        // Stretch back, a row at a time, mixing where the background shows.
        let taps = |n: usize, m: usize| -> Vec<(usize, usize, f32)> {
            (0..n)
                .map(|i| {
                    let v = ((i as f32 + 0.5) / 4.0 - 0.5).max(0.0);
                    let i0 = (v as usize).min(m - 1);
                    (i0, (i0 + 1).min(m - 1), v - i0 as f32)
                })
                .collect()
        };
        let (cols, rows) = (taps(pw, sw), taps(ph, sh));
        let mut line = vec![0.0f32; sw];
        for (y, &(y0, y1, fy)) in rows.iter().enumerate() {
            for ((l, a), b) in line
                .iter_mut()
                .zip(&small[y0 * sw..][..sw])
                .zip(&small[y1 * sw..][..sw])
            {
                *l = a + (b - a) * fy;
            }
            let arow = &alpha[(y * sub) * w..][..w];
            for (x, (px, &(x0, x1, fx))) in plane[y * pw..][..pw].iter_mut().zip(&cols).enumerate()
            {
                let a = u32::from(arow[x * sub]);
                if a == 255 {
                    continue;
                }
                let back = (line[x0] + (line[x1] - line[x0]) * fx + 0.5) as u32;
                *px = ((u32::from(*px) * a + back.min(255) * (255 - a) + 127) / 255) as u8;
            }
        }
    }
}

/// A box blur of `radius` in place, rows then columns, edges clamped (running sums).
fn box_blur(p: &mut [f32], w: usize, h: usize, radius: usize) {
    fn line(src: &[f32], dst: &mut [f32], radius: usize) {
        let n = src.len();
        let at = |i: isize| src[i.clamp(0, n as isize - 1) as usize];
        let r = radius as isize;
        let norm = 1.0 / (2 * radius + 1) as f32;
        let mut sum: f32 = (-r..=r).map(at).sum();
        for (i, d) in dst.iter_mut().enumerate() {
            *d = sum * norm;
            let i = i as isize;
            sum += at(i + r + 1) - at(i - r);
        }
    }
    let mut src = vec![0.0; w.max(h)];
    let mut dst = vec![0.0; w.max(h)];
    for row in p.chunks_exact_mut(w) {
        src[..w].copy_from_slice(row);
        line(&src[..w], &mut dst[..w], radius);
        row.copy_from_slice(&dst[..w]);
    }
    for x in 0..w {
        for (y, v) in src[..h].iter_mut().enumerate() {
            *v = p[y * w + x];
        }
        line(&src[..h], &mut dst[..h], radius);
        for (y, v) in dst[..h].iter().enumerate() {
            p[y * w + x] = *v;
        }
    }
}

/// Brighter (a gentle lift of the darker tones) and smoother (blended with a light blur)
/// where the person is; the background is left alone.
fn touch_up(frame: &mut [u8], alpha: &[u8], w: usize, h: usize) {
    let lift: Vec<u8> = (0..=255u32)
        .map(|v| {
            let x = v as f32 / 255.0;
            (x.powf(0.85) * 255.0 + 0.5).min(255.0) as u8
        })
        .collect();
    let luma: Vec<u8> = frame[..w * h].to_vec();
    for y in 0..h {
        for x in 0..w {
            let a = u32::from(alpha[y * w + x]);
            if a == 0 {
                continue;
            }
            // A 3×3 mean for the smoothing, half of it blended in.
            let (y0, y1) = (y.saturating_sub(1), (y + 1).min(h - 1));
            let (x0, x1) = (x.saturating_sub(1), (x + 1).min(w - 1));
            let (mut sum, mut n) = (0u32, 0u32);
            for yy in y0..=y1 {
                for xx in x0..=x1 {
                    sum += u32::from(luma[yy * w + xx]);
                    n += 1;
                }
            }
            let own = u32::from(luma[y * w + x]);
            let smooth = (own + sum / n) / 2;
            let touched = u32::from(lift[smooth as usize]);
            frame[y * w + x] = ((touched * a + own * (255 - a) + 127) / 255) as u8;
        }
    }
}

/// RGB (0..255) to BT.601 video-range Y, U, V.
pub fn rgb_to_yuv(r: f32, g: f32, b: f32) -> (u8, u8, u8) {
    let y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
    let u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
    let v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
    let q = |x: f32| (x + 0.5).clamp(0.0, 255.0) as u8;
    (q(y), q(u), q(v))
}

/// An RGB picture (`rgb(x, y)`, 0..255) as I420.
pub fn i420_from(w: usize, h: usize, rgb: impl Fn(usize, usize) -> [f32; 3]) -> Vec<u8> {
    let (cw, ch) = (w / 2, h / 2);
    let mut out = vec![0u8; w * h + 2 * cw * ch];
    for y in 0..h {
        for x in 0..w {
            let [r, g, b] = rgb(x, y);
            out[y * w + x] = rgb_to_yuv(r, g, b).0;
        }
    }
    for cy in 0..ch {
        for cx in 0..cw {
            let mut acc = [0.0f32; 3];
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let p = rgb(2 * cx + dx, 2 * cy + dy);
                acc.iter_mut().zip(p).for_each(|(a, v)| *a += v / 4.0);
            }
            let (_, u, v) = rgb_to_yuv(acc[0], acc[1], acc[2]);
            out[w * h + cy * cw + cx] = u;
            out[w * h + cw * ch + cy * cw + cx] = v;
        }
    }
    out
}

/// A built-in background at the frame's size (an unknown id draws the first).
pub fn builtin(id: &str, w: usize, h: usize) -> Vec<u8> {
    let lerp = |a: [f32; 3], b: [f32; 3], t: f32| -> [f32; 3] {
        [
            a[0] + (b[0] - a[0]) * t,
            a[1] + (b[1] - a[1]) * t,
            a[2] + (b[2] - a[2]) * t,
        ]
    };
    let (wf, hf) = (w as f32, h as f32);
    match id {
        "studio" => i420_from(w, h, |x, y| {
            let dx = (x as f32 - wf / 2.0) / wf;
            let dy = (y as f32 - hf * 0.4) / hf;
            let d = (dx * dx + dy * dy).sqrt().min(1.0);
            lerp(
                [196.0, 200.0, 204.0],
                [70.0, 74.0, 82.0],
                d * 1.4_f32.min(1.0 / d.max(1e-3)),
            )
        }),
        "aurora" => i420_from(w, h, |x, y| {
            let u = x as f32 / wf;
            let v = y as f32 / hf;
            let band = (-(v - 0.35 - 0.12 * (u * 7.0).sin()).powi(2) * 40.0).exp();
            lerp(
                lerp([12.0, 20.0, 48.0], [20.0, 40.0, 70.0], v),
                [90.0, 220.0, 150.0],
                band * 0.8,
            )
        }),
        _ => i420_from(w, h, |_, y| {
            let v = y as f32 / hf;
            if v < 0.6 {
                lerp([40.0, 50.0, 110.0], [230.0, 140.0, 90.0], v / 0.6)
            } else {
                lerp([230.0, 140.0, 90.0], [60.0, 40.0, 50.0], (v - 0.6) / 0.4)
            }
        }),
    }
}

/// The user's picture, cropped to the frame's aspect ratio (centred) and scaled to it.
pub fn load_picture(path: &std::path::Path, w: usize, h: usize) -> Result<Vec<u8>, EffectsError> {
    let img = image::open(path)
        .map_err(|e| EffectsError::Picture(format!("{}: {e}", path.display())))?
        .to_rgb8();
    Ok(fit_picture(&img, w, h))
}

/// An RGB image, cropped to `w`×`h`'s aspect ratio (centred) and scaled to it, as I420.
pub fn fit_picture(img: &image::RgbImage, w: usize, h: usize) -> Vec<u8> {
    let (iw, ih) = (img.width() as f32, img.height() as f32);
    let scale = (iw / w as f32).min(ih / h as f32);
    let (ox, oy) = ((iw - w as f32 * scale) / 2.0, (ih - h as f32 * scale) / 2.0);
    let resized = image::imageops::resize(
        &image::imageops::crop_imm(
            img,
            ox as u32,
            oy as u32,
            (w as f32 * scale) as u32,
            (h as f32 * scale) as u32,
        )
        .to_image(),
        w as u32,
        h as u32,
        image::imageops::FilterType::Triangle,
    );
    i420_from(w, h, |x, y| {
        let p = resized.get_pixel(x as u32, y as u32).0;
        [f32::from(p[0]), f32::from(p[1]), f32::from(p[2])]
    })
}

/// Whether `bytes` are a PNG or JPEG picture that decodes; its file extension if so.
pub fn check_picture(bytes: &[u8]) -> Result<&'static str, EffectsError> {
    let format = image::guess_format(bytes)
        .ok()
        .filter(|f| matches!(f, image::ImageFormat::Png | image::ImageFormat::Jpeg))
        .ok_or_else(|| EffectsError::Picture("not a PNG or JPEG picture".into()))?;
    image::load_from_memory_with_format(bytes, format)
        .map_err(|e| EffectsError::Picture(e.to_string()))?;
    Ok(if format == image::ImageFormat::Png {
        "png"
    } else {
        "jpg"
    })
}
