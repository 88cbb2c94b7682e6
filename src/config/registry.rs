//! `[registry]`, and the fragment of a configuration a registry revision carries.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::defaults;
use super::network::{TlsIdentity, endpoint};
use crate::nats::NatsEndpoint;

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
