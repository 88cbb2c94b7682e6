//! gjson path resolution over `serde_json::Value`, as go-choria looks facts up.
//!
//! Supported: `.`-separated keys, `\` escapes, `*`/`?` key wildcards, array indexes, `#`
//! (array length) and `#.key` (a projection, typed only as JSON). Queries (`#(..)`), modifiers
//! (`@reverse`), pipes (`|`), static values (`!true`), sub-selectors and JSON lines (`..`) are
//! reported as [`Unsupported`].

use serde_json::Value;

/// What a path resolved to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Found<'v> {
    /// A value present in the facts.
    Value(&'v Value),
    /// `array.#`: the number of elements, which gjson reports as a number.
    Count(usize),
    /// `array.#.key`: gjson builds a new JSON array; only its type matters to the operators.
    Projection,
}

/// The path uses gjson syntax that fedgate does not evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unsupported;

/// gjson's built-in modifiers; `@name` only acts as a modifier when the name is one of these.
const MODIFIERS: [&str; 13] = [
    "pretty", "ugly", "reverse", "this", "flatten", "join", "valid", "keys", "values", "tostr",
    "fromstr", "group", "dig",
];

/// One `.`-separated path component.
#[derive(Debug, Default, PartialEq)]
struct Component {
    /// The text with escapes removed: what object keys are compared with.
    key: String,
    /// The text as written: gjson does not unescape array components.
    raw: String,
    /// Whether an unescaped `*` or `?` makes `key` a wildcard pattern.
    wild: bool,
}

/// Resolves `path` against `root`; `Ok(None)` when nothing is there.
pub(crate) fn resolve<'v>(root: &'v Value, path: &str) -> Result<Option<Found<'v>>, Unsupported> {
    let components = parse(path)?;
    Ok(step(root, &components))
}

/// Splits a path into components, refusing the syntax gjson would not treat as plain keys.
fn parse(path: &str) -> Result<Vec<Component>, Unsupported> {
    if special_prefix(path) {
        return Err(Unsupported);
    }
    let mut components = Vec::new();
    let mut current = Component::default();
    let mut chars = path.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => {
                current.raw.push(c);
                if let Some((_, escaped)) = chars.next() {
                    current.raw.push(escaped);
                    current.key.push(escaped);
                }
            }
            '|' => return Err(Unsupported),
            '.' if pipes_into(path.get(at + 1..).unwrap_or_default()) => return Err(Unsupported),
            '.' => components.push(std::mem::take(&mut current)),
            _ => {
                // Quirk: gjson flags the whole component as a pattern, so once any unescaped
                // wildcard is present an escaped `\*` acts as a wildcard too.
                current.wild |= c == '*' || c == '?';
                current.raw.push(c);
                current.key.push(c);
            }
        }
    }
    components.push(current);
    let query = |c: &Component| c.raw.starts_with("#(") || c.raw.starts_with("#[");
    if components.iter().any(query) {
        return Err(Unsupported);
    }
    Ok(components)
}

/// Paths that gjson's `Get` hands to modifiers, statics, sub-selectors or JSON-lines mode.
fn special_prefix(path: &str) -> bool {
    if path.len() < 2 {
        return false;
    }
    match path.as_bytes()[0] {
        b'@' => is_modifier(&path[1..]),
        b'!' => is_static(&path[1..]),
        b'[' | b'{' => true,
        b'.' => path.starts_with(".."),
        _ => false,
    }
}

/// After a `.`, gjson pipes into a modifier or a sub-selector instead of descending.
fn pipes_into(rest: &str) -> bool {
    match rest.as_bytes().first() {
        Some(b'[' | b'{') => true,
        Some(b'@') => is_modifier(&rest[1..]),
        _ => false,
    }
}

/// Whether the text after `@` names a built-in modifier.
fn is_modifier(after_at: &str) -> bool {
    let name = after_at.split([':', '|', '.']).next().unwrap_or_default();
    MODIFIERS.contains(&name)
}

/// Whether the text after `!` is a gjson static value such as `!true` or `!{"a":1}`.
fn is_static(after_bang: &str) -> bool {
    if let Some(b'{' | b'[' | b'"' | b'+' | b'-' | b'0'..=b'9') = after_bang.as_bytes().first() {
        return true;
    }
    let name = after_bang.split(['|', '.']).next().unwrap_or_default();
    ["true", "false", "null", "nan", "inf"]
        .iter()
        .any(|s| name.eq_ignore_ascii_case(s))
}

/// Applies the first component to a container and recurses with the rest.
fn step<'v>(value: &'v Value, components: &[Component]) -> Option<Found<'v>> {
    let (first, rest) = components.split_first()?;
    match value {
        // With wildcards the first matching key that resolves wins; serde_json keeps keys
        // sorted, where gjson would use document order.
        Value::Object(map) => map
            .iter()
            .filter(|(key, _)| first.matches_key(key))
            .find_map(|(_, value)| descend(value, rest)),
        Value::Array(items) => in_array(items, first, rest),
        _ => None,
    }
}

/// The value itself when the path ends here, otherwise the rest of the path inside it.
fn descend<'v>(value: &'v Value, rest: &[Component]) -> Option<Found<'v>> {
    if rest.is_empty() {
        Some(Found::Value(value))
    } else {
        step(value, rest)
    }
}

/// Array components: `#`, `#.rest` or a decimal index, all taken verbatim (no unescaping).
fn in_array<'v>(items: &'v [Value], first: &Component, rest: &[Component]) -> Option<Found<'v>> {
    if first.raw == "#" {
        return Some(if rest.is_empty() {
            Found::Count(items.len())
        } else {
            Found::Projection
        });
    }
    if first.raw.is_empty() || !first.raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index: usize = first.raw.parse().ok()?;
    descend(items.get(index)?, rest)
}

impl Component {
    /// Whether an object key is selected by this component.
    fn matches_key(&self, key: &str) -> bool {
        if self.wild {
            glob(key, &self.key)
        } else {
            key == self.key
        }
    }
}

/// tidwall/match: `*` is any run of characters, `?` one character, `\c` a literal `c`.
fn glob(text: &str, pattern: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let pattern: Vec<char> = pattern.chars().collect();
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some('?') => (t, p) = (t + 1, p + 1),
            Some('\\') if pattern.get(p + 1) == Some(&text[t]) => (t, p) = (t + 1, p + 2),
            Some(&c) if c != '\\' && c == text[t] => (t, p) = (t + 1, p + 1),
            _ => match star {
                Some((star_p, star_t)) => {
                    star = Some((star_p, star_t + 1));
                    (t, p) = (star_t + 1, star_p + 1);
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::LazyLock;

    fn facts() -> Value {
        json!({
            "os": {"family": "Debian", "release": {"major": "12"}},
            "net.ip": "10.0.0.1",
            "disks": [{"name": "sda", "size": 10}, {"name": "sdb", "size": 20}],
            "empty": [],
            "@reverse": "literal",
            "@other": "at",
            "": {"blank": true},
            "#": "hash key",
            "a*b": "star key",
            "back\\slash": 1,
        })
    }

    static FACTS: LazyLock<Value> = LazyLock::new(facts);

    fn get(path: &str) -> Result<Option<Found<'static>>, Unsupported> {
        resolve(&FACTS, path)
    }

    fn value(path: &str) -> Option<Value> {
        match get(path) {
            Ok(Some(Found::Value(v))) => Some(v.clone()),
            _ => None,
        }
    }

    #[test]
    fn nested_keys_and_array_indexes() {
        assert_eq!(value("os.family"), Some(json!("Debian")));
        assert_eq!(value("os.release.major"), Some(json!("12")));
        assert_eq!(value("disks.1.name"), Some(json!("sdb")));
        assert_eq!(value("disks.01.size"), Some(json!(20)));
        assert_eq!(value("disks.0"), Some(json!({"name": "sda", "size": 10})));
    }

    #[test]
    fn missing_paths() {
        for path in [
            "nope",
            "os.nope",
            "os.family.deeper",
            "disks.2",
            "disks.x",
            "disks.+1",
        ] {
            assert_eq!(get(path), Ok(None), "{path}");
        }
        assert_eq!(
            get("disks.\\0"),
            Ok(None),
            "array components are not unescaped"
        );
        assert_eq!(resolve(&json!("scalar"), "a"), Ok(None));
    }

    #[test]
    fn escapes() {
        assert_eq!(value("net\\.ip"), Some(json!("10.0.0.1")));
        assert_eq!(get("net.ip"), Ok(None));
        assert_eq!(value("a\\*b"), Some(json!("star key")));
        assert_eq!(value("back\\\\slash"), Some(json!(1)));
        assert_eq!(
            value("net\\.ip\\"),
            Some(json!("10.0.0.1")),
            "trailing backslash dropped"
        );
    }

    #[test]
    fn wildcards_and_odd_keys() {
        assert_eq!(value("os.fam*"), Some(json!("Debian")));
        assert_eq!(value("os.famil?"), Some(json!("Debian")));
        assert_eq!(value("o?.release.maj*"), Some(json!("12")));
        assert_eq!(
            value("a*b"),
            Some(json!("star key")),
            "also a pattern matching itself"
        );
        assert_eq!(
            value("@other"),
            Some(json!("at")),
            "unknown modifier is a key"
        );
        assert_eq!(value(".blank"), Some(json!(true)), "empty key");
        assert_eq!(value("#"), Some(json!("hash key")), "# is a key in objects");
    }

    #[test]
    fn counts_and_projections() {
        assert_eq!(get("disks.#"), Ok(Some(Found::Count(2))));
        assert_eq!(get("empty.#"), Ok(Some(Found::Count(0))));
        assert_eq!(get("disks.#.name"), Ok(Some(Found::Projection)));
        assert_eq!(
            resolve(&json!([1, [2, 3]]), "1.#"),
            Ok(Some(Found::Count(2)))
        );
        assert_eq!(
            resolve(&json!([1, [2, 3]]), "1.0"),
            Ok(Some(Found::Value(&json!(2))))
        );
    }

    #[test]
    fn unsupported_syntax() {
        for path in [
            "disks.#(name==\"sda\").size",
            "disks.#[size>1]",
            "@reverse",
            "disks.@reverse",
            "disks|0",
            "!true",
            "!{\"a\":1}",
            "[os,net]",
            "{os}",
            "..0",
            "os.[family]",
        ] {
            assert_eq!(get(path), Err(Unsupported), "{path}");
        }
        assert_eq!(value("disks\\|0"), None, "escaped pipe is a plain key");
    }

    #[test]
    fn glob_matches_like_tidwall_match() {
        assert!(glob("", "*"));
        assert!(glob("abc", "a*"));
        assert!(glob("abc", "*c"));
        assert!(glob("abc", "a*b*c"));
        assert!(glob("aXbYc", "a?b?c"));
        assert!(glob("a*c", "a\\*c"));
        assert!(!glob("abc", "a\\*c"));
        assert!(!glob("abc", "a?"));
        assert!(!glob("abc", "abc\\"));
        assert!(glob("ééx", "?éx"));
        assert!(glob("mississippi", "*sip*"));
    }
}
