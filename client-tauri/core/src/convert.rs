//! Pixel formats that capture devices deliver, converted to the I420 the encoder takes
//! (BT.601 limited range, the same matrix the desktop app uses back to RGBA).
//!
//! Odd widths and heights are cropped by one pixel (I420 needs even sizes), and pictures wider
//! than [`MAX_WIDTH`] are halved (a 4K screen at full size costs more to encode than it shows).

use crate::media::VideoFrame;

/// Wider than this, a picture is halved before encoding.
pub const MAX_WIDTH: usize = 1920;

/// How a packed 4-byte pixel is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packed {
    /// Blue, green, red, unused: X11 ZPixmap at depth 24/32 on little-endian servers.
    Bgrx,
    Rgbx,
}

fn y_of(r: i32, g: i32, b: i32) -> u8 {
    (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16).clamp(0, 255) as u8
}

fn uv_of(r: i32, g: i32, b: i32) -> (u8, u8) {
    let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    (u.clamp(0, 255) as u8, v.clamp(0, 255) as u8)
}

/// Any picture as a function from (x, y) to RGB, to I420 at `width` × `height` (even), each
/// output pixel the average of a `scale` × `scale` block.
fn to_i420(
    width: usize,
    height: usize,
    scale: usize,
    rgb: impl Fn(usize, usize) -> (i32, i32, i32),
) -> VideoFrame {
    let (cw, ch) = (width / 2, height / 2);
    let mut out = vec![0u8; width * height + 2 * cw * ch];
    let (y_plane, uv) = out.split_at_mut(width * height);
    let (u_plane, v_plane) = uv.split_at_mut(cw * ch);
    let pixel = |x: usize, y: usize| {
        if scale == 1 {
            return rgb(x, y);
        }
        let (mut r, mut g, mut b) = (0, 0, 0);
        for dy in 0..scale {
            for dx in 0..scale {
                let p = rgb(x * scale + dx, y * scale + dy);
                r += p.0;
                g += p.1;
                b += p.2;
            }
        }
        let n = (scale * scale) as i32;
        (r / n, g / n, b / n)
    };
    for cy in 0..ch {
        for cx in 0..cw {
            let (mut rs, mut gs, mut bs) = (0, 0, 0);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let (x, y) = (cx * 2 + dx, cy * 2 + dy);
                let (r, g, b) = pixel(x, y);
                y_plane[y * width + x] = y_of(r, g, b);
                rs += r;
                gs += g;
                bs += b;
            }
            let (u, v) = uv_of(rs / 4, gs / 4, bs / 4);
            u_plane[cy * cw + cx] = u;
            v_plane[cy * cw + cx] = v;
        }
    }
    VideoFrame {
        width,
        height,
        i420: out,
    }
}

/// The output size for a `width` × `height` source: halved while wider than [`MAX_WIDTH`],
/// then rounded down to even.
fn fit(width: usize, height: usize) -> (usize, usize, usize) {
    let mut scale = 1;
    while width / scale > MAX_WIDTH {
        scale *= 2;
    }
    ((width / scale) & !1, (height / scale) & !1, scale)
}

/// Packed 4-byte pixels (`stride` bytes per row) to I420. `None` when the buffer is too short
/// for the size it claims or the picture is smaller than 2 × 2.
pub fn packed_to_i420(
    data: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    layout: Packed,
) -> Option<VideoFrame> {
    let (w, h, scale) = fit(width, height);
    // Only the first three bytes of the last pixel are read.
    if w < 2 || h < 2 || stride < width * 4 || data.len() < stride * (height - 1) + width * 4 - 1 {
        return None;
    }
    Some(to_i420(w, h, scale, |x, y| {
        let i = y * stride + x * 4;
        let (a, g, c) = (
            i32::from(data[i]),
            i32::from(data[i + 1]),
            i32::from(data[i + 2]),
        );
        match layout {
            Packed::Bgrx => (c, g, a),
            Packed::Rgbx => (a, g, c),
        }
    }))
}

/// Packed RGB (3 bytes a pixel, rows tightly packed) to I420.
pub fn rgb_to_i420(data: &[u8], width: usize, height: usize) -> Option<VideoFrame> {
    let (w, h, scale) = fit(width, height);
    if w < 2 || h < 2 || data.len() < width * height * 3 {
        return None;
    }
    Some(to_i420(w, h, scale, |x, y| {
        let i = (y * width + x) * 3;
        (
            i32::from(data[i]),
            i32::from(data[i + 1]),
            i32::from(data[i + 2]),
        )
    }))
}

/// YUYV 4:2:2 (what most webcams send uncompressed) to I420: luma as is, chroma of the even
/// rows.
pub fn yuyv_to_i420(data: &[u8], width: usize, height: usize) -> Option<VideoFrame> {
    let (w, h) = (width & !1, height & !1);
    if w < 2 || h < 2 || data.len() < width * height * 2 {
        return None;
    }
    let stride = width * 2;
    let (cw, ch) = (w / 2, h / 2);
    let mut out = vec![0u8; w * h + 2 * cw * ch];
    let (y_plane, uv) = out.split_at_mut(w * h);
    let (u_plane, v_plane) = uv.split_at_mut(cw * ch);
    for y in 0..h {
        let row = &data[y * stride..];
        for x in 0..w {
            y_plane[y * w + x] = row[x * 2];
        }
        if y % 2 == 0 {
            for cx in 0..cw {
                u_plane[(y / 2) * cw + cx] = row[cx * 4 + 1];
                v_plane[(y / 2) * cw + cx] = row[cx * 4 + 3];
            }
        }
    }
    Some(VideoFrame {
        width: w,
        height: h,
        i420: out,
    })
}

/// NV12 (luma plane, then interleaved U/V at half resolution) to I420.
pub fn nv12_to_i420(data: &[u8], width: usize, height: usize) -> Option<VideoFrame> {
    let (w, h) = (width & !1, height & !1);
    if w < 2 || h < 2 || data.len() < width * height + width * height.div_ceil(2) {
        return None;
    }
    let (cw, ch) = (w / 2, h / 2);
    let mut out = vec![0u8; w * h + 2 * cw * ch];
    let (y_plane, uv) = out.split_at_mut(w * h);
    let (u_plane, v_plane) = uv.split_at_mut(cw * ch);
    for y in 0..h {
        y_plane[y * w..(y + 1) * w].copy_from_slice(&data[y * width..y * width + w]);
    }
    let chroma = &data[width * height..];
    for cy in 0..ch {
        for cx in 0..cw {
            let i = cy * width + cx * 2;
            u_plane[cy * cw + cx] = chroma[i];
            v_plane[cy * cw + cx] = chroma[i + 1];
        }
    }
    Some(VideoFrame {
        width: w,
        height: h,
        i420: out,
    })
}

/// Half the width and height (rounded down to even), each output pixel the mean of a 2 × 2
/// block: the next simulcast layer down. `None` below 2 × 2.
pub fn halve_i420(f: &VideoFrame) -> Option<VideoFrame> {
    let (w, h) = (f.width, f.height);
    let (w2, h2) = ((w / 2) & !1, (h / 2) & !1);
    if w2 < 2 || h2 < 2 || f.i420.len() < w * h + 2 * (w / 2) * (h / 2) {
        return None;
    }
    let (cw, ch, cw2, ch2) = (w / 2, h / 2, w2 / 2, h2 / 2);
    let mut out = vec![0u8; w2 * h2 + 2 * cw2 * ch2];
    let (y_in, uv_in) = f.i420.split_at(w * h);
    let (u_in, v_in) = uv_in.split_at(cw * ch);
    let (y_out, uv_out) = out.split_at_mut(w2 * h2);
    let (u_out, v_out) = uv_out.split_at_mut(cw2 * ch2);
    for (src, stride, dst, ow) in [
        (y_in, w, y_out, w2),
        (u_in, cw, u_out, cw2),
        (&v_in[..cw * ch], cw, v_out, cw2),
    ] {
        for (row, out_row) in dst.chunks_exact_mut(ow).enumerate() {
            let a = &src[2 * row * stride..2 * row * stride + 2 * ow];
            let b = &src[(2 * row + 1) * stride..(2 * row + 1) * stride + 2 * ow];
            for ((o, a), b) in out_row
                .iter_mut()
                .zip(a.chunks_exact(2))
                .zip(b.chunks_exact(2))
            {
                let sum = u16::from(a[0]) + u16::from(a[1]) + u16::from(b[0]) + u16::from(b[1]);
                *o = ((sum + 2) / 4) as u8;
            }
        }
    }
    Some(VideoFrame {
        width: w2,
        height: h2,
        i420: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planes(f: &VideoFrame) -> (&[u8], &[u8], &[u8]) {
        let (y, uv) = f.i420.split_at(f.width * f.height);
        let (u, v) = uv.split_at(f.width * f.height / 4);
        (y, u, v)
    }

    #[test]
    fn red_in_bgrx_and_rgb_is_bt601_red() {
        // 5 × 3: cropped to 4 × 2.
        let bgrx: Vec<u8> = (0..15).flat_map(|_| [0, 0, 255, 0]).collect();
        let f = packed_to_i420(&bgrx, 5, 3, 20, Packed::Bgrx).expect("converts");
        assert_eq!((f.width, f.height), (4, 2));
        let (y, u, v) = planes(&f);
        assert!(y.iter().all(|&p| p == 82), "{y:?}");
        assert!(u.iter().all(|&p| p == 90) && v.iter().all(|&p| p == 240));

        let rgb: Vec<u8> = (0..16).flat_map(|_| [255, 0, 0]).collect();
        let g = rgb_to_i420(&rgb, 4, 4).expect("converts");
        assert_eq!(planes(&g).0[0], 82);
        assert_eq!((planes(&g).1[0], planes(&g).2[0]), (90, 240));
    }

    #[test]
    fn wide_pictures_are_halved_and_averaged() {
        // 3840 × 4: columns alternate black and white, which average to mid grey.
        let (w, h) = (3840, 4);
        let data: Vec<u8> = (0..w * h)
            .flat_map(|i| if i % 2 == 0 { [0; 4] } else { [255; 4] })
            .collect();
        let f = packed_to_i420(&data, w, h, w * 4, Packed::Rgbx).expect("converts");
        assert_eq!((f.width, f.height), (1920, 2));
        let y = planes(&f).0;
        // Grey 127 → Y 125 (limited range).
        assert!(y.iter().all(|&p| (124..=126).contains(&p)), "{:?}", &y[..8]);
    }

    #[test]
    fn yuyv_and_nv12_keep_their_samples() {
        // 2 × 2 YUYV: Y0 U Y1 V per pair.
        let yuyv = [10, 100, 20, 200, 30, 101, 40, 201];
        let f = yuyv_to_i420(&yuyv, 2, 2).expect("converts");
        assert_eq!(f.i420, vec![10, 20, 30, 40, 100, 200]);
        let nv12 = [1, 2, 3, 4, 50, 60];
        let g = nv12_to_i420(&nv12, 2, 2).expect("converts");
        assert_eq!(g.i420, vec![1, 2, 3, 4, 50, 60]);
    }

    #[test]
    fn short_buffers_are_refused_not_read_past() {
        // 2 × 2 at 8 bytes a row needs 15 bytes (the last pixel's fourth is not read).
        assert!(packed_to_i420(&[0; 14], 2, 2, 8, Packed::Bgrx).is_none());
        assert!(packed_to_i420(&[0; 15], 2, 2, 8, Packed::Bgrx).is_some());
        assert!(rgb_to_i420(&[0; 11], 2, 2).is_none());
        assert!(yuyv_to_i420(&[0; 7], 2, 2).is_none());
        assert!(nv12_to_i420(&[0; 5], 2, 2).is_none());
        assert!(packed_to_i420(&[0; 4], 1, 1, 4, Packed::Bgrx).is_none());
    }

    #[test]
    fn halving_averages_blocks_and_keeps_sizes_even() {
        let f = crate::synth::frame(
            crate::synth::FrameCode {
                counter: 3,
                capture_ms: 99,
            },
            crate::synth::Pattern::Camera,
            crate::synth::VideoSize::new(1280, 720),
        );
        let f = VideoFrame {
            width: 1280,
            height: 720,
            i420: f,
        };
        let h = halve_i420(&f).expect("halved");
        assert_eq!(
            (h.width, h.height, h.i420.len()),
            (640, 360, 640 * 360 * 3 / 2)
        );
        let q = halve_i420(&h).expect("quartered");
        assert_eq!((q.width, q.height), (320, 180));
        // The synthetic code survives both halvings.
        assert_eq!(
            crate::synth::read_code(&q.i420, 320, 320, 180).map(|c| c.counter),
            Some(3)
        );
        // Odd halves round down to even.
        let odd = VideoFrame {
            width: 6,
            height: 6,
            i420: vec![100; 6 * 6 + 2 * 9],
        };
        let h = halve_i420(&odd).expect("halved");
        assert_eq!((h.width, h.height), (2, 2));
        assert!(h.i420.iter().all(|&p| p == 100));
        assert!(
            halve_i420(&VideoFrame {
                width: 2,
                height: 2,
                i420: vec![0; 6]
            })
            .is_none()
        );
    }
}
