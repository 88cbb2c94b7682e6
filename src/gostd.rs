//! Go standard-library behaviour the filters rely on: `strconv` parsing and Unicode case rules.

/// `strconv.ParseBool(value)` returned `true` without error; everything else is not truthy.
pub(crate) fn truthy(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

/// `strconv.Atoi`: optional sign, ASCII digits, 64-bit range; anything else is an error.
pub(crate) fn atoi(value: &str) -> Option<i64> {
    value.parse().ok()
}

/// `strconv.ParseFloat(value, 64)` for decimal input.
///
/// Go reports overflow (`1e400`) as an error where Rust yields infinity, so that is refused
/// here too. Go's hexadecimal floats (`0x1p-2`) are not accepted.
pub(crate) fn parse_float(value: &str) -> Option<f64> {
    let unsigned = value.strip_prefix(['+', '-']);
    let body = unsigned.unwrap_or(value);
    let is_nan = body.eq_ignore_ascii_case("nan");
    // Go accepts `nan` only without a sign.
    if is_nan && unsigned.is_some() {
        return None;
    }
    let parsed: f64 = value.parse().ok()?;
    let spelled_inf = body.eq_ignore_ascii_case("inf") || body.eq_ignore_ascii_case("infinity");
    (!parsed.is_infinite() || spelled_inf).then_some(parsed)
}

/// `strings.ToLower`: maps each character to its single-character lower case.
pub(crate) fn to_lower(text: &str) -> String {
    // Rust's to_lowercase is multi-character only for U+0130, whose first character ('i') is
    // what Go's unicode.ToLower returns.
    text.chars()
        .map(|c| c.to_lowercase().next().unwrap_or(c))
        .collect()
}

/// `strings.EqualFold`: equal under simple Unicode case folding, character by character.
pub(crate) fn equal_fold(a: &str, b: &str) -> bool {
    a.chars().count() == b.chars().count() && a.chars().zip(b.chars()).all(|(x, y)| fold_eq(x, y))
}

/// Two characters share a simple case-folding orbit (approximated with single-character
/// lower and upper case mappings).
fn fold_eq(x: char, y: char) -> bool {
    x == y || single(x.to_lowercase(), x) == single(y.to_lowercase(), y) || {
        single(x.to_uppercase(), x) == single(y.to_uppercase(), y)
    }
}

/// The only character of a case mapping, or `fallback` when the mapping is longer.
fn single(mut mapping: impl Iterator<Item = char>, fallback: char) -> char {
    match (mapping.next(), mapping.next()) {
        (Some(c), None) => c,
        _ => fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthy_accepts_exactly_go_parse_bool_true_spellings() {
        for yes in ["1", "t", "T", "TRUE", "true", "True"] {
            assert!(truthy(yes), "{yes}");
        }
        for no in ["0", "f", "false", "tRuE", "yes", "", " true", "/true/"] {
            assert!(!truthy(no), "{no}");
        }
    }

    #[test]
    fn atoi_follows_go() {
        assert_eq!(atoi("42"), Some(42));
        assert_eq!(atoi("+7"), Some(7));
        assert_eq!(atoi("-7"), Some(-7));
        assert_eq!(atoi("9223372036854775807"), Some(i64::MAX));
        for bad in ["", "1.0", " 1", "1_000", "9223372036854775808", "x"] {
            assert_eq!(atoi(bad), None, "{bad}");
        }
    }

    #[test]
    fn parse_float_follows_go() {
        assert_eq!(parse_float("1.5"), Some(1.5));
        assert_eq!(parse_float(".5"), Some(0.5));
        assert_eq!(parse_float("5."), Some(5.0));
        assert_eq!(parse_float("-1.5e3"), Some(-1500.0));
        assert_eq!(parse_float("-Inf"), Some(f64::NEG_INFINITY));
        assert!(parse_float("NaN").is_some_and(f64::is_nan));
        for bad in ["", ".", "1.0e400", "+nan", "1.2.3", "1_0.5", "abc."] {
            assert_eq!(parse_float(bad), None, "{bad}");
        }
    }

    #[test]
    fn case_helpers_follow_go() {
        assert_eq!(to_lower("RoLe::TeStInG"), "role::testing");
        assert_eq!(to_lower("\u{130}X"), "ix");
        assert!(equal_fold("HeLlO WoRLD", "hello world"));
        assert!(equal_fold("Σσ", "ςΣ"));
        assert!(equal_fold("\u{212A}", "k"));
        assert!(!equal_fold("\u{130}", "i"));
        assert!(!equal_fold("hello", "hello "));
    }
}
