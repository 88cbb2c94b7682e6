//! `[audit]`: the audit file and the JetStream audit stream.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::defaults;
use super::network::{TlsIdentity, endpoint};
use crate::nats::{NatsAuth, NatsEndpoint};

/// Where and how decisions are recorded.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
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
    /// Bytes the trail (the active file and its rotated files) may take: a write that would pass
    /// it is refused (fail closed) before the disk fills; warnings at 80% and 90%. None: only
    /// the file system's own fill is watched.
    #[serde(default)]
    pub budget_bytes: Option<u64>,
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
    /// Signed checkpoints in every chain this instance writes.
    #[serde(default)]
    pub checkpoint: Option<CheckpointConfig>,
}

/// Signed checkpoints: every `every` records or `interval_s` seconds, whichever comes first.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// The instance's Ed25519 PKCS#8 key (`fedgate audit keygen`); keep it 0600, like the token
    /// key. Its public half goes to whoever verifies (`fedgate audit verify --key`).
    pub key: PathBuf,
    /// Records between checkpoints at most (1 to 1,000,000).
    #[serde(default = "defaults::checkpoint_every")]
    pub every: u64,
    /// Seconds a record waits for a checkpoint at most (1 to 86,400).
    #[serde(default = "defaults::checkpoint_interval_s")]
    pub interval_s: u64,
}

impl CheckpointConfig {
    /// Loads the signing key.
    pub fn signer(&self) -> Result<crate::audit::checkpoint::Signer, String> {
        crate::audit::checkpoint::Signer::load(
            &self.key,
            self.every,
            Duration::from_secs(self.interval_s),
        )
        .map_err(|e| e.to_string())
    }
}

/// The JetStream audit sink: a stream refusing deletes and purges, shared by instances.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
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
    /// How fedgate authenticates there beyond `tls`.
    #[serde(default)]
    pub auth: Option<NatsAuth>,
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
            checkpoints: None,
            budget_bytes: self.budget_bytes,
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
            checkpoints: None,
        })
    }
}

impl AuditStreamConfig {
    /// The stream's NATS endpoint with fedgate's TLS identity and auth.
    pub fn endpoint(&self) -> NatsEndpoint {
        endpoint(
            &self.nats,
            self.ca.as_deref(),
            self.tls.as_ref(),
            &self.auth,
        )
    }
}
