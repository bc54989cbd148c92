//! Signaling: the authenticated WebSocket at `/api/ws` through which clients join rooms and
//! learn who else is there. One socket per client; messages are `convo_shared::signal`.

pub mod lobby;
pub mod room;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use convo_shared::ErrorCode;
use convo_shared::signal::{
    BEARER_SUBPROTOCOL_PREFIX, ClientMessage, Envelope, PROTOCOL_VERSION, SUBPROTOCOL,
    ServerMessage,
};
use tokio::sync::{broadcast, oneshot};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::{AuthUser, authenticate_token};
use crate::error::ApiError;
use room::{Command, ConnId, Joiner};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ws))
}

/// Largest message accepted (an SDP with many candidates fits comfortably).
const MAX_MESSAGE: usize = 64 * 1024;
/// Time allowed for the `auth` message when the token did not come as a subprotocol.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// The server pings this often; a connection silent for three intervals is dropped.
const PING_EVERY: Duration = Duration::from_secs(15);

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// A fresh connection number (signaling sockets, WHIP sessions).
pub fn next_conn() -> ConnId {
    NEXT_CONN.fetch_add(1, Ordering::Relaxed)
}

/// The signaling WebSocket. Authenticate with the subprotocols `convo.v1` and
/// `bearer.<access token>`, or with an `auth` message first. See `convo_shared::signal`.
#[utoipa::path(get, path = "/api/ws", tag = "signaling",
    responses(
        (status = 101, description = "Switching to the signaling WebSocket"),
        (status = 401, body = convo_shared::ErrorBody, description = "The subprotocol token is not valid"),
        (status = 400, body = convo_shared::ErrorBody, description = "Not a WebSocket upgrade"),
    ))]
async fn ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            ErrorCode::InvalidBody,
            "Connect with a WebSocket client (Upgrade: websocket).",
        )
        .into_response();
    };
    let token = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(BEARER_SUBPROTOCOL_PREFIX))
        .map(str::to_string);
    let user = match token {
        Some(t) => match authenticate_token(&state, &t).await {
            Ok(u) => Some(u),
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    upgrade
        .protocols([SUBPROTOCOL])
        .max_message_size(MAX_MESSAGE)
        // Checked on the frame's header, before its payload is read and held.
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| connection(state, socket, user))
}

fn error(code: &str, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error {
        code: code.to_string(),
        message: message.into(),
    }
}

fn api_error(e: &ApiError) -> ServerMessage {
    error(e.code.as_str(), e.message.clone())
}

/// A message that cannot be written within this long (the client stopped reading and its
/// socket's buffers are full) ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

async fn send(socket: &mut WebSocket, msg: ServerMessage) -> Result<(), axum::Error> {
    // Serialising our own message types cannot fail.
    let text = serde_json::to_string(&Envelope::new(msg)).unwrap_or_default();
    match tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Text(text.into()))).await {
        Ok(sent) => sent,
        Err(_) => {
            tracing::debug!("a signaling write timed out: the client does not read");
            Err(axum::Error::new(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            )))
        }
    }
}

/// A frame that is not a valid message: the error code and message to answer with.
type BadFrame = (&'static str, String);

/// Parses one frame.
fn parse(text: &str) -> Result<ClientMessage, BadFrame> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| {
        (
            "malformed_json",
            "A message is one JSON object.".to_string(),
        )
    })?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err((
                "unsupported_version",
                format!("Protocol version {v} is not spoken here; use {PROTOCOL_VERSION}."),
            ));
        }
        None => {
            return Err((
                "invalid_message",
                "A message needs the protocol version `v`.".to_string(),
            ));
        }
    }
    serde_json::from_value::<Envelope<ClientMessage>>(value)
        .map(|e| e.msg)
        .map_err(|e| ("invalid_message", format!("Not a valid message: {e}")))
}

/// Where a connection is.
struct InRoom {
    room_id: String,
    participant_id: String,
}

/// A connection in a room's waiting room: what it asked to join with, and the host's answer
/// to come.
struct Waiting {
    request_id: String,
    join: JoinAsk,
    answer: oneshot::Receiver<bool>,
}

/// What a `join` asked for.
#[derive(Debug, Clone)]
struct JoinAsk {
    room_id: String,
    password: Option<String>,
    audio_muted: bool,
    video_muted: bool,
}

/// Tells the hosts in the meeting (if it is in session) about the waiting room.
fn to_hosts(state: &AppState, room_id: &str, msg: ServerMessage) {
    state.rooms.notify(room_id, Command::ToHosts(msg));
}

async fn connection(state: AppState, mut socket: WebSocket, user: Option<AuthUser>) {
    let conn: ConnId = next_conn();
    let user = match user {
        Some(u) => u,
        None => match wait_for_auth(&state, &mut socket).await {
            Some(u) => u,
            None => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        },
    };
    if send(
        &mut socket,
        ServerMessage::Ready {
            user_id: user.user_id.clone(),
        },
    )
    .await
    .is_err()
    {
        return;
    }
    let (tx, mut rx, overflow) = room::Outbox::new(room::OUTBOX_LEN);
    let mut here: Option<InRoom> = None;
    let mut waiting: Option<Waiting> = None;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut silent_ticks = 0u32;
    // Listening before asking once more: a session that ended since the token was checked is
    // either announced to us or seen by the question.
    let mut ended = state.revocations.subscribe();
    let mut session_ended = !still_live(&state, &user).await;
    let mut recheck = tokio::time::Instant::now() + until_expiry(user.token_expires_at);
    while !session_ended {
        tokio::select! {
            news = ended.recv() => {
                session_ended = match news {
                    Ok(r) => r.covers(&user.user_id, &user.session_id),
                    // Announcements were missed: ask the database.
                    Err(broadcast::error::RecvError::Lagged(_)) => !still_live(&state, &user).await,
                    Err(broadcast::error::RecvError::Closed) => false,
                };
            }
            () = tokio::time::sleep_until(recheck) => {
                // The access token this connection was opened with has expired: carry on
                // while its session lives, ask again one token's lifetime later.
                session_ended = !still_live(&state, &user).await;
                recheck = tokio::time::Instant::now() + state.config.access_token_ttl.max(Duration::from_secs(1));
            }
            frame = socket.recv() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        tracing::debug!(conn, error = %e, "signaling socket failed");
                        break;
                    }
                    None => break,
                };
                silent_ticks = 0;
                let text = match frame {
                    Message::Text(t) => t,
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Binary(_) => {
                        if send(&mut socket, error("invalid_message", "Messages are JSON text frames.")).await.is_err() {
                            break;
                        }
                        continue;
                    }
                };
                let reply = match parse(text.as_str()) {
                    Err((code, message)) => Some(error(code, message)),
                    Ok(msg) => handle(&state, &user, conn, &tx, &mut here, &mut waiting, msg).await,
                };
                if let Some(reply) = reply
                    && send(&mut socket, reply).await.is_err()
                {
                    break;
                }
            }
            answer = async {
                match waiting.as_mut() {
                    Some(w) => (&mut w.answer).await.unwrap_or(false),
                    None => std::future::pending().await,
                }
            } => {
                let Some(w) = waiting.take() else { continue };
                let reply = if answer {
                    if send(&mut socket, ServerMessage::Admitted { room_id: w.join.room_id.clone() }).await.is_err() {
                        break;
                    }
                    enter(&state, &user, conn, &tx, &mut here, w.join, true).await
                } else {
                    Some(error(
                        ErrorCode::AdmissionDenied.as_str(),
                        "The host did not let you in.",
                    ))
                };
                if let Some(reply) = reply
                    && send(&mut socket, reply).await.is_err()
                {
                    break;
                }
            }
            Some(msg) = rx.recv() => {
                if let ServerMessage::Left { .. } = msg {
                    here = None;
                }
                if send(&mut socket, msg).await.is_err() {
                    tracing::debug!(conn, "signaling socket: a send failed");
                    break;
                }
            }
            () = overflow.notified() => break,
            _ = ping.tick() => {
                silent_ticks += 1;
                if silent_ticks > 3 {
                    tracing::debug!(conn, "signaling socket silent for a minute: closed");
                    break;
                }
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    if session_ended {
        tracing::debug!(conn, "the session ended: signaling connection closed");
        if here.is_some() {
            let _ = send(
                &mut socket,
                ServerMessage::Left {
                    reason: convo_shared::signal::LeaveReason::SessionEnded,
                },
            )
            .await;
        }
        let _ = send(
            &mut socket,
            error(
                ErrorCode::SessionEnded.as_str(),
                "Your session has ended (signed out, or the password was changed): sign in again.",
            ),
        )
        .await;
        let _ = tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Close(None))).await;
    }
    if let Some(r) = here {
        // An ended session keeps no place for a reconnection.
        let participant_id = r.participant_id;
        let cmd = if session_ended {
            Command::Leave {
                conn,
                participant_id,
            }
        } else {
            Command::Disconnected {
                conn,
                participant_id,
            }
        };
        state.rooms.notify(&r.room_id, cmd);
    }
    if let Some(w) = waiting
        && state.lobby.withdraw(&w.join.room_id, &w.request_id)
    {
        to_hosts(
            &state,
            &w.join.room_id,
            ServerMessage::KnockResolved {
                request_id: w.request_id,
                admitted: false,
            },
        );
    }
}

/// Whether the connection's session is still live; a database that cannot answer keeps the
/// connection (it is asked again at the next expiry).
async fn still_live(state: &AppState, user: &AuthUser) -> bool {
    crate::auth::revoke::session_live(state, &user.user_id, &user.session_id)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not check a connection's session");
            true
        })
}

/// How long until `expires_at` (unix seconds); at least a second.
fn until_expiry(expires_at: i64) -> Duration {
    let left_ms = expires_at
        .saturating_mul(1000)
        .saturating_sub(crate::db::now_ms());
    Duration::from_millis(u64::try_from(left_ms).unwrap_or(0).max(1000))
}

/// Joins a room (its rules apply; `let_in`: the host let us in from the waiting room). The
/// answer comes from the room (`joined`); an error is returned.
async fn enter(
    state: &AppState,
    user: &AuthUser,
    conn: ConnId,
    tx: &room::Outbox,
    here: &mut Option<InRoom>,
    ask: JoinAsk,
    let_in: bool,
) -> Option<ServerMessage> {
    if let Some(r) = here.as_ref()
        && r.room_id != ask.room_id
    {
        return Some(error(
            "already_in_room",
            "Leave the current room before joining another.",
        ));
    }
    let participant =
        match crate::rooms::admit(state, &ask.room_id, user, ask.password, let_in).await {
            Ok(p) => p,
            Err(e) => return Some(api_error(&e)),
        };
    let host = participant.role == convo_shared::rooms::RoomRole::Host;
    let (reply_tx, reply_rx) = oneshot::channel();
    state.rooms.send(
        state,
        &participant.room_id,
        Command::Join {
            joiner: Joiner {
                conn,
                user: participant.user,
                role: participant.role,
                joined_at: participant.joined_at,
                audio_muted: ask.audio_muted,
                video_muted: ask.video_muted,
                viewer: false,
                session_id: user.session_id.clone(),
            },
            tx: tx.clone(),
            reply: reply_tx,
        },
    );
    match reply_rx.await {
        Ok(participant_id) => {
            if host {
                // Whoever is already waiting (after `joined`, which the room sends first).
                let msgs: Vec<ServerMessage> = state
                    .lobby
                    .waiting(&participant.room_id)
                    .into_iter()
                    .map(|(request_id, user)| ServerMessage::Knocking { request_id, user })
                    .collect();
                if !msgs.is_empty() {
                    state
                        .rooms
                        .notify(&participant.room_id, Command::Tell { conn, msgs });
                }
            }
            *here = Some(InRoom {
                room_id: participant.room_id,
                participant_id,
            });
            None
        }
        Err(_) => Some(error(
            "internal",
            "The room could not be joined; try again.",
        )),
    }
}

async fn wait_for_auth(state: &AppState, socket: &mut WebSocket) -> Option<AuthUser> {
    let deadline = tokio::time::sleep(AUTH_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => {
                let _ = send(socket, error("unauthenticated", "Send `auth` with an access token first.")).await;
                return None;
            }
            frame = socket.recv() => {
                let Some(Ok(frame)) = frame else { return None };
                let Message::Text(text) = frame else { continue };
                let reply = match parse(text.as_str()) {
                    Ok(ClientMessage::Auth { token }) => match authenticate_token(state, &token).await {
                        Ok(u) => return Some(u),
                        Err(e) => api_error(&e),
                    },
                    Ok(ClientMessage::Ping { nonce }) => ServerMessage::Pong { nonce },
                    Ok(_) => error("unauthenticated", "Send `auth` with an access token first."),
                    Err((code, message)) => error(code, message),
                };
                if send(socket, reply).await.is_err() {
                    return None;
                }
            }
        }
    }
}

/// Acts on one message; answers directly when there is something to say to the sender only.
async fn handle(
    state: &AppState,
    user: &AuthUser,
    conn: ConnId,
    tx: &room::Outbox,
    here: &mut Option<InRoom>,
    waiting: &mut Option<Waiting>,
    msg: ClientMessage,
) -> Option<ServerMessage> {
    let not_in_room = || error("not_in_room", "Join a room first.");
    match msg {
        ClientMessage::Ping { nonce } => Some(ServerMessage::Pong { nonce }),
        ClientMessage::Auth { .. } => Some(error(
            "already_authenticated",
            "This connection is already signed in.",
        )),
        ClientMessage::Join {
            room_id,
            password,
            audio_muted,
            video_muted,
        } => {
            if waiting.is_some() {
                return Some(error(
                    "already_waiting",
                    "You are in a waiting room already; wait for the host, or leave.",
                ));
            }
            let ask = JoinAsk {
                room_id,
                password,
                audio_muted,
                video_muted,
            };
            let reply = enter(state, user, conn, tx, here, ask.clone(), false).await;
            let must_wait = reply.as_ref().is_some_and(|r| {
                matches!(r, ServerMessage::Error { code, .. } if code == ErrorCode::WaitingRoom.as_str())
            });
            if !must_wait {
                return reply;
            }
            // Into the waiting room: the hosts in the meeting hear of it (a host who joins
            // later is told on joining).
            let me = match crate::users::summary_of(state, &user.user_id).await {
                Ok(me) => me,
                Err(e) => return Some(api_error(&e)),
            };
            let (request_id, answer) = state.lobby.knock(&ask.room_id, me.clone());
            to_hosts(
                state,
                &ask.room_id,
                ServerMessage::Knocking {
                    request_id: request_id.clone(),
                    user: me,
                },
            );
            let room_id = ask.room_id.clone();
            *waiting = Some(Waiting {
                request_id,
                join: ask,
                answer,
            });
            Some(ServerMessage::Waiting { room_id })
        }
        msg @ (ClientMessage::Admit { .. } | ClientMessage::Deny { .. }) => {
            let Some(r) = here.as_ref() else {
                return Some(not_in_room());
            };
            let (request_id, admitted) = match msg {
                ClientMessage::Admit { request_id } => (request_id, true),
                ClientMessage::Deny { request_id } => (request_id, false),
                _ => return None,
            };
            let role = match crate::rooms::visible_role(state, &r.room_id, user).await {
                Ok(role) => role,
                Err(e) => return Some(api_error(&e)),
            };
            if role != Some(convo_shared::rooms::RoomRole::Host) && !user.is_admin() {
                return Some(error(
                    ErrorCode::Forbidden.as_str(),
                    "Only the host lets people in.",
                ));
            }
            if !state.lobby.answer(&r.room_id, &request_id, admitted) {
                return Some(error(
                    "no_such_request",
                    "Nobody is waiting with that request; they may have left or been let in.",
                ));
            }
            to_hosts(
                state,
                &r.room_id,
                ServerMessage::KnockResolved {
                    request_id,
                    admitted,
                },
            );
            None
        }
        ClientMessage::Leave {} => {
            let r = here.take()?;
            state.rooms.notify(
                &r.room_id,
                Command::Leave {
                    conn,
                    participant_id: r.participant_id,
                },
            );
            None
        }
        ClientMessage::Chat { text } => {
            let Some(r) = here.as_ref() else {
                return Some(not_in_room());
            };
            match crate::chat::post(state, &r.room_id, user, &text).await {
                Ok(message) => {
                    state.rooms.notify(&r.room_id, Command::Chat { message });
                    None
                }
                Err(e) => Some(api_error(&e)),
            }
        }
        ClientMessage::Mute { kind, muted } => {
            let Some(r) = here.as_ref() else {
                return Some(not_in_room());
            };
            state.rooms.notify(
                &r.room_id,
                Command::Mute {
                    conn,
                    participant_id: r.participant_id.clone(),
                    kind,
                    muted,
                },
            );
            None
        }
        msg @ (ClientMessage::Offer { .. }
        | ClientMessage::Answer { .. }
        | ClientMessage::Candidate { .. }
        | ClientMessage::View { .. }
        | ClientMessage::SourceSize { .. }
        | ClientMessage::SubscribeReady { .. }) => {
            let Some(r) = here.as_ref() else {
                return Some(not_in_room());
            };
            state.rooms.notify(
                &r.room_id,
                Command::Signal {
                    conn,
                    participant_id: r.participant_id.clone(),
                    msg,
                },
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reports_what_is_wrong() {
        let code = |r: Result<ClientMessage, BadFrame>| match r {
            Err((code, _)) => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(code(parse("not json")), "malformed_json");
        assert_eq!(code(parse(r#"{"type":"leave"}"#)), "invalid_message");
        assert_eq!(
            code(parse(r#"{"v":9,"type":"leave"}"#)),
            "unsupported_version"
        );
        assert_eq!(code(parse(r#"{"v":1,"type":"fly"}"#)), "invalid_message");
        assert_eq!(
            code(parse(
                r#"{"v":1,"type":"mute","kind":"smell","muted":true}"#
            )),
            "invalid_message"
        );
        assert!(matches!(
            parse(r#"{"v":1,"type":"ping","nonce":7}"#),
            Ok(ClientMessage::Ping { nonce: 7 })
        ));
    }
}
