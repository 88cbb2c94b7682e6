//! `fedgate_certificate_expiry_timestamp_seconds`: when each configured certificate expires
//! (and each Choria protocol v2 token fedgate holds), read again from its file every time it is
//! published, so a renewed file shows at once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::{Config, TlsIdentity};

/// One configured certificate file: the config key that names it, and the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFile {
    /// The config key, e.g. `collectives.london.signer.certificate`.
    pub entry: String,
    /// The PEM file (one certificate, a chain or a CA bundle), or the token file.
    pub path: PathBuf,
    /// What the file holds.
    pub kind: CertKind,
}

/// What a file whose expiry is published holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertKind {
    /// PEM certificates.
    Pem,
    /// A Choria protocol v2 JWT (fedgate's delegating token in a v2 collective); its subject is
    /// the caller id it names.
    V2Token,
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
                kind: CertKind::Pem,
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
                kind: CertKind::Pem,
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
    for (name, collective) in &config.collectives {
        if let Some(v2) = &collective.v2 {
            files.push(CertFile {
                entry: format!("collectives.{name}.v2.token"),
                path: v2.token.clone(),
                kind: CertKind::V2Token,
            });
        }
    }
    files
}

/// The certificates of one file: each one's subject and expiry (Unix seconds); the earliest
/// expiry where a file holds one subject twice.
pub fn expiries(file: &CertFile) -> Result<BTreeMap<String, i64>, String> {
    if file.kind == CertKind::V2Token {
        let token = std::fs::read_to_string(&file.path)
            .map_err(|e| format!("{}: {e}", file.path.display()))?;
        let (subject, expiry) = crate::security::v2::tokens::unverified_expiry(&token)
            .map_err(|e| format!("{}: {e}", file.path.display()))?;
        return Ok(BTreeMap::from([(subject, expiry)]));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::v2::TokenIssuer;
    use crate::security::v2::tokens::{ClientClaims, ClientPermissions};

    #[test]
    fn a_v2_token_file_publishes_its_caller_and_expiry() {
        let org = TokenIssuer::org(&[5; 32]).unwrap();
        let claims = ClientClaims {
            callerid: "choria=fedgate".into(),
            ou: "choria".into(),
            permissions: Some(ClientPermissions::delegator()),
            ..ClientClaims::default()
        };
        let (token, _) = org
            .chain_issuer(claims, &[6; 32], 1_780_000_000, 3600)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fedgate.jwt");
        std::fs::write(&path, format!("{token}\n")).unwrap();
        let file = CertFile {
            entry: "collectives.osaka.v2.token".into(),
            path,
            kind: CertKind::V2Token,
        };
        assert_eq!(
            expiries(&file).unwrap(),
            BTreeMap::from([("choria=fedgate".to_string(), 1_780_003_600)])
        );
        std::fs::write(&file.path, "not a token").unwrap();
        assert!(expiries(&file).unwrap_err().contains("not a client token"));
    }
}
