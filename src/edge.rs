//! The WebSocket edge: browsers and scripts make audited, policy-checked RPC calls through
//! fedgate without holding a Choria certificate.
//!
//! - [`auth`]: EdDSA tokens fedgate issues, the argon2 users file behind `POST /login`, and the
//!   caller ids they give (`up=<user>`; `choria=<CN>` for client certificates).
//! - [`protocol`]: the versioned JSON messages (`docs/websocket.md`).
//! - [`dispatch`]: one request's path: map, authorize, audit, sign as the mapped caller with the
//!   privileged certificate, publish, stream replies.
//! - [`server`]: the listener (TLS with optional client certificates, or loopback `ws://`), the
//!   routes, and one session per socket with its limits.
//! - [`console`]: the web page, embedded at build time.

mod api;
pub mod auth;
pub mod client;
pub mod console;
pub mod dispatch;
mod homes;
mod http;
mod job;
pub mod protocol;
pub mod server;

pub use dispatch::{Dispatcher, Principal};
pub use server::{Edge, EdgeError};
