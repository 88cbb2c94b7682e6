//! The request `filter`: facts, classes, agents, identities and compound expressions.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::check_len;
use crate::wire::{DecodeError, Layer};

/// A v1 filter. Every list is required on the wire except `agent`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Fact conditions, ANDed.
    pub fact: Vec<FactFilter>,
    /// Configuration-management classes the node must have, ANDed.
    pub cf_class: Vec<String>,
    /// Agents the node must have, ANDed.
    #[serde(default)]
    pub agent: Vec<String>,
    /// Identities, ORed; `/re/` is a regular expression.
    pub identity: Vec<String>,
    /// Compound expressions in go-choria's `[[{"expr": ...}]]` shape.
    pub compound: Vec<Vec<BTreeMap<String, String>>>,
}

/// One `{"fact","operator","value"}` condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactFilter {
    /// Fact name; a dotted path reaches into structured facts.
    pub fact: String,
    /// Comparison operator.
    pub operator: FactOperator,
    /// Value compared against; `/re/` with `=~` is a regular expression.
    pub value: String,
}

/// The operators the v1 schema allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FactOperator {
    /// `==`
    #[serde(rename = "==")]
    Eq,
    /// `!=`
    #[serde(rename = "!=")]
    Ne,
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `=~`
    #[serde(rename = "=~")]
    Match,
}

impl FactOperator {
    /// The operator as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            FactOperator::Eq => "==",
            FactOperator::Ne => "!=",
            FactOperator::Lt => "<",
            FactOperator::Gt => ">",
            FactOperator::Le => "<=",
            FactOperator::Ge => ">=",
            FactOperator::Match => "=~",
        }
    }

    /// Parses an operator, accepting the CLI spellings `=`, `=<` and `=>` as go-choria does.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "==" | "=" => FactOperator::Eq,
            "!=" => FactOperator::Ne,
            "<" => FactOperator::Lt,
            ">" => FactOperator::Gt,
            "<=" | "=<" => FactOperator::Le,
            ">=" | "=>" => FactOperator::Ge,
            "=~" => FactOperator::Match,
            _ => return None,
        })
    }
}

impl fmt::Display for FactOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `fact<op>value`, as written on a command line or in a policy.
impl fmt::Display for FactFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.fact, self.operator, self.value)
    }
}

/// The operator alternation go-choria uses to split `fact<op>value` strings.
static OPERATORS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"<=|>=|=>|=<|<|>|!=|=~|={1,2}").expect("static regex"));

impl FactFilter {
    /// Parses `fact<op>value` as typed on a command line, using go-choria's rules: the right-most
    /// operator splits, `=`, `=<`, `=>` are normalised, and a `/re/` value means `=~`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid =
            || format!("could not parse fact {text} it does not appear to be in a valid format");
        let found = OPERATORS.find_iter(text).last().ok_or_else(invalid)?;
        let fact = text[..found.start()].trim();
        let value = text[found.end()..].trim();
        if fact.is_empty() || value.is_empty() {
            return Err(invalid());
        }
        let first = &fact[..fact.chars().next().map_or(0, char::len_utf8)];
        let last = &value[value.len() - value.chars().last().map_or(0, char::len_utf8)..];
        if OPERATORS.is_match(first) || OPERATORS.is_match(last) {
            return Err(invalid());
        }
        let mut operator = FactOperator::parse(found.as_str()).ok_or_else(invalid)?;
        if value.len() >= 2 && value.starts_with('/') && value.ends_with('/') {
            operator = FactOperator::Match;
        }
        Ok(FactFilter {
            fact: fact.to_string(),
            operator,
            value: value.to_string(),
        })
    }
}

impl Filter {
    /// True when no list holds anything, so every node matches.
    pub fn is_empty(&self) -> bool {
        self.fact.is_empty()
            && self.cf_class.is_empty()
            && self.agent.is_empty()
            && self.identity.is_empty()
            && self.compound.is_empty()
    }

    /// Applies the schema's rules that serde cannot express.
    pub(crate) fn validate(&self, layer: Layer) -> Result<(), DecodeError> {
        for (i, fact) in self.fact.iter().enumerate() {
            check_len(
                layer,
                &format!("envelope.filter.fact[{i}].fact"),
                &fact.fact,
                1,
                None,
            )?;
            check_len(
                layer,
                &format!("envelope.filter.fact[{i}].value"),
                &fact.value,
                1,
                None,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (String, &'static str, String) {
        let f = FactFilter::parse(text).unwrap();
        (f.fact, f.operator.as_str(), f.value)
    }

    #[test]
    fn parses_cli_fact_filters_like_go_choria() {
        assert_eq!(parse("country=uk"), ("country".into(), "==", "uk".into()));
        assert_eq!(parse("cpus >= 4"), ("cpus".into(), ">=", "4".into()));
        assert_eq!(parse("cpus=>4"), ("cpus".into(), ">=", "4".into()));
        assert_eq!(parse("mem=<4"), ("mem".into(), "<=", "4".into()));
        assert_eq!(parse("os=/deb/"), ("os".into(), "=~", "/deb/".into()));
        assert_eq!(parse("a!=b"), ("a".into(), "!=", "b".into()));
    }

    #[test]
    fn rejects_malformed_fact_filters() {
        for bad in ["country", "=uk", "country=", "country==", "<x=y"] {
            assert!(FactFilter::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn operators_round_trip_through_json() {
        let f = FactFilter::parse("a=~b").unwrap();
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, r#"{"fact":"a","operator":"=~","value":"b"}"#);
        let bad = serde_json::from_str::<FactFilter>(r#"{"fact":"a","operator":"=","value":"b"}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn filter_serializes_in_go_order_and_requires_lists() {
        let json = serde_json::to_string(&Filter::default()).unwrap();
        assert_eq!(
            json,
            r#"{"fact":[],"cf_class":[],"agent":[],"identity":[],"compound":[]}"#
        );
        let no_agent: Filter =
            serde_json::from_str(r#"{"fact":[],"cf_class":[],"identity":[],"compound":[]}"#)
                .unwrap();
        assert!(no_agent.is_empty());
        assert!(
            serde_json::from_str::<Filter>(r#"{"fact":[],"cf_class":[],"identity":[]}"#).is_err()
        );
    }
}
