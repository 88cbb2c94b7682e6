//! Each grammar element, and each upstream example policy with the outcome go-choria's own tests
//! give for it (the node's facts and classes as in those tests).

use serde_json::{Value, json};

use super::*;

const GINKGO: &str = "choria=ginkgo.mcollective";

/// The node of go-choria's actionpolicy tests.
struct Node {
    facts: Option<Value>,
    classes: Option<Vec<String>>,
}

impl Node {
    fn standard() -> Node {
        Node {
            facts: Some(json!({
                "one": "one", "two": "two two", "three": "three three three",
                "digit": 1, "boolean": false, "nested": {"facts": "value"}
            })),
            classes: Some(vec!["one".into(), "two".into(), "three".into()]),
        }
    }

    fn foo(value: &str) -> Node {
        Node {
            facts: Some(json!({ "foo": value })),
            ..Node::standard()
        }
    }

    fn other_classes(mut self) -> Node {
        self.classes = Some(vec!["other".into(), "klasses".into()]);
        self
    }

    fn vantage(&self) -> Vantage<'_> {
        Vantage::Node {
            facts: self.facts.as_ref(),
            classes: self.classes.as_deref(),
        }
    }
}

fn set_of(name: &str, text: &str) -> PolicySet {
    let mut set = PolicySet::empty(Effect::Deny);
    set.insert(None, "ginkgo", PolicyFile::parse(name, text).unwrap());
    set
}

fn decide(set: &PolicySet, caller: &str, action: &str, node: &Node) -> Decision {
    let query = Query {
        collective: "london",
        agent: "ginkgo",
        action,
        caller,
    };
    authorize(set, &query, node.vantage())
}

/// Asserts allowed, or denied by the file's default with Choria's sentence.
fn expect(set: &PolicySet, caller: &str, action: &str, node: &Node, allowed: bool) {
    let decision = decide(set, caller, action, node);
    assert_eq!(
        decision.allowed(),
        allowed,
        "{caller} {action}: {decision:?}"
    );
    if !allowed {
        let file = set.lookup("london", "ginkgo").unwrap().name.clone();
        assert_eq!(
            decision.reason(),
            format!("Denying based on default policy in {file}")
        );
        assert_eq!(decision.source().to_string(), "default");
    }
}

#[test]
fn default_lines() {
    let node = Node::standard();
    expect(
        &set_of("a", "policy default allow\n"),
        GINKGO,
        "test",
        &node,
        true,
    );
    expect(
        &set_of("d", "policy default deny\n"),
        GINKGO,
        "test",
        &node,
        false,
    );
    // The last default line wins, wherever it is.
    let set = set_of("x", "policy default allow\n# c\n\npolicy default deny\n");
    expect(&set, GINKGO, "test", &node, false);
    // Without a default line, the gateway-wide setting applies inside the file too.
    let mut open = PolicySet::empty(Effect::Allow);
    open.insert(
        None,
        "ginkgo",
        PolicyFile::parse("e", "# nothing\n").unwrap(),
    );
    assert!(decide(&open, GINKGO, "test", &node).allowed());
}

#[test]
fn example1_allows_everything() {
    let set = set_of(
        "example1",
        "policy default deny\nallow\t\t*\t\t*\t\t*\t\t*\n",
    );
    let decision = decide(&set, GINKGO, "test", &Node::standard());
    assert!(decision.allowed());
    assert_eq!(decision.source().to_string(), "example1:2");
}

#[test]
fn example2_exact_and_regex_callers() {
    let set = set_of(
        "example2",
        "policy default deny\nallow\t\tchoria=ginkgo.mcollective\t\t*\t\t*\t\t*\nallow\t\tchoria=ginkgo.mcollective /^up=.+/\t\t*\t\t*\t\t*",
    );
    let node = Node::standard();
    expect(&set, GINKGO, "test", &node, true);
    expect(&set, "other", "test", &node, false);
    expect(&set, "up=bob", "test", &node, true);
    assert_eq!(
        decide(&set, "up=bob", "test", &node).source().to_string(),
        "example2:3"
    );
}

#[test]
fn example3_to_10_single_fields() {
    let node = Node::standard();
    let example3 = set_of("example3", "policy default deny\nallow\t*\ttest\t*\t*\n");
    expect(&example3, GINKGO, "test", &node, true);
    expect(&example3, GINKGO, "other", &node, false);

    let example4 = set_of("example4", "policy default deny\nallow\t*\t*\tfoo=bar\t*\n");
    expect(&example4, GINKGO, "test", &Node::foo("bar"), true);
    expect(&example4, GINKGO, "test", &Node::foo("baz"), false);

    let example5 = set_of("example5", "policy default deny\nallow\t*\t*\t*\tthree\n");
    expect(&example5, GINKGO, "test", &node, true);
    expect(
        &example5,
        GINKGO,
        "test",
        &Node::standard().other_classes(),
        false,
    );

    let example6 = set_of(
        "example6",
        &format!("policy default deny\nallow\t{GINKGO}\ttest\t*\t*\n"),
    );
    expect(&example6, GINKGO, "test", &node, true);
    expect(&example6, GINKGO, "other", &node, false);
    expect(&example6, "other", "test", &node, false);

    let example7 = set_of(
        "example7",
        &format!("policy default deny\nallow\t{GINKGO}\t*\tfoo=bar\t*\n"),
    );
    expect(&example7, GINKGO, "test", &Node::foo("bar"), true);
    expect(&example7, GINKGO, "test", &Node::foo("baz"), false);
    expect(&example7, "other", "test", &Node::foo("bar"), false);

    let example8 = set_of(
        "example8",
        &format!("policy default deny\nallow\t{GINKGO}\t*\t*\tone\n"),
    );
    expect(&example8, GINKGO, "test", &node, true);
    expect(
        &example8,
        GINKGO,
        "test",
        &Node::standard().other_classes(),
        false,
    );
    // A classes file that exists but is empty (go-choria: a missing file reads as no classes).
    let no_classes = Node {
        classes: Some(Vec::new()),
        ..Node::standard()
    };
    expect(&example8, GINKGO, "test", &no_classes, false);
    expect(&example8, "other", "test", &node, false);

    let example9 = set_of(
        "example9",
        &format!("policy default deny\nallow\t{GINKGO}\ttest\tfoo=bar\t*\n"),
    );
    expect(&example9, GINKGO, "test", &Node::foo("bar"), true);
    expect(&example9, "other", "test", &Node::foo("bar"), false);
    expect(&example9, GINKGO, "test", &Node::foo("baz"), false);
    expect(&example9, GINKGO, "other", &Node::foo("bar"), false);

    let example10 = set_of(
        "example10",
        &format!("policy default deny\nallow\t{GINKGO}\ttest\t*\tone\n"),
    );
    expect(&example10, GINKGO, "test", &node, true);
    expect(&example10, "other", "test", &node, false);
    expect(&example10, GINKGO, "other", &node, false);
    expect(
        &example10,
        GINKGO,
        "test",
        &Node::standard().other_classes(),
        false,
    );
}

#[test]
fn example11_every_field() {
    let set = set_of(
        "example11",
        &format!("policy default deny\nallow\t{GINKGO}\ttest\tfoo=bar\tone\n"),
    );
    expect(&set, GINKGO, "test", &Node::foo("bar"), true);
    expect(&set, "other", "test", &Node::foo("bar"), false);
    expect(&set, GINKGO, "other", &Node::foo("bar"), false);
    expect(&set, GINKGO, "test", &Node::foo("baz"), false);
    expect(
        &set,
        GINKGO,
        "test",
        &Node::foo("bar").other_classes(),
        false,
    );
}

#[test]
fn examples_12_to_14_compound_lines_are_skipped_and_reported() {
    for (name, text) in [
        (
            "example12",
            format!("policy default deny\nallow\t{GINKGO}\ttest\tfoo=bar and bar=foo\tone\n"),
        ),
        (
            "example13",
            format!("policy default deny\nallow\t{GINKGO}\ttest\tfoo=bar\tone and two or three\n"),
        ),
        (
            "example14",
            format!(
                "policy default deny\nallow\t\t{GINKGO}\t\ttest\t\tfoo=bar and one or (two and one)\n"
            ),
        ),
    ] {
        let file = PolicyFile::parse(name, &text).unwrap();
        assert_eq!(file.rules.len(), 0, "{name}");
        assert_eq!(file.skipped.len(), 1, "{name}");
        assert_eq!(file.skipped[0].line, 2);
        expect(
            &set_of(name, &text),
            GINKGO,
            "test",
            &Node::foo("bar"),
            false,
        );
    }
}

#[test]
fn example15_several_rules_first_match_wins() {
    let text = "policy default deny\n\
        allow\t\tchoria=ginkgo.mcollective\t\t\t*\t\t\t\t\t\t\t\t\t\t\t\t*\t\t\t\t\t\t\t\t*\n\
        allow\t\tchoria=two.mcollective\t\t\t*\t\t\t\t\t\t\t\t\t\t\t\tfoo=bar\t\t\t\t\t\t\tone\n\
        allow\t\tchoria=three.mcollective\t\t\tenable disable status\t\tfoo=bar\t\t*\n\
        allow\t\tchoria=four.mcollective\t\t\trestart\t\t\t\t\t\t\t\t\t(puppet().enabled=false and environment=production) or environment=development";
    let set = set_of("example15", text);
    assert_eq!(set.lookup("london", "ginkgo").unwrap().skipped[0].line, 5);
    expect(&set, GINKGO, "test", &Node::standard(), true);
    expect(&set, "other", "test", &Node::standard(), false);
    expect(
        &set,
        "choria=two.mcollective",
        "test",
        &Node::foo("bar"),
        true,
    );
    expect(
        &set,
        "choria=two.mcollective",
        "test",
        &Node::foo("baz"),
        false,
    );
    for action in ["enable", "disable", "status"] {
        expect(
            &set,
            "choria=three.mcollective",
            action,
            &Node::foo("bar"),
            true,
        );
    }
    expect(
        &set,
        "choria=three.mcollective",
        "other",
        &Node::foo("bar"),
        false,
    );
    expect(
        &set,
        "choria=three.mcollective",
        "status",
        &Node::foo("baz"),
        false,
    );
    expect(
        &set,
        "choria=four.mcollective",
        "restart",
        &Node::standard(),
        false,
    );
}

#[test]
fn example16_caller_lists() {
    let set = set_of(
        "example16",
        "policy default deny\nallow\tuid=500 uid=600 uid=700\t*\t*\t\t*\n\n",
    );
    for caller in ["uid=500", "uid=600", "uid=700"] {
        expect(&set, caller, "test", &Node::standard(), true);
    }
    expect(&set, GINKGO, "test", &Node::standard(), false);
}

const GROUPS: &str = "# line to ignore\nsysadmin cert=sa1 cert=sa2 rspec_caller\napp_admin cert=aa1 cert=aa2\nsingle_group rspec_caller\n";

#[test]
fn example17_groups() {
    let mut set = set_of(
        "example17",
        "policy default deny\nallow\tsysadmin app_admin\t*\t*\t*\n",
    );
    set.set_groups(Groups::parse("groups", GROUPS).unwrap());
    assert_eq!(set.groups().len(), 3);
    assert_eq!(
        set.groups().members("single_group").unwrap(),
        ["rspec_caller"]
    );
    expect(&set, "cert=sa1", "test", &Node::standard(), true);
    expect(&set, "cert=aa1", "test", &Node::standard(), true);
    expect(&set, GINKGO, "test", &Node::standard(), false);
}

#[test]
fn groups_file_errors_name_the_line() {
    // go-choria logs and skips `invalid_group`; fedgate refuses the file.
    let err = Groups::parse("groups", &format!("{GROUPS}invalid_group\n")).unwrap_err();
    assert_eq!((err.file.as_str(), err.line), ("groups", 5));
    assert!(err.message.contains("no members"), "{err}");
    let err = Groups::parse("groups", "bad/name a\n").unwrap_err();
    assert!(
        err.to_string().starts_with("groups:1: invalid group name"),
        "{err}"
    );
}

#[test]
fn malformed_lines_are_errors_naming_file_and_line() {
    let cases = [
        ("policy default deny\nallow uid=1 * * *\n", 2, "TABs"),
        ("policy default alow\n", 1, "allow or deny"),
        ("policy default deny extra\n", 1, "unexpected text"),
        ("# ok\npermit\t*\t*\t*\t*\n", 2, "expected `policy default"),
        ("allow\t*\t*\t*\n", 1, "no classes field"),
        (
            "allow\t*\t*\tfoo\t*\n",
            1,
            "invalid fact matcher: could not parse fact foo",
        ),
        (
            "allow\t*\t*\t*\tfoo=bar\n",
            1,
            "fact found where class was expected",
        ),
        ("allow\t/up=\t*\t*\t*\n", 1, "invalid caller matcher"),
        ("allow\t//\t*\t*\t*\n", 1, "invalid caller matcher"),
        ("allow\t/*/\t*\t*\t*\n", 1, "does not compile"),
        ("  # indented comments are not comments\n", 1, "expected"),
    ];
    for (text, line, needle) in cases {
        let err = PolicyFile::parse("rpcutil.policy", text).unwrap_err();
        assert_eq!(err.line, line, "{text:?}: {err}");
        assert!(
            err.to_string()
                .starts_with(&format!("rpcutil.policy:{line}: ")),
            "{err}"
        );
        assert!(err.message.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn fields_follow_choria_quirks() {
    // Extra fields: the last one is the classes field (go-choria's repeated group).
    let file = PolicyFile::parse("x", "allow\t*\t*\t*\tignored\tone\n").unwrap();
    assert_eq!(file.rules[0].conditions.classes.list().unwrap(), ["one"]);
    // `*` inside a list is a literal token, not a wildcard.
    let set = set_of("x", "policy default deny\nallow\tup=a *\t*\t*\t*\n");
    expect(&set, "up=b", "test", &Node::standard(), false);
    // Regex callers search unanchored; fact regex values and operators parse as on the CLI.
    let set = set_of(
        "x",
        "policy default deny\nallow\t/bob/\t*\tdigit>=1 one=~/^o/ nested.facts=value\t/^TH/\n",
    );
    expect(&set, "up=bobby", "test", &Node::standard(), true);
    let set = set_of(
        "x",
        "policy default deny\nallow\t*\t*\tnested.facts=~/^al/\t*\n",
    );
    expect(&set, "up=bob", "test", &Node::standard(), false);
}

#[test]
fn explicit_deny_and_node_errors() {
    let set = set_of(
        "x",
        "policy default allow\ndeny\tup=bob\trestart\t*\t*\nallow\t*\t*\t*\tone\n",
    );
    let denied = decide(&set, "up=bob", "restart", &Node::standard());
    let Decision::Denied(denied) = denied else {
        panic!("allowed")
    };
    assert_eq!(denied.kind, DenyKind::Explicit);
    assert_eq!(
        denied.reason,
        "Denying based on explicit 'deny' policy in x:2"
    );
    // A rule naming classes on a node without a classes source denies with an error, as Choria.
    let blind = Node {
        classes: None,
        ..Node::standard()
    };
    let Decision::Denied(denied) = decide(&set, "up=amy", "status", &blind) else {
        panic!()
    };
    assert_eq!(denied.kind, DenyKind::Error);
    assert!(denied.reason.contains("do not know how to resolve classes"));
}

#[test]
fn at_the_gateway_conditions_restrict_or_fail_closed() {
    let set = set_of(
        "puppet.policy",
        "policy default deny\ndeny\tup=eve\t*\tenv=prod\t*\nallow\tup=bob\trestart\tenv=prod os=linux\tweb\nallow\tup=bob\tstatus\t*\t*\n",
    );
    let ask = |caller, action| {
        authorize(
            &set,
            &Query {
                collective: "london",
                agent: "ginkgo",
                action,
                caller,
            },
            Vantage::Gateway,
        )
    };
    let Decision::Permit(permit) = ask("up=bob", "restart") else {
        panic!()
    };
    assert_eq!(permit.source.to_string(), "puppet.policy:3");
    let restrict = permit.restrict.unwrap();
    assert_eq!(
        describe(&restrict),
        "facts env==prod os==linux and classes web"
    );
    let Decision::Permit(permit) = ask("up=bob", "status") else {
        panic!()
    };
    assert!(permit.restrict.is_none());
    let Decision::Denied(denied) = ask("up=eve", "status") else {
        panic!()
    };
    assert_eq!(denied.kind, DenyKind::Conditional);
    assert!(denied.reason.contains("fail closed"), "{}", denied.reason);
    assert_eq!(ask("up=amy", "status").source().to_string(), "default");
}

#[test]
fn scopes_override_and_unconfigured_decides_when_no_file_applies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("london")).unwrap();
    std::fs::write(
        dir.path().join("default.policy"),
        "policy default deny\nallow\tup=admin\t*\t*\t*\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("rpcutil.policy"), "policy default allow\n").unwrap();
    std::fs::write(
        dir.path().join("london/rpcutil.policy"),
        "policy default deny\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("groups"), "ops up=amy\n").unwrap();
    std::fs::write(dir.path().join("README.md"), "ignored\n").unwrap();
    let set = PolicySet::load(dir.path(), Effect::Deny).unwrap();
    assert_eq!(
        set.lookup("london", "rpcutil").unwrap().name.as_ref(),
        "london/rpcutil.policy"
    );
    assert_eq!(
        set.lookup("tokyo", "rpcutil").unwrap().name.as_ref(),
        "rpcutil.policy"
    );
    assert_eq!(
        set.lookup("tokyo", "puppet").unwrap().name.as_ref(),
        "default.policy"
    );
    assert_eq!(set.groups().members("ops").unwrap(), ["up=amy"]);

    std::fs::remove_file(dir.path().join("default.policy")).unwrap();
    let set = PolicySet::load(dir.path(), Effect::Deny).unwrap();
    let query = Query {
        collective: "tokyo",
        agent: "puppet",
        action: "x",
        caller: "up=admin",
    };
    let Decision::Denied(denied) = authorize(&set, &query, Vantage::Gateway) else {
        panic!()
    };
    assert_eq!(denied.kind, DenyKind::Unconfigured);
    assert_eq!(denied.source.to_string(), "default");
    let open = PolicySet::load(dir.path(), Effect::Allow).unwrap();
    assert!(authorize(&open, &query, Vantage::Gateway).allowed());

    std::fs::write(
        dir.path().join("london/bad.policy"),
        "policy default deny\nallow *\n",
    )
    .unwrap();
    let err = PolicySet::load(dir.path(), Effect::Deny).unwrap_err();
    assert!(
        err.to_string().starts_with("london/bad.policy:2: "),
        "{err}"
    );
}

#[test]
fn a_broken_reload_keeps_the_last_good_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpcutil.policy");
    std::fs::write(&path, "policy default allow\n").unwrap();
    let store = crate::rules::RuleStore::open_dir(dir.path(), Effect::Deny).unwrap();
    let query = Query {
        collective: "london",
        agent: "rpcutil",
        action: "ping",
        caller: "up=bob",
    };
    let before = store.current();
    assert!(authorize(&before, &query, Vantage::Gateway).allowed());

    std::fs::write(&path, "policy default deny\nallow\tbroken\n").unwrap();
    let err = store.reload().unwrap_err();
    assert!(err.to_string().starts_with("rpcutil.policy:2:"), "{err}");
    assert!(store.last_error().is_some());
    assert!(authorize(&store.current(), &query, Vantage::Gateway).allowed());

    std::fs::write(&path, "policy default deny\n").unwrap();
    store.reload().unwrap();
    assert!(store.last_error().is_none());
    assert!(!authorize(&store.current(), &query, Vantage::Gateway).allowed());
    // A request that started before the reload still holds the set it started with.
    assert!(authorize(&before, &query, Vantage::Gateway).allowed());
}

#[tokio::test]
async fn the_watcher_reloads_after_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpcutil.policy");
    std::fs::write(&path, "policy default allow\n").unwrap();
    let store =
        std::sync::Arc::new(crate::rules::RuleStore::open_dir(dir.path(), Effect::Deny).unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let task = store.watch(stop.clone()).unwrap().unwrap();
    std::fs::write(&path, "policy default deny\n").unwrap();
    let query = Query {
        collective: "london",
        agent: "rpcutil",
        action: "ping",
        caller: "up=bob",
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while authorize(&store.current(), &query, Vantage::Gateway).allowed() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload after a change"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.cancel();
    task.await.unwrap();
}
