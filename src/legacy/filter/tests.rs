//! Filters across the legacy boundary, in both directions.

use std::collections::BTreeMap;

use super::*;

fn fact(name: &str, value: &str, operator: Option<&str>) -> Ruby {
    let mut pairs = vec![
        (Ruby::sym("fact"), Ruby::str(name)),
        (Ruby::sym("value"), Ruby::str(value)),
    ];
    if let Some(op) = operator {
        pairs.push((Ruby::sym("operator"), Ruby::str(op)));
    }
    Ruby::Hash(pairs)
}

/// A legacy filter with all five lists, as mco sends it.
fn legacy(entries: &[(&str, Vec<Ruby>)]) -> Ruby {
    let mut pairs: Vec<(Ruby, Ruby)> = ["fact", "cf_class", "agent", "identity", "compound"]
        .iter()
        .map(|k| (Ruby::str(k), Ruby::Array(Vec::new())))
        .collect();
    for (key, items) in entries {
        let at = pairs
            .iter()
            .position(|(k, _)| k.as_str() == Some(key))
            .unwrap_or_else(|| {
                pairs.push((Ruby::str(key), Ruby::Nil));
                pairs.len() - 1
            });
        pairs[at].1 = Ruby::Array(items.clone());
    }
    Ruby::Hash(pairs)
}

fn strs(items: &[&str]) -> Vec<Ruby> {
    items.iter().map(|s| Ruby::str(s)).collect()
}

fn stack(entries: &[(&str, &str)]) -> Ruby {
    Ruby::Array(
        entries
            .iter()
            .map(|(k, v)| Ruby::Hash(vec![(Ruby::str(k), Ruby::str(v))]))
            .collect(),
    )
}

fn expr(filter: &Filter) -> &str {
    filter.compound[0][0]["expr"].as_str()
}

#[test]
fn fact_filters_keep_their_operator() {
    let filter = choria_filter(&legacy(&[(
        "fact",
        vec![
            fact("country", "uk", Some("==")),
            fact("cpus", "4", Some(">=")),
        ],
    )]))
    .unwrap();
    let shown: Vec<String> = filter.fact.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["country==uk", "cpus>=4"]);
    let regex = choria_filter(&legacy(&[("fact", vec![fact("role", "/^w/", Some("=~"))])]));
    assert_eq!(regex.unwrap().fact[0].value, "/(?-i)^w/", "Ruby keeps case");
}

#[test]
fn a_fact_filter_without_an_operator_is_refused_as_mcollectived_selects_no_node() {
    let err = choria_filter(&legacy(&[("fact", vec![fact("country", "uk", None)])])).unwrap_err();
    assert!(err.contains("no :operator"), "{err}");
    assert!(err.contains("selects no node"), "{err}");
    // go-choria's spellings are not mcollectived's.
    for op in ["=", "=>", "=<", "~"] {
        let err =
            choria_filter(&legacy(&[("fact", vec![fact("cpus", "4", Some(op))])])).unwrap_err();
        assert!(err.contains("does not"), "{op}: {err}");
    }
    // String keys are not read by has_fact?.
    let strings = Ruby::Hash(vec![
        (Ruby::str("fact"), Ruby::str("country")),
        (Ruby::str("value"), Ruby::str("uk")),
        (Ruby::str("operator"), Ruby::str("==")),
    ]);
    assert!(choria_filter(&legacy(&[("fact", vec![strings])])).is_err());
}

#[test]
fn classes_agents_and_identities_read_as_mcollectived_reads_them() {
    let filter = choria_filter(&legacy(&[
        ("cf_class", strs(&["web", "/^role/", "Web"])),
        ("puppet_class", strs(&["base"])),
        ("agent", strs(&["rpcutil", "mcollective", "/util"])),
        ("identity", strs(&["/^node1/"])),
    ]))
    .unwrap();
    assert_eq!(
        filter.cf_class,
        ["web", "/(?-i)^role/", "/(?-i)^Web$/", "base"]
    );
    assert_eq!(filter.agent, ["rpcutil", "/util/"]);
    assert_eq!(filter.identity, ["/^node1/"]);
}

#[test]
fn identities_that_could_overlap_are_refused() {
    let ok = |ids: &[&str]| choria_filter(&legacy(&[("identity", strs(ids))])).is_ok();
    assert!(ok(&["a", "b"]));
    assert!(ok(&["/^a/", "b"]));
    assert!(!ok(&["a", "a"]));
    assert!(!ok(&["/^a/", "ab"]));
    assert!(!ok(&["/a/", "/b/"]));
}

#[test]
fn only_the_empty_filter_passes_without_criteria() {
    assert!(choria_filter(&Ruby::Hash(Vec::new())).unwrap().is_empty());
    assert!(choria_filter(&legacy(&[])).unwrap().is_empty());
    let with_collective = legacy(&[]);
    let Ruby::Hash(mut pairs) = with_collective else {
        unreachable!()
    };
    pairs.push((Ruby::str("collective"), Ruby::str("mcollective")));
    assert!(choria_filter(&Ruby::Hash(pairs)).is_err());
    // The agent `mcollective` passes everywhere, and counts.
    let only = choria_filter(&legacy(&[("agent", strs(&["mcollective"]))])).unwrap();
    assert!(only.is_empty());
}

#[test]
fn legacy_compound_call_stacks_become_one_choria_expression() {
    let filter = choria_filter(&legacy(&[(
        "compound",
        vec![
            stack(&[
                ("statement", "country=uk"),
                ("and", "and"),
                ("not", "not"),
                ("(", "("),
                ("statement", "cpus>=8"),
                ("or", "or"),
                ("statement", "/^role::d/"),
                (")", ")"),
            ]),
            stack(&[("statement", "base")]),
        ],
    )]))
    .unwrap();
    assert_eq!(
        expr(&filter),
        "(with(\"country==uk\") && ! ( with(\"cpus>=8\") || any(classes, # matches \"^role::d\") )) && ((\"base\" in classes))"
    );
    let regex = choria_filter(&legacy(&[(
        "compound",
        vec![stack(&[("statement", "role=/^w/")])],
    )]));
    assert_eq!(expr(&regex.unwrap()), "with(\"role=~/(?-i)^w/\")");
}

#[test]
fn legacy_compound_forms_without_a_choria_form_are_refused() {
    let refused = |entries: &[(&str, &str)]| {
        choria_filter(&legacy(&[("compound", vec![stack(entries)])])).unwrap_err()
    };
    // mcollectived reads `country!=uk` as the fact `country!`.
    assert!(refused(&[("statement", "country!=uk")]).contains("country!"));
    assert!(refused(&[("statement", "a=")]).contains("no value"));
    assert!(refused(&[("weird", "x")]).contains("weird"));
    let function = Ruby::Array(vec![Ruby::Hash(vec![(
        Ruby::str("fstatement"),
        Ruby::Hash(vec![(Ruby::str("name"), Ruby::str("puppet"))]),
    )])]);
    let err = choria_filter(&legacy(&[("compound", vec![function])])).unwrap_err();
    assert!(err.contains("puppet() is a data plugin function"), "{err}");
    let empty = choria_filter(&legacy(&[("compound", vec![Ruby::Array(vec![])])])).unwrap();
    assert_eq!(expr(&empty), "false");
}

fn choria(exprs: &[&str]) -> Filter {
    let group = |e: &&str| vec![BTreeMap::from([("expr".to_string(), e.to_string())])];
    Filter {
        compound: exprs.iter().map(group).collect(),
        ..Filter::default()
    }
}

fn statements(ruby: &Ruby) -> Vec<Vec<String>> {
    let Some(Ruby::Array(groups)) = ruby.get("compound") else {
        panic!("no compound: {ruby:?}")
    };
    groups
        .iter()
        .map(|g| match g {
            Ruby::Array(entries) => entries
                .iter()
                .map(|e| match e {
                    Ruby::Hash(pairs) => pairs[0].1.as_str().unwrap().to_string(),
                    _ => panic!(),
                })
                .collect(),
            _ => panic!(),
        })
        .collect()
}

#[test]
fn choria_compound_filters_become_legacy_call_stacks() {
    let ruby = legacy_filter(
        &choria(&[
            r#"with("country=uk") && !(with("cpus<8") || ("db" in classes))"#,
            r#"any(classes, # matches "^role") and with("role=~/^w/")"#,
        ]),
        "rpcutil",
    )
    .unwrap();
    assert_eq!(
        statements(&ruby),
        [
            vec!["country=uk", "and", "not", "(", "cpus<8", "or", "db", ")"],
            vec!["/^role/", "and", "role=/(?i)^w/"],
        ]
    );
}

#[test]
fn choria_compound_forms_without_a_legacy_form_are_refused() {
    let refused = |e: &str| legacy_filter(&choria(&[e]), "rpcutil").unwrap_err();
    assert!(refused(r#"with("apache")"#).contains("classes only"));
    assert!(refused(r#"with("country!=uk")"#).contains("no !="));
    assert!(refused(r#"fact("x") == 1"#).contains("compound filter"));
    assert!(refused("true").contains("no legacy form"));
    assert!(
        legacy_filter(&choria(&["true", "true", "false"]), "rpcutil")
            .unwrap_err()
            .contains("3 groups")
    );
    let malformed = Filter {
        compound: vec![vec![]],
        ..Filter::default()
    };
    assert!(legacy_filter(&malformed, "rpcutil").is_err());
}

#[test]
fn choria_classes_identities_and_regexes_go_across_with_their_meaning() {
    let filter = Filter {
        cf_class: vec!["Web".into(), "/^role/".into()],
        identity: vec!["/^n1/".into(), "n2".into()],
        fact: vec![FactFilter::parse("role=/^W/").unwrap()],
        ..Filter::default()
    };
    let ruby = legacy_filter(&filter, "rpcutil").unwrap();
    let list = |k: &str| match ruby.get(k) {
        Some(Ruby::Array(items)) => items
            .iter()
            .map(|i| i.as_str().unwrap_or("?").to_string())
            .collect::<Vec<_>>(),
        _ => panic!(),
    };
    assert_eq!(list("cf_class"), ["web", "/(?i)^role/"]);
    assert_eq!(list("identity"), ["/^n1/", "n2"]);
    assert_eq!(list("agent"), ["rpcutil"]);
    let Some(Ruby::Array(facts)) = ruby.get("fact") else {
        panic!()
    };
    assert_eq!(
        facts[0].get("value").and_then(Ruby::as_str),
        Some("/(?i)^W/")
    );
    for bad in ["/a", "/a/b/"] {
        let filter = Filter {
            identity: vec![bad.into()],
            ..Filter::default()
        };
        assert!(legacy_filter(&filter, "rpcutil").is_err(), "{bad}");
    }
    let overlapping = Filter {
        identity: vec!["/^n/".into(), "n1".into()],
        ..Filter::default()
    };
    assert!(legacy_filter(&overlapping, "rpcutil").is_err());
}
