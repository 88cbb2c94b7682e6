//! `io.choria.protocol.v2.secure_reply` and `io.choria.protocol.v2.reply`.

use serde::{Deserialize, Serialize};

use super::keys;
use crate::wire::choria_v1::keys::refuse_case_variants;
use crate::wire::choria_v1::{RpcReply, reply_hash};
use crate::wire::layers::{Protocol, check_len, decode_layer, to_json};
use crate::wire::{DecodeError, Layer, Limits};

/// A reply with its hash, and, when the server signs replies, its signature and token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecureReply {
    protocol: Protocol<8>,
    /// The reply JSON, byte for byte as hashed and signed.
    #[serde(with = "crate::wire::base64_bytes")]
    pub reply: Vec<u8>,
    /// `base64(sha256(reply))` (the schema says hex; go-choria writes base64).
    pub hash: String,
    /// The server's ed25519 signature over `reply`, when it signs replies.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "crate::wire::base64_bytes"
    )]
    pub signature: Vec<u8>,
    /// The server's JWT (a `choria_server` token), beside the signature.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sender: String,
}

/// A reply: the agent's answer, which request it answers and who answered, flat as Go writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    protocol: Protocol<9>,
    /// The reply payload (for RPC, the mcorpc reply body JSON).
    #[serde(with = "crate::wire::base64_bytes")]
    pub message: Vec<u8>,
    /// Id of the request being answered.
    pub request: String,
    /// Identity of the replying node.
    pub sender: String,
    /// Agent that produced the reply.
    pub agent: String,
    /// Reply time in unix nanoseconds.
    pub time: i64,
}

impl SecureReply {
    /// Wraps reply JSON with its hash, unsigned.
    pub fn new(reply: Vec<u8>) -> Self {
        let hash = reply_hash(&reply);
        SecureReply {
            protocol: Protocol,
            reply,
            hash,
            signature: Vec::new(),
            sender: String::new(),
        }
    }

    /// Adds the server's signature over `reply` and its token.
    pub fn signed(self, signature: Vec<u8>, sender: String) -> Self {
        SecureReply {
            signature,
            sender,
            ..self
        }
    }

    /// Decodes, schema-checks and hash-checks a secure reply. A signature, when present, is
    /// checked by whoever trusts the sender's issuer ([`crate::security::v2`]).
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let layer = Layer::SecureReplyV2;
        let secure: SecureReply = decode_layer(layer, bytes, limits.max_message_bytes)?;
        if secure.reply.is_empty() {
            return Err(DecodeError::field(layer, "reply", "must not be empty"));
        }
        check_len(layer, "hash", &secure.hash, 1, None)?;
        if reply_hash(&secure.reply) != secure.hash {
            return Err(DecodeError::field(
                layer,
                "hash",
                "does not match the sha256 of reply",
            ));
        }
        if !secure.signature.is_empty() && secure.signature.len() != super::request::SIGNATURE_LEN {
            return Err(DecodeError::field(
                layer,
                "signature",
                format!(
                    "must be a 64-byte ed25519 signature, found {} bytes",
                    secure.signature.len()
                ),
            ));
        }
        refuse_case_variants(layer, bytes, &keys::SECURE_REPLY)?;
        Ok(secure)
    }

    /// Encodes as compact JSON in Go's field order.
    pub fn encode(&self) -> Vec<u8> {
        to_json(self)
    }

    /// Decodes the reply carried in `reply`.
    pub fn decode_reply(&self, limits: &Limits) -> Result<Reply, DecodeError> {
        Reply::decode(&self.reply, limits)
    }
}

impl Reply {
    /// A reply to request `request` from `sender`.
    pub fn new(
        message: Vec<u8>,
        request: String,
        sender: String,
        agent: String,
        time: i64,
    ) -> Self {
        Reply {
            protocol: Protocol,
            message,
            request,
            sender,
            agent,
            time,
        }
    }

    /// Decodes and schema-checks a reply (with the protocol a reply has, not the one go-choria's
    /// reply schema names by mistake).
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let layer = Layer::ReplyV2;
        let reply: Reply = decode_layer(layer, bytes, limits.max_message_bytes)?;
        check_len(layer, "request", &reply.request, 1, None)?;
        check_len(layer, "sender", &reply.sender, 1, None)?;
        check_len(layer, "agent", &reply.agent, 1, None)?;
        if reply.time < 1 {
            return Err(DecodeError::field(
                layer,
                "time",
                format!("must be at least 1, found {}", reply.time),
            ));
        }
        refuse_case_variants(layer, bytes, &keys::REPLY)?;
        Ok(reply)
    }

    /// Encodes as compact JSON in Go's field order; these are the bytes hashed and signed.
    pub fn encode(&self) -> Vec<u8> {
        to_json(self)
    }

    /// Decodes the payload as an MCollective RPC reply body.
    pub fn rpc(&self, limits: &Limits) -> Result<RpcReply, DecodeError> {
        RpcReply::decode(&self.message, limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = r#"{"protocol":"io.choria.protocol.v2.reply","message":"eyJhY3Rpb24iOiJwaW5nIiwic3RhdHVzY29kZSI6MCwic3RhdHVzbXNnIjoiT0siLCJkYXRhIjp7InBvbmciOjE3ODAwMDAwMDB9fQ==","request":"2IR5hjVmS3Jc3DjuKMFo0vGWLzD","sender":"n1.example.net","agent":"rpcutil","time":1780000000987654321}"#;

    #[test]
    fn a_reply_round_trips_and_its_hash_is_checked() {
        let limits = Limits::default();
        let reply = Reply::decode(REPLY.as_bytes(), &limits).unwrap();
        assert_eq!(reply.encode(), REPLY.as_bytes());
        assert_eq!(reply.rpc(&limits).unwrap().data["pong"], 1_780_000_000);

        let secure = SecureReply::new(REPLY.as_bytes().to_vec());
        let bytes = secure.encode();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            !text.contains("signature") && !text.contains("sender"),
            "{text}"
        );
        let back = SecureReply::decode(&bytes, &limits).unwrap();
        assert_eq!(back.decode_reply(&limits).unwrap(), reply);

        let tampered = secure.hash.replace(&secure.hash[..4], "AAAA");
        let bad = text.replace(&secure.hash, &tampered);
        assert!(matches!(
            SecureReply::decode(bad.as_bytes(), &limits),
            Err(DecodeError::Field { ref field, .. }) if field == "hash"
        ));

        let signed = secure.signed(vec![1; 64], "server.jwt".into());
        let back = SecureReply::decode(&signed.encode(), &limits).unwrap();
        assert_eq!(
            (back.signature.len(), back.sender.as_str()),
            (64, "server.jwt")
        );
    }
}
