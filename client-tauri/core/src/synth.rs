//! Synthetic media whose content can be checked at the far end.
//!
//! Video frames (I420) carry a moving pattern people can see, and three strips of 32 blocks
//! each, black or white: the frame counter, the capture time (unix milliseconds, low 32 bits),
//! and the counter XOR [`CHECK_MAGIC`]. A receiver that decodes a frame reads the strips back:
//! the check strip proves the read is right, the counter proves order, the time gives
//! capture-to-decode latency.
//!
//! Audio is a sine tone of a known pitch with a marker at every wall-clock second: its first
//! [`MARKER_MS`] ms are a [`MARKER_HZ`] tone instead. A receiver finds each marker's onset
//! ([`MarkerDetector`]): the markers prove the audio arrives in order at its real pace, and the
//! time from the second's start to the onset's decoding is capture-to-decode latency (sender
//! and receiver share a clock here; across machines it needs NTP-synchronised clocks, as the
//! video's capture times do).
//!
//! The pure functions paint and read; [`SyntheticMic`] and [`SyntheticVideo`] are the sources
//! (they pace themselves in real time, as devices do).

/// Width and height of synthetic video unless asked otherwise.
pub const WIDTH: usize = 320;
pub const HEIGHT: usize = 240;
const BLOCKS: usize = 32;
pub const CHECK_MAGIC: u32 = 0xA5C3_5A3C;

/// What a synthetic frame says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCode {
    pub counter: u32,
    pub capture_ms: u32,
}

/// Which picture: the camera-like pattern or the screen-like one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Camera,
    Screen,
}

/// The size of a synthetic picture: even, from 128 × 72 to 3840 × 2160.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoSize {
    pub width: usize,
    pub height: usize,
}

impl Default for VideoSize {
    fn default() -> Self {
        VideoSize {
            width: WIDTH,
            height: HEIGHT,
        }
    }
}

impl VideoSize {
    pub const fn new(width: usize, height: usize) -> Self {
        VideoSize { width, height }
    }

    /// `1280x720`; an error says what is wrong.
    pub fn parse(s: &str) -> Result<VideoSize, String> {
        let (w, h) = s
            .trim()
            .split_once(['x', 'X'])
            .ok_or_else(|| format!("not a size: {s:?} (like 1280x720)"))?;
        let (w, h): (usize, usize) = (
            w.trim()
                .parse()
                .map_err(|_| format!("not a width: {w:?}"))?,
            h.trim()
                .parse()
                .map_err(|_| format!("not a height: {h:?}"))?,
        );
        if !(128..=3840).contains(&w) || !(72..=2160).contains(&h) || w % 2 != 0 || h % 2 != 0 {
            return Err(format!("{w}x{h}: sizes are even, 128x72 to 3840x2160"));
        }
        Ok(VideoSize::new(w, h))
    }

    /// `1280x720@30` (the frame rate optional): size and frame rate.
    pub fn parse_with_fps(s: &str) -> Result<(VideoSize, Option<u32>), String> {
        match s.split_once('@') {
            None => Ok((VideoSize::parse(s)?, None)),
            Some((size, fps)) => {
                let fps: u32 = fps
                    .trim()
                    .parse()
                    .ok()
                    .filter(|f| (1..=60).contains(f))
                    .ok_or_else(|| format!("not a frame rate (1 to 60): {fps:?}"))?;
                Ok((VideoSize::parse(size)?, Some(fps)))
            }
        }
    }

    /// Height of each code strip: a fifteenth of 240 rows, scaled with the picture (so the
    /// code survives the picture being scaled down to a simulcast layer).
    fn strip_h(height: usize) -> usize {
        (height * 16 / 240).max(8)
    }
}

/// A 32-bit hash step (murmur's finaliser).
fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Paints one I420 frame of `size` (Y plane, then U, then V).
pub fn frame(code: FrameCode, pattern: Pattern, size: VideoSize) -> Vec<u8> {
    let VideoSize { width, height } = size;
    let y_len = width * height;
    let c_len = y_len / 4;
    let mut buf = vec![0u8; y_len + 2 * c_len];
    let shift = code.counter as usize * 4;
    let (y, uv) = buf.split_at_mut(y_len);
    // Each row is a window on one periodic line: copies, not a computation per pixel (a
    // 1280 × 720 frame at 30 fps stays cheap in an unoptimised build).
    match pattern {
        // A mosaic of tiles (an 80th of the width across, so it scales with the picture as a
        // scene does) whose shades change every third frame, a third of them each frame,
        // over diagonal bands sliding right: it moves everywhere, as a camera picture does,
        // and an encoder needs a camera's bit rate for it (a clean pattern costs a trickle,
        // and no bandwidth limit would ever bind).
        Pattern::Camera => {
            let line: Vec<u8> = (0..width + 128).map(|i| ((i % 128) + 64) as u8).collect();
            // Coarse tiles (a 24th of the width) and fine grain (a 320th: averaged away in the
            // lower simulcast layers, as a scene's fine detail is).
            let (coarse, fine) = ((width / 24).max(2), (width / 320).max(1));
            let mut tiles = vec![0u8; width];
            for (row, out) in y.chunks_exact_mut(width).enumerate() {
                if row % fine == 0 {
                    let (band, fband) = ((row / coarse) as u32, (row / fine) as u32);
                    for (col, px) in tiles.iter_mut().enumerate() {
                        let cell = ((col / coarse) as u32).wrapping_mul(73_856_093)
                            ^ band.wrapping_mul(19_349_663);
                        let epoch = (code.counter + cell % 3) / 3;
                        let h = mix(cell ^ epoch.wrapping_mul(83_492_791));
                        let g = mix(((col / fine) as u32).wrapping_mul(2_654_435_761)
                            ^ fband.wrapping_mul(40_503)
                            ^ code.counter.wrapping_mul(97_531));
                        *px = (56 + h % 110 + g % 34) as u8;
                    }
                }
                let off = (row + shift) % 128;
                for ((o, &b), &t) in out.iter_mut().zip(&line[off..off + width]).zip(&tiles) {
                    *o = ((u16::from(b) + u16::from(t)) / 2) as u8;
                }
            }
        }
        // Large checkerboard scrolling down, like a document.
        Pattern::Screen => {
            let line = |phase: usize| -> Vec<u8> {
                (0..width)
                    .map(|col| {
                        if ((col / 40) + phase).is_multiple_of(2) {
                            200
                        } else {
                            60
                        }
                    })
                    .collect()
            };
            let lines = [line(0), line(1)];
            for (row, out) in y.chunks_exact_mut(width).enumerate() {
                out.copy_from_slice(&lines[((row + shift) / 40) % 2]);
            }
        }
    }
    let (u, v) = uv.split_at_mut(c_len);
    u.fill(match pattern {
        Pattern::Camera => 90,
        Pattern::Screen => 128,
    });
    v.fill(match pattern {
        Pattern::Camera => 160,
        Pattern::Screen => 128,
    });
    let strip_h = VideoSize::strip_h(height);
    let strips = [code.counter, code.capture_ms, code.counter ^ CHECK_MAGIC];
    for (s, value) in strips.iter().enumerate() {
        for bit in 0..BLOCKS {
            let on = (value >> (BLOCKS - 1 - bit)) & 1 == 1;
            let luma = if on { 235 } else { 16 };
            let (from, to) = (bit * width / BLOCKS, (bit + 1) * width / BLOCKS);
            for row in s * strip_h..(s + 1) * strip_h {
                y[row * width + from..row * width + to].fill(luma);
            }
        }
    }
    buf
}

/// Reads the code back from a decoded luma plane of any size (the picture may have been
/// scaled); `None` when the check strip disagrees (a damaged or foreign frame).
pub fn read_code(y: &[u8], stride: usize, width: usize, height: usize) -> Option<FrameCode> {
    let strip_h = VideoSize::strip_h(height);
    if width < 4 * BLOCKS || height < 72 || stride < width || y.len() < stride * (3 * strip_h) {
        return None;
    }
    // Away from the edges the codec (and scaling) blurs.
    let (margin_v, block_w) = (strip_h / 4, width / BLOCKS);
    let margin_h = (block_w / 5).max(1);
    let mut strips = [0u32; 3];
    for (s, out) in strips.iter_mut().enumerate() {
        for bit in 0..BLOCKS {
            let from = bit * width / BLOCKS;
            let to = (bit + 1) * width / BLOCKS;
            let mut sum = 0u32;
            let mut n = 0u32;
            for row in s * strip_h + margin_v..(s + 1) * strip_h - margin_v {
                for col in from + margin_h..to - margin_h {
                    sum += u32::from(y[row * stride + col]);
                    n += 1;
                }
            }
            if sum / n.max(1) > 128 {
                *out |= 1 << (BLOCKS - 1 - bit);
            }
        }
    }
    (strips[2] == strips[0] ^ CHECK_MAGIC).then_some(FrameCode {
        counter: strips[0],
        capture_ms: strips[1],
    })
}

/// Unix time in milliseconds, low 32 bits (what the frames carry).
pub fn now_ms32() -> u32 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    (ms & 0xFFFF_FFFF) as u32
}

/// Milliseconds from `captured` to `now`, across the 32-bit wrap.
pub fn elapsed_ms(captured: u32, now: u32) -> u32 {
    now.wrapping_sub(captured)
}

/// 20 ms of a sine tone at 48 kHz, continuing from sample `start`.
pub fn tone(hz: f64, start: u64, samples: usize) -> Vec<i16> {
    (0..samples)
        .map(|i| {
            let t = (start + i as u64) as f64 / 48_000.0;
            ((t * hz * std::f64::consts::TAU).sin() * 12_000.0) as i16
        })
        .collect()
}

/// The marker's pitch and length (at the start of every wall-clock second).
pub const MARKER_HZ: f64 = 1900.0;
pub const MARKER_MS: u64 = 100;

/// Unix time in milliseconds.
pub fn now_ms64() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `samples` of the tone with markers, the first sample captured at unix time `start_us`
/// (microseconds). Samples in the first [`MARKER_MS`] of a second carry [`MARKER_HZ`].
pub fn tone_with_markers(hz: f64, start_us: u64, samples: usize) -> Vec<i16> {
    (0..samples)
        .map(|i| {
            let us = start_us + i as u64 * 1_000_000 / 48_000;
            let t = us as f64 / 1_000_000.0;
            let f = if hz > 0.0 && (us / 1000) % 1000 < MARKER_MS {
                MARKER_HZ
            } else {
                hz
            };
            ((t * f * std::f64::consts::TAU).sin() * 12_000.0) as i16
        })
        .collect()
}

/// The share of a stretch of audio's energy at `hz` (Goertzel): about 1 for a pure tone of
/// that pitch, about 0 for anything else.
pub fn tone_share(samples: &[i16], hz: f64) -> f64 {
    let n = samples.len() as f64;
    let energy: f64 = samples.iter().map(|s| f64::from(*s).powi(2)).sum();
    if samples.is_empty() || energy <= 0.0 {
        return 0.0;
    }
    let coeff = 2.0 * (std::f64::consts::TAU * hz / 48_000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for x in samples {
        let s = f64::from(*x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    (2.0 * power / (n * energy)).min(1.0)
}

/// Finds marker onsets in decoded audio, 20 ms at a time.
#[derive(Debug, Default)]
pub struct MarkerDetector {
    in_marker: bool,
}

impl MarkerDetector {
    /// Feeds one frame; true when a marker begins in it.
    pub fn feed(&mut self, frame: &[i16]) -> bool {
        let share = tone_share(frame, MARKER_HZ);
        if !self.in_marker && share > 0.3 {
            self.in_marker = true;
            return true;
        }
        if self.in_marker && share < 0.05 {
            self.in_marker = false;
        }
        false
    }

    /// Whether a frame holds (part of) a marker: such frames are left out of pitch checks.
    pub fn is_marker(frame: &[i16]) -> bool {
        tone_share(frame, MARKER_HZ) > 0.05
    }
}

/// Capture-to-decode latency of a marker whose onset decoded at unix time `now_ms`: the time
/// since the second began (valid while latency stays under a second).
pub fn marker_latency_ms(now_ms: u64) -> u32 {
    (now_ms % 1000) as u32
}

/// A microphone that plays the tone with markers, in real time. Its sample clock starts at
/// the wall-clock time it was opened and runs at exactly 48 kHz (as a sound card's does), so
/// the tone is continuous whatever the scheduling jitter of the thread reading it.
#[derive(Debug)]
pub struct SyntheticMic {
    hz: f64,
    opened_us: u64,
    opened: std::time::Instant,
    frames: u64,
}

impl SyntheticMic {
    pub fn new(hz: f64) -> Self {
        let opened_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        SyntheticMic {
            hz,
            opened_us,
            opened: std::time::Instant::now(),
            frames: 0,
        }
    }
}

impl crate::media::AudioSource for SyntheticMic {
    fn read(&mut self) -> Result<Vec<i16>, crate::media::MediaError> {
        use crate::media::AUDIO_FRAME;
        const FRAME: std::time::Duration = std::time::Duration::from_millis(20);
        // Like a sound card: the frame handed over at the end of its 20 ms.
        let due = self.opened + FRAME * (self.frames as u32 + 1);
        let now = std::time::Instant::now();
        match due.checked_duration_since(now) {
            Some(wait) => std::thread::sleep(wait),
            // Far behind (the reader was starved): drop what was missed, as a device overruns.
            None if now - due > FRAME * 10 => {
                self.frames = ((now - self.opened).as_millis() / 20) as u64;
            }
            None => {}
        }
        let start_us = self.opened_us + self.frames * 20_000;
        self.frames += 1;
        Ok(tone_with_markers(self.hz, start_us, AUDIO_FRAME))
    }
}

/// A camera or screen that paints the synthetic pattern at `fps`, in real time. Frames are
/// counted from one instant per process, so a synthetic source that replaces another (a
/// switch of "camera") carries the count on instead of starting again: a receiver still
/// sees every frame's code in order.
#[derive(Debug)]
pub struct SyntheticVideo {
    pattern: Pattern,
    size: VideoSize,
    fps: u32,
    counter: u32,
    start: std::time::Instant,
}

impl SyntheticVideo {
    pub fn new(pattern: Pattern, size: VideoSize, fps: u32) -> Self {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let start = *EPOCH.get_or_init(std::time::Instant::now);
        let fps = fps.clamp(1, 60);
        SyntheticVideo {
            pattern,
            size,
            fps,
            counter: (start.elapsed().as_secs_f64() * f64::from(fps)).ceil() as u32,
            start,
        }
    }
}

impl crate::media::VideoSource for SyntheticVideo {
    fn next_frame(&mut self) -> Result<crate::media::VideoFrame, crate::media::MediaError> {
        let due = self.start
            + std::time::Duration::from_secs_f64(f64::from(self.counter) / f64::from(self.fps));
        if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
        let code = FrameCode {
            counter: self.counter,
            capture_ms: now_ms32(),
        };
        self.counter += 1;
        Ok(crate::media::VideoFrame {
            width: self.size.width,
            height: self.size.height,
            i420: frame(code, self.pattern, self.size),
        })
    }

    fn fps(&self) -> u32 {
        self.fps
    }
}

/// Measures the pitch of decoded audio from its zero crossings, with hysteresis (coding noise
/// around zero does not count) and across gaps (frames left out, such as markers, end a run;
/// no crossing is counted across the splice).
#[derive(Debug, Default)]
pub struct PitchMeter {
    /// Which side of zero the signal was last seen on, beyond the threshold: -1, 0 (unknown), 1.
    side: i8,
    crossings: u64,
    samples: u64,
}

impl PitchMeter {
    const THRESHOLD: i16 = 600;

    /// Feeds consecutive audio; returns the pitch once a second's worth has been measured.
    pub fn feed(&mut self, frame: &[i16]) -> Option<f64> {
        for &x in frame {
            let side = if x > Self::THRESHOLD {
                1
            } else if x < -Self::THRESHOLD {
                -1
            } else {
                continue;
            };
            if self.side != 0 && side != self.side {
                self.crossings += 1;
            }
            self.side = side;
        }
        self.samples += frame.len() as u64;
        (self.samples >= 48_000).then(|| {
            let hz = self.crossings as f64 / 2.0 / (self.samples as f64 / 48_000.0);
            self.crossings = 0;
            self.samples = 0;
            hz
        })
    }

    /// The audio does not continue from what was fed last.
    pub fn gap(&mut self) {
        self.side = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_round_trips_through_a_frame_of_any_size() {
        let code = FrameCode {
            counter: 0xDEAD_0042,
            capture_ms: 0x1234_5678,
        };
        for size in [
            VideoSize::default(),
            VideoSize::new(1280, 720),
            VideoSize::new(640, 360),
            VideoSize::new(320, 180),
        ] {
            for pattern in [Pattern::Camera, Pattern::Screen] {
                let f = frame(code, pattern, size);
                assert_eq!(f.len(), size.width * size.height * 3 / 2);
                assert_eq!(
                    read_code(&f, size.width, size.width, size.height),
                    Some(code),
                    "{size:?}"
                );
            }
        }
    }

    /// A 1280 × 720 frame scaled down by 4 (as the lowest simulcast layer is) still reads.
    #[test]
    fn code_survives_scaling_down() {
        let code = FrameCode {
            counter: 77,
            capture_ms: 123_456,
        };
        let big = VideoSize::new(1280, 720);
        let f = frame(code, Pattern::Camera, big);
        let (w, h) = (320, 180);
        let mut small = vec![0u8; w * h];
        for row in 0..h {
            for col in 0..w {
                let mut sum = 0u32;
                for dy in 0..4 {
                    for dx in 0..4 {
                        sum += u32::from(f[(row * 4 + dy) * big.width + col * 4 + dx]);
                    }
                }
                small[row * w + col] = (sum / 16) as u8;
            }
        }
        assert_eq!(read_code(&small, w, w, h), Some(code));
    }

    #[test]
    fn damaged_frames_are_rejected() {
        let size = VideoSize::default();
        let mut f = frame(
            FrameCode {
                counter: 7,
                capture_ms: 9,
            },
            Pattern::Camera,
            size,
        );
        // Flip one block of the counter strip.
        let block_w = WIDTH / BLOCKS;
        for row in 0..VideoSize::strip_h(HEIGHT) {
            let start = row * WIDTH + 31 * block_w;
            f[start..start + block_w].fill(16);
        }
        assert_eq!(read_code(&f, WIDTH, WIDTH, HEIGHT), None);
        assert_eq!(read_code(&f, WIDTH, 100, 100), None);
    }

    #[test]
    fn frames_move() {
        let size = VideoSize::new(640, 360);
        let code = |counter| FrameCode {
            counter,
            capture_ms: 0,
        };
        for pattern in [Pattern::Camera, Pattern::Screen] {
            let (a, b) = (
                frame(code(1), pattern, size),
                frame(code(11), pattern, size),
            );
            let below = 3 * VideoSize::strip_h(size.height) * size.width;
            let y_len = size.width * size.height;
            assert_ne!(a[below..y_len], b[below..y_len], "{pattern:?}");
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(VideoSize::parse("1280x720"), Ok(VideoSize::new(1280, 720)));
        assert_eq!(
            VideoSize::parse_with_fps("1280x720@30"),
            Ok((VideoSize::new(1280, 720), Some(30)))
        );
        assert_eq!(
            VideoSize::parse_with_fps("640X360"),
            Ok((VideoSize::new(640, 360), None))
        );
        for bad in [
            "",
            "1280",
            "1281x720",
            "x720",
            "99999x720",
            "1280x720@0",
            "1280x720@fast",
        ] {
            assert!(VideoSize::parse_with_fps(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn latency_wraps() {
        assert_eq!(elapsed_ms(u32::MAX - 5, 10), 16);
        assert_eq!(elapsed_ms(100, 150), 50);
    }

    #[test]
    fn markers_start_each_second_and_are_found() {
        // Two seconds of audio starting 500 ms into a second, in 20 ms frames.
        let start_us = 1_700_000_000_500_000u64;
        let mut det = MarkerDetector::default();
        let mut onsets = Vec::new();
        for f in 0..100u64 {
            let at = start_us + f * 20_000;
            let pcm = tone_with_markers(440.0, at, 960);
            if det.feed(&pcm) {
                onsets.push(at / 1000);
            }
            let in_marker = (at / 1000) % 1000 < MARKER_MS;
            assert_eq!(MarkerDetector::is_marker(&pcm), in_marker, "frame {f}");
        }
        assert_eq!(onsets, vec![1_700_000_001_000, 1_700_000_002_000]);
        // Without a tone there are no markers either.
        assert!(!MarkerDetector::default().feed(&tone_with_markers(0.0, 1_000_000_000, 960)));
    }

    #[test]
    fn tone_share_tells_pitches_apart() {
        let a = tone(440.0, 0, 960);
        assert!(tone_share(&a, 440.0) > 0.9);
        assert!(tone_share(&a, MARKER_HZ) < 0.01);
        assert_eq!(tone_share(&[0; 960], 440.0), 0.0);
        assert_eq!(marker_latency_ms(1_700_000_001_042), 42);
    }

    #[test]
    fn pitch_of_a_tone_across_gaps_and_noise() {
        let mut m = PitchMeter::default();
        let mut got = None;
        let mut start = 0u64;
        // 440 Hz with a little noise, in 20 ms frames, every fifth frame left out.
        for f in 0..80u64 {
            let mut frame = tone(440.0, start, 960);
            for (i, x) in frame.iter_mut().enumerate() {
                *x = x.saturating_add(if i % 2 == 0 { 300 } else { -300 });
            }
            start += 960;
            if f % 5 == 4 {
                m.gap();
                continue;
            }
            if let Some(hz) = m.feed(&frame) {
                got = Some(hz);
            }
        }
        let hz = got.expect("a second measured");
        assert!((hz - 440.0).abs() < 4.0, "{hz}");
        let mut m = PitchMeter::default();
        assert_eq!(m.feed(&[0; 48_000]), Some(0.0));
    }
}
