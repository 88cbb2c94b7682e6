//! Name patterns for privileged signers and the certname allow list, with Choria's defaults.

use regex::Regex;

/// Choria's default `plugin.choria.security.privileged_users`.
pub const DEFAULT_PRIVILEGED: &[&str] = &[r"\.privileged.mcollective$", r"\.privileged.choria$"];
/// Choria's default `plugin.choria.security.certname_whitelist`.
pub const DEFAULT_ALLOWLIST: &[&str] = &[r"\.mcollective$", r"\.choria$"];

/// A list of unanchored regular expressions; `/re/` has its slashes stripped, as in Choria.
#[derive(Clone, Debug)]
pub struct NamePatterns {
    patterns: Vec<Regex>,
}

/// A pattern that does not compile.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid name pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// Why it does not compile.
    pub reason: String,
}

impl NamePatterns {
    /// Compiles each pattern.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let patterns = patterns
            .iter()
            .map(|p| compile(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(NamePatterns { patterns })
    }

    /// Choria's default privileged-user patterns.
    pub fn default_privileged() -> Self {
        Self::new(DEFAULT_PRIVILEGED).expect("default patterns compile")
    }

    /// The `given` patterns, or `defaults` when none are configured.
    pub fn or_defaults(given: Option<&[String]>, defaults: &[&str]) -> Result<Self, PatternError> {
        match given {
            Some(list) => Self::new(list),
            None => Self::new(defaults),
        }
    }

    /// Choria's default certname allow list.
    pub fn default_allowlist() -> Self {
        Self::new(DEFAULT_ALLOWLIST).expect("default patterns compile")
    }

    /// True when any pattern matches `name`.
    pub fn matches(&self, name: &str) -> bool {
        self.patterns.iter().any(|re| re.is_match(name))
    }

    /// The patterns as compiled.
    pub fn as_strings(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|re| re.as_str().to_string())
            .collect()
    }
}

fn compile(pattern: &str) -> Result<Regex, PatternError> {
    let body = match pattern.strip_prefix('/').and_then(|p| p.strip_suffix('/')) {
        Some(inner) if !inner.is_empty() => inner,
        _ => pattern,
    };
    Regex::new(body).map_err(|err| PatternError {
        pattern: pattern.to_string(),
        reason: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_choria() {
        let privileged = NamePatterns::default_privileged();
        assert!(privileged.matches("1.privileged.mcollective"));
        assert!(privileged.matches("fedgate.privileged.choria"));
        assert!(!privileged.matches("rip.mcollective"));
        let allow = NamePatterns::default_allowlist();
        assert!(allow.matches("rip.mcollective"));
        assert!(!allow.matches("rip.example.com"));
    }

    #[test]
    fn slashes_are_stripped_and_bad_patterns_refused() {
        let p = NamePatterns::new(&["/^ops-/"]).unwrap();
        assert!(p.matches("ops-1.mcollective"));
        assert!(!p.matches("dev-ops-1"));
        assert!(NamePatterns::new(&["(unclosed"]).is_err());
    }
}
