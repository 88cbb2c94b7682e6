//! go-choria's configuration file format, read as go-choria reads it: `key = value` lines,
//! `#` comments, the last setting of a key wins, and `plugin.d/<plugin>.cfg` beside the file
//! holding `plugin.<plugin>.*` keys without their prefix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::ImportError;

/// The settings of one go-choria config, and which of them the import has used.
#[derive(Debug, Default)]
pub struct Settings {
    values: BTreeMap<String, String>,
    used: BTreeSet<String>,
    /// The folder relative paths are resolved from.
    pub base: PathBuf,
}

impl Settings {
    /// Reads `path` and the `plugin.d` folder beside it.
    pub fn load(path: &Path) -> Result<Settings, ImportError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| ImportError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut settings = Settings::parse(&read(path)?, "");
        settings.base = base.clone();
        let dotd = base.join("plugin.d");
        if let Ok(entries) = std::fs::read_dir(&dotd) {
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for file in files {
                let ext = file.extension().and_then(|e| e.to_str());
                let stem = file.file_stem().and_then(|s| s.to_str());
                if let (Some("cfg" | "conf"), Some(plugin)) = (ext, stem) {
                    let more = Settings::parse(&read(&file)?, &format!("plugin.{plugin}."));
                    settings.values.extend(more.values);
                }
            }
        }
        Ok(settings)
    }

    /// Parses config text; `prefix` is put before every key (for `plugin.d` files).
    pub fn parse(text: &str, prefix: &str) -> Settings {
        let mut values = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // go-choria's `(.+?)\s*=\s*(.+)`: the key ends at the first `=`, the value is the
            // rest, and a line without a value is ignored.
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let (key, value) = (key.trim_end(), value.trim_start());
            if key.is_empty() || value.is_empty() {
                continue;
            }
            values.insert(format!("{prefix}{key}"), value.to_string());
        }
        Settings {
            values,
            used: BTreeSet::new(),
            base: PathBuf::from("."),
        }
    }

    /// The value of `key`, marking it used.
    pub fn take(&mut self, key: &str) -> Option<String> {
        let value = self.values.get(key)?.clone();
        self.used.insert(key.to_string());
        Some(value)
    }

    /// A comma-separated list (go-choria's `comma_split`), marking it used.
    pub fn list(&mut self, key: &str) -> Option<Vec<String>> {
        let value = self.take(key)?;
        let items: Vec<String> = value
            .split(',')
            .map(|item| item.trim().to_string())
            .filter(|item| !item.is_empty())
            .collect();
        Some(items)
    }

    /// A boolean as go-choria's `StrToBool` reads it (`1 yes true y t`, any case), marking it
    /// used; `None` when unset, `Some(Err(value))` when it is not a boolean.
    pub fn flag(&mut self, key: &str) -> Option<Result<bool, String>> {
        let value = self.take(key)?;
        let lower = value.trim().to_ascii_lowercase();
        Some(match lower.as_str() {
            "1" | "yes" | "true" | "y" | "t" => Ok(true),
            "0" | "no" | "false" | "n" | "f" => Ok(false),
            _ => Err(value),
        })
    }

    /// A path (go-choria's `path_string`: `~` is the home folder), marking it used. A relative
    /// path is resolved from the config's folder, and reported in `relative` when it was.
    pub fn path(&mut self, key: &str, relative: &mut Vec<String>) -> Option<PathBuf> {
        let value = self.take(key)?;
        let path = match value.strip_prefix("~/") {
            Some(rest) => std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(rest))
                .unwrap_or_else(|| PathBuf::from(&value)),
            None => PathBuf::from(&value),
        };
        if path.is_relative() {
            relative.push(key.to_string());
            return Some(self.base.join(path));
        }
        Some(path)
    }

    /// The keys not used yet, with their values.
    pub fn unused(&self) -> impl Iterator<Item = (&String, &String)> {
        self.values
            .iter()
            .filter(|(key, _)| !self.used.contains(*key))
    }

    /// Marks `key` used without reading it.
    pub fn mark(&mut self, key: &str) {
        self.used.insert(key.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_as_go_choria_reads_them() {
        let mut s = Settings::parse(
            "# c\n  identity = a.example.net \nx=1\nx = 2\nempty =\n a = b = c\ncollectives = one, two ,\n",
            "",
        );
        assert_eq!(s.take("identity").as_deref(), Some("a.example.net"));
        assert_eq!(s.take("x").as_deref(), Some("2"));
        assert_eq!(s.take("empty"), None);
        assert_eq!(s.take("a").as_deref(), Some("b = c"));
        assert_eq!(s.list("collectives").unwrap(), ["one", "two"]);
        let mut dotd = Settings::parse("stats_port = 8222\n", "plugin.choria.");
        assert_eq!(
            dotd.take("plugin.choria.stats_port").as_deref(),
            Some("8222")
        );
    }
}
