//! MCollective RPC bodies: `{agent, action, data}` requests and `{action, statuscode, ...}` replies.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{to_json, to_json_string};
use crate::wire::{DecodeError, Layer, Limits, from_json};

/// An RPC request body. Ruby clients add a `caller` key, which is ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RpcRequest {
    /// Agent name.
    pub agent: String,
    /// Action name.
    pub action: String,
    /// Action inputs; `null` or absent means none, as in Go.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub data: Map<String, Value>,
}

/// An RPC reply body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RpcReply {
    /// Action that ran.
    pub action: String,
    /// MCollective status code, see [`StatusCode`].
    pub statuscode: i64,
    /// Human readable status.
    pub statusmsg: String,
    /// Action outputs; `{}` when the agent set none.
    #[serde(default = "empty_object")]
    pub data: Value,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Map<String, Value>, D::Error> {
    Ok(Option::<Map<String, Value>>::deserialize(de)?.unwrap_or_default())
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// MCollective RPC status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum StatusCode {
    /// The action ran.
    Ok = 0,
    /// The action was aborted, or the caller was not authorized.
    Aborted = 1,
    /// The agent has no such action.
    UnknownAction = 2,
    /// A required input was missing.
    MissingData = 3,
    /// An input was invalid.
    InvalidData = 4,
    /// Anything else.
    UnknownError = 5,
}

impl RpcRequest {
    /// Decodes an RPC request body.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let rpc: RpcRequest = from_json(Layer::RpcRequest, bytes, limits.max_message_bytes)?;
        super::keys::refuse_case_variants(Layer::RpcRequest, bytes, &super::keys::RPC_REQUEST)?;
        for (field, value) in [("agent", &rpc.agent), ("action", &rpc.action)] {
            if value.is_empty() {
                return Err(DecodeError::field(
                    Layer::RpcRequest,
                    field,
                    "must not be empty",
                ));
            }
        }
        Ok(rpc)
    }

    /// Encodes as compact JSON in Go's field order.
    pub fn encode(&self) -> Vec<u8> {
        to_json(self)
    }

    /// The same JSON as a `String`, for carrying inside another message's `message` field.
    pub fn encode_string(&self) -> String {
        to_json_string(self)
    }
}

impl RpcReply {
    /// Builds a reply body with `status` and its data.
    pub fn new(
        action: &str,
        status: StatusCode,
        statusmsg: impl Into<String>,
        data: Value,
    ) -> Self {
        RpcReply {
            action: action.to_string(),
            statuscode: status as i64,
            statusmsg: statusmsg.into(),
            data,
        }
    }

    /// Decodes an RPC reply body.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        from_json(Layer::RpcReply, bytes, limits.max_message_bytes)
    }

    /// Encodes as compact JSON in Go's field order.
    pub fn encode(&self) -> Vec<u8> {
        to_json(self)
    }

    /// The same JSON as a `String`, for carrying inside another message's `message` field.
    pub fn encode_string(&self) -> String {
        to_json_string(self)
    }

    /// True when the action ran successfully.
    pub fn is_ok(&self) -> bool {
        self.statuscode == StatusCode::Ok as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruby_caller_key_is_ignored_and_data_defaults() {
        let rpc = RpcRequest::decode(
            br#"{"agent":"rpcutil","action":"ping","caller":"cert=x"}"#,
            &Limits::default(),
        )
        .unwrap();
        assert!(rpc.data.is_empty());
        let null = RpcRequest::decode(
            br#"{"agent":"a","action":"b","data":null}"#,
            &Limits::default(),
        )
        .unwrap();
        assert!(null.data.is_empty());
        assert_eq!(
            rpc.encode(),
            br#"{"agent":"rpcutil","action":"ping","data":{}}"#
        );
    }

    #[test]
    fn reply_body_matches_go_shape() {
        let reply = RpcReply::new("ping", StatusCode::Ok, "OK", serde_json::json!({"pong": 1}));
        assert_eq!(
            reply.encode(),
            br#"{"action":"ping","statuscode":0,"statusmsg":"OK","data":{"pong":1}}"#
        );
    }
}
