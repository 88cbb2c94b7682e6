//! YAML as MCollective's `ssl` plugin reads and writes it with Psych 4: `safe_load` with
//! Symbol allowed and aliases refused, YAML 1.1 scalars, and Psych's own dump layout.
//!
//! Parsing uses yaml-rust2's event parser, which reports each scalar's style, so a plain
//! `:agent` is a Symbol and a quoted `':agent'` a String, exactly as Psych decides. Writing
//! follows Psych's `visit_String` choices (plain, quoted, `|` literal) and its block layout, so a
//! captured message decodes and encodes back to the same bytes.

use base64::Engine as _;
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::TScalarStyle;

use super::{LegacyError, Ruby};

/// Most nesting of sequences and mappings.
pub const MAX_DEPTH: usize = 32;
/// Most values in one document.
pub const MAX_VALUES: usize = 100_000;

/// Reads one YAML document.
pub fn decode(bytes: &[u8]) -> Result<Ruby, LegacyError> {
    let text = std::str::from_utf8(bytes).map_err(|e| LegacyError::yaml(0, e.to_string()))?;
    let mut reader = Reader {
        parser: Parser::new_from_str(text),
        values: 0,
        line: 0,
    };
    reader.expect(|e| matches!(e, Event::StreamStart), "a stream")?;
    reader.expect(|e| matches!(e, Event::DocumentStart), "a document")?;
    let first = reader.next()?;
    let value = reader.value(first, 0)?;
    reader.expect(
        |e| matches!(e, Event::DocumentEnd),
        "the end of the document",
    )?;
    reader.expect(|e| matches!(e, Event::StreamEnd), "one document only")?;
    Ok(value)
}

struct Reader<'a> {
    parser: Parser<std::str::Chars<'a>>,
    values: usize,
    line: usize,
}

impl Reader<'_> {
    fn next(&mut self) -> Result<Event, LegacyError> {
        let (event, mark) = self
            .parser
            .next_token()
            .map_err(|e| LegacyError::yaml(e.marker().line(), e.info().to_string()))?;
        self.line = mark.line();
        Ok(event)
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, LegacyError> {
        Err(LegacyError::yaml(self.line, message))
    }

    fn expect(&mut self, want: impl Fn(&Event) -> bool, what: &str) -> Result<(), LegacyError> {
        let event = self.next()?;
        if want(&event) {
            Ok(())
        } else {
            self.fail(format!("expected {what}, found {event:?}"))
        }
    }

    fn value(&mut self, event: Event, depth: usize) -> Result<Ruby, LegacyError> {
        if depth > MAX_DEPTH {
            return self.fail(format!("nested deeper than {MAX_DEPTH}"));
        }
        self.values += 1;
        if self.values > MAX_VALUES {
            return self.fail(format!("more than {MAX_VALUES} values"));
        }
        match event {
            Event::Scalar(text, style, _, tag) => self.scalar(text, style, tag),
            Event::SequenceStart(_, tag) => {
                self.no_tag(tag.as_ref())?;
                let mut items = Vec::new();
                loop {
                    match self.next()? {
                        Event::SequenceEnd => return Ok(Ruby::Array(items)),
                        event => items.push(self.value(event, depth + 1)?),
                    }
                }
            }
            Event::MappingStart(_, tag) => {
                self.no_tag(tag.as_ref())?;
                let mut pairs = Vec::new();
                loop {
                    let key = match self.next()? {
                        Event::MappingEnd => return Ok(Ruby::Hash(pairs)),
                        event => self.value(event, depth + 1)?,
                    };
                    let event = self.next()?;
                    let value = self.value(event, depth + 1)?;
                    pairs.push((key, value));
                }
            }
            Event::Alias(_) => self.fail("aliases are not allowed (Psych safe_load refuses them)"),
            other => self.fail(format!("unexpected {other:?}")),
        }
    }

    fn no_tag(&self, tag: Option<&Tag>) -> Result<(), LegacyError> {
        match tag {
            None => Ok(()),
            Some(tag) => self.fail(format!("tag {}{} is not allowed", tag.handle, tag.suffix)),
        }
    }

    fn scalar(
        &self,
        text: String,
        style: TScalarStyle,
        tag: Option<Tag>,
    ) -> Result<Ruby, LegacyError> {
        if let Some(tag) = tag {
            let name = format!("{}{}", tag.handle, tag.suffix);
            return match name.as_str() {
                "!ruby/symbol" | "!ruby/sym" => Ok(Ruby::Symbol(text)),
                "!binary" | "tag:yaml.org,2002:binary" => {
                    let compact: String = text.split_whitespace().collect();
                    base64::engine::general_purpose::STANDARD
                        .decode(compact)
                        .map(Ruby::Bytes)
                        .or_else(|e| self.fail(format!("!binary is not base64: {e}")))
                }
                "tag:yaml.org,2002:str" | "!str" => Ok(Ruby::Str(text)),
                _ => self.fail(format!("tag {name} is not allowed")),
            };
        }
        if style != TScalarStyle::Plain {
            return Ok(Ruby::Str(text));
        }
        match resolve_plain(&text) {
            Plain::Value(value) => Ok(value),
            Plain::Refused(why) => self.fail(why),
        }
    }
}

enum Plain {
    Value(Ruby),
    Refused(String),
}

/// Psych's `ScalarScanner#tokenize` for the types `safe_load` permits (Symbol added).
fn resolve_plain(text: &str) -> Plain {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Plain::Value(Ruby::Nil),
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
            return Plain::Value(Ruby::Bool(true));
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            return Plain::Value(Ruby::Bool(false));
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" => return Plain::Value(Ruby::Float(f64::INFINITY)),
        "-.inf" | "-.Inf" | "-.INF" => return Plain::Value(Ruby::Float(f64::NEG_INFINITY)),
        ".nan" | ".NaN" | ".NAN" => return Plain::Value(Ruby::Float(f64::NAN)),
        _ => {}
    }
    if let Some(name) = text.strip_prefix(':')
        && !name.is_empty()
    {
        let unquoted = name
            .strip_prefix('"')
            .and_then(|n| n.strip_suffix('"'))
            .or_else(|| name.strip_prefix('\'').and_then(|n| n.strip_suffix('\'')));
        return Plain::Value(Ruby::Symbol(unquoted.unwrap_or(name).to_string()));
    }
    if looks_like_time(text) {
        return Plain::Refused(format!(
            "{text:?} would load as a Date or Time, which Psych safe_load refuses"
        ));
    }
    if let Some(n) = integer(text) {
        return Plain::Value(Ruby::Int(n));
    }
    if is_float(text)
        && let Ok(f) = text.replace('_', "").parse::<f64>()
    {
        return Plain::Value(Ruby::Float(f));
    }
    Plain::Value(Ruby::Str(text.to_string()))
}

fn looks_like_time(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 8
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5].is_ascii_digit()
        && (b[6] == b'-' || (b[6].is_ascii_digit() && b[7] == b'-'))
}

/// YAML 1.1 integers as Psych reads them: decimal, `0x` hex, `0b` binary, `0` octal, with `_`.
fn integer(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    let value = if let Some(hex) = clean.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(bin) = clean.strip_prefix("0b") {
        i64::from_str_radix(bin, 2).ok()?
    } else if clean.len() > 1 && clean.starts_with('0') {
        i64::from_str_radix(&clean[1..], 8).ok()?
    } else if clean.bytes().all(|b| b.is_ascii_digit()) {
        clean.parse().ok()?
    } else {
        return None;
    };
    Some(if negative { -value } else { value })
}

fn is_float(text: &str) -> bool {
    let t = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let Some((whole, fraction)) = mantissa.split_once('.') else {
        return false;
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    (!whole.is_empty() || !fraction.is_empty())
        && digits(whole)
        && digits(fraction)
        && exponent.is_none_or(|e| {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Writes one document the way Psych 4 dumps it.
pub fn encode(value: &Ruby) -> String {
    let mut out = String::from("---");
    match value {
        Ruby::Hash(pairs) if !pairs.is_empty() => {
            out.push('\n');
            mapping(&mut out, pairs, 0, false);
        }
        Ruby::Array(items) if !items.is_empty() => {
            out.push('\n');
            sequence(&mut out, items, 0, false);
        }
        scalar_value => {
            out.push(' ');
            // A block scalar's lines are indented under `---`, as Psych writes them: a line
            // `...` or `---` at the margin would end the document (found by cargo fuzz).
            inline(&mut out, scalar_value, 2);
            out.push('\n');
        }
    }
    out
}

/// A mapping's lines at `indent`; `first_inline` when the first key follows a `- ` already
/// written.
fn mapping(out: &mut String, pairs: &[(Ruby, Ruby)], indent: usize, first_inline: bool) {
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 || !first_inline {
            out.push_str(&" ".repeat(indent));
        }
        match key {
            // `~`, not an empty key, which not every parser reads.
            Ruby::Nil => out.push('~'),
            key if simple_key(key) => inline(out, key, indent),
            // A collection, binary or multi-line key: YAML's explicit `? key` form.
            key => {
                out.push_str("? ");
                match key {
                    Ruby::Hash(inner) if !inner.is_empty() => {
                        mapping(out, inner, indent + 2, true);
                    }
                    Ruby::Array(inner) if !inner.is_empty() => {
                        sequence(out, inner, indent + 2, true);
                    }
                    scalar => {
                        inline(out, scalar, indent + 2);
                        out.push('\n');
                    }
                }
                out.push_str(&" ".repeat(indent));
            }
        }
        out.push(':');
        match value {
            Ruby::Hash(inner) if !inner.is_empty() => {
                out.push('\n');
                mapping(out, inner, indent + 2, false);
            }
            Ruby::Array(items) if !items.is_empty() => {
                out.push('\n');
                sequence(out, items, indent, false);
            }
            Ruby::Nil => out.push('\n'),
            scalar_value => {
                out.push(' ');
                inline(out, scalar_value, indent + 2);
                out.push('\n');
            }
        }
    }
}

fn sequence(out: &mut String, items: &[Ruby], indent: usize, first_inline: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !first_inline {
            out.push_str(&" ".repeat(indent));
        }
        out.push('-');
        match item {
            Ruby::Hash(inner) if !inner.is_empty() => {
                out.push(' ');
                mapping(out, inner, indent + 2, true);
            }
            Ruby::Array(inner) if !inner.is_empty() => {
                out.push(' ');
                sequence(out, inner, indent + 2, true);
            }
            Ruby::Nil => out.push('\n'),
            scalar_value => {
                out.push(' ');
                inline(out, scalar_value, indent + 2);
                out.push('\n');
            }
        }
    }
}

/// A scalar, or an empty collection, after `key: ` or `- `; block literals continue on the
/// next lines at `indent`.
fn inline(out: &mut String, value: &Ruby, indent: usize) {
    match value {
        Ruby::Nil => {}
        Ruby::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Ruby::Int(n) => out.push_str(&n.to_string()),
        Ruby::Float(f) => out.push_str(&float_text(*f)),
        Ruby::Symbol(name) if plain_symbol(name) => {
            out.push(':');
            out.push_str(name);
        }
        // Anything else is written quoted and tagged, so no name can end the scalar early.
        Ruby::Symbol(name) => {
            out.push_str("!ruby/symbol ");
            double_quoted(out, name);
        }
        Ruby::Str(text) => string(out, text, indent),
        Ruby::Bytes(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => string(out, text, indent),
            Err(_) => {
                out.push_str("!binary |-\n");
                out.push_str(&" ".repeat(indent));
                out.push_str(&crate::wire::encode_base64(bytes));
            }
        },
        Ruby::Array(_) => out.push_str("[]"),
        Ruby::Hash(_) => out.push_str("{}"),
    }
}

/// A key that fits on its line before `:`.
fn simple_key(key: &Ruby) -> bool {
    let fits = match key {
        Ruby::Str(text) => !text.contains('\n'),
        Ruby::Bytes(bytes) => std::str::from_utf8(bytes).is_ok_and(|t| !t.contains('\n')),
        Ruby::Array(items) => items.is_empty(),
        Ruby::Hash(pairs) => pairs.is_empty(),
        _ => true,
    };
    // YAML limits a simple key to 1024 characters; longer ones take the explicit form (found
    // by cargo fuzz).
    fits && {
        let mut written = String::new();
        inline(&mut written, key, 0);
        written.chars().count() <= 1024
    }
}

/// A symbol Psych writes bare: a word, optionally ending in `?` or `!`.
fn plain_symbol(name: &str) -> bool {
    let word = name.strip_suffix(['?', '!']).unwrap_or(name);
    word.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Characters YAML treats as line breaks or that a block cannot hold; such text is written
/// double-quoted, with escapes.
fn needs_escapes(text: &str) -> bool {
    text.chars().any(|c| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}')
    })
}

/// Ruby's `Float#to_s`, which Psych uses.
fn float_text(f: f64) -> String {
    if f.is_nan() {
        ".nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { ".inf" } else { "-.inf" }.into()
    } else if f != 0.0 && (f.abs() >= 1e16 || f.abs() < 1e-4) {
        // 1.0e+16, 1.5e-05: an exponent of at least two digits and always a fraction, so it
        // reads back as a Float and not as an Integer (found by cargo fuzz).
        let text = format!("{f:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let fraction = if mantissa.contains('.') { "" } else { ".0" };
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(digits) => ('-', digits),
            None => ('+', exponent),
        };
        format!("{mantissa}{fraction}e{sign}{digits:0>2}")
    } else if f.fract() == 0.0 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// How Psych's `visit_String` and libyaml's scalar analysis write a string.
fn string(out: &mut String, text: &str, indent: usize) {
    if needs_escapes(text) {
        return double_quoted(out, text);
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    // A block whose first line is empty or starts with a space would need an indentation
    // indicator: its indentation is read off its first line that is not empty (found by cargo
    // fuzz).
    if body.contains('\n') && !text.starts_with([' ', '\n']) {
        return literal(out, text, indent);
    }
    if body.contains('\n') {
        return double_quoted(out, text);
    }
    let word_start = text
        .chars()
        .next()
        .is_some_and(|c| c.is_alphanumeric() || c == '_');
    if text == "y"
        || text == "Y"
        || text == "n"
        || text == "N"
        || text.chars().any(char::is_control)
    {
        return double_quoted(out, text);
    }
    if text == "<<" {
        return single_quoted(out, text);
    }
    if !word_start {
        if text.contains('"') {
            return single_quoted(out, text);
        }
        return double_quoted(out, text);
    }
    let reads_as_other = !matches!(resolve_plain(text), Plain::Value(Ruby::Str(_)))
        || (text.starts_with('0')
            && text[1..]
                .bytes()
                .find(|b| !(b'0'..=b'7').contains(b))
                .is_some_and(|b| b == b'8' || b == b'9'));
    let plain_unsafe = text.contains(": ")
        || text.ends_with(':')
        || text.contains(" #")
        || text.ends_with(' ')
        || text.contains('\t');
    if reads_as_other || plain_unsafe {
        return single_quoted(out, text);
    }
    out.push_str(text);
}

fn literal(out: &mut String, text: &str, indent: usize) {
    let trailing = text.len() - text.trim_end_matches('\n').len();
    out.push('|');
    match trailing {
        0 => out.push('-'),
        1 => {}
        _ => out.push('+'),
    }
    let pad = " ".repeat(indent);
    for line in text.trim_end_matches('\n').split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    for _ in 1..trailing {
        out.push('\n');
    }
    // The caller ends the line.
}

fn single_quoted(out: &mut String, text: &str) {
    out.push('\'');
    out.push_str(&text.replace('\'', "''"));
    out.push('\'');
}

fn double_quoted(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            '\u{feff}' => out.push_str("\\uFEFF"),
            c if c.is_control() => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psych_scalars_resolve_as_psych_does() {
        let doc = "---\n:a: 60\n:b: yes\n:c: ~\n:d: ':e'\n:f: 1.5\n:g: \"60\"\n:h: 2.12.5\n:i: cert=alice\n";
        let value = decode(doc.as_bytes()).unwrap();
        assert_eq!(value.get("a"), Some(&Ruby::Int(60)));
        assert_eq!(value.get("b"), Some(&Ruby::Bool(true)));
        assert_eq!(value.get("c"), Some(&Ruby::Nil));
        assert_eq!(value.get("d"), Some(&Ruby::str(":e")));
        assert_eq!(value.get("f"), Some(&Ruby::Float(1.5)));
        // A key too long to be a simple key is written in the explicit form.
        let long = Ruby::Hash(vec![(Ruby::Str("k".repeat(1100)), Ruby::Int(1))]);
        assert!(encode(&long).starts_with("---\n? "), "{}", encode(&long));
        assert_eq!(decode(encode(&long).as_bytes()).unwrap(), long);
        // A block that opens with an empty line would take its indentation from the next.
        let text = Ruby::Str("\n - ---\nZ\n".into());
        assert_eq!(decode(encode(&text).as_bytes()).unwrap(), text);
        // A text of its own is indented under `---`, so a line `...` does not end the document.
        let text = Ruby::Str("...\n---\n\n".into());
        assert_eq!(encode(&text), "--- |+\n  ...\n  ---\n\n");
        assert_eq!(decode(encode(&text).as_bytes()).unwrap(), text);
        // Floats are written as Ruby's Float#to_s writes them, and read back as Floats.
        for (f, text) in [
            (-7.7304011e19, "-7.7304011e+19"),
            (1e16, "1.0e+16"),
            (1.5e-5, "1.5e-05"),
            (1e100, "1.0e+100"),
            (0.0001, "0.0001"),
            (123.0, "123.0"),
        ] {
            assert_eq!(float_text(f), text);
            let back = decode(encode(&Ruby::Float(f)).as_bytes()).unwrap();
            assert_eq!(back, Ruby::Float(f), "{text}");
        }
        assert_eq!(value.get("g"), Some(&Ruby::str("60")));
        assert_eq!(value.get("h"), Some(&Ruby::str("2.12.5")));
        assert_eq!(value.get("i"), Some(&Ruby::str("cert=alice")));
    }

    #[test]
    fn what_safe_load_refuses_is_refused() {
        for doc in [
            "--- &a [1]\n--- *a\n",
            "---\n:a: &x 1\n:b: *x\n",
            "--- !ruby/object:Foo {}\n",
            "---\n:when: 2026-01-01\n",
            "--- [1, 2\n",
            "--- 1\n--- 2\n",
        ] {
            assert!(decode(doc.as_bytes()).is_err(), "{doc}");
        }
        let deep = format!("--- {}{}\n", "[".repeat(100), "]".repeat(100));
        assert!(decode(deep.as_bytes()).is_err());
    }

    #[test]
    fn no_key_or_value_can_inject_yaml() {
        let tricky = [
            "x: 1\n  :action: restart\n  :y",
            "a\nb\r  :action: restart",
            "a\u{2028}:action: restart",
            "a\u{85}:action: restart",
            " leading\nspace",
            "quote\" and \\ backslash",
        ];
        for text in tricky {
            let value = Ruby::Hash(vec![
                (Ruby::sym(text), Ruby::str(text)),
                (Ruby::sym("action"), Ruby::str("status")),
            ]);
            let yaml = encode(&value);
            assert_eq!(
                decode(yaml.as_bytes()).unwrap(),
                value,
                "{text:?} as {yaml}"
            );
        }
    }

    #[test]
    fn strings_are_written_so_they_read_back() {
        for text in [
            "plain",
            "==",
            "--- pong\n",
            "yes",
            "60",
            ":sym",
            "a: b",
            "two\nlines\n",
            "no newline\nat end",
            "",
            "it's",
            "0789",
            "tab\there",
        ] {
            let value = Ruby::Hash(vec![(Ruby::sym("k"), Ruby::str(text))]);
            let yaml = encode(&value);
            assert_eq!(
                decode(yaml.as_bytes()).unwrap(),
                value,
                "{text:?} as {yaml}"
            );
        }
    }
}
