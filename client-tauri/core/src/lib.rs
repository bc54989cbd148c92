//! ConvoConnect's client engine, without a window.
//!
//! What the desktop app drives, and what `convo-bot` runs: the REST client ([`api`]), the
//! signaling client ([`signal`]), and a call ([`call`]) that publishes media on a WebRTC
//! `publish` connection and receives everyone else's on a `subscribe` connection, with Opus
//! and OpenH264 encoders and decoders. Media comes from sources behind traits; this crate
//! brings the synthetic ones ([`synth`]) whose content a receiver can verify ([`stats`]).
//!
//! The devices behind the same traits come with features: microphone and speaker through cpal
//! (`devices`), cameras through nokhwa (`camera`), monitors and windows on X11 (`screen`),
//! the system's own screen picker through scap (`portal`); the
//! pixel formats they deliver are converted in [`convert`]. Not here: the ui.

pub mod api;
pub mod apm;
pub mod call;
#[cfg(feature = "camera")]
pub mod camera;
pub mod convert;
#[cfg(feature = "devices")]
pub mod devices;
pub mod effects;
pub mod jitter;
pub mod loss;
pub mod media;
pub mod mixer;
pub mod netwatch;
#[cfg(feature = "portal")]
pub mod portal;
pub mod reconnect;
pub mod resample;
#[cfg(all(feature = "screen", target_os = "linux"))]
pub mod screen;
pub mod signal;
pub mod stats;
pub mod synth;
pub mod uplink;
pub mod video_out;

/// Why something the engine did failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the server: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the server said {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("signaling: {0}")]
    Signal(String),
    #[error("media: {0}")]
    Media(String),
}

impl From<webrtc::Error> for ClientError {
    fn from(e: webrtc::Error) -> Self {
        ClientError::Media(e.to_string())
    }
}
