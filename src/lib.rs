//! fedgate: a protocol-translating federation gateway for Choria and legacy MCollective fleets.
//!
//! # Data flow
//! ```text
//! edge (ws | legacy-amqp | federation-nats)
//!   -> wire       bytes -> typed message; size and schema limits; typed DecodeError
//!   -> security   signature, chain to the realm's CA, callerid vs cert, ttl  => Verified<Request>
//!   -> map        realm:callerid -> target callerid            (later issues)
//!   -> authorize  actionpolicy => Permit | Denied              (later issues)
//!   -> audit      hash-chained record per decision             (later issues)
//!   -> encode     signed with the target's key (security::Signer)
//!   -> publish    NATS subject (subjects, nats)
//! replies: target -> wire decode -> hash check -> back to the caller (client)
//! ```
//!
//! # Layout
//! - [`wire`]: every wire format, and the only place bytes become types.
//! - [`security`]: PEM loading, chain verification, caller rules, signing.
//! - [`filter`]: node-side filter matching with go-choria's semantics.
//! - [`fleet`]: simulated Choria nodes that check requests as a Choria server does.
//! - [`ddl`]: Choria JSON agent DDLs, and the check of a call's inputs against them.
//! - [`client`]: a direct RPC client, like `choria req`.
//! - [`inspect`]: decode and verify one message of any layer.
//! - [`subjects`], [`nats`], [`natsd`]: NATS subjects, connections and server processes.
//! - [`gateway`]: the one admission path every ingress feeds: checks, map, authorize, replay,
//!   record, and the gate that holds the rules, the audit trail and the replay guard.
//! - [`federation`]: the stateless Federation Broker, its stats and `observe`.
//! - [`metrics`]: the Prometheus recorder and `/metrics`.
//! - [`config`]: the strict TOML configuration, one file per area of sections (`network`,
//!   `registry`, `replay`, `audit`, `edge`, `legacy`, `policy`), all named at `config::`.
//! - [`users`]: the users file behind the edge's password login, read into the [`rules`].
//! - [`edge`]: the WebSocket edge: tokens, the protocol, one request's dispatch, and the
//!   listener (`edge::server`) with its routes, sessions, outboxes and limits.
//! - [`bench`]: the side-by-side benchmarks behind `fedgate bench`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod bench;
pub mod client;
pub mod config;
pub mod ddl;
pub mod edge;
pub mod federation;
pub mod filter;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
mod gostd;
pub mod inspect;
pub mod legacy;
pub mod metrics;
pub mod nats;
pub mod natsd;
pub mod policy;
pub mod registry;
pub mod rules;
pub mod security;
pub mod subjects;
pub mod users;
pub mod wire;

/// This machine's host name, for default identities and instance names.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
