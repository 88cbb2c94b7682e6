//! The strict TOML configuration: unknown keys, missing files and bad names stop start-up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::nats::NatsEndpoint;
use crate::subjects::is_valid_token;

/// A whole fedgate configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The identity `fedgate rpc` signs requests with.
    #[serde(default)]
    pub client: Option<ClientConfig>,
    /// Collectives by name.
    #[serde(default)]
    pub collectives: BTreeMap<String, CollectiveConfig>,
}

/// A certificate user: the key signs requests and the pair is the NATS TLS identity.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// PEM certificate (and any intermediates).
    pub certificate: PathBuf,
    /// PEM RSA private key, PKCS#1 or PKCS#8.
    pub key: PathBuf,
    /// Caller id to send; defaults to `choria=<certificate CN>`.
    #[serde(default)]
    pub callerid: Option<String>,
    /// `senderid` and `mc_sender`; defaults to the host name.
    #[serde(default)]
    pub identity: Option<String>,
}

/// One Choria collective: its NATS servers and the CA its certificates chain to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectiveConfig {
    /// NATS server URLs.
    pub nats: Vec<String>,
    /// CA bundle of the collective.
    pub ca: PathBuf,
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
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve(base);
        config.validate(path)?;
        Ok(config)
    }

    /// The named collective.
    pub fn collective(&self, name: &str) -> Option<&CollectiveConfig> {
        self.collectives.get(name)
    }

    fn resolve(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(client) = &mut self.client {
            join(&mut client.certificate);
            join(&mut client.key);
        }
        for collective in self.collectives.values_mut() {
            join(&mut collective.ca);
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            problem,
        };
        let must_exist = |key: String, file: &Path| {
            if file.is_file() {
                Ok(())
            } else {
                Err(invalid(
                    key,
                    format!("file {} does not exist", file.display()),
                ))
            }
        };
        if let Some(client) = &self.client {
            must_exist("client.certificate".into(), &client.certificate)?;
            must_exist("client.key".into(), &client.key)?;
        }
        for (name, collective) in &self.collectives {
            if !is_valid_token(name) {
                return Err(invalid(
                    format!("collectives.{name}"),
                    "is not a valid subject token".into(),
                ));
            }
            if collective.nats.is_empty() {
                return Err(invalid(
                    format!("collectives.{name}.nats"),
                    "lists no server".into(),
                ));
            }
            must_exist(format!("collectives.{name}.ca"), &collective.ca)?;
        }
        Ok(())
    }
}

impl CollectiveConfig {
    /// The NATS endpoint, using `identity` as the TLS client certificate and key.
    pub fn endpoint(&self, identity: Option<(PathBuf, PathBuf)>) -> NatsEndpoint {
        let tls = self.nats.iter().any(|url| url.starts_with("tls://"));
        NatsEndpoint {
            urls: self.nats.clone(),
            ca: tls.then(|| self.ca.clone()),
            identity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fedgate-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn valid_config_resolves_relative_paths() {
        let dir = temp_dir("valid");
        write(&dir, "ca.pem", "x");
        let path = write(
            &dir,
            "f.toml",
            "[collectives.london]\nnats = [\"tls://127.0.0.1:1\"]\nca = \"ca.pem\"\n",
        );
        let config = Config::load(&path).unwrap();
        let london = config.collective("london").unwrap();
        assert_eq!(london.ca, dir.join("ca.pem"));
        assert_eq!(london.endpoint(None).ca, Some(dir.join("ca.pem")));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn invalid_configs_name_the_key() {
        let dir = temp_dir("invalid");
        write(&dir, "ca.pem", "x");
        let cases = [
            (
                "[collectives.london]\nnats = [\"tls://x:1\"]\nca = \"ca.pem\"\ncolour = 1\n",
                "colour",
            ),
            (
                "[collectives.london]\nnats = [\"tls://x:1\"]\nca = \"missing.pem\"\n",
                "collectives.london.ca",
            ),
            (
                "[collectives.london]\nnats = []\nca = \"ca.pem\"\n",
                "collectives.london.nats",
            ),
            (
                "[collectives.\"lon.don\"]\nnats = [\"tls://x:1\"]\nca = \"ca.pem\"\n",
                "collectives.lon.don",
            ),
            (
                "[client]\ncertificate = \"ca.pem\"\nkey = \"nokey.pem\"\n",
                "client.key",
            ),
        ];
        assert!(!cases.is_empty());
        for (text, key) in cases {
            let path = write(&dir, "bad.toml", text);
            let err = Config::load(&path).unwrap_err().to_string();
            assert!(err.contains(key), "{err} should name {key}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
