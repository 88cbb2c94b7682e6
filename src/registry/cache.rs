//! The last good revision on local disk: `sets/<N>/` (the set as a directory),
//! `sets/<N>.json` (its manifest) and `current` (N). A revision is staged, validated from its
//! directory, and only then made current, so `current` always names one that validated. Only
//! revisions whose signature was verified are staged, and the current one is verified again,
//! against the authors the instance trusts now, each time it is read.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::RegistryError;
use super::set::Set;
use super::sign::{Authors, Verified};
use super::store::parse_manifest;

/// Revisions kept besides the current one.
const KEEP: usize = 2;

/// A cache directory.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Opens `dir`, creating it (mode 0700) when missing.
    pub fn open(dir: &Path) -> Result<Cache, RegistryError> {
        use std::os::unix::fs::DirBuilderExt;
        let sets = dir.join("sets");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&sets)
            .map_err(|e| failed(&sets, e))?;
        Ok(Cache {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn set_dir(&self, revision: u64) -> PathBuf {
        self.dir.join("sets").join(revision.to_string())
    }

    fn manifest_file(&self, revision: u64) -> PathBuf {
        self.dir.join("sets").join(format!("{revision}.json"))
    }

    /// Writes a revision's set and manifest, replacing any earlier copy; returns the set's
    /// directory.
    pub fn stage(&self, verified: &Verified, set: &Set) -> Result<PathBuf, RegistryError> {
        let manifest = verified.manifest();
        let dir = self.set_dir(manifest.revision);
        // The current revision is never rewritten: it is what a restart falls back on.
        if self.pointer()? == Some(manifest.revision) {
            return Ok(dir);
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| failed(&dir, e))?;
        }
        set.write(&dir)?;
        let json = serde_json::to_vec_pretty(manifest).map_err(|e| RegistryError::Cache {
            path: dir.clone(),
            problem: e.to_string(),
        })?;
        write_atomic(&self.manifest_file(manifest.revision), &json)?;
        Ok(dir)
    }

    /// Makes a staged revision the current one, and drops all but the last few others.
    pub fn commit(&self, revision: u64) -> Result<(), RegistryError> {
        write_atomic(
            &self.dir.join("current"),
            format!("{revision}\n").as_bytes(),
        )?;
        let sets = self.dir.join("sets");
        // Revisions staged or refused, by their directory or manifest file.
        let mut kept: Vec<u64> = std::fs::read_dir(&sets)
            .map_err(|e| failed(&sets, e))?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.trim_end_matches(".json").parse::<u64>().ok()
            })
            .filter(|n| *n != revision)
            .collect();
        kept.sort_unstable();
        kept.dedup();
        kept.sort_unstable_by(|a, b| b.cmp(a));
        for old in kept.into_iter().skip(KEEP) {
            let _ = std::fs::remove_dir_all(self.set_dir(old));
            let _ = std::fs::remove_file(self.manifest_file(old));
        }
        Ok(())
    }

    /// The committed revision's number, if any.
    pub fn pointer(&self) -> Result<Option<u64>, RegistryError> {
        let pointer = self.dir.join("current");
        let text = match std::fs::read_to_string(&pointer) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(failed(&pointer, e)),
        };
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| RegistryError::Cache {
                path: pointer.clone(),
                problem: format!("{:?} is not a revision number", text.trim()),
            })
    }

    /// The current revision: its manifest, verified against `authors`, and its set directory,
    /// checked against the manifest's hashes; `None` when nothing was ever committed.
    pub fn current(&self, authors: &Authors) -> Result<Option<(Verified, PathBuf)>, RegistryError> {
        let Some(revision) = self.pointer()? else {
            return Ok(None);
        };
        let file = self.manifest_file(revision);
        let manifest = parse_manifest(&std::fs::read(&file).map_err(|e| failed(&file, e))?)
            .map_err(|e| RegistryError::Cache {
                path: file.clone(),
                problem: e.to_string(),
            })?;
        let manifest = authors.verify(manifest).map_err(|e| RegistryError::Cache {
            path: file.clone(),
            problem: format!("revision {revision} is refused: {e}"),
        })?;
        let dir = self.set_dir(revision);
        let set = Set::read(&dir)?;
        if !manifest.manifest().describes(&set) {
            return Err(RegistryError::Cache {
                path: dir,
                problem: format!(
                    "does not match revision {revision}'s manifest: it was changed on disk"
                ),
            });
        }
        Ok(Some((manifest, dir)))
    }
}

fn failed(path: &Path, e: std::io::Error) -> RegistryError {
    RegistryError::Cache {
        path: path.to_path_buf(),
        problem: e.to_string(),
    }
}

/// Writes a file under a temporary name, syncs it, and renames it into place.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(parent).map_err(|e| failed(parent, e))?;
    file.write_all(bytes).map_err(|e| failed(path, e))?;
    file.as_file().sync_all().map_err(|e| failed(path, e))?;
    file.persist(path).map_err(|e| failed(path, e.error))?;
    Ok(())
}
