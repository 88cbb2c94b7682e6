//! Filters across the legacy boundary, read the way mcollectived 2.12 reads them
//! (`security/base.rb validate_filter?`, `util.rb has_fact?`, `matcher.rb`): a filter goes
//! across when the other side selects the same nodes with it, and is refused with the reason
//! otherwise. Nothing is dropped.
//!
//! What mcollectived 2.12 does, and what follows here:
//! - Each fact entry is `has_fact?(f[:fact], f[:value], f[:operator])` with Symbol keys. An
//!   operator other than `==`, `=~`, `!=`, `<`, `>`, `<=`, `>=` (none at all included) falls
//!   through every branch of `test_fact_value` and is false on every node: refused.
//! - A key matching `/puppet_class|cf_class/` is a class filter; `agent`, `fact`, `identity` and
//!   `compound` (String keys) are the others; any other key is ignored.
//! - A node passes when nothing failed and something passed; only the empty filter passes by
//!   itself. A filter that names no criterion but is not the empty filter selects no node:
//!   refused.
//! - The agent `mcollective` always passes.
//! - `/x` (a leading slash) is a regular expression with every `/` removed, for identities,
//!   classes and agents.
//! - Identities pass when exactly one of them matches; Choria's pass when any does. Lists in
//!   which two entries could match one node are refused in both directions.

mod compound;

use crate::wire::choria_v1::{FactFilter, FactOperator, Filter};
use crate::wire::mcollective::Ruby;

/// A Choria filter as the legacy `:filter` Hash (String keys; fact entries with Symbol keys), or
/// why mcollectived could not select the same nodes with it.
pub fn legacy_filter(filter: &Filter, agent: &str) -> Result<Ruby, String> {
    let strings = |items: &[String]| Ruby::Array(items.iter().map(|s| Ruby::str(s)).collect());
    // Every legacy node answers discovery; it is not an agent a filter can require.
    let mut agents: Vec<String> = filter
        .agent
        .iter()
        .filter(|a| *a != "discovery")
        .cloned()
        .collect();
    if agent != "discovery" && !agents.iter().any(|a| a == agent) {
        agents.push(agent.to_string());
    }
    for agent in &agents {
        legacy_needle(agent, "agent")?;
    }
    // Choria lowercases a plain class and matches a class regex ignoring case.
    let classes = filter
        .cf_class
        .iter()
        .map(|class| match legacy_needle(class, "class")? {
            Some(pattern) => Ok(format!("/(?i){pattern}/")),
            None => Ok(crate::gostd::to_lower(class)),
        })
        .collect::<Result<Vec<_>, String>>()?;
    for identity in &filter.identity {
        legacy_needle(identity, "identity")?;
    }
    identities_exclusive(&filter.identity)?;
    let facts = filter
        .fact
        .iter()
        .map(|f| {
            // Choria trims every leading and trailing `/` and ignores case.
            let value = match f.operator {
                FactOperator::Match => format!(
                    "/(?i){}/",
                    f.value.trim_start_matches('/').trim_end_matches('/')
                ),
                _ => f.value.clone(),
            };
            Ruby::Hash(vec![
                (Ruby::sym("fact"), Ruby::str(&f.fact)),
                (Ruby::sym("value"), Ruby::str(&value)),
                (Ruby::sym("operator"), Ruby::str(f.operator.as_str())),
            ])
        })
        .collect();
    Ok(Ruby::Hash(vec![
        (Ruby::str("fact"), Ruby::Array(facts)),
        (Ruby::str("cf_class"), strings(&classes)),
        (Ruby::str("agent"), strings(&agents)),
        (Ruby::str("identity"), strings(&filter.identity)),
        (
            Ruby::str("compound"),
            compound::legacy_compound(&filter.compound)?,
        ),
    ]))
}

/// The pattern of a Choria `/re/` needle, checked to mean the same to mcollectived (which
/// removes every `/`); `None` for a plain needle, which must not look like a regex to it.
fn legacy_needle<'n>(needle: &'n str, what: &str) -> Result<Option<&'n str>, String> {
    let Some(inner) = needle.strip_prefix('/') else {
        return Ok(None);
    };
    let Some(pattern) = inner.strip_suffix('/').filter(|_| needle.len() >= 2) else {
        return Err(format!(
            "{what} {needle:?} is a plain name to Choria and a regular expression to \
             mcollectived 2.12"
        ));
    };
    if pattern.contains('/') {
        return Err(format!(
            "{what} {needle:?}: mcollectived 2.12 removes every / from a regular expression"
        ));
    }
    Ok(Some(pattern))
}

/// Refuses identity lists where one node could match two entries: mcollectived passes a node
/// only when exactly one matches, Choria when any does.
fn identities_exclusive(identities: &[String]) -> Result<(), String> {
    let regex = |s: &str| s.strip_prefix('/').map(|r| r.replace('/', ""));
    for (i, a) in identities.iter().enumerate() {
        for b in &identities[i + 1..] {
            let overlap = match (regex(a), regex(b)) {
                (None, None) => a == b,
                (Some(re), None) => might_match(&re, b),
                (None, Some(re)) => might_match(&re, a),
                (Some(_), Some(_)) => true,
            };
            if overlap {
                return Err(format!(
                    "identity filters {a:?} and {b:?} could both match one node: mcollectived \
                     2.12 selects a node only when exactly one identity filter matches it, \
                     Choria when any does; give one regular expression or distinct names"
                ));
            }
        }
    }
    Ok(())
}

/// Whether `pattern` matches `text`; a pattern Rust cannot read might.
fn might_match(pattern: &str, text: &str) -> bool {
    regex::Regex::new(pattern).map_or(true, |re| re.is_match(text))
}

/// The legacy filter Hash as a Choria filter that selects the same nodes, or why there is none.
pub fn choria_filter(filter: &Ruby) -> Result<Filter, String> {
    let Ruby::Hash(pairs) = filter else {
        return Err("the filter is not a Hash".into());
    };
    let mut out = Filter::default();
    // What mcollectived counts as passed: one per class, agent, fact and compound group, one
    // for a non-empty identity list.
    let mut criteria = 0;
    for (key, value) in pairs {
        let name = match key {
            Ruby::Str(name) => name.as_str(),
            Ruby::Symbol(name) if is_class_key(name) => name.as_str(),
            // mcollectived compares the other keys with Strings: a Symbol key is ignored.
            _ => continue,
        };
        if is_class_key(name) {
            for class in strings(value, name)? {
                criteria += 1;
                out.cf_class.push(choria_class(&class));
            }
            continue;
        }
        match name {
            "agent" => {
                for agent in strings(value, name)? {
                    criteria += 1;
                    // Every mcollectived passes the agent `mcollective`.
                    if agent != "mcollective" {
                        out.agent.push(choria_needle(&agent));
                    }
                }
            }
            "identity" => {
                let identities = strings(value, name)?;
                criteria += usize::from(!identities.is_empty());
                identities_exclusive(&identities)?;
                out.identity
                    .extend(identities.iter().map(|i| choria_needle(i)));
            }
            "fact" => {
                let Ruby::Array(items) = value else {
                    return Err("filter fact is not an Array".into());
                };
                for item in items {
                    criteria += 1;
                    out.fact.push(fact_filter(item)?);
                }
            }
            "compound" => {
                let (groups, count) = compound::choria_compound(value)?;
                criteria += count;
                out.compound = groups;
            }
            _ => {}
        }
    }
    if criteria == 0 && !is_empty_filter(pairs) {
        return Err(
            "the filter names no criterion but is not the empty filter: mcollectived 2.12 \
             selects no node with it"
                .into(),
        );
    }
    Ok(out)
}

/// mcollectived's `when /puppet_class|cf_class/`.
fn is_class_key(name: &str) -> bool {
    name.contains("puppet_class") || name.contains("cf_class")
}

/// `{}` or exactly the five empty lists (`Util.empty_filter?`).
fn is_empty_filter(pairs: &[(Ruby, Ruby)]) -> bool {
    const KEYS: [&str; 5] = ["fact", "cf_class", "agent", "identity", "compound"];
    pairs.is_empty()
        || (pairs.len() == KEYS.len()
            && KEYS.iter().all(|k| {
                pairs
                    .iter()
                    .any(|(key, value)| matches!((key, value), (Ruby::Str(s), Ruby::Array(a)) if s == k && a.is_empty()))
            }))
}

/// A legacy class as Choria writes it: mcollectived compares a plain class exactly and a
/// regex with case, where Choria lowercases the one and ignores case in the other.
fn choria_class(class: &str) -> String {
    if class.starts_with('/') {
        format!("/(?-i){}/", class.replace('/', ""))
    } else if class.chars().any(char::is_uppercase) {
        format!("/(?-i)^{}$/", regex::escape(class))
    } else {
        class.to_string()
    }
}

/// A legacy needle as Choria writes it: `/x` (any leading slash) is a regex without slashes.
fn choria_needle(needle: &str) -> String {
    if needle.starts_with('/') {
        format!("/{}/", needle.replace('/', ""))
    } else {
        needle.to_string()
    }
}

fn strings(value: &Ruby, key: &str) -> Result<Vec<String>, String> {
    match value {
        Ruby::Nil => Ok(Vec::new()),
        Ruby::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("filter {key} holds a non-string"))
            })
            .collect(),
        _ => Err(format!("filter {key} is not an Array")),
    }
}

/// One fact entry, read as `has_fact?(f[:fact], f[:value], f[:operator])` reads it.
fn fact_filter(item: &Ruby) -> Result<FactFilter, String> {
    let field = |k: &str| match item {
        Ruby::Hash(pairs) => pairs
            .iter()
            .find(|(key, _)| matches!(key, Ruby::Symbol(s) if s == k))
            .and_then(|(_, v)| v.as_str()),
        _ => None,
    };
    let (Some(fact), Some(value)) = (field("fact"), field("value")) else {
        return Err(
            "a fact filter without a :fact and a :value String: mcollectived 2.12 selects \
             no node with it"
                .into(),
        );
    };
    let Some(operator) = field("operator") else {
        return Err(format!(
            "fact filter {fact:?} (value {value:?}) has no :operator: mcollectived 2.12 \
             compares with no operator, which selects no node; send one of == =~ != < > <= >="
        ));
    };
    // Exactly the operators test_fact_value knows; go-choria's `=`, `=<`, `=>` are not.
    let known = ["==", "=~", "!=", "<", ">", "<=", ">="].contains(&operator);
    let Some(operator) = FactOperator::parse(operator).filter(|_| known) else {
        return Err(format!(
            "fact filter {fact:?} has operator {operator:?}, which mcollectived 2.12 does not \
             know and which selects no node; send one of == =~ != < > <= >="
        ));
    };
    let value = match operator {
        FactOperator::Match => choria_regex(value)?,
        _ => value.to_string(),
    };
    Ok(FactFilter {
        fact: fact.to_string(),
        operator,
        value,
    })
}

/// A legacy `=~` value as Choria's: one pair of slashes is dropped (`/^\/(.+)\/$/`), and the
/// match keeps case, as Ruby's does.
fn choria_regex(value: &str) -> Result<String, String> {
    let pattern = value
        .strip_prefix('/')
        .and_then(|v| v.strip_suffix('/'))
        .filter(|p| !p.is_empty())
        .unwrap_or(value);
    if pattern.ends_with('/') {
        return Err(format!(
            "fact regex {value:?} ends in a / that Choria would trim"
        ));
    }
    Ok(format!("/(?-i){pattern}/"))
}

#[cfg(test)]
mod tests;
