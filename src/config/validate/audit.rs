//! Checks of the `[audit]` section a re-signing federation needs, and of its JetStream sink.

use super::checker::Checker;
use crate::config::{AuditStreamConfig, CheckpointConfig, Config, ConfigError};
use crate::subjects::is_valid_token;

impl Config {
    /// The audit trail of re-signing federation `served`: a sink, and sound settings.
    pub(super) fn validate_audit(
        &self,
        check: &Checker<'_>,
        served: &str,
    ) -> Result<(), ConfigError> {
        match &self.audit {
            None => {
                return Err(check.invalid(
                    "audit.file",
                    format!("is required: federation {served} re-signs requests, and every decision is audited"),
                ));
            }
            Some(audit) if audit.file.is_none() && audit.jetstream.is_none() => {
                return Err(check.invalid(
                    "audit",
                    "needs a sink: `file`, `[audit.jetstream]`, or both",
                ));
            }
            Some(audit) if audit.rotate_bytes < 64 * 1024 => {
                return Err(check.invalid("audit.rotate_bytes", "must be at least 65536"));
            }
            Some(audit)
                if audit
                    .budget_bytes
                    .is_some_and(|b| b < 4 * audit.rotate_bytes.min(1 << 30)) =>
            {
                return Err(check.invalid(
                    "audit.budget_bytes",
                    "must be at least four times rotate_bytes (or 4 GiB), so rotated files fit",
                ));
            }
            Some(audit) if !(10..=60_000).contains(&audit.fsync_interval_ms) => {
                return Err(
                    check.invalid("audit.fsync_interval_ms", "must be between 10 and 60000")
                );
            }
            Some(audit) => {
                if let Some(js) = &audit.jetstream {
                    check.stream(js)?;
                }
                if let Some(checkpoint) = &audit.checkpoint {
                    check.checkpoint(checkpoint)?;
                }
            }
        }
        Ok(())
    }
}

impl Checker<'_> {
    /// The checkpoint key and cadence.
    fn checkpoint(&self, checkpoint: &CheckpointConfig) -> Result<(), ConfigError> {
        let ranges = [
            ("every", checkpoint.every, 1, 1_000_000),
            ("interval_s", checkpoint.interval_s, 1, 86_400),
        ];
        for (name, value, low, high) in ranges {
            if !(low..=high).contains(&value) {
                return Err(self.invalid(
                    format!("audit.checkpoint.{name}"),
                    format!("must be between {low} and {high}"),
                ));
            }
        }
        checkpoint
            .signer()
            .map(drop)
            .map_err(|problem| self.invalid("audit.checkpoint.key", problem))
    }

    /// The JetStream audit sink's settings.
    fn stream(&self, js: &AuditStreamConfig) -> Result<(), ConfigError> {
        let key = "audit.jetstream";
        if js.nats.is_empty() {
            return Err(self.invalid(format!("{key}.nats"), "needs at least one server URL"));
        }
        if let Some(ca) = self.network_ca(key, &js.nats, js.ca.as_deref(), js.tls.as_ref())?
            && let Some(tls) = &js.tls
        {
            self.identity(format!("{key}.tls"), tls, ca)?;
        }
        self.nats_auth(key, js.auth.as_ref())?;
        self.name(format!("{key}.stream"), &js.stream)?;
        if !js.subject.split('.').all(is_valid_token) {
            return Err(self.invalid(
                format!("{key}.subject"),
                format!(
                    "{:?} must be dot-separated subject tokens without wildcards",
                    js.subject
                ),
            ));
        }
        let ranges: [(&str, u64, u64, u64); 4] = [
            ("replicas", js.replicas as u64, 1, 5),
            ("duplicate_window_s", js.duplicate_window_s, 1, 86_400),
            ("timeout_ms", js.timeout_ms, 100, 60_000),
            ("max_bytes", js.max_bytes.max(0) as u64, 1 << 20, u64::MAX),
        ];
        for (name, value, low, high) in ranges {
            if !(low..=high).contains(&value) {
                return Err(self.invalid(
                    format!("{key}.{name}"),
                    format!("must be between {low} and {high}"),
                ));
            }
        }
        Ok(())
    }
}
