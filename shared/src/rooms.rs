//! Rooms: creation, settings, membership and the participants in them.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::users::UserSummary;

/// `public` rooms are listed for everyone; `private` rooms exist only for their members (and for
/// whoever knows the id and the password).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Privacy {
    Public,
    Private,
}

impl Privacy {
    pub const fn as_str(self) -> &'static str {
        match self {
            Privacy::Public => "public",
            Privacy::Private => "private",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "public" => Some(Privacy::Public),
            "private" => Some(Privacy::Private),
            _ => None,
        }
    }
}

/// A user's standing in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RoomRole {
    Host,
    Member,
}

impl RoomRole {
    pub const fn as_str(self) -> &'static str {
        match self {
            RoomRole::Host => "host",
            RoomRole::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "host" => Some(RoomRole::Host),
            "member" => Some(RoomRole::Member),
            _ => None,
        }
    }
}

/// `POST /api/rooms`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateRoomRequest {
    pub name: String,
    pub privacy: Privacy,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub max_participants: Option<u32>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
    /// Newcomers wait until the host lets them in (the host and members go straight in).
    #[serde(default)]
    pub waiting_room: bool,
}

/// `PATCH /api/rooms/{id}`: absent fields stay; `password: null` and `expires_at: null` clear.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateRoomRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub privacy: Option<Privacy>,
    #[serde(
        default,
        deserialize_with = "crate::double_option::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub password: Option<Option<String>>,
    #[serde(default)]
    pub locked: Option<bool>,
    #[serde(default)]
    pub waiting_room: Option<bool>,
    #[serde(default)]
    pub max_participants: Option<u32>,
    #[serde(
        default,
        deserialize_with = "deserialize_expiry_patch",
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_expiry_patch"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<Option<OffsetDateTime>>,
}

fn deserialize_expiry_patch<'de, D>(de: D) -> Result<Option<Option<OffsetDateTime>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    time::serde::rfc3339::option::deserialize(de).map(Some)
}

fn serialize_expiry_patch<S>(v: &Option<Option<OffsetDateTime>>, ser: S) -> Result<S::Ok, S::Error>
where
    S: serde::Serializer,
{
    match v {
        Some(inner) => time::serde::rfc3339::option::serialize(inner, ser),
        None => ser.serialize_none(),
    }
}

/// `POST /api/rooms/{id}/join`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JoinRoomRequest {
    #[serde(default)]
    pub password: Option<String>,
}

/// `POST /api/rooms/{id}/members`: invite a user (by username) into a room.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    pub username: String,
}

/// Someone in a room right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Participant {
    pub room_id: String,
    pub user: UserSummary,
    pub role: RoomRole,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub joined_at: OffsetDateTime,
}

/// A member of a room (invited, host, or joined once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    pub user: UserSummary,
    pub role: RoomRole,
}

/// A room as its members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Room {
    /// Short, URL-safe and unguessable, like `abc-defg-hij`.
    pub id: String,
    pub name: String,
    pub privacy: Privacy,
    pub host: UserSummary,
    pub has_password: bool,
    pub locked: bool,
    /// Newcomers wait until the host lets them in.
    pub waiting_room: bool,
    pub max_participants: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    /// Link to share; opens the desktop app or the web join page.
    pub join_url: String,
    /// The caller's standing: host, member, or null when only visiting a public room.
    pub my_role: Option<RoomRole>,
    pub participant_count: u32,
    pub participants: Vec<Participant>,
}

/// `GET /api/rooms`: one page, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoomList {
    pub rooms: Vec<Room>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Someone's presence in one meeting session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attendance {
    pub user: UserSummary,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub joined_at: OffsetDateTime,
    /// Null while still inside.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub left_at: Option<OffsetDateTime>,
}

/// One meeting in a room: from the first person joining to the last one leaving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MeetingSession {
    pub id: String,
    pub room_id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub started_at: OffsetDateTime,
    /// Null while the meeting goes on.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub ended_at: Option<OffsetDateTime>,
    /// Seconds from start to end (or to now, while it goes on).
    pub duration_seconds: u64,
    pub attendance: Vec<Attendance>,
}

/// `GET /api/rooms/{id}/sessions`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MeetingSessionList {
    pub sessions: Vec<MeetingSession>,
}
