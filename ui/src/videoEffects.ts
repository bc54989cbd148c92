/** The camera's effects (background blur or picture, touch-up) and the self view's mirror:
 * kept in this window's storage, handed to the app at start and on every change. The effects
 * run in the app's engine on the camera's frames, so the self view shows what others see. */
import { useEffect, useState } from "react";
import { api, type VideoBackground, type VideoEffects } from "./api";

const KEY = "videoEffects";

/** What the picker shows and keeps: the engine's effects plus the self view's mirror. */
export type EffectsSettings = VideoEffects & { mirror: boolean };

export const NO_EFFECTS: EffectsSettings = { background: { kind: "none" }, touch_up: false, mirror: true };

export function loadEffects(): EffectsSettings {
  try {
    const saved = JSON.parse(localStorage.getItem(KEY) ?? "null") as Partial<EffectsSettings> | null;
    return { ...NO_EFFECTS, ...(saved ?? {}) };
  } catch {
    return NO_EFFECTS;
  }
}

/** The same background (the picker's radio buttons compare by this). */
export function backgroundKey(b: VideoBackground): string {
  switch (b.kind) {
    case "blur":
      return b.strong ? "blur-strong" : "blur";
    case "builtin":
      return `builtin:${b.id}`;
    case "file":
      return "file";
    default:
      return "none";
  }
}

/** The effects as kept; a change is sent to the app, and kept only if the app takes it (a
 * picture that does not read, or no segmentation model, comes back as `error`). */
export function useVideoEffects(): [EffectsSettings, (s: EffectsSettings) => Promise<void>, string | null] {
  const [settings, setSettings] = useState<EffectsSettings>(loadEffects);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    const off = api.onEffectsOff((e) => {
      setError(e.message);
      setSettings((s) => {
        const next = { ...s, background: { kind: "none" as const } };
        localStorage.setItem(KEY, JSON.stringify(next));
        return next;
      });
    });
    return () => {
      off.then((f) => f()).catch(() => {});
    };
  }, []);
  const change = async (next: EffectsSettings) => {
    try {
      await api.setVideoEffects({ background: next.background, touch_up: next.touch_up });
      setError(null);
      setSettings(next);
      localStorage.setItem(KEY, JSON.stringify(next));
    } catch (e) {
      const m = (e as { message?: string }).message ?? String(e);
      setError(m);
    }
  };
  return [settings, change, error];
}

/** At start: the kept effects go to the app (a kept picture that no longer reads is dropped). */
export function applyKeptEffects(): void {
  const s = loadEffects();
  api.setVideoEffects({ background: s.background, touch_up: s.touch_up }).catch(() => {
    localStorage.setItem(KEY, JSON.stringify({ ...s, background: { kind: "none" } }));
  });
}
