import { describe, expect, it } from "vitest";
import {
  featured,
  quality,
  humanError,
  initialCall,
  reduceCall,
  roomIdFrom,
  shortcut,
  tiles,
  type ParticipantInfo,
} from "../src/store";

const person = (id: string, name: string): ParticipantInfo => ({
  participant_id: id,
  user: { id: `u-${id}`, username: name.toLowerCase(), display_name: name },
  audio_muted: false,
  video_muted: false,
  tracks: [],
});

describe("call state", () => {
  it("follows people joining, publishing, speaking and leaving", () => {
    let s = initialCall("me", [person("me", "Me"), person("a", "Ada")], false, false);
    s = reduceCall(s, { type: "signal", message: { type: "participant_joined", participant: person("b", "Bo") } });
    expect(Object.keys(s.participants).sort()).toEqual(["a", "b", "me"]);
    expect(s.notice).toBe("Bo joined");

    s = reduceCall(s, { type: "track_started", participant_id: "a", track_id: "a:video", kind: "video" });
    s = reduceCall(s, { type: "track_started", participant_id: "a", track_id: "a:audio", kind: "audio" });
    s = reduceCall(s, { type: "track_started", participant_id: "b", track_id: "b:screen", kind: "screen" });
    // Screens first, audio has no tile, my own view last.
    expect(tiles(s).map((t) => t.trackId)).toEqual(["b:screen", "a:video", "local:video"]);
    expect(featured(s)?.trackId).toBe("b:screen");

    s = reduceCall(s, { type: "signal", message: { type: "active_speaker", participant_id: "a" } });
    expect(s.speaker).toBe("a");

    s = reduceCall(s, { type: "signal", message: { type: "participant_left", participant_id: "a", reason: "left" } });
    expect(s.participants.a).toBeUndefined();
    expect(s.speaker).toBeNull();
    expect(tiles(s).map((t) => t.trackId)).toEqual(["b:screen", "local:video"]);
    expect(s.notice).toBe("Ada left");
  });

  it("shows who is reconnecting, and my own reconnection", () => {
    let s = initialCall("me", [person("me", "Me"), person("a", "Ada")], false, false);
    s = reduceCall(s, { type: "track_started", participant_id: "a", track_id: "a:video", kind: "video" });
    s = reduceCall(s, { type: "signal", message: { type: "participant_reconnecting", participant_id: "a", reconnecting: true } });
    expect(s.participants.a).toBeDefined();
    expect(tiles(s)[0]).toMatchObject({ trackId: "a:video", reconnecting: true });
    s = reduceCall(s, { type: "signal", message: { type: "participant_reconnecting", participant_id: "a", reconnecting: false } });
    expect(tiles(s)[0].reconnecting).toBe(false);
    s = reduceCall(s, { type: "connection", reconnecting: true });
    expect(s.reconnecting).toBe(true);
    expect(s.notice).toBe("Connection lost. Reconnecting…");
    s = reduceCall(s, { type: "connection", reconnecting: false });
    expect(s.reconnecting).toBe(false);
    expect(s.notice).toBe("Reconnected");
  });

  it("says when I talk while muted, and stops saying it", () => {
    let s = initialCall("me", [person("me", "Me")], true, false);
    expect(s.talkingMuted).toBe(false);
    s = reduceCall(s, { type: "talking_while_muted", talking: true });
    expect(s.talkingMuted).toBe(true);
    s = reduceCall(s, { type: "talking_while_muted", talking: false });
    expect(s.talkingMuted).toBe(false);
  });

  it("keeps mute state for others and for me", () => {
    let s = initialCall("me", [person("me", "Me"), person("a", "Ada")], false, false);
    s = reduceCall(s, {
      type: "signal",
      message: { type: "track_published", participant_id: "a", track: { track_id: "a:audio", kind: "audio", muted: false } },
    });
    s = reduceCall(s, { type: "signal", message: { type: "mute_changed", participant_id: "a", kind: "audio", muted: true } });
    expect(s.participants.a.audio_muted).toBe(true);
    expect(s.participants.a.tracks[0].muted).toBe(true);
    expect(s.micMuted).toBe(false);
    s = reduceCall(s, { type: "signal", message: { type: "mute_changed", participant_id: "me", kind: "video", muted: true } });
    expect(s.camMuted).toBe(true);
  });

  it("drops a track when it is unpublished and ends when told", () => {
    let s = initialCall("me", [person("me", "Me"), person("a", "Ada")], false, false);
    s = reduceCall(s, { type: "track_started", participant_id: "a", track_id: "a:video", kind: "video" });
    s = reduceCall(s, { type: "signal", message: { type: "track_unpublished", participant_id: "a", track_id: "a:video" } });
    expect(tiles(s).map((t) => t.trackId)).toEqual(["local:video"]);
    expect(featured(s)).toBeNull();
    s = reduceCall(s, { type: "ended", reason: "replaced" });
    expect(s.ended).toBe("replaced");
    // Unknown messages change nothing.
    expect(reduceCall(s, { type: "signal", message: { type: "pong", nonce: 1 } })).toBe(s);
  });
});

describe("screen sharing", () => {
  it("hides a stopped share and shows it again when it resumes", () => {
    let s = initialCall("me", [person("me", "Me"), person("a", "Ada")], false, false);
    const screen = { track_id: "a:screen", kind: "screen" as const, muted: false };
    s = reduceCall(s, { type: "signal", message: { type: "track_published", participant_id: "a", track: screen } });
    s = reduceCall(s, { type: "track_started", participant_id: "a", track_id: "a:screen", kind: "screen" });
    expect(featured(s)?.trackId).toBe("a:screen");
    // Ada stops sharing: the track stays, muted, and leaves the stage.
    s = reduceCall(s, { type: "signal", message: { type: "mute_changed", participant_id: "a", kind: "screen", muted: true } });
    expect(tiles(s).map((t) => t.trackId)).toEqual(["local:video"]);
    expect(featured(s)).toBeNull();
    s = reduceCall(s, { type: "signal", message: { type: "mute_changed", participant_id: "a", kind: "screen", muted: false } });
    expect(featured(s)?.trackId).toBe("a:screen");
  });

  it("shows my own share as a small tile, never as the featured one", () => {
    let s = initialCall("me", [person("me", "Me"), person("a", "Ada")], false, false);
    s = reduceCall(s, { type: "track_started", participant_id: "a", track_id: "a:video", kind: "video" });
    s = reduceCall(s, { type: "local_share", on: true });
    expect(tiles(s).map((t) => t.trackId)).toEqual(["a:video", "local:video", "local:screen"]);
    expect(featured(s)?.trackId).toBe("a:video");
    s = reduceCall(s, { type: "share_ended", reason: "the window was closed or hidden" });
    expect(s.sharing).toBe(false);
    expect(s.notice).toBe("Screen sharing stopped: the window was closed or hidden.");
    expect(tiles(s).map((t) => t.trackId)).toEqual(["a:video", "local:video"]);
  });

  it("says which source failed and turns it off", () => {
    let s = initialCall("me", [person("me", "Me")], false, false);
    s = reduceCall(s, { type: "source_failed", kind: "video", reason: "no camera is connected" });
    expect(s.camMuted).toBe(true);
    expect(s.micMuted).toBe(false);
    expect(s.notice).toContain("Your camera is not working (no camera is connected)");
    s = reduceCall(s, { type: "source_failed", kind: "audio", reason: "device busy" });
    expect(s.micMuted).toBe(true);
    expect(s.notice).toContain("pick another microphone under Devices, then unmute");
  });
});

describe("chat", () => {
  const msg = (id: string, user: string, text: string, at: string) => ({
    id,
    room_id: "r",
    user: { id: user, username: user, display_name: user.toUpperCase() },
    text,
    sent_at: at,
  });

  it("keeps each message once, in order, and counts what others sent until read", () => {
    let s = initialCall("me", [person("a", "Ada")], false, false, "u-me");
    s = reduceCall(s, { type: "signal", message: { type: "chat_message", message: msg("2", "u-a", "second", "2026-11-26T10:00:02Z") } });
    s = reduceCall(s, { type: "signal", message: { type: "chat_message", message: msg("3", "u-me", "mine", "2026-11-26T10:00:03Z") } });
    // Mine do not count as unread.
    expect(s.unread).toBe(1);
    // History arrives late and overlaps what came live.
    s = reduceCall(s, {
      type: "chat_history",
      messages: [msg("1", "u-a", "first", "2026-11-26T10:00:01Z"), msg("2", "u-a", "second", "2026-11-26T10:00:02Z")],
    });
    expect(s.chat.map((m) => m.text)).toEqual(["first", "second", "mine"]);
    // The same message twice changes nothing.
    const again = reduceCall(s, { type: "signal", message: { type: "chat_message", message: msg("2", "u-a", "second", "2026-11-26T10:00:02Z") } });
    expect(again).toBe(s);
    s = reduceCall(s, { type: "chat_seen" });
    expect(s.unread).toBe(0);
  });
});

describe("waiting room", () => {
  it("lists who knocks, once, until a host answers", () => {
    let s = initialCall("me", [], false, false, "u-me");
    const knock = { type: "knocking", request_id: "r1", user: { id: "u-a", username: "ada", display_name: "Ada" } };
    s = reduceCall(s, { type: "signal", message: knock });
    s = reduceCall(s, { type: "signal", message: knock });
    expect(s.knocks.map((k) => k.user.display_name)).toEqual(["Ada"]);
    expect(s.notice).toBe("Ada is waiting to join");
    s = reduceCall(s, { type: "signal", message: { type: "knock_resolved", request_id: "r1", admitted: true } });
    expect(s.knocks).toEqual([]);
  });
});

describe("helpers", () => {
  it("finds room ids in links", () => {
    expect(roomIdFrom("abc-defg-hij")).toBe("abc-defg-hij");
    expect(roomIdFrom(" http://h:8080/join/abc-defg-hij/ ")).toBe("abc-defg-hij");
    expect(roomIdFrom("convoconnect://join/abc-defg-hij")).toBe("abc-defg-hij");
    expect(roomIdFrom("not a room")).toBeNull();
    expect(roomIdFrom("")).toBeNull();
  });

  it("maps shortcuts", () => {
    const k = (key: string, mods: Partial<{ ctrlKey: boolean; metaKey: boolean; shiftKey: boolean }> = {}) =>
      shortcut({ key, ctrlKey: false, metaKey: false, shiftKey: false, ...mods });
    expect(k("d", { ctrlKey: true })).toBe("toggle-mic");
    expect(k("E", { metaKey: true })).toBe("toggle-cam");
    expect(k("l", { ctrlKey: true, shiftKey: true })).toBe("leave");
    expect(k("l", { ctrlKey: true })).toBeNull();
    expect(k("d")).toBeNull();
  });

  it("turns failures into sentences, never raw objects", () => {
    expect(humanError({ code: "x", message: "The meeting is full." })).toBe("The meeting is full.");
    expect(humanError("Cannot reach the server.")).toBe("Cannot reach the server.");
    expect(humanError({ weird: true })).toBe("Something went wrong. Please try again.");
    expect(humanError(undefined)).toBe("Something went wrong. Please try again.");
  });
});

describe("connection quality", () => {
  const r = (packets: number, lost = 0, freezes = 0) => ({
    track_id: "a:video",
    kind: "video",
    packets,
    frames_decoded: packets / 5,
    freezes,
    lost_packets: lost,
    concealed_frames: 0,
  });
  it("reads the change since the last sample", () => {
    expect(quality(null, [r(0)])).toBe("connecting");
    expect(quality([r(100)], [r(200)])).toBe("good");
    expect(quality([r(100)], [r(200, 1)])).toBe("fair");
    expect(quality([r(100)], [r(200, 10)])).toBe("poor");
    expect(quality([r(100, 0, 1)], [r(200, 0, 2)])).toBe("poor");
    // Old losses do not count again.
    expect(quality([r(100, 10)], [r(200, 10)])).toBe("good");
  });
  it("is connected, not connecting, with nothing to receive", () => {
    expect(quality(null, [])).toBe("connected");
    expect(quality([r(100)], [])).toBe("connected");
  });
});
