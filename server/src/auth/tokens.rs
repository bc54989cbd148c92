//! Token primitives: random opaque tokens, their digests, and HS256 JWT access tokens.
//!
//! The JWT code is deliberately small: one algorithm (HS256), fixed header, constant-time
//! signature check, and `exp` always enforced. Anything else is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `bytes` of CSPRNG output as unpadded base64url.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    B64.encode(buf)
}

/// Hex SHA-256 of a token: what the database keeps instead of the token.
pub fn digest(token: &str) -> String {
    let hash = Sha256::digest(token.as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Session (refresh-token family) id; revoking the session revokes the token.
    pub sid: String,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Expires at, unix seconds.
    pub exp: i64,
    pub iss: String,
}

pub const ISSUER: &str = "convoconnect";
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    #[allow(clippy::expect_used)]
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length")
}

/// Signs `claims`.
pub fn encode_jwt(secret: &[u8], claims: &Claims) -> String {
    // Serialising a struct of strings and integers cannot fail.
    #[allow(clippy::expect_used)]
    let payload = serde_json::to_vec(claims).expect("claims serialise");
    let signing_input = format!("{}.{}", B64.encode(HEADER), B64.encode(payload));
    let mut m = mac(secret);
    m.update(signing_input.as_bytes());
    let sig = m.finalize().into_bytes();
    format!("{signing_input}.{}", B64.encode(sig))
}

/// Verifies signature, header, issuer and expiry (`now` in unix seconds).
pub fn decode_jwt(secret: &[u8], token: &str, now: i64) -> Result<Claims, JwtError> {
    if token.len() > 4096 {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let sig = B64.decode(s).map_err(|_| JwtError::Malformed)?;
    let mut m = mac(secret);
    m.update(h.as_bytes());
    m.update(b".");
    m.update(p.as_bytes());
    m.verify_slice(&sig).map_err(|_| JwtError::BadSignature)?;
    // Only after the signature holds do we look inside.
    let header: serde_json::Value =
        serde_json::from_slice(&B64.decode(h).map_err(|_| JwtError::Malformed)?)
            .map_err(|_| JwtError::Malformed)?;
    if header.get("alg").and_then(|v| v.as_str()) != Some("HS256") {
        return Err(JwtError::Malformed);
    }
    let claims: Claims = serde_json::from_slice(&B64.decode(p).map_err(|_| JwtError::Malformed)?)
        .map_err(|_| JwtError::Malformed)?;
    if claims.iss != ISSUER {
        return Err(JwtError::Malformed);
    }
    if claims.exp <= now {
        return Err(JwtError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "u1".into(),
            sid: "s1".into(),
            iat: 0,
            exp,
            iss: ISSUER.into(),
        }
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip() {
        let t = encode_jwt(SECRET, &claims(100));
        assert_eq!(decode_jwt(SECRET, &t, 99), Ok(claims(100)));
    }

    #[test]
    fn expiry_is_enforced() {
        let t = encode_jwt(SECRET, &claims(100));
        assert_eq!(decode_jwt(SECRET, &t, 100), Err(JwtError::Expired));
    }

    #[test]
    fn wrong_secret_and_tampering_fail() {
        let t = encode_jwt(SECRET, &claims(100));
        assert_eq!(
            decode_jwt(b"another secret of enough length!!", &t, 0),
            Err(JwtError::BadSignature)
        );
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = B64.encode(serde_json::to_vec(&claims(i64::MAX)).unwrap_or_default());
        parts[1] = &forged;
        assert_eq!(
            decode_jwt(SECRET, &parts.join("."), 0),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let h = B64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let p = B64.encode(serde_json::to_vec(&claims(100)).unwrap_or_default());
        assert!(decode_jwt(SECRET, &format!("{h}.{p}."), 0).is_err());
        assert_eq!(decode_jwt(SECRET, "a.b", 0), Err(JwtError::Malformed));
        assert_eq!(decode_jwt(SECRET, "", 0), Err(JwtError::Malformed));
    }

    #[test]
    fn random_tokens_differ_and_digest_is_stable() {
        let a = random_token(32);
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token(32));
        assert_eq!(digest("abc").len(), 64);
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
