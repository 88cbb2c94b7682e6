//! `choria:transport:1`: the outer NATS payload with base64 `data` and unsigned routing headers.

use serde::{Deserialize, Serialize};

use super::{Protocol, check_len, decode_layer, to_json_sized};
use crate::wire::{DecodeError, Layer, Limits};

/// One `seen-by` entry: the inbound server, the processor, the outbound server.
pub type Hop = [String; 3];

/// The outer v1 message. `data` holds the decoded bytes of a secure request or reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transport {
    protocol: Protocol<0>,
    /// Bytes of the secure request or secure reply JSON.
    #[serde(with = "crate::wire::base64_bytes")]
    pub data: Vec<u8>,
    /// Routing headers; brokers and gateways may rewrite them, nothing in them is signed.
    pub headers: TransportHeaders,
}

/// The unsigned transport headers, in Go's field order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportHeaders {
    /// NATS subject that replies go to.
    #[serde(rename = "reply-to", default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Identity of the publisher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mc_sender: Option<String>,
    /// The hops this message has travelled.
    #[serde(rename = "seen-by", default, skip_serializing_if = "Vec::is_empty")]
    pub seen_by: Vec<Hop>,
    /// Federation routing data, present only on federated messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation: Option<FederationHeader>,
}

/// The `federation` header; the target list is singular `target` on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationHeader {
    /// Request id of the carried message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<String>,
    /// The client's original reply subject, saved by a federation broker.
    #[serde(rename = "reply-to", default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// NATS subjects the federation broker should publish to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target: Vec<String>,
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

    /// Decodes a transport, refusing input over the size limit before parsing.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let mut transport: Transport =
            decode_layer(Layer::Transport, bytes, limits.max_message_bytes)?;
        transport.headers.normalize();
        transport.validate()?;
        Ok(transport)
    }

    /// Encodes the transport as Go does: compact JSON, `data` as padded base64.
    pub fn encode(&self) -> Vec<u8> {
        to_json_sized(self, self.data.len() / 3 * 4 + 1024)
    }

    fn validate(&self) -> Result<(), DecodeError> {
        if self.data.is_empty() {
            return Err(DecodeError::field(
                Layer::Transport,
                "data",
                "must not be empty",
            ));
        }
        self.headers.validate()
    }
}

impl TransportHeaders {
    /// Schema rules serde cannot express.
    pub(crate) fn validate(&self) -> Result<(), DecodeError> {
        if let Some(req) = self.federation.as_ref().and_then(|fed| fed.req.as_ref()) {
            check_len(
                Layer::Transport,
                "headers.federation.req",
                req,
                super::REQUEST_ID_LEN,
                Some(super::REQUEST_ID_LEN),
            )?;
        }
        Ok(())
    }

    /// Go omits empty strings on output, so an empty header means an absent one.
    pub(crate) fn normalize(&mut self) {
        drop_empty(&mut self.reply_to);
        drop_empty(&mut self.mc_sender);
        if let Some(fed) = &mut self.federation {
            drop_empty(&mut fed.req);
            drop_empty(&mut fed.reply_to);
        }
    }

    /// Appends a hop, as every Choria publisher does before sending.
    pub fn record_hop(&mut self, inbound: &str, processor: &str, outbound: &str) {
        self.seen_by
            .push([inbound.into(), processor.into(), outbound.into()]);
    }
}

fn drop_empty(field: &mut Option<String>) {
    if field.as_deref() == Some("") {
        *field = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_message_bytes: 4096,
        max_chain_certs: 8,
    };

    #[test]
    fn decodes_in_any_key_order_and_with_ruby_base64() {
        let bytes = br#"{"headers":{"mc_sender":"c1","reply-to":"x.reply.a.b"},"data":"eyJw\ncm90b2NvbCI6MX0=\n","protocol":"choria:transport:1"}"#;
        let transport = Transport::decode(bytes, &LIMITS).unwrap();
        assert_eq!(transport.data, br#"{"protocol":1}"#);
        assert_eq!(transport.headers.reply_to.as_deref(), Some("x.reply.a.b"));
        let encoded = String::from_utf8(transport.encode()).unwrap();
        assert_eq!(
            encoded,
            r#"{"protocol":"choria:transport:1","data":"eyJwcm90b2NvbCI6MX0=","headers":{"reply-to":"x.reply.a.b","mc_sender":"c1"}}"#
        );
    }

    #[test]
    fn federation_target_is_singular_on_the_wire() {
        let headers = TransportHeaders {
            federation: Some(FederationHeader {
                req: Some("a".repeat(32)),
                reply_to: None,
                target: vec!["c.broadcast.agent.rpcutil".into()],
            }),
            ..TransportHeaders::default()
        };
        let json = String::from_utf8(Transport::new(b"{}".to_vec(), headers).encode()).unwrap();
        assert!(
            json.contains(r#""target":["c.broadcast.agent.rpcutil"]"#),
            "{json}"
        );
        assert!(!json.contains("targets"));
    }

    #[test]
    fn wrong_protocol_is_named() {
        let bytes = br#"{"protocol":"io.choria.protocol.v2.transport","data":"e30=","headers":{}}"#;
        let err = Transport::decode(bytes, &LIMITS).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Protocol {
                layer: Layer::Transport,
                found: "io.choria.protocol.v2.transport".into()
            }
        );
    }

    #[test]
    fn schema_errors_name_the_field() {
        let missing = br#"{"protocol":"choria:transport:1","data":"e30="}"#;
        let err = Transport::decode(missing, &LIMITS).unwrap_err();
        assert!(err.to_string().contains("missing field `headers`"), "{err}");

        let bad_hop =
            br#"{"protocol":"choria:transport:1","data":"e30=","headers":{"seen-by":[["a","b"]]}}"#;
        let err = Transport::decode(bad_hop, &LIMITS).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Json { path, .. } if path.starts_with("headers.seen-by")),
            "{err}"
        );

        let short_req = br#"{"protocol":"choria:transport:1","data":"e30=","headers":{"federation":{"req":"abc"}}}"#;
        let err = Transport::decode(short_req, &LIMITS).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Field { field, .. } if field == "headers.federation.req"),
            "{err}"
        );

        let bad_b64 = br#"{"protocol":"choria:transport:1","data":"%%%","headers":{}}"#;
        let err = Transport::decode(bad_b64, &LIMITS).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Json { path, message, .. } if path == "data" && message.contains("base64")),
            "{err}"
        );
    }

    #[test]
    fn empty_headers_are_treated_as_absent() {
        let bytes = br#"{"protocol":"choria:transport:1","data":"e30=","headers":{"reply-to":""}}"#;
        let transport = Transport::decode(bytes, &LIMITS).unwrap();
        assert_eq!(transport.headers.reply_to, None);
    }
}
