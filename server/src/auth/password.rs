//! Password hashing with Argon2id (OWASP parameters: 19 MiB, 2 passes), off the async threads.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::ApiError;

fn argon2() -> Argon2<'static> {
    // The default parameters (m = 19456 KiB, t = 2, p = 1) are OWASP's recommendation.
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// Hashes a password into a PHC string. Runs on the blocking pool.
pub async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| {
                tracing::error!(error = %e, "password hashing failed");
                ApiError::internal()
            })
    })
    .await
    .map_err(|_| ApiError::internal())?
}

/// Checks a password against a stored PHC string. Runs on the blocking pool.
pub async fn verify(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc)
            .map(|parsed| {
                argon2()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
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
        assert!(verify("correct horse".into(), h.clone()).await);
        assert!(!verify("wrong horse".into(), h).await);
        assert!(!verify("x".into(), "not a phc string".into()).await);
        assert!(!dummy_hash().is_empty());
    }
}
