/** Home: create or open a room, the rooms one is in, upcoming meetings. */
import { listen } from "@tauri-apps/api/event";
import { useCallback, useEffect, useState, type FormEvent } from "react";
import { api, type Room, type ScheduledMeeting } from "../api";
import { humanError, roomIdFrom } from "../store";
import { Progress } from "../components/Progress";
import { useBusy } from "../components/useBusy";

export function Home(props: { onError: (m: string) => void; onOpen: (r: Room) => void }) {
  const [rooms, setRooms] = useState<Room[] | null>(null);
  const [name, setName] = useState("");
  const [isPrivate, setPrivate] = useState(false);
  const [password, setPassword] = useState("");
  const [joinId, setJoinId] = useState("");
  const [busy, run] = useBusy(props.onError);
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
  const create = (e: FormEvent) => {
    e.preventDefault();
    return run(async () => props.onOpen(await api.createRoom(name, isPrivate, password, waitingRoom)));
  };
  const join = (e: FormEvent) => {
    e.preventDefault();
    const id = roomIdFrom(joinId);
    if (!id) {
      props.onError("That is not a meeting id or link. It looks like abc-defg-hij.");
      return;
    }
    return run(async () => props.onOpen(await api.getRoom(id)));
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
export function Upcoming(props: { rooms: Room[]; onOpen: (r: Room) => void; onError: (m: string) => void }) {
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
