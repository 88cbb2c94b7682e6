//! The checker every config check reports through: the file, key and problem of a refusal,
//! and the checks many sections share (files, names, CAs, identities, signers, NATS auth).

use std::path::Path;

use crate::config::{CollectiveConfig, ConfigError, TlsIdentity};
use crate::nats::NatsAuth;
use crate::security::{CaBundle, NamePatterns, Now, check_identity, check_privileged_signer};
use crate::subjects::is_valid_name;

pub(super) struct Checker<'a> {
    pub(super) path: &'a Path,
}

impl Checker<'_> {
    pub(super) fn invalid(
        &self,
        key: impl Into<String>,
        problem: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    pub(super) fn file(&self, key: String, file: &Path) -> Result<(), ConfigError> {
        if file.is_file() {
            Ok(())
        } else {
            Err(self.invalid(key, format!("file {} does not exist", file.display())))
        }
    }

    pub(super) fn name(&self, key: String, name: &str) -> Result<(), ConfigError> {
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
    pub(super) fn network_ca<'p>(
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

    /// A network's `auth` block: one method, its secret file private, readable and well formed.
    pub(super) fn nats_auth(&self, key: &str, auth: Option<&NatsAuth>) -> Result<(), ConfigError> {
        match auth {
            Some(auth) => auth
                .check()
                .map_err(|e| self.invalid(format!("{key}.auth"), e.to_string())),
            None => Ok(()),
        }
    }

    pub(super) fn patterns(
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

    pub(super) fn signer(
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

    pub(super) fn identity(
        &self,
        key: String,
        tls: &TlsIdentity,
        ca: &Path,
    ) -> Result<(), ConfigError> {
        self.file(format!("{key}.certificate"), &tls.certificate)?;
        self.file(format!("{key}.key"), &tls.key)?;
        check_identity(&tls.certificate, &tls.key, ca, Now::system())
            .map_err(|err| self.invalid(key, err.to_string()))
    }
}
