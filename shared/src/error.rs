//! The error envelope: every failed request answers `{"error": {"code", "message"}}`.

use serde::{Deserialize, Serialize};

/// Body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable machine-readable `code` and a human `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable code, one of [`ErrorCode`]'s values, e.g. `invalid_credentials`.
    pub code: String,
    /// A sentence for people; may change between versions.
    pub message: String,
    /// The offending request field, when one field is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The stable error codes. Clients match on these, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    // Request shape
    MalformedJson,
    InvalidBody,
    InvalidQuery,
    ValidationFailed,
    UnsupportedMediaType,
    PayloadTooLarge,
    NotFound,
    MethodNotAllowed,
    Timeout,
    // Accounts
    UserExists,
    InvalidCredentials,
    TooManyAttempts,
    Unauthenticated,
    TokenExpired,
    SessionEnded,
    RefreshTokenReused,
    InvalidResetToken,
    Forbidden,
    UnsupportedImage,
    // Rooms
    RoomNotFound,
    RoomPasswordRequired,
    InvalidRoomPassword,
    RoomLocked,
    RoomFull,
    RoomExpired,
    NothingToWatch,
    TooManyViewers,
    WaitingRoom,
    AdmissionDenied,
    // Server
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, for documentation and exhaustive tests.
    pub const ALL: &'static [ErrorCode] = &[
        Self::MalformedJson,
        Self::InvalidBody,
        Self::InvalidQuery,
        Self::ValidationFailed,
        Self::UnsupportedMediaType,
        Self::PayloadTooLarge,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Timeout,
        Self::UserExists,
        Self::InvalidCredentials,
        Self::TooManyAttempts,
        Self::Unauthenticated,
        Self::TokenExpired,
        Self::SessionEnded,
        Self::RefreshTokenReused,
        Self::InvalidResetToken,
        Self::Forbidden,
        Self::UnsupportedImage,
        Self::RoomNotFound,
        Self::RoomPasswordRequired,
        Self::InvalidRoomPassword,
        Self::RoomLocked,
        Self::RoomFull,
        Self::RoomExpired,
        Self::NothingToWatch,
        Self::TooManyViewers,
        Self::WaitingRoom,
        Self::AdmissionDenied,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The wire form of the code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::InvalidBody => "invalid_body",
            Self::InvalidQuery => "invalid_query",
            Self::ValidationFailed => "validation_failed",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::PayloadTooLarge => "payload_too_large",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Timeout => "timeout",
            Self::UserExists => "user_exists",
            Self::InvalidCredentials => "invalid_credentials",
            Self::TooManyAttempts => "too_many_attempts",
            Self::Unauthenticated => "unauthenticated",
            Self::TokenExpired => "token_expired",
            Self::SessionEnded => "session_ended",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::InvalidResetToken => "invalid_reset_token",
            Self::Forbidden => "forbidden",
            Self::UnsupportedImage => "unsupported_image",
            Self::RoomNotFound => "room_not_found",
            Self::RoomPasswordRequired => "room_password_required",
            Self::InvalidRoomPassword => "invalid_room_password",
            Self::RoomLocked => "room_locked",
            Self::RoomFull => "room_full",
            Self::RoomExpired => "room_expired",
            Self::NothingToWatch => "nothing_to_watch",
            Self::TooManyViewers => "too_many_viewers",
            Self::WaitingRoom => "waiting_room",
            Self::AdmissionDenied => "admission_denied",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// Parses the wire form back; `None` for a code this version does not know.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == code)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {code}");
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }

    #[test]
    fn envelope_shape() {
        let body = ErrorBody {
            error: ErrorDetail {
                code: ErrorCode::RoomFull.as_str().into(),
                message: "full".into(),
                field: None,
            },
        };
        let json = serde_json::to_value(&body).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "room_full", "message": "full"}})
        );
    }
}
