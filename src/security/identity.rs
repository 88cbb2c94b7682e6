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

use std::fmt;
use std::path::Path;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use super::CallerId;

/// Most compiled size of one rule's regular expression.
const MAX_REGEX_BYTES: usize = 1 << 20;

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
        write!(f, "{} rule {}", self.file, self.index)
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    from: String,
    to: Vec<String>,
    caller: Option<String>,
    glob: Option<String>,
    regex: Option<String>,
    #[serde(rename = "as")]
    map_to: Option<String>,
    #[serde(default)]
    deny: bool,
}

impl IdentityRules {
    /// No rules: every caller is denied.
    pub fn deny_all() -> Self {
        IdentityRules {
            file: "(no identity rules)".into(),
            rules: Vec::new(),
        }
    }

    /// Reads and compiles a rules file.
    pub fn load(path: &Path) -> Result<Self, RulesError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Io {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file)
    }

    /// Compiles rules from TOML text; `file` names it in errors and rule references.
    pub fn parse(text: &str, file: &str) -> Result<Self, RulesError> {
        let raw: RulesFile = toml::from_str(text).map_err(|err| RulesError::Parse {
            file: file.to_string(),
            message: err.to_string(),
        })?;
        let rules = raw
            .rule
            .into_iter()
            .enumerate()
            .map(|(i, rule)| {
                compile_rule(rule).map_err(|problem| RulesError::Rule {
                    file: file.to_string(),
                    index: i + 1,
                    problem,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(IdentityRules {
            file: file.to_string(),
            rules,
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

fn compile_rule(raw: RawRule) -> Result<Rule, String> {
    if raw.from.is_empty() {
        return Err("`from` must name a realm".into());
    }
    if raw.to.is_empty() || raw.to.iter().any(String::is_empty) {
        return Err("`to` must list at least one collective, none empty".into());
    }
    let matcher = match (raw.caller, raw.glob, raw.regex) {
        (Some(exact), None, None) => Matcher::Exact(exact),
        (None, Some(glob), None) => Matcher::Pattern(anchored(&glob_to_regex(&glob))?),
        (None, None, Some(regex)) => Matcher::Pattern(anchored(&regex)?),
        _ => return Err("give exactly one of `caller`, `glob` or `regex`".into()),
    };
    let outcome = match (raw.map_to, raw.deny) {
        (Some(template), false) => Outcome::Map(compile_template(&template, &matcher)?),
        (None, true) => Outcome::Deny,
        _ => return Err("give exactly one of `as = \"<template>\"` or `deny = true`".into()),
    };
    Ok(Rule {
        from: raw.from,
        to: raw.to,
        matcher,
        outcome,
    })
}

/// Compiles a pattern that must match the whole caller id.
fn anchored(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(MAX_REGEX_BYTES)
        .build()
        .map_err(|err| format!("pattern {pattern:?} does not compile: {err}"))
}

/// A glob as a regex: `*` is any run of characters and `?` one character, each a capture group.
fn glob_to_regex(glob: &str) -> String {
    let mut out = String::new();
    let mut literal = String::new();
    for c in glob.chars() {
        if c == '*' || c == '?' {
            out.push_str(&regex::escape(&std::mem::take(&mut literal)));
            out.push_str(if c == '*' { "(.*)" } else { "(.)" });
        } else {
            literal.push(c);
        }
    }
    out.push_str(&regex::escape(&literal));
    out
}

/// Parses `$N`, `${N}`, `${name}` and `$$`, refusing any group the matcher does not have.
fn compile_template(template: &str, matcher: &Matcher) -> Result<Template, String> {
    let names = matcher.group_names();
    let group = |reference: &str| -> Result<usize, String> {
        let index = match reference.parse::<usize>() {
            Ok(index) => Some(index),
            Err(_) => names
                .iter()
                .position(|name| name.as_deref() == Some(reference)),
        };
        index.filter(|i| *i < names.len()).ok_or_else(|| {
            format!(
                "template {template:?} uses ${reference}, but the matcher has groups 0 to {}{}",
                names.len() - 1,
                named_groups(&names)
            )
        })
    };
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (part, consumed) = if let Some(tail) = after.strip_prefix('$') {
            literal.push('$');
            rest = tail;
            continue;
        } else if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("template {template:?} has an unclosed ${{"))?;
            (Part::Group(group(&braced[..end])?), end + 2)
        } else {
            let digits = after.chars().take_while(char::is_ascii_digit).count();
            if digits == 0 {
                return Err(format!(
                    "template {template:?}: `$` must start $N, ${{N}}, ${{name}} or $$"
                ));
            }
            (Part::Group(group(&after[..digits])?), digits)
        };
        if !literal.is_empty() {
            parts.push(Part::Literal(std::mem::take(&mut literal)));
        }
        parts.push(part);
        rest = &after[consumed..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    if parts.is_empty() {
        return Err("the template `as` is empty".into());
    }
    Ok(Template(parts))
}

fn named_groups(names: &[Option<String>]) -> String {
    let named: Vec<&str> = names.iter().flatten().map(String::as_str).collect();
    if named.is_empty() {
        String::new()
    } else {
        format!(" and names {}", named.join(", "))
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

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
