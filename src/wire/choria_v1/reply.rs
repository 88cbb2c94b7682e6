//! `choria:secure:reply:1` and `choria:reply:1`: node replies, hashed but not signed in v1.

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};

use super::{Protocol, REQUEST_ID_LEN, RpcReply, check_len, decode_layer, to_json, to_json_string};
use crate::wire::{DecodeError, Layer, Limits, encode_base64};

/// A reply with its integrity hash, `base64(sha256(message))`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecureReply {
    protocol: Protocol<3>,
    /// The reply JSON.
    pub message: String,
    /// Base64 SHA-256 of `message`.
    pub hash: String,
}

/// A reply: the agent's answer plus an envelope naming the request and the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    protocol: Protocol<4>,
    /// The RPC reply body JSON.
    pub message: String,
    /// Which request this answers and who answered.
    pub envelope: ReplyEnvelope,
}

/// The reply envelope, in Go's field order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyEnvelope {
    /// Id of the request being answered.
    pub requestid: String,
    /// Identity of the replying node.
    pub senderid: String,
    /// Agent that produced the reply.
    pub agent: String,
    /// Reply time in unix seconds.
    pub time: i64,
}

/// `base64(sha256(bytes))`, the v1 reply hash.
pub fn reply_hash(bytes: &[u8]) -> String {
    encode_base64(digest::digest(&digest::SHA256, bytes).as_ref())
}

impl SecureReply {
    /// Wraps reply JSON and computes its hash.
    pub fn new(message: String) -> Self {
        let hash = reply_hash(message.as_bytes());
        SecureReply {
            protocol: Protocol,
            message,
            hash,
        }
    }

    /// Decodes, schema-checks and hash-checks a secure reply.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let secure: SecureReply =
            decode_layer(Layer::SecureReply, bytes, limits.max_message_bytes)?;
        check_len(Layer::SecureReply, "message", &secure.message, 1, None)?;
        check_len(Layer::SecureReply, "hash", &secure.hash, 1, None)?;
        if reply_hash(secure.message.as_bytes()) != secure.hash {
            return Err(DecodeError::field(
                Layer::SecureReply,
                "hash",
                "does not match base64(sha256(message)); the reply was altered",
            ));
        }
        Ok(secure)
    }

    /// Encodes as compact JSON.
    pub fn encode(&self) -> Vec<u8> {
        to_json(self)
    }

    /// Decodes the reply carried in `message`.
    pub fn reply(&self, limits: &Limits) -> Result<Reply, DecodeError> {
        Reply::decode(self.message.as_bytes(), limits)
    }
}

impl Reply {
    /// Builds a reply around an encoded RPC reply body.
    pub fn new(message: String, envelope: ReplyEnvelope) -> Self {
        Reply {
            protocol: Protocol,
            message,
            envelope,
        }
    }

    /// Decodes and schema-checks a reply.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let reply: Reply = decode_layer(Layer::Reply, bytes, limits.max_message_bytes)?;
        let env = &reply.envelope;
        check_len(Layer::Reply, "message", &reply.message, 1, None)?;
        check_len(
            Layer::Reply,
            "envelope.requestid",
            &env.requestid,
            REQUEST_ID_LEN,
            Some(REQUEST_ID_LEN),
        )?;
        check_len(Layer::Reply, "envelope.agent", &env.agent, 1, None)?;
        Ok(reply)
    }

    /// Encodes as compact JSON in Go's field order.
    pub fn encode(&self) -> Vec<u8> {
        to_json(self)
    }

    /// The same JSON as a `String`, for carrying inside another message's `message` field.
    pub fn encode_string(&self) -> String {
        to_json_string(self)
    }

    /// Decodes the message as an MCollective RPC reply body.
    pub fn rpc(&self, limits: &Limits) -> Result<RpcReply, DecodeError> {
        RpcReply::decode(self.message.as_bytes(), limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = r#"{"protocol":"choria:reply:1","message":"{\"action\":\"ping\",\"statuscode\":0,\"statusmsg\":\"OK\",\"data\":{\"pong\":1780000001}}","envelope":{"requestid":"6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b","senderid":"node1.example.net","agent":"rpcutil","time":1780000001}}"#;

    #[test]
    fn hash_matches_the_published_vector() {
        let secure = SecureReply::new(REPLY.to_string());
        assert_eq!(secure.hash, "tssbigVgc5CzKB7dq02b0zTYWvlKog9LF6DNrjYwTb4=");
        let decoded = SecureReply::decode(&secure.encode(), &Limits::default()).unwrap();
        let reply = decoded.reply(&Limits::default()).unwrap();
        assert_eq!(reply.encode(), REPLY.as_bytes());
        assert_eq!(
            reply.rpc(&Limits::default()).unwrap().data["pong"],
            1780000001
        );
    }

    #[test]
    fn altered_reply_fails_the_hash() {
        let mut secure = SecureReply::new(REPLY.to_string());
        secure.message = secure.message.replace("node1", "node2");
        let err = SecureReply::decode(&secure.encode(), &Limits::default()).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Field { field, .. } if field == "hash"),
            "{err}"
        );
    }
}
