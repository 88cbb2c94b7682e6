//! fedgate: a protocol-translating federation gateway for Choria and legacy MCollective fleets.
//!
//! # Data flow
//! ```text
//! ingress (websocket | legacy-amqp | choria-nats facade | federation)
//!   -> wire       bytes -> typed message; size and schema limits; typed DecodeError
//!   -> security   signature, chain to the realm's CA, callerid vs cert, ttl  => verified request
//!   -> gateway    one admission path for every ingress:
//!                   checks     agents agree, signed request id, lifetime, DDL inputs
//!                   admit      map realm:callerid -> target callerid; actionpolicy => Admitted
//!                   replay     claim the signed bytes for the destination (shared guard)
//!                   record     hash-chained decision record => Recorded => Cleared
//!                 or a Refusal (stage, code) recorded, counted and answered in the ingress's
//!                 own protocol
//!   -> encode     signed with the target collective's privileged key (security::Signer)
//!   -> publish    NATS subject (subjects, nats), or the legacy collective over AMQP
//! replies: target -> wire decode -> hash check -> back to the caller, translated
//! ```
//!
//! # Layout
//! - [`wire`]: every wire format, and the only place bytes become types.
//! - [`security`]: PEM loading, chain verification, caller rules, signing; the legacy `ssl`
//!   plugin's signatures.
//! - [`filter`]: node-side filter matching with go-choria's semantics.
//! - [`ddl`]: Choria JSON agent DDLs, and the check of a call's inputs against them.
//! - [`client`]: a direct RPC client, like `choria req`; it publishes an admitted request only
//!   as its [`gateway::Cleared`] value.
//! - [`inspect`]: decode and verify one message of any layer.
//! - [`subjects`], [`nats`]: NATS subjects and connections.
//! - [`gateway`]: the one admission path every ingress feeds: checks, map, authorize, replay,
//!   record, the one refusal type, and the gate that holds the rules, the audit trail and the
//!   replay guard.
//! - [`policy`], [`rules`], [`audit`]: actionpolicy, the rules in force (identity and policy,
//!   reloaded whole), and the tamper-evident audit trail.
//! - [`federation`]: the stateless Federation Broker, its stats and `observe`.
//! - [`legacy`]: the bridge to legacy MCollective collectives over AMQP (the ingress from `mco`,
//!   the facade for Choria callers, and the link both publish through).
//! - [`registry`]: the shared registry of collectives, federations and rules.
//! - [`metrics`]: the Prometheus recorder and the metrics address (`/metrics`, `/healthz`,
//!   `/readyz`); [`health`]: what `/readyz` watches.
//! - [`config`]: the strict TOML configuration, one file per area of sections (`network`,
//!   `registry`, `replay`, `audit`, `edge`, `legacy`, `policy`), all named at `config::`.
//! - [`users`]: the users file behind the edge's password login, read into the [`rules`].
//! - [`edge`]: the WebSocket edge: tokens, the protocol, one request's dispatch, and the
//!   listener (`edge::server`) with its routes, sessions, outboxes and limits.
//! - [`cli`]: what the command lines share: the version, logging set-up, signals.
//!
//! The development tooling (the demo, the simulated fleet, benchmarks, the development PKI,
//! nats-server processes, fuzz bodies) is the crate `fedgate-dev` in `dev/`, which depends on
//! this one; nothing here depends on it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod cli;
pub mod client;
pub mod config;
pub mod ddl;
pub mod edge;
pub mod federation;
pub mod filter;
pub mod gateway;
mod gostd;
pub mod health;
pub mod inspect;
pub mod legacy;
pub mod metrics;
pub mod nats;
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
