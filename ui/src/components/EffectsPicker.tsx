/** Backgrounds and filters for the camera: none, blur (two strengths), built-in pictures,
 * the user's own picture, touch-up, and the self view's mirror. In pre-join and in the call. */
import { useEffect, useRef, useState } from "react";
import { api, type VideoBackground } from "../api";
import { backgroundKey, type EffectsSettings } from "../videoEffects";

const FIXED: { key: string; label: string; background: VideoBackground }[] = [
  { key: "none", label: "None", background: { kind: "none" } },
  { key: "blur", label: "Slight blur", background: { kind: "blur", strong: false } },
  { key: "blur-strong", label: "Blur", background: { kind: "blur", strong: true } },
];

/** A picture file read as base64 (what `save_background` takes). */
function readBase64(file: File): Promise<string> {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).replace(/^data:[^,]*,/, ""));
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

export function EffectsPicker(props: { value: EffectsSettings; onChange: (s: EffectsSettings) => Promise<void>; error: string | null }) {
  const [builtIn, setBuiltIn] = useState<{ id: string; name: string }[]>([]);
  const [busy, setBusy] = useState(false);
  const [fileError, setFileError] = useState<string | null>(null);
  const file = useRef<HTMLInputElement>(null);
  useEffect(() => {
    api.videoBackgrounds().then(setBuiltIn).catch(() => setBuiltIn([]));
  }, []);
  const current = backgroundKey(props.value.background);
  const pick = async (background: VideoBackground) => {
    setBusy(true);
    await props.onChange({ ...props.value, background });
    setBusy(false);
  };
  const choices = [
    ...FIXED,
    ...builtIn.map((b) => ({ key: `builtin:${b.id}`, label: b.name, background: { kind: "builtin", id: b.id } as VideoBackground })),
  ];
  const upload = async (f: File | undefined) => {
    if (!f) return;
    setFileError(null);
    setBusy(true);
    try {
      const background = await api.saveBackground(f.name, await readBase64(f));
      await props.onChange({ ...props.value, background });
    } catch (e) {
      setFileError((e as { message?: string }).message ?? String(e));
    }
    setBusy(false);
  };
  return (
    <fieldset className="effects" id="effects" disabled={busy}>
      <legend>Background</legend>
      <div className="choices">
        {choices.map((c) => (
          <label key={c.key} className={`choice ${current === c.key ? "chosen" : ""}`}>
            <input type="radio" name="background" value={c.key} checked={current === c.key} onChange={() => pick(c.background)} /> {c.label}
          </label>
        ))}
        <label className={`choice ${current === "file" ? "chosen" : ""}`}>
          <input type="radio" name="background" value="file" checked={current === "file"} onChange={() => file.current?.click()} /> Your picture…
        </label>
        <input ref={file} id="background-file" type="file" accept="image/png,image/jpeg" hidden onChange={(e) => upload(e.target.files?.[0])} />
      </div>
      <label className="inline">
        <input id="touch-up" type="checkbox" checked={props.value.touch_up} onChange={(e) => props.onChange({ ...props.value, touch_up: e.target.checked })} /> Touch up my appearance
      </label>
      <label className="inline">
        <input id="mirror" type="checkbox" checked={props.value.mirror} onChange={(e) => props.onChange({ ...props.value, mirror: e.target.checked })} /> Mirror my video (only you see it mirrored)
      </label>
      {(props.error || fileError) && (
        <p className="hint error" id="effects-error" role="alert">
          {fileError ?? props.error}
        </p>
      )}
    </fieldset>
  );
}
