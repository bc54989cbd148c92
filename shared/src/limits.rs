//! Input limits. The server enforces them; clients use them to validate early.

/// Usernames: 3 to 32 characters of `A-Z a-z 0-9 _ . -`, starting with a letter or digit.
pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 32;
/// Emails longer than this are refused (RFC 5321 path limit).
pub const EMAIL_MAX: usize = 254;
/// Passwords, counted in characters.
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 128;
pub const DISPLAY_NAME_MAX: usize = 64;
pub const ROOM_NAME_MAX: usize = 100;
pub const ROOM_PASSWORD_MIN: usize = 4;
pub const ROOM_PASSWORD_MAX: usize = 64;
/// Capacity of a room when the host names none.
pub const ROOM_DEFAULT_PARTICIPANTS: u32 = 100;
pub const ROOM_MAX_PARTICIPANTS: u32 = 500;
/// Refresh and reset tokens are 43 characters; anything far longer is not ours.
pub const TOKEN_MAX: usize = 512;
/// Avatar uploads, in bytes.
pub const AVATAR_MAX_BYTES: usize = 2 * 1024 * 1024;
/// Page size of list endpoints.
pub const PAGE_DEFAULT: u32 = 20;
pub const PAGE_MAX: u32 = 100;
/// Chat messages, counted in characters.
pub const CHAT_MAX_CHARS: usize = 2000;
/// Chat messages one person may send in [`CHAT_WINDOW_SECS`].
pub const CHAT_BURST: u32 = 10;
pub const CHAT_WINDOW_SECS: u64 = 10;
