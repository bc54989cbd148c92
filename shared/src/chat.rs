//! Chat in a room: messages sent during meetings, kept with the room, delivered live to
//! everyone in the meeting (signaling `chat` / `chat_message`) and readable afterwards by the
//! room's host and members (`GET /api/rooms/{id}/messages`).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::users::UserSummary;

/// One message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatMessage {
    pub id: String,
    pub room_id: String,
    /// Who sent it.
    pub user: UserSummary,
    /// Plain text (1 to [`crate::limits::CHAT_MAX_CHARS`] characters; emoji welcome). Clients
    /// show it as text, never as markup.
    pub text: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub sent_at: OffsetDateTime,
}

/// `POST /api/rooms/{id}/messages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SendChatRequest {
    pub text: String,
}

/// `GET /api/rooms/{id}/messages`: a page, oldest first; `before` (a message id) for the page
/// before it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatHistory {
    pub messages: Vec<ChatMessage>,
    /// Pass as `before` for older messages; absent on the first page of the room.
    pub before: Option<String>,
}

/// The text of a message as it is kept: trimmed at the ends; `None` when empty or too long.
pub fn clean_text(text: &str) -> Option<&str> {
    let t = text.trim();
    let n = t.chars().count();
    (n > 0 && n <= crate::limits::CHAT_MAX_CHARS).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_trimmed_and_bounded() {
        assert_eq!(clean_text("  hi 👋 \n"), Some("hi 👋"));
        assert_eq!(clean_text(" \n\t "), None);
        let long = "é".repeat(crate::limits::CHAT_MAX_CHARS);
        assert_eq!(clean_text(&long), Some(long.as_str()));
        assert_eq!(clean_text(&format!("{long}x")), None);
    }
}
