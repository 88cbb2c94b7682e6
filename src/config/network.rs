//! Where fedgate runs and what it connects to: `[instance]`, `[client]`, the collectives and
//! the federations, each network's TLS identity, NATS auth and endpoint.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::defaults;
use crate::nats::{NatsAuth, NatsEndpoint};
use crate::security::{CaBundle, NamePatterns, PatternError, Verifier, patterns_defaults};
use crate::wire::Limits;

/// How a federation's brokers treat the signed part of a request.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
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
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Instance name, unique within a cluster; defaults to the host name (give each of two
    /// instances on one host its own).
    #[serde(default)]
    pub name: Option<String>,
    /// Address for Prometheus `/metrics`, `/healthz` and `/readyz`; none means no listener.
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
    /// How `fedgate run` writes its log on stderr; `--log-format` and `FEDGATE_LOG_FORMAT`
    /// override it.
    #[serde(default)]
    pub log_format: LogFormat,
}

/// The log's form on stderr.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Deserialize,
    serde::Serialize,
    clap::ValueEnum,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of text an event (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object an event, for journald, Loki or Elasticsearch.
    Json,
}

/// A certificate and key used as a TLS client identity.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsIdentity {
    /// PEM certificate, optionally followed by intermediates.
    pub certificate: PathBuf,
    /// PEM private key, mode 0600.
    pub key: PathBuf,
}

/// A certificate user: the key signs requests and the pair is the NATS TLS identity.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
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
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
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
    /// How fedgate authenticates to this collective's NATS beyond `tls`.
    #[serde(default)]
    pub auth: Option<NatsAuth>,
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
    /// Set when the collective speaks Choria protocol v2 (ed25519 and JWT identities): fedgate
    /// then signs into it as a delegator with this identity instead of with `signer`.
    #[serde(default)]
    pub v2: Option<V2CollectiveConfig>,
}

/// fedgate's standing in a Choria protocol v2 collective (`docs/protocol-v2.md`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct V2CollectiveConfig {
    /// The token issuers its servers trust, by organization (a token's `ou`): the hex ed25519
    /// public key of each, as the servers' `plugin.security.issuer.<name>.public`.
    pub issuers: std::collections::BTreeMap<String, String>,
    /// fedgate's ed25519 seed there: 64 hex characters, as go-choria's seed files hold.
    pub seed: PathBuf,
    /// fedgate's token for that seed: a client token from one of `issuers` with the
    /// `authentication_delegator` permission, vouched for as a chain issuer (`iss` `I-…` and
    /// `tcs`), so the caller tokens fedgate issues for the callers it maps verify.
    pub token: PathBuf,
    /// Whether its servers sign their replies (go-choria's `plugin.security.choria.sign_replies`,
    /// on by default): a reply without a signature is then refused. Set `false` only for
    /// servers that do not sign; their replies are checked by hash alone.
    #[serde(default = "defaults::yes")]
    pub signed_replies: bool,
}

impl V2CollectiveConfig {
    /// The trusted issuers.
    pub fn issuers(&self) -> Result<crate::security::v2::Issuers, String> {
        crate::security::v2::Issuers::from_map(&self.issuers)
    }

    /// Loads fedgate's delegating identity and checks it as the collective's servers will.
    pub fn egress(
        &self,
        limits: crate::wire::Limits,
        now: crate::security::Now,
    ) -> Result<crate::client::V2Egress, String> {
        crate::client::V2Egress::load(&self.seed, &self.token, self.issuers()?, limits, now)
            .map(|egress| egress.with_signed_replies(self.signed_replies))
    }
}

/// A federation: its own NATS network and CA, and the members it reaches.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
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
    /// How fedgate authenticates to the federation network beyond `tls`.
    #[serde(default)]
    pub auth: Option<NatsAuth>,
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
    /// The Choria protocol v2 token issuer whose callers may send v2 requests into this
    /// federation (resign mode): one organization (a token's `ou`) and the hex ed25519 public
    /// key of its issuer.
    #[serde(default)]
    pub issuers: BTreeMap<String, String>,
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
            log_format: LogFormat::Text,
        }
    }
}

impl InstanceConfig {
    /// The instance name: configured, or the host name, stable across restarts (so an audit
    /// chain, a registry status and the metrics carry on under one name). Two instances on one
    /// host must be given names of their own.
    pub fn name_or_default(&self) -> String {
        self.name.clone().unwrap_or_else(crate::hostname)
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

    /// The federation network's endpoint, with fedgate's TLS identity and auth.
    pub fn endpoint(&self) -> NatsEndpoint {
        endpoint(
            &self.nats,
            self.ca.as_deref(),
            self.tls.as_ref(),
            &self.auth,
        )
    }
}

impl CollectiveConfig {
    /// The NATS endpoint with fedgate's own TLS identity and auth.
    pub fn endpoint(&self) -> NatsEndpoint {
        endpoint(
            &self.nats,
            self.ca.as_deref(),
            self.tls.as_ref(),
            &self.auth,
        )
    }

    /// The collective's name in its own subjects and envelopes: `internal_name`, else `name`.
    pub fn internal_name<'a>(&'a self, name: &'a str) -> &'a str {
        self.internal_name.as_deref().unwrap_or(name)
    }

    /// How fedgate signs into this collective: as a delegator in a v2 collective, else with its
    /// privileged certificate; `None` when it has neither. `name` names it in errors.
    pub fn load_egress(
        &self,
        name: &str,
        limits: Limits,
        now: crate::security::Now,
    ) -> Result<Option<crate::client::Egress>, String> {
        use std::sync::Arc;
        match (&self.v2, &self.signer) {
            (Some(v2), _) => v2
                .egress(limits, now)
                .map(|egress| Some(crate::client::Egress::V2(Arc::new(egress))))
                .map_err(|e| format!("collective {name} v2: {e}")),
            (None, Some(signer)) => {
                crate::security::Signer::from_files(&signer.certificate, &signer.key)
                    .map(|signer| Some(crate::client::Egress::V1(Arc::new(signer))))
                    .map_err(|e| format!("collective {name} signer: {e}"))
            }
            (None, None) => Ok(None),
        }
    }

    /// The privileged patterns its servers apply.
    pub fn privileged_patterns(&self) -> Result<NamePatterns, PatternError> {
        NamePatterns::or_defaults(
            self.privileged_users.as_deref(),
            patterns_defaults::PRIVILEGED,
        )
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
pub(super) fn endpoint(
    urls: &[String],
    ca: Option<&Path>,
    tls: Option<&TlsIdentity>,
    auth: &Option<NatsAuth>,
) -> NatsEndpoint {
    NatsEndpoint {
        urls: urls.to_vec(),
        ca: ca.map(Path::to_path_buf),
        identity: tls.map(|t| (t.certificate.clone(), t.key.clone())),
        auth: auth.clone(),
    }
}
