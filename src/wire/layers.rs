//! What every Choria layer shares, in either protocol version: the `protocol` marker that
//! accepts only its own name, decoding with that marker's error, schema length checks, and
//! serializing.

use serde::{Deserialize, Serialize};

use super::{DecodeError, Layer};

/// A fixed protocol marker that only accepts its own name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Protocol<const L: u8>;

macro_rules! protocol_marker {
    ($id:literal, $layer:expr) => {
        impl Serialize for Protocol<$id> {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                ser.serialize_str($layer.protocol())
            }
        }

        impl<'de> Deserialize<'de> for Protocol<$id> {
            fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
                let found = <std::borrow::Cow<'de, str>>::deserialize(de)?;
                if found == $layer.protocol() {
                    Ok(Protocol)
                } else {
                    Err(serde::de::Error::custom(format!(
                        "{PROTOCOL_MISMATCH}{found}"
                    )))
                }
            }
        }
    };
}

/// Marker inside serde errors that [`fix_protocol_error`] turns into [`DecodeError::Protocol`].
const PROTOCOL_MISMATCH: &str = "protocol mismatch: ";

protocol_marker!(0, Layer::Transport);
protocol_marker!(1, Layer::SecureRequest);
protocol_marker!(2, Layer::Request);
protocol_marker!(3, Layer::SecureReply);
protocol_marker!(4, Layer::Reply);
protocol_marker!(5, Layer::TransportV2);
protocol_marker!(6, Layer::SecureRequestV2);
protocol_marker!(7, Layer::RequestV2);
protocol_marker!(8, Layer::SecureReplyV2);
protocol_marker!(9, Layer::ReplyV2);

/// Parses one layer and turns a wrong `protocol` value into a [`DecodeError::Protocol`].
pub(crate) fn decode_layer<'a, T: Deserialize<'a>>(
    layer: Layer,
    bytes: &'a [u8],
    limit: usize,
) -> Result<T, DecodeError> {
    super::from_json(layer, bytes, limit).map_err(|err| match err {
        DecodeError::Json { path, message, .. }
            if path == "protocol" && message.starts_with(PROTOCOL_MISMATCH) =>
        {
            DecodeError::Protocol {
                layer,
                found: message[PROTOCOL_MISMATCH.len()..].to_string(),
            }
        }
        other => other,
    })
}

/// Checks a string field's length in characters against the schema's bounds.
pub(crate) fn check_len(
    layer: Layer,
    field: &str,
    value: &str,
    min: usize,
    max: Option<usize>,
) -> Result<(), DecodeError> {
    let len = value.chars().count();
    if len < min {
        let problem = if min == 1 {
            "must not be empty".to_string()
        } else {
            format!("must be at least {min} characters, found {len}")
        };
        return Err(DecodeError::field(layer, field, problem));
    }
    if let Some(max) = max.filter(|max| len > *max) {
        return Err(DecodeError::field(
            layer,
            field,
            format!("must be at most {max} characters, found {len}"),
        ));
    }
    Ok(())
}

/// Serializes a wire struct; these types hold only strings, numbers and maps, so this cannot fail.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    to_json_sized(value, 256)
}

/// [`to_json`] as a `String`, for JSON that is carried inside another JSON string.
pub(crate) fn to_json_string<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|err| unreachable!("wire type serializes: {err}"))
}

/// [`to_json`] into a buffer of `capacity` bytes, for large messages on hot paths.
pub(crate) fn to_json_sized<T: Serialize + ?Sized>(value: &T, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut out, value)
        .unwrap_or_else(|err| unreachable!("wire type serializes: {err}"));
    out
}
