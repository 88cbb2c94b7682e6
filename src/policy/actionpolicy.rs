//! The actionpolicy file format, parsed as go-choria's `authz_actionpolicy.go` reads it.
//!
//! ```text
//! policy default deny
//! allow→uid=500 /^up=ops-/→*→*→*
//! deny→up=bob→restart→environment=production→*
//! allow→sysadmins→enable disable status→customer=acme→acme::devserver
//! ```
//! Here `→` stands for one or more TABs. Comments (`#…`) and blank lines are ignored. A rule is
//! five TAB-separated fields: effect, callers, actions, facts, classes. Each field is `*` or a
//! list separated by single spaces.
//!
//! go-choria logs a line it cannot read and carries on without it. fedgate does the same only
//! where losing the line cannot allow more than the file's author meant: a rule whose facts or
//! classes are a compound statement (`and`, `or`, `not`, `!`, `(...)`), an `allow` line that is
//! not a rule (without it, what it would have allowed falls through to later lines), and a
//! groups line that names a group without members (no caller is in it either way). Each is
//! skipped with a warning naming file and line, counted in
//! `fedgate_policy_lines_skipped_total{file_kind, reason}` and reported in
//! [`PolicyFile::skipped`] or [`Groups::skipped`]. Any other bad line refuses the file, naming
//! the line: a `deny` line or a group with members that went missing could let through what it
//! was written to stop.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use regex::Regex;

use super::index::CallerIndex;

use crate::wire::choria_v1::{FactFilter, Filter};

/// Longest policy or groups file fedgate reads.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Most rules one policy file may hold.
pub const MAX_RULES: usize = 10_000;

/// The comment and blank line pattern, as go-choria has it.
static COMMENT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^(#.*|\s*)$").expect("static"));
/// The `policy default` line; the word is checked separately so typos are refused.
static DEFAULT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^policy\s+default\s+(\w+)(.*)$").expect("static"));
/// go-choria's rule pattern, verbatim: lazy fields, and the last of any extra fields is the
/// classes field.
static RULE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(allow|deny)\t+(.+?)\t+(.+?)\t+(.+?)(\t+(.+?))*$").expect("static")
});
/// go-choria's compound-statement test for one token.
static COMPOUND: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^!|^not$|^or$|^and$|\(.+\)").expect("static"));
/// go-choria refuses a classes field holding what looks like a fact condition.
static FACT_LIKE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(.+)(<|>|=|<=|>=)(.+)").expect("static"));
/// A `/regex/` caller token.
static CALLER_REGEX: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^/(.+)/$").expect("static"));

/// Allow or deny.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// The request may proceed.
    Allow,
    /// The request is refused.
    Deny,
}

/// One caller token: an exact caller id (also looked up as a group name) or a `/regex/`.
#[derive(Clone, Debug)]
pub enum CallerToken {
    /// Equal to the caller id, or the name of a group the caller belongs to.
    Exact(String),
    /// A regular expression searched in the caller id (unanchored, as in Go).
    Regex(Regex),
}

/// A field that is `*` or a list of tokens.
#[derive(Clone, Debug)]
pub enum Field<T> {
    /// `*`: anything.
    Any,
    /// Any of (callers, actions) or all of (facts, classes) these.
    List(Vec<T>),
}

impl<T> Field<T> {
    /// The tokens, or `None` for `*`.
    pub fn list(&self) -> Option<&[T]> {
        match self {
            Field::Any => None,
            Field::List(items) => Some(items),
        }
    }
}

/// The fact and class conditions of a rule: what only a node can check.
#[derive(Clone, Debug)]
pub struct Conditions {
    /// Every fact condition must hold.
    pub facts: Field<FactFilter>,
    /// Every class must be applied to the node.
    pub classes: Field<String>,
}

impl Conditions {
    /// True when the rule applies on every node (`*` in both fields).
    pub fn is_unconditional(&self) -> bool {
        matches!((&self.facts, &self.classes), (Field::Any, Field::Any))
    }

    /// Adds these conditions to a request filter (facts and classes are ANDed there too), so
    /// only the nodes the rule covers act.
    pub fn restrict(&self, filter: &mut Filter) {
        if let Some(facts) = self.facts.list() {
            filter.fact.extend(facts.iter().cloned());
        }
        if let Some(classes) = self.classes.list() {
            filter.cf_class.extend(classes.iter().cloned());
        }
    }

    /// The conditions as the filter fields they become.
    pub fn as_filter(&self) -> Filter {
        let mut filter = Filter::default();
        self.restrict(&mut filter);
        filter
    }
}

/// One `allow` or `deny` line.
#[derive(Clone, Debug)]
pub struct Rule {
    /// 1-based line number in its file.
    pub line: usize,
    /// What the rule decides when it matches.
    pub effect: Effect,
    /// Who it applies to.
    pub callers: Field<CallerToken>,
    /// Which actions it applies to.
    pub actions: Field<String>,
    /// Facts and classes a node must have.
    pub conditions: Conditions,
}

/// A line skipped, as Choria skips it, because losing it cannot widen what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// 1-based line number.
    pub line: usize,
    /// The line as written.
    pub text: String,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// Why a line was skipped; the `reason` label of `fedgate_policy_lines_skipped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// A rule whose facts or classes are a compound statement.
    Compound,
    /// An `allow` line that is not a five-field rule.
    MalformedAllow,
    /// A groups line naming a group without members.
    EmptyGroup,
}

impl SkipReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Compound => "compound",
            SkipReason::MalformedAllow => "malformed_allow",
            SkipReason::EmptyGroup => "empty_group",
        }
    }

    /// The file kind it occurs in: `policy` or `groups`.
    pub fn file_kind(self) -> &'static str {
        match self {
            SkipReason::EmptyGroup => "groups",
            SkipReason::Compound | SkipReason::MalformedAllow => "policy",
        }
    }
}

/// Warns about a skipped line (file and line named) and counts it.
fn skip(file: &str, line: usize, text: &str, reason: SkipReason, why: &str) -> Skipped {
    tracing::warn!(
        file,
        line,
        reason = reason.as_str(),
        "{file}:{line}: {why}; skipping the line as Choria does"
    );
    metrics::counter!(
        "fedgate_policy_lines_skipped_total",
        "file_kind" => reason.file_kind(),
        "reason" => reason.as_str()
    )
    .increment(1);
    Skipped {
        line,
        text: text.to_string(),
        reason,
    }
}

/// One parsed policy file.
#[derive(Clone, Debug)]
pub struct PolicyFile {
    /// The name decisions cite, relative to the policy directory (`london/puppet.policy`).
    pub name: Arc<str>,
    /// The last `policy default` line, if any.
    pub default: Option<Effect>,
    /// Rules in file order; the first match wins.
    pub rules: Vec<Rule>,
    /// Lines skipped with a warning (compound statements, malformed `allow` lines).
    pub skipped: Vec<Skipped>,
    /// Which rules each caller can match.
    index: CallerIndex,
}

/// A file that does not parse, with the line at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ParseError {
    /// The file, as named in decisions.
    pub file: String,
    /// 1-based line number; 0 when the whole file is at fault.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl PolicyFile {
    /// Parses the text of the policy file called `name`.
    pub fn parse(name: &str, text: &str) -> Result<PolicyFile, ParseError> {
        let error = |line: usize, message: String| ParseError {
            file: name.to_string(),
            line,
            message,
        };
        if text.len() > MAX_FILE_BYTES {
            return Err(error(
                0,
                format!("is {} bytes; the limit is {MAX_FILE_BYTES}", text.len()),
            ));
        }
        let mut file = PolicyFile {
            name: Arc::from(name),
            default: None,
            rules: Vec::new(),
            skipped: Vec::new(),
            index: CallerIndex::build(&[]),
        };
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            if COMMENT.is_match(line) {
                continue;
            }
            if let Some(found) = DEFAULT.captures(line) {
                file.default =
                    Some(parse_default(&found[1], &found[2]).map_err(|m| error(number, m))?);
                continue;
            }
            let Some(found) = RULE.captures(line) else {
                if effect_word(line) == "allow" {
                    let why = malformed(line);
                    let skipped = skip(name, number, line, SkipReason::MalformedAllow, &why);
                    file.skipped.push(skipped);
                    continue;
                }
                return Err(error(number, malformed(line)));
            };
            let facts = &found[4];
            let classes = found.get(6).map_or("", |m| m.as_str());
            if is_compound(facts) || is_compound(classes) {
                metrics::counter!("fedgate_policy_compound_skipped_total").increment(1);
                let why = "compound policy statements are not supported";
                let skipped = skip(name, number, line, SkipReason::Compound, why);
                file.skipped.push(skipped);
                continue;
            }
            if found.get(6).is_none() {
                return Err(error(
                    number,
                    "has no classes field; Choria denies every request that reaches such a rule, so write `*` as the fifth field".into(),
                ));
            }
            if file.rules.len() == MAX_RULES {
                return Err(error(number, format!("more than {MAX_RULES} rules")));
            }
            let rule = Rule {
                line: number,
                effect: if &found[1] == "allow" {
                    Effect::Allow
                } else {
                    Effect::Deny
                },
                callers: parse_callers(&found[2]).map_err(|m| error(number, m))?,
                actions: parse_list(&found[3], |a| Ok(a.to_string()))
                    .map_err(|m| error(number, m))?,
                conditions: Conditions {
                    facts: parse_list(facts, |f| {
                        FactFilter::parse(f).map_err(|e| format!("invalid fact matcher: {e}"))
                    })
                    .map_err(|m| error(number, m))?,
                    classes: parse_classes(classes).map_err(|m| error(number, m))?,
                },
            };
            file.rules.push(rule);
        }
        file.index = CallerIndex::build(&file.rules);
        Ok(file)
    }

    /// The rules whose caller field matches `caller`, in file order: the same rules, in the same
    /// order, as filtering [`PolicyFile::rules`] with [`Rule::matches_caller`], but found through
    /// the file's index. `scratch` is reused between calls.
    pub fn rules_for<'a>(
        &'a self,
        caller: &str,
        groups: &Groups,
        scratch: &'a mut Vec<u32>,
    ) -> impl Iterator<Item = &'a Rule> + 'a {
        self.index.candidates(caller, groups, scratch);
        scratch.iter().map(|&index| &self.rules[index as usize])
    }
}

/// `policy default <word>`: Choria takes `allow` as allow and any other word as deny; fedgate
/// accepts only `allow` and `deny`, so a typo cannot turn into a silent deny-all or allow-all.
fn parse_default(word: &str, rest: &str) -> Result<Effect, String> {
    let rest = rest.trim();
    if !(rest.is_empty() || rest.starts_with('#')) {
        return Err(format!(
            "unexpected text after `policy default {word}`: {rest:?}"
        ));
    }
    match word {
        "allow" => Ok(Effect::Allow),
        "deny" => Ok(Effect::Deny),
        other => Err(format!(
            "`policy default {other}`: the default must be allow or deny"
        )),
    }
}

/// The first word of a line: the effect, when it is a rule.
fn effect_word(line: &str) -> &str {
    line.split(['\t', ' ']).next().unwrap_or_default()
}

/// Explains why a non-comment line is not a rule.
fn malformed(line: &str) -> String {
    let effect = effect_word(line);
    if effect != "allow" && effect != "deny" {
        return format!(
            "expected `policy default allow|deny` or a rule starting with allow or deny, found {:?}",
            clip(line)
        );
    }
    let problem = if line.contains('\t') {
        format!(
            "a rule needs five TAB-separated fields (effect, callers, actions, facts, classes): {:?}",
            clip(line)
        )
    } else {
        "rule fields must be separated by TABs, not spaces".to_string()
    };
    if effect == "deny" {
        // Choria would skip it; skipping a deny could allow what it was written to refuse.
        return format!("{problem} (a deny line that does not parse refuses the file)");
    }
    problem
}

fn clip(line: &str) -> String {
    line.chars().take(120).collect()
}

/// go-choria's `IsCompound`.
pub fn is_compound(field: &str) -> bool {
    field.split(' ').any(|token| COMPOUND.is_match(token))
}

/// `*` or space-separated tokens, each converted by `parse`.
fn parse_list<T>(
    field: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Field<T>, String> {
    if field == "*" {
        return Ok(Field::Any);
    }
    field
        .split(' ')
        .map(parse)
        .collect::<Result<_, _>>()
        .map(Field::List)
}

/// Callers: a token starting with `/` must be a whole `/regex/` that compiles (go-choria logs
/// such a token and fails the caller match; fedgate refuses the file).
fn parse_callers(field: &str) -> Result<Field<CallerToken>, String> {
    parse_list(field, |token| {
        if !token.starts_with('/') {
            return Ok(CallerToken::Exact(token.to_string()));
        }
        let found = CALLER_REGEX
            .captures(token)
            .ok_or_else(|| format!("invalid caller matcher {token:?}: a regex is written /.../"))?;
        Regex::new(&found[1])
            .map(CallerToken::Regex)
            .map_err(|e| format!("caller regex {token:?} does not compile: {e}"))
    })
}

/// Classes: `*` or class names / `/regex/`; a fact condition in this field is refused.
fn parse_classes(field: &str) -> Result<Field<String>, String> {
    parse_list(field, |class| {
        if FACT_LIKE.is_match(class) {
            return Err(format!(
                "fact found where class was expected: {class:?} (facts are the fourth field)"
            ));
        }
        Ok(class.to_string())
    })
}

/// The groups file: `<group> <member> <member>…`, space separated, `#` comments.
#[derive(Clone, Debug, Default)]
pub struct Groups {
    members: HashMap<String, Vec<String>>,
    /// Each member to the groups it belongs to.
    of: HashMap<String, Vec<String>>,
    /// Lines naming a group without members, skipped with a warning.
    skipped: Vec<Skipped>,
}

/// A valid group name.
static GROUP_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[\w\.\-]+$").expect("static"));

impl Groups {
    /// Parses the groups file called `name`. A line naming a group without members is skipped
    /// with a warning, as go-choria skips it: no caller is in such a group either way. A line
    /// with members but a bad group name is an error naming the line (go-choria skips it too,
    /// but those members would then escape any `deny` that names the group).
    pub fn parse(name: &str, text: &str) -> Result<Groups, ParseError> {
        let error = |line: usize, message: String| ParseError {
            file: name.to_string(),
            line,
            message,
        };
        if text.len() > MAX_FILE_BYTES {
            return Err(error(0, format!("is over {MAX_FILE_BYTES} bytes")));
        }
        let mut groups = Groups::default();
        for (index, line) in text.lines().enumerate() {
            if COMMENT.is_match(line) {
                continue;
            }
            let mut parts = line.split(' ');
            let group = parts.next().unwrap_or_default();
            let members: Vec<String> = parts.map(str::to_string).collect();
            if members.is_empty() {
                let why = format!("group {group:?} has no members (write `<group> <member> ...`)");
                let skipped = skip(name, index + 1, line, SkipReason::EmptyGroup, &why);
                groups.skipped.push(skipped);
                continue;
            }
            if !GROUP_NAME.is_match(group) {
                return Err(error(
                    index + 1,
                    format!(
                        "invalid group name {group:?} (a group with members that does not load refuses the file)"
                    ),
                ));
            }
            // As in go-choria, a later line for the same group replaces the earlier one.
            groups.members.insert(group.to_string(), members);
        }
        for (group, members) in &groups.members {
            for member in members {
                let of = groups.of.entry(member.clone()).or_default();
                // A member listed twice in one group is pushed once.
                if of.last() != Some(group) {
                    of.push(group.clone());
                }
            }
        }
        Ok(groups)
    }

    /// The members of `group`.
    pub fn members(&self, group: &str) -> Option<&[String]> {
        self.members.get(group).map(Vec::as_slice)
    }

    /// The groups `caller` is a member of.
    pub fn of(&self, caller: &str) -> &[String] {
        self.of.get(caller).map_or(&[], Vec::as_slice)
    }

    /// Lines skipped with a warning: groups without members.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// How many groups there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when no group is defined.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl Rule {
    /// go-choria's `MatchesCallerID`: `*`, membership of a named group, an exact token, or a
    /// regex token.
    pub fn matches_caller(&self, caller: &str, groups: &Groups) -> bool {
        let Some(tokens) = self.callers.list() else {
            return true;
        };
        let in_group = tokens.iter().any(|token| match token {
            CallerToken::Exact(name) => groups
                .members(name)
                .is_some_and(|members| members.iter().any(|m| m == caller)),
            CallerToken::Regex(_) => false,
        });
        in_group
            || tokens.iter().any(|token| match token {
                CallerToken::Exact(id) => id == caller,
                CallerToken::Regex(re) => re.is_match(caller),
            })
    }

    /// go-choria's `MatchesAction`.
    pub fn matches_action(&self, action: &str) -> bool {
        self.actions
            .list()
            .is_none_or(|actions| actions.iter().any(|a| a == action))
    }
}
