//! Go `regexp` patterns compiled with Rust's `regex`: Go's Perl classes and word boundaries are
//! ASCII where Rust's are Unicode, and Go's `\Q…\E` quoting is spelled out.

use regex::{Regex, RegexBuilder};

/// Largest compiled size of one DDL validation regex.
pub const MAX_REGEX_BYTES: usize = 1 << 20;

/// Compiles a Go pattern so that it matches what Go's `regexp.MatchString` matches.
pub fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(&translate(pattern))
        .size_limit(MAX_REGEX_BYTES)
        .build()
}

/// Rewrites Go's ASCII-only escapes into Rust syntax that means the same inside and outside
/// bracket classes (Rust nests classes, so `[\w-]` becomes `[[[:word:]]-]`).
fn translate(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(escaped) = chars.next() else {
            out.push(c);
            break;
        };
        match escaped {
            'w' => out.push_str("[[:word:]]"),
            'W' => out.push_str("[^[:word:]]"),
            'd' => out.push_str("[0-9]"),
            'D' => out.push_str("[^0-9]"),
            's' => out.push_str(r"[\t\n\f\r ]"),
            'S' => out.push_str(r"[^\t\n\f\r ]"),
            'b' => out.push_str(r"(?-u:\b)"),
            'B' => out.push_str(r"(?-u:\B)"),
            'Q' => {
                let rest = chars.as_str();
                let (quoted, after) = rest.split_once(r"\E").unwrap_or((rest, ""));
                out.push_str(&regex::escape(quoted));
                chars = after.chars();
            }
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perl_classes_are_ascii_as_in_go() {
        let word = compile(r"^[\w\-\.@]+$").unwrap();
        assert!(word.is_match("nginx@1.service"));
        assert!(!word.is_match("nginx; rm"));
        assert!(!word.is_match("ñginx"), "Go's \\w is ASCII");
        assert!(compile(r"^\d+$").unwrap().is_match("42"));
        assert!(!compile(r"^\d+$").unwrap().is_match("٤٢"));
        assert!(compile(r"^\S+\s\W$").unwrap().is_match("a\tñ"));
        assert!(compile(r"\bnginx\b").unwrap().is_match("a nginx b"));
        assert!(!compile(r"^\s$").unwrap().is_match("\u{85}"));
    }

    #[test]
    fn quoting_and_plain_escapes_carry_over() {
        let quoted = compile(r"^\Qa.b*\E$").unwrap();
        assert!(quoted.is_match("a.b*"));
        assert!(!quoted.is_match("axbb"));
        assert!(compile(r"^\Qa.b").unwrap().is_match("a.b"));
        assert!(compile(r"^a\.b\\$").unwrap().is_match(r"a.b\"));
        assert!(compile("(?i)^ABC$").unwrap().is_match("abc"));
    }

    #[test]
    fn an_invalid_pattern_is_an_error() {
        assert!(compile("([a-z]").is_err());
        assert!(compile("a{1000000}").is_err(), "over the size limit");
    }
}
