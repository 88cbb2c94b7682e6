//! Identity rule tests: matching, denials, anchoring, templates and refused files.

use super::*;

const RULES: &str = r#"
[[rule]]
from = "prod"
to = ["london", "tokyo"]
caller = "choria=alice.mcollective"
as = "$0"

[[rule]]
from = "prod"
to = ["tokyo"]
caller = "choria=bob.mcollective"
as = "choria=robert.mcollective"

[[rule]]
from = "prod"
to = ["london"]
glob = "choria=*.contractor.mcollective"
deny = true

[[rule]]
from = "prod"
to = ["london"]
regex = 'choria=(?P<user>[a-z]+)\.ops\.mcollective'
as = "choria=${user}.mcollective"

[[rule]]
from = "edge"
to = ["london"]
glob = "up=*"
as = "choria=$1.edge"
"#;

fn rules() -> IdentityRules {
    IdentityRules::parse(RULES, "identity.toml").unwrap()
}

fn map(from: &str, caller: &str, to: &str) -> Mapping {
    rules().map(from, &CallerId::parse(caller).unwrap(), to)
}

fn mapped(from: &str, caller: &str, to: &str) -> (String, usize) {
    match map(from, caller, to) {
        Mapping::Mapped { callerid, rule } => (callerid.as_str().to_string(), rule.index),
        other => panic!("{caller} from {from} to {to}: {other:?}"),
    }
}

#[test]
fn first_matching_rule_maps_exact_glob_and_regex_captures() {
    assert_eq!(
        mapped("prod", "choria=alice.mcollective", "tokyo"),
        ("choria=alice.mcollective".into(), 1)
    );
    assert_eq!(
        mapped("prod", "choria=bob.mcollective", "tokyo"),
        ("choria=robert.mcollective".into(), 2)
    );
    assert_eq!(
        mapped("prod", "choria=carol.ops.mcollective", "london"),
        ("choria=carol.mcollective".into(), 4)
    );
    assert_eq!(
        mapped("edge", "up=dave", "london"),
        ("choria=dave.edge".into(), 5)
    );
}

#[test]
fn no_rule_deny_rule_and_other_realms_deny() {
    let denial = |m: Mapping| match m {
        Mapping::Denied(d) => d,
        other => panic!("expected a denial, got {other:?}"),
    };
    let d = denial(map("prod", "choria=bob.mcollective", "london"));
    assert_eq!((d.reason(), d.rule()), ("unmapped", None));
    let d = denial(map("prod", "choria=eve.contractor.mcollective", "london"));
    assert_eq!(d.reason(), "identity_denied");
    assert_eq!(d.rule().unwrap().to_string(), "identity.toml#3");
    // The same caller from another realm, or to a collective no rule names, is denied.
    let d = denial(map("london", "choria=alice.mcollective", "tokyo"));
    assert_eq!(d.reason(), "unmapped");
    let d = denial(map("prod", "choria=alice.mcollective", "paris"));
    assert_eq!(d.reason(), "unmapped");
    assert!(matches!(
        IdentityRules::deny_all().map("prod", &CallerId::parse("choria=a.b").unwrap(), "x"),
        Mapping::Denied(Denial::NoRule { .. })
    ));
}

#[test]
fn patterns_match_the_whole_caller_id() {
    // Unanchored, `choria=(..)\.ops\.mcollective` would match inside a longer id.
    let d = map("prod", "choria=x.ops.mcollective.evil", "london");
    assert!(matches!(d, Mapping::Denied(Denial::NoRule { .. })), "{d:?}");
    let d = map("edge", "xup=dave", "london");
    assert!(matches!(d, Mapping::Denied(Denial::NoRule { .. })), "{d:?}");
}

#[test]
fn text_after_the_verified_name_never_reaches_a_rule() {
    // eve.choria's certificate vouches for `choria=eve.choria` only; the rest must not let
    // the caller match `choria=*.mcollective` (rule-hijacking by suffix).
    let rules = IdentityRules::parse(
        "[[rule]]\nfrom = \"prod\"\nto = [\"tokyo\"]\nglob = \"choria=*.mcollective\"\nas = \"choria=robert.mcollective\"\n",
        "f",
    )
    .unwrap();
    let caller = CallerId::parse("choria=eve.choria@x.mcollective").unwrap();
    assert_eq!(caller.identity(), "eve.choria");
    let m = rules.map("prod", &caller, "tokyo");
    match m {
        Mapping::Denied(d) => assert_eq!(d.reason(), "bad_caller", "{d}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_template_that_yields_an_unusable_caller_id_denies() {
    let rules = IdentityRules::parse(
        "[[rule]]\nfrom = \"edge\"\nto = [\"london\"]\nglob = \"up=*\"\nas = \"choria=$1 (ops)\"\n",
        "f.toml",
    )
    .unwrap();
    // "choria=dave (ops)" parses as a caller id (Choria stops at the space) but is not exact.
    let m = rules.map("edge", &CallerId::parse("up=dave").unwrap(), "london");
    match m {
        Mapping::Denied(d @ Denial::BadResult { .. }) => {
            assert_eq!(d.reason(), "bad_mapping");
            assert!(d.to_string().contains("\"choria=dave (ops)\""), "{d}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_rules_are_refused_with_file_and_index() {
    let head = "[[rule]]\nfrom = \"prod\"\nto = [\"london\"]\n";
    let cases = [
        (format!("{head}caller = \"a=b\"\n"), "exactly one of `as"),
        (
            format!("{head}caller = \"a=b\"\nglob = \"*\"\nas = \"$0\"\n"),
            "exactly one of `caller`",
        ),
        (
            format!("{head}caller = \"a=b\"\nas = \"$1\"\n"),
            "uses $1, but the matcher has groups 0 to 0",
        ),
        (
            format!("{head}glob = \"up=*\"\nas = \"${{user}}\"\n"),
            "uses $user",
        ),
        (
            format!("{head}regex = \"(\"\nas = \"$0\"\n"),
            "does not compile",
        ),
        (
            format!("{head}caller = \"a=b\"\nas = \"x$\"\n"),
            "must start $N",
        ),
        (
            format!("{head}caller = \"a=b\"\nas = \"${{0\"\n"),
            "unclosed",
        ),
        (
            format!("{head}caller = \"a=b\"\nas = \"$0\"\ndeny = true\n"),
            "exactly one of `as",
        ),
        (
            "[[rule]]\nfrom = \"prod\"\nto = []\ncaller = \"a=b\"\nas = \"$0\"\n".into(),
            "`to` must list",
        ),
    ];
    for (text, want) in cases {
        let text = format!(
            "[[rule]]\nfrom = \"x\"\nto = [\"y\"]\ncaller = \"a=b\"\nas = \"$0\"\n\n{text}"
        );
        let err = IdentityRules::parse(&text, "map.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("map.toml rule 2: "), "{err}");
        assert!(err.contains(want), "{err} should contain {want}");
    }
    let err = IdentityRules::parse(
        "[[rule]]\nfrom = \"x\"\nto = [\"y\"]\ncaller = \"a=b\"\nas = \"$0\"\nwho = 1\n",
        "map.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("map.toml: ") && err.contains("who"),
        "{err}"
    );
}

#[test]
fn templates_keep_literal_dollars_and_adjacent_text() {
    let rules = IdentityRules::parse(
        "[[rule]]\nfrom = \"e\"\nto = [\"c\"]\nregex = 'up=(\\w+)-(\\w+)'\nas = \"choria=${2}$1x.$$\"\n",
        "f",
    )
    .unwrap();
    // `$$` is a literal dollar, which a caller id cannot hold: the mapping is denied.
    let m = rules.map("e", &CallerId::parse("up=a-b").unwrap(), "c");
    assert!(
        matches!(&m, Mapping::Denied(Denial::BadResult { produced, .. }) if produced == "choria=bax.$"),
        "{m:?}"
    );
}
