/** The call: tiles, controls, chat, people, devices, screen sharing, the waiting room's knocks. */
import { useCallback, useEffect, useReducer, useRef, useState, type FormEvent, type ReactNode } from "react";
import { LayoutGrid, MessageSquare, Sparkles, Mic, MicOff, MonitorUp, MonitorX, PhoneOff, Presentation, SlidersHorizontal, Users, Video, VideoOff } from "lucide-react";
import { api, type Room, type ScreenSource } from "../api";
import { featured, humanError, quality, initialCall, reduceCall, shortcut, tiles, type ChatMessage, type Quality, type TrackReport } from "../store";
import { DevicePickers } from "../components/DevicePickers";
import { Progress } from "../components/Progress";
import { VideoTile } from "../components/VideoTile";
import { EffectsPicker } from "../components/EffectsPicker";
import { useVideoEffects } from "../videoEffects";
import { joinRef } from "../joinRef";

export function Call(props: { room: Room; joinRef: typeof joinRef; onLeft: () => void; onError: (m: string) => void }) {
  const start = props.joinRef.current;
  const [state, dispatch] = useReducer(reduceCall, start?.state ?? initialCall("", [], true, true));
  const [layout, setLayout] = useState<"grid" | "speaker">("grid");
  const [showPeople, setShowPeople] = useState(false);
  const [picking, setPicking] = useState(false);
  const [showChat, setShowChat] = useState(false);
  const [showDevices, setShowDevices] = useState(false);
  const [showEffects, setShowEffects] = useState(false);
  const [effects, setEffects, effectsError] = useVideoEffects();
  useEffect(() => {
    api
      .chatHistory(props.room.id)
      .then((h) => dispatch({ type: "chat_history", messages: h.messages }))
      .catch(() => undefined); // The live messages still come; the earlier ones are a bonus.
  }, [props.room.id]);
  useEffect(() => {
    if (showChat && state.unread > 0) dispatch({ type: "chat_seen" });
  }, [showChat, state.unread]);
  const [conn, setConn] = useState<Quality>("connecting");
  useEffect(() => {
    let prev: TrackReport[] | null = null;
    const sample = async () => {
      try {
        const now = await api.callStats();
        setConn(quality(prev, now));
        prev = now;
      } catch {
        // Between calls: nothing to measure.
      }
    };
    void sample();
    const t = setInterval(sample, 2000);
    return () => clearInterval(t);
  }, []);
  useEffect(() => {
    props.joinRef.listener = dispatch;
    for (const e of start?.pending ?? []) dispatch(e);
    return () => {
      props.joinRef.listener = null;
    };
  }, []); // eslint-disable-line react-hooks/exhaustive-deps
  const leave = useCallback(async () => {
    await api.leaveCall().catch(() => undefined);
    props.onLeft();
  }, [props]);
  const toggle = useCallback(
    async (kind: "audio" | "video") => {
      const muted = kind === "audio" ? !state.micMuted : !state.camMuted;
      try {
        await api.setMuted(kind, muted);
      } catch (e) {
        props.onError(humanError(e));
      }
    },
    [state.micMuted, state.camMuted, props],
  );
  const share = useCallback(
    async (source: string | null) => {
      setPicking(false);
      try {
        await api.shareScreen(source);
        dispatch({ type: "local_share", on: source !== null });
      } catch (e) {
        props.onError(humanError(e));
      }
    },
    [props],
  );
  const ptt = useRef(false);
  useEffect(() => {
    const typing = (e: KeyboardEvent) => e.target instanceof HTMLInputElement;
    const down = (e: KeyboardEvent) => {
      const s = shortcut(e);
      if (s) e.preventDefault();
      if (s === "toggle-mic") toggle("audio");
      if (s === "toggle-cam") toggle("video");
      if (s === "leave") leave();
      // Push to talk: hold the space bar while muted.
      if (e.code === "Space" && !e.repeat && !typing(e) && state.micMuted) {
        e.preventDefault();
        ptt.current = true;
        api.setMuted("audio", false);
      }
    };
    const up = (e: KeyboardEvent) => {
      if (e.code === "Space" && ptt.current) {
        ptt.current = false;
        api.setMuted("audio", true);
      }
    };
    window.addEventListener("keydown", down);
    window.addEventListener("keyup", up);
    return () => {
      window.removeEventListener("keydown", down);
      window.removeEventListener("keyup", up);
    };
  }, [toggle, leave, state.micMuted]);
  useEffect(() => {
    if (state.ended && state.ended !== "left") {
      props.onError(
        state.ended === "replaced"
          ? "You joined this meeting from another device, so this window left it."
          : state.ended === "session_ended"
            ? "You were signed out (here or on another device, or your password was changed), so you left the meeting. Sign in again to rejoin."
            : `The meeting ended for you: ${state.ended}.`,
      );
      props.onLeft();
    }
  }, [state.ended]); // eslint-disable-line react-hooks/exhaustive-deps

  const all = tiles(state);
  const big = layout === "speaker" || all.some((t) => t.kind === "screen" && !t.local) ? featured(state) : null;
  const rest = big ? all.filter((t) => t.trackId !== big.trackId) : all;
  const people = Object.values(state.participants);
  const iHost = props.room.my_role === "host";
  return (
    <div className="call" id="call">
      <div className="stage">
        {big && (
          <div className="featured">
            <VideoTile tile={big} speaking={state.speaker === big.participantId} off={false} mirror={effects.mirror} />
          </div>
        )}
        <div className={`grid n${Math.min(rest.length, 9)}`}>
          {rest.map((t) => (
            <VideoTile key={t.trackId} tile={t} speaking={state.speaker === t.participantId} off={t.local && t.kind === "video" && state.camMuted} mirror={effects.mirror} />
          ))}
        </div>
        {state.notice && <div className="toast" role="status">{state.notice}</div>}
        {effectsError && !showEffects && (
          <div className="toast" id="effects-off" role="status">
            {effectsError}
          </div>
        )}
        {state.talkingMuted && state.micMuted && (
          <div className="toast" id="talking-muted" role="status">
            You are muted. Unmute to be heard.
          </div>
        )}
        {state.knocks.length > 0 && (
          <div className="knocks" id="knocks">
            {state.knocks.map((k) => (
              <div className="knock" key={k.request_id} data-request={k.request_id}>
                <span>{k.user.display_name} wants to join</span>
                <button className="primary admit" onClick={() => api.answerKnock(k.request_id, true).catch((e) => props.onError(humanError(e)))}>Admit</button>
                <button className="deny" onClick={() => api.answerKnock(k.request_id, false).catch((e) => props.onError(humanError(e)))}>Deny</button>
              </div>
            ))}
          </div>
        )}
      </div>
      {showChat && <ChatPanel messages={state.chat} me={state.myUserId} onError={props.onError} />}
      {showDevices && (
        <aside className="people" id="devices-panel">
          <h3>Devices</h3>
          <p className="hint">A change takes effect at once; the call goes on.</p>
          <DevicePickers onError={props.onError} />
        </aside>
      )}
      {showEffects && (
        <aside className="people" id="effects-panel">
          <h3>Effects</h3>
          <p className="hint">Everyone sees the background you choose; the mirror is only for you.</p>
          <EffectsPicker value={effects} onChange={setEffects} error={effectsError} />
        </aside>
      )}
      {showPeople && (
        <aside className="people" id="people">
          <h3>People ({people.length})</h3>
          <ul>
            {people.map((p) => (
              <li key={p.participant_id} className={state.speaker === p.participant_id ? "speaking" : ""} data-viewer={p.viewer ? "1" : undefined}>
                {p.participant_id === state.me ? "You" : p.user.display_name}
                <span className="hint">
                  {p.viewer ? " · watching" : `${p.audio_muted ? " · muted" : ""}${p.video_muted ? " · camera off" : ""}`}
                </span>
                {iHost && p.participant_id !== state.me && p.role !== "host" && (
                  <button
                    className="remove"
                    title="Take them out of the meeting and off the room's members"
                    onClick={() => api.removeParticipant(props.room.id, p.user.id).catch((e) => props.onError(humanError(e)))}
                  >
                    Remove
                  </button>
                )}
              </li>
            ))}
          </ul>
        </aside>
      )}
      <footer className="controls">
        <span className={`quality ${conn}`} id="quality" title="Connection quality">
          ● {state.reconnecting ? "Reconnecting…" : conn === "connecting" ? "Connecting…" : conn === "connected" ? "Connected" : conn === "good" ? "Good connection" : conn === "fair" ? "Some packet loss" : "Poor connection"} · {props.room.name}
        </span>
        <ControlButton id="toggle-mic" className={state.micMuted ? "off" : ""} onClick={() => toggle("audio")} label={state.micMuted ? "Unmute" : "Mute"} keys="Ctrl+D" icon={state.micMuted ? <MicOff /> : <Mic />} />
        <ControlButton id="toggle-cam" className={state.camMuted ? "off" : ""} onClick={() => toggle("video")} label={state.camMuted ? "Start camera" : "Stop camera"} keys="Ctrl+E" icon={state.camMuted ? <VideoOff /> : <Video />} />
        <ControlButton id="toggle-share" className={state.sharing ? "on" : ""} onClick={() => (state.sharing ? share(null) : setPicking(true))} label={state.sharing ? "Stop sharing" : "Share screen"} icon={state.sharing ? <MonitorX /> : <MonitorUp />} />
        <ControlButton id="toggle-layout" onClick={() => setLayout(layout === "grid" ? "speaker" : "grid")} label={layout === "grid" ? "Speaker view" : "Grid view"} icon={layout === "grid" ? <Presentation /> : <LayoutGrid />} />
        <ControlButton id="toggle-chat" className={showChat ? "on" : ""} onClick={() => { setShowChat(!showChat); setShowPeople(false); setShowDevices(false); setShowEffects(false); }} label="Chat" icon={<MessageSquare />} pressed={showChat}>
          {state.unread > 0 && <span className="badge" id="chat-unread" aria-label={`${state.unread} unread`}>{state.unread}</span>}
        </ControlButton>
        <ControlButton id="toggle-people" className={showPeople ? "on" : ""} onClick={() => { setShowPeople(!showPeople); setShowChat(false); setShowDevices(false); setShowEffects(false); }} label="People" icon={<Users />} pressed={showPeople} />
        <ControlButton id="toggle-devices" className={showDevices ? "on" : ""} onClick={() => { setShowDevices(!showDevices); setShowChat(false); setShowPeople(false); setShowEffects(false); }} label="Devices" icon={<SlidersHorizontal />} pressed={showDevices} />
        <ControlButton id="toggle-effects" className={showEffects ? "on" : ""} onClick={() => { setShowEffects(!showEffects); setShowChat(false); setShowPeople(false); setShowDevices(false); }} label="Effects" icon={<Sparkles />} pressed={showEffects} />
        <ControlButton id="leave" className="danger" onClick={leave} label="Leave" keys="Ctrl+Shift+L" icon={<PhoneOff />} />
      </footer>
      {picking && <SharePicker onPick={share} onCancel={() => setPicking(false)} />}
    </div>
  );
}

/**
 * A call control: an icon (lucide), its name for screen readers and as a tooltip (with the
 * shortcut), the name also in the button's text (hidden, so tests and assistive tools read
 * it).
 */
export function ControlButton(props: { id: string; label: string; icon: ReactNode; onClick: () => void; className?: string; keys?: string; pressed?: boolean; children?: ReactNode }) {
  return (
    <button
      id={props.id}
      className={`icon ${props.className ?? ""}`}
      onClick={props.onClick}
      aria-label={props.label}
      aria-pressed={props.pressed}
      title={props.keys ? `${props.label} (${props.keys})` : props.label}
    >
      <span aria-hidden="true">{props.icon}</span>
      <span className="sr-only">{props.label}</span>
      {props.children}
    </button>
  );
}

/** The meeting's chat: messages as plain text, newest at the bottom, and a box to write. */
export function ChatPanel(props: { messages: ChatMessage[]; me: string; onError: (m: string) => void }) {
  const [text, setText] = useState("");
  const [sending, setSending] = useState(false);
  const end = useRef<HTMLLIElement>(null);
  useEffect(() => {
    end.current?.scrollIntoView({ block: "end" });
  }, [props.messages.length]);
  const send = async (e: FormEvent) => {
    e.preventDefault();
    if (!text.trim() || sending) return;
    setSending(true);
    try {
      await api.sendChat(text);
      setText("");
    } catch (err) {
      props.onError(humanError(err));
    } finally {
      setSending(false);
    }
  };
  return (
    <aside className="chat" id="chat">
      <h3>Chat</h3>
      <ul id="chat-messages">
        {props.messages.length === 0 && <li className="hint">No messages yet. Messages are kept with the room.</li>}
        {props.messages.map((m) => (
          <li key={m.id} className={m.user.id === props.me ? "mine" : ""}>
            <span className="who">{m.user.id === props.me ? "You" : m.user.display_name}</span>
            <span className="when">{new Date(m.sent_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}</span>
            <div className="text">{m.text}</div>
          </li>
        ))}
        <li ref={end} />
      </ul>
      <form onSubmit={send} className="row">
        <input id="chat-input" value={text} maxLength={2000} placeholder="Message everyone" onChange={(e) => setText(e.target.value)} />
        <button id="chat-send" className="primary" disabled={sending || !text.trim()}>Send</button>
      </form>
    </aside>
  );
}

/** Which monitor or window to share: listed afresh when opened. */
export function SharePicker(props: { onPick: (id: string) => void; onCancel: () => void }) {
  const [sources, setSources] = useState<ScreenSource[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api.listScreens().then(setSources).catch((e) => setError(humanError(e)));
  }, []);
  const group = (kind: ScreenSource["kind"], title: string) => {
    const list = (sources ?? []).filter((s) => s.kind === kind);
    if (list.length === 0) return null;
    return (
      <>
        <h3>{title}</h3>
        <ul className="sources">
          {list.map((s) => (
            <li key={s.id}>
              <button className="share-source" data-id={s.id} onClick={() => props.onPick(s.id)}>
                {s.name} {s.width > 0 && <span className="hint">{s.width}×{s.height}</span>}
              </button>
            </li>
          ))}
        </ul>
      </>
    );
  };
  return (
    <div className="modal" role="dialog" aria-label="Share your screen" id="share-picker">
      <div className="card">
        <h2>Share your screen</h2>
        {error && <p className="error">{error}</p>}
        {!sources && !error && <Progress text="Looking for screens and windows…" />}
        {sources && sources.length === 0 && (
          <p className="hint">Nothing can be shared here: this build has no screen capture for this system.</p>
        )}
        {group("monitor", "Entire screen")}
        {group("window", "Window")}
        <button onClick={props.onCancel}>Cancel</button>
      </div>
    </div>
  );
}
