//! Media sources and sinks: where a call's captured audio and video come from and where the
//! decoded media it receives goes. A backend ([`MediaBackend`]) opens them; the synthetic one
//! ([`Synthetic`]) is here, the devices (camera, microphone, speaker, screen) come with the
//! desktop app behind the same traits.
//!
//! Sources block until their next frame is captured (they set the pace, like a camera or a
//! sound card does) and run on the encoder's thread; sinks are called on the decoder's.

use std::fmt;
use std::sync::Arc;

use convo_shared::signal::TrackKind;

/// Screen sharing's frame rate: text stays sharp, motion is secondary.
pub const SCREEN_FPS: u32 = 10;

/// Mono audio at 48 kHz in 20 ms frames, the unit sources deliver and sinks receive.
pub const SAMPLE_RATE: u32 = 48_000;
pub const AUDIO_FRAME: usize = 960;

/// A device people can pick (microphone, speaker, camera).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    /// Stable while the device stays plugged in (what a choice is remembered by).
    pub id: String,
    pub name: String,
    pub default: bool,
}

/// What a screen share can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Monitor,
    Window,
}

/// A monitor or window, as the share picker lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScreenSource {
    /// Stable while the monitor or window exists (`x11:monitor:<name>`, `x11:window:<id>`).
    pub id: String,
    pub name: String,
    pub kind: SourceKind,
    pub width: u16,
    pub height: u16,
}

/// Why a source or sink could not be opened or stopped working.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MediaError {
    #[error("{device} is not available: {reason}")]
    Unavailable { device: String, reason: String },
    #[error("{device} stopped: {reason}")]
    Stopped { device: String, reason: String },
}

/// A captured picture, I420 (Y plane, then U and V at half resolution), tightly packed.
#[derive(Debug, Clone)]
pub struct VideoFrame {
    pub width: usize,
    pub height: usize,
    pub i420: Vec<u8>,
}

/// A decoded picture as the decoder holds it (planes with strides), lent to a sink.
#[derive(Debug, Clone, Copy)]
pub struct DecodedVideo<'a> {
    pub width: usize,
    pub height: usize,
    pub y: &'a [u8],
    pub u: &'a [u8],
    pub v: &'a [u8],
    /// Strides of the Y, U and V planes.
    pub strides: (usize, usize, usize),
}

/// The remote track a sink is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTrack {
    pub participant_id: String,
    pub track_id: String,
    pub kind: TrackKind,
}

/// Captured audio: 20 ms at a time.
pub trait AudioSource: Send {
    /// Blocks until the next [`AUDIO_FRAME`] samples are captured.
    fn read(&mut self) -> Result<Vec<i16>, MediaError>;
}

/// Captured video: a camera, a screen or a window.
pub trait VideoSource: Send {
    /// Blocks until the next frame is captured.
    fn next_frame(&mut self) -> Result<VideoFrame, MediaError>;
    /// The rate the source delivers at (the encoder is configured for it).
    fn fps(&self) -> u32;
}

/// Where one remote participant's decoded audio goes (a mixer, a speaker, a test).
pub trait AudioSink: Send {
    /// The next 20 ms, in order; concealment fills what the network lost.
    fn play(&mut self, pcm: &[i16]);
}

/// Where one remote video track's decoded frames go (the ui, a recorder, a test).
pub trait VideoSink: Send {
    fn frame(&mut self, frame: &DecodedVideo<'_>);
}

/// Opens sources and sinks for a call.
pub trait MediaBackend: Send + Sync {
    fn microphone(&self) -> Result<Box<dyn AudioSource>, MediaError>;
    fn camera(&self) -> Result<Box<dyn VideoSource>, MediaError>;
    fn screen(&self) -> Result<Box<dyn VideoSource>, MediaError>;
    /// The mix the speaker plays, if this backend plays one: the echo canceller hears it as
    /// its far end.
    fn playout(&self) -> Option<crate::mixer::Mixer> {
        None
    }
    /// A sink for a remote participant's audio; `None` discards it (after measuring).
    fn audio_sink(&self, _track: &RemoteTrack) -> Option<Box<dyn AudioSink>> {
        None
    }
    /// A sink for a remote video track; `None` discards it (after measuring).
    fn video_sink(&self, _track: &RemoteTrack) -> Option<Box<dyn VideoSink>> {
        None
    }
}

/// A backend to hand to a call: shared, and printable in options.
#[derive(Clone)]
pub struct Backend(pub Arc<dyn MediaBackend>);

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Backend(..)")
    }
}

/// The synthetic backend: a tone with timing markers for audio, moving patterns carrying a
/// frame counter and capture time for camera and screen (see [`crate::synth`]). Receivers can
/// check all of it. Sinks discard (the call measures everything it decodes).
#[derive(Debug, Clone, Copy)]
pub struct Synthetic {
    pub tone_hz: f64,
    pub fps: u32,
    /// Size of the camera's and the screen's pictures.
    pub size: crate::synth::VideoSize,
}

impl Default for Synthetic {
    fn default() -> Self {
        Synthetic {
            tone_hz: 440.0,
            fps: 15,
            size: crate::synth::VideoSize::default(),
        }
    }
}

impl MediaBackend for Synthetic {
    fn microphone(&self) -> Result<Box<dyn AudioSource>, MediaError> {
        Ok(Box::new(crate::synth::SyntheticMic::new(self.tone_hz)))
    }

    fn camera(&self) -> Result<Box<dyn VideoSource>, MediaError> {
        Ok(Box::new(crate::synth::SyntheticVideo::new(
            crate::synth::Pattern::Camera,
            self.size,
            self.fps,
        )))
    }

    fn screen(&self) -> Result<Box<dyn VideoSource>, MediaError> {
        Ok(Box::new(crate::synth::SyntheticVideo::new(
            crate::synth::Pattern::Screen,
            self.size,
            self.fps,
        )))
    }
}
