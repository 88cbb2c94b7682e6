//! `[legacy.<name>]`: legacy MCollective collectives on RabbitMQ, and the bridge into Choria.

use std::path::PathBuf;

use serde::Deserialize;

use super::{TlsIdentity, defaults};

/// A legacy MCollective collective reached over AMQP 0-9-1 (its peers speak STOMP to the same
/// RabbitMQ).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LegacyConfig {
    /// `amqp://user:password@host:port/vhost` (the vhost URL-encoded: `%2Fmcollective`), or
    /// `amqps://` for TLS.
    pub amqp: String,
    /// CA bundle the broker's certificate must chain to (`amqps://` only); the only trust root
    /// when set. Without it `amqps://` trusts the public web roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate and key fedgate presents to the broker (`amqps://` with `ca`).
    #[serde(default)]
    pub tls: Option<TlsIdentity>,
    /// Milliseconds before the first reconnection attempt once the broker is lost; the wait
    /// doubles with each failed attempt.
    #[serde(default = "defaults::legacy_reconnect_min")]
    pub reconnect_min_ms: u64,
    /// Longest wait between reconnection attempts, in milliseconds. fedgate never gives up.
    #[serde(default = "defaults::legacy_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// The collective's name on the wire: exchanges `<collective>_broadcast` and `_directed`.
    #[serde(default = "defaults::legacy_collective")]
    pub collective: String,
    /// `marshal` (MCollective's default) or `yaml`, as `plugin.ssl_serializer` says.
    #[serde(default = "defaults::legacy_serializer")]
    pub serializer: crate::wire::mcollective::Serializer,
    /// The servers' shared public key: legacy replies must verify with it.
    pub server_public: PathBuf,
    /// The servers' shared private key, to sign replies to legacy clients.
    #[serde(default)]
    pub server_private: Option<PathBuf>,
    /// Legacy callers' public keys or certificates, `<name>.pem` for `cert=<name>`.
    #[serde(default)]
    pub client_keys: Option<PathBuf>,
    /// Private keys fedgate signs with as mapped legacy callers: `<name>.pem` signs as
    /// `cert=<name>`.
    pub signers: PathBuf,
    /// The sender identity fedgate's requests carry.
    #[serde(default = "defaults::legacy_identity")]
    pub identity: String,
    /// Seconds a legacy request's time may be ahead of fedgate's clock.
    #[serde(default = "defaults::legacy_skew")]
    pub max_skew_s: i64,
    /// Largest legacy message accepted, bytes.
    #[serde(default = "defaults::legacy_max_bytes")]
    pub max_message_bytes: usize,
    /// Legacy clients of this collective reach a Choria collective through fedgate.
    #[serde(default)]
    pub bridge: Option<LegacyBridgeConfig>,
    /// A Choria collective whose NATS network fedgate serves this legacy collective on: Choria
    /// clients there send to `<name>.broadcast.agent.*` and `<name>.node.*`, verified against
    /// that collective's CA (realm = that collective's name).
    #[serde(default)]
    pub choria: Option<String>,
}

/// The legacy-to-Choria direction of a legacy collective.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LegacyBridgeConfig {
    /// Where legacy requests are re-signed into: a Choria collective with a `signer`, or a
    /// federation, whose member collectives each get a copy (see [`Config::bridge_targets`]).
    pub collective: String,
    /// Agents whose broadcasts fedgate takes (`discovery` answers `mco ping` and discovery).
    #[serde(default = "defaults::legacy_agents")]
    pub agents: Vec<String>,
    /// The durable queue that holds requests across a fedgate restart; instances share it.
    #[serde(default)]
    pub queue: Option<String>,
    /// Unacknowledged requests per instance.
    #[serde(default = "defaults::legacy_prefetch")]
    pub prefetch: u16,
    /// Seconds between refreshes of the directed bindings from the Choria collective.
    #[serde(default = "defaults::legacy_refresh")]
    pub refresh_s: u64,
    /// Most request ids one signed body is served under within its TTL. The ssl plugin signs
    /// the body (message, TTL, second) but not the request id, so callers sharing a key who
    /// send the same call in the same second (cron jobs, monitoring, `mco ping` run twice)
    /// send identical bodies; mcollectived serves every copy. The same body under the same
    /// request id is a replay.
    #[serde(default = "defaults::legacy_max_copies")]
    pub max_copies: usize,
    /// Refuse pre-2.0 bodies (a bare message without the signed TTL and time), as
    /// mcollectived does once `plugin.ssl.enforce_ttl` is set. Without it, as mcollectived
    /// without that setting, a bare discovery `ping` is taken with the envelope's unsigned
    /// TTL and time; a bare SimpleRPC request is refused either way.
    #[serde(default)]
    pub enforce_ttl: bool,
}
