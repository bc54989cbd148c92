//! Video effects for the client engine, applied to the camera's I420 frames before they are
//! encoded (and so also in the self view): background blur (two strengths), background
//! replacement with a picture, a touch-up (brightness and smoothing) and the self view's mirror.
//!
//! The person is found by MediaPipe's selfie-segmentation model (the landscape variant,
//! 256×144 in, a person probability per pixel out), which the ui's npm dependencies carry
//! (`@mediapipe/selfie_segmentation`, Apache-2.0) and this crate runs with a small interpreter
//! of its own ([`net`]): it needs nothing but the model's bytes.

pub mod composite;
pub mod net;
pub mod segment;
mod tflite;

pub use composite::{Background, Effects, Processor};
pub use segment::Segmenter;

/// Why an effect cannot run.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum EffectsError {
    /// The model file is missing, unreadable or not one this interpreter runs.
    #[error("segmentation model: {0}")]
    Model(String),
    /// A background picture could not be read.
    #[error("background picture: {0}")]
    Picture(String),
    /// Segmentation takes longer than the camera's frame interval allows.
    #[error("this computer is too slow for background effects ({ms:.1} ms a frame)")]
    TooSlow { ms: f64 },
}

impl EffectsError {
    /// A stable code for the ui and logs.
    pub fn code(&self) -> &'static str {
        match self {
            EffectsError::Model(_) => "effects_model",
            EffectsError::Picture(_) => "effects_picture",
            EffectsError::TooSlow { .. } => "effects_too_slow",
        }
    }
}
