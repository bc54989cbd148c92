//! Tauri's build step, with the app's own commands declared so that capabilities can grant
//! the webview exactly those (see `capabilities/default.json`).

const COMMANDS: &[&str] = &[
    "video_channel",
    "app_info",
    "set_server",
    "register",
    "sign_in",
    "restore_session",
    "sign_out",
    "forgot_password",
    "list_rooms",
    "create_room",
    "get_room",
    "join_call",
    "leave_call",
    "set_muted",
    "list_devices",
    "choose_devices",
    "start_pre_join",
    "stop_pre_join_cmd",
    "mic_level",
    "call_stats",
    "take_pending_link",
    "list_screens",
    "share_screen",
    "send_chat",
    "chat_history",
    "cancel_join",
    "answer_knock",
    "upcoming_meetings",
    "schedule_meeting",
    "set_audio_processing",
    "remove_participant",
    "set_view",
    "set_video_effects",
    "video_backgrounds",
    "save_background",
];

fn main() {
    let attrs = tauri_build::Attributes::new()
        .app_manifest(tauri_build::AppManifest::new().commands(COMMANDS));
    if let Err(e) = tauri_build::try_build(attrs) {
        panic!("tauri build step failed: {e:#}");
    }
}
