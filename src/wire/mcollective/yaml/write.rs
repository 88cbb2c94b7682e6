//! Writing [`Ruby`] values in Psych 4's block layout: mappings, sequences and inline scalars.

use super::quote::{double_quoted, string};
use crate::wire::mcollective::Ruby;

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

/// Ruby's `Float#to_s`, which Psych uses.
pub(super) fn float_text(f: f64) -> String {
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
