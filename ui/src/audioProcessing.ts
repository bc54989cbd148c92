/** The microphone's processing (echo cancellation, noise suppression, gain control): on by
 * default, kept in this window's storage, handed to the app at start and on every change. */
import { useEffect, useState } from "react";
import { api, type AudioProcessing } from "./api";

const KEY = "audioProcessing";
export const ALL_ON: AudioProcessing = { echo_cancellation: true, noise_suppression: true, gain_control: true };

export function loadAudioProcessing(): AudioProcessing {
  try {
    const saved = JSON.parse(localStorage.getItem(KEY) ?? "null") as Partial<AudioProcessing> | null;
    return { ...ALL_ON, ...(saved ?? {}) };
  } catch {
    return ALL_ON;
  }
}

export function useAudioProcessing(): [AudioProcessing, (s: AudioProcessing) => void] {
  const [settings, setSettings] = useState<AudioProcessing>(loadAudioProcessing);
  useEffect(() => {
    localStorage.setItem(KEY, JSON.stringify(settings));
    api.setAudioProcessing(settings).catch(() => {});
  }, [settings]);
  return [settings, setSettings];
}
