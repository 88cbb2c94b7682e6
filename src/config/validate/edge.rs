//! Checks of the `[edge]` section.

use super::checker::Checker;
use crate::config::{Config, ConfigError, EdgeConfig};

impl Checker<'_> {
    /// The WebSocket edge: it authorizes and audits like a re-signing federation.
    pub(super) fn edge(&self, config: &Config, edge: &EdgeConfig) -> Result<(), ConfigError> {
        if config.policy.is_none() && !config.rules_pending() {
            return Err(self.invalid(
                "policy.dir",
                "is required: the edge authorizes every request with actionpolicy",
            ));
        }
        if config.audit.is_none() {
            return Err(self.invalid("audit", "is required: the edge records every decision"));
        }
        if edge.tls.is_none() && !edge.listen.ip().is_loopback() && !edge.allow_plaintext {
            return Err(self.invalid(
                "edge.tls",
                format!(
                    "is required on {}: plain ws:// is for loopback addresses unless allow_plaintext = true",
                    edge.listen
                ),
            ));
        }
        if let Some(tls) = &edge.tls {
            self.file("edge.tls.certificate".into(), &tls.certificate)?;
            self.file("edge.tls.key".into(), &tls.key)?;
        }
        for (key, file) in [
            ("edge.ca", &edge.ca),
            ("edge.token_key", &edge.token_key),
            ("edge.users", &edge.users),
        ] {
            if let Some(file) = file {
                self.file(key.into(), file)?;
            }
        }
        edge.v2_issuers()
            .map_err(|problem| self.invalid("edge.issuers", problem))?;
        if edge.users.is_some() && edge.token_key.is_none() {
            return Err(self.invalid(
                "edge.token_key",
                "is required with edge.users: a login issues a token",
            ));
        }
        for origin in &edge.origins {
            if !(origin.starts_with("https://") || origin.starts_with("http://"))
                || origin.ends_with('/')
            {
                return Err(self.invalid(
                    "edge.origins",
                    format!("{origin:?} must be a scheme and host, like https://ops.example.com"),
                ));
            }
        }
        for (key, value) in [
            ("edge.max_message_bytes", edge.max_message_bytes),
            ("edge.reply_buffer", edge.reply_buffer),
        ] {
            if !(1024..=16 << 20).contains(&value) {
                return Err(self.invalid(key, "must be between 1024 and 16777216"));
            }
        }
        let ranges = [
            ("unverified_budget", edge.unverified_budget, 0, 100_000),
            (
                "unverified_interval_s",
                edge.unverified_interval_s,
                1,
                3_600,
            ),
        ];
        for (name, value, low, high) in ranges {
            if !(low..=high).contains(&value) {
                return Err(self.invalid(
                    format!("edge.{name}"),
                    format!("must be between {low} and {high}"),
                ));
            }
        }
        for (key, value) in [
            ("edge.login_rate_per_address", edge.login_rate_per_address),
            ("edge.login_burst_per_address", edge.login_burst_per_address),
        ] {
            if value == 0 {
                return Err(self.invalid(key, "must be at least 1"));
            }
        }
        if let Some(dir) = &edge.ddl_dir
            && !dir.is_dir()
        {
            return Err(self.invalid(
                "edge.ddl_dir",
                format!("{} is not a directory", dir.display()),
            ));
        }
        if let Some(bad) = edge
            .auditors
            .iter()
            .find(|a| crate::security::CallerId::parse(a).is_err())
        {
            return Err(self.invalid(
                "edge.auditors",
                format!("{bad:?} is not a caller id like up=alice or choria=alice"),
            ));
        }
        Ok(())
    }
}
