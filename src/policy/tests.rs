//! Each grammar element, and each upstream example policy with the outcome go-choria's own tests
//! give for it (the node's facts and classes as in those tests): the shared node and helpers and
//! the grammar here, the upstream examples and policy sets in submodules.

mod examples;
mod sets;

use serde_json::{Value, json};

use super::*;

const GINKGO: &str = "choria=ginkgo.mcollective";

const GROUPS: &str = "# line to ignore\nsysadmin cert=sa1 cert=sa2 rspec_caller\napp_admin cert=aa1 cert=aa2\nsingle_group rspec_caller\n";

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
fn a_group_without_members_is_skipped_as_choria_skips_it() {
    // go-choria's own fixture ends with `invalid_group`, a name alone: it logs and skips it.
    let groups = Groups::parse("groups", &format!("{GROUPS}invalid_group\n")).unwrap();
    assert_eq!(groups.len(), 3);
    assert!(groups.members("invalid_group").is_none());
    assert_eq!(groups.members("single_group").unwrap(), ["rspec_caller"]);
    let skipped = groups.skipped();
    assert_eq!(skipped.len(), 1);
    assert_eq!(
        (skipped[0].line, skipped[0].reason, skipped[0].text.as_str()),
        (5, SkipReason::EmptyGroup, "invalid_group")
    );
    // A later empty line for a group leaves its earlier members, as in go-choria.
    let groups = Groups::parse("groups", "ops up=amy\nops\n").unwrap();
    assert_eq!(groups.members("ops").unwrap(), ["up=amy"]);
    // The name is still a caller token of its own: skipping the line changes no decision.
    let set = {
        let mut set = set_of("x", "policy default deny\nallow\tinvalid_group\t*\t*\t*\n");
        set.set_groups(Groups::parse("groups", "invalid_group\n").unwrap());
        set
    };
    expect(&set, "invalid_group", "test", &Node::standard(), true);
    expect(&set, "up=amy", "test", &Node::standard(), false);
}

#[test]
fn a_group_with_members_and_a_bad_name_refuses_the_file() {
    // Skipping it would take its members out of any deny that names the group.
    let err = Groups::parse("groups", "bad/name a\n").unwrap_err();
    assert!(
        err.to_string().starts_with("groups:1: invalid group name"),
        "{err}"
    );
}

#[test]
fn a_malformed_allow_line_is_skipped_and_a_malformed_deny_line_refuses() {
    // Without the allow line, what it would have allowed falls through: never wider.
    let file = PolicyFile::parse(
        "rpcutil.policy",
        "policy default deny\nallow uid=1 * * *\nallow\t*\tping\t*\t*\n",
    )
    .unwrap();
    assert_eq!(file.rules.len(), 1);
    assert_eq!(
        (file.skipped[0].line, file.skipped[0].reason),
        (2, SkipReason::MalformedAllow)
    );
    let set = set_of("rpcutil", "policy default deny\nallow\tup=a\tping\n");
    expect(&set, "up=a", "ping", &Node::standard(), false);
    // A deny line Choria would skip: skipping it could allow what it was written to refuse.
    for text in [
        "policy default allow\ndeny up=bob * * *\n",
        "policy default allow\ndeny\tup=bob\t*\n",
    ] {
        let err = PolicyFile::parse("rpcutil.policy", text).unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        assert!(
            err.message.contains("a deny line that does not parse"),
            "{err}"
        );
    }
}

#[test]
fn malformed_lines_are_errors_naming_file_and_line() {
    let cases = [
        ("policy default deny\ndeny uid=1 * * *\n", 2, "TABs"),
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
