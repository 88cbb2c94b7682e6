//! Compound filters: the part of go-choria's expr-lang language fedgate reads and evaluates.
//!
//! go-choria compiles each `{"expr": ...}` with expr-lang. fedgate reads this subset, which is
//! what the legacy `-S` language translates into and back out of:
//! `with("fact<op>value")`, `with("class")`, `"class" in classes`,
//! `any(classes, # matches "re")`, `true`, `false`, `!`/`not`, `&&`/`and`, `||`/`or` and
//! parentheses. Anything else is [`Unsupported`]: the simulated fleet refuses it and the legacy
//! translation refuses it, rather than guess.

use regex::Regex;

use super::{NodeView, facts, match_agents, match_classes};
use crate::wire::choria_v1::FactFilter;

/// An expression fedgate cannot read, with what it stopped at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// A parsed compound expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `true` or `false`.
    Bool(bool),
    /// `with("...")`: a fact filter when the text parses as one, else a class or an agent.
    With(String),
    /// `"name" in classes`: the node has exactly this class.
    InClasses(String),
    /// `any(classes, # matches "re")`: some class matches the regular expression.
    ClassMatches(String),
    /// `!e`.
    Not(Box<Expr>),
    /// `a && b`.
    And(Box<Expr>, Box<Expr>),
    /// `a || b`.
    Or(Box<Expr>, Box<Expr>),
}

impl Expr {
    /// Reads one expression of the subset.
    pub fn parse(text: &str) -> Result<Expr, Unsupported> {
        let mut parser = Parser {
            tokens: tokenize(text)?,
            at: 0,
        };
        let expr = parser.or()?;
        match parser.tokens.get(parser.at) {
            None => Ok(expr),
            Some(token) => Err(Unsupported(format!("unexpected {token:?}"))),
        }
    }

    /// Evaluates against a node as go-choria does.
    pub fn eval(&self, node: &NodeView<'_>) -> bool {
        match self {
            Expr::Bool(value) => *value,
            Expr::With(query) => with(query, node),
            Expr::InClasses(name) => node.classes.iter().any(|c| c == name),
            Expr::ClassMatches(pattern) => {
                Regex::new(pattern).is_ok_and(|re| node.classes.iter().any(|c| re.is_match(c)))
            }
            Expr::Not(inner) => !inner.eval(node),
            Expr::And(a, b) => a.eval(node) && b.eval(node),
            Expr::Or(a, b) => a.eval(node) || b.eval(node),
        }
    }

    /// The expression as expr-lang text, every binary operation in parentheses.
    pub fn to_expr_lang(&self) -> String {
        match self {
            Expr::Bool(value) => value.to_string(),
            Expr::With(query) => format!("with({})", quote(query)),
            Expr::InClasses(name) => format!("({} in classes)", quote(name)),
            Expr::ClassMatches(re) => format!("any(classes, # matches {})", quote(re)),
            Expr::Not(inner) => format!("!{}", inner.to_expr_lang()),
            Expr::And(a, b) => format!("({} && {})", a.to_expr_lang(), b.to_expr_lang()),
            Expr::Or(a, b) => format!("({} || {})", a.to_expr_lang(), b.to_expr_lang()),
        }
    }
}

/// go-choria's `with()`: a fact filter, else a class, else an agent.
fn with(query: &str, node: &NodeView<'_>) -> bool {
    match FactFilter::parse(query) {
        Ok(fact) => facts::match_facts(&[fact], node.facts),
        Err(_) => {
            let needle = [query.to_string()];
            match_classes(&needle, node.classes) || match_agents(&needle, node.agents)
        }
    }
}

/// A double-quoted expr-lang string.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The groups of a Choria compound filter, matched as go-choria's `MatchExprString` does: a
/// group that is not one `{"expr"}` map fails the whole filter, each group counts +1 when true
/// and -1 when false, and the filter passes when the count is above zero.
pub fn matches(
    groups: &[Vec<std::collections::BTreeMap<String, String>>],
    node: &NodeView<'_>,
) -> Result<bool, Unsupported> {
    let exprs = parse_groups(groups)?;
    let Some(exprs) = exprs else {
        return Ok(false);
    };
    let count: i64 = exprs
        .iter()
        .map(|e| if e.eval(node) { 1 } else { -1 })
        .sum();
    Ok(count > 0)
}

/// Each group's expression; `None` when a group is malformed (go-choria then matches nothing).
pub fn parse_groups(
    groups: &[Vec<std::collections::BTreeMap<String, String>>],
) -> Result<Option<Vec<Expr>>, Unsupported> {
    let mut exprs = Vec::with_capacity(groups.len());
    for group in groups {
        let [only] = group.as_slice() else {
            return Ok(None);
        };
        let Some(text) = only.get("expr") else {
            return Ok(None);
        };
        exprs.push(Expr::parse(text).map_err(|e| Unsupported(format!("{text:?}: {e}")))?);
    }
    Ok(Some(exprs))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Str(String),
    Word(String),
    Open,
    Close,
    Comma,
    Hash,
    Not,
    And,
    Or,
}

fn tokenize(text: &str) -> Result<Vec<Token>, Unsupported> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            ',' => tokens.push(Token::Comma),
            '#' => tokens.push(Token::Hash),
            '!' if chars.peek() != Some(&'=') => tokens.push(Token::Not),
            '&' if chars.next_if_eq(&'&').is_some() => tokens.push(Token::And),
            '|' if chars.next_if_eq(&'|').is_some() => tokens.push(Token::Or),
            '"' | '\'' => tokens.push(Token::Str(string(c, &mut chars)?)),
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut word = c.to_string();
                while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
                    word.push(c);
                }
                tokens.push(match word.as_str() {
                    "not" => Token::Not,
                    "and" => Token::And,
                    "or" => Token::Or,
                    _ => Token::Word(word),
                });
            }
            other => return Err(Unsupported(format!("unexpected {other:?}"))),
        }
    }
    Ok(tokens)
}

/// The rest of a quoted string, with expr-lang's common escapes.
fn string(
    quote: char,
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Result<String, Unsupported> {
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            c if c == quote => return Ok(out),
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(c @ ('\\' | '"' | '\'')) => out.push(c),
                other => return Err(Unsupported(format!("escape \\{other:?}"))),
            },
            c => out.push(c),
        }
    }
    Err(Unsupported("an unterminated string".into()))
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn expect(&mut self, want: &Token) -> Result<(), Unsupported> {
        match self.next() {
            Some(ref got) if got == want => Ok(()),
            got => Err(Unsupported(format!("expected {want:?}, found {got:?}"))),
        }
    }

    fn or(&mut self) -> Result<Expr, Unsupported> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, Unsupported> {
        let mut left = self.unary()?;
        while self.peek() == Some(&Token::And) {
            self.at += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, Unsupported> {
        if self.peek() == Some(&Token::Not) {
            self.at += 1;
            // expr-lang binds `!` tighter than `in`: `!"x" in classes` is not `!("x" in classes)`.
            if matches!(self.peek(), Some(Token::Str(_))) {
                return Err(Unsupported(
                    "`!` before a bare `in`: add parentheses".into(),
                ));
            }
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, Unsupported> {
        match self.next() {
            Some(Token::Open) => {
                let inner = self.or()?;
                self.expect(&Token::Close)?;
                Ok(inner)
            }
            Some(Token::Str(name)) => {
                self.expect(&Token::Word("in".into()))?;
                self.expect(&Token::Word("classes".into()))?;
                Ok(Expr::InClasses(name))
            }
            Some(Token::Word(word)) => match word.as_str() {
                "true" => Ok(Expr::Bool(true)),
                "false" => Ok(Expr::Bool(false)),
                "with" => {
                    self.expect(&Token::Open)?;
                    let query = self.string()?;
                    self.expect(&Token::Close)?;
                    Ok(Expr::With(query))
                }
                "any" => {
                    self.expect(&Token::Open)?;
                    self.expect(&Token::Word("classes".into()))?;
                    self.expect(&Token::Comma)?;
                    self.expect(&Token::Hash)?;
                    self.expect(&Token::Word("matches".into()))?;
                    let pattern = self.string()?;
                    self.expect(&Token::Close)?;
                    Ok(Expr::ClassMatches(pattern))
                }
                other => Err(Unsupported(format!("{other} is not supported here"))),
            },
            other => Err(Unsupported(format!("unexpected {other:?}"))),
        }
    }

    fn string(&mut self) -> Result<String, Unsupported> {
        match self.next() {
            Some(Token::Str(s)) => Ok(s),
            other => Err(Unsupported(format!("expected a string, found {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn node_matches(text: &str) -> bool {
        let facts = json!({"country": "uk", "cpus": 8});
        let classes = ["base".to_string(), "role::web".to_string()];
        let agents = ["rpcutil".to_string()];
        let view = NodeView {
            identity: "n1",
            facts: &facts,
            classes: &classes,
            agents: &agents,
        };
        Expr::parse(text).unwrap().eval(&view)
    }

    #[test]
    fn the_subset_reads_and_evaluates() {
        assert!(node_matches(r#"with("country=uk")"#));
        assert!(node_matches(
            r#"with('cpus>=4') and not with("country=de")"#
        ));
        assert!(node_matches(
            r#"!with("cpus<4") && ("role::web" in classes)"#
        ));
        assert!(!node_matches(r#"("web" in classes)"#), "exact class only");
        assert!(node_matches(r#"any(classes, # matches "^role::")"#));
        assert!(
            !node_matches(r#"any(classes, # matches "^ROLE")"#),
            "case-sensitive"
        );
        assert!(
            node_matches(r#"with("rpcutil")"#),
            "with() falls back to agents"
        );
        assert!(node_matches("false || true && true"));
        assert!(!node_matches("(false || true) && false"));
    }

    #[test]
    fn anything_else_is_unsupported() {
        for text in [
            r#"fact("country") == "uk""#,
            r#"with("a") &&"#,
            r#"!"web" in classes"#,
            r#"include(agents, "rpcutil")"#,
            r#"with("unterminated)"#,
            "",
        ] {
            assert!(Expr::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn printing_reads_back_the_same() {
        let text = r#"!(with("a=\"b\"") || "x" in classes) && any(classes, # matches "^r\\d")"#;
        let expr = Expr::parse(text).unwrap();
        assert_eq!(Expr::parse(&expr.to_expr_lang()).unwrap(), expr);
    }

    #[test]
    fn groups_count_as_go_choria_counts_them() {
        let group = |e: &str| vec![BTreeMap::from([("expr".to_string(), e.to_string())])];
        let facts = json!({});
        let view = NodeView {
            identity: "n1",
            facts: &facts,
            classes: &[],
            agents: &[],
        };
        let check = |groups: Vec<Vec<BTreeMap<String, String>>>| matches(&groups, &view);
        assert_eq!(check(vec![group("true")]), Ok(true));
        assert_eq!(check(vec![group("true"), group("false")]), Ok(false));
        // Quirk: two of three is a majority, and go-choria passes it.
        let three = vec![group("true"), group("true"), group("false")];
        assert_eq!(check(three), Ok(true));
        assert_eq!(check(vec![vec![]]), Ok(false));
        assert!(check(vec![group("semver(\"1\", \">1\")")]).is_err());
    }
}
