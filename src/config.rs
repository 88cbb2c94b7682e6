//! The strict TOML configuration: unknown keys, missing files, bad names, identities that do not
//! chain to their CA and conflicting definitions all stop start-up with a message naming the key.

#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::nats::NatsEndpoint;
use crate::security::identity::IdentityRules;
use crate::security::{CaBundle, NamePatterns, PatternError, Verifier, patterns_defaults};
use crate::wire::Limits;

pub use validate::{Route, validate_instance_name};

/// A whole fedgate configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This process: its name, metrics listener and timings.
    #[serde(default)]
    pub instance: InstanceConfig,
    /// The identity `fedgate rpc` signs requests with.
    #[serde(default)]
    pub client: Option<ClientConfig>,
    /// Collectives by name; federations may also define members inline.
    #[serde(default)]
    pub collectives: BTreeMap<String, CollectiveConfig>,
    /// Federations by name.
    #[serde(default)]
    pub federations: BTreeMap<String, FederationConfig>,
    /// How callers of one realm map into collectives.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Actionpolicy RBAC; required by re-signing federations.
    #[serde(default)]
    pub policy: Option<PolicyConfig>,
    /// The audit trail; required by re-signing federations and the edge.
    #[serde(default)]
    pub audit: Option<AuditConfig>,
    /// The WebSocket edge for browsers and scripts.
    #[serde(default)]
    pub edge: Option<EdgeConfig>,
    /// Legacy MCollective collectives on RabbitMQ, by name; each is also a realm.
    #[serde(default)]
    pub legacy: BTreeMap<String, LegacyConfig>,
    /// The federation registry that holds policies, identity rules, users and membership;
    /// without it they come from the files this config names.
    #[serde(default)]
    pub registry: Option<RegistryConfig>,
    /// The replay guard and the lifetime rules of signed requests.
    #[serde(default)]
    pub replay: ReplayConfig,
    /// The rules of `identity.rules`, loaded and checked once with the config.
    #[serde(skip, default = "defaults::identity_rules")]
    rules: Arc<IdentityRules>,
    /// The registry revision applied with [`Config::with_set`].
    #[serde(skip)]
    revision: Option<u64>,
}

/// The replay guard every signed origin shares, and how long a signed request may live.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// NATS server URLs of a network with JetStream where every instance of a cluster keeps
    /// its claims; none keeps them in this process only, which a replay to another instance or
    /// after a restart gets past.
    #[serde(default)]
    pub nats: Vec<String>,
    /// CA bundle of that network; connections use TLS when it is set.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// fedgate's TLS client identity there.
    #[serde(default)]
    pub tls: Option<TlsIdentity>,
    /// The key-value bucket; created if missing.
    #[serde(default = "defaults::replay_bucket")]
    pub bucket: String,
    /// Replicas when the bucket is created.
    #[serde(default = "defaults::audit_replicas")]
    pub replicas: usize,
    /// Longest TTL a caller may sign, in seconds (30 to 86,400).
    #[serde(default = "defaults::max_signed_ttl")]
    pub max_signed_ttl: i64,
    /// Least life a request must have left to be forwarded, in seconds (1 to 30).
    #[serde(default = "defaults::min_life_s")]
    pub min_life_s: i64,
}

impl Default for ReplayConfig {
    fn default() -> ReplayConfig {
        ReplayConfig {
            nats: Vec::new(),
            ca: None,
            tls: None,
            bucket: defaults::replay_bucket(),
            replicas: defaults::audit_replicas(),
            max_signed_ttl: defaults::max_signed_ttl(),
            min_life_s: defaults::min_life_s(),
        }
    }
}

impl ReplayConfig {
    /// The replay network's endpoint with fedgate's TLS identity.
    pub fn endpoint(&self) -> NatsEndpoint {
        endpoint(&self.nats, self.ca.as_deref(), self.tls.as_ref())
    }

    /// The lifetime rules.
    pub fn lifetime(&self) -> crate::gateway::Lifetime {
        crate::gateway::Lifetime {
            max_signed_ttl: self.max_signed_ttl,
            min_life: self.min_life_s,
        }
    }
}

/// The federation registry: JetStream key-value buckets on a NATS network.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// NATS server URLs of the network holding the registry (JetStream enabled).
    pub nats: Vec<String>,
    /// CA bundle of that network; connections use TLS when it is set.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// fedgate's TLS client identity there.
    #[serde(default)]
    pub tls: Option<TlsIdentity>,
    /// Where this instance keeps the last good revision, to start and serve without the
    /// registry.
    pub cache: PathBuf,
    /// Bucket names start with this: `<prefix>-policies`, `-identity`, `-users`, `-config`,
    /// `-revisions`, `-instances`.
    #[serde(default = "defaults::registry_prefix")]
    pub prefix: String,
    /// Replicas when the buckets are created.
    #[serde(default = "defaults::audit_replicas")]
    pub replicas: usize,
    /// How long start-up waits for the registry before it uses the cached revision, ms.
    #[serde(default = "defaults::registry_timeout_ms")]
    pub timeout_ms: u64,
    /// Seconds between this instance's status reports (and checks of the head revision).
    #[serde(default = "defaults::registry_heartbeat")]
    pub heartbeat_s: u64,
}

impl RegistryConfig {
    /// The registry network's endpoint with fedgate's TLS identity.
    pub fn endpoint(&self) -> NatsEndpoint {
        endpoint(&self.nats, self.ca.as_deref(), self.tls.as_ref())
    }
}

/// Checks a registry bucket name prefix (`[registry] prefix`).
pub fn check_registry_prefix(prefix: &str) -> Result<(), String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 32
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 32 letters, digits, - or _".into())
    }
}

/// The part of a configuration a registry revision carries (`config.toml` of a set).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fragment {
    /// Policy settings besides the files.
    #[serde(default)]
    pub policy: Option<FragmentPolicy>,
    /// Federation membership: each named federation's `members` replace the local list.
    #[serde(default)]
    pub federations: BTreeMap<String, FragmentFederation>,
}

/// `[policy]` of a registry fragment.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FragmentPolicy {
    /// What applies when no policy file does.
    #[serde(default = "defaults::unconfigured")]
    pub unconfigured: crate::policy::Effect,
}

/// `[federations.<name>]` of a registry fragment.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FragmentFederation {
    /// The federation's members, by name; each must be defined in the instance's config.
    pub members: Vec<String>,
}

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

/// Where the identity mapping rules live.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// A TOML file of `[[rule]]` tables (see `security::identity`); none denies every caller.
    #[serde(default)]
    pub rules: Option<PathBuf>,
}

/// Where actionpolicy files live and what applies when none does.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The policy directory: `default.policy`, `<agent>.policy`, `<collective>/<agent>.policy`
    /// and `groups`. Watched and reloaded on change.
    pub dir: PathBuf,
    /// What applies when no policy file does, and inside a file without `policy default`.
    #[serde(default = "defaults::unconfigured")]
    pub unconfigured: crate::policy::Effect,
}

/// Where and how decisions are recorded.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The active audit file; rotated files sit beside it as `<file>.NNNNNN`.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Rotate when the active file reaches this many bytes (at least 64 KiB).
    #[serde(default = "defaults::rotate_bytes")]
    pub rotate_bytes: u64,
    /// `interval` (default), `always` or `never`; see the README's audit section.
    #[serde(default)]
    pub fsync: crate::audit::Fsync,
    /// The interval of `fsync = "interval"`, in milliseconds (10 to 60,000).
    #[serde(default = "defaults::fsync_interval_ms")]
    pub fsync_interval_ms: u64,
    /// `agent` or `agent.action` entries (`*` for all) whose input values are recorded; others
    /// record input names only.
    #[serde(default)]
    pub record_values: Vec<String>,
    /// A JetStream stream, besides or instead of the file.
    #[serde(default)]
    pub jetstream: Option<AuditStreamConfig>,
}

/// The JetStream audit sink: a stream refusing deletes and purges, shared by instances.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditStreamConfig {
    /// NATS server URLs of the network holding the stream (JetStream enabled).
    pub nats: Vec<String>,
    /// CA bundle of that network; connections use TLS when it is set.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// fedgate's TLS client identity there.
    #[serde(default)]
    pub tls: Option<TlsIdentity>,
    /// Stream name; created if missing.
    #[serde(default = "defaults::audit_stream")]
    pub stream: String,
    /// Subject prefix; each instance writes its chain to `<subject>.<instance>`.
    #[serde(default = "defaults::audit_subject")]
    pub subject: String,
    /// Replicas when the stream is created.
    #[serde(default = "defaults::audit_replicas")]
    pub replicas: usize,
    /// Stream size limit when it is created; beyond it writes fail (fail closed), nothing is
    /// discarded.
    #[serde(default = "defaults::audit_stream_bytes")]
    pub max_bytes: i64,
    /// Deduplication window, seconds.
    #[serde(default = "defaults::audit_duplicate_window")]
    pub duplicate_window_s: u64,
    /// Acknowledgement timeout, milliseconds.
    #[serde(default = "defaults::audit_ack_timeout_ms")]
    pub timeout_ms: u64,
}

impl AuditConfig {
    /// The file sink options for `instance`, when a file is configured.
    pub fn file_options(&self, instance: &str) -> Option<crate::audit::FileOptions> {
        Some(crate::audit::FileOptions {
            path: self.file.clone()?,
            rotate_bytes: self.rotate_bytes,
            fsync: self.fsync,
            fsync_interval: Duration::from_millis(self.fsync_interval_ms),
            instance: instance.to_string(),
        })
    }

    /// The JetStream sink options for `instance`, when a stream is configured.
    pub fn stream_options(&self, instance: &str) -> Option<crate::audit::JetStreamOptions> {
        let js = self.jetstream.as_ref()?;
        Some(crate::audit::JetStreamOptions {
            endpoint: js.endpoint(),
            stream: js.stream.clone(),
            subject: js.subject.clone(),
            instance: instance.to_string(),
            replicas: js.replicas,
            max_bytes: js.max_bytes,
            duplicate_window: Duration::from_secs(js.duplicate_window_s),
            timeout: Duration::from_millis(js.timeout_ms),
        })
    }
}

impl AuditStreamConfig {
    /// The stream's NATS endpoint with fedgate's TLS identity.
    pub fn endpoint(&self) -> NatsEndpoint {
        endpoint(&self.nats, self.ca.as_deref(), self.tls.as_ref())
    }
}

/// The WebSocket edge: where it listens, how callers authenticate, and its limits.
#[derive(Clone, Debug, Deserialize)]
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
    /// Requests per second per identity (sustained).
    #[serde(default = "defaults::edge_rate")]
    pub rate_per_second: u32,
    /// Requests per identity allowed in a burst.
    #[serde(default = "defaults::edge_burst")]
    pub rate_burst: u32,
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
    /// Seconds in-flight requests get to finish on shutdown.
    #[serde(default = "defaults::edge_grace")]
    pub shutdown_grace_s: u64,
    /// Static files served at `/` (the web page).
    #[serde(default)]
    pub web_root: Option<PathBuf>,
    /// Choria JSON DDL files (`<agent>.json`) served at `/api/ddl` for forms.
    #[serde(default)]
    pub ddl_dir: Option<PathBuf>,
    /// Caller ids (before mapping, e.g. `up=alice`) that may read the audit trail at
    /// `/api/audit`.
    #[serde(default)]
    pub auditors: Vec<String>,
}

/// How a federation's brokers treat the signed part of a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FederationMode {
    /// Verify the caller against the federation's CA, map the identity per target collective,
    /// and re-sign with the collective's privileged certificate.
    #[default]
    Resign,
    /// go-choria semantics: only transport headers change, so every member must trust the
    /// federation's signers (one CA everywhere). Must be stated explicitly.
    PassThrough,
}

/// Settings of this fedgate process.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Instance name, unique within a cluster; defaults to `<hostname>-<pid>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Address for Prometheus `/metrics`; none means no listener.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    /// Seconds between stats publications on `choria.federation.<cluster>.stats`.
    #[serde(default = "defaults::stats_interval")]
    pub stats_interval: u64,
    /// Seconds to finish in-flight messages on shutdown.
    #[serde(default = "defaults::drain_timeout")]
    pub drain_timeout: u64,
    /// Queue subscriptions per subject, each with its own task; defaults to the CPU count.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Federations this process serves as a broker; defaults to all of them.
    #[serde(default)]
    pub serve: Option<Vec<String>>,
}

/// A certificate and key used as a TLS client identity.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsIdentity {
    /// PEM certificate, optionally followed by intermediates.
    pub certificate: PathBuf,
    /// PEM private key, mode 0600.
    pub key: PathBuf,
}

/// A certificate user: the key signs requests and the pair is the NATS TLS identity.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// PEM certificate (and any intermediates).
    pub certificate: PathBuf,
    /// PEM RSA private key, PKCS#1 or PKCS#8.
    pub key: PathBuf,
    /// Caller id to send; defaults to `choria=<certificate CN>`.
    #[serde(default)]
    pub callerid: Option<String>,
    /// `senderid` and `mc_sender`; defaults to the host name.
    #[serde(default)]
    pub identity: Option<String>,
}

/// One Choria collective: its NATS servers and the CA its certificates chain to.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectiveConfig {
    /// NATS server URLs.
    pub nats: Vec<String>,
    /// CA bundle of the collective; connections use TLS when it is set (required for `tls://`).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// fedgate's TLS client identity on this collective's NATS.
    #[serde(default)]
    pub tls: Option<TlsIdentity>,
    /// The collective's own name, in its subjects and signed envelopes, when it differs from the
    /// name fedgate knows it by (e.g. `mcollective`).
    #[serde(default)]
    pub internal_name: Option<String>,
    /// fedgate's privileged certificate from this collective's CA, used to re-sign requests.
    #[serde(default)]
    pub signer: Option<TlsIdentity>,
    /// The collective servers' `plugin.choria.security.privileged_users`; Choria's default if unset.
    #[serde(default)]
    pub privileged_users: Option<Vec<String>>,
    /// The collective servers' `plugin.choria.security.certname_whitelist`; Choria's default if unset.
    #[serde(default)]
    pub certname_allowlist: Option<Vec<String>>,
}

/// A federation: its own NATS network and CA, and the members it reaches.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// Federation Broker cluster name used in subjects; defaults to the federation's name.
    #[serde(default)]
    pub cluster: Option<String>,
    /// NATS server URLs of the federation network.
    pub nats: Vec<String>,
    /// CA bundle of the federation network; connections use TLS when it is set.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// fedgate's TLS client identity on the federation network.
    #[serde(default)]
    pub tls: Option<TlsIdentity>,
    /// Member collectives or federations, by name.
    #[serde(default)]
    pub members: Vec<String>,
    /// Member collectives defined in place; they are members too.
    #[serde(default)]
    pub collectives: BTreeMap<String, CollectiveConfig>,
    /// Most `seen-by` hops a request may carry into this cluster.
    #[serde(default = "defaults::max_hops")]
    pub max_hops: usize,
    /// Most targets one federated message may name.
    #[serde(default = "defaults::max_targets")]
    pub max_targets: usize,
    /// Node targets per federated message sent by `fedgate rpc`.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// `resign` (the default) or `pass-through`.
    #[serde(default)]
    pub mode: FederationMode,
    /// Longest TTL, in seconds, of a request fedgate re-signs.
    #[serde(default = "defaults::max_ttl")]
    pub max_ttl: i64,
    /// Privileged certname patterns of this realm's callers; Choria's default if unset.
    #[serde(default)]
    pub privileged_users: Option<Vec<String>>,
    /// Certname allow list of this realm's callers; Choria's default if unset.
    #[serde(default)]
    pub certname_allowlist: Option<Vec<String>>,
}

mod defaults {
    pub fn stats_interval() -> u64 {
        10
    }
    pub fn drain_timeout() -> u64 {
        10
    }
    pub fn max_hops() -> usize {
        8
    }
    pub fn max_targets() -> usize {
        1000
    }
    pub fn batch_size() -> usize {
        200
    }
    pub fn unconfigured() -> crate::policy::Effect {
        crate::policy::Effect::Deny
    }
    pub fn rotate_bytes() -> u64 {
        64 * 1024 * 1024
    }
    pub fn fsync_interval_ms() -> u64 {
        1000
    }
    pub fn edge_realm() -> String {
        "edge".into()
    }
    pub fn edge_token_ttl() -> u64 {
        8 * 3600
    }
    pub fn edge_message_bytes() -> usize {
        64 * 1024
    }
    pub fn edge_connections() -> usize {
        10_000
    }
    pub fn edge_in_flight() -> usize {
        16
    }
    pub fn edge_rate() -> u32 {
        20
    }
    pub fn edge_burst() -> u32 {
        40
    }
    pub fn legacy_collective() -> String {
        "mcollective".into()
    }
    pub fn legacy_serializer() -> crate::wire::mcollective::Serializer {
        crate::wire::mcollective::Serializer::Marshal
    }
    pub fn legacy_identity() -> String {
        "fedgate".into()
    }
    pub fn legacy_skew() -> i64 {
        30
    }
    pub fn legacy_agents() -> Vec<String> {
        vec!["discovery".into(), "rpcutil".into()]
    }
    pub fn legacy_prefetch() -> u16 {
        64
    }
    pub fn legacy_refresh() -> u64 {
        60
    }
    pub fn legacy_max_bytes() -> usize {
        1024 * 1024
    }
    pub fn edge_outbound() -> usize {
        16 * 1024
    }
    pub fn edge_outbound_bytes() -> usize {
        8 * 1024 * 1024
    }
    pub fn edge_idle() -> u64 {
        300
    }
    pub fn edge_ping() -> u64 {
        30
    }
    pub fn edge_auth_timeout() -> u64 {
        5
    }
    pub fn edge_handshake_timeout() -> u64 {
        10
    }
    pub fn edge_max_handshakes() -> usize {
        1024
    }
    pub fn edge_max_handshakes_per_address() -> usize {
        256
    }
    pub fn edge_grace() -> u64 {
        10
    }
    pub fn audit_stream() -> String {
        "FEDGATE_AUDIT".into()
    }
    pub fn audit_subject() -> String {
        "fedgate.audit".into()
    }
    pub fn audit_replicas() -> usize {
        1
    }
    pub fn replay_bucket() -> String {
        "fedgate-replay".into()
    }
    pub fn max_signed_ttl() -> i64 {
        crate::gateway::DEFAULT_MAX_SIGNED_TTL
    }
    pub fn min_life_s() -> i64 {
        crate::gateway::DEFAULT_MIN_LIFE
    }
    pub fn audit_stream_bytes() -> i64 {
        10 << 30
    }
    pub fn audit_duplicate_window() -> u64 {
        120
    }
    pub fn audit_ack_timeout_ms() -> u64 {
        2000
    }
    pub fn max_ttl() -> i64 {
        60
    }
    pub fn registry_prefix() -> String {
        "fedgate".into()
    }
    pub fn registry_timeout_ms() -> u64 {
        2000
    }
    pub fn registry_heartbeat() -> u64 {
        2
    }
    pub fn identity_rules() -> super::Arc<super::IdentityRules> {
        super::Arc::new(super::IdentityRules::deny_all())
    }
}

impl Default for InstanceConfig {
    fn default() -> Self {
        InstanceConfig {
            name: None,
            metrics: None,
            stats_interval: defaults::stats_interval(),
            drain_timeout: defaults::drain_timeout(),
            workers: None,
            serve: None,
        }
    }
}

/// Why a configuration was refused; every variant names the file or key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A key has an unusable value.
    #[error("{}: `{key}`: {problem}", path.display())]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Dotted key.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

/// A member of a federation: a collective, a legacy collective, or a federation one level down.
#[derive(Clone, Copy, Debug)]
pub enum Member<'a> {
    /// A collective network.
    Collective(&'a CollectiveConfig),
    /// A legacy collective, reached through fedgate's facade on the Choria collective named
    /// by its `choria` key.
    Legacy(&'a LegacyConfig),
    /// Another federation's network.
    Federation(&'a FederationConfig),
}

impl Config {
    /// Reads, parses and validates a config file; relative paths are resolved from its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text that came from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: path.to_path_buf(),
            message: err.to_string(),
        })?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        config.check_registry_owned(path)?;
        config.merge_inline_collectives(path)?;
        config.validate(path)?;
        config.rules = Arc::new(config.load_identity_rules(path)?);
        Ok(config)
    }

    /// This config completed with a registry set (a directory as `fedgate registry push`
    /// takes): its policies, identity rules, users and fragment, validated as start-up
    /// validates a file-mode config. `revision` is the registry revision it came from.
    pub fn with_set(&self, set: &Path, revision: u64, path: &Path) -> Result<Config, ConfigError> {
        let mut config = self.clone();
        let fragment_path = set.join("config.toml");
        let fragment: Fragment = match std::fs::read_to_string(&fragment_path) {
            Ok(text) => toml::from_str(&text).map_err(|err| ConfigError::Parse {
                path: fragment_path.clone(),
                message: err.to_string(),
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Fragment::default(),
            Err(source) => {
                return Err(ConfigError::Io {
                    path: fragment_path,
                    source,
                });
            }
        };
        config.policy = Some(PolicyConfig {
            dir: set.join("policies"),
            unconfigured: fragment
                .policy
                .map_or_else(defaults::unconfigured, |p| p.unconfigured),
        });
        let identity = set.join("identity.toml");
        config.identity.rules = identity.is_file().then_some(identity);
        let users = set.join("users.toml");
        if let Some(edge) = &mut config.edge {
            edge.users = users.is_file().then_some(users);
        }
        for (name, membership) in fragment.federations {
            let Some(federation) = config.federations.get_mut(&name) else {
                return Err(ConfigError::Invalid {
                    path: fragment_path,
                    key: format!("federations.{name}"),
                    problem: format!("federation {name} is not defined in {}", path.display()),
                });
            };
            federation.members = membership.members;
        }
        config.revision = Some(revision);
        config.validate(path)?;
        config.rules = Arc::new(config.load_identity_rules(path)?);
        Ok(config)
    }

    /// The registry revision this config was completed with ([`Config::with_set`]).
    pub fn registry_revision(&self) -> Option<u64> {
        self.revision
    }

    /// With a registry but no revision applied yet, policy, identity rules and users are
    /// still to come, so checks that need them wait for [`Config::with_set`].
    pub fn rules_pending(&self) -> bool {
        self.registry.is_some() && self.revision.is_none()
    }

    /// The named collective.
    pub fn collective(&self, name: &str) -> Option<&CollectiveConfig> {
        self.collectives.get(name)
    }

    /// The named federation.
    pub fn federation(&self, name: &str) -> Option<&FederationConfig> {
        self.federations.get(name)
    }

    /// What a member name refers to (validation forbids a name being two of these).
    pub fn member(&self, name: &str) -> Option<Member<'_>> {
        self.federations
            .get(name)
            .map(Member::Federation)
            .or_else(|| self.collectives.get(name).map(Member::Collective))
            .or_else(|| self.legacy.get(name).map(Member::Legacy))
    }

    /// The Choria collective whose network and CA a member collective is reached on: the
    /// collective itself, or the one a legacy collective's facade serves on.
    pub fn served_on(&self, name: &str) -> Option<&CollectiveConfig> {
        match self.member(name)? {
            Member::Collective(collective) => Some(collective),
            Member::Legacy(legacy) => self.collectives.get(legacy.choria.as_deref()?),
            Member::Federation(_) => None,
        }
    }

    /// The Choria collectives a legacy bridge re-signs into: its `collective`, or each member
    /// collective of the federation it names (legacy members are left out: a request does not
    /// go from one legacy site back into another). Each needs fedgate's `signer`.
    pub fn bridge_targets(&self, bridge: &LegacyBridgeConfig) -> Result<Vec<String>, String> {
        let name = &bridge.collective;
        let targets: Vec<String> = if self.federations.contains_key(name) {
            let mut members = Vec::new();
            for (member, route) in self.routes(name)? {
                match route {
                    Route::Direct if self.collectives.contains_key(&member) => members.push(member),
                    Route::Direct => {}
                    Route::Via(via) => {
                        return Err(format!(
                            "federation {name} reaches {member} through federation {via}; a bridge re-signs into member collectives only"
                        ));
                    }
                }
            }
            members
        } else {
            vec![name.clone()]
        };
        if targets.is_empty() {
            return Err(format!("federation {name} has no Choria member collective"));
        }
        match targets
            .iter()
            .find(|t| self.collectives.get(*t).is_none_or(|c| c.signer.is_none()))
        {
            Some(t) => Err(format!(
                "{t} is not a collective with a signer in this file"
            )),
            None => Ok(targets),
        }
    }

    /// A member collective's name in its subjects and envelopes.
    pub fn member_internal_name<'a>(&'a self, name: &'a str) -> &'a str {
        match self.collectives.get(name) {
            Some(collective) => collective.internal_name(name),
            None => name,
        }
    }

    /// Federations this process serves as a broker.
    pub fn served_federations(&self) -> Vec<&str> {
        match &self.instance.serve {
            Some(names) => names.iter().map(String::as_str).collect(),
            None => self.federations.keys().map(String::as_str).collect(),
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        let join_tls = |tls: &mut Option<TlsIdentity>| {
            if let Some(tls) = tls {
                join(&mut tls.certificate);
                join(&mut tls.key);
            }
        };
        if let Some(client) = &mut self.client {
            join(&mut client.certificate);
            join(&mut client.key);
        }
        let inline = self
            .federations
            .values_mut()
            .flat_map(|f| f.collectives.values_mut());
        for collective in self.collectives.values_mut().chain(inline) {
            collective.ca.iter_mut().for_each(join);
            join_tls(&mut collective.tls);
            join_tls(&mut collective.signer);
        }
        for legacy in self.legacy.values_mut() {
            join(&mut legacy.server_public);
            legacy.server_private.iter_mut().for_each(join);
            legacy.client_keys.iter_mut().for_each(join);
            join(&mut legacy.signers);
        }
        self.identity.rules.iter_mut().for_each(join);
        if let Some(policy) = &mut self.policy {
            join(&mut policy.dir);
        }
        if let Some(edge) = &mut self.edge {
            edge.ca.iter_mut().for_each(join);
            join_tls(&mut edge.tls);
            edge.token_key.iter_mut().for_each(join);
            edge.users.iter_mut().for_each(join);
            edge.web_root.iter_mut().for_each(join);
            edge.ddl_dir.iter_mut().for_each(join);
        }
        if let Some(registry) = &mut self.registry {
            registry.ca.iter_mut().for_each(join);
            join_tls(&mut registry.tls);
            join(&mut registry.cache);
        }
        if let Some(audit) = &mut self.audit {
            audit.file.iter_mut().for_each(join);
            if let Some(js) = &mut audit.jetstream {
                js.ca.iter_mut().for_each(join);
                join_tls(&mut js.tls);
            }
        }
        for federation in self.federations.values_mut() {
            federation.ca.iter_mut().for_each(join);
            join_tls(&mut federation.tls);
        }
    }
}

impl InstanceConfig {
    /// The instance name: configured, or `<hostname>-<pid>`.
    pub fn name_or_default(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", crate::hostname(), std::process::id()))
    }

    /// Time between stats publications.
    pub fn stats_interval(&self) -> Duration {
        Duration::from_secs(self.stats_interval.max(1))
    }

    /// Grace period for draining on shutdown.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout)
    }
}

impl FederationConfig {
    /// The Federation Broker cluster name for `name`'s entry.
    pub fn cluster_name<'a>(&'a self, name: &'a str) -> &'a str {
        self.cluster.as_deref().unwrap_or(name)
    }

    /// The federation network's endpoint, with fedgate's TLS identity.
    pub fn endpoint(&self) -> NatsEndpoint {
        endpoint(&self.nats, self.ca.as_deref(), self.tls.as_ref())
    }
}

impl CollectiveConfig {
    /// The NATS endpoint with fedgate's own TLS identity.
    pub fn endpoint(&self) -> NatsEndpoint {
        endpoint(&self.nats, self.ca.as_deref(), self.tls.as_ref())
    }

    /// The collective's name in its own subjects and envelopes: `internal_name`, else `name`.
    pub fn internal_name<'a>(&'a self, name: &'a str) -> &'a str {
        self.internal_name.as_deref().unwrap_or(name)
    }

    /// The privileged patterns its servers apply.
    pub fn privileged_patterns(&self) -> Result<NamePatterns, PatternError> {
        NamePatterns::or_defaults(
            self.privileged_users.as_deref(),
            patterns_defaults::PRIVILEGED,
        )
    }
}

impl Config {
    /// The identity mapping rules, as loaded with the config; with no rules file, a set that
    /// denies every caller.
    pub fn identity_rules(&self) -> &Arc<IdentityRules> {
        &self.rules
    }
}

impl FederationConfig {
    /// A verifier for callers of this federation's realm: its CA and name patterns.
    pub fn verifier(&self, limits: Limits) -> Result<Option<Verifier>, String> {
        let Some(ca) = &self.ca else {
            return Ok(None);
        };
        let bundle = CaBundle::from_file(ca).map_err(|e| e.to_string())?;
        let privileged = NamePatterns::or_defaults(
            self.privileged_users.as_deref(),
            patterns_defaults::PRIVILEGED,
        )
        .map_err(|e| e.to_string())?;
        let allowlist = NamePatterns::or_defaults(
            self.certname_allowlist.as_deref(),
            patterns_defaults::ALLOWLIST,
        )
        .map_err(|e| e.to_string())?;
        Ok(Some(Verifier::new(bundle, privileged, allowlist, limits)))
    }
}

/// A network with a CA speaks TLS, whatever its URLs' scheme (Choria brokers usually require TLS
/// on `nats://` URLs).
fn endpoint(urls: &[String], ca: Option<&Path>, tls: Option<&TlsIdentity>) -> NatsEndpoint {
    NatsEndpoint {
        urls: urls.to_vec(),
        ca: ca.map(Path::to_path_buf),
        identity: tls.map(|t| (t.certificate.clone(), t.key.clone())),
    }
}
