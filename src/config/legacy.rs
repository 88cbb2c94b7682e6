//! `[legacy.<name>]`: legacy MCollective collectives on RabbitMQ, and the bridge into Choria.

use std::path::PathBuf;

use serde::Deserialize;

use super::defaults;

/// A legacy MCollective collective reached over AMQP 0-9-1 (its peers speak STOMP to the same
/// RabbitMQ).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyConfig {
    /// `amqp://user:password@host:port/vhost` (the vhost URL-encoded: `%2Fmcollective`).
    pub amqp: String,
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
#[derive(Clone, Debug, Deserialize)]
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
}
