//! Compiling a rules file: each `[[rule]]` table checked and turned into a matcher (exact,
//! glob with captures, or anchored regex) and an outcome (a caller id template, or deny).

use regex::{Regex, RegexBuilder};
use serde::Deserialize;

use super::{Matcher, Outcome, Part, Rule, RulesError, Template};

/// Most compiled size of one rule's regular expression.
const MAX_REGEX_BYTES: usize = 1 << 20;

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

/// Parses a rules file's TOML and compiles its rules in order.
pub(super) fn compile_file(text: &str, file: &str) -> Result<Vec<Rule>, RulesError> {
    let raw: RulesFile = toml::from_str(text).map_err(|err| RulesError::Parse {
        file: file.to_string(),
        message: err.to_string(),
    })?;
    raw.rule
        .into_iter()
        .enumerate()
        .map(|(i, rule)| {
            compile_rule(rule).map_err(|problem| RulesError::Rule {
                file: file.to_string(),
                index: i + 1,
                problem,
            })
        })
        .collect()
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
