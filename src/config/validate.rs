//! Config checks run once at start-up, and the routing table of each served federation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{
    AuditStreamConfig, CollectiveConfig, Config, ConfigError, EdgeConfig, FederationMode, Member,
    TlsIdentity,
};
use crate::security::identity::IdentityRules;
use crate::security::{CaBundle, NamePatterns, check_key_pair, check_privileged_signer};
use crate::security::{Now, check_identity, check_key_mode};
use crate::subjects::{is_valid_name, is_valid_token};
use crate::wire::choria_v1::MIN_TTL;

/// Largest `max_ttl` a federation may set: a day.
const MAX_RESIGN_TTL: i64 = 86_400;

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

/// How a served federation reaches one collective.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// The collective is a member: publish on its network.
    Direct,
    /// The collective is behind this member federation: forward into its network.
    Via(String),
}

struct Checker<'a> {
    path: &'a Path,
}

impl Checker<'_> {
    fn invalid(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    fn file(&self, key: String, file: &Path) -> Result<(), ConfigError> {
        if file.is_file() {
            Ok(())
        } else {
            Err(self.invalid(key, format!("file {} does not exist", file.display())))
        }
    }

    fn name(&self, key: String, name: &str) -> Result<(), ConfigError> {
        if is_valid_name(name) {
            Ok(())
        } else {
            Err(self.invalid(
                key,
                format!(
                    "{name:?} must be letters, digits, `_` and `-`, starting with a letter or digit"
                ),
            ))
        }
    }

    /// A network's CA: required for `tls://` servers and TLS identities, and must exist.
    fn network_ca<'p>(
        &self,
        key: &str,
        nats: &[String],
        ca: Option<&'p Path>,
        tls: Option<&TlsIdentity>,
    ) -> Result<Option<&'p Path>, ConfigError> {
        let needed = nats.iter().any(|url| url.starts_with("tls://")) || tls.is_some();
        match ca {
            Some(ca) => {
                self.file(format!("{key}.ca"), ca)?;
                CaBundle::from_file(ca)
                    .map_err(|e| self.invalid(format!("{key}.ca"), e.to_string()))?;
                Ok(Some(ca))
            }
            None if needed => Err(self.invalid(
                format!("{key}.ca"),
                "is required for tls:// servers and TLS identities",
            )),
            None => Ok(None),
        }
    }

    fn patterns(
        &self,
        key: &str,
        privileged: &Option<Vec<String>>,
        allowlist: &Option<Vec<String>>,
    ) -> Result<(), ConfigError> {
        for (name, list) in [
            ("privileged_users", privileged),
            ("certname_allowlist", allowlist),
        ] {
            if let Some(list) = list {
                NamePatterns::new(list)
                    .map_err(|e| self.invalid(format!("{key}.{name}"), e.to_string()))?;
            }
        }
        Ok(())
    }

    fn signer(
        &self,
        key: &str,
        signer: &TlsIdentity,
        ca: &Path,
        collective: &CollectiveConfig,
    ) -> Result<(), ConfigError> {
        let key = format!("{key}.signer");
        self.file(format!("{key}.certificate"), &signer.certificate)?;
        self.file(format!("{key}.key"), &signer.key)?;
        let privileged = collective
            .privileged_patterns()
            .map_err(|e| self.invalid(&key, e.to_string()))?;
        check_privileged_signer(
            &signer.certificate,
            &signer.key,
            ca,
            &privileged,
            Now::system(),
        )
        .map_err(|err| self.invalid(key, err.to_string()))
    }

    /// The WebSocket edge: it authorizes and audits like a re-signing federation.
    fn edge(&self, config: &Config, edge: &EdgeConfig) -> Result<(), ConfigError> {
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
        if !(1024..=16 << 20).contains(&edge.max_message_bytes) {
            return Err(self.invalid(
                "edge.max_message_bytes",
                "must be between 1024 and 16777216",
            ));
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

    fn identity(&self, key: String, tls: &TlsIdentity, ca: &Path) -> Result<(), ConfigError> {
        self.file(format!("{key}.certificate"), &tls.certificate)?;
        self.file(format!("{key}.key"), &tls.key)?;
        check_identity(&tls.certificate, &tls.key, ca, Now::system())
            .map_err(|err| self.invalid(key, err.to_string()))
    }
}

impl Config {
    /// Moves collectives defined inside federations to the top level, refusing a name defined
    /// twice with different settings, and makes each one a member of its federation.
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
        if !(1..=3600).contains(&registry.heartbeat_s) {
            return Err(check.invalid("registry.heartbeat_s", "must be 1 to 3600"));
        }
        super::check_registry_prefix(&registry.prefix)
            .map_err(|problem| check.invalid("registry.prefix", problem))
    }

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
        if let Some(client) = &self.client {
            check.file("client.certificate".into(), &client.certificate)?;
            check.file("client.key".into(), &client.key)?;
            check_key_mode(&client.key).map_err(|e| check.invalid("client.key", e.to_string()))?;
            check_key_pair(&client.certificate, &client.key)
                .map_err(|e| check.invalid("client", e.to_string()))?;
        }
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
            }
            if !(0..=3600).contains(&legacy.max_skew_s) {
                return Err(
                    check.invalid(format!("{key}.max_skew_s"), "must be between 0 and 3600")
                );
            }
        }
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
            if let Some(internal) = &collective.internal_name {
                check.name(format!("{key}.internal_name"), internal)?;
            }
            check.patterns(
                &key,
                &collective.privileged_users,
                &collective.certname_allowlist,
            )?;
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
        self.validate_instance(&check)?;
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
            self.validate_limits(&check, &key, federation)?;
            check.patterns(
                &key,
                &federation.privileged_users,
                &federation.certname_allowlist,
            )?;
        }
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

    /// A re-signing federation verifies callers against its CA and needs fedgate's privileged
    /// signer in every collective it reaches.
    fn validate_resign(
        &self,
        check: &Checker<'_>,
        served: &str,
        routes: &BTreeMap<String, Route>,
    ) -> Result<(), ConfigError> {
        let key = format!("federations.{served}");
        if self.federations[served].ca.is_none() {
            return Err(check.invalid(
                format!("{key}.ca"),
                "is required in resign mode, to verify callers (or set mode = \"pass-through\")",
            ));
        }
        // A federation without members is only a client's view of it (`fedgate rpc`).
        match &self.policy {
            _ if routes.is_empty() || self.rules_pending() => {}
            None => {
                return Err(check.invalid(
                    "policy.dir",
                    format!("is required: federation {served} re-signs requests, and every re-signed request is authorized with actionpolicy"),
                ));
            }
            Some(policy) if !policy.dir.is_dir() => {
                return Err(check.invalid(
                    "policy.dir",
                    format!("{} is not a directory", policy.dir.display()),
                ));
            }
            Some(_) => {}
        }
        match &self.audit {
            _ if routes.is_empty() => {}
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
            Some(audit) if !(10..=60_000).contains(&audit.fsync_interval_ms) => {
                return Err(
                    check.invalid("audit.fsync_interval_ms", "must be between 10 and 60000")
                );
            }
            Some(audit) => {
                if let Some(js) = &audit.jetstream {
                    check.stream(js)?;
                }
            }
        }
        for (collective, route) in routes {
            match route {
                Route::Via(member) => {
                    return Err(check.invalid(
                        format!("{key}.members"),
                        format!("{member} is a federation; resign mode reaches member collectives only, so chain federations in pass-through mode"),
                    ));
                }
                Route::Direct
                    if self
                        .served_on(collective)
                        .is_none_or(|c| c.signer.is_none()) =>
                {
                    return Err(check.invalid(
                        format!("collectives.{collective}.signer"),
                        format!("is required: federation {served} re-signs requests for {collective} with fedgate's privileged certificate from its CA (for a legacy collective, the CA of the Choria collective it is served on)"),
                    ));
                }
                Route::Direct => {}
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

    fn validate_limits(
        &self,
        check: &Checker<'_>,
        key: &str,
        fed: &super::FederationConfig,
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

    /// The collectives a served federation reaches, and how: directly, or through a member
    /// federation. A collective reachable two ways is refused as ambiguous.
    pub fn routes(&self, federation: &str) -> Result<BTreeMap<String, Route>, String> {
        let fed = self
            .federations
            .get(federation)
            .ok_or_else(|| format!("no federation {federation}"))?;
        let mut routes = BTreeMap::new();
        for member in &fed.members {
            if member == federation {
                return Err(format!("{federation} lists itself as a member"));
            }
            let reached: Vec<(String, Route)> = match self.member(member) {
                Some(Member::Collective(_)) => vec![(member.clone(), Route::Direct)],
                Some(Member::Legacy(legacy)) if legacy.choria.is_none() => {
                    return Err(format!(
                        "{member} is a legacy collective; set legacy.{member}.choria to the Choria collective fedgate serves it on"
                    ));
                }
                Some(Member::Legacy(_)) => vec![(member.clone(), Route::Direct)],
                Some(Member::Federation(_)) => {
                    let mut visited = BTreeSet::from([federation.to_string(), member.clone()]);
                    self.reach(member, &mut visited)
                        .into_iter()
                        .map(|c| (c, Route::Via(member.clone())))
                        .collect()
                }
                None => {
                    return Err(format!(
                        "{member} is neither a collective, a legacy collective nor a federation in this file"
                    ));
                }
            };
            for (collective, route) in reached {
                if let Some(previous) = routes.insert(collective.clone(), route.clone()) {
                    return Err(format!(
                        "collective {collective} is reachable both {previous:?} and {route:?}"
                    ));
                }
            }
        }
        Ok(routes)
    }

    /// Names of the collectives behind a member federation, following federations recursively.
    fn reach(&self, federation: &str, visited: &mut BTreeSet<String>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let Some(fed) = self.federations.get(federation) else {
            return out;
        };
        for member in &fed.members {
            if self.federations.contains_key(member) {
                if visited.insert(member.clone()) {
                    out.extend(self.reach(member, visited));
                }
            } else {
                out.insert(member.clone());
            }
        }
        out
    }
}
