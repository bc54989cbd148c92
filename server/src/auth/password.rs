//! Password hashing with Argon2id (OWASP parameters: 19 MiB, 2 passes), off the async threads.
//!
//! Each hash takes ~19 MiB for its duration, so hashing is bounded: at most one per core runs
//! at once, at most [`MAX_WAITING`] wait for their turn, and none waits longer than
//! [`QUEUE_DEADLINE`]; beyond either the request is answered 503 `unavailable` with
//! Retry-After instead of queueing memory without end.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::ApiError;

/// Hashes that may wait for a free core at once.
pub const MAX_WAITING: usize = 64;
/// How long a hash may wait for a free core.
pub const QUEUE_DEADLINE: Duration = Duration::from_secs(10);
/// What a refused request is told to wait.
const RETRY_AFTER: Duration = Duration::from_secs(2);

struct Gate {
    running: Semaphore,
    waiting: AtomicUsize,
}

impl Gate {
    fn new(cores: usize) -> Self {
        Gate {
            running: Semaphore::new(cores.max(1)),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits for a turn to hash: a permit while a core is free, else in a bounded queue with
    /// a deadline.
    async fn turn(&self) -> Result<SemaphorePermit<'_>, ApiError> {
        if let Ok(p) = self.running.try_acquire() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("password hashing queue full; request refused");
            return Err(ApiError::busy(RETRY_AFTER));
        }
        let got = tokio::time::timeout(QUEUE_DEADLINE, self.running.acquire()).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match got {
            Ok(Ok(p)) => Ok(p),
            _ => {
                tracing::warn!("password hashing waited past its deadline; request refused");
                Err(ApiError::busy(RETRY_AFTER))
            }
        }
    }
}

/// The server's one gate: one hash per core.
fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| {
        Gate::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        )
    })
}

async fn turn() -> Result<SemaphorePermit<'static>, ApiError> {
    gate().turn().await
}

fn argon2() -> Argon2<'static> {
    // The default parameters (m = 19456 KiB, t = 2, p = 1) are OWASP's recommendation.
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// Hashes a password into a PHC string. Runs on the blocking pool, one per core at most.
pub async fn hash(password: String) -> Result<String, ApiError> {
    let permit = turn().await?;
    let hashed = tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| {
                tracing::error!(error = %e, "password hashing failed");
                ApiError::internal()
            })
    })
    .await;
    drop(permit);
    hashed.map_err(|_| ApiError::internal())?
}

/// Checks a password against a stored PHC string. Runs on the blocking pool, one per core at
/// most; `Err` (503) only when the server is too busy to check now.
pub async fn verify(password: String, phc: String) -> Result<bool, ApiError> {
    let permit = turn().await?;
    let ok = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc)
            .map(|parsed| {
                argon2()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false);
    drop(permit);
    Ok(ok)
}

/// A hash of a password nobody has, to verify against when the account does not exist, so
/// that a wrong username costs as much time as a wrong password.
pub fn dummy_hash() -> String {
    let salt = SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").ok();
    salt.and_then(|s| {
        argon2()
            .hash_password(b"no account has this password", &s)
            .ok()
            .map(|h| h.to_string())
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = hash("correct horse".into()).await.expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(
            verify("correct horse".into(), h.clone())
                .await
                .expect("verify")
        );
        assert!(!verify("wrong horse".into(), h).await.expect("verify"));
        assert!(
            !verify("x".into(), "not a phc string".into())
                .await
                .expect("verify")
        );
        assert!(!dummy_hash().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashing_is_bounded_and_a_full_queue_is_refused() {
        // Fill both cores and the whole queue, then one more is refused at once with 503.
        let g: &'static Gate = Box::leak(Box::new(Gate::new(2)));
        let held: Vec<_> = (0..2)
            .map(|_| g.running.try_acquire().expect("a free core"))
            .collect();
        assert!(g.running.try_acquire().is_err(), "only one hash per core");
        let waiters: Vec<_> = (0..MAX_WAITING)
            .map(|_| tokio::spawn(async move { g.turn().await.map(drop) }))
            .collect();
        // Wait until every waiter is queued (an event, not a sleep).
        while g.waiting.load(Ordering::SeqCst) < MAX_WAITING {
            tokio::task::yield_now().await;
        }
        let refused = g.turn().await.expect_err("queue full");
        assert_eq!(refused.status.as_u16(), 503);
        assert!(refused.retry_after.is_some());
        // Freed cores serve the queue: every waiter gets its turn.
        drop(held);
        for w in waiters {
            w.await.expect("join").expect("a turn");
        }
        assert_eq!(g.waiting.load(Ordering::SeqCst), 0);
    }
}
