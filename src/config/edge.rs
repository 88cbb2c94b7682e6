//! `[edge]`: the WebSocket edge's listener, credentials and limits.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::defaults;
use super::network::TlsIdentity;

/// The WebSocket edge: where it listens, how callers authenticate, and its limits.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The realm edge callers come from, as identity rules name it in `from`.
    #[serde(default = "defaults::edge_realm")]
    pub realm: String,
    /// The edge CA: client certificates (mTLS) must chain to it.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The Choria protocol v2 token issuer whose callers may send signed v2 requests: one
    /// organization (a token's `ou`) and the hex ed25519 public key of its issuer.
    #[serde(default)]
    pub issuers: std::collections::BTreeMap<String, String>,
    /// The listener's certificate and key; without them the edge speaks plain `ws://`.
    #[serde(default)]
    pub tls: Option<TlsIdentity>,
    /// Allow plain `ws://` on a non-loopback address.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Origins browsers may open sockets from, matched exactly (`https://ops.example.com`).
    #[serde(default)]
    pub origins: Vec<String>,
    /// The Ed25519 PKCS#8 key tokens are signed with (`fedgate token keygen`).
    #[serde(default)]
    pub token_key: Option<PathBuf>,
    /// Users who may `POST /login` (TOML, argon2 hashes).
    #[serde(default)]
    pub users: Option<PathBuf>,
    /// Longest token lifetime `POST /login` issues, seconds.
    #[serde(default = "defaults::edge_token_ttl")]
    pub token_ttl_s: u64,
    /// Largest message a client may send, bytes.
    #[serde(default = "defaults::edge_message_bytes")]
    pub max_message_bytes: usize,
    /// Open sockets at most.
    #[serde(default = "defaults::edge_connections")]
    pub max_connections: usize,
    /// Requests in flight on one socket at most.
    #[serde(default = "defaults::edge_in_flight")]
    pub max_in_flight: usize,
    /// Replies the edge's NATS client holds for one request while the edge works through them
    /// (1,024 to 16,777,216). A broadcast whose replies come faster than the edge passes them on
    /// waits here; past this many, the client drops them (counted in
    /// `fedgate_nats_slow_consumer_total`). Memory is taken only while replies wait: at most about
    /// 1.3 KiB each for a ping reply; size it to the largest fleet one request reaches.
    #[serde(default = "defaults::edge_reply_buffer")]
    pub reply_buffer: usize,
    /// Requests per second per identity (sustained).
    #[serde(default = "defaults::edge_rate")]
    pub rate_per_second: u32,
    /// Requests per identity allowed in a burst.
    #[serde(default = "defaults::edge_burst")]
    pub rate_burst: u32,
    /// Refusals before verification recorded in full per source address per interval; beyond
    /// it, one summary record per source per interval counts them (0 to 100,000).
    #[serde(default = "defaults::edge_unverified_budget")]
    pub unverified_budget: u64,
    /// That interval, seconds (1 to 3,600).
    #[serde(default = "defaults::edge_unverified_interval")]
    pub unverified_interval_s: u64,
    /// Messages queued towards one socket; a client that falls this far behind is disconnected.
    #[serde(default = "defaults::edge_outbound")]
    pub outbound_queue: usize,
    /// Bytes queued towards one socket, the other bound on the same queue.
    #[serde(default = "defaults::edge_outbound_bytes")]
    pub outbound_queue_bytes: usize,
    /// Seconds without a message from the client (pongs do not count) before a socket is closed.
    #[serde(default = "defaults::edge_idle")]
    pub idle_timeout_s: u64,
    /// Seconds between pings.
    #[serde(default = "defaults::edge_ping")]
    pub ping_interval_s: u64,
    /// Seconds a socket opened without credentials has to send its `auth` message.
    #[serde(default = "defaults::edge_auth_timeout")]
    pub auth_timeout_s: u64,
    /// Seconds a new connection has for its TLS handshake, and any HTTP connection for each
    /// request's headers (slowloris), before it is closed.
    #[serde(default = "defaults::edge_handshake_timeout")]
    pub handshake_timeout_s: u64,
    /// Connections not (yet) upgraded to a WebSocket at most: TLS handshakes, HTTP requests and
    /// idle keep-alive connections. Beyond it new connections are closed at once.
    #[serde(default = "defaults::edge_max_handshakes")]
    pub max_handshakes: usize,
    /// Of those, at most this many from one IP address, so one address cannot hold them all.
    #[serde(default = "defaults::edge_max_handshakes_per_address")]
    pub max_handshakes_per_address: usize,
    /// Logins (`POST /login`) per minute from one source address (an IPv6 /64), sustained.
    #[serde(default = "defaults::edge_login_rate")]
    pub login_rate_per_address: u32,
    /// Logins from one source address allowed in a burst.
    #[serde(default = "defaults::edge_login_burst")]
    pub login_burst_per_address: u32,
    /// Seconds in-flight requests get to finish on shutdown.
    #[serde(default = "defaults::edge_grace")]
    pub shutdown_grace_s: u64,
    /// Static files served at `/` (the web page) from disk, instead of the console built into
    /// the binary.
    #[serde(default)]
    pub web_root: Option<PathBuf>,
    /// Serve the console built into the binary at `/` (when it holds one and `web_root` is
    /// not set).
    #[serde(default = "defaults::yes")]
    pub console: bool,
    /// Choria JSON DDL files (`<agent>.json`) served at `/api/ddl` for forms.
    #[serde(default)]
    pub ddl_dir: Option<PathBuf>,
    /// Caller ids (before mapping, e.g. `up=alice`) that may read the audit trail at
    /// `/api/audit`.
    #[serde(default)]
    pub auditors: Vec<String>,
}

impl EdgeConfig {
    /// The v2 token issuers of `issuers`; `None` when there are none, and signed v2 requests
    /// are refused.
    pub fn v2_issuers(&self) -> Result<Option<crate::security::v2::Issuers>, String> {
        crate::security::v2::Issuers::for_realm(&self.issuers)
    }
}
