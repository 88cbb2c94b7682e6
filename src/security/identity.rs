//! Identity mapping: which caller of one realm may act in which collective, and under what name.
//!
//! Rules come from a TOML file of `[[rule]]` tables, read in order. Each names its source realm
//! (`from`), the target collectives (`to`), one matcher on the verified caller id (`caller` for an
//! exact id, `glob` where each `*` or `?` is a capture, or an anchored `regex`) and an outcome: a
//! caller id template (`as = "choria=$1.mcollective"`) or `deny = true`. The first rule that
//! matches decides; when none does, the caller is denied. Everything here is pure.
//!
//! ```toml
//! [[rule]]
//! from = "prod"
//! to = ["london", "tokyo"]
//! glob = "choria=*.mcollective"
//! as = "choria=$1.mcollective"
//! ```

mod compile;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;

use regex::Regex;
use serde::Serialize;

use super::CallerId;

/// The ordered mapping rules of one file.
#[derive(Clone, Debug)]
pub struct IdentityRules {
    file: String,
    rules: Vec<Rule>,
}

#[derive(Clone, Debug)]
struct Rule {
    from: String,
    to: Vec<String>,
    matcher: Matcher,
    outcome: Outcome,
}

#[derive(Clone, Debug)]
enum Matcher {
    Exact(String),
    Pattern(Regex),
}

#[derive(Clone, Debug)]
enum Outcome {
    Map(Template),
    Deny,
}

/// A caller id template compiled against its rule's captures.
#[derive(Clone, Debug)]
struct Template(Vec<Part>);

#[derive(Clone, Debug)]
enum Part {
    Literal(String),
    Group(usize),
}

/// A rule, as `fedgate identity explain` and audit name it: the file and its 1-based position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// The rules file.
    pub file: String,
    /// Position of the `[[rule]]` in the file, from 1.
    pub index: usize,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.file, self.index)
    }
}

/// What the rules decided for one caller and target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// The caller acts in the target under `callerid`.
    Mapped {
        /// The caller id in the target collective.
        callerid: CallerId,
        /// The rule that decided.
        rule: RuleRef,
    },
    /// The caller may not act in the target.
    Denied(Denial),
}

/// Why a caller was denied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// No rule matched: the default.
    #[error("no identity rule maps {caller} from {from} to {to}")]
    NoRule {
        /// Source realm.
        from: String,
        /// Verified caller id.
        caller: String,
        /// Target collective.
        to: String,
    },
    /// A `deny = true` rule matched.
    #[error("{rule} denies {caller} from {from} to {to}")]
    DenyRule {
        /// The rule.
        rule: RuleRef,
        /// Source realm.
        from: String,
        /// Verified caller id.
        caller: String,
        /// Target collective.
        to: String,
    },
    /// The verified caller id carries text after its name, which no certificate vouches for.
    #[error(
        "caller id {caller:?} has text after <kind>=<name>, which its certificate does not vouch for"
    )]
    UnverifiedText {
        /// Verified caller id, with the trailing text.
        caller: String,
    },
    /// The template produced something that is not a caller id.
    #[error("{rule} maps {caller} to {produced:?}, which is not a <kind>=<name> caller id")]
    BadResult {
        /// The rule.
        rule: RuleRef,
        /// Verified caller id.
        caller: String,
        /// What the template produced.
        produced: String,
    },
}

impl Denial {
    /// A stable word for counters and audit: `unmapped`, `identity_denied`, `bad_mapping` or
    /// `bad_caller`.
    pub fn reason(&self) -> &'static str {
        match self {
            Denial::NoRule { .. } => "unmapped",
            Denial::DenyRule { .. } => "identity_denied",
            Denial::BadResult { .. } => "bad_mapping",
            Denial::UnverifiedText { .. } => "bad_caller",
        }
    }

    /// The rule that decided, if one did.
    pub fn rule(&self) -> Option<&RuleRef> {
        match self {
            Denial::NoRule { .. } | Denial::UnverifiedText { .. } => None,
            Denial::DenyRule { rule, .. } | Denial::BadResult { rule, .. } => Some(rule),
        }
    }
}

/// Why a rules file was refused; each names the file and, where one is at fault, the rule.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// The parser's message, with the line.
        message: String,
    },
    /// A rule cannot be used.
    #[error("{file} rule {index}: {problem}")]
    Rule {
        /// The file.
        file: String,
        /// Position of the rule, from 1.
        index: usize,
        /// What is wrong.
        problem: String,
    },
}

impl IdentityRules {
    /// No rules: every caller is denied.
    pub fn deny_all() -> Self {
        IdentityRules {
            file: "(no identity rules)".into(),
            rules: Vec::new(),
        }
    }

    /// Reads and compiles a rules file. Rules are named by the file's name alone
    /// (`identity.toml#2`), relative to where the configuration puts it: records and the reasons
    /// callers are told carry no server paths.
    pub fn load(path: &Path) -> Result<Self, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Io {
            file: path.display().to_string(),
            source,
        })?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Self::parse(&text, &name)
    }

    /// Compiles rules from TOML text; `file` names it in errors and rule references.
    pub fn parse(text: &str, file: &str) -> Result<Self, RulesError> {
        Ok(IdentityRules {
            file: file.to_string(),
            rules: compile::compile_file(text, file)?,
        })
    }

    /// The file the rules came from.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules, so every caller is denied.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Each rule's position (from 1), source realm and target collectives, for checking names
    /// against a config.
    pub fn scopes(&self) -> impl Iterator<Item = (usize, &str, &[String])> {
        self.rules
            .iter()
            .enumerate()
            .map(|(i, rule)| (i + 1, rule.from.as_str(), rule.to.as_slice()))
    }

    /// Maps a verified caller of realm `from` into collective `to`: the first matching rule
    /// decides; no match denies.
    ///
    /// A caller id with text after its name is denied before any rule is tried: the certificate
    /// vouches only for `<kind>=<name>`, so rules must never match on the rest.
    pub fn map(&self, from: &str, caller: &CallerId, to: &str) -> Mapping {
        let id = caller.as_str();
        if !caller.is_exact() {
            return Mapping::Denied(Denial::UnverifiedText {
                caller: id.to_string(),
            });
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.from != from || !rule.to.iter().any(|t| t == to) {
                continue;
            }
            let Some(groups) = rule.matcher.captures(id) else {
                continue;
            };
            let rule_ref = RuleRef {
                file: self.file.clone(),
                index: i + 1,
            };
            return match &rule.outcome {
                Outcome::Deny => Mapping::Denied(Denial::DenyRule {
                    rule: rule_ref,
                    from: from.to_string(),
                    caller: id.to_string(),
                    to: to.to_string(),
                }),
                Outcome::Map(template) => {
                    let produced = template.expand(&groups);
                    match CallerId::parse(&produced) {
                        Ok(callerid) if callerid.is_exact() => Mapping::Mapped {
                            callerid,
                            rule: rule_ref,
                        },
                        _ => Mapping::Denied(Denial::BadResult {
                            rule: rule_ref,
                            caller: id.to_string(),
                            produced,
                        }),
                    }
                }
            };
        }
        Mapping::Denied(Denial::NoRule {
            from: from.to_string(),
            caller: id.to_string(),
            to: to.to_string(),
        })
    }
}

impl Matcher {
    /// The capture groups of a match, group 0 being the whole caller id; `None` without a match.
    fn captures<'h>(&self, id: &'h str) -> Option<Vec<&'h str>> {
        match self {
            Matcher::Exact(want) => (want == id).then(|| vec![id]),
            Matcher::Pattern(regex) => regex.captures(id).map(|caps| {
                caps.iter()
                    .map(|group| group.map_or("", |m| m.as_str()))
                    .collect()
            }),
        }
    }

    /// Names of the groups a template may use, by index.
    fn group_names(&self) -> Vec<Option<String>> {
        match self {
            Matcher::Exact(_) => vec![None],
            Matcher::Pattern(regex) => regex
                .capture_names()
                .map(|name| name.map(str::to_string))
                .collect(),
        }
    }
}

impl Template {
    fn expand(&self, groups: &[&str]) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Group(i) => out.push_str(groups.get(*i).copied().unwrap_or("")),
            }
        }
        out
    }
}

/// Who a request came from and who it acts as: travels with the request into policy and audit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MappedIdentity {
    /// The realm the caller was verified in.
    pub source_realm: String,
    /// The verified caller id in that realm.
    pub source_caller: String,
    /// Certname of the certificate that signed the original request.
    pub source_signer: String,
    /// Whether that certificate was privileged in its realm.
    pub source_privileged: bool,
    /// The collective the request is for.
    pub target_collective: String,
    /// The caller id in that collective.
    pub target_caller: String,
    /// The rule that mapped it.
    pub rule: RuleRef,
}
