//! go-choria's example policies 1 to 17, each with the outcome its own tests give.

use super::*;

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
