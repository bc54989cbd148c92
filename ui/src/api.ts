// The app's commands (client-tauri/app/src/lib.rs), typed. Every failure is an object with a
// `code` and a human `message`.
import { Channel, invoke } from "@tauri-apps/api/core";
import { listen } from "@tauri-apps/api/event";
import type { ChannelInfo } from "./video";
import type { CallEvent, ChatMessage, ParticipantInfo, TrackKind, TrackReport } from "./store";

/** What runs on the microphone before it is sent (`AudioProcessing` in client-tauri/core). */
/** What is behind the person on camera (`Background` in client-tauri/effects). */
export type VideoBackground =
  | { kind: "none" }
  | { kind: "blur"; strong: boolean }
  | { kind: "builtin"; id: string }
  | { kind: "file"; path: string };
/** The camera's effects (`Effects` in client-tauri/effects). */
export type VideoEffects = { background: VideoBackground; touch_up: boolean };
export type AudioProcessing = { echo_cancellation: boolean; noise_suppression: boolean; gain_control: boolean };

export interface User {
  id: string;
  username: string;
  email: string;
  display_name: string;
  role: string;
}

export interface Room {
  id: string;
  name: string;
  privacy: "public" | "private";
  host: { display_name: string };
  has_password: boolean;
  locked: boolean;
  waiting_room: boolean;
  join_url: string;
  my_role: string | null;
  participant_count: number;
}

export interface AppInfo {
  server: string;
  media: "devices" | "synthetic";
  version: string;
  keyring: boolean;
}

export interface DeviceInfo {
  id: string;
  name: string;
  default: boolean;
}

export interface Devices {
  inputs: DeviceInfo[];
  outputs: DeviceInfo[];
  cameras: DeviceInfo[];
  chosen: { input: string | null; output: string | null; camera: string | null };
}

export interface ScheduledMeeting {
  id: string;
  room_id: string;
  room_name: string;
  title: string;
  starts_at: string;
  duration_minutes: number;
  organizer: { id: string; display_name: string };
  invitees: { id: string; display_name: string }[];
  join_url: string;
}

export interface ScreenSource {
  id: string;
  name: string;
  kind: "monitor" | "window";
  width: number;
  height: number;
}

export const api = {
  appInfo: () => invoke<AppInfo>("app_info"),
  setServer: (url: string) => invoke<void>("set_server", { url }),
  register: (username: string, email: string, password: string, displayName: string) =>
    invoke<User>("register", { username, email, password, displayName }),
  signIn: (login: string, password: string) => invoke<User>("sign_in", { login, password }),
  restoreSession: () => invoke<User | null>("restore_session"),
  signOut: () => invoke<void>("sign_out"),
  forgotPassword: (email: string) => invoke<void>("forgot_password", { email }),
  listRooms: () => invoke<{ rooms: Room[] }>("list_rooms"),
  createRoom: (name: string, isPrivate: boolean, password: string, waitingRoom: boolean) =>
    invoke<Room>("create_room", { name, private: isPrivate, password: password || null, waitingRoom }),
  getRoom: (id: string) => invoke<Room>("get_room", { id }),
  joinCall: (
    roomId: string,
    password: string,
    audioMuted: boolean,
    videoMuted: boolean,
    onEvent: (e: CallEvent) => void,
  ) => {
    const channel = new Channel<CallEvent>();
    channel.onmessage = onEvent;
    return invoke<{ participant_id: string; participants: ParticipantInfo[] }>("join_call", {
      roomId,
      password: password || null,
      audioMuted,
      videoMuted,
      onEvent: channel,
    });
  },
  leaveCall: () => invoke<void>("leave_call"),
  setMuted: (kind: TrackKind, muted: boolean) => invoke<void>("set_muted", { kind, muted }),
  setAudioProcessing: (settings: AudioProcessing) => invoke<void>("set_audio_processing", { settings }),
  setVideoEffects: (effects: VideoEffects) => invoke<void>("set_video_effects", { effects }),
  videoBackgrounds: () => invoke<{ id: string; name: string }[]>("video_backgrounds"),
  saveBackground: (name: string, base64: string) => invoke<VideoBackground>("save_background", { name, base64 }),
  /** The effects were switched off while running (too slow, the model failed). */
  onEffectsOff: (f: (e: { code: string; message: string }) => void) => listen<{ code: string; message: string }>("effects-off", (e) => f(e.payload)),
  listDevices: () => invoke<Devices>("list_devices"),
  chooseDevices: (input: string | null, output: string | null, camera: string | null) =>
    invoke<void>("choose_devices", { input, output, camera }),
  listScreens: () => invoke<ScreenSource[]>("list_screens"),
  shareScreen: (source: string | null) => invoke<void>("share_screen", { source }),
  sendChat: (text: string) => invoke<void>("send_chat", { text }),
  cancelJoin: () => invoke<void>("cancel_join"),
  upcomingMeetings: () => invoke<{ meetings: ScheduledMeeting[] }>("upcoming_meetings"),
  scheduleMeeting: (request: { room_id: string; title: string; starts_at: string; duration_minutes: number; invitees: string[] }) =>
    invoke<ScheduledMeeting>("schedule_meeting", { request }),
  answerKnock: (requestId: string, admit: boolean) => invoke<void>("answer_knock", { requestId, admit }),
  removeParticipant: (roomId: string, userId: string) => invoke<void>("remove_participant", { roomId, userId }),
  setView: (trackId: string, width: number, height: number) => invoke<void>("set_view", { trackId, width, height }),
  chatHistory: (roomId: string) => invoke<{ messages: ChatMessage[]; before: string | null }>("chat_history", { roomId }),
  startPreJoin: () => invoke<{ microphone: string | null; camera: string | null }>("start_pre_join"),
  stopPreJoin: () => invoke<void>("stop_pre_join_cmd"),
  micLevel: () => invoke<number>("mic_level"),
  callStats: () => invoke<TrackReport[]>("call_stats"),
  takePendingLink: () => invoke<string | null>("take_pending_link"),
};

/** Where the newest frame of a track is served (Windows webviews use http://<scheme>.localhost). */
let channel: Promise<ChannelInfo> | null = null;

/** The app's video channel (asked once per page; asked again after a failure). */
export function videoChannel(): Promise<ChannelInfo> {
  if (!channel) {
    channel = invoke<ChannelInfo>("video_channel");
    channel.catch(() => {
      channel = null;
    });
  }
  return channel;
}
