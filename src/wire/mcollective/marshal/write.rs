//! Writing [`Node`]s as Marshal bytes, symbols written once and linked after.

use super::{
    ARRAY, BIGNUM, Encoding, FALSE, FIXNUM, FIXNUM_RANGE, FLOAT, HASH, IVAR, LINK, NIL, Node,
    STRING, SYMBOL, SYMLINK, TRUE,
};

/// Writes a document as [`decode_raw`](super::decode_raw) read it.
pub fn encode_raw(node: &Node) -> Vec<u8> {
    let mut writer = Writer {
        out: vec![4, 8],
        symbols: Vec::new(),
    };
    writer.node(node);
    writer.out
}

pub(super) struct Writer {
    pub(super) out: Vec<u8>,
    pub(super) symbols: Vec<String>,
}

impl Writer {
    /// Ruby's `w_long`.
    pub(super) fn long(&mut self, n: i64) {
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
            Node::Int(n) => self.bignum(*n),
            Node::Float(text) => {
                self.out.push(FLOAT);
                self.bytes(text.as_bytes());
            }
            Node::Str(bytes, Encoding::Binary) => {
                self.out.push(STRING);
                self.bytes(bytes);
            }
            Node::Str(bytes, encoding) => self.encoded_string(bytes, encoding),
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

    /// `l`: an Integer beyond the Fixnum range, little-endian in 16-bit words.
    fn bignum(&mut self, n: i64) {
        self.out.push(BIGNUM);
        self.out.push(if n < 0 { b'-' } else { b'+' });
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

    /// `I"`: a String with the ivar that names its encoding.
    fn encoded_string(&mut self, bytes: &[u8], encoding: &Encoding) {
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
}
