/** Camera, microphone and speaker pickers, with the microphone's level. */
import { useCallback, useEffect, useState } from "react";
import { api, type Devices } from "../api";
import { humanError } from "../store";
import { Progress } from "./Progress";

/** Polls the microphone level (0–100) while mounted. */
export function useMicLevel(): number {
  const [level, setLevel] = useState(0);
  useEffect(() => {
    const t = setInterval(() => {
      api.micLevel().then(setLevel).catch(() => undefined);
    }, 100);
    return () => clearInterval(t);
  }, []);
  return level;
}

/**
 * Microphone, speaker and camera pickers; the lists refresh every 3 s (devices come and go).
 * In a call a choice takes effect at once; one that cannot open leaves the device in use.
 */
export function DevicePickers(props: { onChanged?: () => void; onError?: (m: string) => void }) {
  const [devices, setDevices] = useState<Devices | null>(null);
  const load = useCallback(() => api.listDevices().then(setDevices).catch(() => undefined), []);
  useEffect(() => {
    load();
    const t = setInterval(load, 3000);
    return () => clearInterval(t);
  }, [load]);
  if (!devices) return <Progress text="Looking for devices…" />;
  const choose = async (input: string | null, output: string | null, camera: string | null) => {
    try {
      await api.chooseDevices(input, output, camera);
      setDevices({ ...devices, chosen: { input, output, camera } });
    } catch (e) {
      props.onError?.(humanError(e));
      load(); // Shows what is still in use.
    }
    props.onChanged?.();
  };
  const { input, output, camera } = devices.chosen;
  const option = (d: { id: string; name: string; default: boolean }) => (
    <option key={d.id} value={d.id}>{d.name}{d.default ? " (default)" : ""}</option>
  );
  return (
    <div className="pickers">
      <label>Microphone
        <select id="pick-mic" value={devices.chosen.input ?? ""} onChange={(e) => choose(e.target.value || null, output, camera)}>
          <option value="">System default</option>
          {devices.inputs.map(option)}
        </select>
      </label>
      <label>Speaker
        <select id="pick-speaker" value={devices.chosen.output ?? ""} onChange={(e) => choose(input, e.target.value || null, camera)}>
          <option value="">System default</option>
          {devices.outputs.map(option)}
        </select>
      </label>
      <label>Camera
        <select id="pick-camera" disabled={devices.cameras.length === 0} value={camera ?? ""} onChange={(e) => choose(input, output, e.target.value || null)}>
          {devices.cameras.length === 0 ? <option value="">No camera found: plug one in</option> : <><option value="">First camera</option>{devices.cameras.map(option)}</>}
        </select>
      </label>
    </div>
  );
}
