//! `[registry] authors`: the keys an instance trusts to sign revisions, read once at start-up.

use std::path::Path;

use super::checker::Checker;
use crate::config::{AuthorKey, Config, ConfigError, MAX_AUTHORS, check_author_name};

impl Config {
    /// Reads each trusted author's public key. A config with `[registry]` must trust at least
    /// one author: the registry's NATS permissions alone decide nothing an instance applies.
    pub(in crate::config) fn load_registry_authors(
        &mut self,
        path: &Path,
    ) -> Result<(), ConfigError> {
        let check = Checker { path };
        let Some(registry) = &mut self.registry else {
            return Ok(());
        };
        if registry.authors.is_empty() {
            return Err(check.invalid(
                "registry.authors",
                "names no trusted author: instances apply only revisions signed by a key named here (`authors = { alice = \"alice.pub\" }`; make one with `fedgate registry keygen --out alice.key`)",
            ));
        }
        if registry.authors.len() > MAX_AUTHORS {
            return Err(check.invalid(
                "registry.authors",
                format!(
                    "names {} authors; at most {MAX_AUTHORS}",
                    registry.authors.len()
                ),
            ));
        }
        let mut trusted = std::collections::BTreeMap::new();
        for (name, file) in &registry.authors {
            let key = format!("registry.authors.{name}");
            check_author_name(name).map_err(|problem| check.invalid(&key, problem))?;
            let author = AuthorKey::load(file).map_err(|problem| check.invalid(&key, problem))?;
            if let Some((other, _)) = trusted.iter().find(|(_, k)| **k == author) {
                return Err(check.invalid(
                    key,
                    format!("is the same key as author {other}: give each author their own"),
                ));
            }
            trusted.insert(name.clone(), author);
        }
        registry.trusted = trusted;
        Ok(())
    }
}
