//! A registry set: the documents of one revision, read from and written to a directory laid out
//! as `fedgate registry push` takes it.
//!
//! ```text
//! policies/       actionpolicy files and groups, as a file-mode policy directory
//! identity.toml   identity rules (none: every caller is denied)
//! users.toml      the edge's password users
//! config.toml     a config fragment: [policy] unconfigured, [federations.<name>] members
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::RegistryError;

/// Most documents in one set.
pub const MAX_DOCUMENTS: usize = 4096;
/// Largest document, bytes (also the buckets' value limit).
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Largest set, bytes.
pub const MAX_SET_BYTES: usize = 32 * 1024 * 1024;
/// Directory depth under `policies/` (`<collective>/<agent>.policy`).
const MAX_DEPTH: usize = 2;

/// The top-level files a set may hold besides `policies/`.
const FILES: [&str; 3] = ["identity.toml", "users.toml", "config.toml"];

/// One revision's documents by path relative to the set's directory (`/`-separated).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Set {
    documents: BTreeMap<String, Vec<u8>>,
}

/// Which bucket part a document belongs to, and its key there.
pub fn place(path: &str) -> Option<(&'static str, &str)> {
    if let Some(rest) = path.strip_prefix("policies/") {
        return Some(("policies", rest));
    }
    match path {
        "identity.toml" => Some(("identity", path)),
        "users.toml" => Some(("users", path)),
        "config.toml" => Some(("config", path)),
        _ => None,
    }
}

/// Whether `key` is a valid key in a JetStream key-value bucket (and so a document name).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
}

impl Set {
    /// Reads a set directory, refusing anything a set does not hold and anything over a limit.
    pub fn read(dir: &Path) -> Result<Set, RegistryError> {
        let invalid = |problem: String| RegistryError::Set {
            path: dir.to_path_buf(),
            problem,
        };
        if !dir.join("policies").is_dir() {
            return Err(invalid("has no policies/ directory".into()));
        }
        let mut set = Set::default();
        let entries = std::fs::read_dir(dir).map_err(|e| invalid(e.to_string()))?;
        for entry in entries {
            let entry = entry.map_err(|e| invalid(e.to_string()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "policies" {
                continue;
            }
            if name.starts_with('.') {
                continue;
            }
            if !FILES.contains(&name.as_str()) || !entry.path().is_file() {
                return Err(invalid(format!(
                    "{name} is not part of a set: a set holds policies/, {}",
                    FILES.join(", ")
                )));
            }
            set.insert_file(name, &entry.path())?;
        }
        set.read_policies(&dir.join("policies"), "policies", 0)?;
        Ok(set)
    }

    fn read_policies(
        &mut self,
        dir: &Path,
        prefix: &str,
        depth: usize,
    ) -> Result<(), RegistryError> {
        let invalid = |problem: String| RegistryError::Set {
            path: dir.to_path_buf(),
            problem,
        };
        let entries = std::fs::read_dir(dir).map_err(|e| invalid(e.to_string()))?;
        for entry in entries {
            let entry = entry.map_err(|e| invalid(e.to_string()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = format!("{prefix}/{name}");
            let file_type = entry.file_type().map_err(|e| invalid(e.to_string()))?;
            if file_type.is_dir() && depth + 1 < MAX_DEPTH {
                self.read_policies(&entry.path(), &path, depth + 1)?;
            } else if file_type.is_file() || file_type.is_symlink() && entry.path().is_file() {
                self.insert_file(path, &entry.path())?;
            } else {
                return Err(invalid(format!("{path}: not a policy file")));
            }
        }
        Ok(())
    }

    fn insert_file(&mut self, path: String, file: &Path) -> Result<(), RegistryError> {
        let metadata = std::fs::metadata(file).map_err(|e| RegistryError::Set {
            path: file.to_path_buf(),
            problem: e.to_string(),
        })?;
        if metadata.len() > MAX_DOCUMENT_BYTES as u64 {
            return Err(RegistryError::Set {
                path: file.to_path_buf(),
                problem: format!("larger than {MAX_DOCUMENT_BYTES} bytes"),
            });
        }
        let bytes = std::fs::read(file).map_err(|e| RegistryError::Set {
            path: file.to_path_buf(),
            problem: e.to_string(),
        })?;
        self.insert(path, bytes)
            .map_err(|problem| RegistryError::Set {
                path: file.to_path_buf(),
                problem,
            })
    }

    /// Adds a document, checking its name and the set's limits.
    pub fn insert(&mut self, path: String, bytes: Vec<u8>) -> Result<(), String> {
        let Some((_, key)) = place(&path) else {
            return Err(format!("{path} is not part of a set"));
        };
        if !valid_key(key) {
            return Err(format!(
                "{path}: a document name may hold only letters, digits and - _ = . /"
            ));
        }
        // What `read` takes: no hidden names, at most `<collective>/<file>` under policies/.
        let parts: Vec<&str> = key.split('/').collect();
        if parts.len() > MAX_DEPTH || parts.iter().any(|p| p.is_empty() || p.starts_with('.')) {
            return Err(format!("{path}: not a place a set holds a document"));
        }
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("{path}: larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        if self.documents.len() >= MAX_DOCUMENTS {
            return Err(format!("more than {MAX_DOCUMENTS} documents"));
        }
        if self.bytes() + bytes.len() > MAX_SET_BYTES {
            return Err(format!("larger than {MAX_SET_BYTES} bytes in all"));
        }
        self.documents.insert(path, bytes);
        Ok(())
    }

    /// The documents by path.
    pub fn documents(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.documents
    }

    /// Total size, bytes.
    pub fn bytes(&self) -> usize {
        self.documents.values().map(Vec::len).sum()
    }

    /// Writes the set as a directory at `dir`, which must not exist: files are written and
    /// synced under a temporary name beside it, then renamed into place.
    pub fn write(&self, dir: &Path) -> Result<(), RegistryError> {
        let failed = |path: &Path, e: std::io::Error| RegistryError::Set {
            path: path.to_path_buf(),
            problem: e.to_string(),
        };
        let parent = dir.parent().unwrap_or(Path::new("."));
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(parent)
            .map_err(|e| failed(parent, e))?;
        std::fs::create_dir(staging.path().join("policies"))
            .map_err(|e| failed(staging.path(), e))?;
        for (path, bytes) in &self.documents {
            let target = staging.path().join(path);
            if let Some(folder) = target.parent() {
                std::fs::create_dir_all(folder).map_err(|e| failed(folder, e))?;
            }
            let mut file = std::fs::File::create(&target).map_err(|e| failed(&target, e))?;
            file.write_all(bytes).map_err(|e| failed(&target, e))?;
            file.sync_all().map_err(|e| failed(&target, e))?;
        }
        let staged: PathBuf = staging.keep();
        std::fs::rename(&staged, dir).map_err(|e| {
            let _ = std::fs::remove_dir_all(&staged);
            failed(dir, e)
        })
    }

    /// What changed from `old` to `self`, as `diff -u` would show it for text documents.
    pub fn diff(&self, old: &Set) -> Vec<String> {
        let mut out = Vec::new();
        let paths: std::collections::BTreeSet<&String> =
            self.documents.keys().chain(old.documents.keys()).collect();
        for path in paths {
            let before = old.documents.get(path);
            let after = self.documents.get(path);
            if before == after {
                continue;
            }
            let text =
                |bytes: Option<&Vec<u8>>| bytes.map(|b| String::from_utf8_lossy(b).into_owned());
            let (before, after) = (text(before), text(after));
            let header = match (&before, &after) {
                (None, _) => format!("added {path}"),
                (_, None) => format!("removed {path}"),
                _ => format!("changed {path}"),
            };
            out.push(header);
            let diff = similar::TextDiff::from_lines(
                before.as_deref().unwrap_or(""),
                after.as_deref().unwrap_or(""),
            );
            let unified = diff
                .unified_diff()
                .context_radius(2)
                .header(&format!("a/{path}"), &format!("b/{path}"))
                .to_string();
            out.extend(unified.lines().map(str::to_string));
        }
        out
    }
}

/// The SHA-256 of a document, hex.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}
