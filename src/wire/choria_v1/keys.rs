//! Go reads JSON keys case-insensitively; refuse case variants of known fields in signed layers.
//!
//! go-choria decodes with `encoding/json`, which matches `"CallerID"` to the `callerid` field and
//! lets the last of two such keys win. serde matches exact names only. A signed document that
//! says `"callerid":"choria=alice.mcollective","CallerID":"choria=bob.mcollective"` would be
//! alice to fedgate and bob to every Go server, so any key that folds to a known field without
//! being it is refused.

use serde_json::Value;

use crate::gostd::equal_fold;
use crate::wire::{DecodeError, Layer};

/// The known fields of a JSON document, level by level.
pub(crate) enum Shape {
    /// A value whose keys are not checked.
    Leaf,
    /// An object with these fields.
    Object(&'static [(&'static str, Shape)]),
    /// An array of values of this shape.
    Array(&'static Shape),
}

pub(crate) const LEAF: Shape = Shape::Leaf;
const FACT: Shape = Shape::Object(&[("fact", LEAF), ("operator", LEAF), ("value", LEAF)]);
pub(crate) const FILTER: Shape = Shape::Object(&[
    ("fact", Shape::Array(&FACT)),
    ("cf_class", LEAF),
    ("agent", LEAF),
    ("identity", LEAF),
    ("compound", LEAF),
]);
const ENVELOPE: Shape = Shape::Object(&[
    ("requestid", LEAF),
    ("senderid", LEAF),
    ("callerid", LEAF),
    ("collective", LEAF),
    ("agent", LEAF),
    ("ttl", LEAF),
    ("time", LEAF),
    ("filter", FILTER),
]);
/// `choria:request:1`.
pub(crate) const REQUEST: Shape = Shape::Object(&[
    ("protocol", LEAF),
    ("message", LEAF),
    ("envelope", ENVELOPE),
]);
/// `choria:secure:request:1`.
pub(crate) const SECURE_REQUEST: Shape = Shape::Object(&[
    ("protocol", LEAF),
    ("message", LEAF),
    ("signature", LEAF),
    ("pubcert", LEAF),
]);
/// The mcorpc request body.
pub(crate) const RPC_REQUEST: Shape =
    Shape::Object(&[("agent", LEAF), ("action", LEAF), ("data", LEAF)]);

/// Refuses `bytes` when any object key is a case variant of a known field at its place.
pub(crate) fn refuse_case_variants(
    layer: Layer,
    bytes: &[u8],
    shape: &Shape,
) -> Result<(), DecodeError> {
    // Only called after the typed decode succeeded, so the document is valid JSON.
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return Ok(());
    };
    check(layer, &value, shape, "")
}

fn check(layer: Layer, value: &Value, shape: &Shape, path: &str) -> Result<(), DecodeError> {
    match (shape, value) {
        (Shape::Object(fields), Value::Object(map)) => {
            for (key, child) in map {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if let Some((_, field_shape)) = fields.iter().find(|(name, _)| name == key) {
                    check(layer, child, field_shape, &at)?;
                } else if let Some((name, _)) =
                    fields.iter().find(|(name, _)| equal_fold(name, key))
                {
                    return Err(DecodeError::field(
                        layer,
                        at,
                        format!(
                            "is a case variant of `{name}`, which Go would read as `{name}`; refused"
                        ),
                    ));
                }
            }
            Ok(())
        }
        (Shape::Array(item), Value::Array(items)) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, child)| check(layer, child, item, &format!("{path}[{i}]"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_variants_of_known_fields_are_refused_at_any_depth() {
        let ok = br#"{"protocol":"x","message":"m","envelope":{"callerid":"a","extra":1,"filter":{"fact":[{"fact":"f"}]}}}"#;
        assert_eq!(refuse_case_variants(Layer::Request, ok, &REQUEST), Ok(()));
        for (bad, at) in [
            (
                &br#"{"envelope":{"callerid":"a","CallerID":"b"}}"#[..],
                "envelope.CallerID",
            ),
            (
                br#"{"envelope":{"filter":{"Agent":["x"]}}}"#,
                "envelope.filter.Agent",
            ),
            (
                br#"{"envelope":{"filter":{"fact":[{"fact":"a","Value":"b"}]}}}"#,
                "envelope.filter.fact[0].Value",
            ),
            (br#"{"Message":"m"}"#, "Message"),
            // Go also folds the Kelvin sign and the long s.
            (
                "{\"envelope\":{\"\u{17f}enderid\":\"x\"}}".as_bytes(),
                "envelope.\u{17f}enderid",
            ),
        ] {
            match refuse_case_variants(Layer::Request, bad, &REQUEST) {
                Err(DecodeError::Field { field, .. }) => assert_eq!(field, at),
                other => panic!("{at}: {other:?}"),
            }
        }
        let body = br#"{"agent":"rpcutil","action":"ping","Action":"shutdown"}"#;
        assert!(refuse_case_variants(Layer::RpcRequest, body, &RPC_REQUEST).is_err());
    }
}
