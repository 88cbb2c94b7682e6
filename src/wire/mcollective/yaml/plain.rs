//! What a plain (unquoted) scalar means, as Psych's scalar scanner decides: nil, booleans,
//! Symbols, Integers, Floats, refused dates and times, or else a String.

use crate::wire::mcollective::Ruby;

pub(super) enum Plain {
    Value(Ruby),
    Refused(String),
}

/// Psych's `ScalarScanner#tokenize` for the types `safe_load` permits (Symbol added).
pub(super) fn resolve_plain(text: &str) -> Plain {
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
