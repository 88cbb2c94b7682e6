//! Choria protocol v1: transport, secure request, request, reply and secure reply.
//!
//! The layers nest like an onion. A NATS payload is a [`Transport`] whose `data` is the base64 of
//! a [`SecureRequest`] or [`SecureReply`]; their `message` strings hold the [`Request`] or
//! [`Reply`] JSON, whose own `message` is the agent payload. The signed bytes of a request are the
//! secure request's `message` string exactly as received; nothing here re-serializes them.

mod filter;
pub(crate) mod keys;
mod relay;
mod reply;
mod request;
mod rpc;
mod transport;

pub use filter::{FactFilter, FactOperator, Filter};
pub use relay::RelayTransport;
pub use reply::{Reply, ReplyEnvelope, SecureReply, reply_hash};
pub use request::{Request, RequestEnvelope, SecureRequest};
pub use rpc::{RpcReply, RpcRequest, StatusCode};
pub use transport::{FederationHeader, Hop, Transport, TransportHeaders};

use serde::Deserialize;

pub(crate) use super::layers::{
    Protocol, check_len, decode_layer, to_json, to_json_sized, to_json_string,
};
use super::{DecodeError, Layer};

/// Smallest TTL the v1 request schema allows.
pub const MIN_TTL: i64 = 30;
/// Length of a v1 request id: a UUIDv4 without dashes.
pub const REQUEST_ID_LEN: usize = 32;

/// What a transport's `data` holds, read from its `protocol` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A `choria:secure:request:1`.
    Request,
    /// A `choria:secure:reply:1`.
    Reply,
}

impl Kind {
    /// `request` or `reply`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Reply => "reply",
        }
    }
}

/// Reads only the `protocol` key of a JSON document, whatever else it holds.
pub fn peek_protocol(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        protocol: String,
    }
    serde_json::from_slice::<Peek>(bytes)
        .ok()
        .map(|peek| peek.protocol)
}

/// Decides whether secure `data` is a request or a reply.
pub fn secure_kind(data: &[u8]) -> Result<Kind, DecodeError> {
    match peek_protocol(data).as_deref() {
        Some("choria:secure:request:1") => Ok(Kind::Request),
        Some("choria:secure:reply:1") => Ok(Kind::Reply),
        Some(other) => Err(DecodeError::field(
            Layer::Transport,
            "data",
            format!(
                "holds protocol {other:?}; expected choria:secure:request:1 or choria:secure:reply:1"
            ),
        )),
        None => Err(DecodeError::field(
            Layer::Transport,
            "data",
            "is not a JSON object with a protocol key",
        )),
    }
}
