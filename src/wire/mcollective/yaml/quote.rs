//! How a string is written: plain, single- or double-quoted, or as a `|` literal block, as
//! Psych's `visit_String` and libyaml's scalar analysis choose.

use super::plain::{Plain, resolve_plain};
use crate::wire::mcollective::Ruby;

/// Characters YAML treats as line breaks or that a block cannot hold; such text is written
/// double-quoted, with escapes.
fn needs_escapes(text: &str) -> bool {
    text.chars().any(|c| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}')
    })
}

/// How Psych's `visit_String` and libyaml's scalar analysis write a string.
pub(super) fn string(out: &mut String, text: &str, indent: usize) {
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

pub(super) fn double_quoted(out: &mut String, text: &str) {
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
