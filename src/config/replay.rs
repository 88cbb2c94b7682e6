//! `[replay]` and `[ddl]`: the replay guard every signed origin shares, how long a signed
//! request may live, and the DDLs calls are checked against.

use std::path::PathBuf;

use serde::Deserialize;

use super::defaults;
use super::network::{TlsIdentity, endpoint};
use crate::nats::{NatsAuth, NatsEndpoint};

/// The TTL a caller may sign when `max_signed_ttl` does not say: five minutes.
pub const DEFAULT_MAX_SIGNED_TTL: i64 = 300;
/// The life a request must have left to be forwarded when `min_life_s` does not say.
pub const DEFAULT_MIN_LIFE: i64 = 2;

/// The DDLs the gateway checks calls against, as a Choria server would.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DdlConfig {
    /// A directory of `<agent>.json` Choria DDLs.
    pub dir: PathBuf,
    /// Refuse agents without a DDL (`unknown_agent`); `discovery` always passes.
    #[serde(default = "defaults::yes")]
    pub refuse_unknown_agents: bool,
}

/// The replay guard every signed origin shares, and how long a signed request may live.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
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
    /// How fedgate authenticates there beyond `tls`.
    #[serde(default)]
    pub auth: Option<NatsAuth>,
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
            auth: None,
            bucket: defaults::replay_bucket(),
            replicas: defaults::audit_replicas(),
            max_signed_ttl: defaults::max_signed_ttl(),
            min_life_s: defaults::min_life_s(),
        }
    }
}

impl ReplayConfig {
    /// The replay network's endpoint with fedgate's TLS identity and auth.
    pub fn endpoint(&self) -> NatsEndpoint {
        endpoint(
            &self.nats,
            self.ca.as_deref(),
            self.tls.as_ref(),
            &self.auth,
        )
    }
}
