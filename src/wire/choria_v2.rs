//! Choria protocol v2 (`io.choria.protocol.v2.*`): transport, secure request, request, reply and
//! secure reply.
//!
//! The layers nest as in v1, but every nested layer is a Go `[]byte` and so travels as padded
//! standard base64: a NATS payload is a [`Transport`] whose `data` holds a [`SecureRequest`] or
//! [`SecureReply`]; their `request` and `reply` hold the [`Request`] or [`Reply`] JSON, whose
//! `message` holds the agent payload. A request is signed with ed25519 over its JSON exactly as
//! carried, and a reply is hashed (and signed, when the server signs replies) over its JSON
//! exactly as carried; nothing here re-serializes either. Identities are JWTs
//! ([`crate::security::v2`]). The facts are in `docs/protocol-v2.md`.

mod keys;
mod reply;
mod request;
mod transport;

pub use reply::{Reply, SecureReply};
pub use request::{Request, SecureRequest};
pub use transport::{FederationHeader, Transport, TransportHeaders};

use super::{DecodeError, Layer};
use crate::wire::choria_v1::peek_protocol;

/// Which protocol a document speaks, read from its `protocol` key alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `choria:*:1`.
    V1,
    /// `io.choria.protocol.v2.*`.
    V2,
}

/// The protocol version of a JSON document, from its `protocol` key, as go-choria's
/// `VersionFromJSON` tells them apart; `None` when the key is missing or names neither.
pub fn version(bytes: &[u8]) -> Option<Version> {
    let protocol = peek_protocol(bytes)?;
    if protocol.starts_with("io.choria.protocol.v2.") {
        Some(Version::V2)
    } else if protocol.starts_with("choria:") && protocol.ends_with(":1") {
        Some(Version::V1)
    } else {
        None
    }
}

/// What a v2 transport's `data` holds, read from its `protocol` key.
pub fn secure_kind(data: &[u8]) -> Result<super::choria_v1::Kind, DecodeError> {
    use super::choria_v1::Kind;
    match peek_protocol(data).as_deref() {
        Some(p) if p == Layer::SecureRequestV2.protocol() => Ok(Kind::Request),
        Some(p) if p == Layer::SecureReplyV2.protocol() => Ok(Kind::Reply),
        Some(other) => Err(DecodeError::field(
            Layer::TransportV2,
            "data",
            format!(
                "holds protocol {other:?}; expected {} or {}",
                Layer::SecureRequestV2.protocol(),
                Layer::SecureReplyV2.protocol()
            ),
        )),
        None => Err(DecodeError::field(
            Layer::TransportV2,
            "data",
            "is not a JSON object with a protocol key",
        )),
    }
}

/// Length of a v2 request id as go-choria makes them: a KSUID, 27 base62 characters. The schema
/// accepts any non-empty id, and so does the decoder.
pub const KSUID_LEN: usize = 27;

/// A new request id in go-choria's v2 form: a KSUID of the current time.
pub fn new_request_id() -> String {
    use svix_ksuid::KsuidLike as _;
    svix_ksuid::Ksuid::new(None::<time::OffsetDateTime>, None).to_string()
}

/// The id a request travels under when it crosses from one protocol into the other: the first
/// 32 hex digits of the SHA-256 of the id its caller signed. It is a valid v1 id (32 characters)
/// and a valid v2 one, and a broker that sees it on a reply knows the reply must be translated
/// back for a caller of the other protocol, under the caller's own id (`docs/protocol-v2.md`).
pub fn derived_request_id(id: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes());
    hex::encode(&digest.as_ref()[..super::choria_v1::REQUEST_ID_LEN / 2])
}
