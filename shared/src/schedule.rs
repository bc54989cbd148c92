//! Scheduled meetings: a time in a room, with a title and the people invited. Invitees become
//! members of the room (so a private room lets them in); the desktop app lists what is coming,
//! reminds before it starts, and joins the next one from the tray.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::users::UserSummary;

/// `POST /api/meetings`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScheduleMeetingRequest {
    /// A room the caller hosts.
    pub room_id: String,
    pub title: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub starts_at: OffsetDateTime,
    /// 5 to 720 minutes.
    pub duration_minutes: u32,
    /// Usernames to invite (at most 100).
    #[serde(default)]
    pub invitees: Vec<String>,
}

/// A scheduled meeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduledMeeting {
    pub id: String,
    pub room_id: String,
    pub room_name: String,
    pub title: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub starts_at: OffsetDateTime,
    pub duration_minutes: u32,
    /// Who scheduled it.
    pub organizer: UserSummary,
    pub invitees: Vec<UserSummary>,
    pub join_url: String,
}

/// `GET /api/meetings`: meetings not yet over that I organise, host the room of, or am invited
/// to, soonest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduledMeetingList {
    pub meetings: Vec<ScheduledMeeting>,
}

pub const DURATION_MIN: u32 = 5;
pub const DURATION_MAX: u32 = 720;
pub const INVITEES_MAX: usize = 100;
