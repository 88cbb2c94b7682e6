//! One Choria JSON agent DDL read into checkable form, as go-choria's `encoding/json` reads it:
//! unknown fields ignored, `null` as absent, field names matched case-insensitively.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::goregex;
use super::validate::{InputSpec, InputType, Validation};
use super::{ActionDdl, AgentDdl, MAX_ACTIONS, MAX_INPUTS};

/// What is wrong inside one DDL document; the loader adds the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SchemaError {
    /// Where in the document, as `actions[2].input.service.validation`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> SchemaError {
    SchemaError {
        path: path.into(),
        message: message.into(),
    }
}

/// Parses a DDL document's text.
pub fn parse(text: &str) -> Result<AgentDdl, SchemaError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| err("$", e.to_string()))?;
    let root = object(&doc, "$")?;
    let metadata = object(required(root, "metadata", "$")?, "metadata")?;
    let name = string(metadata, "name", "metadata")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| err("metadata.name", "missing"))?;
    let timeout = integer(metadata, "timeout", "metadata")?.unwrap_or(0);
    let actions = match field(root, "actions", "$")? {
        None => &[][..],
        Some(Value::Array(items)) => items.as_slice(),
        Some(_) => return Err(err("actions", "not an array")),
    };
    if actions.len() > MAX_ACTIONS {
        return Err(err("actions", format!("more than {MAX_ACTIONS} actions")));
    }
    let mut parsed = BTreeMap::new();
    for (i, action) in actions.iter().enumerate() {
        let at = format!("actions[{i}]");
        let (action_name, ddl) = parse_action(action, &at)?;
        if parsed.insert(action_name.clone(), ddl).is_some() {
            return Err(err(at, format!("action {action_name} is declared twice")));
        }
    }
    Ok(AgentDdl {
        name,
        timeout_seconds: u64::try_from(timeout).unwrap_or(0),
        actions: parsed,
    })
}

fn parse_action(action: &Value, at: &str) -> Result<(String, ActionDdl), SchemaError> {
    let action = object(action, at)?;
    let name = string(action, "action", at)?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| err(format!("{at}.action"), "missing"))?;
    let inputs = match field(action, "input", at)? {
        None => Map::new(),
        Some(Value::Object(inputs)) => inputs.clone(),
        Some(_) => return Err(err(format!("{at}.input"), "not an object")),
    };
    if inputs.len() > MAX_INPUTS {
        return Err(err(
            format!("{at}.input"),
            format!("more than {MAX_INPUTS} inputs"),
        ));
    }
    let mut specs = BTreeMap::new();
    for (input, spec) in &inputs {
        let path = format!("{at}.input.{input}");
        specs.insert(input.clone(), parse_input(spec, &path)?);
    }
    Ok((name, ActionDdl { inputs: specs }))
}

fn parse_input(spec: &Value, at: &str) -> Result<InputSpec, SchemaError> {
    let spec = object(spec, at)?;
    let kind = InputType::parse(&string(spec, "type", at)?.unwrap_or_default());
    let optional = match field(spec, "optional", at)? {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(err(format!("{at}.optional"), "not a boolean")),
    };
    let maxlength = integer(spec, "maxlength", at)?.unwrap_or(0);
    let maxlength =
        usize::try_from(maxlength).map_err(|_| err(format!("{at}.maxlength"), "is negative"))?;
    let list = match field(spec, "list", at)? {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| err(format!("{at}.list"), "not a list of strings"))?,
        Some(_) => return Err(err(format!("{at}.list"), "not a list of strings")),
    };
    let validation = match string(spec, "validation", at)? {
        None => Validation::None,
        Some(v) => validation(&v, &format!("{at}.validation"))?,
    };
    let default = field(spec, "default", at)?.cloned();
    Ok(InputSpec {
        kind,
        optional,
        maxlength,
        validation,
        list,
        default,
    })
}

/// go-choria's reading of `validation`: four named validators, other names starting with a
/// lowercase letter are unsupported (ignored), everything else is a regular expression.
fn validation(text: &str, at: &str) -> Result<Validation, SchemaError> {
    Ok(match text {
        "" => Validation::None,
        "shellsafe" => Validation::ShellSafe,
        "ipv4address" => Validation::Ipv4,
        "ipv6address" => Validation::Ipv6,
        "ipaddress" => Validation::IpAddress,
        named if named.starts_with(|c: char| c.is_ascii_lowercase()) => {
            Validation::Unsupported(named.to_string())
        }
        pattern => Validation::Regex {
            source: pattern.to_string(),
            regex: goregex::compile(pattern)
                .map_err(|e| err(at, format!("invalid regex {pattern:?}: {e}")))?,
        },
    })
}

/// The value of `key`, matched as Go does (exact, else ASCII case-insensitively); `null` is
/// absent, and two different spellings of one field are refused.
fn field<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<&'a Value>, SchemaError> {
    let mut spellings = obj.iter().filter(|(k, _)| k.eq_ignore_ascii_case(key));
    let found = spellings.next();
    if spellings.next().is_some() {
        return Err(err(format!("{at}.{key}"), "is spelled more than one way"));
    }
    Ok(found.map(|(_, v)| v).filter(|v| !v.is_null()))
}

fn required<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<&'a Value, SchemaError> {
    field(obj, key, at)?.ok_or_else(|| err(format!("{at}.{key}"), "missing"))
}

fn object<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>, SchemaError> {
    value.as_object().ok_or_else(|| err(at, "not an object"))
}

fn string(obj: &Map<String, Value>, key: &str, at: &str) -> Result<Option<String>, SchemaError> {
    match field(obj, key, at)? {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(err(format!("{at}.{key}"), "not a string")),
    }
}

/// An integer as Go's `int` field takes it: an integer literal, not `1.0`.
fn integer(obj: &Map<String, Value>, key: &str, at: &str) -> Result<Option<i64>, SchemaError> {
    match field(obj, key, at)? {
        None => Ok(None),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        Some(_) => Err(err(format!("{at}.{key}"), "not an integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ddl(input: &str) -> String {
        format!(
            r#"{{"metadata":{{"name":"pkg","timeout":5}},"actions":[{{"action":"install","input":{{"package":{input}}}}}]}}"#
        )
    }

    #[test]
    fn inputs_are_read_as_go_reads_them() {
        let agent = parse(&ddl(
            r#"{"Type":"list","OPTIONAL":true,"list":["a"],"maxlength":null,"prompt":"x"}"#,
        ))
        .unwrap();
        assert_eq!((agent.name.as_str(), agent.timeout_seconds), ("pkg", 5));
        let spec = &agent.actions["install"].inputs["package"];
        assert_eq!(spec.kind, InputType::List);
        assert!(spec.optional);
        assert_eq!((spec.maxlength, spec.list.len()), (0, 1));
    }

    #[test]
    fn named_validators_and_regexes_are_told_apart() {
        let named = |v: &str| {
            let agent = parse(&ddl(&format!(r#"{{"type":"string","validation":"{v}"}}"#)))?;
            Ok::<_, SchemaError>(
                agent.actions["install"].inputs["package"]
                    .validation
                    .clone(),
            )
        };
        assert!(matches!(named("shellsafe"), Ok(Validation::ShellSafe)));
        assert!(matches!(named("ipaddress"), Ok(Validation::IpAddress)));
        assert!(matches!(named("bool"), Ok(Validation::Unsupported(n)) if n == "bool"));
        assert!(matches!(named("^[a-z]+$"), Ok(Validation::Regex { .. })));
        let bad = named("^([a-z]+$").unwrap_err();
        assert_eq!(bad.path, "actions[0].input.package.validation");
        assert!(bad.message.contains("invalid regex"), "{bad}");
    }

    #[test]
    fn malformed_documents_name_the_place() {
        let cases = [
            ("{", "$"),
            (r#"{"actions":[]}"#, "$.metadata"),
            (r#"{"metadata":{}}"#, "metadata.name"),
            (
                r#"{"metadata":{"name":"a"},"actions":[{"action":"x"},{"action":"x"}]}"#,
                "actions[1]",
            ),
            (
                &ddl(r#"{"type":"string","maxlength":1.5}"#),
                "actions[0].input.package.maxlength",
            ),
            (
                &ddl(r#"{"type":"string","maxlength":-1}"#),
                "actions[0].input.package.maxlength",
            ),
            (
                &ddl(r#"{"type":"string","optional":"yes"}"#),
                "actions[0].input.package.optional",
            ),
            (
                &ddl(r#"{"type":"list","list":[1]}"#),
                "actions[0].input.package.list",
            ),
            (
                &ddl(r#"{"type":"string","Type":"integer"}"#),
                "actions[0].input.package.type",
            ),
            (&ddl("null"), "actions[0].input.package"),
        ];
        for (text, path) in cases {
            assert_eq!(parse(text).unwrap_err().path, path, "{text}");
        }
    }

    #[test]
    fn actions_and_inputs_are_bounded() {
        let actions: Vec<String> = (0..=MAX_ACTIONS)
            .map(|i| format!(r#"{{"action":"a{i}"}}"#))
            .collect();
        let text = format!(
            r#"{{"metadata":{{"name":"big"}},"actions":[{}]}}"#,
            actions.join(",")
        );
        assert_eq!(parse(&text).unwrap_err().path, "actions");
        let inputs: Vec<String> = (0..=MAX_INPUTS)
            .map(|i| format!(r#""i{i}":{{"type":"string"}}"#))
            .collect();
        let text = format!(
            r#"{{"metadata":{{"name":"big"}},"actions":[{{"action":"a","input":{{{}}}}}]}}"#,
            inputs.join(",")
        );
        assert_eq!(parse(&text).unwrap_err().path, "actions[0].input");
    }
}
