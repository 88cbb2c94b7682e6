//! A transport read for relaying: headers typed, `data` kept as the exact base64 text received.
//!
//! A federation broker rewrites only unsigned headers. Keeping `data` as received (Ruby's line
//! breaks included) means the signed bytes cannot change and no time is spent on base64.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{Protocol, TransportHeaders, decode_layer, to_json};
use crate::wire::{DecodeError, Layer, Limits};

/// A `choria:transport:1` whose `data` is borrowed from the input where possible.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayTransport<'a> {
    protocol: Protocol<0>,
    /// The base64 text of the secure request or reply, as received.
    #[serde(borrow)]
    pub data: Cow<'a, str>,
    /// Routing headers.
    pub headers: TransportHeaders,
}

impl<'a> RelayTransport<'a> {
    /// Decodes the headers and checks that `data` is non-empty, well-formed base64 text.
    pub fn decode(bytes: &'a [u8], limits: &Limits) -> Result<Self, DecodeError> {
        let mut transport: RelayTransport<'a> =
            decode_layer(Layer::Transport, bytes, limits.max_message_bytes)?;
        transport.headers.normalize();
        transport.headers.validate()?;
        check_base64_shape(&transport.data)?;
        Ok(transport)
    }

    /// Encodes as compact JSON in Go's field order, with `data` exactly as received.
    pub fn encode(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// Standard base64 alphabet with padding, ignoring line breaks; a cheap check, no decoding.
fn check_base64_shape(data: &str) -> Result<(), DecodeError> {
    let bad = |problem: &str| DecodeError::field(Layer::Transport, "data", problem.to_string());
    let mut len = 0usize;
    let mut padding = 0usize;
    for byte in data.bytes() {
        match byte {
            b'\r' | b'\n' => continue,
            b'=' => padding += 1,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' if padding == 0 => {}
            _ => return Err(bad("is not standard base64")),
        }
        len += 1;
    }
    if len == 0 {
        return Err(bad("must not be empty"));
    }
    if !len.is_multiple_of(4) || padding > 2 {
        return Err(bad("is not padded standard base64"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_message_bytes: 4096,
        max_chain_certs: 8,
    };

    #[test]
    fn data_passes_through_byte_for_byte() {
        let ruby = br#"{"headers":{"reply-to":"c.reply.a.b"},"data":"eyJw\ncm90b2NvbCI6MX0=\n","protocol":"choria:transport:1"}"#;
        let relay = RelayTransport::decode(ruby, &LIMITS).unwrap();
        assert!(
            matches!(relay.data, Cow::Owned(_)),
            "escaped text cannot be borrowed"
        );
        let out = String::from_utf8(relay.encode()).unwrap();
        assert_eq!(
            out,
            r#"{"protocol":"choria:transport:1","data":"eyJw\ncm90b2NvbCI6MX0=\n","headers":{"reply-to":"c.reply.a.b"}}"#
        );
        let go = br#"{"protocol":"choria:transport:1","data":"e30=","headers":{}}"#;
        let relay = RelayTransport::decode(go, &LIMITS).unwrap();
        assert!(matches!(relay.data, Cow::Borrowed("e30=")));
        assert_eq!(relay.encode(), go);
    }

    #[test]
    fn malformed_data_and_headers_are_refused() {
        for (bytes, want) in [
            (&br#"{"protocol":"choria:transport:1","data":"e30","headers":{}}"#[..], "padded"),
            (br#"{"protocol":"choria:transport:1","data":"e3%=","headers":{}}"#, "base64"),
            (br#"{"protocol":"choria:transport:1","data":"","headers":{}}"#, "empty"),
            (br#"{"protocol":"choria:transport:1","data":"e30=","headers":{"federation":{"req":"x"}}}"#, "at least 32"),
            (br#"{"protocol":"choria:transport:2","data":"e30=","headers":{}}"#, "protocol"),
        ] {
            let err = RelayTransport::decode(bytes, &LIMITS).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }
}
