// The call's state as the ui shows it, built from the engine's events by a pure reducer
// (tested without a window), and the helpers the screens share.

export type TrackKind = "audio" | "video" | "screen";

export interface TrackInfo {
  track_id: string;
  kind: TrackKind;
  muted: boolean;
}

export interface ParticipantInfo {
  participant_id: string;
  user: { id: string; username: string; display_name: string };
  role?: "host" | "member";
  audio_muted: boolean;
  video_muted: boolean;
  tracks: TrackInfo[];
  /** Watching through WHEP (a browser or player), not in the call. */
  viewer?: boolean;
  /** Their connection dropped; they keep their place while they get it back. */
  reconnecting?: boolean;
}

/** A chat message (`ChatMessage` in shared/src/chat.rs). */
export interface ChatMessage {
  id: string;
  room_id: string;
  user: { id: string; username: string; display_name: string };
  text: string;
  sent_at: string;
}

/** What the engine sends over the call's channel (`CallEvent` in client-tauri/core). */
export type CallEvent =
  | { type: "track_started"; participant_id: string; track_id: string; kind: TrackKind }
  | { type: "signal"; message: ServerMessage }
  | { type: "source_failed"; kind: TrackKind; reason: string }
  | { type: "share_ended"; reason: string }
  | { type: "ended"; reason: string }
  | { type: "connection"; reconnecting: boolean }
  | { type: "talking_while_muted"; talking: boolean }
  // Not from the engine: the ui's own record that sharing started or stopped, the chat so
  // far (loaded when the call opens), and that the chat panel was read.
  | { type: "local_share"; on: boolean }
  | { type: "chat_history"; messages: ChatMessage[] }
  | { type: "chat_seen" };

export type ServerMessage =
  | { type: "participant_joined"; participant: ParticipantInfo }
  | { type: "participant_left"; participant_id: string; reason: string }
  | { type: "participant_reconnecting"; participant_id: string; reconnecting: boolean }
  | { type: "track_published"; participant_id: string; track: TrackInfo }
  | { type: "track_unpublished"; participant_id: string; track_id: string }
  | { type: "mute_changed"; participant_id: string; kind: TrackKind; muted: boolean }
  | { type: "active_speaker"; participant_id: string | null }
  | { type: "chat_message"; message: ChatMessage }
  | { type: "waiting"; room_id: string }
  | { type: "admitted"; room_id: string }
  | { type: "knocking"; request_id: string; user: Knock["user"] }
  | { type: "knock_resolved"; request_id: string; admitted: boolean }
  | { type: "error"; code: string; message: string }
  | { type: string; [k: string]: unknown };

/** Someone in the waiting room (shown to hosts). */
export interface Knock {
  request_id: string;
  user: { id: string; username: string; display_name: string };
}

export interface Tile {
  participantId: string;
  name: string;
  /** The participant is reconnecting (their picture may be frozen). */
  reconnecting?: boolean;
  trackId: string;
  kind: "video" | "screen";
  local: boolean;
}

export interface CallState {
  me: string;
  /** My account's id (chat messages carry user ids). */
  myUserId: string;
  participants: Record<string, ParticipantInfo>;
  /** Remote tracks whose media is arriving. */
  receiving: Record<string, { participantId: string; kind: TrackKind }>;
  speaker: string | null;
  micMuted: boolean;
  camMuted: boolean;
  /** Whether I am sharing my screen. */
  sharing: boolean;
  /** The room's chat, oldest first, and how many arrived from others since it was read. */
  chat: ChatMessage[];
  unread: number;
  /** Who waits in the waiting room (hosts only hear of them). */
  knocks: Knock[];
  ended: string | null;
  notice: string | null;
  /** My connection to the server dropped and the call is getting it back. */
  reconnecting: boolean;
  /** My microphone is muted and I am talking. */
  talkingMuted: boolean;
}

export function initialCall(
  me: string,
  participants: ParticipantInfo[],
  micMuted: boolean,
  camMuted: boolean,
  myUserId = "",
): CallState {
  const map: Record<string, ParticipantInfo> = {};
  for (const p of participants) map[p.participant_id] = p;
  return { me, myUserId, participants: map, receiving: {}, speaker: null, micMuted, camMuted, sharing: false, chat: [], unread: 0, knocks: [], ended: null, notice: null, reconnecting: false, talkingMuted: false };
}

function withParticipant(
  s: CallState,
  id: string,
  f: (p: ParticipantInfo) => ParticipantInfo,
): CallState {
  const p = s.participants[id];
  if (!p) return s;
  return { ...s, participants: { ...s.participants, [id]: f(p) } };
}

export function reduceCall(s: CallState, e: CallEvent): CallState {
  switch (e.type) {
    case "track_started":
      return { ...s, receiving: { ...s.receiving, [e.track_id]: { participantId: e.participant_id, kind: e.kind } } };
    case "ended":
      return { ...s, ended: e.reason };
    case "connection":
      return {
        ...s,
        reconnecting: e.reconnecting,
        notice: e.reconnecting ? "Connection lost. Reconnecting…" : s.reconnecting ? "Reconnected" : s.notice,
      };
    case "talking_while_muted":
      return { ...s, talkingMuted: e.talking };
    case "local_share":
      return { ...s, sharing: e.on };
    case "chat_history":
      return { ...s, chat: mergeChat(s.chat, e.messages) };
    case "chat_seen":
      return { ...s, unread: 0 };
    case "share_ended":
      return { ...s, sharing: false, notice: `Screen sharing stopped: ${e.reason}.` };
    case "source_failed":
      if (e.kind === "audio") {
        return { ...s, micMuted: true, notice: `Your microphone is not working (${e.reason}). Others cannot hear you: pick another microphone under Devices, then unmute.` };
      }
      return { ...s, camMuted: true, notice: `Your camera is not working (${e.reason}). Others cannot see you: pick another camera under Devices, then start the camera.` };
    case "signal":
      return reduceSignal(s, e.message);
  }
  return s;
}

function reduceSignal(s: CallState, m: ServerMessage): CallState {
  switch (m.type) {
    case "participant_joined": {
      const p = (m as { participant: ParticipantInfo }).participant;
      return { ...s, participants: { ...s.participants, [p.participant_id]: p }, notice: `${p.user.display_name} joined` };
    }
    case "participant_left": {
      const id = (m as { participant_id: string }).participant_id;
      const name = s.participants[id]?.user.display_name;
      const participants = { ...s.participants };
      delete participants[id];
      const receiving = Object.fromEntries(Object.entries(s.receiving).filter(([, r]) => r.participantId !== id));
      return {
        ...s,
        participants,
        receiving,
        speaker: s.speaker === id ? null : s.speaker,
        notice: name ? `${name} left` : s.notice,
      };
    }
    case "participant_reconnecting": {
      const { participant_id, reconnecting } = m as { participant_id: string; reconnecting: boolean };
      return withParticipant(s, participant_id, (p) => ({ ...p, reconnecting }));
    }
    case "track_published": {
      const { participant_id, track } = m as { participant_id: string; track: TrackInfo };
      return withParticipant(s, participant_id, (p) => ({
        ...p,
        tracks: [...p.tracks.filter((t) => t.track_id !== track.track_id), track],
      }));
    }
    case "track_unpublished": {
      const { participant_id, track_id } = m as { participant_id: string; track_id: string };
      const receiving = { ...s.receiving };
      delete receiving[track_id];
      return withParticipant({ ...s, receiving }, participant_id, (p) => ({
        ...p,
        tracks: p.tracks.filter((t) => t.track_id !== track_id),
      }));
    }
    case "mute_changed": {
      const { participant_id, kind, muted } = m as { participant_id: string; kind: TrackKind; muted: boolean };
      let next = s;
      if (participant_id === s.me) {
        next = kind === "audio" ? { ...s, micMuted: muted } : kind === "video" ? { ...s, camMuted: muted } : s;
      }
      return withParticipant(next, participant_id, (p) => ({
        ...p,
        audio_muted: kind === "audio" ? muted : p.audio_muted,
        video_muted: kind === "video" ? muted : p.video_muted,
        tracks: p.tracks.map((t) => (t.kind === kind ? { ...t, muted } : t)),
      }));
    }
    case "active_speaker":
      return { ...s, speaker: (m as { participant_id: string | null }).participant_id };
    case "knocking": {
      const k = m as unknown as Knock;
      if (s.knocks.some((x) => x.request_id === k.request_id)) return s;
      return { ...s, knocks: [...s.knocks, { request_id: k.request_id, user: k.user }], notice: `${k.user.display_name} is waiting to join` };
    }
    case "knock_resolved": {
      const id = (m as { request_id: string }).request_id;
      return { ...s, knocks: s.knocks.filter((k) => k.request_id !== id) };
    }
    case "chat_message": {
      const msg = (m as { message: ChatMessage }).message;
      if (s.chat.some((c) => c.id === msg.id)) return s;
      const fromOthers = msg.user.id !== s.myUserId;
      return { ...s, chat: mergeChat(s.chat, [msg]), unread: s.unread + (fromOthers ? 1 : 0) };
    }
    case "error":
      return { ...s, notice: (m as { message: string }).message };
  }
  return s;
}

/** Chat messages together, each once, in the order they were sent. */
export function mergeChat(a: ChatMessage[], b: ChatMessage[]): ChatMessage[] {
  const byId = new Map<string, ChatMessage>();
  for (const m of [...a, ...b]) byId.set(m.id, m);
  return [...byId.values()].sort((x, y) => (x.sent_at === y.sent_at ? x.id.localeCompare(y.id) : x.sent_at < y.sent_at ? -1 : 1));
}

/** The video tiles to show: screens first (shown large), then cameras; my own views last. */
export function tiles(s: CallState): Tile[] {
  const out: Tile[] = [];
  for (const [trackId, r] of Object.entries(s.receiving)) {
    if (r.kind === "audio") continue;
    const p = s.participants[r.participantId];
    // A stopped share stays published, muted, until shared again.
    if (r.kind === "screen" && p?.tracks.some((t) => t.track_id === trackId && t.muted)) continue;
    out.push({
      participantId: r.participantId,
      name: p?.user.display_name ?? "Guest",
      reconnecting: p?.reconnecting ?? false,
      trackId,
      kind: r.kind,
      local: false,
    });
  }
  out.sort((a, b) => (a.kind === b.kind ? a.name.localeCompare(b.name) : a.kind === "screen" ? -1 : 1));
  out.push({ participantId: s.me, name: "You", trackId: "local:video", kind: "video", local: true });
  if (s.sharing) out.push({ participantId: s.me, name: "You are presenting", trackId: "local:screen", kind: "screen", local: true });
  return out;
}

/** The tile to show large in the speaker layout: a screen share, else whoever speaks. */
export function featured(s: CallState): Tile | null {
  const all = tiles(s);
  return (
    all.find((t) => t.kind === "screen" && !t.local) ??
    all.find((t) => t.participantId === s.speaker && !t.local) ??
    all.find((t) => !t.local) ??
    null
  );
}

/** A room id from what people paste: an id, a join link or a convoconnect:// link. */
export function roomIdFrom(input: string): string | null {
  const t = input.trim().replace(/\/+$/, "");
  const id = t.split("/").pop() ?? "";
  return /^[a-z]{3}-[a-z]{4}-[a-z]{3}$/.test(id) ? id : null;
}

/** Keyboard shortcuts: what a key press asks for, if anything. */
export type Shortcut = "toggle-mic" | "toggle-cam" | "leave" | null;

export function shortcut(e: { key: string; ctrlKey: boolean; metaKey: boolean; shiftKey: boolean }): Shortcut {
  const mod = e.ctrlKey || e.metaKey;
  if (!mod) return null;
  const k = e.key.toLowerCase();
  if (k === "d") return "toggle-mic";
  if (k === "e") return "toggle-cam";
  if (k === "l" && e.shiftKey) return "leave";
  return null;
}

/** The message people see for a failure: what went wrong and what to do. */
export function humanError(e: unknown): string {
  if (e && typeof e === "object" && "message" in e && typeof (e as { message: unknown }).message === "string") {
    const m = (e as { message: string }).message;
    if (m.trim()) return m;
  }
  if (typeof e === "string" && e.trim()) return e;
  return "Something went wrong. Please try again.";
}

/** What the engine measured of one remote track (`TrackReport` in client-tauri/core). */
export interface TrackReport {
  track_id: string;
  kind: string;
  packets: number;
  frames_decoded: number;
  freezes: number;
  lost_packets: number;
  concealed_frames: number;
}

export type Quality = "connecting" | "connected" | "good" | "fair" | "poor";

/**
 * Connection quality between two samples of the call's track reports: poor when video froze
 * or much was lost since the last sample, fair when a little was lost, good otherwise;
 * connecting while tracks are expected but nothing of them has arrived; connected when there
 * is nothing to receive (alone in the meeting, or nobody sends) — not "connecting" for as
 * long as one waits for the others.
 */
export function quality(prev: TrackReport[] | null, now: TrackReport[]): Quality {
  const sum = (rs: TrackReport[] | null, f: (r: TrackReport) => number) => (rs ?? []).reduce((a, r) => a + f(r), 0);
  const packets = sum(now, (r) => r.packets) - sum(prev, (r) => r.packets);
  if (now.length === 0) return "connected";
  if (sum(now, (r) => r.packets) === 0) return "connecting";
  const lost = sum(now, (r) => r.lost_packets) - sum(prev, (r) => r.lost_packets);
  const freezes = sum(now, (r) => r.freezes) - sum(prev, (r) => r.freezes);
  if (freezes > 0 || (packets > 0 && lost / (packets + lost) > 0.05)) return "poor";
  if (lost > 0) return "fair";
  return "good";
}
