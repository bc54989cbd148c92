//! Input rules for accounts and rooms. Each returns the cleaned value or a 422 naming the field.

use convo_shared::limits::*;

use crate::error::ApiError;

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// A page size from a query (`limit`): 1 to `PAGE_MAX`, `PAGE_DEFAULT` when absent.
pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    use convo_shared::limits::{PAGE_DEFAULT, PAGE_MAX};
    let limit = limit.unwrap_or(PAGE_DEFAULT);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            convo_shared::ErrorCode::InvalidQuery,
            format!("`limit` is 1 to {PAGE_MAX}."),
        ));
    }
    Ok(limit)
}

pub fn username(s: &str) -> Result<String, ApiError> {
    let s = s.trim();
    let n = s.chars().count();
    if !(USERNAME_MIN..=USERNAME_MAX).contains(&n) {
        return Err(ApiError::invalid(
            "username",
            format!("A username has {USERNAME_MIN} to {USERNAME_MAX} characters."),
        ));
    }
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let ok_start = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !ok_chars || !ok_start {
        return Err(ApiError::invalid(
            "username",
            "A username uses letters, digits, '_', '.' and '-', and starts with a letter or digit.",
        ));
    }
    Ok(s.to_string())
}

pub fn email(s: &str) -> Result<String, ApiError> {
    let s = s.trim();
    let bad = || {
        ApiError::invalid(
            "email",
            "Enter a valid email address, like name@example.com.",
        )
    };
    if s.len() > EMAIL_MAX {
        return Err(ApiError::invalid(
            "email",
            format!("An email address has at most {EMAIL_MAX} characters."),
        ));
    }
    let (local, domain) = s.split_once('@').ok_or_else(bad)?;
    let valid = !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && s.chars().all(|c| c.is_ascii_graphic())
        && !s.contains(['<', '>', '(', ')', ',', ';', ':', '\\', '"', '[', ']']);
    if !valid {
        return Err(bad());
    }
    Ok(s.to_string())
}

/// Passwords are taken as typed (no trimming).
pub fn password(field: &str, s: &str) -> Result<(), ApiError> {
    let n = s.chars().count();
    if n < PASSWORD_MIN {
        return Err(ApiError::invalid(
            field,
            format!("A password needs at least {PASSWORD_MIN} characters."),
        ));
    }
    if n > PASSWORD_MAX {
        return Err(ApiError::invalid(
            field,
            format!("A password has at most {PASSWORD_MAX} characters."),
        ));
    }
    Ok(())
}

pub fn display_name(s: &str) -> Result<String, ApiError> {
    let s = s.trim();
    if s.is_empty() || s.chars().count() > DISPLAY_NAME_MAX || has_control(s) {
        return Err(ApiError::invalid(
            "display_name",
            format!("A display name has 1 to {DISPLAY_NAME_MAX} printable characters."),
        ));
    }
    Ok(s.to_string())
}

pub fn room_name(s: &str) -> Result<String, ApiError> {
    let s = s.trim();
    if s.is_empty() || s.chars().count() > ROOM_NAME_MAX || has_control(s) {
        return Err(ApiError::invalid(
            "name",
            format!("A room name has 1 to {ROOM_NAME_MAX} printable characters."),
        ));
    }
    Ok(s.to_string())
}

pub fn room_password(s: &str) -> Result<(), ApiError> {
    let n = s.chars().count();
    if !(ROOM_PASSWORD_MIN..=ROOM_PASSWORD_MAX).contains(&n) || has_control(s) {
        return Err(ApiError::invalid(
            "password",
            format!(
                "A room password has {ROOM_PASSWORD_MIN} to {ROOM_PASSWORD_MAX} printable characters."
            ),
        ));
    }
    Ok(())
}

pub fn max_participants(n: u32) -> Result<u32, ApiError> {
    if !(2..=ROOM_MAX_PARTICIPANTS).contains(&n) {
        return Err(ApiError::invalid(
            "max_participants",
            format!("A room holds 2 to {ROOM_MAX_PARTICIPANTS} participants."),
        ));
    }
    Ok(n)
}

/// Opaque tokens (refresh, reset): bounded, printable; the value itself is checked elsewhere.
pub fn token(field: &str, s: &str) -> Result<(), ApiError> {
    if s.is_empty() || s.len() > TOKEN_MAX || !s.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::invalid(field, "This token is not valid."));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(username(" alice_1 ").ok().as_deref(), Some("alice_1"));
        assert!(username("ab").is_err());
        assert!(username(&"a".repeat(33)).is_err());
        assert!(username("_alice").is_err());
        assert!(username("al ice").is_err());
        assert!(username("alïce").is_err());
    }

    #[test]
    fn emails() {
        assert!(email("a@b.co").is_ok());
        for bad in [
            "", "a", "a@b", "@b.co", "a@.co", "a@b..co", "a b@c.de", "a@b@c.de", "<a@b.co>",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
        assert!(email(&format!("{}@b.co", "a".repeat(300))).is_err());
    }

    #[test]
    fn passwords_count_characters() {
        assert!(password("password", "1234567").is_err());
        assert!(password("password", "12345678").is_ok());
        assert!(password("password", &"é".repeat(PASSWORD_MAX)).is_ok());
        assert!(password("password", &"é".repeat(PASSWORD_MAX + 1)).is_err());
    }

    #[test]
    fn names() {
        assert!(display_name("  ").is_err());
        assert!(display_name("Ada\u{7}").is_err());
        assert_eq!(display_name(" Ada ").ok().as_deref(), Some("Ada"));
        assert!(room_name(&"x".repeat(ROOM_NAME_MAX + 1)).is_err());
        assert!(max_participants(1).is_err());
        assert!(max_participants(ROOM_MAX_PARTICIPANTS + 1).is_err());
    }
}
