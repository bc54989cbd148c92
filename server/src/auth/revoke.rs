//! Ended sessions reach the live connections opened with them. When a session ends (sign-out,
//! a password changed or reset, a refresh token replayed) the database says so first; then
//! [`announce`] tells every signaling connection (which closes, saying `session_ended`) and
//! every live room (which takes out the call places, WHIP publishers and WHEP viewers that
//! came in through the session). A connection that outlives its access token asks the
//! database again ([`session_live`]) when the token expires, and so does one that missed
//! announcements (its backlog overflowed).

use tokio::sync::broadcast;

use crate::app::AppState;
use crate::db::now_ms;

/// Which sessions ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// One session (signed out, or its refresh token replayed).
    Session(String),
    /// Every session of a user but `except` (the one that changed the password).
    User {
        user_id: String,
        except: Option<String>,
    },
}

impl Revoked {
    /// Whether a connection of `user_id` opened with `session_id` has ended.
    pub fn covers(&self, user_id: &str, session_id: &str) -> bool {
        match self {
            Revoked::Session(s) => s == session_id,
            Revoked::User { user_id: u, except } => {
                u == user_id && except.as_deref() != Some(session_id)
            }
        }
    }
}

/// Announcements a connection can fall behind by before it asks the database instead.
const BACKLOG: usize = 256;

/// The announcements' channel: every signaling connection listens.
pub struct Revocations {
    tx: broadcast::Sender<Revoked>,
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("listeners", &self.tx.receiver_count())
            .finish()
    }
}

impl Revocations {
    pub fn subscribe(&self) -> broadcast::Receiver<Revoked> {
        self.tx.subscribe()
    }
}

/// Tells everything live that `ended` ended (call once the database says so).
pub fn announce(state: &AppState, ended: Revoked) {
    tracing::debug!(?ended, "sessions ended: cutting their connections");
    // Rooms first: a connection that hears the news leaves its room after the room has
    // taken the session's places out (as ended, not as left).
    state
        .rooms
        .notify_all(|| crate::signal::room::Command::SessionsEnded(ended.clone()));
    // No listener (no connection open) is not an error.
    let _ = state.revocations.tx.send(ended);
}

/// Whether the session is still live: not revoked, not expired, its user still there.
pub async fn session_live(
    state: &AppState,
    user_id: &str,
    session_id: &str,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query(
        "SELECT 1 FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL AND s.expires_at > $3",
    )
    .bind(session_id)
    .bind(user_id)
    .bind(now_ms())
    .fetch_optional(&state.db)
    .await?;
    Ok(row.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_covers_only_itself() {
        let r = Revoked::Session("s1".into());
        assert!(r.covers("u1", "s1"));
        assert!(r.covers("u2", "s1"));
        assert!(!r.covers("u1", "s2"));
    }

    #[test]
    fn a_user_covers_every_session_but_the_one_kept() {
        let all = Revoked::User {
            user_id: "u1".into(),
            except: None,
        };
        assert!(all.covers("u1", "s1"));
        assert!(all.covers("u1", "s2"));
        assert!(!all.covers("u2", "s1"));
        let but = Revoked::User {
            user_id: "u1".into(),
            except: Some("s1".into()),
        };
        assert!(!but.covers("u1", "s1"));
        assert!(but.covers("u1", "s2"));
    }
}
