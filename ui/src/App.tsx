import { listen } from "@tauri-apps/api/event";
import { useCallback, useEffect, useReducer, useRef, useState, type FormEvent, type ReactNode } from "react";
import { LayoutGrid, MessageSquare, Mic, MicOff, MonitorUp, MonitorX, PhoneOff, Presentation, SlidersHorizontal, Users, Video, VideoOff } from "lucide-react";
import { api, frameUrl, type AppInfo, type Devices, type Room, type ScheduledMeeting, type ScreenSource, type User } from "./api";
import {
  featured,
  humanError,
  quality,
  initialCall,
  reduceCall,
  roomIdFrom,
  shortcut,
  tiles,
  type CallEvent,
  type CallState,
  type ChatMessage,
  type Quality,
  type Tile,
  type TrackReport,
} from "./store";

type Screen =
  | { name: "loading" }
  | { name: "signin"; notice?: string }
  | { name: "register" }
  | { name: "forgot" }
  | { name: "home" }
  | { name: "prejoin"; room: Room }
  | { name: "call"; room: Room }
  | { name: "settings" };

type Theme = "system" | "light" | "dark";

function useTheme(): [Theme, (t: Theme) => void] {
  const [theme, setTheme] = useState<Theme>(() => (localStorage.getItem("theme") as Theme) || "system");
  useEffect(() => {
    localStorage.setItem("theme", theme);
    document.documentElement.dataset.theme = theme;
  }, [theme]);
  return [theme, setTheme];
}

export function App() {
  const [screen, setScreen] = useState<Screen>({ name: "loading" });
  const [user, setUser] = useState<User | null>(null);
  const [info, setInfo] = useState<AppInfo | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [theme, setTheme] = useTheme();

  useEffect(() => {
    (async () => {
      try {
        setInfo(await api.appInfo());
        const u = await api.restoreSession();
        if (u) {
          setUser(u);
          setScreen({ name: "home" });
        } else {
          setScreen({ name: "signin" });
        }
      } catch (e) {
        setError(humanError(e));
        setScreen({ name: "signin" });
      }
    })();
  }, []);

  const go = (s: Screen) => {
    setError(null);
    setScreen(s);
  };

  // convoconnect://join/<room> links: open the room's pre-join once signed in (not mid-call).
  const screenRef = useRef(screen);
  screenRef.current = screen;
  const openLinked = useCallback(async () => {
    const name = screenRef.current.name;
    if (name === "loading" || name === "signin" || name === "register" || name === "forgot" || name === "call") return;
    const id = await api.takePendingLink().catch(() => null);
    if (!id) return;
    try {
      go({ name: "prejoin", room: await api.getRoom(id) });
    } catch (e) {
      setError(humanError(e));
    }
  }, []); // eslint-disable-line react-hooks/exhaustive-deps
  useEffect(() => {
    const un = listen<string>("open-room", () => openLinked());
    return () => {
      un.then((f) => f());
    };
  }, [openLinked]);
  useEffect(() => {
    if (screen.name === "home") openLinked();
  }, [screen.name, openLinked]);

  return (
    <div className="app">
      <header className="bar">
        <span className="brand">ConvoConnect</span>
        {user && screen.name !== "call" && (
          <nav>
            <button className="link" onClick={() => go({ name: "home" })}>Home</button>
            <button className="link" id="settings-link" onClick={() => go({ name: "settings" })}>Settings</button>
          </nav>
        )}
        {user && <span className="who">{user.display_name}</span>}
      </header>
      {error && (
        <div className="error" role="alert" id="error">
          {error}
          <button className="link" onClick={() => setError(null)} aria-label="Dismiss">×</button>
        </div>
      )}
      <main>
        {screen.name === "loading" && <Progress text="Starting…" />}
        {screen.name === "signin" && (
          <SignIn
            info={info}
            notice={screen.notice}
            onError={setError}
            onSignedIn={(u) => {
              setUser(u);
              go({ name: "home" });
            }}
            onRegister={() => go({ name: "register" })}
            onForgot={() => go({ name: "forgot" })}
            onServer={async (url) => {
              await api.setServer(url);
              setInfo(await api.appInfo());
            }}
          />
        )}
        {screen.name === "register" && (
          <Register
            onError={setError}
            onDone={() => go({ name: "signin", notice: "Account created. Sign in with it now." })}
            onBack={() => go({ name: "signin" })}
          />
        )}
        {screen.name === "forgot" && <Forgot onError={setError} onBack={() => go({ name: "signin" })} />}
        {screen.name === "home" && <Home onError={setError} onOpen={(room) => go({ name: "prejoin", room })} />}
        {screen.name === "prejoin" && (
          <PreJoin
            room={screen.room}
            userId={user?.id ?? ""}
            info={info}
            onBack={() => go({ name: "home" })}
            onJoined={() => setScreen({ name: "call", room: screen.room })}
            onError={setError}
            joinRef={joinRef}
          />
        )}
        {screen.name === "call" && (
          <Call room={screen.room} joinRef={joinRef} onLeft={() => go({ name: "home" })} onError={setError} />
        )}
        {screen.name === "settings" && (
          <Settings
            info={info}
            theme={theme}
            onTheme={setTheme}
            onSignOut={async () => {
              await api.signOut();
              setUser(null);
              go({ name: "signin" });
            }}
          />
        )}
      </main>
    </div>
  );
}

/** What pre-join hands the call screen. */
interface JoinResult {
  me: string;
  state: CallState;
  pending: CallEvent[];
}
const joinRef: { current: JoinResult | null; listener: ((e: CallEvent) => void) | null } = {
  current: null,
  listener: null,
};

function Progress({ text }: { text: string }) {
  return (
    <div className="progress" role="status">
      <span className="spinner" /> {text}
    </div>
  );
}

function SignIn(props: {
  info: AppInfo | null;
  notice?: string;
  onError: (m: string) => void;
  onSignedIn: (u: User) => void;
  onRegister: () => void;
  onForgot: () => void;
  onServer: (url: string) => Promise<void>;
}) {
  const [login, setLogin] = useState("");
  const [password, setPassword] = useState("");
  const [server, setServer] = useState(props.info?.server ?? "");
  const [busy, setBusy] = useState(false);
  useEffect(() => setServer(props.info?.server ?? ""), [props.info]);
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    setBusy(true);
    try {
      if (server && server !== props.info?.server) await props.onServer(server);
      props.onSignedIn(await api.signIn(login, password));
    } catch (err) {
      props.onError(humanError(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="card narrow" onSubmit={submit}>
      <h1>Sign in</h1>
      {props.notice && <p className="notice">{props.notice}</p>}
      <label>Username or email<input id="login" value={login} onChange={(e) => setLogin(e.target.value)} required autoFocus /></label>
      <label>Password<input id="password" type="password" value={password} onChange={(e) => setPassword(e.target.value)} required /></label>
      <label>Server<input id="server" value={server} onChange={(e) => setServer(e.target.value)} /></label>
      <button id="sign-in" className="primary" disabled={busy}>{busy ? "Signing in…" : "Sign in"}</button>
      <div className="row">
        <button type="button" className="link" id="register-link" onClick={props.onRegister}>Create an account</button>
        <button type="button" className="link" onClick={props.onForgot}>Forgot password?</button>
      </div>
      {props.info && !props.info.keyring && (
        <p className="hint">No system keyring was found: you will need to sign in again after quitting.</p>
      )}
    </form>
  );
}

function Register(props: { onError: (m: string) => void; onDone: () => void; onBack: () => void }) {
  const [f, setF] = useState({ username: "", email: "", password: "", display: "" });
  const [busy, setBusy] = useState(false);
  const set = (k: keyof typeof f) => (e: React.ChangeEvent<HTMLInputElement>) => setF({ ...f, [k]: e.target.value });
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    setBusy(true);
    try {
      await api.register(f.username, f.email, f.password, f.display);
      props.onDone();
    } catch (err) {
      props.onError(humanError(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="card narrow" onSubmit={submit}>
      <h1>Create an account</h1>
      <label>Username<input id="reg-username" value={f.username} onChange={set("username")} required /></label>
      <label>Email<input id="reg-email" type="email" value={f.email} onChange={set("email")} required /></label>
      <label>Display name<input id="reg-display" value={f.display} onChange={set("display")} /></label>
      <label>Password (8 characters or more)<input id="reg-password" type="password" value={f.password} onChange={set("password")} required /></label>
      <button id="register" className="primary" disabled={busy}>{busy ? "Creating…" : "Create account"}</button>
      <button type="button" className="link" onClick={props.onBack}>Back to sign in</button>
    </form>
  );
}

function Forgot(props: { onError: (m: string) => void; onBack: () => void }) {
  const [email, setEmail] = useState("");
  const [sent, setSent] = useState(false);
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    try {
      await api.forgotPassword(email);
      setSent(true);
    } catch (err) {
      props.onError(humanError(err));
    }
  };
  return (
    <form className="card narrow" onSubmit={submit}>
      <h1>Reset your password</h1>
      {sent ? (
        <p className="notice">If an account uses {email}, a reset link is on its way. Check your mail.</p>
      ) : (
        <>
          <label>Email<input type="email" value={email} onChange={(e) => setEmail(e.target.value)} required /></label>
          <button className="primary">Send reset link</button>
        </>
      )}
      <button type="button" className="link" onClick={props.onBack}>Back to sign in</button>
    </form>
  );
}

function Home(props: { onError: (m: string) => void; onOpen: (r: Room) => void }) {
  const [rooms, setRooms] = useState<Room[] | null>(null);
  const [name, setName] = useState("");
  const [isPrivate, setPrivate] = useState(false);
  const [password, setPassword] = useState("");
  const [joinId, setJoinId] = useState("");
  const [busy, setBusy] = useState(false);
  const [waitingRoom, setWaitingRoom] = useState(false);
  const load = useCallback(async () => {
    try {
      setRooms((await api.listRooms()).rooms);
    } catch (e) {
      props.onError(humanError(e));
      setRooms([]);
    }
  }, [props]);
  useEffect(() => {
    load();
  }, []); // eslint-disable-line react-hooks/exhaustive-deps
  const create = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    try {
      props.onOpen(await api.createRoom(name, isPrivate, password, waitingRoom));
    } catch (err) {
      props.onError(humanError(err));
    } finally {
      setBusy(false);
    }
  };
  const join = async (e: FormEvent) => {
    e.preventDefault();
    const id = roomIdFrom(joinId);
    if (!id) {
      props.onError("That is not a meeting id or link. It looks like abc-defg-hij.");
      return;
    }
    setBusy(true);
    try {
      props.onOpen(await api.getRoom(id));
    } catch (err) {
      props.onError(humanError(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="home">
      <section className="card">
        <h2>New meeting</h2>
        <form onSubmit={create}>
          <label>Name<input id="room-name" value={name} onChange={(e) => setName(e.target.value)} required /></label>
          <label className="inline"><input type="checkbox" checked={isPrivate} onChange={(e) => setPrivate(e.target.checked)} /> Private (only people you invite)</label>
          <label className="inline"><input id="room-waiting" type="checkbox" checked={waitingRoom} onChange={(e) => setWaitingRoom(e.target.checked)} /> Waiting room (you let newcomers in)</label>
          <label>Password (optional)<input type="password" value={password} onChange={(e) => setPassword(e.target.value)} /></label>
          <button id="create-room" className="primary" disabled={busy}>Create and open</button>
        </form>
      </section>
      <section className="card">
        <h2>Join a meeting</h2>
        <form onSubmit={join}>
          <label>Meeting id or link<input id="join-id" value={joinId} onChange={(e) => setJoinId(e.target.value)} placeholder="abc-defg-hij" /></label>
          <button id="join-open" className="primary" disabled={busy}>Open</button>
        </form>
      </section>
      <section className="card wide">
        <h2>Rooms <button className="link" onClick={load}>Refresh</button></h2>
        {rooms === null && <Progress text="Loading rooms…" />}
        {rooms?.length === 0 && <p className="hint">No rooms yet: create one above.</p>}
        <ul className="rooms">
          {rooms?.map((r) => (
            <li key={r.id}>
              <button className="room" onClick={() => props.onOpen(r)}>
                <strong>{r.name}</strong> <span className="hint">{r.id} · {r.privacy} · hosted by {r.host.display_name} · {r.participant_count} in call</span>
              </button>
            </li>
          ))}
        </ul>
      </section>
      <Upcoming rooms={rooms ?? []} onOpen={props.onOpen} onError={props.onError} />
    </div>
  );
}

/** My meetings that are not over yet (refreshed when the app's agenda changes), and a form to
 * schedule one in a room I host. */
function Upcoming(props: { rooms: Room[]; onOpen: (r: Room) => void; onError: (m: string) => void }) {
  const [meetings, setMeetings] = useState<ScheduledMeeting[] | null>(null);
  const [scheduling, setScheduling] = useState(false);
  const [form, setForm] = useState({ room: "", title: "", at: "", minutes: "30", invitees: "" });
  const load = useCallback(() => {
    api.upcomingMeetings().then((l) => setMeetings(l.meetings)).catch(() => setMeetings([]));
  }, []);
  useEffect(() => {
    load();
    const un = listen<{ meetings: ScheduledMeeting[] }>("agenda", (e) => setMeetings(e.payload.meetings));
    return () => {
      un.then((f) => f());
    };
  }, [load]);
  const hosted = props.rooms.filter((r) => r.my_role === "host");
  const open = async (m: ScheduledMeeting) => {
    try {
      props.onOpen(await api.getRoom(m.room_id));
    } catch (e) {
      props.onError(humanError(e));
    }
  };
  const schedule = async (e: FormEvent) => {
    e.preventDefault();
    const when = new Date(form.at);
    if (!form.at || Number.isNaN(when.getTime())) {
      props.onError("Pick the day and time the meeting starts.");
      return;
    }
    try {
      await api.scheduleMeeting({
        room_id: form.room || hosted[0]?.id || "",
        title: form.title,
        starts_at: when.toISOString(),
        duration_minutes: Number(form.minutes),
        invitees: form.invitees.split(/[\s,]+/).filter(Boolean),
      });
      setScheduling(false);
      setForm({ ...form, title: "", at: "", invitees: "" });
      load();
    } catch (err) {
      props.onError(humanError(err));
    }
  };
  return (
    <section className="card wide" id="upcoming">
      <h2>Upcoming meetings {hosted.length > 0 && <button className="link" id="schedule-open" onClick={() => setScheduling(!scheduling)}>Schedule</button>}</h2>
      {scheduling && (
        <form onSubmit={schedule} id="schedule-form">
          <label>Room
            <select id="schedule-room" value={form.room} onChange={(e) => setForm({ ...form, room: e.target.value })}>
              {hosted.map((r) => <option key={r.id} value={r.id}>{r.name}</option>)}
            </select>
          </label>
          <label>Title<input id="schedule-title" value={form.title} onChange={(e) => setForm({ ...form, title: e.target.value })} required maxLength={100} /></label>
          <label>Starts<input id="schedule-at" type="datetime-local" value={form.at} onChange={(e) => setForm({ ...form, at: e.target.value })} required /></label>
          <label>Length
            <select id="schedule-minutes" value={form.minutes} onChange={(e) => setForm({ ...form, minutes: e.target.value })}>
              {["15", "30", "45", "60", "90", "120"].map((m) => <option key={m} value={m}>{m} minutes</option>)}
            </select>
          </label>
          <label>Invite (usernames)<input id="schedule-invitees" value={form.invitees} onChange={(e) => setForm({ ...form, invitees: e.target.value })} placeholder="ann, bob" /></label>
          <button className="primary" id="schedule-submit">Schedule</button>
        </form>
      )}
      {meetings === null && <Progress text="Loading meetings…" />}
      {meetings?.length === 0 && <p className="hint">Nothing scheduled. You get a reminder 5 minutes before a meeting, and the tray joins the next one.</p>}
      <ul className="rooms" id="meetings">
        {meetings?.map((m) => (
          <li key={m.id} data-meeting={m.id}>
            <button className="room" onClick={() => open(m)}>
              <strong>{m.title}</strong>{" "}
              <span className="hint">{new Date(m.starts_at).toLocaleString([], { weekday: "short", hour: "2-digit", minute: "2-digit", day: "numeric", month: "short", year: new Date(m.starts_at).getFullYear() === new Date().getFullYear() ? undefined : "numeric" })} · {m.duration_minutes} min · {m.room_name} · by {m.organizer.display_name}{m.invitees.length > 0 ? ` · with ${m.invitees.map((u) => u.display_name).join(", ")}` : ""}</span>
            </button>
          </li>
        ))}
      </ul>
    </section>
  );
}

function PreJoin(props: {
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
        <VideoTile tile={{ participantId: "", name: "You", trackId: "local:video", kind: "video", local: true }} speaking={false} off={problems.camera !== null} />
      </div>
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

function Call(props: { room: Room; joinRef: typeof joinRef; onLeft: () => void; onError: (m: string) => void }) {
  const start = props.joinRef.current;
  const [state, dispatch] = useReducer(reduceCall, start?.state ?? initialCall("", [], true, true));
  const [layout, setLayout] = useState<"grid" | "speaker">("grid");
  const [showPeople, setShowPeople] = useState(false);
  const [picking, setPicking] = useState(false);
  const [showChat, setShowChat] = useState(false);
  const [showDevices, setShowDevices] = useState(false);
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
            <VideoTile tile={big} speaking={state.speaker === big.participantId} off={false} />
          </div>
        )}
        <div className={`grid n${Math.min(rest.length, 9)}`}>
          {rest.map((t) => (
            <VideoTile key={t.trackId} tile={t} speaking={state.speaker === t.participantId} off={t.local && t.kind === "video" && state.camMuted} />
          ))}
        </div>
        {state.notice && <div className="toast" role="status">{state.notice}</div>}
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
        <ControlButton id="toggle-chat" className={showChat ? "on" : ""} onClick={() => { setShowChat(!showChat); setShowPeople(false); setShowDevices(false); }} label="Chat" icon={<MessageSquare />} pressed={showChat}>
          {state.unread > 0 && <span className="badge" id="chat-unread" aria-label={`${state.unread} unread`}>{state.unread}</span>}
        </ControlButton>
        <ControlButton id="toggle-people" className={showPeople ? "on" : ""} onClick={() => { setShowPeople(!showPeople); setShowChat(false); setShowDevices(false); }} label="People" icon={<Users />} pressed={showPeople} />
        <ControlButton id="toggle-devices" className={showDevices ? "on" : ""} onClick={() => { setShowDevices(!showDevices); setShowChat(false); setShowPeople(false); }} label="Devices" icon={<SlidersHorizontal />} pressed={showDevices} />
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
function ControlButton(props: { id: string; label: string; icon: ReactNode; onClick: () => void; className?: string; keys?: string; pressed?: boolean; children?: ReactNode }) {
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
function ChatPanel(props: { messages: ChatMessage[]; me: string; onError: (m: string) => void }) {
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
function SharePicker(props: { onPick: (id: string) => void; onCancel: () => void }) {
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

/** One video: pulls the newest frame from the `frames:` scheme whenever the last is drawn. */
function VideoTile({ tile, speaking, off }: { tile: Tile; speaking: boolean; off: boolean }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const figure = useRef<HTMLElement>(null);
  const [drawn, setDrawn] = useState(0);
  // The size a remote tile is drawn at, in device pixels, goes to the server (it picks the
  // simulcast layer that fills it); a tile that goes away is no longer shown.
  useEffect(() => {
    const el = figure.current;
    if (tile.local || !el) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let sent = "";
    const report = () => {
      const r = el.getBoundingClientRect();
      const w = Math.round(r.width * window.devicePixelRatio);
      const h = Math.round(r.height * window.devicePixelRatio);
      const key = `${w}x${h}`;
      if (key === sent) return;
      sent = key;
      api.setView(tile.trackId, w, h).catch(() => {});
    };
    const observer = new ResizeObserver(() => {
      clearTimeout(timer);
      timer = setTimeout(report, 250);
    });
    observer.observe(el);
    report();
    return () => {
      clearTimeout(timer);
      observer.disconnect();
      api.setView(tile.trackId, 0, 0).catch(() => {});
    };
  }, [tile.trackId, tile.local]);
  useEffect(() => {
    let stop = false;
    let seq = 0;
    let count = 0;
    const pull = async () => {
      while (!stop) {
        // A hidden window draws nothing: its frames are not asked for (nor converted).
        if (document.hidden) {
          await new Promise((res) => setTimeout(res, 250));
          continue;
        }
        try {
          const r = await fetch(frameUrl(tile.trackId, seq));
          if (r.status === 200) {
            const w = Number(r.headers.get("x-width"));
            const h = Number(r.headers.get("x-height"));
            seq = Number(r.headers.get("x-seq"));
            const px = new Uint8ClampedArray(await r.arrayBuffer());
            const c = canvas.current;
            if (c && px.length === w * h * 4) {
              if (c.width !== w) c.width = w;
              if (c.height !== h) c.height = h;
              c.getContext("2d")?.putImageData(new ImageData(px, w, h), 0, 0);
              count += 1;
              c.dataset.frames = String(count);
              const win = window as unknown as { __firstRemoteFrameAt?: number };
              if (!tile.local && win.__firstRemoteFrameAt === undefined) win.__firstRemoteFrameAt = performance.now();
              if (count % 15 === 1) setDrawn(count);
            }
          }
        } catch {
          // The scheme is gone while the window closes: try again shortly.
        }
        await new Promise((res) => setTimeout(res, 30));
      }
    };
    pull();
    return () => {
      stop = true;
    };
  }, [tile.trackId]);
  return (
    <figure ref={figure} className={`tile ${speaking ? "speaking" : ""} ${tile.kind}`} data-track={tile.trackId}>
      <canvas ref={canvas} data-track={tile.trackId} data-frames="0" />
      {off ? <div className="waiting">Camera off</div> : drawn === 0 && <div className="waiting">{tile.local ? (tile.kind === "screen" ? "Starting to share…" : "Starting camera…") : "Waiting for video…"}</div>}
      <figcaption>{tile.name}{tile.kind === "screen" ? " (screen)" : ""}{tile.reconnecting ? " · reconnecting…" : ""}</figcaption>
    </figure>
  );
}

function Settings(props: { info: AppInfo | null; theme: Theme; onTheme: (t: Theme) => void; onSignOut: () => void }) {
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
      <h3>Account</h3>
      <p className="hint">Server: {props.info?.server} · version {props.info?.version}</p>
      <button id="sign-out" className="danger" onClick={props.onSignOut}>Sign out</button>
    </div>
  );
}

/** Polls the microphone level (0–100) while mounted. */
function useMicLevel(): number {
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
function DevicePickers(props: { onChanged?: () => void; onError?: (m: string) => void }) {
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
