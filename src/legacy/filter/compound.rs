//! Compound filters across the legacy boundary: mcollectived's call stacks (what `mco -S`
//! parses into, evaluated by `security/base.rb` with `Matcher.eval_compound_statement` and
//! Ruby's `eval`) and Choria's `[[{"expr": ...}]]` in the subset [`crate::filter::compound`]
//! reads.
//!
//! A legacy statement is one of: `/re/` (a class regex, every `/` removed, with case), a fact
//! comparison split at the first of `>=`, `<=`, `=`, `<`, `>` (a value starting with `/` makes it
//! `=~`), or a class name compared exactly. They become `any(classes, # matches "re")`,
//! `with("fact<op>value")` and `("class" in classes)`. `and`, `or`, `not`/`!` and parentheses
//! keep Ruby's precedence, which expr-lang shares. Data plugin functions (`fstatement`) have no
//! Choria form and are refused.

use std::collections::BTreeMap;

use crate::filter::compound::{Expr, parse_groups};
use crate::wire::choria_v1::{FactFilter, FactOperator};
use crate::wire::mcollective::Ruby;

/// Choria's compound groups: each a list of `{"expr": ...}` maps.
type Groups = Vec<Vec<BTreeMap<String, String>>>;

/// Choria compound groups as the legacy `compound` Array, or why mcollectived could not select
/// the same nodes with them.
pub(super) fn legacy_compound(groups: &[Vec<BTreeMap<String, String>>]) -> Result<Ruby, String> {
    let refuse = |why: String| format!("compound filter: {why}");
    let Some(exprs) = parse_groups(groups).map_err(|e| refuse(e.0))? else {
        return Err(refuse(
            "a group that is not one {\"expr\"} map, with which Choria nodes select nothing".into(),
        ));
    };
    // go-choria passes a node when more groups hold than fail; mcollectived when all hold. The
    // two agree up to two groups.
    if exprs.len() > 2 {
        return Err(refuse(format!(
            "{} groups: Choria passes a node when most of them hold, mcollectived 2.12 when \
             all do; join them with &&",
            exprs.len()
        )));
    }
    let mut out = Vec::new();
    for expr in &exprs {
        let mut stack = Vec::new();
        emit(expr, &mut stack).map_err(refuse)?;
        out.push(Ruby::Array(stack));
    }
    Ok(Ruby::Array(out))
}

/// One call-stack entry: `{"statement" => "..."}`, `{"and" => "and"}`...
fn entry(key: &str, value: &str) -> Ruby {
    Ruby::Hash(vec![(Ruby::str(key), Ruby::str(value))])
}

fn emit(expr: &Expr, stack: &mut Vec<Ruby>) -> Result<(), String> {
    let grouped = |e: &Expr, stack: &mut Vec<Ruby>| -> Result<(), String> {
        if matches!(e, Expr::And(..) | Expr::Or(..)) {
            stack.push(entry("(", "("));
            emit(e, stack)?;
            stack.push(entry(")", ")"));
            Ok(())
        } else {
            emit(e, stack)
        }
    };
    match expr {
        Expr::Not(inner) => {
            stack.push(entry("not", "not"));
            grouped(inner, stack)
        }
        Expr::And(a, b) | Expr::Or(a, b) => {
            grouped(a, stack)?;
            let op = if matches!(expr, Expr::And(..)) {
                "and"
            } else {
                "or"
            };
            stack.push(entry(op, op));
            grouped(b, stack)
        }
        leaf => {
            stack.push(entry("statement", &statement(leaf)?));
            Ok(())
        }
    }
}

/// A leaf as the statement mcollectived reads back as the same test.
fn statement(leaf: &Expr) -> Result<String, String> {
    let operators = |s: &str| s.contains(['=', '<', '>']);
    match leaf {
        Expr::InClasses(class) if !class.starts_with('/') && !operators(class) => Ok(class.clone()),
        Expr::ClassMatches(re) if !re.contains('/') && !re.is_empty() => Ok(format!("/{re}/")),
        Expr::With(query) => match FactFilter::parse(query) {
            Ok(fact) => fact_statement(&fact),
            Err(_) => Err(format!(
                "with({query:?}) matches a class or an agent on Choria nodes, and \
                 mcollectived 2.12's compound filters test classes only: write \
                 (\"{query}\" in classes)"
            )),
        },
        Expr::Bool(_) => Err("true and false have no legacy form".into()),
        other => Err(format!(
            "{} has no statement mcollectived 2.12 reads the same way",
            other.to_expr_lang()
        )),
    }
}

/// `fact<op>value` as mcollectived splits it back: at the first operator, with `=` for `==`
/// and a `/re/` value for `=~`.
fn fact_statement(fact: &FactFilter) -> Result<String, String> {
    let (op, value) = match fact.operator {
        FactOperator::Eq => ("=", fact.value.clone()),
        FactOperator::Match => (
            "=",
            format!(
                "/(?i){}/",
                fact.value.trim_start_matches('/').trim_end_matches('/')
            ),
        ),
        FactOperator::Ne => {
            return Err(format!(
                "{fact}: mcollectived 2.12's compound filters have no != (they read it as a fact \
                 named {:?}), and `not` differs where the fact is missing",
                format!("{}!", fact.fact)
            ));
        }
        other => (other.as_str(), fact.value.clone()),
    };
    let plain_value = fact.operator != FactOperator::Match;
    if fact.fact.contains(['=', '<', '>', '/'])
        || fact.fact.is_empty()
        || value.is_empty()
        || value.contains(op)
        || (plain_value && value.starts_with('/'))
    {
        return Err(format!(
            "{fact} cannot be written so that mcollectived 2.12 splits it back the same"
        ));
    }
    Ok(format!("{}{op}{value}", fact.fact))
}

/// The legacy `compound` Array as Choria groups (all of mcollectived's groups must hold, so they
/// become one `&&`), and how many groups mcollectived counts as criteria.
pub(super) fn choria_compound(value: &Ruby) -> Result<(Groups, usize), String> {
    let refuse = |why: String| format!("compound filter: {why}");
    let groups = match value {
        Ruby::Nil => return Ok((Vec::new(), 0)),
        Ruby::Array(groups) => groups,
        _ => return Err(refuse("not an Array".into())),
    };
    let mut parts = Vec::with_capacity(groups.len());
    for group in groups {
        let Ruby::Array(entries) = group else {
            return Err(refuse("a group that is not an Array".into()));
        };
        parts.push(group_expr(entries).map_err(refuse)?);
    }
    if parts.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let text = if parts.len() == 1 {
        parts.remove(0)
    } else {
        parts
            .iter()
            .map(|p| format!("({p})"))
            .collect::<Vec<_>>()
            .join(" && ")
    };
    // What the Choria side will read: the translation must be in the subset.
    Expr::parse(&text).map_err(|e| refuse(format!("{text}: {e}")))?;
    let group = vec![BTreeMap::from([("expr".to_string(), text)])];
    Ok((vec![group], groups.len()))
}

/// One call stack as expr-lang text, token for token.
fn group_expr(entries: &[Ruby]) -> Result<String, String> {
    if entries.is_empty() {
        // Ruby's eval("") is nil: the group fails.
        return Ok("false".into());
    }
    let mut tokens = Vec::with_capacity(entries.len());
    for entry in entries {
        let pair = match entry {
            Ruby::Hash(pairs) if pairs.len() == 1 => &pairs[0],
            _ => return Err("an entry that is not a one-key Hash".into()),
        };
        let (Ruby::Str(key), value) = pair else {
            return Err("an entry whose key is not a String".into());
        };
        tokens.push(match key.as_str() {
            "statement" => {
                let text = value.as_str().ok_or("a statement that is not a String")?;
                leaf(text)?.to_expr_lang()
            }
            "fstatement" => {
                let name = value
                    .get("name")
                    .and_then(Ruby::as_str)
                    .unwrap_or("a data plugin");
                return Err(format!(
                    "{name}() is a data plugin function, which has no Choria form fedgate can \
                     send"
                ));
            }
            "and" => "&&".into(),
            "or" => "||".into(),
            "not" => "!".into(),
            "(" => "(".into(),
            ")" => ")".into(),
            other => {
                return Err(format!(
                    "an entry {other:?} mcollectived 2.12 does not read"
                ));
            }
        });
    }
    Ok(tokens.join(" "))
}

/// `Matcher.eval_compound_statement`'s reading of one statement, as a Choria expression.
fn leaf(text: &str) -> Result<Expr, String> {
    if text.starts_with('/') {
        // has_cf_class? removes every `/`.
        return Ok(Expr::ClassMatches(text.replace('/', "")));
    }
    let Some(found) = ["=", "<", ">"].iter().filter_map(|c| text.find(c)).min() else {
        return Ok(Expr::InClasses(text.to_string()));
    };
    // The first of `>=|<=|=|<|>` from the left: a two-character operator wins at its position.
    let op = [">=", "<=", "=", "<", ">"]
        .into_iter()
        .find(|op| text[found..].starts_with(op))
        .unwrap_or("=");
    // Ruby's String#split: every occurrence splits, trailing empty parts go.
    let mut parts: Vec<&str> = text.split(op).collect();
    while parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    let (Some(name), Some(value)) = (parts.first(), parts.get(1)) else {
        return Err(format!(
            "statement {text:?} has no value (mcollectived fails on it)"
        ));
    };
    let (operator, value) = if value.starts_with('/') {
        let pattern = value
            .strip_prefix('/')
            .and_then(|v| v.strip_suffix('/'))
            .filter(|p| !p.is_empty())
            .unwrap_or(value);
        if pattern.ends_with('/') {
            return Err(format!(
                "statement {text:?}: its regex ends in a / Choria would trim"
            ));
        }
        (FactOperator::Match, format!("/(?-i){pattern}/"))
    } else {
        let operator = if op == "=" { "==" } else { op };
        (
            FactOperator::parse(operator).unwrap_or(FactOperator::Eq),
            value.to_string(),
        )
    };
    let wanted = FactFilter {
        fact: name.to_string(),
        operator,
        value,
    };
    // with() parses its text again with go-choria's rules: it must read back the same.
    let query = wanted.to_string();
    match FactFilter::parse(&query) {
        Ok(read) if read == wanted => Ok(Expr::With(query)),
        _ => Err(format!(
            "statement {text:?} is read by mcollectived 2.12 as fact {name:?} {} {:?}, which has \
             no Choria form that reads back the same",
            wanted.operator, wanted.value
        )),
    }
}
