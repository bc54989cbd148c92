//! The ConvoConnect companion server.
//!
//! Accounts and sessions, rooms and their participants, meeting logs and chat, over an HTTP
//! API described by a generated OpenAPI document; storage in SQLite (embedded default) or
//! PostgreSQL; the signaling WebSocket and the SFU. The binary `convo-server` wraps
//! [`app::Server`]; tests start the same server in-process.

pub mod allocate;
pub mod app;
pub mod auth;
pub mod chat;
pub mod config;
pub mod db;
pub mod error;
pub mod extract;
pub mod forward;
pub mod mail;
pub mod meetings;
pub mod rooms;
pub mod schedule;
pub mod sfu;
pub mod signal;
pub mod speaker;
pub mod users;
pub mod validate;
pub mod whip;

pub use app::{Server, StartError};
pub use config::{Config, ServerArgs};
