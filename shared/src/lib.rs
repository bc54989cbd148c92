//! The ConvoConnect wire contract.
//!
//! Request and response bodies of the companion server's HTTP API, the error envelope and its
//! stable codes, and the input limits both sides agree on. This crate does no I/O: the server,
//! the desktop client's engine and the tests all speak through these types, so a change here is
//! a change of the protocol.
//!
//! With the `openapi` feature the types also derive `utoipa::ToSchema`, which the server uses to
//! generate its OpenAPI document.

pub mod auth;
pub mod bwe;
pub mod chat;
pub mod error;
pub mod limits;
pub mod rooms;
pub mod schedule;
pub mod signal;
pub mod users;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};

/// Serde helper for PATCH bodies: tells "field absent" (`None`) from "field is null"
/// (`Some(None)`), which a plain `Option` cannot.
pub mod double_option {
    use serde::{Deserialize, Deserializer};

    /// Use with `#[serde(default, deserialize_with = "double_option::deserialize")]`.
    pub fn deserialize<'de, T, D>(de: D) -> Result<Option<Option<T>>, D::Error>
    where
        T: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Option::<T>::deserialize(de).map(Some)
    }
}
