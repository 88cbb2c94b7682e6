//! Bytes become types here and nowhere else: limits, typed decode errors and shared codecs.

pub mod choria_v1;
pub mod choria_v2;
mod layers;
pub mod mcollective;

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// NATS' default `max_payload`; nothing larger can arrive over a default broker anyway.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Upper bounds applied before and while decoding untrusted bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded message accepted at any layer; larger input is refused unparsed.
    pub max_message_bytes: usize,
    /// Most certificates accepted in one `pubcert` chain.
    pub max_chain_certs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_chain_certs: 8,
        }
    }
}

/// The message layer a decode error happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// `choria:transport:1`
    Transport,
    /// `choria:secure:request:1`
    SecureRequest,
    /// `choria:request:1`
    Request,
    /// `choria:secure:reply:1`
    SecureReply,
    /// `choria:reply:1`
    Reply,
    /// `io.choria.protocol.v2.transport`
    TransportV2,
    /// `io.choria.protocol.v2.secure_request`
    SecureRequestV2,
    /// `io.choria.protocol.v2.request`
    RequestV2,
    /// `io.choria.protocol.v2.secure_reply`
    SecureReplyV2,
    /// `io.choria.protocol.v2.reply`
    ReplyV2,
    /// The MCollective RPC request body inside a request.
    RpcRequest,
    /// The MCollective RPC reply body inside a reply.
    RpcReply,
}

impl Layer {
    /// The protocol name of this layer, as it appears on the wire.
    pub fn protocol(self) -> &'static str {
        match self {
            Layer::Transport => "choria:transport:1",
            Layer::SecureRequest => "choria:secure:request:1",
            Layer::Request => "choria:request:1",
            Layer::SecureReply => "choria:secure:reply:1",
            Layer::Reply => "choria:reply:1",
            Layer::TransportV2 => "io.choria.protocol.v2.transport",
            Layer::SecureRequestV2 => "io.choria.protocol.v2.secure_request",
            Layer::RequestV2 => "io.choria.protocol.v2.request",
            Layer::SecureReplyV2 => "io.choria.protocol.v2.secure_reply",
            Layer::ReplyV2 => "io.choria.protocol.v2.reply",
            Layer::RpcRequest => "mcorpc request body",
            Layer::RpcReply => "mcorpc reply body",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.protocol())
    }
}

/// Why bytes could not become a message; every variant names the layer and the place.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is larger than the configured limit and was not parsed.
    #[error("{layer}: {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Layer being decoded.
        layer: Layer,
        /// Size of the input.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The input is not valid JSON, or a field has the wrong JSON type.
    #[error("{layer}: {message} (at `{path}`, line {line} column {column})")]
    Json {
        /// Layer being decoded.
        layer: Layer,
        /// Dotted path of the offending field, `.` for the document itself.
        path: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What serde reported.
        message: String,
    },
    /// The `protocol` field names a different message.
    #[error("{layer}: protocol is {found:?}, expected {:?}", layer.protocol())]
    Protocol {
        /// Layer being decoded.
        layer: Layer,
        /// The protocol the document claims.
        found: String,
    },
    /// A field is present and well typed but breaks its layer's schema.
    #[error("{layer}: field `{field}` {problem}")]
    Field {
        /// Layer being decoded.
        layer: Layer,
        /// Dotted path of the field.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl DecodeError {
    /// Builds a schema error for `field` of `layer`.
    pub fn field(layer: Layer, field: impl Into<String>, problem: impl Into<String>) -> Self {
        DecodeError::Field {
            layer,
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The layer the error happened in.
    pub fn layer(&self) -> Layer {
        match self {
            DecodeError::TooLarge { layer, .. }
            | DecodeError::Json { layer, .. }
            | DecodeError::Protocol { layer, .. }
            | DecodeError::Field { layer, .. } => *layer,
        }
    }
}

/// Refuses input over `limit` bytes before any parsing happens.
pub fn check_size(layer: Layer, size: usize, limit: usize) -> Result<(), DecodeError> {
    if size > limit {
        return Err(DecodeError::TooLarge { layer, size, limit });
    }
    Ok(())
}

/// Parses JSON into `T`, reporting the field path of the first error.
pub fn from_json<'a, T: Deserialize<'a>>(
    layer: Layer,
    bytes: &'a [u8],
    limit: usize,
) -> Result<T, DecodeError> {
    check_size(layer, bytes.len(), limit)?;
    // Parse without path tracking first; only a failure pays for a second pass that finds the path.
    serde_json::from_slice(bytes).or_else(|_| locate_error(layer, bytes))
}

/// Parses again with path tracking to report where the document is wrong.
fn locate_error<'a, T: Deserialize<'a>>(layer: Layer, bytes: &'a [u8]) -> Result<T, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        DecodeError::Json {
            layer,
            path,
            line: inner.line(),
            column: inner.column(),
            message: strip_position(&inner.to_string()),
        }
    })?;
    de.end().map_err(|err| DecodeError::Json {
        layer,
        path: ".".into(),
        line: err.line(),
        column: err.column(),
        message: strip_position(&err.to_string()),
    })?;
    Ok(value)
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// Decodes standard padded base64, ignoring the `\r` and `\n` that Ruby's `encode64` inserts.
pub fn decode_base64_lenient(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    if text.contains(['\r', '\n']) {
        let compact: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        STANDARD.decode(compact)
    } else {
        STANDARD.decode(text)
    }
}

/// Encodes bytes as standard padded base64, as Go's `encoding/json` does for `[]byte`.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Serde adapter for `[]byte` fields: padded std base64 out, lenient base64 in.
pub(crate) mod base64_bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&super::encode_base64(bytes))
    }

    /// Decodes straight from the input where the JSON string has no escapes (base64 never
    /// needs one), instead of copying it into a `String` first; serde's `Cow<str>` always copies.
    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<u8>, D::Error> {
        de.deserialize_str(Base64Visitor)
    }

    struct Base64Visitor;

    impl serde::de::Visitor<'_> for Base64Visitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a base64 string")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
            super::decode_base64_lenient(text)
                .map_err(|err| E::custom(format!("invalid base64: {err}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_base64_ignores_ruby_line_breaks() {
        let ruby =
            "eyJhIjoiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJi\nYmJiYmJiYmIifQ==\n";
        let decoded = decode_base64_lenient(ruby).unwrap();
        assert!(decoded.starts_with(b"{\"a\":\"bbb"));
        assert!(decode_base64_lenient("not base64!").is_err());
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let err = from_json::<serde_json::Value>(Layer::Transport, b"{\"a\":1}", 3).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooLarge {
                layer: Layer::Transport,
                size: 7,
                limit: 3
            }
        );
    }

    #[test]
    fn json_errors_carry_the_field_path() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Outer {
            inner: Inner,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            ttl: i64,
        }
        let err =
            from_json::<Outer>(Layer::Request, br#"{"inner":{"ttl":"60"}}"#, 100).unwrap_err();
        match err {
            DecodeError::Json { path, message, .. } => {
                assert_eq!(path, "inner.ttl");
                assert!(message.contains("invalid type"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn trailing_garbage_is_an_error() {
        let err = from_json::<serde_json::Value>(Layer::Reply, b"{} x", 100).unwrap_err();
        assert!(matches!(err, DecodeError::Json { .. }));
    }
}
