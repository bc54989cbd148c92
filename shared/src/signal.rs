//! The signaling protocol on the WebSocket at `/api/ws`.
//!
//! Every frame is one JSON text message: an envelope `{"v": 1, "type": "...", ...}` where `v`
//! is [`PROTOCOL_VERSION`] and `type` names the message. Clients send [`ClientMessage`]s, the
//! server sends [`ServerMessage`]s.
//!
//! Authentication: either offer the subprotocols `convo.v1` and `bearer.<access token>` in
//! `Sec-WebSocket-Protocol` when connecting, or send `{"v":1,"type":"auth","token":"…"}` as the
//! first message. The token never travels in the URL.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::rooms::RoomRole;
use crate::users::UserSummary;

pub const PROTOCOL_VERSION: u16 = 1;
/// The subprotocol the server selects.
pub const SUBPROTOCOL: &str = "convo.v1";
/// Prefix of the subprotocol entry that carries the access token.
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "bearer.";

/// One frame: the protocol version and the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub v: u16,
    #[serde(flatten)]
    pub msg: T,
}

impl<T> Envelope<T> {
    pub fn new(msg: T) -> Self {
        Envelope {
            v: PROTOCOL_VERSION,
            msg,
        }
    }
}

/// Kinds of media a participant publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    Audio,
    Video,
    Screen,
}

impl TrackKind {
    /// Its name on the wire, and in track ids (`<participant id>:<kind>`).
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Audio => "audio",
            TrackKind::Video => "video",
            TrackKind::Screen => "screen",
        }
    }
}

/// Which of a participant's two peer connections a message is about. Media goes up on
/// `publish` (the client offers, the server answers) and comes down on `subscribe` (the server
/// offers whenever the set of forwarded tracks changes, the client answers). Two connections
/// mean neither side ever has to resolve an offer collision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Publish,
    Subscribe,
}

/// A published track. On the `subscribe` connection its media stream id is the participant id
/// and its track id is `track_id`. A publisher names its tracks `audio`, `video` and `screen`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub track_id: String,
    pub kind: TrackKind,
    pub muted: bool,
}

/// A STUN or TURN server for ICE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A trickled ICE candidate, as the browser API names its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default)]
    pub sdp_mid: Option<String>,
    #[serde(default)]
    pub sdp_mline_index: Option<u16>,
}

/// Someone in the room, as the others see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub participant_id: String,
    pub user: UserSummary,
    pub role: RoomRole,
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
    pub audio_muted: bool,
    pub video_muted: bool,
    pub tracks: Vec<TrackInfo>,
    /// Watching only, through WHEP: publishes nothing and hears no one's talk but what it
    /// watches. Hosts see viewers like everyone else and can remove them.
    #[serde(default)]
    pub viewer: bool,
}

/// Why someone left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// They left.
    Left,
    /// Their connection dropped and did not come back within the grace period.
    Disconnected,
    /// They joined again from another connection, which took over.
    Replaced,
    /// The host removed them, or the room was closed or deleted.
    Removed,
    /// The session they joined with ended: they signed out, their password was changed or
    /// reset, or the session was revoked.
    SessionEnded,
}

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// First message, when the token was not given as a subprotocol.
    Auth { token: String },
    /// Enter a room. Joining again as the same user — after a dropped connection, or from
    /// another device — takes the same place back; others see no leave.
    Join {
        room_id: String,
        #[serde(default)]
        password: Option<String>,
        #[serde(default)]
        audio_muted: bool,
        #[serde(default)]
        video_muted: bool,
    },
    /// SDP offer for the `publish` connection.
    Offer { target: Transport, sdp: String },
    /// SDP answer to the server's offer on the `subscribe` connection.
    Answer { target: Transport, sdp: String },
    /// A trickled ICE candidate for one of the two connections.
    Candidate {
        target: Transport,
        candidate: IceCandidate,
    },
    /// Mute or unmute one kind of media.
    Mute { kind: TrackKind, muted: bool },
    /// A chat message to everyone in the room (kept with the room).
    Chat { text: String },
    /// The host lets someone in from the waiting room (`request_id` from `knocking`).
    Admit { request_id: String },
    /// The host turns someone in the waiting room away.
    Deny { request_id: String },
    /// Leave the room (the socket may stay open to join another).
    Leave {},
    /// I draw this remote video track at `width` × `height` pixels (`0 × 0`: not shown at
    /// all). The server forwards the simulcast layer that fills it best; send it again when
    /// the tile's size changes. Until told, a track gets its best layer.
    View {
        track_id: String,
        width: u32,
        height: u32,
    },
    /// My `subscribe` connection's receivers are open for everything in the first `offer`
    /// offers it answered (counted from 1 on each new `subscribe` connection; absent: all
    /// answered so far): the server starts sending what they carry. Without it the server
    /// starts 15 s after the answer — a packet that comes before its receiver is open is
    /// taken by webrtc-rs for an unknown stream and the track never starts.
    SubscribeReady {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offer: Option<u64>,
    },
    /// The size of the full layer of my `kind` track (the camera's picture), sent when it
    /// is known or changes; lower simulcast layers are half and a quarter of it.
    SourceSize {
        kind: TrackKind,
        width: u32,
        height: u32,
    },
    Ping {
        #[serde(default)]
        nonce: u64,
    },
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The connection is authenticated.
    Ready {
        user_id: String,
    },
    /// You are in the room.
    Joined {
        room_id: String,
        participant_id: String,
        /// True when this join resumed an earlier place (others saw no leave).
        resumed: bool,
        /// Everyone else in the room.
        participants: Vec<ParticipantInfo>,
        ice_servers: Vec<IceServer>,
        /// Seconds a dropped connection keeps its place.
        grace_seconds: u32,
    },
    /// The server's offer on the `subscribe` connection. `restart`: it is for a new
    /// `subscribe` connection that replaces the current one (which the client closes), with
    /// the same tracks — the server does so when too many removed tracks' m-lines gathered.
    Offer {
        target: Transport,
        sdp: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        restart: bool,
    },
    /// The server's answer on the `publish` connection.
    Answer {
        target: Transport,
        sdp: String,
    },
    Candidate {
        target: Transport,
        candidate: IceCandidate,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        participant_id: String,
        reason: LeaveReason,
    },
    /// A participant's connection dropped and they are getting it back (`reconnecting`), or
    /// they are back (`false`). They keep their place meanwhile, for the server's grace.
    ParticipantReconnecting {
        participant_id: String,
        reconnecting: bool,
    },
    TrackPublished {
        participant_id: String,
        track: TrackInfo,
    },
    TrackUnpublished {
        participant_id: String,
        track_id: String,
    },
    MuteChanged {
        participant_id: String,
        kind: TrackKind,
        muted: bool,
    },
    ActiveSpeaker {
        participant_id: Option<String>,
    },
    /// The room has a waiting room: you are in it until the host lets you in (`admitted`,
    /// then `joined`) or turns you away (`error` `admission_denied`).
    Waiting {
        room_id: String,
    },
    /// The host let you in; `joined` follows.
    Admitted {
        room_id: String,
    },
    /// To the hosts in the meeting: someone is in the waiting room.
    Knocking {
        request_id: String,
        user: UserSummary,
    },
    /// To the hosts: a knock was answered (by a host) or withdrawn (the person left).
    KnockResolved {
        request_id: String,
        admitted: bool,
    },
    /// A chat message in the room (the sender gets it too, as confirmation).
    ChatMessage {
        message: crate::chat::ChatMessage,
    },
    /// You are no longer in the room (`reason` says why).
    Left {
        reason: LeaveReason,
    },
    /// To a publisher: the server's receivers are open for what its first `offer` offers on
    /// this `publish` connection carried (counted from 1; absent: all it offered so far); it
    /// may send those tracks (media sent before may be lost, and with simulcast can cost the
    /// whole track).
    PublishReady {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offer: Option<u64>,
    },
    /// To a publisher: the simulcast layers (RIDs) of its `kind` track that somebody
    /// watches. Layers not listed are not encoded until they are listed again.
    LayersWanted {
        kind: TrackKind,
        rids: Vec<String>,
    },
    /// Something about the last message was wrong; the connection stays up.
    Error {
        code: String,
        message: String,
    },
    Pong {
        nonce: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_flat_and_tagged() {
        let msg = Envelope::new(ClientMessage::Mute {
            kind: TrackKind::Audio,
            muted: true,
        });
        let json = serde_json::to_value(&msg).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({"v": 1, "type": "mute", "kind": "audio", "muted": true})
        );
        let back: Envelope<ClientMessage> = serde_json::from_value(json).expect("parse");
        assert_eq!(back, msg);
    }

    #[test]
    fn join_defaults_and_unknown_fields() {
        let m: Envelope<ClientMessage> =
            serde_json::from_str(r#"{"v":1,"type":"join","room_id":"abc-defg-hij"}"#)
                .expect("parse");
        assert!(matches!(
            m.msg,
            ClientMessage::Join {
                password: None,
                audio_muted: false,
                ..
            }
        ));
        assert!(
            serde_json::from_str::<Envelope<ClientMessage>>(r#"{"v":1,"type":"teleport"}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<Envelope<ClientMessage>>(r#"{"v":1,"type":"leave","x":1}"#)
                .is_err()
        );
    }
}
