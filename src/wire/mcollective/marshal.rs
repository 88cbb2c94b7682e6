//! Ruby Marshal 4.8, the subset MCollective's `ssl` plugin writes: nil, true, false, Fixnum,
//! Bignum, Float, String (with its encoding), Symbol and symlink, object link, Array and Hash.
//! Anything else (objects, user types, regexps, hashes with defaults) is refused.
//!
//! [`decode_raw`] keeps what Ruby wrote (object links, float text, string encodings), so
//! [`encode_raw`] gives back the same bytes; [`decode`] resolves links into a [`Ruby`] tree with
//! a bound on how much the links may expand. Symbol links are not kept: Ruby writes the first
//! use of a symbol in full and later ones as links, and so does the encoder.

mod read;
mod resolve;
#[cfg(test)]
mod tests;
mod write;

use super::{LegacyError, Ruby};

pub use read::decode_raw;
pub use resolve::resolve;
pub use write::encode_raw;

/// Most nesting of arrays and hashes.
pub const MAX_DEPTH: usize = 32;
/// Most values in one document as written.
pub const MAX_VALUES: usize = 100_000;
/// Most a document may weigh once its links are expanded (values plus string bytes): a link
/// to a large string must not multiply it.
pub const MAX_EXPANDED: usize = 4 * 1024 * 1024;

const NIL: u8 = b'0';
const TRUE: u8 = b'T';
const FALSE: u8 = b'F';
const FIXNUM: u8 = b'i';
const BIGNUM: u8 = b'l';
const FLOAT: u8 = b'f';
const STRING: u8 = b'"';
const SYMBOL: u8 = b':';
const SYMLINK: u8 = b';';
const LINK: u8 = b'@';
const ARRAY: u8 = b'[';
const HASH: u8 = b'{';
const IVAR: u8 = b'I';

/// A string's encoding, as its ivars say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// No ivars: ASCII-8BIT.
    Binary,
    /// `E` true.
    Utf8,
    /// `E` false.
    UsAscii,
    /// `encoding` with a name.
    Named(String),
}

/// A value as Ruby wrote it.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// `nil`.
    Nil,
    /// `true`.
    True,
    /// `false`.
    False,
    /// An Integer (Fixnum or Bignum, by range).
    Int(i64),
    /// A Float, as its decimal text.
    Float(String),
    /// A String.
    Str(Vec<u8>, Encoding),
    /// A Symbol.
    Symbol(String),
    /// An Array.
    Array(Vec<Node>),
    /// A Hash, in insertion order.
    Hash(Vec<(Node, Node)>),
    /// The object with this index in the object table.
    Link(usize),
}

/// Ruby writes Integers in this range as Fixnums, others as Bignums.
const FIXNUM_RANGE: std::ops::RangeInclusive<i64> = -(1 << 30)..=(1 << 30) - 1;

/// Reads a Marshal document into values, links resolved.
pub fn decode(bytes: &[u8]) -> Result<Ruby, LegacyError> {
    resolve(&decode_raw(bytes)?)
}

/// Writes values: text as UTF-8 Strings, bytes as binary Strings, no links.
pub fn encode(value: &Ruby) -> Vec<u8> {
    encode_raw(&to_node(value))
}

fn to_node(value: &Ruby) -> Node {
    match value {
        Ruby::Nil => Node::Nil,
        Ruby::Bool(true) => Node::True,
        Ruby::Bool(false) => Node::False,
        Ruby::Int(n) => Node::Int(*n),
        Ruby::Float(f) => Node::Float(float_text(*f)),
        Ruby::Str(s) => Node::Str(s.as_bytes().to_vec(), Encoding::Utf8),
        Ruby::Bytes(b) => Node::Str(b.clone(), Encoding::Binary),
        Ruby::Symbol(s) => Node::Symbol(s.clone()),
        Ruby::Array(items) => Node::Array(items.iter().map(to_node).collect()),
        Ruby::Hash(pairs) => Node::Hash(
            pairs
                .iter()
                .map(|(k, v)| (to_node(k), to_node(v)))
                .collect(),
        ),
    }
}

/// Ruby's text for a Float: `inf`, `-inf`, `nan`, or the shortest decimal that reads back.
fn float_text(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.into()
    } else if f == 0.0 {
        if f.is_sign_negative() { "-0" } else { "0" }.into()
    } else {
        format!("{f}")
    }
}

/// The value of a Float's text as Ruby writes it (`inf`, `-inf`, `nan` or a decimal).
fn parse_float(text: &str) -> Result<f64, LegacyError> {
    match text {
        "inf" => Ok(f64::INFINITY),
        "-inf" => Ok(f64::NEG_INFINITY),
        "nan" => Ok(f64::NAN),
        _ => text
            .parse()
            .map_err(|_| LegacyError::marshal(0, format!("float {text:?} is not a number"))),
    }
}
