//! The known fields of each signed v2 layer, for the case-variant check that v1 also applies:
//! Go's `encoding/json` folds key case, serde does not (see `choria_v1::keys`).

use crate::wire::choria_v1::keys::{FILTER, LEAF, Shape};

/// `io.choria.protocol.v2.request`.
pub(crate) const REQUEST: Shape = Shape::Object(&[
    ("protocol", LEAF),
    ("message", LEAF),
    ("id", LEAF),
    ("sender", LEAF),
    ("caller", LEAF),
    ("collective", LEAF),
    ("agent", LEAF),
    ("ttl", LEAF),
    ("time", LEAF),
    ("filter", FILTER),
]);
/// `io.choria.protocol.v2.secure_request`.
pub(crate) const SECURE_REQUEST: Shape = Shape::Object(&[
    ("protocol", LEAF),
    ("request", LEAF),
    ("signature", LEAF),
    ("caller", LEAF),
    ("signer", LEAF),
]);
/// `io.choria.protocol.v2.reply`.
pub(crate) const REPLY: Shape = Shape::Object(&[
    ("protocol", LEAF),
    ("message", LEAF),
    ("request", LEAF),
    ("sender", LEAF),
    ("agent", LEAF),
    ("time", LEAF),
]);
/// `io.choria.protocol.v2.secure_reply`.
pub(crate) const SECURE_REPLY: Shape = Shape::Object(&[
    ("protocol", LEAF),
    ("reply", LEAF),
    ("hash", LEAF),
    ("signature", LEAF),
    ("sender", LEAF),
]);
