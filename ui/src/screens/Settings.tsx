/** Settings: theme, devices, the app's version, signing out. */
import { type AppInfo, type AudioProcessing } from "../api";
import { DevicePickers } from "../components/DevicePickers";
import { type Theme } from "../theme";

const PROCESSING: [keyof AudioProcessing, string, string][] = [
  ["echo_cancellation", "aec", "Echo cancellation (others do not hear themselves from your speakers)"],
  ["noise_suppression", "ns", "Noise suppression (fans, hum, background noise)"],
  ["gain_control", "agc", "Automatic gain control (a quiet voice is brought up)"],
];

export function Settings(props: {
  info: AppInfo | null;
  theme: Theme;
  onTheme: (t: Theme) => void;
  audio: AudioProcessing;
  onAudio: (a: AudioProcessing) => void;
  onSignOut: () => void;
}) {
  return (
    <div className="card narrow" id="settings">
      <h1>Settings</h1>
      <h3>Appearance</h3>
      <div className="row">
        {(["system", "light", "dark"] as Theme[]).map((t) => (
          <label className="inline" key={t}>
            <input type="radio" name="theme" checked={props.theme === t} onChange={() => props.onTheme(t)} /> {t}
          </label>
        ))}
      </div>
      <h3>Devices</h3>
      {props.info?.media === "synthetic" && <p className="hint">Synthetic camera and microphone (CONVO_MEDIA=synthetic); the speaker is real.</p>}
      <DevicePickers />
      <h3>Sound</h3>
      {PROCESSING.map(([key, id, label]) => (
        <label className="inline" key={key}>
          <input type="checkbox" id={id} checked={props.audio[key]} onChange={(e) => props.onAudio({ ...props.audio, [key]: e.target.checked })} /> {label}
        </label>
      ))}
      <h3>Account</h3>
      <p className="hint">Server: {props.info?.server} · version {props.info?.version}</p>
      <button id="sign-out" className="danger" onClick={props.onSignOut}>Sign out</button>
    </div>
  );
}
