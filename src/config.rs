//! The strict TOML configuration: unknown keys, missing files, bad names, identities that do not
//! chain to their CA and conflicting definitions all stop start-up with a message naming the key.

mod audit;
pub mod choria_import;
mod defaults;
mod edge;
mod exposure;
mod legacy;
mod network;
mod policy;
pub mod reference;
mod registry;
mod replay;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::security::identity::IdentityRules;

pub use audit::{AuditConfig, AuditStreamConfig, CheckpointConfig};
pub use edge::EdgeConfig;
pub use exposure::Exposed;
pub use legacy::{LegacyBridgeConfig, LegacyConfig};
pub use network::{
    ClientConfig, CollectiveConfig, FederationConfig, FederationMode, InstanceConfig, LogFormat,
    TlsIdentity, V2CollectiveConfig,
};
pub use policy::{IdentityConfig, PolicyConfig};
pub use registry::{
    AuthorKey, Fragment, FragmentFederation, FragmentPolicy, MAX_AUTHORS, RegistryConfig,
    check_author_name, check_registry_prefix,
};
pub use replay::{DEFAULT_MAX_SIGNED_TTL, DEFAULT_MIN_LIFE, DdlConfig, ReplayConfig};
pub use validate::{Route, validate_instance_name};

/// A whole fedgate configuration file.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
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
    /// Choria JSON DDLs that every ingress checks a call's agent, action and inputs against.
    #[serde(default)]
    pub ddl: Option<DdlConfig>,
    /// The rules of `identity.rules`, loaded and checked once with the config.
    #[serde(skip, default = "defaults::identity_rules")]
    rules: Arc<IdentityRules>,
    /// The registry revision applied with [`Config::with_set`].
    #[serde(skip)]
    revision: Option<u64>,
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
        config.load_registry_authors(path)?;
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
    /// go from one legacy site back into another, and so are Choria protocol v2 members: the
    /// bridge re-signs as v1). Each needs fedgate's `signer`.
    pub fn bridge_targets(&self, bridge: &LegacyBridgeConfig) -> Result<Vec<String>, String> {
        let name = &bridge.collective;
        let targets: Vec<String> = if self.federations.contains_key(name) {
            let mut members = Vec::new();
            for (member, route) in self.routes(name)? {
                match route {
                    // The bridge re-signs as v1; a Choria protocol v2 member is not bridged.
                    Route::Direct
                        if self
                            .collectives
                            .get(&member)
                            .is_some_and(|c| c.v2.is_some()) => {}
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
        let join_auth = |auth: &mut Option<crate::nats::NatsAuth>| {
            if let Some(auth) = auth {
                let files = [&mut auth.creds, &mut auth.nkey];
                let more = [&mut auth.password_file, &mut auth.token_file];
                files.into_iter().chain(more).flatten().for_each(join);
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
            join_auth(&mut collective.auth);
            if let Some(v2) = &mut collective.v2 {
                join(&mut v2.seed);
                join(&mut v2.token);
            }
        }
        for legacy in self.legacy.values_mut() {
            join(&mut legacy.server_public);
            legacy.server_private.iter_mut().for_each(join);
            legacy.client_keys.iter_mut().for_each(join);
            join(&mut legacy.signers);
            legacy.ca.iter_mut().for_each(join);
            join_tls(&mut legacy.tls);
        }
        self.replay.ca.iter_mut().for_each(join);
        join_tls(&mut self.replay.tls);
        join_auth(&mut self.replay.auth);
        self.identity.rules.iter_mut().for_each(join);
        if let Some(policy) = &mut self.policy {
            join(&mut policy.dir);
        }
        if let Some(ddl) = &mut self.ddl {
            join(&mut ddl.dir);
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
            join_auth(&mut registry.auth);
            join(&mut registry.cache);
            registry.authors.values_mut().for_each(join);
        }
        if let Some(audit) = &mut self.audit {
            audit.file.iter_mut().for_each(join);
            if let Some(checkpoint) = &mut audit.checkpoint {
                join(&mut checkpoint.key);
            }
            if let Some(js) = &mut audit.jetstream {
                js.ca.iter_mut().for_each(join);
                join_tls(&mut js.tls);
                join_auth(&mut js.auth);
            }
        }
        for federation in self.federations.values_mut() {
            federation.ca.iter_mut().for_each(join);
            join_tls(&mut federation.tls);
            join_auth(&mut federation.auth);
        }
    }
}

impl Config {
    /// The identity mapping rules, as loaded with the config; with no rules file, a set that
    /// denies every caller.
    pub fn identity_rules(&self) -> &Arc<IdentityRules> {
        &self.rules
    }
}
