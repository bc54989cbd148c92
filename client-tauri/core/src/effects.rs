//! Video effects on the camera (background blur and replacement, touch-up), applied on the
//! encoder's thread before the frame is encoded — and so in the self view, which is fed from
//! the same frames. The work itself is in `convo-effects`; this is the camera's side:
//! a [`VideoSource`] wrapper and a handle to change the effects while frames flow.

use std::sync::{Arc, Mutex, PoisonError};

pub use convo_effects::composite::{
    BUILT_IN, builtin as builtin_picture, check_picture, load_picture,
};

/// Whether the segmentation model is where [`convo_effects::segment::model_path`] looks.
pub fn model_installed() -> bool {
    convo_effects::segment::model_path().is_some()
}
pub use convo_effects::{Background, Effects, EffectsError};

use crate::media::{MediaError, VideoFrame, VideoSource};

type Listener = Arc<dyn Fn(&EffectsError) + Send + Sync>;

#[derive(Default)]
struct State {
    effects: Effects,
    /// Bumped on every change: a source applies the new effects at its next frame.
    generation: u64,
    listeners: Vec<Listener>,
}

/// The effects a camera's frames get, shared by whoever sets them (the ui, the bot) and the
/// sources they apply to. Cloning shares it.
#[derive(Clone, Default)]
pub struct EffectsControl(Arc<Mutex<State>>);

impl std::fmt::Debug for EffectsControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("EffectsControl").field(&self.get()).finish()
    }
}

impl EffectsControl {
    pub fn new(effects: Effects) -> EffectsControl {
        let c = EffectsControl::default();
        c.lock().effects = effects;
        c
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self) -> Effects {
        self.lock().effects.clone()
    }

    /// Checks what it can at once — the model is installed, the user's picture reads — and
    /// has every source apply `effects` from its next frame. Refused effects change nothing.
    pub fn set(&self, effects: Effects) -> Result<(), EffectsError> {
        if !effects.is_none() && !model_installed() {
            return Err(EffectsError::Model(format!(
                "{} is not installed (set CONVO_SEGMENTATION_MODEL to its path)",
                convo_effects::segment::MODEL_FILE
            )));
        }
        if let Background::File { path } = &effects.background {
            load_picture(path, 16, 16)?;
        }
        let mut s = self.lock();
        s.effects = effects;
        s.generation += 1;
        Ok(())
    }

    /// `f` hears why effects were switched off while running (too slow, the model failed).
    pub fn on_error(&self, f: impl Fn(&EffectsError) + Send + Sync + 'static) {
        self.lock().listeners.push(Arc::new(f));
    }

    /// A camera whose frames get these effects.
    pub fn wrap(&self, inner: Box<dyn VideoSource>) -> Box<dyn VideoSource> {
        let mut processor = convo_effects::Processor::default();
        processor.set_camera_fps(inner.fps());
        Box::new(EffectSource {
            inner,
            control: self.clone(),
            processor,
            applied: None,
        })
    }

    /// Switches the effects off after a failure and tells the listeners.
    fn failed(&self, error: &EffectsError, keep_touch_up: bool) {
        let listeners = {
            let mut s = self.lock();
            s.effects = Effects {
                background: Background::None,
                touch_up: keep_touch_up && s.effects.touch_up,
            };
            s.generation += 1;
            s.listeners.clone()
        };
        tracing::warn!(error = %error, "video effects switched off");
        for l in listeners {
            l(error);
        }
    }
}

/// A camera with effects (see [`EffectsControl::wrap`]).
pub struct EffectSource {
    inner: Box<dyn VideoSource>,
    control: EffectsControl,
    processor: convo_effects::Processor,
    /// The generation the processor has.
    applied: Option<u64>,
}

impl VideoSource for EffectSource {
    fn next_frame(&mut self) -> Result<VideoFrame, MediaError> {
        let mut frame = self.inner.next_frame()?;
        // The effects are copied only when they changed, not for every frame.
        let changed = {
            let s = self.control.lock();
            (self.applied != Some(s.generation)).then(|| (s.generation, s.effects.clone()))
        };
        if let Some((generation, effects)) = changed {
            self.applied = Some(generation);
            // The model loads here, on the camera's thread, the first time it is needed.
            if let Err(e) = self.processor.set(effects) {
                self.control.failed(&e, false);
                return Ok(frame);
            }
        }
        if let Err(e) = self
            .processor
            .process(frame.width, frame.height, &mut frame.i420)
        {
            self.control.failed(&e, false);
        }
        Ok(frame)
    }

    fn fps(&self) -> u32 {
        self.inner.fps()
    }
}

/// A camera that shows a still picture (a PNG or JPEG, scaled and cropped to `width`×`height`)
/// at `fps`: a person in front of a room for the bot and the tests, where there is no camera.
pub struct PictureCamera {
    i420: Vec<u8>,
    width: usize,
    height: usize,
    fps: u32,
    start: std::time::Instant,
    counter: u64,
}

impl PictureCamera {
    pub fn open(
        path: &std::path::Path,
        width: usize,
        height: usize,
        fps: u32,
    ) -> Result<PictureCamera, MediaError> {
        let unavailable = |reason: String| MediaError::Unavailable {
            device: format!("picture {}", path.display()),
            reason,
        };
        if width < 2 || height < 2 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(unavailable(format!("{width}x{height}: sides must be even")));
        }
        let i420 = load_picture(path, width, height).map_err(|e| unavailable(e.to_string()))?;
        Ok(PictureCamera {
            i420,
            width,
            height,
            fps: fps.clamp(1, 60),
            start: std::time::Instant::now(),
            counter: 0,
        })
    }
}

impl VideoSource for PictureCamera {
    fn next_frame(&mut self) -> Result<VideoFrame, MediaError> {
        let due = self.start
            + std::time::Duration::from_secs_f64(self.counter as f64 / f64::from(self.fps));
        if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
        self.counter += 1;
        Ok(VideoFrame {
            width: self.width,
            height: self.height,
            i420: self.i420.clone(),
        })
    }

    fn fps(&self) -> u32 {
        self.fps
    }
}

/// `none`, `blur`, `blur-strong`, a built-in picture's id (`dusk`, `studio`, `aurora`), or a
/// picture file's path: what `convo-bot --background` takes.
pub fn parse_background(s: &str) -> Background {
    match s {
        "none" | "" => Background::None,
        "blur" => Background::Blur { strong: false },
        "blur-strong" => Background::Blur { strong: true },
        id if BUILT_IN.iter().any(|(b, _)| *b == id) => Background::Builtin { id: id.into() },
        path => Background::File { path: path.into() },
    }
}
