//! ConvoConnect's desktop app: the Tauri 2 shell between the ui (`ui/`, the webview) and the
//! client engine (`convo-client`). Commands here are everything the ui may ask; media never
//! passes through the webview's JavaScript except as decoded I420 frames pushed over the
//! video channel (see [`frame_ws`]), which the webview draws with WebGL.

mod agenda;
mod effects;
pub mod frame_ws;
pub mod frames;
mod session;

use std::sync::Arc;

use convo_client::api::Api;
use convo_client::apm::AudioProcessing;
use convo_client::call::{self, CallEvent, CallHandle, CallOptions};
use convo_client::media::{
    AudioSink, AudioSource, Backend, MediaBackend, MediaError, RemoteTrack, Synthetic, VideoSink,
    VideoSource,
};
use convo_client::mixer::Mixer;
use convo_client::synth;
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
        "admission_denied" => "The host did not let you in to this meeting.".into(),
        "cancelled" => "You left the waiting room.".into(),
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
    input: Option<String>,
    camera: Option<String>,
    effects: convo_client::effects::EffectsControl,
}

/// Opens a monitor or window from [`list_screens`] by id (`synthetic` in synthetic mode).
fn open_screen(mode: MediaMode, id: &str) -> Result<Box<dyn VideoSource>, MediaError> {
    if id == "synthetic" && mode == MediaMode::Synthetic {
        return synthetic().screen();
    }
    #[cfg(target_os = "linux")]
    if id.starts_with("x11:") {
        return Ok(Box::new(convo_client::screen::X11Screen::open(Some(id))?));
    }
    #[cfg(feature = "portal")]
    if id == PORTAL {
        return Ok(Box::new(convo_client::portal::PortalScreen::open(
            convo_client::media::SCREEN_FPS,
        )?));
    }
    Err(MediaError::Unavailable {
        device: "screen".into(),
        reason: format!("“{id}” is not a screen or window that can be shared here"),
    })
}

/// `CONVO_MEDIA=synthetic`: a 440 Hz tone with markers, patterns of 320 × 240 at 15 fps, or
/// of the size and rate `CONVO_SYNTH_VIDEO` asks (`1280x720@30`).
fn synthetic() -> Synthetic {
    static SYNTHETIC: std::sync::OnceLock<Synthetic> = std::sync::OnceLock::new();
    *SYNTHETIC.get_or_init(|| {
        let mut s = Synthetic::default();
        if let Ok(v) = std::env::var("CONVO_SYNTH_VIDEO") {
            match synth::VideoSize::parse_with_fps(&v) {
                Ok((size, fps)) => {
                    s.size = size;
                    s.fps = fps.unwrap_or(s.fps);
                }
                Err(e) => tracing::warn!(error = %e, "CONVO_SYNTH_VIDEO ignored"),
            }
        }
        s
    })
}

/// Synthetic mode's microphones (id, name, pitch): two, so that switching can be tried, and
/// tested, where there are no devices. The first is the default.
const SYNTHETIC_MICS: [(&str, &str, f64); 2] = [
    ("synthetic", "Synthetic microphone (440 Hz tone)", 440.0),
    ("synthetic-660", "Synthetic microphone (660 Hz tone)", 660.0),
];

/// Synthetic mode's cameras (id, name, picture), likewise.
const SYNTHETIC_CAMERAS: [(&str, &str, synth::Pattern); 2] = [
    ("synthetic", "Synthetic camera", synth::Pattern::Camera),
    (
        "synthetic-2",
        "Synthetic camera 2 (checkerboard)",
        synth::Pattern::Screen,
    ),
];

/// The entry of `list` chosen by `id`, else the first.
fn synthetic_pick<T: Copy, const N: usize>(list: &[(&str, &str, T); N], id: Option<&str>) -> T {
    list.iter()
        .find(|(i, _, _)| Some(*i) == id)
        .unwrap_or(&list[0])
        .2
}

/// A synthetic list for the device pickers.
fn synthetic_list<T>(list: &[(&str, &str, T)]) -> Vec<convo_client::devices::DeviceInfo> {
    list.iter()
        .enumerate()
        .map(|(i, (id, name, _))| convo_client::devices::DeviceInfo {
            id: (*id).into(),
            name: (*name).into(),
            default: i == 0,
        })
        .collect()
}

impl AppBackend {
    /// A camera or screen whose frames also go to the self view (`track` in the frame store).
    fn previewed(
        &self,
        source: Result<Box<dyn VideoSource>, MediaError>,
        track: &str,
    ) -> Result<Box<dyn VideoSource>, MediaError> {
        Ok(Box::new(Preview::new(source?, &self.frames, track)))
    }
}

impl MediaBackend for AppBackend {
    fn microphone(&self) -> Result<Box<dyn AudioSource>, MediaError> {
        match self.mode {
            MediaMode::Synthetic => Ok(Box::new(synth::SyntheticMic::new(synthetic_pick(
                &SYNTHETIC_MICS,
                self.input.as_deref(),
            )))),
            MediaMode::Devices => Ok(Box::new(convo_client::devices::CpalMic::open(
                self.input.as_deref(),
            )?)),
        }
    }

    fn camera(&self) -> Result<Box<dyn VideoSource>, MediaError> {
        let source: Result<Box<dyn VideoSource>, MediaError> = match self.mode {
            // `CONVO_SYNTH_CAMERA_IMAGE`: the synthetic camera shows a photograph (a person,
            // for the video effects) instead of its pattern.
            MediaMode::Synthetic => match std::env::var_os("CONVO_SYNTH_CAMERA_IMAGE") {
                Some(path) if self.camera.as_deref().is_none_or(|c| c == "synthetic") => {
                    convo_client::effects::PictureCamera::open(
                        std::path::Path::new(&path),
                        synthetic().size.width,
                        synthetic().size.height,
                        synthetic().fps,
                    )
                    .map(|c| Box::new(c) as Box<dyn VideoSource>)
                }
                _ => Ok(Box::new(synth::SyntheticVideo::new(
                    synthetic_pick(&SYNTHETIC_CAMERAS, self.camera.as_deref()),
                    synthetic().size,
                    synthetic().fps,
                ))),
            },
            MediaMode::Devices => convo_client::camera::Camera::open(self.camera.as_deref())
                .map(|c| Box::new(c) as Box<dyn VideoSource>),
        };
        // The effects before the self view: it shows what the others see.
        self.previewed(source.map(|s| self.effects.wrap(s)), "local:video")
    }

    fn screen(&self) -> Result<Box<dyn VideoSource>, MediaError> {
        let id = match self.mode {
            MediaMode::Synthetic => "synthetic",
            MediaMode::Devices => "x11:monitor",
        };
        self.previewed(open_screen(self.mode, id), "local:screen")
    }

    fn audio_sink(&self, track: &RemoteTrack) -> Option<Box<dyn AudioSink>> {
        Some(Box::new(self.mixer.sink(&track.track_id)))
    }

    fn playout(&self) -> Option<Mixer> {
        Some(self.mixer.clone())
    }

    fn video_sink(&self, track: &RemoteTrack) -> Option<Box<dyn VideoSink>> {
        Some(Box::new(self.frames.sink(&track.track_id)))
    }
}

/// Everything the app holds; one instance, managed by Tauri.
pub struct AppState {
    /// The ui's video channel (`None` if it could not be opened: tiles then say so).
    video: Option<frame_ws::FrameServer>,
    session: Session,
    call: Mutex<Option<CallHandle>>,
    frames: FrameStore,
    mixer: Mixer,
    mode: MediaMode,
    /// Chosen microphone and speaker (`None`: the system default).
    devices: std::sync::Mutex<Chosen>,
    /// Playout while in a call.
    speaker: std::sync::Mutex<Option<convo_client::devices::CpalSpeaker>>,
    /// Pre-join: the microphone level meter and the camera preview.
    mic_test: std::sync::Mutex<Option<MicTest>>,
    preview: std::sync::Mutex<Option<Arc<std::sync::atomic::AtomicBool>>>,
    /// For the window and the tray, which cannot wait on the call's lock.
    in_call: std::sync::atomic::AtomicBool,
    mic_muted: std::sync::atomic::AtomicBool,
    /// What runs on the microphone (the ui's settings; all on until it says).
    audio_processing: std::sync::Mutex<AudioProcessing>,
    /// The camera's effects (the ui's settings; none until it says).
    effects: convo_client::effects::EffectsControl,
    /// A room from a `convoconnect://join/<id>` link, until the ui takes it.
    pending_link: std::sync::Mutex<Option<String>>,
    /// While joining: gives up (e.g. leaving a waiting room).
    cancel_join: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// My upcoming meetings, for reminders and the tray.
    agenda: agenda::Agenda,
}

#[derive(Debug, Clone, Default, serde::Deserialize, Serialize)]
pub struct Chosen {
    input: Option<String>,
    output: Option<String>,
    camera: Option<String>,
}

/// A microphone opened for the level meter: a thread reads it and keeps the last level.
struct MicTest {
    level: Arc<std::sync::atomic::AtomicU8>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl AppState {
    /// Plays the mix to speaker `id` (`None`: the system default) instead of the one playing.
    fn open_speaker(&self, id: Option<&str>) -> Result<(), MediaError> {
        let speaker = convo_client::devices::CpalSpeaker::open(id, self.mixer.clone())?;
        *lock(&self.speaker) = Some(speaker);
        Ok(())
    }

    /// The processing a call runs: the settings with real devices; none on the synthetic
    /// microphone (a steady tone, which the receiving side checks and a noise suppressor
    /// would take for noise).
    fn processing(&self) -> AudioProcessing {
        match self.mode {
            MediaMode::Devices => *self
                .audio_processing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            MediaMode::Synthetic => AudioProcessing::OFF,
        }
    }

    /// The backend for a call or for pre-join, with the chosen microphone.
    fn backend(&self) -> AppBackend {
        // One lock: a guard in the struct expression would live to its end.
        let chosen = lock(&self.devices).clone();
        AppBackend {
            mode: self.mode,
            frames: self.frames.clone(),
            mixer: self.mixer.clone(),
            input: chosen.input,
            camera: chosen.camera,
            effects: self.effects.clone(),
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug, Serialize)]
pub struct AppInfo {
    server: String,
    media: MediaMode,
    version: &'static str,
    keyring: bool,
}

/// Where the ui's tiles connect for their frames (a loopback port and this launch's secret).
#[tauri::command]
fn video_channel(state: State<'_, AppState>) -> UiResult<frame_ws::VideoChannel> {
    state
        .video
        .as_ref()
        .map(|v| v.channel.clone())
        .ok_or_else(|| UiError::new("no_video_channel", "The video channel could not be opened."))
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
    waiting_room: bool,
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
        waiting_room,
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

/// What a call event says in a desktop notification, if it is worth one: someone joining, a
/// chat message from someone else.
fn notification_for(event: &CallEvent, me: &str) -> Option<String> {
    use convo_shared::signal::ServerMessage;
    let CallEvent::Signal { message } = event else {
        return None;
    };
    match message {
        ServerMessage::ParticipantJoined { participant } => Some(format!(
            "{} joined the meeting",
            participant.user.display_name
        )),
        ServerMessage::Knocking { user, .. } => {
            Some(format!("{} is waiting to join", user.display_name))
        }
        ServerMessage::Admitted { .. } => Some("The host let you into the meeting".into()),
        ServerMessage::ChatMessage { message } if message.user.id != me => {
            let mut text: String = message.text.chars().take(140).collect();
            if text.len() < message.text.len() {
                text.push('…');
            }
            Some(format!("{}: {text}", message.user.display_name))
        }
        _ => None,
    }
}

/// A notification's text as the system will show it. Linux notification servers read the
/// body as markup (`<b>`, `<a href>`, `<img>`): names and chat text are escaped so that they
/// show as written. Elsewhere the body is plain text already.
pub(crate) fn notification_text(text: &str) -> String {
    if cfg!(target_os = "linux") {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    } else {
        text.to_string()
    }
}

/// Someone joining or writing while the window is hidden or in the background: a desktop
/// notification.
fn notify_if_away(app: &tauri::AppHandle, event: &CallEvent, me: &str) {
    use tauri_plugin_notification::NotificationExt;
    let Some(body) = notification_for(event, me) else {
        return;
    };
    let away = app
        .get_webview_window("main")
        .is_none_or(|w| !w.is_visible().unwrap_or(false) || !w.is_focused().unwrap_or(false));
    if !away {
        return;
    }
    let shown = app
        .notification()
        .builder()
        .title("ConvoConnect")
        .body(notification_text(&body))
        .show();
    if let Err(e) = shown {
        tracing::debug!(error = %e, "notification not shown");
    }
}

#[tauri::command]
async fn join_call(
    app: tauri::AppHandle,
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
    stop_pre_join(&state);
    let chosen = lock(&state.devices).clone();
    let backend = state.backend();
    // Everyone else's audio, mixed, to the speaker. Without one the call goes on silently.
    if let Err(e) = state.open_speaker(chosen.output.as_deref()) {
        tracing::warn!(error = %e, "no speaker");
    }
    let opts = CallOptions {
        room_id: room_id_from(&room_id),
        room_password: password.filter(|p| !p.is_empty()),
        // Muted at join still opens the sources, so unmuting is instant. A source that cannot
        // open is left out (the ui hears `source_failed`).
        audio: true,
        video: true,
        screen: false,
        duration: std::time::Duration::MAX,
        backend: Some(Backend(Arc::new(backend))),
        audio_processing: state.processing(),
        ..Default::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // Events flow from the start: a waiting room speaks before the call is joined.
    let me = state.session.user_id().await.unwrap_or_default();
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            notify_if_away(&app, &event, &me);
            if on_event.send(event).is_err() {
                break;
            }
        }
    });
    // Waiting for the host can be long: `cancel_join` gives up (which tells the host).
    let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
    *lock(&state.cancel_join) = Some(cancel_tx);
    let started = tokio::select! {
        started = call::start(api.base(), &token, opts, Some(tx)) => started,
        _ = cancel_rx => Err(convo_client::ClientError::Signal("cancelled: left the waiting room".into())),
    };
    lock(&state.cancel_join).take();
    let call = started?;
    if audio_muted {
        call.set_muted(TrackKind::Audio, true);
    }
    if video_muted {
        call.set_muted(TrackKind::Video, true);
    }
    let joined = Joined {
        participant_id: call.participant_id.clone(),
        participants: call.participants.clone(),
    };
    *slot = Some(call);
    state
        .in_call
        .store(true, std::sync::atomic::Ordering::Relaxed);
    state
        .mic_muted
        .store(audio_muted, std::sync::atomic::Ordering::Relaxed);
    Ok(joined)
}

#[tauri::command]
async fn leave_call(state: State<'_, AppState>) -> UiResult<()> {
    if let Some(call) = state.call.lock().await.take() {
        let _ = call.leave().await;
    }
    lock(&state.speaker).take();
    state.frames.clear();
    state
        .in_call
        .store(false, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// My meetings that are not over yet, soonest first.
#[tauri::command]
async fn upcoming_meetings(
    state: State<'_, AppState>,
) -> UiResult<convo_shared::schedule::ScheduledMeetingList> {
    let (api, token) = state.session.authed().await?;
    Ok(api.upcoming_meetings(&token).await?)
}

/// Schedules a meeting in a room I host.
#[tauri::command]
async fn schedule_meeting(
    app: tauri::AppHandle,
    state: State<'_, AppState>,
    request: convo_shared::schedule::ScheduleMeetingRequest,
) -> UiResult<convo_shared::schedule::ScheduledMeeting> {
    let (api, token) = state.session.authed().await?;
    let meeting = api.schedule_meeting(&token, &request).await?;
    // Reminders and the tray follow at once.
    agenda::refresh(&app).await;
    Ok(meeting)
}

/// Gives up joining (leaves the waiting room).
#[tauri::command]
async fn cancel_join(state: State<'_, AppState>) -> UiResult<()> {
    if let Some(cancel) = lock(&state.cancel_join).take() {
        let _ = cancel.send(());
    }
    Ok(())
}

/// As the host: lets someone in from the waiting room, or turns them away.
#[tauri::command]
async fn answer_knock(state: State<'_, AppState>, request_id: String, admit: bool) -> UiResult<()> {
    if request_id.len() > 64 {
        return Err(UiError::new(
            "invalid_request",
            "That is not a waiting-room request.",
        ));
    }
    match state.call.lock().await.as_ref() {
        Some(call) => {
            call.answer_knock(&request_id, admit);
            Ok(())
        }
        None => Err(UiError::new("not_in_call", "You are not in a meeting.")),
    }
}

/// The ui draws the remote video `track_id` at `width` × `height` device pixels (`0 × 0` when
/// its tile is gone): the server sends the simulcast layer that fits.
#[tauri::command]
async fn set_view(
    state: State<'_, AppState>,
    track_id: String,
    width: u32,
    height: u32,
) -> UiResult<()> {
    if track_id.is_empty() || track_id.len() > 128 {
        return Err(UiError::new("invalid_request", "That is not a track."));
    }
    match state.call.lock().await.as_ref() {
        Some(call) => {
            call.set_track_view(&track_id, width.min(16_384), height.min(16_384));
            Ok(())
        }
        None => Err(UiError::new("not_in_call", "You are not in a meeting.")),
    }
}

/// As the host: removes someone (in the call or watching by WHEP) from the room.
#[tauri::command]
async fn remove_participant(
    state: State<'_, AppState>,
    room_id: String,
    user_id: String,
) -> UiResult<()> {
    if user_id.len() > 64 || !user_id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(UiError::new("invalid_request", "That is not a user."));
    }
    let (api, token) = state.session.authed().await?;
    Ok(api
        .remove_member(&token, &room_id_from(&room_id), &user_id)
        .await?)
}

/// Sends a chat message in the current call.
#[tauri::command]
async fn send_chat(state: State<'_, AppState>, text: String) -> UiResult<()> {
    let Some(clean) = convo_shared::chat::clean_text(&text) else {
        return Err(UiError::new(
            "validation_failed",
            format!(
                "A message is 1 to {} characters.",
                convo_shared::limits::CHAT_MAX_CHARS
            ),
        ));
    };
    match state.call.lock().await.as_ref() {
        Some(call) => {
            call.send_chat(clean);
            Ok(())
        }
        None => Err(UiError::new("not_in_call", "You are not in a meeting.")),
    }
}

/// The room's chat so far (the latest 100 messages, oldest first).
#[tauri::command]
async fn chat_history(
    state: State<'_, AppState>,
    room_id: String,
) -> UiResult<convo_shared::chat::ChatHistory> {
    let (api, token) = state.session.authed().await?;
    Ok(api.chat_history(&token, &room_id_from(&room_id)).await?)
}

/// Connection quality of the call so far: per remote track, packets, losses, freezes.
#[tauri::command]
async fn call_stats(state: State<'_, AppState>) -> UiResult<Vec<convo_client::stats::TrackReport>> {
    Ok(state
        .call
        .lock()
        .await
        .as_ref()
        .map(CallHandle::reports)
        .unwrap_or_default())
}

#[derive(Debug, Serialize)]
pub struct Devices {
    #[serde(flatten)]
    sound: convo_client::devices::SoundDevices,
    chosen: Chosen,
    cameras: Vec<convo_client::devices::DeviceInfo>,
}

/// The microphones, speakers and cameras present now (the ui asks again every few seconds, so
/// plugging a device in or out shows up), and which are chosen.
#[tauri::command]
async fn list_devices(state: State<'_, AppState>) -> UiResult<Devices> {
    let mut sound = tokio::task::spawn_blocking(convo_client::devices::list)
        .await
        .unwrap_or_default();
    let cameras = if state.mode == MediaMode::Synthetic {
        // The speaker stays real.
        sound.inputs = synthetic_list(&SYNTHETIC_MICS);
        synthetic_list(&SYNTHETIC_CAMERAS)
    } else {
        tokio::task::spawn_blocking(convo_client::camera::list)
            .await
            .unwrap_or_default()
    };
    Ok(Devices {
        sound,
        chosen: lock(&state.devices).clone(),
        cameras,
    })
}

/// Chooses the microphone, speaker and camera (`None`: the system default). In a call the
/// change takes effect at once, without leaving: the speaker is reopened, a new microphone
/// or camera replaces the one in use on the same track. A device that cannot open changes
/// nothing (the one in use carries on) and the answer says why.
#[tauri::command]
async fn choose_devices(
    state: State<'_, AppState>,
    input: Option<String>,
    output: Option<String>,
    camera: Option<String>,
) -> UiResult<()> {
    let clean = |s: Option<String>| s.filter(|s| !s.is_empty() && s.len() <= 512);
    let new = Chosen {
        input: clean(input),
        output: clean(output),
        camera: clean(camera),
    };
    let old = std::mem::replace(&mut *lock(&state.devices), new.clone());
    // While joining (the call's lock is held) the choice is kept for the next call.
    let Ok(slot) = state.call.try_lock() else {
        return Ok(());
    };
    let Some(call) = slot.as_ref() else {
        return Ok(());
    };
    let mut problems = Vec::new();
    if new.output != old.output
        && let Err(e) = state.open_speaker(new.output.as_deref())
    {
        problems.push(format!("That speaker could not start: {e}"));
        lock(&state.devices).output = old.output;
    }
    // A new microphone and camera open off the async threads (opening can block).
    let (mic_changed, camera_changed) = (new.input != old.input, new.camera != old.camera);
    let backend = state.backend();
    let (mic, camera) = tokio::task::spawn_blocking(move || {
        (
            mic_changed.then(|| backend.microphone()),
            camera_changed.then(|| backend.camera()),
        )
    })
    .await
    .map_err(|e| UiError::new("media", e.to_string()))?;
    match mic {
        Some(Ok(mic)) => call.switch_microphone(mic),
        Some(Err(e)) => {
            problems.push(format!("That microphone could not start: {e}"));
            lock(&state.devices).input = old.input;
        }
        None => {}
    }
    match camera {
        Some(Ok(camera)) => call.switch_camera(camera),
        Some(Err(e)) => {
            problems.push(format!("That camera could not start: {e}"));
            lock(&state.devices).camera = old.camera;
        }
        None => {}
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(UiError::new(
            "device_unavailable",
            format!(
                "{}. The device in use carries on; pick another one.",
                problems.join(". ")
            ),
        ))
    }
}

/// The share picker's entry for the system's own dialog.
#[cfg(feature = "portal")]
const PORTAL: &str = "portal";

/// Whether the system's screen picker is the way to share here: Windows and macOS, and Linux
/// sessions that are not X11 (Wayland), where the X11 list is empty.
#[cfg(feature = "portal")]
fn portal_offered(x11_sources: usize) -> bool {
    !cfg!(target_os = "linux") || x11_sources == 0 || std::env::var_os("WAYLAND_DISPLAY").is_some()
}

/// What can be shared: monitors and windows (X11 on Linux), the system's picker (Wayland,
/// Windows, macOS), and in synthetic mode a synthetic screen. Asked afresh each time the
/// picker opens.
#[tauri::command]
async fn list_screens(
    state: State<'_, AppState>,
) -> UiResult<Vec<convo_client::media::ScreenSource>> {
    let mut out = Vec::new();
    if state.mode == MediaMode::Synthetic {
        out.push(convo_client::media::ScreenSource {
            id: "synthetic".into(),
            name: "Synthetic screen".into(),
            kind: convo_client::media::SourceKind::Monitor,
            width: 640,
            height: 360,
        });
    }
    #[cfg(target_os = "linux")]
    let x11 = tokio::task::spawn_blocking(convo_client::screen::list)
        .await
        .unwrap_or_default();
    #[cfg(not(target_os = "linux"))]
    let x11: Vec<convo_client::media::ScreenSource> = Vec::new();
    #[cfg(feature = "portal")]
    if portal_offered(x11.len()) {
        out.push(convo_client::media::ScreenSource {
            id: PORTAL.into(),
            name: "Choose in the system's dialog…".into(),
            kind: convo_client::media::SourceKind::Monitor,
            width: 0,
            height: 0,
        });
    }
    out.extend(x11);
    Ok(out)
}

/// Shares a monitor or window from [`list_screens`] in the call (its frames also go to the
/// self view, `local:screen`), or stops sharing with `None`.
#[tauri::command]
async fn share_screen(state: State<'_, AppState>, source: Option<String>) -> UiResult<()> {
    let slot = state.call.lock().await;
    let Some(call) = slot.as_ref() else {
        return Err(UiError::new("not_in_call", "You are not in a meeting."));
    };
    let Some(id) = source else {
        call.share(None);
        return Ok(());
    };
    if id.len() > 512 {
        return Err(UiError::new(
            "invalid_source",
            "That is not a screen or window.",
        ));
    }
    let mode = state.mode;
    let opened = tokio::task::spawn_blocking(move || open_screen(mode, &id))
        .await
        .map_err(|e| UiError::new("media", e.to_string()))?;
    let source = opened.map_err(|e| {
        UiError::new(
            "share_failed",
            format!("Screen sharing could not start: {e}. Pick another screen or window."),
        )
    })?;
    call.share(Some(Box::new(Preview::new(
        source,
        &state.frames,
        "local:screen",
    ))));
    Ok(())
}

fn stop_pre_join(state: &AppState) {
    if let Some(t) = lock(&state.mic_test).take() {
        t.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    if let Some(p) = lock(&state.preview).take() {
        p.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What pre-join could not open, in words for people (`None`: it works).
#[derive(Debug, Serialize)]
pub struct PreJoin {
    microphone: Option<String>,
    camera: Option<String>,
}

/// Pre-join: opens the chosen microphone for the level meter and starts the camera preview
/// (`local:video` in the frame store). Stopped by joining or by `stop_pre_join`.
#[tauri::command]
async fn start_pre_join(state: State<'_, AppState>) -> UiResult<PreJoin> {
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
    stop_pre_join(&state);
    let backend = state.backend();
    let opened = tokio::task::spawn_blocking(move || (backend.microphone(), backend.camera()))
        .await
        .map_err(|e| UiError::new("media", e.to_string()))?;
    let (source, camera) = opened;
    let level = Arc::new(AtomicU8::new(127));
    let stop = Arc::new(AtomicBool::new(false));
    let mic_error = match source {
        Ok(mut source) => {
            let (level2, stop2) = (level.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match source.read() {
                        Ok(pcm) => level2.store(call::audio_level(&pcm), Ordering::Relaxed),
                        Err(_) => return,
                    }
                }
            });
            None
        }
        Err(e) => Some(format!("The microphone could not start: {e}.")),
    };
    *lock(&state.mic_test) = Some(MicTest { level, stop });
    let camera_error =
        match camera {
            Ok(mut cam) => {
                let stop = Arc::new(AtomicBool::new(false));
                let stop2 = stop.clone();
                std::thread::spawn(move || {
                    while !stop2.load(Ordering::Relaxed) && cam.next_frame().is_ok() {}
                });
                *lock(&state.preview) = Some(stop);
                None
            }
            Err(e) => Some(format!("The camera could not start: {e}.")),
        };
    Ok(PreJoin {
        microphone: mic_error,
        camera: camera_error,
    })
}

#[tauri::command]
async fn stop_pre_join_cmd(state: State<'_, AppState>) -> UiResult<()> {
    stop_pre_join(&state);
    state.frames.remove("local:video");
    Ok(())
}

/// The microphone's level for the meter: 0 (silent) to 100 (loud).
#[tauri::command]
async fn mic_level(state: State<'_, AppState>) -> UiResult<u8> {
    let level = lock(&state.mic_test)
        .as_ref()
        .map_or(127, |t| t.level.load(std::sync::atomic::Ordering::Relaxed));
    // RFC 6464 −dBov (0 loud … 127 silent) to a 0–100 meter over the useful −60…0 dB.
    Ok(100u8.saturating_sub((u16::from(level.min(60)) * 100 / 60) as u8))
}

/// Switches the microphone's echo cancellation, noise suppression and gain control on or
/// off, for the call in progress and the next ones.
#[tauri::command]
async fn set_audio_processing(
    state: State<'_, AppState>,
    settings: AudioProcessing,
) -> UiResult<()> {
    *state
        .audio_processing
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = settings;
    if let Some(call) = state.call.lock().await.as_ref() {
        call.set_audio_processing(state.processing());
    }
    Ok(())
}

#[tauri::command]
async fn set_muted(state: State<'_, AppState>, kind: TrackKind, muted: bool) -> UiResult<()> {
    match state.call.lock().await.as_ref() {
        Some(call) => {
            call.set_muted(kind, muted);
            if kind == TrackKind::Audio {
                state
                    .mic_muted
                    .store(muted, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        }
        None => Err(UiError::new("not_in_call", "You are not in a meeting.")),
    }
}

/// The room of a `convoconnect://join/<room id>` link among command-line arguments.
fn link_in(args: &[String]) -> Option<String> {
    args.iter().find_map(|a| {
        let rest = a.strip_prefix("convoconnect://join/")?;
        let id = rest.trim_end_matches('/');
        let ok = id.len() == 12
            && id.split('-').map(|p| p.len()).eq([3, 4, 3])
            && id.chars().all(|c| c.is_ascii_lowercase() || c == '-');
        ok.then(|| id.to_string())
    })
}

/// Opens a linked room: kept for the ui (which may still be signing in) and announced to it.
fn open_link(app: &tauri::AppHandle, room: String) {
    use tauri::Emitter;
    *lock(&app.state::<AppState>().pending_link) = Some(room.clone());
    if let Some(w) = app.get_webview_window("main") {
        let _ = w.show();
        let _ = w.unminimize();
        let _ = w.set_focus();
    }
    let _ = app.emit("open-room", room);
}

/// The room of a link that opened the app, once (the ui asks after signing in).
#[tauri::command]
async fn take_pending_link(state: State<'_, AppState>) -> UiResult<Option<String>> {
    Ok(lock(&state.pending_link).take())
}

fn tray(app: &tauri::App) -> tauri::Result<()> {
    use tauri::menu::{Menu, MenuItem};
    use tauri::tray::TrayIconBuilder;
    let open = MenuItem::with_id(app, "open", "Open ConvoConnect", true, None::<&str>)?;
    let mute = MenuItem::with_id(app, "mute", "Mute / unmute microphone", true, None::<&str>)?;
    // Scheduling comes with its own issue; until then there is nothing to join from here.
    let next = MenuItem::with_id(app, "next", agenda::NO_MEETING, false, None::<&str>)?;
    app.state::<AppState>().agenda.set_tray_item(next.clone());
    let quit = MenuItem::with_id(app, "quit", "Quit", true, None::<&str>)?;
    let menu = Menu::with_items(app, &[&open, &mute, &next, &quit])?;
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
            "mute" => {
                let app = app.clone();
                tauri::async_runtime::spawn(async move {
                    let state = app.state::<AppState>();
                    if let Some(call) = state.call.lock().await.as_ref() {
                        let muted = !state.mic_muted.load(std::sync::atomic::Ordering::Relaxed);
                        call.set_muted(TrackKind::Audio, muted);
                        state
                            .mic_muted
                            .store(muted, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
            "next" => {
                if let Some(room) = app.state::<AppState>().agenda.next_room() {
                    open_link(app, room);
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
    // The video channel (a loopback WebSocket) runs on Tauri's runtime for the app's life.
    let video = tauri::async_runtime::block_on(frame_ws::start(frames.clone()))
        .inspect_err(|e| tracing::error!(error = %e, "video channel not opened"))
        .ok();
    let state = AppState {
        video,
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
        devices: std::sync::Mutex::new(Chosen::default()),
        speaker: std::sync::Mutex::new(None),
        mic_test: std::sync::Mutex::new(None),
        preview: std::sync::Mutex::new(None),
        in_call: std::sync::atomic::AtomicBool::new(false),
        mic_muted: std::sync::atomic::AtomicBool::new(false),
        audio_processing: std::sync::Mutex::new(AudioProcessing::default()),
        effects: convo_client::effects::EffectsControl::default(),
        pending_link: std::sync::Mutex::new(None),
        cancel_join: std::sync::Mutex::new(None),
        agenda: agenda::Agenda::default(),
    };
    let result = tauri::Builder::default()
        // One instance: a second launch (e.g. by a convoconnect:// link) hands its arguments
        // to the running app and exits.
        .plugin(tauri_plugin_single_instance::init(
            |app, argv, _cwd| match link_in(&argv) {
                Some(room) => open_link(app, room),
                None => {
                    if let Some(w) = app.get_webview_window("main") {
                        let _ = w.show();
                        let _ = w.set_focus();
                    }
                }
            },
        ))
        .plugin(tauri_plugin_notification::init())
        .manage(state)
        .on_window_event(|window, event| {
            // Closing the window during a call, or with a meeting coming up, keeps the app in
            // the tray (and the call going, and the reminder).
            let state = window.state::<AppState>();
            if let tauri::WindowEvent::CloseRequested { api, .. } = event
                && (state.in_call.load(std::sync::atomic::Ordering::Relaxed)
                    || state.agenda.meeting_soon())
            {
                api.prevent_close();
                let _ = window.hide();
            }
        })
        .setup(|app| {
            // Started by a link.
            let args: Vec<String> = std::env::args().collect();
            if let Some(room) = link_in(&args) {
                *lock(&app.state::<AppState>().pending_link) = Some(room);
            }
            effects::report_errors(app.handle());
            // A missing tray host (a bare X server, some desktops) is not a reason to fail.
            if let Err(e) = tray(app) {
                tracing::warn!(error = %e, "no tray icon");
            }
            // Upcoming meetings: reminders and the tray's next meeting.
            tauri::async_runtime::spawn(agenda::run(app.handle().clone()));
            // Video is drawn on 2D canvases: WebKitGTK's accelerated compositing brings nothing
            // for that and, where it falls back to software GL, costs a core and more
            // (measured under Xvfb: 160 % of a core for one 15 fps tile, 7 % without).
            // CONVO_GPU=1 keeps WebKit's default.
            #[cfg(target_os = "linux")]
            if std::env::var("CONVO_GPU").as_deref() != Ok("1")
                && let Some(w) = app.get_webview_window("main")
            {
                let _ = w.with_webview(|wv| {
                    use webkit2gtk::{HardwareAccelerationPolicy, SettingsExt, WebViewExt};
                    if let Some(settings) = wv.inner().settings() {
                        settings
                            .set_hardware_acceleration_policy(HardwareAccelerationPolicy::Never);
                    }
                });
            }
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            video_channel,
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
            set_audio_processing,
            effects::set_video_effects,
            effects::video_backgrounds,
            effects::save_background,
            list_devices,
            choose_devices,
            start_pre_join,
            stop_pre_join_cmd,
            mic_level,
            call_stats,
            take_pending_link,
            list_screens,
            share_screen,
            send_chat,
            chat_history,
            cancel_join,
            answer_knock,
            remove_participant,
            set_view,
            upcoming_meetings,
            schedule_meeting,
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

    /// Every command the app registers is declared to Tauri (build.rs) and granted to the
    /// main window (capabilities/default.json): one left out fails in the ui as "not
    /// allowed", which a `.catch` may hide.
    #[test]
    fn every_command_is_declared_and_granted() {
        let source = include_str!("lib.rs");
        let start = source.find("generate_handler![").expect("the handler list") + 18;
        let end = start + source[start..].find(']').expect("its end");
        let build = include_str!("../build.rs");
        let caps = include_str!("../capabilities/default.json");
        let commands: Vec<&str> = source[start..end]
            .split(',')
            .map(|c| c.trim().rsplit("::").next().unwrap_or_default())
            .filter(|c| !c.is_empty())
            .collect();
        assert!(commands.len() > 30, "{commands:?}");
        for c in commands {
            assert!(
                build.contains(&format!("\"{c}\"")),
                "{c} is not in build.rs's COMMANDS"
            );
            let grant = format!("\"allow-{}\"", c.replace('_', "-"));
            assert!(
                caps.contains(&grant),
                "{c} is not granted in capabilities/default.json"
            );
        }
    }

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
    fn links_name_rooms() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            link_in(&args(&[
                "convo-desktop",
                "convoconnect://join/abc-defg-hij"
            ])),
            Some("abc-defg-hij".into())
        );
        assert_eq!(
            link_in(&args(&["x", "convoconnect://join/abc-defg-hij/"])).as_deref(),
            Some("abc-defg-hij")
        );
        assert_eq!(
            link_in(&args(&["x", "convoconnect://join/../../etc"])),
            None
        );
        assert_eq!(
            link_in(&args(&["x", "convoconnect://join/ABC-defg-hij"])),
            None
        );
        assert_eq!(
            link_in(&args(&["x", "https://evil/join/abc-defg-hij"])),
            None
        );
        assert_eq!(link_in(&args(&["x"])), None);
    }

    #[test]
    fn notifications_say_who_and_what() {
        use convo_shared::chat::ChatMessage;
        use convo_shared::signal::ServerMessage;
        use convo_shared::users::UserSummary;
        let ann = UserSummary {
            id: "u-ann".into(),
            username: "ann".into(),
            display_name: "Ann".into(),
            avatar_url: None,
        };
        let signal = |message| CallEvent::Signal { message };
        let knock = signal(ServerMessage::Knocking {
            request_id: "r1".into(),
            user: ann.clone(),
        });
        assert_eq!(
            notification_for(&knock, "u-me").as_deref(),
            Some("Ann is waiting to join")
        );
        let admitted = signal(ServerMessage::Admitted {
            room_id: "abc-defg-hij".into(),
        });
        assert_eq!(
            notification_for(&admitted, "u-me").as_deref(),
            Some("The host let you into the meeting")
        );
        let chat = |user: &UserSummary, text: &str| {
            signal(ServerMessage::ChatMessage {
                message: ChatMessage {
                    id: "m".into(),
                    room_id: "abc-defg-hij".into(),
                    user: user.clone(),
                    text: text.into(),
                    sent_at: time::OffsetDateTime::UNIX_EPOCH,
                },
            })
        };
        assert_eq!(
            notification_for(&chat(&ann, "hi"), "u-me").as_deref(),
            Some("Ann: hi")
        );
        // My own messages, and the rest of the call's events, are not news.
        assert_eq!(notification_for(&chat(&ann, "hi"), "u-ann"), None);
        let long = notification_for(&chat(&ann, &"é".repeat(500)), "u-me").expect("a notification");
        assert!(long.ends_with('…') && long.chars().count() == "Ann: ".len() + 141);
        let speaker = signal(ServerMessage::ActiveSpeaker {
            participant_id: None,
        });
        assert_eq!(notification_for(&speaker, "u-me"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn notification_text_shows_markup_as_written() {
        assert_eq!(
            notification_text("<b>Eve</b> & <a href=\"x\">co</a>: 1 < 2"),
            "&lt;b&gt;Eve&lt;/b&gt; &amp; &lt;a href=\"x\"&gt;co&lt;/a&gt;: 1 &lt; 2"
        );
        assert_eq!(notification_text("plain"), "plain");
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
