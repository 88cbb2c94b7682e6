//! Fact filters: gjson-style lookup and go-choria's per-type operator semantics.

mod path;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;

use regex::Regex;
use serde_json::{Number, Value};

use self::path::Found;
use crate::gostd;
use crate::wire::choria_v1::{FactFilter, FactOperator};

/// Why one fact condition could not be evaluated; go-choria then treats the filter as unmatched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactError {
    /// The fact path uses gjson syntax fedgate does not evaluate (queries, modifiers, pipes).
    #[error("fact path {0:?} uses gjson syntax that is not supported")]
    UnsupportedPath(String),
    /// The operator cannot order a fact of this gjson type.
    #[error("do not know how to evaluate data of type {kind} with {operator}")]
    NotComparable {
        /// gjson's name for the fact's type: `Null`, `False`, `True` or `JSON`.
        kind: &'static str,
        /// The ordering operator that was asked for.
        operator: FactOperator,
    },
    /// The value is not a number in the form the numeric fact needs.
    #[error("invalid number {0:?}")]
    InvalidNumber(String),
    /// The `=~` value does not compile as a regular expression.
    #[error("invalid regular expression {pattern:?}: {reason}")]
    InvalidRegex {
        /// The pattern as compiled, with slashes trimmed and `(?i)` added.
        pattern: String,
        /// The compiler's message.
        reason: String,
    },
}

/// Looks up a fact with gjson-style dotted paths (`a.b`, array index `a.0`, `\.` escapes a dot).
pub fn lookup<'v>(facts: &'v Value, path: &str) -> Option<&'v Value> {
    match path::resolve(facts, path) {
        Ok(Some(Found::Value(value))) => Some(value),
        _ => None,
    }
}

/// Evaluates one fact condition against a node's facts; Err when go-choria would error (then the match is false).
pub fn match_fact(filter: &FactFilter, facts: &Value) -> Result<bool, FactError> {
    let found = path::resolve(facts, &filter.fact)
        .map_err(|_| FactError::UnsupportedPath(filter.fact.clone()))?;
    // A missing fact never matches, whatever the operator (`!=` included).
    let Some(found) = found else {
        return Ok(false);
    };
    let fact = Fact::from(found);
    let value = filter.value.as_str();
    match filter.operator {
        FactOperator::Eq => fact.equals(value),
        FactOperator::Ne => fact.differs(value),
        FactOperator::Match => fact.regex_matches(value),
        ordering => fact.orders(ordering, value),
    }
}

/// All conditions must hold; any error means no match (go-choria MatchFacts).
pub fn match_facts(filters: &[FactFilter], facts: &Value) -> bool {
    for filter in filters {
        match match_fact(filter, facts) {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(fact = %filter.fact, "fact filter did not match");
                return false;
            }
            Err(err) => {
                tracing::warn!(fact = %filter.fact, error = %err, "failed to match fact");
                return false;
            }
        }
    }
    // Quirk: go-choria starts from "not matched", so an empty list matches nothing.
    !filters.is_empty()
}

/// A looked-up fact as gjson types it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fact<'v> {
    Null,
    False,
    True,
    /// gjson's `Float()` and `Int()` views of a number.
    Number {
        float: f64,
        int: i64,
    },
    Str(&'v str),
    /// An object or array.
    Json,
}

impl<'v> From<Found<'v>> for Fact<'v> {
    fn from(found: Found<'v>) -> Self {
        match found {
            Found::Value(Value::Null) => Fact::Null,
            Found::Value(Value::Bool(false)) => Fact::False,
            Found::Value(Value::Bool(true)) => Fact::True,
            Found::Value(Value::Number(n)) => Fact::Number {
                float: n.as_f64().unwrap_or(f64::NAN),
                int: gjson_int(n),
            },
            Found::Value(Value::String(s)) => Fact::Str(s),
            Found::Value(Value::Array(_) | Value::Object(_)) | Found::Projection => Fact::Json,
            Found::Count(n) => Fact::Number {
                float: n as f64,
                int: i64::try_from(n).unwrap_or(i64::MAX),
            },
        }
    }
}

impl Fact<'_> {
    /// gjson's name for the type, as go-choria's errors print it.
    fn kind(self) -> &'static str {
        match self {
            Fact::Null => "Null",
            Fact::False => "False",
            Fact::True => "True",
            Fact::Number { .. } => "Number",
            Fact::Str(_) => "String",
            Fact::Json => "JSON",
        }
    }

    /// `==` (go-choria `eqMatch`).
    fn equals(self, value: &str) -> Result<bool, FactError> {
        Ok(match self {
            // Quirk: strings compare case-insensitively.
            Fact::Str(s) => gostd::equal_fold(s, value),
            Fact::Number { float, int } => return number_equals(float, int, value),
            // Quirk: not lowercased here (unlike `!=`), so `tRuE` is not true.
            Fact::True => gostd::truthy(value),
            // Quirk: anything that is not a true spelling equals false, `bob` included.
            Fact::False => !gostd::truthy(value),
            Fact::Null | Fact::Json => false,
        })
    }

    /// `!=` (go-choria `neMatch`).
    fn differs(self, value: &str) -> Result<bool, FactError> {
        Ok(match self {
            Fact::Str(s) => !gostd::equal_fold(s, value),
            Fact::Number { float, int } => return number_equals(float, int, value).map(|eq| !eq),
            // Quirk: the same test for both booleans, so on a false fact `!=` behaves like
            // `==`: `false != false` holds and `false != true` does not.
            Fact::True | Fact::False => !gostd::truthy(&gostd::to_lower(value)),
            // Quirk: null and structured facts are never different either.
            Fact::Null | Fact::Json => false,
        })
    }

    /// `=~` (go-choria `reMatch`).
    fn regex_matches(self, value: &str) -> Result<bool, FactError> {
        match self {
            Fact::Str(s) => regex_match(s, value),
            // Quirk: a value with a '.' matches against the number printed as `%.4f`, otherwise
            // against its truncated integer.
            Fact::Number { float, .. } if value.contains('.') => {
                regex_match(&format!("{float:.4}"), value)
            }
            Fact::Number { int, .. } => regex_match(&int.to_string(), value),
            // Quirk: booleans ignore regex syntax; the lowercased value must spell a boolean,
            // so `/true/` never matches while `TRUE` does.
            Fact::True => Ok(gostd::truthy(&gostd::to_lower(value))),
            Fact::False => Ok(!gostd::truthy(&gostd::to_lower(value))),
            Fact::Null | Fact::Json => Ok(false),
        }
    }

    /// `<`, `<=`, `>`, `>=` (go-choria `ltMatch`, `leMatch`, `gtMatch`, `geMatch`).
    fn orders(self, operator: FactOperator, value: &str) -> Result<bool, FactError> {
        match self {
            // Quirk: strings order by bytes after lowercasing both sides.
            Fact::Str(s) => Ok(holds(
                operator,
                gostd::to_lower(s).cmp(&gostd::to_lower(value)),
            )),
            Fact::Number { float, .. } if value.contains('.') => {
                let wanted = parse_float(value)?;
                // Quirk: gtMatch compares floats with `>=`.
                let operator = match operator {
                    FactOperator::Gt => FactOperator::Ge,
                    other => other,
                };
                Ok(float
                    .partial_cmp(&wanted)
                    .is_some_and(|o| holds(operator, o)))
            }
            Fact::Number { int, .. } => {
                let wanted = gostd::atoi(value).ok_or_else(|| invalid_number(value))?;
                Ok(holds(operator, int.cmp(&wanted)))
            }
            other => Err(FactError::NotComparable {
                kind: other.kind(),
                operator,
            }),
        }
    }
}

/// Numeric `==`: as a float when the value has a '.', otherwise as text.
fn number_equals(float: f64, int: i64, value: &str) -> Result<bool, FactError> {
    if value.contains('.') {
        Ok(float == parse_float(value)?)
    } else {
        // Quirk: compares the decimal text of the truncated fact, so `2.7 == 2` holds and
        // `2 == 02` or `2 == +2` does not; a non-number value is simply unequal.
        Ok(int.to_string() == value)
    }
}

/// Whether `ordering` (fact compared with value) satisfies an ordering operator.
fn holds(operator: FactOperator, ordering: Ordering) -> bool {
    match operator {
        FactOperator::Lt => ordering.is_lt(),
        FactOperator::Le => ordering.is_le(),
        FactOperator::Gt => ordering.is_gt(),
        FactOperator::Ge => ordering.is_ge(),
        FactOperator::Eq => ordering.is_eq(),
        FactOperator::Ne => ordering.is_ne(),
        FactOperator::Match => false,
    }
}

/// go-choria `regexMatch`: every leading and trailing '/' trimmed, matched ignoring case.
fn regex_match(text: &str, value: &str) -> Result<bool, FactError> {
    let pattern = format!(
        "(?i){}",
        value.trim_start_matches('/').trim_end_matches('/')
    );
    match Regex::new(&pattern) {
        Ok(re) => Ok(re.is_match(text)),
        Err(err) => Err(FactError::InvalidRegex {
            pattern,
            reason: err.to_string(),
        }),
    }
}

/// `strconv.ParseFloat`, failing as go-choria does.
fn parse_float(value: &str) -> Result<f64, FactError> {
    gostd::parse_float(value).ok_or_else(|| invalid_number(value))
}

/// The error for a value that is not the number a numeric fact needs.
fn invalid_number(value: &str) -> FactError {
    FactError::InvalidNumber(value.to_string())
}

/// gjson `Result.Int()` for a number: truncate within ±2^53, else the exact integer literal,
/// else Go's float-to-int conversion.
fn gjson_int(n: &Number) -> i64 {
    const SAFE: f64 = 9_007_199_254_740_991.0;
    let float = n.as_f64().unwrap_or(f64::NAN);
    if (-SAFE..=SAFE).contains(&float) {
        return float as i64;
    }
    if let Some(int) = n.as_i64() {
        return int;
    }
    if let Some(unsigned) = n.as_u64() {
        // gjson's parseInt overflows silently, wrapping like a two's-complement cast.
        return unsigned as i64;
    }
    // Go on amd64 turns out-of-range floats into i64::MIN; Rust's `as` would saturate.
    let bound = -(i64::MIN as f64);
    if (-bound..bound).contains(&float) {
        float as i64
    } else {
        i64::MIN
    }
}
