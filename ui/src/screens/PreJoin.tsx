/** Pre-join: the camera preview, the microphone's level and devices, then joining. */
import { useCallback, useEffect, useState } from "react";
import { api, type AppInfo, type Room } from "../api";
import { humanError, initialCall, type CallEvent } from "../store";
import { DevicePickers, useMicLevel } from "../components/DevicePickers";
import { Progress } from "../components/Progress";
import { VideoTile } from "../components/VideoTile";
import { joinRef } from "../joinRef";
import { EffectsPicker } from "../components/EffectsPicker";
import { useVideoEffects } from "../videoEffects";

export function PreJoin(props: {
  room: Room;
  userId: string;
  info: AppInfo | null;
  onBack: () => void;
  onJoined: () => void;
  onError: (m: string) => void;
  joinRef: typeof joinRef;
}) {
  const [mic, setMic] = useState(true);
  const [cam, setCam] = useState(true);
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const level = useMicLevel();
  const [effects, setEffects, effectsError] = useVideoEffects();
  const [problems, setProblems] = useState<{ microphone: string | null; camera: string | null }>({ microphone: null, camera: null });
  const start = useCallback(() => {
    api.startPreJoin().then(setProblems).catch((e) => props.onError(humanError(e)));
  }, [props]);
  useEffect(() => {
    start();
    return () => {
      api.stopPreJoin().catch(() => undefined);
    };
  }, []); // eslint-disable-line react-hooks/exhaustive-deps
  const [waiting, setWaiting] = useState(false);
  const join = async () => {
    setBusy(true);
    setWaiting(false);
    // For the join-to-first-frame figure (tests/desktop_bench.rs).
    Object.assign(window, { __joinAt: performance.now(), __firstRemoteFrameAt: undefined });
    const pending: CallEvent[] = [];
    props.joinRef.listener = null;
    try {
      const j = await api.joinCall(props.room.id, password, !mic, !cam, (e) => {
        if (e.type === "signal" && e.message.type === "waiting") setWaiting(true);
        if (props.joinRef.listener) props.joinRef.listener(e);
        else pending.push(e);
      });
      props.joinRef.current = {
        me: j.participant_id,
        state: initialCall(j.participant_id, j.participants, !mic, !cam, props.userId),
        pending,
      };
      props.onJoined();
    } catch (e) {
      props.onError(humanError(e));
      setBusy(false);
      setWaiting(false);
    }
  };
  return (
    <div className="card narrow" id="prejoin">
      <h1>{props.room.name}</h1>
      <p className="hint">Meeting id <code>{props.room.id}</code> · share <code>{props.room.join_url}</code></p>
      {props.info?.media === "synthetic" && <p className="hint">Using synthetic camera and microphone (CONVO_MEDIA=synthetic).</p>}
      <div className="preview">
        <VideoTile tile={{ participantId: "", name: "You", trackId: "local:video", kind: "video", local: true }} speaking={false} off={problems.camera !== null} mirror={effects.mirror} />
      </div>
      <EffectsPicker value={effects} onChange={setEffects} error={effectsError} />
      {problems.camera && <p className="hint" id="camera-problem">{problems.camera} You can join without it.</p>}
      {problems.microphone && <p className="hint" id="mic-problem">{problems.microphone} Pick another microphone below.</p>}
      <div className="meter" title="Microphone level" id="mic-meter"><span style={{ width: `${level}%` }} /></div>
      <DevicePickers onChanged={start} />
      <label className="inline"><input id="prejoin-mic" type="checkbox" checked={mic} onChange={(e) => setMic(e.target.checked)} /> Microphone on</label>
      <label className="inline"><input id="prejoin-cam" type="checkbox" checked={cam} onChange={(e) => setCam(e.target.checked)} /> Camera on</label>
      {props.room.has_password && (
        <label>Meeting password<input type="password" value={password} onChange={(e) => setPassword(e.target.value)} /></label>
      )}
      <div className="row">
        <button className="link" onClick={props.onBack}>Back</button>
        <button id="join" className="primary" disabled={busy} onClick={join}>{busy ? "Joining…" : "Join now"}</button>
      </div>
      {busy && !waiting && <Progress text="Connecting to the meeting…" />}
      {waiting && (
        <div id="waiting-room">
          <Progress text="Waiting for the host to let you in…" />
          <button id="cancel-wait" className="link" onClick={() => api.cancelJoin().catch(() => undefined)}>Leave the waiting room</button>
        </div>
      )}
    </div>
  );
}
