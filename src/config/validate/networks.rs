//! Checks of the networks a config names: legacy collectives, collectives and federations.

use std::collections::BTreeSet;

use super::checker::Checker;
use crate::config::{Config, ConfigError, FederationConfig, LegacyConfig};
use crate::wire::choria_v1::MIN_TTL;

/// Longest wait between reconnections to a legacy broker: ten minutes.
const MAX_RECONNECT_MS: u64 = 600_000;
/// Largest `max_ttl` a federation may set: a day.
const MAX_RESIGN_TTL: i64 = 86_400;

impl Config {
    /// Each legacy collective: its name, broker URL, keys, and the bridge it may run.
    pub(super) fn validate_legacy(&self, check: &Checker<'_>) -> Result<(), ConfigError> {
        for (name, legacy) in &self.legacy {
            let key = format!("legacy.{name}");
            check.name(key.clone(), name)?;
            if self.collectives.contains_key(name) || self.federations.contains_key(name) {
                return Err(check.invalid(key, "is also a collective or federation"));
            }
            if !legacy.amqp.starts_with("amqp://") && !legacy.amqp.starts_with("amqps://") {
                return Err(
                    check.invalid(format!("{key}.amqp"), "must be an amqp:// or amqps:// URL")
                );
            }
            self.validate_amqp(check, &key, legacy)?;
            check.name(format!("{key}.collective"), &legacy.collective)?;
            check.file(format!("{key}.server_public"), &legacy.server_public)?;
            if let Some(private) = &legacy.server_private {
                check.file(format!("{key}.server_private"), private)?;
            }
            for (what, dir) in [
                ("signers", Some(&legacy.signers)),
                ("client_keys", legacy.client_keys.as_ref()),
            ] {
                if let Some(dir) = dir
                    && !dir.is_dir()
                {
                    return Err(check.invalid(
                        format!("{key}.{what}"),
                        format!("{} is not a directory", dir.display()),
                    ));
                }
            }
            if let Some(choria) = &legacy.choria
                && self.collectives.get(choria).is_none_or(|c| c.ca.is_none())
            {
                return Err(check.invalid(
                    format!("{key}.choria"),
                    format!("{choria} is not a collective with a ca in this file"),
                ));
            }
            if let Some(bridge) = &legacy.bridge {
                self.bridge_targets(bridge).map_err(|problem| {
                    check.invalid(format!("{key}.bridge.collective"), problem)
                })?;
                if legacy.server_private.is_none() || legacy.client_keys.is_none() {
                    return Err(check.invalid(
                        format!("{key}.bridge"),
                        "needs server_private (to sign replies) and client_keys (to verify callers)",
                    ));
                }
                if bridge.agents.is_empty() || bridge.prefetch == 0 {
                    return Err(check.invalid(
                        format!("{key}.bridge"),
                        "needs agents and a prefetch of at least 1",
                    ));
                }
                let most = crate::security::replay::MAX_COPIES;
                if !(1..=most).contains(&bridge.max_copies) {
                    return Err(check.invalid(
                        format!("{key}.bridge.max_copies"),
                        format!("must be between 1 and {most}"),
                    ));
                }
            }
            if !(0..=3600).contains(&legacy.max_skew_s) {
                return Err(
                    check.invalid(format!("{key}.max_skew_s"), "must be between 0 and 3600")
                );
            }
        }
        Ok(())
    }

    /// A legacy collective's broker: a URL lapin reads, TLS settings only with `amqps://` (a
    /// client identity only with the CA it must chain to), and a reconnection back-off in range.
    fn validate_amqp(
        &self,
        check: &Checker<'_>,
        key: &str,
        legacy: &LegacyConfig,
    ) -> Result<(), ConfigError> {
        legacy.amqp.parse::<lapin::uri::AMQPUri>().map_err(|e| {
            check.invalid(format!("{key}.amqp"), format!("is not a valid URL: {e}"))
        })?;
        let tls_settings = legacy.ca.is_some() || legacy.tls.is_some();
        if tls_settings && !legacy.amqp.starts_with("amqps://") {
            return Err(check.invalid(
                format!("{key}.amqp"),
                "must be an amqps:// URL when ca or tls is set",
            ));
        }
        let ca = check.network_ca(key, &[], legacy.ca.as_deref(), legacy.tls.as_ref())?;
        if let (Some(tls), Some(ca)) = (&legacy.tls, ca) {
            check.identity(format!("{key}.tls"), tls, ca)?;
        }
        let (min, max) = (legacy.reconnect_min_ms, legacy.reconnect_max_ms);
        if min == 0 || min > max || max > MAX_RECONNECT_MS {
            return Err(check.invalid(
                format!("{key}.reconnect_min_ms"),
                format!(
                    "and reconnect_max_ms must satisfy 1 <= min <= max <= {MAX_RECONNECT_MS} (found {min} and {max})"
                ),
            ));
        }
        Ok(())
    }

    /// Each collective: its name, servers, CA, TLS identity, patterns and privileged signer.
    pub(super) fn validate_collectives(&self, check: &Checker<'_>) -> Result<(), ConfigError> {
        for (name, collective) in &self.collectives {
            let key = format!("collectives.{name}");
            check.name(key.clone(), name)?;
            if collective.nats.is_empty() {
                return Err(check.invalid(format!("{key}.nats"), "lists no server"));
            }
            let ca = check.network_ca(
                &key,
                &collective.nats,
                collective.ca.as_deref(),
                collective.tls.as_ref(),
            )?;
            if let (Some(tls), Some(ca)) = (&collective.tls, ca) {
                check.identity(format!("{key}.tls"), tls, ca)?;
            }
            check.nats_auth(&key, collective.auth.as_ref())?;
            if let Some(internal) = &collective.internal_name {
                check.name(format!("{key}.internal_name"), internal)?;
            }
            check.patterns(
                &key,
                &collective.privileged_users,
                &collective.certname_allowlist,
            )?;
            if let Some(v2) = &collective.v2 {
                if collective.signer.is_some() {
                    return Err(check.invalid(
                        format!("{key}.v2"),
                        "a collective speaks v1 (signer) or v2 (v2), not both",
                    ));
                }
                check.file(format!("{key}.v2.seed"), &v2.seed)?;
                check.file(format!("{key}.v2.token"), &v2.token)?;
                v2.issuers()
                    .map_err(|problem| check.invalid(format!("{key}.v2.issuers"), problem))?;
                v2.egress(
                    crate::wire::Limits::default(),
                    crate::security::Now::system(),
                )
                .map_err(|problem| check.invalid(format!("{key}.v2.token"), problem))?;
            }
            if let Some(signer) = &collective.signer {
                let ca = ca.ok_or_else(|| {
                    check.invalid(
                        format!("{key}.ca"),
                        "is required to check the privileged signer",
                    )
                })?;
                check.signer(&key, signer, ca, collective)?;
            }
        }
        Ok(())
    }

    /// Each federation: its name, cluster, servers, CA, TLS identity, limits and patterns.
    pub(super) fn validate_federations(&self, check: &Checker<'_>) -> Result<(), ConfigError> {
        let mut clusters = BTreeSet::new();
        for (name, federation) in &self.federations {
            let key = format!("federations.{name}");
            check.name(key.clone(), name)?;
            if self.collectives.contains_key(name) {
                return Err(
                    check.invalid(key, format!("{name} is both a collective and a federation"))
                );
            }
            let cluster = federation.cluster_name(name);
            check.name(format!("{key}.cluster"), cluster)?;
            if !clusters.insert(cluster) {
                return Err(check.invalid(
                    format!("{key}.cluster"),
                    format!("cluster {cluster} is used by two federations"),
                ));
            }
            if federation.nats.is_empty() {
                return Err(check.invalid(format!("{key}.nats"), "lists no server"));
            }
            let ca = check.network_ca(
                &key,
                &federation.nats,
                federation.ca.as_deref(),
                federation.tls.as_ref(),
            )?;
            if let (Some(tls), Some(ca)) = (&federation.tls, ca) {
                check.identity(format!("{key}.tls"), tls, ca)?;
            }
            check.nats_auth(&key, federation.auth.as_ref())?;
            self.validate_limits(check, &key, federation)?;
            check.patterns(
                &key,
                &federation.privileged_users,
                &federation.certname_allowlist,
            )?;
        }
        Ok(())
    }

    fn validate_limits(
        &self,
        check: &Checker<'_>,
        key: &str,
        fed: &FederationConfig,
    ) -> Result<(), ConfigError> {
        if fed.max_hops < 2 {
            return Err(check.invalid(
                format!("{key}.max_hops"),
                "must be at least 2 (the client's hop and this broker's)",
            ));
        }
        if fed.max_targets == 0 {
            return Err(check.invalid(format!("{key}.max_targets"), "must be at least 1"));
        }
        if !(MIN_TTL..=MAX_RESIGN_TTL).contains(&fed.max_ttl) {
            return Err(check.invalid(
                format!("{key}.max_ttl"),
                format!("must be between {MIN_TTL} and {MAX_RESIGN_TTL} seconds"),
            ));
        }
        if fed.batch_size == 0 || fed.batch_size > fed.max_targets {
            return Err(check.invalid(
                format!("{key}.batch_size"),
                format!("must be between 1 and max_targets ({})", fed.max_targets),
            ));
        }
        Ok(())
    }
}
