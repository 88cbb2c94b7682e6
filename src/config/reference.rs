//! The reference of every configuration key, read from the JSON Schema of the config structs
//! themselves: `docs/configuration.md` holds its Markdown (a test keeps the two equal) and
//! `fedgate config schema` prints the schema for editors.

use serde_json::{Map, Value};

use super::Config;

/// The placeholder for a name the operator chooses (a collective's, a federation's, ...).
pub const NAME: &str = "<name>";

/// Schemas nested deeper than this are not walked (the config has no recursive types).
const MAX_DEPTH: usize = 8;

/// One key of the configuration, as the reference lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyDoc {
    /// Dotted path, `<name>` standing for map keys: `collectives.<name>.tls.certificate`.
    pub path: String,
    /// `string`, `integer`, `boolean`, `array of string`, `table`, or the allowed values.
    pub kind: String,
    /// The default as TOML writes it, `required`, `unset`, or `—` for an optional table.
    pub default: String,
    /// The field's documentation.
    pub meaning: String,
}

/// The JSON Schema (draft 2020-12) of a fedgate config file.
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(Config)).unwrap_or(Value::Null)
}

/// Every key a config file accepts, depth first, keys of a table in alphabetical order.
pub fn keys() -> Vec<KeyDoc> {
    let root = schema();
    let mut walker = Walker {
        defs: root.get("$defs").and_then(Value::as_object),
        out: Vec::new(),
    };
    walker.table("", &root, 0);
    walker.out
}

/// The reference as Markdown: one section and table per top-level key.
pub fn markdown() -> String {
    let mut out = String::new();
    let mut section = String::new();
    for key in keys() {
        let top = top_level(&key.path);
        if top != section {
            section = top.to_string();
            out.push_str(&format!(
                "\n### `[{section}]`\n\n| key | type | default | meaning |\n|---|---|---|---|\n"
            ));
        }
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            key.path,
            cell(&key.kind),
            cell(&key.default),
            cell(&key.meaning)
        ));
    }
    out
}

/// The section a key belongs to: its first segment.
fn top_level(path: &str) -> &str {
    path.split('.').next().unwrap_or(path)
}

/// Text fit for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

struct Walker<'a> {
    defs: Option<&'a Map<String, Value>>,
    out: Vec<KeyDoc>,
}

impl<'a> Walker<'a> {
    /// `node` with `$ref` followed and an `Option`'s null branch dropped.
    fn resolve(&self, node: &'a Value) -> &'a Value {
        let mut node = node;
        for _ in 0..MAX_DEPTH {
            if let Some(name) = node
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/$defs/"))
                && let Some(def) = self.defs.and_then(|d| d.get(name))
            {
                node = def;
                continue;
            }
            let branches = node
                .get("anyOf")
                .or_else(|| node.get("oneOf"))
                .and_then(Value::as_array);
            if let Some(branches) = branches {
                let real: Vec<&Value> = branches.iter().filter(|b| !is_null(b)).collect();
                if let [one] = real[..] {
                    node = one;
                    continue;
                }
            }
            break;
        }
        node
    }

    /// Lists the properties of a table at `prefix`.
    fn table(&mut self, prefix: &str, node: &'a Value, depth: usize) {
        let node = self.resolve(node);
        let Some(properties) = node.get("properties").and_then(Value::as_object) else {
            return;
        };
        let required: Vec<&str> = node
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (name, property) in properties {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            self.key(path, property, required.contains(&name.as_str()), depth);
        }
    }

    /// Lists one key and whatever lies under it.
    fn key(&mut self, path: String, property: &'a Value, required: bool, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let target = self.resolve(property);
        let default = match property.get("default") {
            _ if required => "required".to_string(),
            Some(Value::Null) => "unset".to_string(),
            Some(value) => format!("`{}`", toml_value(value)),
            None => "—".to_string(),
        };
        let meaning = property
            .get("description")
            .or_else(|| target.get("description"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        self.out.push(KeyDoc {
            path: path.clone(),
            kind: self.kind(property),
            default,
            meaning,
        });
        if target.get("properties").is_some() {
            self.table(&path, target, depth + 1);
        } else if let Some(entry) = map_value(target) {
            let entry_path = format!("{path}.{NAME}");
            let resolved = self.resolve(entry);
            let meaning = entry
                .get("description")
                .or_else(|| resolved.get("description"))
                .and_then(Value::as_str)
                .unwrap_or("one entry per name")
                .to_string();
            self.out.push(KeyDoc {
                path: entry_path.clone(),
                kind: self.kind(entry),
                default: "—".to_string(),
                meaning,
            });
            self.table(&entry_path, entry, depth + 1);
        }
    }

    /// The type of a key as the reference names it.
    fn kind(&self, node: &'a Value) -> String {
        let node = self.resolve(node);
        if let Some(values) = enum_values(node) {
            return values
                .iter()
                .map(|v| format!("`{v:?}`"))
                .collect::<Vec<_>>()
                .join(" | ");
        }
        if node.get("properties").is_some() {
            return "table".to_string();
        }
        if let Some(entry) = map_value(node) {
            let inner = self.kind(entry);
            return if inner == "table" {
                "tables by name".to_string()
            } else {
                format!("table of {inner}")
            };
        }
        match type_name(node) {
            Some("array") => {
                let items = node
                    .get("items")
                    .map_or("any".to_string(), |i| self.kind(i));
                format!("array of {items}")
            }
            Some(other) => other.to_string(),
            None => "any".to_string(),
        }
    }
}

/// The schema of a map's values, when `node` is a map (`additionalProperties` a schema).
fn map_value(node: &Value) -> Option<&Value> {
    node.get("additionalProperties").filter(|a| a.is_object())
}

/// The JSON type, without `null` (an `Option`).
fn type_name(node: &Value) -> Option<&str> {
    match node.get("type")? {
        Value::String(name) => Some(name),
        Value::Array(names) => names
            .iter()
            .filter_map(Value::as_str)
            .find(|n| *n != "null"),
        _ => None,
    }
}

fn is_null(node: &Value) -> bool {
    node.get("type").and_then(Value::as_str) == Some("null")
}

/// The values of a string enum: `enum: [...]`, or `oneOf` of `const`s (variants with docs).
fn enum_values(node: &Value) -> Option<Vec<String>> {
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect();
    }
    let branches = node.get("oneOf").and_then(Value::as_array)?;
    branches
        .iter()
        .map(|b| b.get("const").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// A default as TOML would write it.
fn toml_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) if map.is_empty() => "{}".to_string(),
        other => other.to_string(),
    }
}
