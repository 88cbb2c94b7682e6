//! `choria:secure:request:1` and `choria:request:1`: the signed request and what it carries.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{
    Filter, MIN_TTL, Protocol, REQUEST_ID_LEN, RpcRequest, check_len, decode_layer, keys, to_json,
    to_json_string,
};
use crate::wire::{DecodeError, Layer, Limits, decode_base64_lenient};

/// A signed request. `message` is the exact request JSON that `signature` covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecureRequest {
    protocol: Protocol<1>,
    /// The request JSON, byte for byte as signed.
    pub message: String,
    /// Base64 RSA PKCS#1 v1.5 SHA-256 signature over `message`.
    pub signature: String,
    /// PEM certificate of the signer, optionally followed by intermediates.
    pub pubcert: String,
}

/// A request: the agent payload plus the envelope that says who, where and how long.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    protocol: Protocol<2>,
    /// The agent payload: raw RPC JSON, or base64 of it from older clients.
    pub message: String,
    /// Routing and identity data, all covered by the signature.
    pub envelope: RequestEnvelope,
}

/// The request envelope, in Go's field order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// 32-character request id.
    pub requestid: String,
    /// Identity of the sending machine.
    pub senderid: String,
    /// Caller id, `<kind>=<name>`.
    pub callerid: String,
    /// Collective the request is for.
    pub collective: String,
    /// Agent to run.
    pub agent: String,
    /// Seconds the request stays valid around `time`.
    pub ttl: i64,
    /// Creation time in unix seconds.
    pub time: i64,
    /// Which nodes should act.
    pub filter: Filter,
}

impl SecureRequest {
    /// Builds a secure request from signed request bytes, a base64 signature and the PEM chain.
    pub fn new(message: String, signature: String, pubcert: String) -> Self {
        SecureRequest {
            protocol: Protocol,
            message,
            signature,
            pubcert,
        }
    }

    /// Decodes and schema-checks a secure request.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let secure: SecureRequest =
            decode_layer(Layer::SecureRequest, bytes, limits.max_message_bytes)?;
        let layer = Layer::SecureRequest;
        check_len(layer, "message", &secure.message, 1, None)?;
        check_len(layer, "signature", &secure.signature, 1, None)?;
        check_len(layer, "pubcert", &secure.pubcert, 1, None)?;
        keys::refuse_case_variants(layer, bytes, &keys::SECURE_REQUEST)?;
        Ok(secure)
    }

    /// Encodes as compact JSON.
    pub fn encode(&self) -> Vec<u8> {
        to_json(self)
    }

    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> &[u8] {
        self.message.as_bytes()
    }

    /// Decodes the request carried in `message`.
    pub fn request(&self, limits: &Limits) -> Result<Request, DecodeError> {
        Request::decode(self.message.as_bytes(), limits)
    }
}

impl Request {
    /// Builds a request around a raw JSON agent payload.
    pub fn new(message: String, envelope: RequestEnvelope) -> Self {
        Request {
            protocol: Protocol,
            message,
            envelope,
        }
    }

    /// Decodes and schema-checks a request.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let request: Request = decode_layer(Layer::Request, bytes, limits.max_message_bytes)?;
        request.validate()?;
        keys::refuse_case_variants(Layer::Request, bytes, &keys::REQUEST)?;
        Ok(request)
    }

    /// Encodes as compact JSON in Go's field order; these are the bytes a signer signs.
    pub fn encode(&self) -> Vec<u8> {
        to_json(self)
    }

    /// The same JSON as a `String`, for carrying inside another message's `message` field.
    pub fn encode_string(&self) -> String {
        to_json_string(self)
    }

    /// The agent payload: base64-decoded when it decodes as padded base64 (line breaks ignored, as
    /// Go's decoder does), otherwise the raw bytes.
    pub fn payload(&self) -> Cow<'_, [u8]> {
        match decode_base64_lenient(&self.message) {
            Ok(decoded) => Cow::Owned(decoded),
            Err(_) => Cow::Borrowed(self.message.as_bytes()),
        }
    }

    /// Decodes the payload as an MCollective RPC request body.
    pub fn rpc(&self, limits: &Limits) -> Result<RpcRequest, DecodeError> {
        RpcRequest::decode(&self.payload(), limits)
    }

    fn validate(&self) -> Result<(), DecodeError> {
        let layer = Layer::Request;
        let env = &self.envelope;
        check_len(layer, "message", &self.message, 1, None)?;
        check_len(
            layer,
            "envelope.requestid",
            &env.requestid,
            REQUEST_ID_LEN,
            Some(REQUEST_ID_LEN),
        )?;
        check_len(layer, "envelope.callerid", &env.callerid, 1, None)?;
        check_len(layer, "envelope.collective", &env.collective, 1, None)?;
        check_len(layer, "envelope.agent", &env.agent, 1, None)?;
        if env.ttl < MIN_TTL {
            return Err(DecodeError::field(
                layer,
                "envelope.ttl",
                format!("must be at least {MIN_TTL}, found {}", env.ttl),
            ));
        }
        env.filter.validate(layer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &str = r#"{"protocol":"choria:request:1","message":"{\"agent\":\"rpcutil\",\"action\":\"ping\",\"data\":{}}","envelope":{"requestid":"6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b","senderid":"client.example.net","callerid":"choria=rip.mcollective","collective":"mcollective","agent":"rpcutil","ttl":60,"time":1780000000,"filter":{"fact":[],"cf_class":[],"agent":["rpcutil"],"identity":[],"compound":[]}}}"#;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn request_round_trips_byte_for_byte() {
        let request = Request::decode(REQUEST.as_bytes(), &limits()).unwrap();
        assert_eq!(request.encode(), REQUEST.as_bytes());
        let rpc = request.rpc(&limits()).unwrap();
        assert_eq!(
            (rpc.agent.as_str(), rpc.action.as_str()),
            ("rpcutil", "ping")
        );
    }

    #[test]
    fn ruby_key_order_decodes_to_the_same_request() {
        let ruby = r#"{"envelope":{"requestid":"6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b","senderid":"client.example.net","callerid":"choria=rip.mcollective","filter":{"identity":[],"compound":[],"fact":[],"agent":["rpcutil"],"cf_class":[]},"collective":"mcollective","agent":"rpcutil","ttl":60,"time":1780000000},"message":"{\"agent\":\"rpcutil\",\"action\":\"ping\",\"data\":{}}","protocol":"choria:request:1"}"#;
        let a = Request::decode(ruby.as_bytes(), &limits()).unwrap();
        let b = Request::decode(REQUEST.as_bytes(), &limits()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn base64_payloads_are_accepted() {
        let mut request = Request::decode(REQUEST.as_bytes(), &limits()).unwrap();
        request.message = "cGluZw==".into();
        assert_eq!(&*request.payload(), b"ping");
        request.message =
            crate::wire::encode_base64(br#"{"agent":"a","action":"b","data":{"x":1}}"#);
        assert_eq!(request.rpc(&limits()).unwrap().data["x"], 1);
    }

    #[test]
    fn schema_violations_are_typed_and_located() {
        let cases = [
            (
                REQUEST.replace(r#""ttl":60"#, r#""ttl":29"#),
                "envelope.ttl",
            ),
            (
                REQUEST.replace("6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b", "abc"),
                "envelope.requestid",
            ),
            (
                REQUEST.replace("choria=rip.mcollective", ""),
                "envelope.callerid",
            ),
            (
                REQUEST.replace(r#""collective":"mcollective""#, r#""collective":"""#),
                "envelope.collective",
            ),
        ];
        for (json, field) in cases {
            match Request::decode(json.as_bytes(), &limits()).unwrap_err() {
                DecodeError::Field { field: f, .. } => assert_eq!(f, field),
                other => panic!("{field}: unexpected {other:?}"),
            }
        }
        let float_ttl = REQUEST.replace(r#""ttl":60"#, r#""ttl":60.5"#);
        let err = Request::decode(float_ttl.as_bytes(), &limits()).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Json { path, .. } if path == "envelope.ttl"),
            "{err}"
        );
        let no_filter = REQUEST.replace(r#","filter":{"fact":[],"cf_class":[],"agent":["rpcutil"],"identity":[],"compound":[]}"#, "");
        let err = Request::decode(no_filter.as_bytes(), &limits()).unwrap_err();
        assert!(err.to_string().contains("missing field `filter`"), "{err}");
    }

    #[test]
    fn duplicate_keys_are_refused_not_resolved() {
        let doubled = REQUEST.replacen(
            r#""callerid":"choria=rip.mcollective","#,
            r#""callerid":"choria=rip.mcollective","callerid":"choria=admin.mcollective","#,
            1,
        );
        let err = Request::decode(doubled.as_bytes(), &limits()).unwrap_err();
        assert!(
            err.to_string().contains("duplicate field `callerid`"),
            "{err}"
        );
    }

    #[test]
    fn secure_request_requires_every_field() {
        let empty_sig =
            r#"{"protocol":"choria:secure:request:1","message":"x","signature":"","pubcert":"p"}"#;
        let err = SecureRequest::decode(empty_sig.as_bytes(), &limits()).unwrap_err();
        assert_eq!(
            err,
            DecodeError::field(Layer::SecureRequest, "signature", "must not be empty")
        );
        let wrong =
            r#"{"protocol":"choria:secure:reply:1","message":"x","signature":"s","pubcert":"p"}"#;
        let err = SecureRequest::decode(wrong.as_bytes(), &limits()).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::Protocol {
                layer: Layer::SecureRequest,
                ..
            }
        ));
    }
}
