//! The camera's effects (background blur or picture, touch-up): the ui's commands. The
//! effects themselves run in the engine ([`convo_client::effects`]) on the camera's frames,
//! before the self view and the encoder see them, in pre-join and in the call alike.

use convo_client::effects::{BUILT_IN, Background, Effects};
use serde::Serialize;
use tauri::{Emitter, Manager, State};

use crate::{AppState, UiError, UiResult};

/// The largest picture file the ui may hand over (bytes).
pub const MAX_PICTURE_BYTES: usize = 16 << 20;

/// A background the ui can offer.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltIn {
    pub id: &'static str,
    pub name: &'static str,
}

/// The built-in pictures.
#[tauri::command]
pub fn video_backgrounds() -> Vec<BuiltIn> {
    BUILT_IN
        .iter()
        .map(|(id, name)| BuiltIn { id, name })
        .collect()
}

/// Sets the camera's effects, from the next frame on (pre-join or call). A picture that does
/// not read, or no segmentation model, is refused with a code and changes nothing.
#[tauri::command]
pub fn set_video_effects(state: State<'_, AppState>, effects: Effects) -> UiResult<()> {
    state
        .effects
        .set(effects)
        .map_err(|e| UiError::new(e.code(), e.to_string()))
}

/// Keeps a picture of the user's (the bytes of a PNG or JPEG the ui read from the file they
/// chose) in the app's data directory and returns the background that shows it.
#[tauri::command]
pub fn save_background(
    app: tauri::AppHandle,
    name: String,
    base64: String,
) -> UiResult<Background> {
    use base64::Engine as _;
    if base64.len() > MAX_PICTURE_BYTES / 3 * 4 + 4 {
        return Err(UiError::new(
            "picture_too_large",
            format!(
                "a background picture may be up to {} MB",
                MAX_PICTURE_BYTES >> 20
            ),
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64.as_bytes())
        .map_err(|_| UiError::new("invalid_picture", "the picture did not arrive whole"))?;
    let ext = convo_client::effects::check_picture(&bytes)
        .map_err(|e| UiError::new("invalid_picture", format!("{name}: {e}")))?;
    let dir = app
        .path()
        .app_data_dir()
        .map_err(|e| UiError::new("storage", e.to_string()))?
        .join("backgrounds");
    std::fs::create_dir_all(&dir).map_err(|e| UiError::new("storage", e.to_string()))?;
    // One picture of the user's is kept: the new one replaces the old.
    for old in ["png", "jpg"] {
        let _ = std::fs::remove_file(dir.join(format!("mine.{old}")));
    }
    let path = dir.join(format!("mine.{ext}"));
    std::fs::write(&path, &bytes).map_err(|e| UiError::new("storage", e.to_string()))?;
    Ok(Background::File { path })
}

/// Tells the ui when the effects had to be switched off while running.
pub fn report_errors(app: &tauri::AppHandle) {
    #[derive(Clone, Serialize)]
    struct Off {
        code: &'static str,
        message: String,
    }
    let handle = app.clone();
    app.state::<AppState>().effects.on_error(move |e| {
        let _ = handle.emit(
            "effects-off",
            Off {
                code: e.code(),
                message: e.to_string(),
            },
        );
    });
}
