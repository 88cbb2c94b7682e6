//! `fedgate config import-choria`: a go-choria Federation Broker's settings (`broker.conf`)
//! turned into the equivalent fedgate config in pass-through mode, with a warning naming each
//! key that has no equivalent.
//!
//! go-choria's broker joins one federation network (`plugin.choria.federation_middleware_hosts`)
//! to one collective network (`plugin.choria.middleware_hosts`) for the cluster
//! `plugin.choria.federation.cluster`, with one security provider on both sides. fedgate's
//! pass-through mode changes only transport headers, as go-choria does, and subscribes in the
//! same queue groups, so both can serve a cluster side by side.

mod settings;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use settings::Settings;

use super::Config;
use crate::subjects::is_valid_name;

/// go-choria's default cluster name (`plugin.choria.federation.cluster`).
const DEFAULT_CLUSTER: &str = "mcollective";
/// Where Puppet keeps its certificates when `plugin.choria.ssldir` does not say.
const PUPPET_SSLDIR: &str = "/etc/puppetlabs/puppet/ssl";

/// A go-choria setting the import could not carry over as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The go-choria key.
    pub key: String,
    /// What happened to it.
    pub message: String,
}

/// The fedgate config written for a go-choria broker.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The config, as TOML.
    pub toml: String,
    /// Keys with no equivalent, or mapped with a difference worth knowing.
    pub warnings: Vec<Warning>,
}

/// Why a go-choria config could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A setting fedgate needs is missing or has a value it cannot use.
    #[error("`{key}`: {problem}")]
    Setting {
        /// The go-choria key.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

/// The TLS files of the broker's security provider.
struct Tls {
    ca: PathBuf,
    certificate: PathBuf,
    key: PathBuf,
}

/// Reads the go-choria config at `path` (and its `plugin.d`) and writes the fedgate config.
pub fn import(path: &Path) -> Result<Imported, ImportError> {
    let mut settings = Settings::load(path)?;
    let mut warnings = Vec::new();
    let toml = translate(&mut settings, &path.display().to_string(), &mut warnings)?;
    for (key, _) in settings.unused() {
        warnings.push(unmapped(key));
    }
    Ok(Imported { toml, warnings })
}

fn setting(key: &str, problem: impl Into<String>) -> ImportError {
    ImportError::Setting {
        key: key.to_string(),
        problem: problem.into(),
    }
}

fn warn(key: &str, message: impl Into<String>) -> Warning {
    Warning {
        key: key.to_string(),
        message: message.into(),
    }
}

fn translate(
    s: &mut Settings,
    source: &str,
    warnings: &mut Vec<Warning>,
) -> Result<String, ImportError> {
    match s.flag("plugin.choria.broker_federation") {
        Some(Ok(true)) => {}
        Some(Ok(false)) | None => warnings.push(warn(
            "plugin.choria.broker_federation",
            "is not true, so this file does not run a Federation Broker; the federation is written anyway",
        )),
        Some(Err(value)) => {
            return Err(setting(
                "plugin.choria.broker_federation",
                format!("{value:?} is not a boolean"),
            ));
        }
    }
    let cluster = s
        .take("plugin.choria.federation.cluster")
        .unwrap_or_else(|| DEFAULT_CLUSTER.to_string());
    if !is_valid_name(&cluster) {
        return Err(setting(
            "plugin.choria.federation.cluster",
            format!("{cluster:?} must be letters, digits, `_` and `-` for fedgate"),
        ));
    }
    let federation_nats = servers(s, "plugin.choria.federation_middleware_hosts")?;
    let collective_nats = servers(s, "plugin.choria.middleware_hosts")?;
    let collectives = collectives(s)?;
    let identity = s.take("identity");
    let tls = security(s, identity.as_deref(), warnings)?;
    let privileged = s.list("plugin.choria.security.privileged_users");
    let allowlist = s.list("plugin.choria.security.certname_whitelist");
    let metrics = stats(s, warnings)?;
    side_notes(s, warnings);

    let name = if collectives.contains(&cluster) {
        format!("{cluster}-federation")
    } else {
        cluster.clone()
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by `fedgate config import-choria` from {source}.\n\
         # The Federation Broker of cluster {cluster:?} in pass-through mode, as go-choria runs it:\n\
         # requests keep their signatures, so every member trusts the federation's CA. fedgate takes\n\
         # requests in the queue group {cluster}_federation and replies in {cluster}_collective, as\n\
         # go-choria's brokers do, so both can serve the cluster side by side during a cutover.\n"
    );
    out.push_str("[instance]\n");
    match identity.as_deref() {
        Some(id) if super::validate_instance_name(id).is_ok() => {
            let _ = writeln!(out, "name = {}", quote(id));
        }
        Some(id) => warnings.push(warn(
            "identity",
            format!("{id:?} is not a usable instance name; fedgate will use <hostname>-<pid>"),
        )),
        None => {}
    }
    if let Some(metrics) = metrics {
        let _ = writeln!(out, "metrics = {}", quote(&metrics));
    }
    let _ = writeln!(out, "\n[federations.{name}]");
    let _ = writeln!(out, "cluster = {}", quote(&cluster));
    out.push_str("mode = \"pass-through\"\n");
    network(&mut out, &federation_nats, &tls);
    let _ = writeln!(out, "members = {}", array(&collectives));
    patterns(&mut out, privileged.as_deref(), allowlist.as_deref());
    for collective in &collectives {
        let _ = writeln!(out, "\n[collectives.{collective}]");
        network(&mut out, &collective_nats, &tls);
        patterns(&mut out, privileged.as_deref(), allowlist.as_deref());
    }
    toml::from_str::<Config>(&out).map_err(|e| {
        setting(
            "plugin.choria.federation.cluster",
            format!("the written config does not parse: {e}"),
        )
    })?;
    Ok(out)
}

/// A network's servers as URLs: `host:port` becomes `nats://host:port`, as go-choria reads it.
fn servers(s: &mut Settings, key: &str) -> Result<Vec<String>, ImportError> {
    let hosts = s.list(key).unwrap_or_default();
    if hosts.is_empty() {
        return Err(setting(
            key,
            "is not set; go-choria would look up SRV records, fedgate needs the servers listed",
        ));
    }
    Ok(hosts
        .into_iter()
        .map(|host| {
            if host.contains("://") {
                host
            } else {
                format!("nats://{host}")
            }
        })
        .collect())
}

/// The broker's collectives: `collectives` (default `mcollective`) and `main_collective`.
fn collectives(s: &mut Settings) -> Result<Vec<String>, ImportError> {
    let mut names = s
        .list("collectives")
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| vec![DEFAULT_CLUSTER.to_string()]);
    if let Some(main) = s.take("main_collective")
        && !names.contains(&main)
    {
        names.insert(0, main);
    }
    if let Some(bad) = names.iter().find(|n| !is_valid_name(n)) {
        return Err(setting(
            "collectives",
            format!("{bad:?} must be letters, digits, `_` and `-` for fedgate"),
        ));
    }
    Ok(names)
}

/// The security provider's CA, certificate and key.
fn security(
    s: &mut Settings,
    identity: Option<&str>,
    warnings: &mut Vec<Warning>,
) -> Result<Tls, ImportError> {
    let provider = s
        .take("plugin.security.provider")
        .unwrap_or_else(|| "puppet".into());
    let mut relative = Vec::new();
    let tls = match provider.as_str() {
        "puppet" => {
            let dir = s
                .path("plugin.choria.ssldir", &mut relative)
                .unwrap_or_else(|| {
                    warnings.push(warn(
                        "plugin.choria.ssldir",
                        format!("is not set; go-choria would ask Puppet, {PUPPET_SSLDIR} is used"),
                    ));
                    PathBuf::from(PUPPET_SSLDIR)
                });
            let certname = identity.map(str::to_string).unwrap_or_else(|| {
                let host = crate::hostname();
                warnings.push(warn(
                    "identity",
                    format!("is not set; go-choria would use this host's name, {host:?} is used for the certificate files"),
                ));
                host
            });
            Tls {
                ca: dir.join("certs/ca.pem"),
                certificate: dir.join(format!("certs/{certname}.pem")),
                key: dir.join(format!("private_keys/{certname}.pem")),
            }
        }
        "file" | "choria" => {
            let prefix = format!("plugin.security.{provider}");
            let mut file = |what: &str| {
                let key = format!("{prefix}.{what}");
                s.path(&key, &mut relative)
                    .ok_or_else(|| setting(&key, "is not set; fedgate needs it for TLS"))
            };
            Tls {
                ca: file("ca")?,
                certificate: file("certificate")?,
                key: file("key")?,
            }
        }
        other => {
            return Err(setting(
                "plugin.security.provider",
                format!(
                    "{other:?}: fedgate reads certificates from files (puppet, file or choria with files)"
                ),
            ));
        }
    };
    for key in relative {
        warnings.push(warn(
            &key,
            "is relative; it is resolved from the config's folder (go-choria resolves it from its working directory)",
        ));
    }
    Ok(tls)
}

/// `plugin.choria.stats_address` and `stats_port` as the `/metrics` listener.
fn stats(s: &mut Settings, warnings: &mut Vec<Warning>) -> Result<Option<String>, ImportError> {
    let address = s
        .take("plugin.choria.stats_address")
        .unwrap_or_else(|| "127.0.0.1".into());
    let Some(port) = s.take("plugin.choria.stats_port") else {
        return Ok(None);
    };
    let port: u16 = port.trim().parse().map_err(|_| {
        setting(
            "plugin.choria.stats_port",
            format!("{port:?} is not a port"),
        )
    })?;
    if port == 0 {
        return Ok(None);
    }
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address
    };
    let listen = format!("{host}:{port}");
    if listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(setting(
            "plugin.choria.stats_address",
            format!("{listen:?} is not an IP address and port"),
        ));
    }
    warnings.push(warn(
        "plugin.choria.stats_port",
        "mapped to [instance] metrics: fedgate serves /metrics, not /choria/prometheus, and labels choria_federation_* differently; see docs/migrating-from-go-choria.md",
    ));
    Ok(Some(listen))
}

/// Warnings with a reason for keys that are known but have no place in fedgate.
fn side_notes(s: &mut Settings, warnings: &mut Vec<Warning>) {
    let keys: Vec<String> = s.unused().map(|(k, _)| k.clone()).collect();
    for key in keys {
        let why = match key.as_str() {
            "plugin.choria.broker_network" => match s.flag(&key) {
                Some(Ok(false)) => continue,
                _ => {
                    "fedgate is only the Federation Broker: keep go-choria's network broker or a nats-server for the NATS network"
                }
            },
            "plugin.choria.federation.collectives" => {
                "a client setting (the clusters a client sends to); on a broker go-choria then connects its collective side to the federation network"
            }
            "plugin.choria.federation.instance" => {
                "left from the Ruby broker and ignored by go-choria; the instance name comes from `identity`"
            }
            "logfile" | "loglevel" => {
                "fedgate logs to stderr (journald under systemd); -v, -vv or RUST_LOG set the level"
            }
            "plugin.choria.use_srv" | "plugin.choria.srv_domain" => {
                "fedgate does not look up SRV records; the servers are listed in the config"
            }
            k if k.starts_with("plugin.choria.network.") => {
                "a setting of go-choria's NATS network broker, which fedgate does not replace"
            }
            k if k.starts_with("plugin.choria.adapter") => {
                "protocol adapters are not part of fedgate"
            }
            _ => continue,
        };
        s.mark(&key);
        warnings.push(warn(&key, format!("not mapped: {why}")));
    }
}

fn unmapped(key: &str) -> Warning {
    warn(
        key,
        "not mapped: fedgate's Federation Broker has no equivalent",
    )
}

/// `nats`, `ca` and `tls` of a network.
fn network(out: &mut String, nats: &[String], tls: &Tls) {
    let _ = writeln!(out, "nats = {}", array(nats));
    let _ = writeln!(out, "ca = {}", quote(&tls.ca.to_string_lossy()));
    let _ = writeln!(
        out,
        "tls = {{ certificate = {}, key = {} }}",
        quote(&tls.certificate.to_string_lossy()),
        quote(&tls.key.to_string_lossy())
    );
}

/// The certname patterns, when the broker sets them.
fn patterns(out: &mut String, privileged: Option<&[String]>, allowlist: Option<&[String]>) {
    if let Some(list) = privileged {
        let _ = writeln!(out, "privileged_users = {}", array(list));
    }
    if let Some(list) = allowlist {
        let _ = writeln!(out, "certname_allowlist = {}", array(list));
    }
}

/// A TOML string.
fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// A TOML array of strings.
fn array(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|i| quote(i)).collect();
    format!("[{}]", items.join(", "))
}
