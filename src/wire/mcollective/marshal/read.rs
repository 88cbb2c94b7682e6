//! Reading a Marshal document into [`Node`]s as Ruby wrote them, within the depth and value
//! limits, refusing links that point nowhere or into a container still being read.

use super::{
    ARRAY, BIGNUM, Encoding, FALSE, FIXNUM, FIXNUM_RANGE, FLOAT, HASH, IVAR, LINK, MAX_DEPTH,
    MAX_VALUES, NIL, Node, STRING, SYMBOL, SYMLINK, TRUE, parse_float,
};
use crate::wire::mcollective::LegacyError;

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
            BIGNUM => self.bignum()?,
            FLOAT => self.float()?,
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
            LINK => self.link()?,
            ARRAY => self.array(depth)?,
            HASH => self.hash(depth)?,
            other => {
                self.pos = at;
                return self.fail(format!(
                    "type {:?} is not one MCollective uses",
                    other as char
                ));
            }
        })
    }

    /// `l`: an Integer beyond the Fixnum range, little-endian in 16-bit words.
    fn bignum(&mut self) -> Result<Node, LegacyError> {
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
        Ok(Node::Int(n))
    }

    /// `f`: a Float as its decimal text, which must read as a number.
    fn float(&mut self) -> Result<Node, LegacyError> {
        let len = self.length()?;
        let text = self.take(len)?;
        let Ok(text) = std::str::from_utf8(text) else {
            return self.fail("float text that is not ASCII");
        };
        let text = text.to_string();
        parse_float(&text)?;
        self.objects.push(false);
        Ok(Node::Float(text))
    }

    /// `@`: a link to an object read earlier, and not to a container still being read.
    fn link(&mut self) -> Result<Node, LegacyError> {
        let index = self.length_unbounded()?;
        match self.objects.get(index) {
            Some(false) => Ok(Node::Link(index)),
            Some(true) => self.fail(format!(
                "object link @{index} refers to a container that holds it"
            )),
            None => self.fail(format!("object link @{index} refers to no object")),
        }
    }

    /// `[`: an Array, open in the object table while its items are read.
    fn array(&mut self, depth: usize) -> Result<Node, LegacyError> {
        let len = self.length()?;
        let index = self.objects.len();
        self.objects.push(true);
        let mut items = Vec::with_capacity(len.min(1024));
        for _ in 0..len {
            items.push(self.node(depth + 1)?);
        }
        self.objects[index] = false;
        Ok(Node::Array(items))
    }

    /// `{`: a Hash, open in the object table while its pairs are read.
    fn hash(&mut self, depth: usize) -> Result<Node, LegacyError> {
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
        Ok(Node::Hash(pairs))
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
