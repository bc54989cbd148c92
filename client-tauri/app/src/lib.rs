//! ConvoConnect's desktop app: the Tauri 2 shell between the ui (`ui/`, the webview) and the
//! client engine (`convo-client`). Commands here are everything the ui may ask; media never
//! passes through the webview's JavaScript except as finished RGBA frames pulled from the
//! `frames:` scheme (see [`frames`]).

pub mod frames;
mod session;

use std::sync::Arc;

use convo_client::api::Api;
use convo_client::call::{self, CallEvent, CallHandle, CallOptions};
use convo_client::media::{
    AudioSink, AudioSource, Backend, MediaBackend, MediaError, RemoteTrack, Synthetic, VideoSink,
    VideoSource,
};
use convo_client::mixer::Mixer;
use convo_shared::rooms::{CreateRoomRequest, Privacy, Room, RoomList};
use convo_shared::signal::{ParticipantInfo, TrackKind};
use convo_shared::users::User;
use serde::Serialize;
use tauri::ipc::Channel;
use tauri::{Manager, State};
use tokio::sync::Mutex;

use crate::frames::{FrameStore, Preview};
use crate::session::Session;

/// What the ui shows when something fails: a code it can act on and a sentence for people.
#[derive(Debug, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct UiError {
    pub code: String,
    pub message: String,
}

impl UiError {
    fn new(code: &str, message: impl Into<String>) -> Self {
        UiError {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl From<convo_client::ClientError> for UiError {
    fn from(e: convo_client::ClientError) -> Self {
        use convo_client::ClientError as E;
        match e {
            E::Http(_) => UiError::new(
                "server_unreachable",
                "Cannot reach the ConvoConnect server. Check the server address and your network, then try again.",
            ),
            // The server's messages are written for people already.
            E::Api { code, message, .. } => UiError { code, message },
            E::Signal(m) => UiError::new("signaling", friendly_signal(&m)),
            E::Media(m) => UiError::new("media", format!("Audio or video could not start: {m}")),
        }
    }
}

fn friendly_signal(m: &str) -> String {
    match m.split(':').next().unwrap_or_default() {
        "room_not_found" => "This meeting does not exist, or you are not invited to it.".into(),
        "room_password_required" | "invalid_room_password" => {
            "This meeting needs a password: enter the one the host gave you.".into()
        }
        "room_locked" => "The host has locked this meeting. Ask them to unlock it.".into(),
        "room_full" => "This meeting is full.".into(),
        _ => format!("The connection to the meeting failed ({m}). Try joining again."),
    }
}

type UiResult<T> = Result<T, UiError>;

/// Where media comes from: devices (the default) or synthetic sources (`CONVO_MEDIA=synthetic`,
/// for machines without a camera or screen, and for tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaMode {
    Devices,
    Synthetic,
}

impl MediaMode {
    fn from_env() -> Self {
        match std::env::var("CONVO_MEDIA").as_deref() {
            Ok("synthetic") => MediaMode::Synthetic,
            _ => MediaMode::Devices,
        }
    }
}

/// The app's backend: sources per media mode; remote video to the frame store, remote audio
/// to the mixer.
struct AppBackend {
    mode: MediaMode,
    frames: FrameStore,
    mixer: Mixer,
}

fn no_device(device: &str) -> MediaError {
    MediaError::Unavailable {
        device: device.into(),
        reason: "device capture is not in this build yet; start with CONVO_MEDIA=synthetic".into(),
    }
}

impl MediaBackend for AppBackend {
    fn microphone(&self) -> Result<Box<dyn AudioSource>, MediaError> {
        match self.mode {
            MediaMode::Synthetic => Synthetic {
                tone_hz: 440.0,
                fps: 15,
            }
            .microphone(),
            MediaMode::Devices => Err(no_device("microphone")),
        }
    }

    fn camera(&self) -> Result<Box<dyn VideoSource>, MediaError> {
        let inner = match self.mode {
            MediaMode::Synthetic => Synthetic {
                tone_hz: 440.0,
                fps: 15,
            }
            .camera()?,
            MediaMode::Devices => return Err(no_device("camera")),
        };
        Ok(Box::new(Preview {
            inner,
            store: self.frames.clone(),
            track: "local:video".into(),
        }))
    }

    fn screen(&self) -> Result<Box<dyn VideoSource>, MediaError> {
        let inner = match self.mode {
            MediaMode::Synthetic => Synthetic {
                tone_hz: 440.0,
                fps: 15,
            }
            .screen()?,
            MediaMode::Devices => return Err(no_device("screen")),
        };
        Ok(Box::new(Preview {
            inner,
            store: self.frames.clone(),
            track: "local:screen".into(),
        }))
    }

    fn audio_sink(&self, track: &RemoteTrack) -> Option<Box<dyn AudioSink>> {
        Some(Box::new(self.mixer.sink(&track.track_id)))
    }

    fn video_sink(&self, track: &RemoteTrack) -> Option<Box<dyn VideoSink>> {
        Some(Box::new(self.frames.sink(&track.track_id)))
    }
}

/// Everything the app holds; one instance, managed by Tauri.
pub struct AppState {
    session: Session,
    call: Mutex<Option<CallHandle>>,
    frames: FrameStore,
    mixer: Mixer,
    mode: MediaMode,
}

#[derive(Debug, Serialize)]
pub struct AppInfo {
    server: String,
    media: MediaMode,
    version: &'static str,
    keyring: bool,
}

#[tauri::command]
async fn app_info(state: State<'_, AppState>) -> UiResult<AppInfo> {
    Ok(AppInfo {
        server: state.session.server().await,
        media: state.mode,
        version: env!("CARGO_PKG_VERSION"),
        keyring: session::keyring_available().await,
    })
}

#[tauri::command]
async fn set_server(state: State<'_, AppState>, url: String) -> UiResult<()> {
    let url = url.trim().trim_end_matches('/').to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 2000 {
        return Err(UiError::new(
            "invalid_server",
            "Enter the server address starting with http:// or https://.",
        ));
    }
    state.session.set_server(url).await;
    Ok(())
}

#[tauri::command]
async fn register(
    state: State<'_, AppState>,
    username: String,
    email: String,
    password: String,
    display_name: Option<String>,
) -> UiResult<User> {
    let api = Api::new(&state.session.server().await);
    let req = convo_shared::auth::RegisterRequest {
        username,
        email,
        password,
        display_name: display_name.filter(|d| !d.trim().is_empty()),
    };
    Ok(api.register(&req).await?)
}

#[tauri::command]
async fn sign_in(state: State<'_, AppState>, login: String, password: String) -> UiResult<User> {
    state.session.sign_in(&login, &password).await
}

/// Signs in again from the refresh token in the OS keyring, if there is one.
#[tauri::command]
async fn restore_session(state: State<'_, AppState>) -> UiResult<Option<User>> {
    state.session.restore().await
}

#[tauri::command]
async fn sign_out(state: State<'_, AppState>) -> UiResult<()> {
    if let Some(call) = state.call.lock().await.take() {
        let _ = call.leave().await;
    }
    state.session.sign_out().await;
    Ok(())
}

#[tauri::command]
async fn forgot_password(state: State<'_, AppState>, email: String) -> UiResult<()> {
    let api = Api::new(&state.session.server().await);
    api.forgot_password(&email).await?;
    Ok(())
}

#[tauri::command]
async fn list_rooms(state: State<'_, AppState>) -> UiResult<RoomList> {
    let (api, token) = state.session.authed().await?;
    Ok(api.rooms(&token).await?)
}

#[tauri::command]
async fn create_room(
    state: State<'_, AppState>,
    name: String,
    private: bool,
    password: Option<String>,
) -> UiResult<Room> {
    let (api, token) = state.session.authed().await?;
    let req = CreateRoomRequest {
        name,
        privacy: if private {
            Privacy::Private
        } else {
            Privacy::Public
        },
        password: password.filter(|p| !p.is_empty()),
        max_participants: None,
        expires_at: None,
    };
    Ok(api.create_room(&token, &req).await?)
}

/// A room id from what people paste: the id itself, a join link, or a `convoconnect://` link.
fn room_id_from(input: &str) -> String {
    let t = input.trim().trim_end_matches('/');
    t.rsplit('/').next().unwrap_or(t).to_string()
}

#[tauri::command]
async fn get_room(state: State<'_, AppState>, id: String) -> UiResult<Room> {
    let (api, token) = state.session.authed().await?;
    Ok(api.room(&token, &room_id_from(&id)).await?)
}

#[derive(Debug, Serialize)]
pub struct Joined {
    participant_id: String,
    participants: Vec<ParticipantInfo>,
}

#[tauri::command]
async fn join_call(
    state: State<'_, AppState>,
    room_id: String,
    password: Option<String>,
    audio_muted: bool,
    video_muted: bool,
    on_event: Channel<CallEvent>,
) -> UiResult<Joined> {
    let mut slot = state.call.lock().await;
    if let Some(old) = slot.take() {
        let _ = old.leave().await;
    }
    let (api, token) = state.session.authed().await?;
    state.frames.clear();
    let backend = AppBackend {
        mode: state.mode,
        frames: state.frames.clone(),
        mixer: state.mixer.clone(),
    };
    let opts = CallOptions {
        room_id: room_id_from(&room_id),
        room_password: password.filter(|p| !p.is_empty()),
        // Muted at join still opens the sources, so unmuting is instant.
        audio: true,
        video: true,
        screen: false,
        duration: std::time::Duration::MAX,
        backend: Some(Backend(Arc::new(backend))),
        ..Default::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let call = call::start(api.base(), &token, opts, Some(tx)).await?;
    if audio_muted {
        call.set_muted(TrackKind::Audio, true);
    }
    if video_muted {
        call.set_muted(TrackKind::Video, true);
    }
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            if on_event.send(event).is_err() {
                break;
            }
        }
    });
    let joined = Joined {
        participant_id: call.participant_id.clone(),
        participants: call.participants.clone(),
    };
    *slot = Some(call);
    Ok(joined)
}

#[tauri::command]
async fn leave_call(state: State<'_, AppState>) -> UiResult<()> {
    if let Some(call) = state.call.lock().await.take() {
        let _ = call.leave().await;
    }
    state.frames.clear();
    Ok(())
}

#[tauri::command]
async fn set_muted(state: State<'_, AppState>, kind: TrackKind, muted: bool) -> UiResult<()> {
    match state.call.lock().await.as_ref() {
        Some(call) => {
            call.set_muted(kind, muted);
            Ok(())
        }
        None => Err(UiError::new("not_in_call", "You are not in a meeting.")),
    }
}

fn tray(app: &tauri::App) -> tauri::Result<()> {
    use tauri::menu::{Menu, MenuItem};
    use tauri::tray::TrayIconBuilder;
    let open = MenuItem::with_id(app, "open", "Open ConvoConnect", true, None::<&str>)?;
    let quit = MenuItem::with_id(app, "quit", "Quit", true, None::<&str>)?;
    let menu = Menu::with_items(app, &[&open, &quit])?;
    let mut builder = TrayIconBuilder::with_id("main")
        .tooltip("ConvoConnect")
        .menu(&menu)
        .on_menu_event(|app, event| match event.id.as_ref() {
            "open" => {
                if let Some(w) = app.get_webview_window("main") {
                    let _ = w.show();
                    let _ = w.set_focus();
                }
            }
            "quit" => app.exit(0),
            _ => {}
        });
    if let Some(icon) = app.default_window_icon() {
        builder = builder.icon(icon.clone());
    }
    builder.build(app)?;
    Ok(())
}

/// Starts the app.
pub fn run() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONVO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let frames = FrameStore::default();
    let state = AppState {
        session: Session::new(
            std::env::var("CONVO_SERVER").unwrap_or_else(|_| "http://127.0.0.1:8080".into()),
        ),
        call: Mutex::new(None),
        frames: frames.clone(),
        mixer: Mixer::new(
            std::time::Duration::from_millis(60),
            std::time::Duration::from_millis(300),
        ),
        mode: MediaMode::from_env(),
    };
    let result = tauri::Builder::default()
        .manage(state)
        .register_uri_scheme_protocol("frames", move |_ctx, request| {
            frames::respond(&frames, &request.uri().to_string())
        })
        .setup(|app| {
            // A missing tray host (a bare X server, some desktops) is not a reason to fail.
            if let Err(e) = tray(app) {
                tracing::warn!(error = %e, "no tray icon");
            }
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            app_info,
            set_server,
            register,
            sign_in,
            restore_session,
            sign_out,
            forgot_password,
            list_rooms,
            create_room,
            get_room,
            join_call,
            leave_call,
            set_muted,
        ])
        .run(tauri::generate_context!());
    if let Err(e) = result {
        eprintln!("ConvoConnect could not start: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_come_out_of_links() {
        assert_eq!(room_id_from(" abc-defg-hij "), "abc-defg-hij");
        assert_eq!(
            room_id_from("http://host:8080/join/abc-defg-hij"),
            "abc-defg-hij"
        );
        assert_eq!(
            room_id_from("convoconnect://join/abc-defg-hij/"),
            "abc-defg-hij"
        );
    }

    #[test]
    fn errors_read_as_sentences() {
        let e = UiError::from(convo_client::ClientError::Signal(
            "room_full: capacity reached".into(),
        ));
        assert_eq!(e.message, "This meeting is full.");
        let e = UiError::from(convo_client::ClientError::Api {
            status: 401,
            code: "invalid_credentials".into(),
            message: "Wrong username or password.".into(),
        });
        assert_eq!(e.code, "invalid_credentials");
    }
}
