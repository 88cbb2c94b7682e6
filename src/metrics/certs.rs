//! `fedgate_certificate_expiry_timestamp_seconds`: when each configured certificate expires,
//! read again from its file every time it is published, so a renewed file shows at once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::{Config, TlsIdentity};

/// One configured certificate file: the config key that names it, and the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFile {
    /// The config key, e.g. `collectives.london.signer.certificate`.
    pub entry: String,
    /// The PEM file (one certificate, a chain or a CA bundle).
    pub path: PathBuf,
}

/// Every certificate file `config` names that `fedgate run` uses: the CAs and TLS identities of
/// the collectives, federations, legacy brokers, the edge, the audit stream, the registry and the
/// replay guard, and the collectives' privileged signers.
pub fn configured(config: &Config) -> Vec<CertFile> {
    let mut files = Vec::new();
    let mut ca = |entry: String, path: &Option<PathBuf>| {
        if let Some(path) = path {
            files.push(CertFile {
                entry,
                path: path.clone(),
            });
        }
    };
    for (name, collective) in &config.collectives {
        ca(format!("collectives.{name}.ca"), &collective.ca);
    }
    for (name, federation) in &config.federations {
        ca(format!("federations.{name}.ca"), &federation.ca);
    }
    for (name, legacy) in &config.legacy {
        ca(format!("legacy.{name}.ca"), &legacy.ca);
    }
    if let Some(edge) = &config.edge {
        ca("edge.ca".into(), &edge.ca);
    }
    if let Some(stream) = config.audit.as_ref().and_then(|a| a.jetstream.as_ref()) {
        ca("audit.jetstream.ca".into(), &stream.ca);
    }
    if let Some(registry) = &config.registry {
        ca("registry.ca".into(), &registry.ca);
    }
    ca("replay.ca".into(), &config.replay.ca);
    let mut identity = |entry: String, tls: &Option<TlsIdentity>| {
        if let Some(tls) = tls {
            files.push(CertFile {
                entry: format!("{entry}.certificate"),
                path: tls.certificate.clone(),
            });
        }
    };
    for (name, collective) in &config.collectives {
        identity(format!("collectives.{name}.tls"), &collective.tls);
        identity(format!("collectives.{name}.signer"), &collective.signer);
    }
    for (name, federation) in &config.federations {
        identity(format!("federations.{name}.tls"), &federation.tls);
    }
    for (name, legacy) in &config.legacy {
        identity(format!("legacy.{name}.tls"), &legacy.tls);
    }
    if let Some(edge) = &config.edge {
        identity("edge.tls".into(), &edge.tls);
    }
    if let Some(stream) = config.audit.as_ref().and_then(|a| a.jetstream.as_ref()) {
        identity("audit.jetstream.tls".into(), &stream.tls);
    }
    if let Some(registry) = &config.registry {
        identity("registry.tls".into(), &registry.tls);
    }
    identity("replay.tls".into(), &config.replay.tls);
    files
}

/// The certificates of one file: each one's subject and expiry (Unix seconds); the earliest
/// expiry where a file holds one subject twice.
pub fn expiries(file: &CertFile) -> Result<BTreeMap<String, i64>, String> {
    let certs = crate::security::load_certs(&file.path).map_err(|e| e.to_string())?;
    let mut expiries = BTreeMap::new();
    for der in certs {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("{}: {e}", file.path.display()))?;
        let expiry = cert.validity().not_after.timestamp();
        expiries
            .entry(cert.subject().to_string())
            .and_modify(|at: &mut i64| *at = (*at).min(expiry))
            .or_insert(expiry);
    }
    Ok(expiries)
}

/// Sets the gauge for every certificate of `files`; a file that cannot be read is logged and
/// keeps its last value.
pub fn publish(files: &[CertFile]) {
    for file in files {
        match expiries(file) {
            Ok(expiries) => {
                for (subject, expiry) in expiries {
                    metrics::gauge!(
                        "fedgate_certificate_expiry_timestamp_seconds",
                        "entry" => file.entry.clone(),
                        "subject" => subject
                    )
                    .set(expiry as f64);
                }
            }
            Err(e) => {
                tracing::warn!(entry = %file.entry, error = %e, "cannot read a certificate's expiry")
            }
        }
    }
}
