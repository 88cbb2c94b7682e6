//! Identity, agent and class filters, matched as go-choria's `filter/*` packages do.

use regex::Regex;

use crate::gostd;

/// Decides whether a node's identity matches any of the identity filters (ORed).
pub fn match_identity(filters: &[String], identity: &str) -> bool {
    filters
        .iter()
        .any(|filter| identity_matches(identity, filter))
}

/// Decides whether the node has every needed agent; `/re/` needles are case-sensitive regexes.
pub fn match_agents(needles: &[String], known: &[String]) -> bool {
    // Quirk: go-choria needs at least one needle to pass, so no needles means no match.
    !needles.is_empty()
        && needles.iter().all(|needle| match regex_body(needle) {
            Some(pattern) => any_matches(pattern, known),
            None => known.iter().any(|agent| agent == needle),
        })
}

/// Decides whether the node has every needed class; `/re/` needles ignore case.
pub fn match_classes(needles: &[String], classes: &[String]) -> bool {
    // Quirk: as with agents, no needles means no match.
    !needles.is_empty()
        && needles.iter().all(|needle| match regex_body(needle) {
            Some(pattern) => any_matches(&format!("(?i){pattern}"), classes),
            None => {
                // Quirk: only the needle is lowercased; a class spelled `Apache` never matches.
                let needle = gostd::to_lower(needle);
                classes.contains(&needle)
            }
        })
}

/// One identity filter against one identity.
fn identity_matches(identity: &str, filter: &str) -> bool {
    let exact = match regex_body(filter) {
        Some(pattern) if any_matches(pattern, &[identity]) => return true,
        // Quirk: a `/re/` filter that does not match (or does not compile) is still compared
        // verbatim, slashes removed, with the identity.
        Some(pattern) => pattern,
        None => filter,
    };
    identity == exact
}

/// The pattern inside a `/re/` needle.
///
/// Quirk: like Go's `HasPrefix`/`HasSuffix` + `TrimPrefix`/`TrimSuffix`, a lone `/` (or `//`)
/// counts and leaves an empty pattern that matches everything.
fn regex_body(needle: &str) -> Option<&str> {
    let inner = needle.strip_prefix('/')?;
    needle
        .ends_with('/')
        .then(|| inner.strip_suffix('/').unwrap_or(inner))
}

/// Whether `pattern` finds a match in any of `stack`; a pattern that does not compile never
/// matches, as go-choria ignores the error.
fn any_matches<S: AsRef<str>>(pattern: &str, stack: &[S]) -> bool {
    Regex::new(pattern).is_ok_and(|re| stack.iter().any(|item| re.is_match(item.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn identity_supports_regex_like_go_choria() {
        assert!(match_identity(
            &strings(&["foo", "bar", "/example/"]),
            "tests.example.net"
        ));
        assert!(!match_identity(
            &strings(&["foo", "bar", "/baz/"]),
            "tests.example.net"
        ));
    }

    #[test]
    fn identity_supports_exact_matches_like_go_choria() {
        let id = "tests.example.net";
        assert!(match_identity(
            &strings(&["foo", "bar", "tests.example.net"]),
            id
        ));
        assert!(!match_identity(&strings(&["foo", "bar", "test"]), id));
        assert!(!match_identity(&strings(&["TESTS.example.net"]), id));
    }

    #[test]
    fn identity_quirks() {
        assert!(!match_identity(&[], "node"), "no filters match nothing");
        assert!(
            !match_identity(&strings(&["/EXAMPLE/"]), "example"),
            "regex is case-sensitive"
        );
        assert!(
            match_identity(&strings(&["/"]), "anything"),
            "lone slash matches all"
        );
        assert!(match_identity(&strings(&["/^n.de$/"]), "node"));
        // An invalid regex falls back to comparing the text between the slashes.
        assert!(match_identity(&strings(&["/a(/"]), "a("));
        assert!(!match_identity(&strings(&["/a(/"]), "a(b"));
    }

    #[test]
    fn agents_support_regex_like_go_choria() {
        let known = strings(&["rpcutil", "package", "choriautil"]);
        assert!(match_agents(&strings(&["/rpc/", "/choria/"]), &known));
        assert!(!match_agents(&strings(&["/foo/"]), &known));
    }

    #[test]
    fn agents_support_exact_matches_like_go_choria() {
        let known = strings(&["rpcutil", "package", "choria_util"]);
        assert!(match_agents(&strings(&["rpcutil", "choria_util"]), &known));
        assert!(!match_agents(&strings(&["foo", "choria_util"]), &known));
    }

    #[test]
    fn agent_quirks() {
        let known = strings(&["rpcutil"]);
        assert!(!match_agents(&[], &known), "no needles match nothing");
        assert!(
            !match_agents(&strings(&["RPCUTIL"]), &known),
            "exact is case-sensitive"
        );
        assert!(
            !match_agents(&strings(&["/RPC/"]), &known),
            "regex is case-sensitive"
        );
        assert!(
            !match_agents(&strings(&["/rpc(/"]), &known),
            "bad regex never matches"
        );
        assert!(
            !match_agents(&strings(&["/"]), &[]),
            "nothing to match against"
        );
        assert!(match_agents(&strings(&["/"]), &known));
    }

    #[test]
    fn classes_support_regex_like_go_choria() {
        let classes = strings(&["role::testing", "testing", "apache"]);
        assert!(match_classes(&strings(&["/test/"]), &classes));
        assert!(match_classes(&strings(&["/TeSt/"]), &classes));
        assert!(!match_classes(&strings(&["/nonxisting/"]), &classes));
        assert!(!match_classes(&strings(&["/NoNxIsTiNg/"]), &classes));
    }

    #[test]
    fn classes_support_exact_matches_like_go_choria() {
        let classes = strings(&["role::testing", "testing", "apache"]);
        assert!(match_classes(&strings(&["role::testing"]), &classes));
        assert!(match_classes(&strings(&["RoLe::TeStInG"]), &classes));
        assert!(!match_classes(&strings(&["nonxisting"]), &classes));
        assert!(!match_classes(&strings(&["NoNxIsTInG"]), &classes));
    }

    #[test]
    fn class_quirks() {
        let mixed = strings(&["Apache", "role::web"]);
        assert!(
            !match_classes(&strings(&["Apache"]), &mixed),
            "only the needle is lowercased"
        );
        assert!(
            match_classes(&strings(&["/^apache$/"]), &mixed),
            "regex ignores case"
        );
        assert!(match_classes(
            &strings(&["apache", "role::web"]),
            &strings(&["apache", "role::web"])
        ));
        assert!(
            !match_classes(&strings(&["role::web", "nginx"]), &mixed),
            "needles are ANDed"
        );
        assert!(!match_classes(&[], &mixed), "no needles match nothing");
        assert!(
            !match_classes(&strings(&["/[/"]), &mixed),
            "bad regex never matches"
        );
    }

    #[test]
    fn regex_body_trims_one_slash_each_side() {
        assert_eq!(regex_body("/a/"), Some("a"));
        assert_eq!(regex_body("//a//"), Some("/a/"));
        assert_eq!(regex_body("/"), Some(""));
        assert_eq!(regex_body("//"), Some(""));
        assert_eq!(regex_body("/a"), None);
        assert_eq!(regex_body("a/"), None);
        assert_eq!(regex_body("é/"), None);
    }
}
