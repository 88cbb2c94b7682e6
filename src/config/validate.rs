//! Config checks run once at start-up, and the routing table of each served federation.

mod audit;
mod checker;
mod edge;
mod networks;
mod registry;
mod resign;
mod routes;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{Config, ConfigError, FederationMode};
use crate::security::identity::IdentityRules;
use crate::security::{check_key_mode, check_key_pair};
use checker::Checker;

pub use routes::Route;

/// Checks an instance name, wherever it came from (config, flag or environment).
pub fn validate_instance_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 128
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{name:?} must be 1 to 128 characters without spaces"
        ));
    }
    Ok(())
}

impl Config {
    /// With a registry, the rules live there: a local policy directory, identity rules file
    /// or users file would silently disagree with it.
    pub(super) fn check_registry_owned(&self, path: &Path) -> Result<(), ConfigError> {
        let check = Checker { path };
        let Some(registry) = &self.registry else {
            return Ok(());
        };
        let owned = [
            ("policy", self.policy.is_some()),
            ("identity.rules", self.identity.rules.is_some()),
            (
                "edge.users",
                self.edge.as_ref().is_some_and(|e| e.users.is_some()),
            ),
        ];
        if let Some((key, _)) = owned.iter().find(|(_, set)| *set) {
            return Err(check.invalid(
                *key,
                "comes from the registry when [registry] is set: push it with `fedgate registry push` instead",
            ));
        }
        if registry.nats.is_empty() {
            return Err(check.invalid("registry.nats", "names no server"));
        }
        if let Some(ca) = &registry.ca {
            check.file("registry.ca".into(), ca)?;
        }
        check.nats_auth("registry", registry.auth.as_ref())?;
        if !(1..=3600).contains(&registry.heartbeat_s) {
            return Err(check.invalid("registry.heartbeat_s", "must be 1 to 3600"));
        }
        super::check_registry_prefix(&registry.prefix)
            .map_err(|problem| check.invalid("registry.prefix", problem))
    }

    /// Moves collectives defined inside federations to the top level, refusing a name defined
    /// twice with different settings, and makes each one a member of its federation.
    pub(super) fn merge_inline_collectives(&mut self, path: &Path) -> Result<(), ConfigError> {
        let check = Checker { path };
        let mut origin: BTreeMap<String, String> = self
            .collectives
            .keys()
            .map(|name| (name.clone(), format!("collectives.{name}")))
            .collect();
        for (fed_name, federation) in &mut self.federations {
            for (name, collective) in std::mem::take(&mut federation.collectives) {
                let key = format!("federations.{fed_name}.collectives.{name}");
                if let Some(existing) = self.collectives.get(&name) {
                    if *existing != collective {
                        let first = origin.get(&name).cloned().unwrap_or_default();
                        return Err(check.invalid(key, format!("collective {name} is also defined at `{first}` with different settings")));
                    }
                } else {
                    self.collectives.insert(name.clone(), collective);
                    origin.insert(name.clone(), key);
                }
                if !federation.members.contains(&name) {
                    federation.members.push(name);
                }
            }
        }
        Ok(())
    }

    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let check = Checker { path };
        self.validate_replay(&check)?;
        if let Some(edge) = &self.edge {
            check.edge(self, edge)?;
        }
        self.validate_client(&check)?;
        self.validate_legacy(&check)?;
        self.validate_collectives(&check)?;
        self.validate_instance(&check)?;
        self.validate_federations(&check)?;
        for served in self.served_federations() {
            let routes = self.routes(served).map_err(|problem| {
                check.invalid(format!("federations.{served}.members"), problem)
            })?;
            if self.federations[served].mode == FederationMode::Resign {
                self.validate_resign(&check, served, &routes)?;
            }
        }
        Ok(())
    }

    /// Loads the rules file, which must compile and name only realms and collectives this file
    /// defines; with no rules file, rules that deny every caller.
    pub(super) fn load_identity_rules(&self, path: &Path) -> Result<IdentityRules, ConfigError> {
        let check = Checker { path };
        let Some(path) = &self.identity.rules else {
            return Ok(IdentityRules::deny_all());
        };
        check.file("identity.rules".into(), path)?;
        let rules = IdentityRules::load(path)
            .map_err(|err| check.invalid("identity.rules", err.to_string()))?;
        for (index, from, to) in rules.scopes() {
            let problem = if !self.is_realm(from) {
                Some(format!(
                    "from = {from:?} is not a federation, collective or edge realm in this file"
                ))
            } else {
                to.iter()
                    .find(|c| {
                        !self.collectives.contains_key(c.as_str())
                            && !self.legacy.contains_key(c.as_str())
                    })
                    .map(|c| format!("to names {c:?}, which is not a collective in this file"))
            };
            if let Some(problem) = problem {
                return Err(check.invalid(
                    "identity.rules",
                    format!("{} rule {index}: {problem}", rules.file()),
                ));
            }
        }
        Ok(rules)
    }

    /// A place callers can come from: a federation or a collective.
    pub fn is_realm(&self, name: &str) -> bool {
        self.federations.contains_key(name)
            || self.collectives.contains_key(name)
            || self.legacy.contains_key(name)
            || self.edge.as_ref().is_some_and(|edge| edge.realm == name)
    }

    fn validate_replay(&self, check: &Checker<'_>) -> Result<(), ConfigError> {
        let replay = &self.replay;
        if !(30..=86_400).contains(&replay.max_signed_ttl) {
            return Err(check.invalid("replay.max_signed_ttl", "must be between 30 and 86400"));
        }
        if !(1..=30).contains(&replay.min_life_s) {
            return Err(check.invalid("replay.min_life_s", "must be between 1 and 30"));
        }
        check.name("replay.bucket".into(), &replay.bucket)?;
        if let Some(ddl) = &self.ddl
            && !ddl.dir.is_dir()
        {
            return Err(check.invalid(
                "ddl.dir",
                format!("{} is not a directory", ddl.dir.display()),
            ));
        }
        if let Some(tls) = &replay.tls {
            check.file("replay.tls.certificate".into(), &tls.certificate)?;
            check.file("replay.tls.key".into(), &tls.key)?;
        }
        check.nats_auth("replay", replay.auth.as_ref())?;
        Ok(())
    }

    fn validate_client(&self, check: &Checker<'_>) -> Result<(), ConfigError> {
        if let Some(client) = &self.client {
            check.file("client.certificate".into(), &client.certificate)?;
            check.file("client.key".into(), &client.key)?;
            check_key_mode(&client.key).map_err(|e| check.invalid("client.key", e.to_string()))?;
            check_key_pair(&client.certificate, &client.key)
                .map_err(|e| check.invalid("client", e.to_string()))?;
        }
        Ok(())
    }

    fn validate_instance(&self, check: &Checker<'_>) -> Result<(), ConfigError> {
        if let Some(name) = &self.instance.name {
            validate_instance_name(name)
                .map_err(|problem| check.invalid("instance.name", problem))?;
        }
        if self.instance.workers == Some(0) {
            return Err(check.invalid("instance.workers", "must be at least 1"));
        }
        let Some(serve) = &self.instance.serve else {
            let chained = self
                .federations
                .values()
                .flat_map(|f| &f.members)
                .any(|m| self.federations.contains_key(m));
            if chained {
                return Err(check.invalid(
                    "instance.serve",
                    "must list the federations this process serves when one federation is a member of another",
                ));
            }
            return Ok(());
        };
        if serve.is_empty() {
            return Err(check.invalid("instance.serve", "lists no federation"));
        }
        let mut seen = BTreeSet::new();
        for name in serve {
            if !self.federations.contains_key(name) {
                return Err(check.invalid(
                    "instance.serve",
                    format!("{name} is not a federation in this file"),
                ));
            }
            if !seen.insert(name) {
                return Err(check.invalid("instance.serve", format!("{name} is listed twice")));
            }
        }
        Ok(())
    }
}
