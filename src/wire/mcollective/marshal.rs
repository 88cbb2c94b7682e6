//! Ruby Marshal 4.8, the subset MCollective's `ssl` plugin writes: nil, true, false, Fixnum,
//! Bignum, Float, String (with its encoding), Symbol and symlink, object link, Array and Hash.
//! Anything else (objects, user types, regexps, hashes with defaults) is refused.
//!
//! [`decode_raw`] keeps what Ruby wrote (object links, float text, string encodings), so
//! [`encode_raw`] gives back the same bytes; [`decode`] resolves links into a [`Ruby`] tree with
//! a bound on how much the links may expand. Symbol links are not kept: Ruby writes the first
//! use of a symbol in full and later ones as links, and so does the encoder.

use super::{LegacyError, Ruby};

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

/// Reads a Marshal document as written.
pub fn decode_raw(bytes: &[u8]) -> Result<Node, LegacyError> {
    let mut reader = Reader {
        input: bytes,
        pos: 0,
        symbols: Vec::new(),
        objects: Vec::new(),
        values: 0,
    };
    match (reader.byte()?, reader.byte()?) {
        (4, 8) => {}
        (major, minor) => {
            return Err(LegacyError::marshal(
                0,
                format!("version {major}.{minor}, expected 4.8"),
            ));
        }
    }
    let node = reader.node(0)?;
    if reader.pos != bytes.len() {
        return Err(LegacyError::marshal(
            reader.pos,
            format!("{} bytes after the value", bytes.len() - reader.pos),
        ));
    }
    Ok(node)
}

/// Reads a Marshal document into values, links resolved.
pub fn decode(bytes: &[u8]) -> Result<Ruby, LegacyError> {
    resolve(&decode_raw(bytes)?)
}

/// Writes a document as [`decode_raw`] read it.
pub fn encode_raw(node: &Node) -> Vec<u8> {
    let mut writer = Writer {
        out: vec![4, 8],
        symbols: Vec::new(),
    };
    writer.node(node);
    writer.out
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

/// What one object-table slot holds while the tree is resolved.
enum Slot {
    /// A container still being read: a link to it is a cycle.
    Open,
    Done(Ruby),
}

/// Resolves links by walking the tree in the order Ruby numbered its objects.
pub fn resolve(root: &Node) -> Result<Ruby, LegacyError> {
    let mut table = Vec::new();
    let mut weight = 0usize;
    resolve_node(root, &mut table, &mut weight, 0)
}

fn too_heavy() -> LegacyError {
    LegacyError::marshal(
        0,
        format!("more than {MAX_EXPANDED} bytes of values once links are expanded"),
    )
}

/// How deep containers nest in `value`: 0 for a scalar.
fn nesting(value: &Ruby) -> usize {
    match value {
        Ruby::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Ruby::Hash(pairs) => {
            1 + pairs
                .iter()
                .map(|(k, v)| nesting(k).max(nesting(v)))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// `node`, at `depth`, with its links expanded: no heavier than [`MAX_EXPANDED`] and no deeper
/// than [`MAX_DEPTH`] (a link to a deep container inside another must not nest past it, or the
/// value could not be written and read again).
fn resolve_node(
    node: &Node,
    table: &mut Vec<Slot>,
    weight: &mut usize,
    depth: usize,
) -> Result<Ruby, LegacyError> {
    *weight += 1 + match node {
        Node::Str(bytes, _) => bytes.len(),
        Node::Symbol(name) => name.len(),
        _ => 0,
    };
    if *weight > MAX_EXPANDED {
        return Err(too_heavy());
    }
    let value = match node {
        Node::Nil => Ruby::Nil,
        Node::True => Ruby::Bool(true),
        Node::False => Ruby::Bool(false),
        Node::Int(n) => {
            let value = Ruby::Int(*n);
            if !FIXNUM_RANGE.contains(n) {
                table.push(Slot::Done(value.clone()));
            }
            value
        }
        Node::Float(text) => {
            let value = Ruby::Float(parse_float(text)?);
            table.push(Slot::Done(value.clone()));
            value
        }
        Node::Str(bytes, encoding) => {
            let value = match encoding {
                Encoding::Binary => Ruby::Bytes(bytes.clone()),
                _ => match String::from_utf8(bytes.clone()) {
                    Ok(text) => Ruby::Str(text),
                    Err(_) => Ruby::Bytes(bytes.clone()),
                },
            };
            table.push(Slot::Done(value.clone()));
            if let Encoding::Named(name) = encoding {
                table.push(Slot::Done(Ruby::Str(name.clone())));
            }
            value
        }
        Node::Symbol(name) => Ruby::Symbol(name.clone()),
        Node::Array(items) => {
            let index = table.len();
            table.push(Slot::Open);
            let items = items
                .iter()
                .map(|item| resolve_node(item, table, weight, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            let value = Ruby::Array(items);
            table[index] = Slot::Done(value.clone());
            value
        }
        Node::Hash(pairs) => {
            let index = table.len();
            table.push(Slot::Open);
            let mut out = Vec::with_capacity(pairs.len());
            for (key, value) in pairs {
                let key = resolve_node(key, table, weight, depth + 1)?;
                let value = resolve_node(value, table, weight, depth + 1)?;
                out.push((key, value));
            }
            let value = Ruby::Hash(out);
            table[index] = Slot::Done(value.clone());
            value
        }
        Node::Link(index) => match table.get(*index) {
            Some(Slot::Done(value)) => {
                *weight += value.weight();
                if *weight > MAX_EXPANDED {
                    return Err(too_heavy());
                }
                if depth + nesting(value) > MAX_DEPTH {
                    return Err(LegacyError::marshal(
                        0,
                        format!("nested deeper than {MAX_DEPTH} once links are expanded"),
                    ));
                }
                value.clone()
            }
            Some(Slot::Open) => {
                return Err(LegacyError::marshal(
                    0,
                    format!("object link @{index} refers to a container that holds it"),
                ));
            }
            None => {
                return Err(LegacyError::marshal(
                    0,
                    format!("object link @{index} refers to no object"),
                ));
            }
        },
    };
    Ok(value)
}

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

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
    symbols: Vec<String>,
    /// One entry per object read: whether it is a container still being read.
    objects: Vec<bool>,
    values: usize,
}

impl Reader<'_> {
    fn fail<T>(&self, message: impl Into<String>) -> Result<T, LegacyError> {
        Err(LegacyError::marshal(self.pos, message))
    }

    fn byte(&mut self) -> Result<u8, LegacyError> {
        let Some(&b) = self.input.get(self.pos) else {
            return self.fail("ends early");
        };
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], LegacyError> {
        if n > self.input.len() - self.pos {
            return self.fail(format!(
                "a length of {n} runs past the end ({} bytes left)",
                self.input.len() - self.pos
            ));
        }
        let slice = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    /// Ruby's `w_long` packing.
    fn long(&mut self) -> Result<i64, LegacyError> {
        let c = self.byte()? as i8;
        Ok(match c {
            0 => 0,
            5..=127 => i64::from(c) - 5,
            -128..=-5 => i64::from(c) + 5,
            1..=4 => {
                let mut n = 0i64;
                for i in 0..c {
                    n |= i64::from(self.byte()?) << (8 * i);
                }
                n
            }
            -4..=-1 => {
                let mut n = -1i64;
                for i in 0..(-c) {
                    n &= !(0xff << (8 * i));
                    n |= i64::from(self.byte()?) << (8 * i);
                }
                n
            }
        })
    }

    fn length(&mut self) -> Result<usize, LegacyError> {
        let n = self.long()?;
        let Ok(n) = usize::try_from(n) else {
            return self.fail(format!("negative length {n}"));
        };
        // Every element takes at least a byte, so no honest length exceeds what is left.
        if n > self.input.len() - self.pos {
            return self.fail(format!(
                "a length of {n} runs past the end ({} bytes left)",
                self.input.len() - self.pos
            ));
        }
        Ok(n)
    }

    fn symbol_body(&mut self) -> Result<String, LegacyError> {
        let len = self.length()?;
        let bytes = self.take(len)?.to_vec();
        let Ok(name) = String::from_utf8(bytes) else {
            return self.fail("a symbol that is not UTF-8");
        };
        self.symbols.push(name.clone());
        Ok(name)
    }

    /// A symbol where one must be: `:` new, or `;` a link to an earlier one.
    fn symbol(&mut self) -> Result<String, LegacyError> {
        match self.byte()? {
            SYMBOL => self.symbol_body(),
            SYMLINK => {
                let index = self.length_unbounded()?;
                match self.symbols.get(index) {
                    Some(name) => Ok(name.clone()),
                    None => self.fail(format!("symbol link ;{index} refers to no symbol")),
                }
            }
            other => self.fail(format!("expected a symbol, found {:?}", other as char)),
        }
    }

    fn length_unbounded(&mut self) -> Result<usize, LegacyError> {
        let n = self.long()?;
        usize::try_from(n).or_else(|_| self.fail(format!("negative index {n}")))
    }

    fn node(&mut self, depth: usize) -> Result<Node, LegacyError> {
        if depth > MAX_DEPTH {
            return self.fail(format!("nested deeper than {MAX_DEPTH}"));
        }
        self.values += 1;
        if self.values > MAX_VALUES {
            return self.fail(format!("more than {MAX_VALUES} values"));
        }
        let at = self.pos;
        let tag = self.byte()?;
        Ok(match tag {
            NIL => Node::Nil,
            TRUE => Node::True,
            FALSE => Node::False,
            FIXNUM => {
                let n = self.long()?;
                // Ruby writes these as Bignums, which take a slot in the object table: read as
                // a Fixnum, every later link would point one object off once written again.
                if !FIXNUM_RANGE.contains(&n) {
                    return self.fail(format!("{n} written as a Fixnum"));
                }
                Node::Int(n)
            }
            BIGNUM => {
                let sign = self.byte()?;
                let shorts = self.length()?;
                let bytes = self.take(shorts * 2)?;
                if bytes.len() > 8 || (bytes.len() == 8 && bytes[7] & 0x80 != 0) {
                    return self.fail("an integer beyond 64 bits");
                }
                let mut n = 0i64;
                for (i, b) in bytes.iter().enumerate() {
                    n |= i64::from(*b) << (8 * i);
                }
                let n = match sign {
                    b'+' => n,
                    b'-' => -n,
                    other => return self.fail(format!("bignum sign {:?}", other as char)),
                };
                // Ruby writes these as Fixnums; a Bignum here would shift the object table.
                if FIXNUM_RANGE.contains(&n) {
                    return self.fail(format!("{n} written as a Bignum"));
                }
                self.objects.push(false);
                Node::Int(n)
            }
            FLOAT => {
                let len = self.length()?;
                let text = self.take(len)?;
                let Ok(text) = std::str::from_utf8(text) else {
                    return self.fail("float text that is not ASCII");
                };
                let text = text.to_string();
                parse_float(&text)?;
                self.objects.push(false);
                Node::Float(text)
            }
            STRING => {
                let len = self.length()?;
                let bytes = self.take(len)?.to_vec();
                self.objects.push(false);
                Node::Str(bytes, Encoding::Binary)
            }
            SYMBOL => Node::Symbol(self.symbol_body()?),
            SYMLINK => {
                self.pos = at;
                Node::Symbol(self.symbol()?)
            }
            IVAR => self.ivar()?,
            LINK => {
                let index = self.length_unbounded()?;
                match self.objects.get(index) {
                    Some(false) => Node::Link(index),
                    Some(true) => {
                        return self.fail(format!(
                            "object link @{index} refers to a container that holds it"
                        ));
                    }
                    None => return self.fail(format!("object link @{index} refers to no object")),
                }
            }
            ARRAY => {
                let len = self.length()?;
                let index = self.objects.len();
                self.objects.push(true);
                let mut items = Vec::with_capacity(len.min(1024));
                for _ in 0..len {
                    items.push(self.node(depth + 1)?);
                }
                self.objects[index] = false;
                Node::Array(items)
            }
            HASH => {
                let len = self.length()?;
                let index = self.objects.len();
                self.objects.push(true);
                let mut pairs = Vec::with_capacity(len.min(1024));
                for _ in 0..len {
                    let key = self.node(depth + 1)?;
                    let value = self.node(depth + 1)?;
                    pairs.push((key, value));
                }
                self.objects[index] = false;
                Node::Hash(pairs)
            }
            other => {
                self.pos = at;
                return self.fail(format!(
                    "type {:?} is not one MCollective uses",
                    other as char
                ));
            }
        })
    }

    /// `I`: a String followed by its encoding ivar.
    fn ivar(&mut self) -> Result<Node, LegacyError> {
        if self.byte()? != STRING {
            return self.fail("instance variables on something other than a String");
        }
        let len = self.length()?;
        let bytes = self.take(len)?.to_vec();
        self.objects.push(false);
        let count = self.length()?;
        if count != 1 {
            return self.fail(format!(
                "{count} instance variables on a String; only its encoding is allowed"
            ));
        }
        let name = self.symbol()?;
        let encoding = match name.as_str() {
            "E" => match self.byte()? {
                TRUE => Encoding::Utf8,
                FALSE => Encoding::UsAscii,
                other => return self.fail(format!("encoding flag {:?}", other as char)),
            },
            "encoding" => {
                if self.byte()? != STRING {
                    return self.fail("an encoding name that is not a String");
                }
                let len = self.length()?;
                let name = self.take(len)?.to_vec();
                self.objects.push(false);
                match String::from_utf8(name) {
                    Ok(name) => Encoding::Named(name),
                    Err(_) => return self.fail("an encoding name that is not text"),
                }
            }
            other => {
                return self.fail(format!(
                    "instance variable {other} on a String; only its encoding is allowed"
                ));
            }
        };
        Ok(Node::Str(bytes, encoding))
    }
}

struct Writer {
    out: Vec<u8>,
    symbols: Vec<String>,
}

impl Writer {
    /// Ruby's `w_long`.
    fn long(&mut self, n: i64) {
        match n {
            0 => self.out.push(0),
            1..=122 => self.out.push((n + 5) as u8),
            -123..=-1 => self.out.push((n - 5) as i8 as u8),
            _ => {
                let mut bytes = Vec::new();
                let mut x = n;
                for _ in 0..8 {
                    bytes.push((x & 0xff) as u8);
                    x >>= 8;
                    if (n >= 0 && x == 0) || (n < 0 && x == -1) {
                        break;
                    }
                }
                let len = bytes.len() as i8;
                self.out.push(if n >= 0 { len as u8 } else { (-len) as u8 });
                self.out.extend(bytes);
            }
        }
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.long(bytes.len() as i64);
        self.out.extend_from_slice(bytes);
    }

    fn symbol(&mut self, name: &str) {
        match self.symbols.iter().position(|s| s == name) {
            Some(index) => {
                self.out.push(SYMLINK);
                self.long(index as i64);
            }
            None => {
                self.out.push(SYMBOL);
                self.bytes(name.as_bytes());
                self.symbols.push(name.to_string());
            }
        }
    }

    fn node(&mut self, node: &Node) {
        match node {
            Node::Nil => self.out.push(NIL),
            Node::True => self.out.push(TRUE),
            Node::False => self.out.push(FALSE),
            Node::Int(n) if FIXNUM_RANGE.contains(n) => {
                self.out.push(FIXNUM);
                self.long(*n);
            }
            Node::Int(n) => {
                self.out.push(BIGNUM);
                self.out.push(if *n < 0 { b'-' } else { b'+' });
                let magnitude = n.unsigned_abs();
                let mut bytes = magnitude.to_le_bytes().to_vec();
                while bytes.len() > 1 && bytes[bytes.len() - 1] == 0 {
                    bytes.pop();
                }
                if bytes.len() % 2 == 1 {
                    bytes.push(0);
                }
                self.long((bytes.len() / 2) as i64);
                self.out.extend(bytes);
            }
            Node::Float(text) => {
                self.out.push(FLOAT);
                self.bytes(text.as_bytes());
            }
            Node::Str(bytes, Encoding::Binary) => {
                self.out.push(STRING);
                self.bytes(bytes);
            }
            Node::Str(bytes, encoding) => {
                self.out.push(IVAR);
                self.out.push(STRING);
                self.bytes(bytes);
                self.long(1);
                match encoding {
                    Encoding::Utf8 | Encoding::UsAscii => {
                        self.symbol("E");
                        self.out.push(if *encoding == Encoding::Utf8 {
                            TRUE
                        } else {
                            FALSE
                        });
                    }
                    Encoding::Named(name) => {
                        self.symbol("encoding");
                        self.out.push(STRING);
                        self.bytes(name.as_bytes());
                    }
                    Encoding::Binary => {}
                }
            }
            Node::Symbol(name) => self.symbol(name),
            Node::Array(items) => {
                self.out.push(ARRAY);
                self.long(items.len() as i64);
                for item in items {
                    self.node(item);
                }
            }
            Node::Hash(pairs) => {
                self.out.push(HASH);
                self.long(pairs.len() as i64);
                for (key, value) in pairs {
                    self.node(key);
                    self.node(value);
                }
            }
            Node::Link(index) => {
                self.out.push(LINK);
                self.long(*index as i64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_round_trip_at_every_boundary() {
        for n in [
            0,
            1,
            122,
            123,
            255,
            256,
            -1,
            -123,
            -124,
            -256,
            -257,
            65_535,
            65_536,
            (1 << 30) - 1,
            -(1 << 30),
        ] {
            let node = Node::Int(n);
            let bytes = encode_raw(&node);
            assert_eq!(decode_raw(&bytes).unwrap(), node, "{n}");
        }
    }

    #[test]
    fn fixnums_beyond_what_ruby_writes_as_fixnums_are_refused() {
        // [2**31 - 1, "s", @1]: read as a Fixnum and written again as the Bignum Ruby writes,
        // the link would point at the Bignum instead of the String (found by cargo fuzz).
        let bytes = [
            4, 8, b'[', 8, b'i', 4, 0xff, 0xff, 0xff, 0x7f, b'"', 6, b's', b'@', 6,
        ];
        let err = decode_raw(&bytes).unwrap_err();
        assert!(
            err.to_string().contains("2147483647 written as a Fixnum"),
            "{err}"
        );
        let fits = [
            4, 8, b'[', 7, b'i', 4, 0xff, 0xff, 0xff, 0x3f, b'"', 6, b's',
        ];
        assert!(decode_raw(&fits).is_ok());
    }

    #[test]
    fn links_cannot_nest_a_value_deeper_than_the_limit() {
        // [deep, [[[@1]]]] where deep nests 30 arrays: fine as written, 34 deep expanded
        // (found by cargo fuzz: the expanded value could not be encoded and read again).
        let mut deep = Node::Int(1);
        for _ in 0..30 {
            deep = Node::Array(vec![deep]);
        }
        let linked = Node::Array(vec![Node::Array(vec![Node::Array(vec![Node::Link(1)])])]);
        let bytes = encode_raw(&Node::Array(vec![deep.clone(), linked]));
        assert!(decode_raw(&bytes).is_ok());
        let err = decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("once links are expanded"), "{err}");
        // A shallow link is resolved.
        let near = encode_raw(&Node::Array(vec![deep, Node::Link(1)]));
        assert!(decode(&near).is_ok());
    }

    #[test]
    fn bignums_are_what_ruby_writes() {
        // 1795237728 as Ruby 3.1 wrote it in a captured :msgtime.
        let bytes = [4, 8, b'l', b'+', 7, 0x60, 0x27, 0x01, 0x6b];
        assert_eq!(decode(&bytes).unwrap(), Ruby::Int(1_795_237_728));
        assert_eq!(encode(&Ruby::Int(1_795_237_728)), bytes);
        let big = Ruby::Int(-(1i64 << 40));
        assert_eq!(decode(&encode(&big)).unwrap(), big);
    }

    #[test]
    fn strings_keep_their_encoding_and_symbols_link() {
        let node = Node::Hash(vec![
            (
                Node::Symbol("agent".into()),
                Node::Str(b"rpcutil".to_vec(), Encoding::Utf8),
            ),
            (
                Node::Symbol("action".into()),
                Node::Str(b"ping".to_vec(), Encoding::UsAscii),
            ),
            (Node::Symbol("body".into()), Node::Link(1)),
        ]);
        let bytes = encode_raw(&node);
        // The second E is a symlink to the first.
        assert!(bytes.windows(3).any(|w| w == [b';', 6, b'F']));
        assert_eq!(decode_raw(&bytes).unwrap(), node);
        let Ruby::Hash(pairs) = decode(&bytes).unwrap() else {
            panic!("not a hash")
        };
        assert_eq!(pairs[2].1, Ruby::Str("rpcutil".into()));
    }

    #[test]
    fn malformed_input_is_a_typed_error() {
        let cases: &[&[u8]] = &[
            b"",
            &[4, 9, b'0'],
            &[4, 8],
            &[4, 8, b'"', 0x7f],
            &[4, 8, b'o', b':', 6, b'X', 0],
            &[4, 8, b'@', 6],
            &[4, 8, b'[', 6, b'@', 0],
            &[4, 8, b';', 0],
            &[4, 8, b'I', b'"', 6, b'a', 6, b':', 6, b'X', b'T'],
            &[4, 8, b'0', b'0'],
            &[4, 8, b'f', 6, b'x'],
            &[4, 8, b'[', 4, 0xff, 0xff, 0xff, 0x7f],
        ];
        for case in cases {
            assert!(decode(case).is_err(), "{case:?}");
        }
        // Deep nesting is refused, not a stack overflow.
        let mut deep = vec![4, 8];
        deep.extend(std::iter::repeat_n([b'[', 6], 10_000).flatten());
        deep.push(b'0');
        assert!(decode(&deep).is_err());
    }

    #[test]
    fn a_link_to_a_large_string_cannot_multiply_it() {
        // 600 links to one 64 KiB string: 38 MiB once expanded, from a 66 KiB document.
        let mut bytes = vec![4, 8, b'['];
        let mut writer = Writer {
            out: Vec::new(),
            symbols: Vec::new(),
        };
        writer.long(601);
        bytes.extend(writer.out);
        bytes.push(b'"');
        let mut writer = Writer {
            out: Vec::new(),
            symbols: Vec::new(),
        };
        writer.long(64 * 1024);
        bytes.extend(writer.out);
        bytes.extend(std::iter::repeat_n(b'x', 64 * 1024));
        for _ in 0..600 {
            bytes.extend([b'@', 6]);
        }
        assert!(decode_raw(&bytes).is_ok());
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn links_cannot_expand_without_bound() {
        // Each array holds the previous one twice: 2^39 values once expanded, 40 as written.
        let mut bytes = vec![4, 8, b'[', 5 + 40];
        bytes.extend([b'[', 0]);
        for i in 1..40u8 {
            bytes.extend([b'[', 7, b'@', i + 5, b'@', i + 5]);
        }
        assert!(decode_raw(&bytes).is_ok());
        let result = decode(&bytes);
        assert!(result.is_err(), "{result:?}");
    }
}
