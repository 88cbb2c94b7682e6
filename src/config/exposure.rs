//! Files a configuration names that hold secrets or audit data (the audit file, the users file,
//! the token key), and which of them group or others may read.

use std::path::PathBuf;

use super::Config;

/// A file that should be its owner's alone, and the mode it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exposed {
    /// What it holds: `audit file`, `users file`, `token key`, `checkpoint key`.
    pub what: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
}

impl Config {
    /// The audit file (and its rotated files), the users file and the token key that group or
    /// others can read or write; files that do not exist yet are left out.
    pub fn exposed_files(&self) -> Vec<Exposed> {
        use std::os::unix::fs::PermissionsExt;
        let mut named: Vec<(&'static str, PathBuf)> = Vec::new();
        if let Some(file) = self.audit.as_ref().and_then(|a| a.file.as_ref()) {
            named.push(("audit file", file.clone()));
            let rotated = crate::audit::file::rotated_files(file);
            named.extend(rotated.into_iter().map(|p| ("audit file", p)));
        }
        if let Some(checkpoint) = self.audit.as_ref().and_then(|a| a.checkpoint.as_ref()) {
            named.push(("checkpoint key", checkpoint.key.clone()));
        }
        if let Some(edge) = &self.edge {
            named.extend(edge.users.iter().map(|p| ("users file", p.clone())));
            named.extend(edge.token_key.iter().map(|p| ("token key", p.clone())));
        }
        named
            .into_iter()
            .filter_map(|(what, path)| {
                let mode = std::fs::metadata(&path).ok()?.permissions().mode() & 0o777;
                (mode & 0o077 != 0).then_some(Exposed { what, path, mode })
            })
            .collect()
    }
}
