//! Legacy MCollective 2.x messages as the `ssl` security plugin writes them, in either of its
//! serializers: Ruby Marshal 4.8 ([`marshal`]) or Psych YAML ([`yaml`]). Both decode to the same
//! [`Ruby`] values; [`envelope`] reads and builds the request and reply envelopes on top.

pub mod envelope;
pub mod marshal;
pub mod yaml;

use std::fmt;

/// Which serializer a legacy collective uses (`plugin.ssl_serializer`); peers never negotiate it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Serializer {
    /// Ruby Marshal 4.8, MCollective's default.
    Marshal,
    /// Psych YAML.
    Yaml,
}

impl Serializer {
    /// Reads a document.
    pub fn decode(self, bytes: &[u8]) -> Result<Ruby, LegacyError> {
        match self {
            Serializer::Marshal => marshal::decode(bytes),
            Serializer::Yaml => yaml::decode(bytes),
        }
    }

    /// Writes a document.
    pub fn encode(self, value: &Ruby) -> Vec<u8> {
        match self {
            Serializer::Marshal => marshal::encode(value),
            Serializer::Yaml => yaml::encode(value).into_bytes(),
        }
    }

    /// The serializer that wrote `bytes`: Marshal when they start with its major version byte
    /// 4 (its header is `04 08`), YAML otherwise. Peers never say which; the first byte does.
    pub fn sniff(bytes: &[u8]) -> Serializer {
        match bytes.first() {
            Some(4) => Serializer::Marshal,
            _ => Serializer::Yaml,
        }
    }

    /// The name in MCollective's config.
    pub fn as_str(self) -> &'static str {
        match self {
            Serializer::Marshal => "marshal",
            Serializer::Yaml => "yaml",
        }
    }
}

/// A Ruby value of the kinds MCollective messages hold.
#[derive(Clone, Debug, PartialEq)]
pub enum Ruby {
    /// `nil`.
    Nil,
    /// `true` or `false`.
    Bool(bool),
    /// An Integer.
    Int(i64),
    /// A Float.
    Float(f64),
    /// A String with a text encoding.
    Str(String),
    /// A binary String (ASCII-8BIT), such as the signed `:body` in Marshal.
    Bytes(Vec<u8>),
    /// A Symbol.
    Symbol(String),
    /// An Array.
    Array(Vec<Ruby>),
    /// A Hash, in insertion order.
    Hash(Vec<(Ruby, Ruby)>),
}

impl Ruby {
    /// A symbol.
    pub fn sym(name: &str) -> Ruby {
        Ruby::Symbol(name.to_string())
    }

    /// A string.
    pub fn str(text: &str) -> Ruby {
        Ruby::Str(text.to_string())
    }

    /// The value under symbol key `:name`, or else string key `"name"` (MCollective reads both).
    pub fn get(&self, name: &str) -> Option<&Ruby> {
        let Ruby::Hash(pairs) = self else {
            return None;
        };
        let by = |want: &dyn Fn(&Ruby) -> bool| pairs.iter().find(|(k, _)| want(k)).map(|p| &p.1);
        by(&|k| matches!(k, Ruby::Symbol(s) if s == name))
            .or_else(|| by(&|k| matches!(k, Ruby::Str(s) if s == name)))
    }

    /// Text: a String, or a binary String that is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Ruby::Str(s) => Some(s),
            Ruby::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The bytes of a String of either kind.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Ruby::Str(s) => Some(s.as_bytes()),
            Ruby::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// An Integer.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Ruby::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// What this tree costs to hold: one per value plus the bytes of its strings and symbols.
    pub fn weight(&self) -> usize {
        1 + match self {
            Ruby::Str(s) | Ruby::Symbol(s) => s.len(),
            Ruby::Bytes(b) => b.len(),
            Ruby::Array(items) => items.iter().map(Ruby::weight).sum(),
            Ruby::Hash(pairs) => pairs.iter().map(|(k, v)| k.weight() + v.weight()).sum(),
            _ => 0,
        }
    }

    /// As JSON for Choria: symbols and strings become strings, binary strings that are not
    /// UTF-8 become base64.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Ruby::Nil => Value::Null,
            Ruby::Bool(b) => Value::Bool(*b),
            Ruby::Int(n) => Value::from(*n),
            Ruby::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Ruby::Str(s) | Ruby::Symbol(s) => Value::String(s.clone()),
            Ruby::Bytes(b) => match std::str::from_utf8(b) {
                Ok(s) => Value::String(s.to_string()),
                Err(_) => Value::String(crate::wire::encode_base64(b)),
            },
            Ruby::Array(items) => Value::Array(items.iter().map(Ruby::to_json).collect()),
            Ruby::Hash(pairs) => Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.key_text(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// From Choria's JSON. Object keys become symbols when `symbol_keys`, as MCollective's RPC
    /// bodies have them at the top; nested keys stay strings.
    pub fn from_json(value: &serde_json::Value, symbol_keys: bool) -> Ruby {
        use serde_json::Value;
        match value {
            Value::Null => Ruby::Nil,
            Value::Bool(b) => Ruby::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Ruby::Int(i),
                None => Ruby::Float(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => Ruby::Str(s.clone()),
            Value::Array(items) => {
                Ruby::Array(items.iter().map(|v| Ruby::from_json(v, false)).collect())
            }
            Value::Object(map) => Ruby::Hash(
                map.iter()
                    .map(|(k, v)| {
                        let key = if symbol_keys {
                            Ruby::Symbol(k.clone())
                        } else {
                            Ruby::Str(k.clone())
                        };
                        (key, Ruby::from_json(v, false))
                    })
                    .collect(),
            ),
        }
    }

    fn key_text(&self) -> String {
        match self {
            Ruby::Str(s) | Ruby::Symbol(s) => s.clone(),
            other => other.to_json().to_string(),
        }
    }
}

/// Why legacy bytes could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LegacyError {
    /// Not valid Marshal, or a type MCollective does not use.
    #[error("marshal: {message} (at byte {offset})")]
    Marshal {
        /// Where in the input.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// Not valid YAML, or a value Psych's safe_load would refuse.
    #[error("yaml: {message} (line {line})")]
    Yaml {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The document is well formed but is not a valid envelope.
    #[error("{what}: {message}")]
    Envelope {
        /// Which message.
        what: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Larger than the limit; not parsed.
    #[error("{size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl LegacyError {
    fn marshal(offset: usize, message: impl Into<String>) -> Self {
        LegacyError::Marshal {
            offset,
            message: message.into(),
        }
    }

    fn yaml(line: usize, message: impl Into<String>) -> Self {
        LegacyError::Yaml {
            line,
            message: message.into(),
        }
    }

    /// A stable word for metrics and the audit trail.
    pub fn code(&self) -> &'static str {
        match self {
            LegacyError::Marshal { .. } => "malformed_marshal",
            LegacyError::Yaml { .. } => "malformed_yaml",
            LegacyError::Envelope { .. } => "malformed_envelope",
            LegacyError::TooLarge { .. } => "too_large",
        }
    }
}

impl fmt::Display for Serializer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
