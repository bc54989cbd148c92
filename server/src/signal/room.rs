//! A room in session: who is inside and connected, as a sans-IO state machine
//! ([`RoomState`]), the actor task that owns one ([`spawn`]), and the registry of live rooms.
//!
//! The state machine takes events (join, leave, mute, a dropped connection, a grace timer)
//! and returns [`Output`]s: messages to connections, timers to start, facts to persist. The
//! actor only carries those out, so every rule here is tested without sockets or clocks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use convo_shared::rooms::RoomRole;
use convo_shared::signal::{ClientMessage, LeaveReason, ParticipantInfo, ServerMessage, TrackKind};

use crate::sfu::{MediaEvent, Outgoing, RoomMedia};
use convo_shared::users::UserSummary;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::app::AppState;
use convo_shared::chat::ChatMessage;

/// One WebSocket connection, numbered by the server.
pub type ConnId = u64;

/// What the actor must do after an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send a message on a connection.
    Send(ConnId, ServerMessage),
    /// After the grace period, deliver `grace_expired(participant_id, epoch)`.
    StartGrace { participant_id: String, epoch: u64 },
    /// A user entered the meeting (for the logs).
    Entered { user_id: String },
    /// A user left the meeting; `now_empty` when nobody is left.
    Exited { user_id: String, now_empty: bool },
    /// A participant (re)connected: set up their media (`resumed`: replace what they had).
    Arrived {
        participant_id: String,
        resumed: bool,
    },
    /// A participant is gone: tear down their media.
    Gone { participant_id: String },
    /// A participant muted or unmuted: stop or resume forwarding.
    Muted {
        participant_id: String,
        kind: TrackKind,
        muted: bool,
    },
}

#[derive(Debug, Clone)]
struct Member {
    info: ParticipantInfo,
    conn: Option<ConnId>,
    /// The sign-in session of the connection that holds the place now.
    session_id: String,
    /// Bumped whenever the connection changes, so a stale grace timer does nothing.
    epoch: u64,
}

/// Everyone in one room.
#[derive(Debug, Default)]
pub struct RoomState {
    /// By participant id.
    members: BTreeMap<String, Member>,
}

/// Who is joining.
#[derive(Debug, Clone)]
pub struct Joiner {
    pub conn: ConnId,
    pub user: UserSummary,
    pub role: RoomRole,
    pub joined_at: OffsetDateTime,
    pub audio_muted: bool,
    pub video_muted: bool,
    /// A WHEP viewer: listed like everyone, gets no connection of its own to the room (its
    /// media is set up by the WHEP handler), and never takes over the user's place in the call.
    pub viewer: bool,
    /// The sign-in session it joined with: when that session ends, so does its place.
    pub session_id: String,
}

impl RoomState {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The connection a participant is on, if any.
    pub fn conn_of(&self, pid: &str) -> Option<ConnId> {
        self.members.get(pid).and_then(|m| m.conn)
    }

    /// Whether `conn` speaks for `pid`.
    pub fn is_on(&self, pid: &str, conn: ConnId) -> bool {
        self.conn_of(pid) == Some(conn)
    }

    /// (audio muted, video muted) of a participant.
    pub fn mute_state(&self, pid: &str) -> (bool, bool) {
        self.members
            .get(pid)
            .map_or((false, false), |m| (m.info.audio_muted, m.info.video_muted))
    }

    /// The user's place in the call (viewers aside).
    fn by_user(&self, user_id: &str) -> Option<String> {
        self.members
            .iter()
            .find(|(_, m)| m.info.user.id == user_id && !m.info.viewer)
            .map(|(pid, _)| pid.clone())
    }

    /// Whether the user is in the meeting at all (in the call or watching).
    pub fn has_user(&self, user_id: &str) -> bool {
        self.members.values().any(|m| m.info.user.id == user_id)
    }

    /// How many WHEP viewers a user has open.
    pub fn viewers_of(&self, user_id: &str) -> usize {
        self.members
            .values()
            .filter(|m| m.info.viewer && m.info.user.id == user_id)
            .count()
    }

    /// Whether a participant is a WHEP viewer.
    pub fn is_viewer(&self, pid: &str) -> bool {
        self.members.get(pid).is_some_and(|m| m.info.viewer)
    }

    fn others(&self, except: &str) -> Vec<ParticipantInfo> {
        let mut v: Vec<ParticipantInfo> = self
            .members
            .iter()
            .filter(|(pid, _)| pid.as_str() != except)
            .map(|(_, m)| m.info.clone())
            .collect();
        v.sort_by_key(|p| p.joined_at);
        v
    }

    fn broadcast(&self, except: &str, msg: &ServerMessage, out: &mut Vec<Output>) {
        for (pid, m) in &self.members {
            if pid != except
                && let Some(c) = m.conn
            {
                out.push(Output::Send(c, msg.clone()));
            }
        }
    }

    /// Someone joins. The same user joining again (a dropped connection coming back, or
    /// another device) takes their place back: the old connection is told it was replaced,
    /// the others see nothing. Returns the participant id and what to do.
    pub fn join(
        &mut self,
        j: Joiner,
        new_participant_id: String,
        room_id: &str,
        grace: Duration,
        ice_servers: Vec<convo_shared::signal::IceServer>,
    ) -> (String, Vec<Output>) {
        let mut out = Vec::new();
        let existing = if j.viewer {
            None
        } else {
            self.by_user(&j.user.id)
        };
        let (pid, resumed) = match existing {
            Some(pid) => {
                let m = self.members.get_mut(&pid).expect("found by user");
                let was_away = m.conn.is_none();
                if let Some(old) = m.conn.take()
                    && old != j.conn
                {
                    out.push(Output::Send(
                        old,
                        ServerMessage::Left {
                            reason: LeaveReason::Replaced,
                        },
                    ));
                }
                m.conn = Some(j.conn);
                m.session_id.clone_from(&j.session_id);
                m.epoch += 1;
                if was_away {
                    self.broadcast(
                        &pid,
                        &ServerMessage::ParticipantReconnecting {
                            participant_id: pid.clone(),
                            reconnecting: false,
                        },
                        &mut out,
                    );
                }
                out.push(Output::Arrived {
                    participant_id: pid.clone(),
                    resumed: true,
                });
                (pid, true)
            }
            None => {
                let info = ParticipantInfo {
                    participant_id: new_participant_id.clone(),
                    user: j.user.clone(),
                    role: j.role,
                    joined_at: j.joined_at,
                    audio_muted: j.audio_muted,
                    video_muted: j.video_muted,
                    tracks: Vec::new(),
                    viewer: j.viewer,
                };
                // One entry in the meeting log per person, however many ways they are in.
                let entered = !self.has_user(&j.user.id);
                self.members.insert(
                    new_participant_id.clone(),
                    Member {
                        info: info.clone(),
                        conn: Some(j.conn),
                        session_id: j.session_id.clone(),
                        epoch: 0,
                    },
                );
                self.broadcast(
                    &new_participant_id,
                    &ServerMessage::ParticipantJoined { participant: info },
                    &mut out,
                );
                if entered {
                    out.push(Output::Entered {
                        user_id: j.user.id.clone(),
                    });
                }
                if j.viewer {
                    // Its one peer connection is the WHEP session's; it hears no `joined`.
                    return (new_participant_id, out);
                }
                out.push(Output::Arrived {
                    participant_id: new_participant_id.clone(),
                    resumed: false,
                });
                (new_participant_id, false)
            }
        };
        out.push(Output::Send(
            j.conn,
            ServerMessage::Joined {
                room_id: room_id.to_string(),
                participant_id: pid.clone(),
                resumed,
                participants: self.others(&pid),
                ice_servers,
                grace_seconds: u32::try_from(grace.as_secs()).unwrap_or(u32::MAX),
            },
        ));
        (pid, out)
    }

    /// The participant's connection is gone: keep the place for the grace period.
    pub fn disconnected(&mut self, conn: ConnId, pid: &str) -> Vec<Output> {
        match self.members.get_mut(pid) {
            Some(m) if m.conn == Some(conn) => {
                m.conn = None;
                m.epoch += 1;
                let mut out = vec![Output::StartGrace {
                    participant_id: pid.to_string(),
                    epoch: m.epoch,
                }];
                self.broadcast(
                    pid,
                    &ServerMessage::ParticipantReconnecting {
                        participant_id: pid.to_string(),
                        reconnecting: true,
                    },
                    &mut out,
                );
                out
            }
            _ => Vec::new(),
        }
    }

    /// The grace period of a dropped connection ran out.
    pub fn grace_expired(&mut self, pid: &str, epoch: u64) -> Vec<Output> {
        match self.members.get(pid) {
            Some(m) if m.conn.is_none() && m.epoch == epoch => {
                self.remove(pid, LeaveReason::Disconnected)
            }
            _ => Vec::new(),
        }
    }

    /// The participant on `conn` leaves.
    pub fn leave(&mut self, conn: ConnId, pid: &str) -> Vec<Output> {
        match self.members.get(pid) {
            Some(m) if m.conn == Some(conn) => self.remove(pid, LeaveReason::Left),
            _ => Vec::new(),
        }
    }

    /// Takes a user out whatever their connection (REST leave, removal, room deleted): their
    /// place in the call and every WHEP session they watch with.
    pub fn remove_user(&mut self, user_id: &str, reason: LeaveReason) -> Vec<Output> {
        let pids: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.info.user.id == user_id)
            .map(|(pid, _)| pid.clone())
            .collect();
        pids.iter()
            .flat_map(|pid| self.remove(pid, reason))
            .collect()
    }

    /// Takes out everyone who is in through a session that has ended (signed out, password
    /// changed or reset): call places, WHIP publishers and WHEP viewers alike.
    pub fn remove_sessions(&mut self, ended: &crate::auth::revoke::Revoked) -> Vec<Output> {
        let pids: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| ended.covers(&m.info.user.id, &m.session_id))
            .map(|(pid, _)| pid.clone())
            .collect();
        pids.iter()
            .flat_map(|pid| self.remove(pid, LeaveReason::SessionEnded))
            .collect()
    }

    /// Takes one participant out by id.
    pub fn remove_participant(&mut self, pid: &str, reason: LeaveReason) -> Vec<Output> {
        self.remove(pid, reason)
    }

    /// The user a participant is.
    pub fn user_of(&self, pid: &str) -> Option<&str> {
        self.members.get(pid).map(|m| m.info.user.id.as_str())
    }

    /// Everyone out at once (the room was deleted): each is told, nobody is told of the others.
    pub fn remove_all(&mut self, reason: LeaveReason) -> Vec<Output> {
        let mut out = Vec::new();
        let members = std::mem::take(&mut self.members);
        let mut users: Vec<String> = Vec::new();
        for (pid, m) in members {
            if let Some(c) = m.conn {
                out.push(Output::Send(c, ServerMessage::Left { reason }));
            }
            out.push(Output::Gone {
                participant_id: pid,
            });
            if !users.contains(&m.info.user.id) {
                users.push(m.info.user.id);
            }
        }
        let n = users.len();
        for (i, user_id) in users.into_iter().enumerate() {
            out.push(Output::Exited {
                user_id,
                now_empty: i + 1 == n,
            });
        }
        out
    }

    fn remove(&mut self, pid: &str, reason: LeaveReason) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(m) = self.members.remove(pid) else {
            return out;
        };
        if let Some(c) = m.conn {
            out.push(Output::Send(c, ServerMessage::Left { reason }));
        }
        self.broadcast(
            pid,
            &ServerMessage::ParticipantLeft {
                participant_id: pid.to_string(),
                reason,
            },
            &mut out,
        );
        out.push(Output::Gone {
            participant_id: pid.to_string(),
        });
        // Still watching, or still in the call while a viewer ends: not gone from the meeting.
        if !self.has_user(&m.info.user.id) {
            out.push(Output::Exited {
                user_id: m.info.user.id,
                now_empty: self.members.is_empty(),
            });
        }
        out
    }

    /// Records a published track (newcomers see it in `joined`).
    pub fn set_track(&mut self, pid: &str, track: &convo_shared::signal::TrackInfo) {
        if let Some(m) = self.members.get_mut(pid) {
            m.info.tracks.retain(|t| t.track_id != track.track_id);
            m.info.tracks.push(track.clone());
        }
    }

    pub fn remove_track(&mut self, pid: &str, track_id: &str) {
        if let Some(m) = self.members.get_mut(pid) {
            m.info.tracks.retain(|t| t.track_id != track_id);
        }
    }

    /// To every host in the meeting.
    pub fn to_hosts(&self, msg: &ServerMessage) -> Vec<Output> {
        self.members
            .values()
            .filter(|m| m.info.role == RoomRole::Host)
            .filter_map(|m| m.conn.map(|c| Output::Send(c, msg.clone())))
            .collect()
    }

    /// A chat message goes to everyone, the sender included (as confirmation).
    pub fn chat(&self, message: ChatMessage) -> Vec<Output> {
        let mut out = Vec::new();
        self.broadcast("", &ServerMessage::ChatMessage { message }, &mut out);
        out
    }

    /// Mute state changes go to everyone, the sender included (as confirmation).
    pub fn mute(&mut self, conn: ConnId, pid: &str, kind: TrackKind, muted: bool) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(m) = self.members.get_mut(pid) else {
            return out;
        };
        if m.conn != Some(conn) {
            return out;
        }
        match kind {
            TrackKind::Audio => m.info.audio_muted = muted,
            TrackKind::Video => m.info.video_muted = muted,
            TrackKind::Screen => {}
        }
        for t in m.info.tracks.iter_mut().filter(|t| t.kind == kind) {
            t.muted = muted;
        }
        out.push(Output::Muted {
            participant_id: pid.to_string(),
            kind,
            muted,
        });
        self.broadcast(
            "",
            &ServerMessage::MuteChanged {
                participant_id: pid.to_string(),
                kind,
                muted,
            },
            &mut out,
        );
        out
    }
}

/// Messages a connection may have waiting to go out before it is taken for a client that
/// does not read its socket and closed (it reconnects, or its place goes after the grace).
pub const OUTBOX_LEN: usize = 1024;

/// What a room sends one connection through. Bounded: a client that stops reading cannot make
/// the server keep every message of a busy room for it.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<ServerMessage>,
    overflow: std::sync::Arc<tokio::sync::Notify>,
}

impl Outbox {
    /// The outbox, where its messages come out, and what says it overflowed.
    pub fn new(
        len: usize,
    ) -> (
        Outbox,
        mpsc::Receiver<ServerMessage>,
        std::sync::Arc<tokio::sync::Notify>,
    ) {
        let (tx, rx) = mpsc::channel(len);
        let overflow = std::sync::Arc::new(tokio::sync::Notify::new());
        (
            Outbox {
                tx,
                overflow: overflow.clone(),
            },
            rx,
            overflow,
        )
    }

    /// Queues `msg`; a full outbox closes the connection (nothing is dropped silently).
    pub fn send(&self, msg: ServerMessage) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(msg) {
            tracing::warn!("a client does not read its signaling socket: closed");
            self.overflow.notify_one();
        }
    }
}

/// Commands to a room actor.
#[derive(Debug)]
pub enum Command {
    Join {
        joiner: Joiner,
        tx: Outbox,
        reply: oneshot::Sender<String>,
    },
    Leave {
        conn: ConnId,
        participant_id: String,
    },
    Disconnected {
        conn: ConnId,
        participant_id: String,
    },
    Mute {
        conn: ConnId,
        participant_id: String,
        kind: TrackKind,
        muted: bool,
    },
    GraceExpired {
        participant_id: String,
        epoch: u64,
    },
    RemoveUser {
        user_id: String,
        reason: LeaveReason,
    },
    /// Sign-in sessions ended: whoever is in through them goes.
    SessionsEnded(crate::auth::revoke::Revoked),
    /// A chat message (already kept) for everyone in the meeting.
    Chat {
        message: ChatMessage,
    },
    /// A waiting-room message for the hosts in the meeting.
    ToHosts(ServerMessage),
    /// Messages for one connection, after everything the room sent it so far.
    Tell {
        conn: ConnId,
        msgs: Vec<ServerMessage>,
    },
    /// SDP and ICE from a participant's client.
    Signal {
        conn: ConnId,
        participant_id: String,
        msg: ClientMessage,
    },
    /// From webrtc-rs callbacks and forwarding tasks.
    Media(MediaEvent),
    /// A WHIP publisher: joins as a participant without signaling; replies (participant id,
    /// SDP answer).
    WhipPublish {
        joiner: Joiner,
        sdp: String,
        reply: oneshot::Sender<Result<(String, String), String>>,
    },
    /// A WHEP viewer of `pinned` (or of the active speaker), admitted like any joiner: it is
    /// listed as a participant (`viewer`). Replies (participant id, SDP answer).
    WhepView {
        joiner: Joiner,
        pinned: Option<String>,
        /// The size the viewer draws the camera at (the simulcast layer follows it).
        view: Option<crate::forward::ViewSize>,
        sdp: String,
        reply: oneshot::Sender<Result<(String, String), crate::sfu::ViewError>>,
    },
    /// Ends a WHIP or WHEP session: its owner (`user_id`) ends it, a host or an admin
    /// (`manager`) removes it. Replies whether there was one.
    EndResource {
        id: String,
        user_id: String,
        manager: bool,
        reply: oneshot::Sender<bool>,
    },
    Close,
}

/// WHEP viewers one person may have open in one room (each holds a peer connection).
pub const MAX_VIEWERS_PER_USER: usize = 4;

/// The live rooms, each an actor. Sends go through the registry's lock so that a room actor
/// can retire (when empty) without a command slipping past it.
#[derive(Default)]
pub struct Rooms {
    live: Mutex<HashMap<String, mpsc::UnboundedSender<Command>>>,
}

impl Rooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Command>>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends to the room's actor, starting one if the room is not live.
    pub fn send(&self, state: &AppState, room_id: &str, cmd: Command) {
        let mut live = self.lock();
        let cmd = match live.get(room_id) {
            Some(tx) => match tx.send(cmd) {
                Ok(()) => return,
                Err(mpsc::error::SendError(cmd)) => cmd,
            },
            None => cmd,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(cmd);
        live.insert(room_id.to_string(), tx.clone());
        tokio::spawn(run(state.clone(), room_id.to_string(), tx, rx));
    }

    /// Sends only if the room is live (no actor is started for it).
    pub fn notify(&self, room_id: &str, cmd: Command) {
        if let Some(tx) = self.lock().get(room_id) {
            let _ = tx.send(cmd);
        }
    }

    /// Sends to every live room (one command each, made by `cmd`).
    pub fn notify_all(&self, cmd: impl Fn() -> Command) {
        for tx in self.lock().values() {
            let _ = tx.send(cmd());
        }
    }

    /// Called by an empty actor: retires it unless a command is waiting.
    fn retire(
        &self,
        room_id: &str,
        me: &mpsc::UnboundedSender<Command>,
        rx: &mut mpsc::UnboundedReceiver<Command>,
    ) -> bool {
        let mut live = self.lock();
        if !rx.is_empty() {
            return false;
        }
        if live.get(room_id).is_some_and(|tx| tx.same_channel(me)) {
            live.remove(room_id);
        }
        rx.close();
        true
    }

    pub fn live_count(&self) -> usize {
        self.lock().len()
    }
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms")
            .field("live", &self.live_count())
            .finish()
    }
}

/// The actor: owns one [`RoomState`], the room's media, and the connections' outboxes;
/// carries out outputs.
async fn run(
    state: AppState,
    room_id: String,
    me: mpsc::UnboundedSender<Command>,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let mut room = RoomState::default();
    let mut outboxes: HashMap<ConnId, Outbox> = HashMap::new();
    let grace = state.config.reconnect_grace;
    let sink = me.clone();
    let mut media = RoomMedia::new(
        state.sfu.clone(),
        state.config.ice_servers.clone(),
        std::sync::Arc::new(move |e| {
            let _ = sink.send(Command::Media(e));
        }),
    );
    tracing::debug!(%room_id, "room live");
    loop {
        let Some(cmd) = rx.recv().await else { break };
        let mut outgoing: Vec<Outgoing> = Vec::new();
        let outputs = match cmd {
            Command::Join { joiner, tx, reply } => {
                outboxes.insert(joiner.conn, tx);
                let (pid, out) = room.join(
                    joiner,
                    uuid::Uuid::new_v4().to_string(),
                    &room_id,
                    grace,
                    state.config.ice_servers.clone(),
                );
                let _ = reply.send(pid);
                out
            }
            Command::Leave {
                conn,
                participant_id,
            } => room.leave(conn, &participant_id),
            Command::Disconnected {
                conn,
                participant_id,
            } => {
                outboxes.remove(&conn);
                room.disconnected(conn, &participant_id)
            }
            Command::Mute {
                conn,
                participant_id,
                kind,
                muted,
            } => room.mute(conn, &participant_id, kind, muted),
            Command::GraceExpired {
                participant_id,
                epoch,
            } => room.grace_expired(&participant_id, epoch),
            Command::RemoveUser { user_id, reason } => room.remove_user(&user_id, reason),
            Command::SessionsEnded(ended) => room.remove_sessions(&ended),
            Command::Chat { message } => room.chat(message),
            Command::ToHosts(msg) => room.to_hosts(&msg),
            Command::Tell { conn, msgs } => {
                msgs.into_iter().map(|m| Output::Send(conn, m)).collect()
            }
            Command::Close => room.remove_all(LeaveReason::Removed),
            Command::Signal {
                conn,
                participant_id: pid,
                msg,
            } => {
                if room.is_on(&pid, conn) {
                    outgoing = signal(&mut media, &pid, msg).await;
                }
                Vec::new()
            }
            Command::Media(
                MediaEvent::PublisherGone { participant_id }
                | MediaEvent::ViewerGone {
                    viewer_id: participant_id,
                },
            ) => room.remove_participant(&participant_id, LeaveReason::Disconnected),
            Command::Media(event) => {
                outgoing = media_event(&mut media, &room, event).await;
                Vec::new()
            }
            Command::WhipPublish { joiner, sdp, reply } => {
                let (pid, out) = room.join(
                    joiner,
                    uuid::Uuid::new_v4().to_string(),
                    &room_id,
                    grace,
                    Vec::new(),
                );
                // Publish-only before `Arrived` sets up media, so it gets no subscriptions.
                match media.whip_offer(&pid, sdp).await {
                    Ok(answer) => {
                        let _ = reply.send(Ok((pid, answer)));
                        out
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        let mut out = out;
                        out.extend(room.remove_participant(&pid, LeaveReason::Disconnected));
                        out
                    }
                }
            }
            Command::WhepView {
                joiner,
                pinned,
                view,
                sdp,
                reply,
            } => {
                let viewer_id = uuid::Uuid::new_v4().to_string();
                let result = if room.viewers_of(&joiner.user.id) >= MAX_VIEWERS_PER_USER {
                    Err(crate::sfu::ViewError::TooManyViewers(format!(
                        "You watch this room {MAX_VIEWERS_PER_USER} times already; end one first."
                    )))
                } else {
                    media.whep_offer(&viewer_id, pinned, view, sdp).await
                };
                match result {
                    Ok(answer) => {
                        let (pid, out) = room.join(joiner, viewer_id, &room_id, grace, Vec::new());
                        let _ = reply.send(Ok((pid, answer)));
                        out
                    }
                    Err(e) => {
                        // The seat taken when admitting the viewer goes back, unless the user
                        // is in the meeting some other way.
                        if !room.has_user(&joiner.user.id)
                            && let Err(e) =
                                crate::meetings::release_seat(&state.db, &room_id, &joiner.user.id)
                                    .await
                        {
                            tracing::error!(error = %e, %room_id, "seat of a refused viewer kept");
                        }
                        let _ = reply.send(Err(e));
                        Vec::new()
                    }
                }
            }
            Command::EndResource {
                id,
                user_id,
                manager,
                reply,
            } => match room.user_of(&id).map(|u| u == user_id) {
                Some(own) if own || manager => {
                    let _ = reply.send(true);
                    let reason = if own {
                        LeaveReason::Left
                    } else {
                        LeaveReason::Removed
                    };
                    room.remove_participant(&id, reason)
                }
                _ => {
                    let _ = reply.send(false);
                    Vec::new()
                }
            },
        };
        // Persist before telling anyone, so whoever hears of a join or a leave can already
        // read it in the meeting logs.
        let (persist, rest): (Vec<Output>, Vec<Output>) = outputs
            .into_iter()
            .partition(|o| matches!(o, Output::Entered { .. } | Output::Exited { .. }));
        for o in persist.into_iter().chain(rest) {
            match o {
                Output::Send(conn, msg) => {
                    if let Some(tx) = outboxes.get(&conn) {
                        tx.send(msg);
                    }
                }
                Output::StartGrace {
                    participant_id,
                    epoch,
                } => {
                    let tx = me.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(grace).await;
                        let _ = tx.send(Command::GraceExpired {
                            participant_id,
                            epoch,
                        });
                    });
                }
                Output::Entered { user_id } => {
                    if let Err(e) =
                        crate::meetings::record_join(&state.db, &room_id, &user_id).await
                    {
                        tracing::error!(error = %e, %room_id, "meeting log: join not recorded");
                    }
                }
                Output::Exited { user_id, now_empty } => {
                    if let Err(e) =
                        crate::meetings::record_leave(&state.db, &room_id, &user_id, now_empty)
                            .await
                    {
                        tracing::error!(error = %e, %room_id, "meeting log: leave not recorded");
                    }
                }
                Output::Arrived {
                    participant_id,
                    resumed,
                } => {
                    tracing::debug!(%participant_id, resumed, "arrived");
                    if resumed {
                        // A new connection brings new peer connections: start its media afresh.
                        outgoing.extend(media.left(&participant_id).await);
                    }
                    outgoing.extend(media.joined(&participant_id).await);
                }
                Output::Gone { participant_id } => {
                    outgoing.extend(media.left(&participant_id).await);
                    media.viewer_gone(&participant_id).await;
                }
                Output::Muted {
                    participant_id,
                    kind,
                    muted,
                } => media.mute(&participant_id, kind, muted),
            }
        }
        for (pid, msg) in outgoing {
            match &msg {
                ServerMessage::TrackPublished {
                    participant_id,
                    track,
                } => room.set_track(participant_id, track),
                ServerMessage::TrackUnpublished {
                    participant_id,
                    track_id,
                } => room.remove_track(participant_id, track_id),
                _ => {}
            }
            if let Some(tx) = room.conn_of(&pid).and_then(|c| outboxes.get(&c)) {
                tx.send(msg);
            }
        }
        if room.is_empty()
            && media.viewer_count() == 0
            && state.rooms.retire(&room_id, &me, &mut rx)
        {
            break;
        }
    }
    media.close().await;
    tracing::debug!(%room_id, "room retired");
}

async fn signal(media: &mut RoomMedia, pid: &str, msg: ClientMessage) -> Vec<Outgoing> {
    use convo_shared::signal::Transport;
    let wrong = |m: &str| {
        vec![(
            pid.to_string(),
            ServerMessage::Error {
                code: "wrong_transport".into(),
                message: m.into(),
            },
        )]
    };
    match msg {
        ClientMessage::Offer {
            target: Transport::Publish,
            sdp,
        } => media.publish_offer(pid, sdp).await,
        ClientMessage::Offer { .. } => {
            wrong("Offers go on the `publish` connection; the server offers on `subscribe`.")
        }
        ClientMessage::Answer {
            target: Transport::Subscribe,
            sdp,
        } => media.subscribe_answer(pid, sdp).await,
        ClientMessage::Answer { .. } => wrong("Answers go on the `subscribe` connection."),
        ClientMessage::Candidate { target, candidate } => {
            media.remote_candidate(pid, target, &candidate).await
        }
        ClientMessage::View {
            track_id,
            width,
            height,
        } => media.view(pid, &track_id, width, height).await,
        ClientMessage::SourceSize {
            kind,
            width,
            height,
        } => media.source_size(pid, kind, width, height),
        ClientMessage::SubscribeReady { offer } => media.subscribe_ready(pid, offer).await,
        _ => Vec::new(),
    }
}

async fn media_event(media: &mut RoomMedia, room: &RoomState, e: MediaEvent) -> Vec<Outgoing> {
    match e {
        MediaEvent::LocalCandidate {
            participant_id,
            target,
            candidate,
        } => vec![(
            participant_id,
            ServerMessage::Candidate { target, candidate },
        )],
        MediaEvent::TrackArrived {
            participant_id,
            track,
        } => {
            let (audio_muted, video_muted) = room.mute_state(&participant_id);
            media
                .track_arrived(&participant_id, track, audio_muted, video_muted)
                .await
        }
        MediaEvent::AudioLevel {
            participant_id,
            level,
        } => media.audio_level(&participant_id, level).await,
        MediaEvent::ViewerWantsKeyframe { viewer_id } => {
            media.viewer_wants_keyframe(&viewer_id).await;
            Vec::new()
        }
        // Handled by the actor itself (they change who is in the room).
        MediaEvent::PublisherGone { .. } | MediaEvent::ViewerGone { .. } => Vec::new(),
        MediaEvent::TrackEnded {
            participant_id,
            track_id,
            fan,
        } => media.track_ended(&participant_id, &track_id, &fan).await,
        MediaEvent::KeyframeWanted {
            track_id,
            subscriber,
        } => {
            media.keyframe_wanted(&track_id, &subscriber).await;
            Vec::new()
        }
        MediaEvent::Tick => media.tick().await,
        MediaEvent::PublishReady {
            participant_id,
            offer,
            pc,
        } => media.publish_ready(&participant_id, offer, &pc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_outbox_closes_the_connection_instead_of_growing() {
        let (outbox, mut rx, overflow) = Outbox::new(2);
        let pong = || ServerMessage::Pong { nonce: 1 };
        outbox.send(pong());
        outbox.send(pong());
        // Nothing said yet: both fit.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), overflow.notified())
                .await
                .is_err()
        );
        outbox.send(pong());
        tokio::time::timeout(Duration::from_secs(5), overflow.notified())
            .await
            .expect("the overflow is told");
        // What was queued is still there, in order; nothing more was kept.
        assert_eq!(rx.recv().await, Some(pong()));
        assert_eq!(rx.recv().await, Some(pong()));
        assert!(rx.try_recv().is_err());
    }

    fn joiner(conn: ConnId, user: &str) -> Joiner {
        Joiner {
            conn,
            user: UserSummary {
                id: user.into(),
                username: user.into(),
                display_name: user.into(),
                avatar_url: None,
            },
            role: RoomRole::Member,
            joined_at: OffsetDateTime::UNIX_EPOCH,
            audio_muted: false,
            video_muted: false,
            viewer: false,
            session_id: format!("session of {user}"),
        }
    }

    const G: Duration = Duration::from_secs(15);

    fn sends_to(out: &[Output], conn: ConnId) -> Vec<&ServerMessage> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send(c, m) if *c == conn => Some(m),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn join_announces_to_others_and_lists_them_to_the_joiner() {
        let mut r = RoomState::default();
        let (a, out) = r.join(joiner(1, "a"), "pa".into(), "room", G, vec![]);
        assert_eq!(a, "pa");
        assert!(out.contains(&Output::Entered {
            user_id: "a".into()
        }));
        let (_, out) = r.join(joiner(2, "b"), "pb".into(), "room", G, vec![]);
        let to_a = sends_to(&out, 1);
        assert!(
            matches!(to_a[..], [ServerMessage::ParticipantJoined { participant }] if participant.participant_id == "pb")
        );
        match sends_to(&out, 2)[..] {
            [
                ServerMessage::Joined {
                    participants,
                    resumed: false,
                    ..
                },
            ] => {
                assert_eq!(participants.len(), 1);
                assert_eq!(participants[0].participant_id, "pa");
            }
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reconnect_within_grace_is_seen_as_reconnecting_not_leaving() {
        let mut r = RoomState::default();
        r.join(joiner(1, "a"), "pa".into(), "room", G, vec![]);
        r.join(joiner(2, "b"), "pb".into(), "room", G, vec![]);
        let out = r.disconnected(2, "pb");
        assert_eq!(
            out[0],
            Output::StartGrace {
                participant_id: "pb".into(),
                epoch: 1
            }
        );
        let reconnecting = |on: bool| ServerMessage::ParticipantReconnecting {
            participant_id: "pb".into(),
            reconnecting: on,
        };
        assert_eq!(sends_to(&out, 1), vec![&reconnecting(true)]);
        // b comes back on connection 3 before the timer fires: a hears it is back.
        let (pid, out) = r.join(joiner(3, "b"), "ignored".into(), "room", G, vec![]);
        assert_eq!(pid, "pb");
        assert_eq!(sends_to(&out, 1), vec![&reconnecting(false)], "{out:?}");
        // A new connection taking over a live one (another device) is not a reconnection.
        let (_, out) = r.join(joiner(4, "b"), "ignored".into(), "room", G, vec![]);
        assert!(sends_to(&out, 1).is_empty(), "{out:?}");
        let (_, out) = r.join(joiner(3, "b"), "ignored".into(), "room", G, vec![]);
        assert!(matches!(
            sends_to(&out, 3)[..],
            [ServerMessage::Joined { resumed: true, .. }]
        ));
        // The stale timer does nothing.
        assert!(r.grace_expired("pb", 1).is_empty());
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn grace_expiry_removes_and_announces() {
        let mut r = RoomState::default();
        r.join(joiner(1, "a"), "pa".into(), "room", G, vec![]);
        r.join(joiner(2, "b"), "pb".into(), "room", G, vec![]);
        r.disconnected(2, "pb");
        let out = r.grace_expired("pb", 1);
        assert!(matches!(
            sends_to(&out, 1)[..],
            [ServerMessage::ParticipantLeft { participant_id, reason: LeaveReason::Disconnected }] if participant_id == "pb"
        ));
        assert!(out.contains(&Output::Exited {
            user_id: "b".into(),
            now_empty: false
        }));
        let out = r.leave(1, "pa");
        assert!(out.contains(&Output::Exited {
            user_id: "a".into(),
            now_empty: true
        }));
        assert!(r.is_empty());
    }

    #[test]
    fn second_device_replaces_the_first() {
        let mut r = RoomState::default();
        r.join(joiner(1, "a"), "pa".into(), "room", G, vec![]);
        let (pid, out) = r.join(joiner(2, "a"), "x".into(), "room", G, vec![]);
        assert_eq!(pid, "pa");
        assert_eq!(
            sends_to(&out, 1),
            vec![&ServerMessage::Left {
                reason: LeaveReason::Replaced
            }]
        );
        // The old connection can no longer act for the participant.
        assert!(r.leave(1, "pa").is_empty());
        assert!(r.mute(1, "pa", TrackKind::Audio, true).is_empty());
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn mute_reaches_everyone() {
        let mut r = RoomState::default();
        r.join(joiner(1, "a"), "pa".into(), "room", G, vec![]);
        r.join(joiner(2, "b"), "pb".into(), "room", G, vec![]);
        let out = r.mute(2, "pb", TrackKind::Audio, true);
        assert_eq!(sends_to(&out, 1).len(), 1);
        assert_eq!(sends_to(&out, 2).len(), 1);
        let (_, out) = r.join(joiner(3, "c"), "pc".into(), "room", G, vec![]);
        match sends_to(&out, 3)[..] {
            [ServerMessage::Joined { participants, .. }] => {
                let b = participants
                    .iter()
                    .find(|p| p.participant_id == "pb")
                    .expect("b");
                assert!(b.audio_muted);
            }
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_viewer_is_listed_and_never_takes_over_the_call() {
        let mut r = RoomState::default();
        r.join(joiner(1, "a"), "pa".into(), "room", G, vec![]);
        // A watches by WHEP too: a second entry, announced to everyone, no log entry, no media
        // set up for it by the room, and A's call is untouched.
        let mut v = joiner(2, "a");
        v.viewer = true;
        let (vid, out) = r.join(v, "va".into(), "room", G, vec![]);
        assert_eq!(vid, "va");
        assert!(r.is_viewer("va") && !r.is_viewer("pa"));
        assert!(
            matches!(sends_to(&out, 1)[..], [ServerMessage::ParticipantJoined { participant }] if participant.viewer)
        );
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::Entered { .. } | Output::Arrived { .. }))
        );
        assert_eq!(r.conn_of("pa"), Some(1));
        // The call ends; A is still in the meeting (watching): no exit is logged.
        let out = r.leave(1, "pa");
        assert!(!out.iter().any(|o| matches!(o, Output::Exited { .. })));
        // Removing the user takes every way they are in.
        r.join(joiner(3, "a"), "pa2".into(), "room", G, vec![]);
        let out = r.remove_user("a", LeaveReason::Removed);
        let gone: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Output::Gone { participant_id } => Some(participant_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(gone.len(), 2, "{out:?}");
        assert_eq!(
            out.iter()
                .filter(|o| matches!(
                    o,
                    Output::Exited {
                        now_empty: true,
                        ..
                    }
                ))
                .count(),
            1
        );
        assert!(r.is_empty());
    }
}
