//! `io.choria.protocol.v2.secure_request` and `io.choria.protocol.v2.request`.

use serde::{Deserialize, Serialize};

use super::keys;
use crate::wire::choria_v1::keys::refuse_case_variants;
use crate::wire::choria_v1::{Filter, RpcRequest};
use crate::wire::layers::{Protocol, check_len, decode_layer, to_json};
use crate::wire::{DecodeError, Layer, Limits};

/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Longest request id taken: go-choria's are 27 (KSUID) or 32 characters.
pub const MAX_ID_LEN: usize = 64;

/// A signed request: the request JSON, its ed25519 signature, and the JWTs that say whose key
/// made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecureRequest {
    protocol: Protocol<6>,
    /// The request JSON, byte for byte as signed.
    #[serde(with = "crate::wire::base64_bytes")]
    pub request: Vec<u8>,
    /// The raw 64-byte ed25519 signature over `request`.
    #[serde(with = "crate::wire::base64_bytes")]
    pub signature: Vec<u8>,
    /// The caller's JWT (a `choria_client_id` token).
    pub caller: String,
    /// The JWT of a delegating signer whose key made the signature on the caller's behalf.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signer: String,
}

/// A request: the agent payload and who, where and how long, flat as Go writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    protocol: Protocol<7>,
    /// The agent payload (for RPC, the mcorpc request body JSON).
    #[serde(with = "crate::wire::base64_bytes")]
    pub message: Vec<u8>,
    /// Request id (a KSUID from go-choria).
    pub id: String,
    /// Identity of the sending machine.
    pub sender: String,
    /// Caller id, `<kind>=<name>`.
    pub caller: String,
    /// Collective the request is for.
    pub collective: String,
    /// Agent to run.
    pub agent: String,
    /// Seconds the request stays valid on either side of `time`.
    pub ttl: i64,
    /// Creation time in unix nanoseconds.
    pub time: i64,
    /// Which nodes should act.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
}

impl SecureRequest {
    /// A secure request around signed request bytes.
    pub fn new(request: Vec<u8>, signature: Vec<u8>, caller: String, signer: String) -> Self {
        SecureRequest {
            protocol: Protocol,
            request,
            signature,
            caller,
            signer,
        }
    }

    /// Decodes and schema-checks a secure request.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let layer = Layer::SecureRequestV2;
        let secure: SecureRequest = decode_layer(layer, bytes, limits.max_message_bytes)?;
        if secure.request.is_empty() {
            return Err(DecodeError::field(layer, "request", "must not be empty"));
        }
        if secure.signature.len() != SIGNATURE_LEN {
            return Err(DecodeError::field(
                layer,
                "signature",
                format!(
                    "must be a {SIGNATURE_LEN}-byte ed25519 signature, found {} bytes",
                    secure.signature.len()
                ),
            ));
        }
        check_len(layer, "caller", &secure.caller, 1, None)?;
        refuse_case_variants(layer, bytes, &keys::SECURE_REQUEST)?;
        Ok(secure)
    }

    /// Encodes as compact JSON in Go's field order.
    pub fn encode(&self) -> Vec<u8> {
        to_json(self)
    }

    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.request
    }

    /// Decodes the request carried in `request`.
    pub fn decode_request(&self, limits: &Limits) -> Result<Request, DecodeError> {
        Request::decode(&self.request, limits)
    }
}

impl Request {
    /// A request around an agent payload, with an empty filter as go-choria's `NewRequest` makes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        message: Vec<u8>,
        id: String,
        sender: String,
        caller: String,
        collective: String,
        agent: String,
        ttl: i64,
        time: i64,
    ) -> Self {
        Request {
            protocol: Protocol,
            message,
            id,
            sender,
            caller,
            collective,
            agent,
            ttl,
            time,
            filter: Some(Filter::default()),
        }
    }

    /// Decodes and schema-checks a request.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let layer = Layer::RequestV2;
        let request: Request = decode_layer(layer, bytes, limits.max_message_bytes)?;
        if request.message.is_empty() {
            return Err(DecodeError::field(layer, "message", "must not be empty"));
        }
        check_len(layer, "id", &request.id, 1, Some(MAX_ID_LEN))?;
        if !crate::subjects::is_valid_token(&request.id) {
            return Err(DecodeError::field(
                layer,
                "id",
                "must be one NATS subject token (replies go to a subject ending with it)",
            ));
        }
        check_len(layer, "sender", &request.sender, 1, None)?;
        check_len(layer, "caller", &request.caller, 1, None)?;
        check_len(layer, "collective", &request.collective, 1, None)?;
        check_len(layer, "agent", &request.agent, 1, None)?;
        if request.ttl < 1 {
            return Err(DecodeError::field(
                layer,
                "ttl",
                format!("must be at least 1, found {}", request.ttl),
            ));
        }
        if request.time < 1 {
            return Err(DecodeError::field(
                layer,
                "time",
                format!("must be at least 1, found {}", request.time),
            ));
        }
        if let Some(filter) = &request.filter {
            filter.validate(layer)?;
        }
        refuse_case_variants(layer, bytes, &keys::REQUEST)?;
        Ok(request)
    }

    /// Encodes as compact JSON in Go's field order; these are the bytes a signer signs.
    pub fn encode(&self) -> Vec<u8> {
        to_json(self)
    }

    /// Decodes the payload as an MCollective RPC request body.
    pub fn rpc(&self, limits: &Limits) -> Result<RpcRequest, DecodeError> {
        RpcRequest::decode(&self.message, limits)
    }

    /// The filter, empty when the request carries none.
    pub fn filter(&self) -> Filter {
        self.filter.clone().unwrap_or_default()
    }

    /// The same request in v1's shape, for what reads requests the same in either protocol
    /// (the call and its lifetime at an ingress, filters and agents on a simulated node): the
    /// payload base64-encoded, so that v1's `payload()` yields exactly these bytes, decoded once;
    /// the time in whole seconds.
    pub fn view_v1(&self) -> crate::wire::choria_v1::Request {
        crate::wire::choria_v1::Request::new(
            crate::wire::encode_base64(&self.message),
            crate::wire::choria_v1::RequestEnvelope {
                requestid: self.id.clone(),
                senderid: self.sender.clone(),
                callerid: self.caller.clone(),
                collective: self.collective.clone(),
                agent: self.agent.clone(),
                ttl: self.ttl,
                time: self.time.div_euclid(1_000_000_000),
                filter: self.filter(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Built as go-choria's `NewRequest("ginkgo", "ginkgo.example.net", "up=ginkgo", 60, id,
    // "choria")` with `SetMessage([]byte("hello"))` would serialize it: flat keys in struct
    // order, `message` as base64, `time` in nanoseconds, the empty filter's lists as `[]`.
    const REQUEST: &str = r#"{"protocol":"io.choria.protocol.v2.request","message":"aGVsbG8=","id":"2IR5hjVmS3Jc3DjuKMFo0vGWLzD","sender":"ginkgo.example.net","caller":"up=ginkgo","collective":"choria","agent":"ginkgo","ttl":60,"time":1780000000123456789,"filter":{"fact":[],"cf_class":[],"agent":[],"identity":[],"compound":[]}}"#;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn a_request_round_trips_byte_for_byte() {
        let request = Request::decode(REQUEST.as_bytes(), &limits()).unwrap();
        assert_eq!(request.message, b"hello");
        assert_eq!(request.time, 1_780_000_000_123_456_789);
        assert_eq!(request.encode(), REQUEST.as_bytes());
        let built = Request::new(
            b"hello".to_vec(),
            "2IR5hjVmS3Jc3DjuKMFo0vGWLzD".into(),
            "ginkgo.example.net".into(),
            "up=ginkgo".into(),
            "choria".into(),
            "ginkgo".into(),
            60,
            1_780_000_000_123_456_789,
        );
        assert_eq!(built.encode(), REQUEST.as_bytes());
    }

    #[test]
    fn schema_violations_are_typed_and_located() {
        for (bad, field) in [
            (REQUEST.replace(r#""ttl":60"#, r#""ttl":0"#), "ttl"),
            (REQUEST.replace("1780000000123456789", "0"), "time"),
            (
                REQUEST.replace(r#""caller":"up=ginkgo""#, r#""caller":"""#),
                "caller",
            ),
            (
                REQUEST.replace(r#""message":"aGVsbG8=""#, r#""message":"""#),
                "message",
            ),
            (
                REQUEST.replace(r#""id":"2IR5hjVmS3Jc3DjuKMFo0vGWLzD""#, r#""id":"""#),
                "id",
            ),
            // Replies go to a subject that ends with the id.
            (REQUEST.replace("2IR5hjVmS3Jc3DjuKMFo0vGWLzD", "a.b"), "id"),
            (REQUEST.replace("2IR5hjVmS3Jc3DjuKMFo0vGWLzD", ">"), "id"),
            (
                REQUEST.replace("2IR5hjVmS3Jc3DjuKMFo0vGWLzD", &"x".repeat(65)),
                "id",
            ),
            (
                REQUEST.replace(
                    r#""agent":"ginkgo","ttl""#,
                    r#""agent":"ginkgo","Caller":"up=x","ttl""#,
                ),
                "Caller",
            ),
        ] {
            match Request::decode(bad.as_bytes(), &limits()) {
                Err(DecodeError::Field {
                    layer, field: at, ..
                }) => {
                    assert_eq!((layer, at.as_str()), (Layer::RequestV2, field), "{bad}");
                }
                other => panic!("{field}: {other:?}"),
            }
        }
        let v1 = REQUEST.replace("io.choria.protocol.v2.request", "choria:request:1");
        assert!(matches!(
            Request::decode(v1.as_bytes(), &limits()),
            Err(DecodeError::Protocol {
                layer: Layer::RequestV2,
                ..
            })
        ));
        let missing = Request::decode(b"{}", &limits()).unwrap_err();
        assert!(matches!(missing, DecodeError::Json { .. }), "{missing:?}");
    }

    #[test]
    fn a_secure_request_carries_the_request_bytes_and_a_64_byte_signature() {
        let secure = SecureRequest::new(
            REQUEST.as_bytes().to_vec(),
            vec![7; 64],
            "caller.jwt".into(),
            String::new(),
        );
        let bytes = secure.encode();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with(
                r#"{"protocol":"io.choria.protocol.v2.secure_request","request":"eyJwcm90b2NvbCI6"#
            ),
            "{text}"
        );
        assert!(
            !text.contains("signer"),
            "an empty signer is left out: {text}"
        );
        let back = SecureRequest::decode(&bytes, &limits()).unwrap();
        assert_eq!(back, secure);
        assert_eq!(back.signed_bytes(), REQUEST.as_bytes());
        assert_eq!(back.decode_request(&limits()).unwrap().caller, "up=ginkgo");

        let short = text.replace(
            &crate::wire::encode_base64(&[7; 64]),
            &crate::wire::encode_base64(&[7; 63]),
        );
        assert!(matches!(
            SecureRequest::decode(short.as_bytes(), &limits()),
            Err(DecodeError::Field { ref field, .. }) if field == "signature"
        ));
        let hex = text.replace(&crate::wire::encode_base64(&[7; 64]), &"07".repeat(64));
        assert!(
            SecureRequest::decode(hex.as_bytes(), &limits()).is_err(),
            "hex is not base64"
        );
    }
}
