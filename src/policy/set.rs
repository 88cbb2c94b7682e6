//! A policy directory, loaded whole: `default.policy`, `<agent>.policy`,
//! `<collective>/<agent>.policy` and the `groups` file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::actionpolicy::{Effect, Groups, ParseError, PolicyFile};

/// Most policy files one directory may hold.
pub const MAX_FILES: usize = 4096;
/// The suffix of policy files.
const SUFFIX: &str = ".policy";
/// The groups file, as go-choria names it.
const GROUPS: &str = "groups";
/// The fallback policy's name.
const DEFAULT: &str = "default";

/// Why a policy directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file does not parse.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The directory is over a limit.
    #[error("{path}: {message}")]
    Limit {
        /// The directory.
        path: PathBuf,
        /// What limit.
        message: String,
    },
}

/// Every policy file of a directory, parsed, with the groups file.
#[derive(Clone, Debug)]
pub struct PolicySet {
    global: HashMap<String, Arc<PolicyFile>>,
    scoped: HashMap<String, HashMap<String, Arc<PolicyFile>>>,
    groups: Groups,
    unconfigured: Effect,
}

impl PolicySet {
    /// An empty set: every request gets the `unconfigured` answer.
    pub fn empty(unconfigured: Effect) -> PolicySet {
        PolicySet {
            global: HashMap::new(),
            scoped: HashMap::new(),
            groups: Groups::default(),
            unconfigured,
        }
    }

    /// Adds a parsed file, `collective` naming its scope (`None` for the directory's top).
    pub fn insert(&mut self, collective: Option<&str>, agent: &str, file: PolicyFile) {
        let file = Arc::new(file);
        match collective {
            None => self.global.insert(agent.to_string(), file),
            Some(c) => self
                .scoped
                .entry(c.to_string())
                .or_default()
                .insert(agent.to_string(), file),
        };
    }

    /// Replaces the groups.
    pub fn set_groups(&mut self, groups: Groups) {
        self.groups = groups;
    }

    /// Loads `dir`. Any file that does not parse fails the whole load, naming file and line.
    /// Files not ending in `.policy` (other than `groups`) and names starting with `.` are
    /// ignored; subdirectories are collective scopes, one level deep.
    pub fn load(dir: &Path, unconfigured: Effect) -> Result<PolicySet, LoadError> {
        let mut set = PolicySet::empty(unconfigured);
        let mut count = 0;
        for entry in read_dir(dir)? {
            let (name, path) = entry;
            if path.is_dir() {
                for (file_name, file_path) in read_dir(&path)? {
                    let Some(agent) = file_name.strip_suffix(SUFFIX) else {
                        continue;
                    };
                    count += 1;
                    check_count(dir, count)?;
                    let shown = format!("{name}/{file_name}");
                    let file = PolicyFile::parse(&shown, &read(&file_path)?)?;
                    set.insert(Some(&name), agent, file);
                }
            } else if name == GROUPS {
                set.groups = Groups::parse(GROUPS, &read(&path)?)?;
            } else if let Some(agent) = name.strip_suffix(SUFFIX) {
                count += 1;
                check_count(dir, count)?;
                let file = PolicyFile::parse(&name, &read(&path)?)?;
                set.insert(None, agent, file);
            }
        }
        Ok(set)
    }

    /// The file that governs `agent` in `collective`, most specific first.
    pub fn lookup(&self, collective: &str, agent: &str) -> Option<&PolicyFile> {
        self.scoped
            .get(collective)
            .and_then(|files| files.get(agent))
            .or_else(|| self.global.get(agent))
            .or_else(|| self.global.get(DEFAULT))
            .map(Arc::as_ref)
    }

    /// The groups callers may be named by.
    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    /// What applies when no file does, and the default inside a file without `policy default`.
    pub fn unconfigured(&self) -> Effect {
        self.unconfigured
    }

    /// Every file, for summaries.
    pub fn files(&self) -> impl Iterator<Item = &PolicyFile> {
        self.global
            .values()
            .chain(self.scoped.values().flat_map(HashMap::values))
            .map(Arc::as_ref)
    }
}

fn check_count(dir: &Path, count: usize) -> Result<(), LoadError> {
    if count > MAX_FILES {
        return Err(LoadError::Limit {
            path: dir.to_path_buf(),
            message: format!("more than {MAX_FILES} policy files"),
        });
    }
    Ok(())
}

/// The visible entries of a directory, sorted by name so loads are deterministic.
fn read_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, LoadError> {
    let io = |source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        entries.push((name, entry.path()));
    }
    entries.sort();
    Ok(entries)
}

/// Reads a file of at most the parser's size limit.
fn read(path: &Path) -> Result<String, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > super::actionpolicy::MAX_FILE_BYTES as u64 {
        return Err(LoadError::Limit {
            path: path.to_path_buf(),
            message: format!(
                "is {} bytes; the limit is {}",
                meta.len(),
                super::actionpolicy::MAX_FILE_BYTES
            ),
        });
    }
    std::fs::read_to_string(path).map_err(io)
}
