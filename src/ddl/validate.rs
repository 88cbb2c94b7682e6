//! One action's inputs checked as go-choria's mcorpc DDL does (`ValidateRequestData`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use regex::Regex;
use serde_json::{Map, Value};

/// The key the Ruby client adds to every request; go-choria drops it before validating.
const PROCESS_RESULTS: &str = "process_results";

/// An input's declared `type`, as go-choria reads it (case-insensitive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputType {
    /// `integer` or `int`: a whole JSON number within Go's `int`.
    Integer,
    /// `number`: any JSON number.
    Number,
    /// `float`: any JSON number (Go decodes every number as a float64).
    Float,
    /// `string`: a JSON string, then `maxlength` and `validation`.
    String,
    /// `boolean`: `true` or `false`.
    Boolean,
    /// `list`: a string among the input's `list` items.
    List,
    /// `hash`: a JSON object.
    Hash,
    /// `array`: a JSON array.
    Array,
    /// Any other type, `any` and an empty type included: go-choria refuses every value.
    Unsupported(String),
}

impl InputType {
    /// Reads a DDL `type` the way go-choria's switch over `strings.ToLower(type)` does.
    pub fn parse(declared: &str) -> InputType {
        match declared.to_ascii_lowercase().as_str() {
            "integer" | "int" => InputType::Integer,
            "number" => InputType::Number,
            "float" => InputType::Float,
            "string" => InputType::String,
            "boolean" => InputType::Boolean,
            "list" => InputType::List,
            "hash" => InputType::Hash,
            "array" => InputType::Array,
            _ => InputType::Unsupported(declared.to_string()),
        }
    }
}

/// A string input's `validation`, compiled once when the DDL loads.
#[derive(Clone, Debug)]
pub enum Validation {
    /// No `validation`.
    None,
    /// `shellsafe`: none of `` ` `` `$` `;` `|` `&&` `>` `<`.
    ShellSafe,
    /// `ipv4address`, as Go's `net.ParseIP(v).To4()`.
    Ipv4,
    /// `ipv6address`: an IP address that is not IPv4 (nor IPv4-mapped).
    Ipv6,
    /// `ipaddress`: either.
    IpAddress,
    /// A name go-choria does not know (starts with `a`-`z`): it warns and lets every value pass.
    Unsupported(String),
    /// A regular expression, searched (not anchored) as Go's `regexp.MatchString`.
    Regex {
        /// The expression as the DDL spells it, for messages.
        source: String,
        /// The compiled expression.
        regex: Regex,
    },
}

/// One declared input of an action.
#[derive(Clone, Debug)]
pub struct InputSpec {
    /// The declared type.
    pub kind: InputType,
    /// False when the request must carry the input.
    pub optional: bool,
    /// Longest string in bytes; 0 means no limit, and then go-choria skips `validation` too.
    pub maxlength: usize,
    /// The string validation.
    pub validation: Validation,
    /// The allowed values of a `list` input.
    pub list: Vec<String>,
    /// The declared default; go-choria's server does not apply it to a missing required input.
    pub default: Option<Value>,
}

/// Why one input was refused; the text follows go-choria's wording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A required input is absent.
    Missing,
    /// The action declares no inputs, yet the request has some.
    NoneDeclared,
    /// The input is not declared; the declared names follow.
    Undeclared(Vec<String>),
    /// The value is not of the declared type (`"an integer"`, `"a hash map"`, …).
    WrongType(&'static str),
    /// A string over `maxlength` bytes.
    TooLong(usize),
    /// A `list` value outside its items.
    NotInList(Vec<String>),
    /// A `list` input whose DDL declares no items.
    EmptyList,
    /// The declared type is not one go-choria knows.
    UnsupportedType(String),
    /// The string failed its `validation`; go-choria's reason.
    Failed(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing => f.write_str("is required"),
            Problem::NoneDeclared => f.write_str("is given while the action declares no inputs"),
            Problem::Undeclared(valid) => {
                write!(f, "is not declared; valid inputs are: {}", valid.join(", "))
            }
            Problem::WrongType(what) => write!(f, "is not {what}"),
            Problem::TooLong(max) => write!(f, "is longer than {max} characters"),
            Problem::NotInList(items) => write!(f, "should be one of {}", items.join(", ")),
            Problem::EmptyList => f.write_str("is a list without items in the DDL"),
            Problem::UnsupportedType(kind) => write!(f, "has unsupported input type '{kind}'"),
            Problem::Failed(reason) => write!(f, "fails its validation: {reason}"),
        }
    }
}

impl Problem {
    /// go-choria's sentence for this problem with input `input`, as `ValidateRequestData` words it.
    pub fn choria_sentence(&self, input: &str) -> String {
        match self {
            Problem::Missing => format!("input '{input}' is required"),
            Problem::NoneDeclared => {
                "request contains inputs while none are declared in the DDL".to_string()
            }
            Problem::Undeclared(valid) => format!(
                "request contains an input '{input}' that is not declared in the DDL. Valid inputs are: {}",
                valid.join(", ")
            ),
            Problem::EmptyList => format!(
                "validation failed for input '{input}': input type of list without a valid list of items in DDL"
            ),
            Problem::Failed(reason) => format!("validation failed for input '{input}': {reason}"),
            Problem::UnsupportedType(kind) => {
                format!("validation failed for input '{input}': unsupported input type '{kind}'")
            }
            other => format!("validation failed for input '{input}': {other}"),
        }
    }
}

/// Checks `data` against an action's inputs in go-choria's order: declared inputs by name
/// (missing, then value), then inputs the action does not declare. The first problem wins.
pub fn check_inputs(
    inputs: &BTreeMap<String, InputSpec>,
    data: &Map<String, Value>,
) -> Result<(), (String, Problem)> {
    for (name, spec) in inputs {
        match data.get(name) {
            None if !spec.optional => return Err((name.clone(), Problem::Missing)),
            None => {}
            Some(value) => check_value(spec, value).map_err(|p| (name.clone(), p))?,
        }
    }
    let mut given = data.keys().filter(|k| k.as_str() != PROCESS_RESULTS);
    if let Some(first) = given.clone().next()
        && inputs.is_empty()
    {
        return Err((first.clone(), Problem::NoneDeclared));
    }
    if let Some(unknown) = given.find(|k| !inputs.contains_key(k.as_str())) {
        let valid = inputs.keys().cloned().collect();
        return Err((unknown.clone(), Problem::Undeclared(valid)));
    }
    Ok(())
}

/// Checks one present value against its declaration (go-choria's `InputItem.ValidateValue`).
pub fn check_value(spec: &InputSpec, value: &Value) -> Result<(), Problem> {
    let number = value.as_f64();
    match &spec.kind {
        InputType::Integer if !number.is_some_and(is_go_int) => {
            Err(Problem::WrongType("an integer"))
        }
        InputType::Number if number.is_none() => Err(Problem::WrongType("a number")),
        InputType::Float if number.is_none() => Err(Problem::WrongType("a float")),
        InputType::Boolean if !value.is_boolean() => Err(Problem::WrongType("a boolean")),
        InputType::Hash if !value.is_object() => Err(Problem::WrongType("a hash map")),
        InputType::Array if !value.is_array() => Err(Problem::WrongType("an array")),
        InputType::String => match value {
            Value::String(text) => check_string(spec, text),
            _ => Err(Problem::WrongType("a string")),
        },
        InputType::List => check_list(&spec.list, value),
        InputType::Unsupported(kind) => Err(Problem::UnsupportedType(kind.clone())),
        _ => Ok(()),
    }
}

/// True when Go's `f == float64(int(f))` holds on amd64: whole, and inside int64's range.
fn is_go_int(f: f64) -> bool {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    f.fract() == 0.0 && (-TWO_63..TWO_63).contains(&f)
}

fn check_string(spec: &InputSpec, text: &str) -> Result<(), Problem> {
    // go-choria returns early without a maxlength, so `validation` is then not applied either.
    if spec.maxlength == 0 {
        return Ok(());
    }
    if text.len() > spec.maxlength {
        return Err(Problem::TooLong(spec.maxlength));
    }
    validate_string(&spec.validation, text).map_err(Problem::Failed)
}

fn check_list(items: &[String], value: &Value) -> Result<(), Problem> {
    if items.is_empty() {
        return Err(Problem::EmptyList);
    }
    let Value::String(text) = value else {
        return Err(Problem::Failed("should be a string".into()));
    };
    if items.iter().any(|item| item == text) {
        Ok(())
    } else {
        Err(Problem::NotInList(items.to_vec()))
    }
}

/// Applies a string validation; the error is go-choria's reason.
pub fn validate_string(validation: &Validation, text: &str) -> Result<(), String> {
    match validation {
        Validation::None | Validation::Unsupported(_) => Ok(()),
        Validation::ShellSafe => shellsafe(text),
        Validation::Ipv4 => match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => Ok(()),
            Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_some() => Ok(()),
            _ => Err(format!("{text} is not an IPv4 address")),
        },
        Validation::Ipv6 => match text.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => Ok(()),
            _ => Err(format!("{text} is not an IPv6 address")),
        },
        Validation::IpAddress => match text.parse::<IpAddr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("{text} is not an IP address")),
        },
        Validation::Regex { source, regex } => {
            if regex.is_match(text) {
                Ok(())
            } else {
                Err(format!("input does not match '{source}'"))
            }
        }
    }
}

/// go-choria's `shellsafe`: the first forbidden sequence found, in its order.
fn shellsafe(text: &str) -> Result<(), String> {
    const BAD: [&str; 7] = ["`", "$", ";", "|", "&&", ">", "<"];
    match BAD.iter().find(|bad| text.contains(**bad)) {
        Some(bad) => Err(format!("may not contain '{bad}'")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(kind: &str) -> InputSpec {
        InputSpec {
            kind: InputType::parse(kind),
            optional: false,
            maxlength: 0,
            validation: Validation::None,
            list: Vec::new(),
            default: None,
        }
    }

    fn string_with(validation: Validation) -> InputSpec {
        InputSpec {
            maxlength: 100,
            validation,
            ..spec("string")
        }
    }

    #[test]
    fn types_follow_go_s_json_numbers() {
        let integer = spec("Integer");
        assert!(check_value(&integer, &json!(3)).is_ok());
        assert!(check_value(&integer, &json!(3.0)).is_ok());
        assert_eq!(
            check_value(&integer, &json!(3.5)),
            Err(Problem::WrongType("an integer"))
        );
        assert!(check_value(&integer, &json!("3")).is_err());
        assert!(check_value(&integer, &json!(i64::MIN)).is_ok());
        // i64::MAX rounds to 2^63 as a float64, which Go's int conversion overflows.
        assert!(check_value(&integer, &json!(i64::MAX)).is_err());
        assert!(check_value(&spec("float"), &json!(1)).is_ok());
        assert!(check_value(&spec("number"), &json!(1.5)).is_ok());
        assert!(check_value(&spec("number"), &json!("1")).is_err());
        assert!(check_value(&spec("boolean"), &json!(true)).is_ok());
        assert!(check_value(&spec("boolean"), &json!("true")).is_err());
        assert!(check_value(&spec("Hash"), &json!({})).is_ok());
        assert!(check_value(&spec("hash"), &json!([])).is_err());
        assert!(check_value(&spec("Array"), &json!([1])).is_ok());
        assert!(check_value(&spec("string"), &json!(1)).is_err());
        assert_eq!(
            check_value(&spec("any"), &json!(1)),
            Err(Problem::UnsupportedType("any".into()))
        );
    }

    #[test]
    fn strings_check_maxlength_in_bytes_then_validation() {
        let shell = string_with(Validation::ShellSafe);
        assert_eq!(
            check_value(&shell, &json!("nginx; rm -rf /")),
            Err(Problem::Failed("may not contain ';'".into()))
        );
        assert!(check_value(&shell, &json!("nginx")).is_ok());
        let short = InputSpec {
            maxlength: 2,
            ..spec("string")
        };
        assert_eq!(check_value(&short, &json!("é!")), Err(Problem::TooLong(2)));
        // Without maxlength go-choria never reaches the validation.
        let unbounded = InputSpec {
            maxlength: 0,
            ..shell
        };
        assert!(check_value(&unbounded, &json!("a;b")).is_ok());
    }

    #[test]
    fn ip_validators_match_go_s_parse_ip() {
        let v4 = string_with(Validation::Ipv4);
        let v6 = string_with(Validation::Ipv6);
        let any = string_with(Validation::IpAddress);
        assert!(check_value(&v4, &json!("192.0.2.1")).is_ok());
        assert!(check_value(&v4, &json!("::ffff:192.0.2.1")).is_ok());
        assert!(check_value(&v4, &json!("2001:db8::1")).is_err());
        assert!(check_value(&v4, &json!("192.0.2.01")).is_err());
        assert!(check_value(&v6, &json!("2001:db8::1")).is_ok());
        assert!(check_value(&v6, &json!("::ffff:192.0.2.1")).is_err());
        assert!(check_value(&v6, &json!("192.0.2.1")).is_err());
        assert!(check_value(&any, &json!("192.0.2.1")).is_ok());
        assert!(check_value(&any, &json!("host")).is_err());
        let unknown = string_with(Validation::Unsupported("bool".into()));
        assert!(check_value(&unknown, &json!("anything")).is_ok());
    }

    #[test]
    fn lists_take_one_of_their_string_items() {
        let list = InputSpec {
            list: vec!["a".into(), "b".into()],
            ..spec("list")
        };
        assert!(check_value(&list, &json!("a")).is_ok());
        assert_eq!(
            check_value(&list, &json!("c")),
            Err(Problem::NotInList(vec!["a".into(), "b".into()]))
        );
        assert!(check_value(&list, &json!(1)).is_err());
        assert_eq!(
            check_value(&spec("list"), &json!("a")),
            Err(Problem::EmptyList)
        );
    }

    #[test]
    fn inputs_are_checked_by_name_then_unknown_ones() {
        let mut inputs = BTreeMap::new();
        inputs.insert("b".to_string(), spec("string"));
        inputs.insert(
            "a".to_string(),
            InputSpec {
                optional: true,
                ..spec("integer")
            },
        );
        let data = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert!(check_inputs(&inputs, &data(json!({"b": "x", "process_results": true}))).is_ok());
        assert_eq!(
            check_inputs(&inputs, &data(json!({"a": "x"}))),
            Err(("a".into(), Problem::WrongType("an integer")))
        );
        assert_eq!(
            check_inputs(&inputs, &data(json!({"z": 1}))),
            Err(("b".into(), Problem::Missing))
        );
        let (name, problem) = check_inputs(&inputs, &data(json!({"b": "x", "z": 1}))).unwrap_err();
        assert_eq!(
            problem.choria_sentence(&name),
            "request contains an input 'z' that is not declared in the DDL. Valid inputs are: a, b"
        );
        let none = BTreeMap::new();
        assert_eq!(
            check_inputs(&none, &data(json!({"z": 1}))),
            Err(("z".into(), Problem::NoneDeclared))
        );
        assert!(check_inputs(&none, &data(json!({"process_results": false}))).is_ok());
    }
}
