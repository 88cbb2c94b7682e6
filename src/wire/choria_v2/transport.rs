//! `io.choria.protocol.v2.transport`: the outer NATS payload with base64 `data` and unsigned
//! routing headers.

use serde::{Deserialize, Serialize};

use crate::wire::choria_v1::{self as v1, Hop};
use crate::wire::layers::{Protocol, check_len, decode_layer, to_json_sized};
use crate::wire::{DecodeError, Layer, Limits};

/// The outer v2 message. `data` holds the decoded bytes of a secure request or reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transport {
    protocol: Protocol<5>,
    /// Bytes of the secure request or secure reply JSON.
    #[serde(with = "crate::wire::base64_bytes")]
    pub data: Vec<u8>,
    /// Routing headers; brokers and gateways may rewrite them, nothing in them is signed.
    pub headers: TransportHeaders,
}

/// The unsigned v2 transport headers, in Go's field order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportHeaders {
    /// NATS subject that replies go to (v1's `reply-to`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Identity of the publisher (v1's `mc_sender`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sender: String,
    /// The hops this message has travelled (v1's `seen-by`; the v2 schema's name for it, but
    /// go-choria writes `trace`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<Hop>,
    /// Federation routing data, present only on federated messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation: Option<FederationHeader>,
}

/// The v2 `federation` header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationHeader {
    /// Request id of the carried message (v1's `req`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request: String,
    /// The client's original reply subject, saved by a federation broker (v1's `reply-to`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// NATS subjects the federation broker should publish to (v1's `target`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}

impl Transport {
    /// Wraps secure request or reply bytes with headers.
    pub fn new(data: Vec<u8>, headers: TransportHeaders) -> Self {
        Transport {
            protocol: Protocol,
            data,
            headers,
        }
    }

    /// Decodes a transport, refusing input over the size limit before parsing; `headers` with a
    /// `sender` are required, and a `federation` header must name its request, as the v2 schema
    /// says.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let layer = Layer::TransportV2;
        let transport: Transport = decode_layer(layer, bytes, limits.max_message_bytes)?;
        if transport.data.is_empty() {
            return Err(DecodeError::field(layer, "data", "must not be empty"));
        }
        check_len(layer, "headers.sender", &transport.headers.sender, 1, None)?;
        if let Some(federation) = &transport.headers.federation {
            check_len(
                layer,
                "headers.federation.request",
                &federation.request,
                1,
                None,
            )?;
        }
        Ok(transport)
    }

    /// Encodes the transport as Go does: compact JSON, `data` as padded base64.
    pub fn encode(&self) -> Vec<u8> {
        to_json_sized(self, self.data.len() / 3 * 4 + 512)
    }
}

/// v2 headers under their v1 names, for routing: `reply` is `reply-to`, `sender` is `mc_sender`,
/// `trace` is `seen-by`, and the federation header's `request`, `reply` and `targets` are `req`,
/// `reply-to` and `target`.
impl From<TransportHeaders> for v1::TransportHeaders {
    fn from(headers: TransportHeaders) -> Self {
        v1::TransportHeaders {
            reply_to: headers.reply,
            mc_sender: Some(headers.sender).filter(|s| !s.is_empty()),
            seen_by: headers.trace,
            federation: headers.federation.map(|f| v1::FederationHeader {
                req: Some(f.request).filter(|r| !r.is_empty()),
                reply_to: f.reply,
                target: f.targets,
            }),
        }
    }
}

/// Routing headers written back under v2's names.
impl From<&v1::TransportHeaders> for TransportHeaders {
    fn from(headers: &v1::TransportHeaders) -> Self {
        TransportHeaders {
            reply: headers.reply_to.clone(),
            sender: headers.mc_sender.clone().unwrap_or_default(),
            trace: headers.seen_by.clone(),
            federation: headers.federation.as_ref().map(|f| FederationHeader {
                request: f.req.clone().unwrap_or_default(),
                reply: f.reply_to.clone(),
                targets: f.target.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_federated_transport_round_trips_and_needs_its_request_id() {
        let limits = Limits::default();
        let transport = Transport::new(
            br#"{"protocol":"io.choria.protocol.v2.secure_request"}"#.to_vec(),
            TransportHeaders {
                reply: Some("choria.reply.7419405695a186147a0de38f7e31a509.x".into()),
                sender: "client.example.net".into(),
                trace: vec![["a".into(), "b".into(), "c".into()]],
                federation: Some(FederationHeader {
                    request: "x".into(),
                    reply: None,
                    targets: vec!["choria.broadcast.agent.rpcutil".into()],
                }),
            },
        );
        let bytes = transport.encode();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.ends_with(r#""headers":{"reply":"choria.reply.7419405695a186147a0de38f7e31a509.x","sender":"client.example.net","trace":[["a","b","c"]],"federation":{"request":"x","targets":["choria.broadcast.agent.rpcutil"]}}}"#),
            "{text}"
        );
        assert_eq!(Transport::decode(&bytes, &limits).unwrap(), transport);

        let anonymous = text.replace(r#""request":"x","#, "");
        assert!(matches!(
            Transport::decode(anonymous.as_bytes(), &limits),
            Err(DecodeError::Field { ref field, .. }) if field == "headers.federation.request"
        ));
        let no_sender = text.replace(r#""sender":"client.example.net","#, "");
        assert!(Transport::decode(no_sender.as_bytes(), &limits).is_err());
        let v1 = text.replace("io.choria.protocol.v2.transport", "choria:transport:1");
        assert!(matches!(
            Transport::decode(v1.as_bytes(), &limits),
            Err(DecodeError::Protocol { .. })
        ));
    }
}
