//! Tests for fact matching, including the cases ported from go-choria's `facts_test.go`.

use serde_json::{Value, json};

use super::*;

/// go-choria's `testdata/fact.yaml`, plus facts of the remaining types.
fn facts() -> Value {
    json!({
        "string": "hello world",
        "inumber": 1,
        "fnumber": 1.2,
        "tbool": true,
        "fbool": false,
        "nested": {
            "string": "nested hello world",
            "inumber": 2,
            "fnumber": 2.2,
            "tbool": true,
            "fbool": false
        },
        "nothing": null,
        "object": {"a": 1},
        "list": [1, 2, 3],
        "trunc": 2.7,
        "negative": -3,
        "big": 12_345_678_901_234_567_890_u64,
        "dotted.name": "escaped",
        "greek": "ΣΊΣΥΦΟΣ"
    })
}

fn filter(fact: &str, op: &str, value: &str) -> FactFilter {
    FactFilter {
        fact: fact.to_string(),
        operator: FactOperator::parse(op).expect("test operator"),
        value: value.to_string(),
    }
}

fn t(fact: &str, op: &str, value: &str) -> Result<bool, FactError> {
    match_fact(&filter(fact, op, value), &facts())
}

fn yes(fact: &str, op: &str, value: &str) {
    assert_eq!(t(fact, op, value), Ok(true), "{fact} {op} {value}");
}

fn no(fact: &str, op: &str, value: &str) {
    assert_eq!(t(fact, op, value), Ok(false), "{fact} {op} {value}");
}

fn fails(fact: &str, op: &str, value: &str) -> FactError {
    t(fact, op, value).expect_err(&format!("{fact} {op} {value} should fail"))
}

#[test]
fn go_choria_strings() {
    yes("string", "==", "hello world");
    yes("string", "==", "HeLlO WoRLD");
    no("string", "==", "helloworld");
    no("string", "!=", "hello world");
    no("string", "!=", "HeLlO WOrLd");
    yes("string", "!=", "helloworld");
    yes("string", "=~", "/hello/");
    yes("string", "=~", "/HeLlO/");
    no("string", "=~", "/bye/");
    no("string", "<", "h");
    no("string", "<", "H");
    yes("string", "<", "i");
    yes("string", "<", "I");
    yes("string", ">", "h");
    yes("string", ">", "H");
    no("string", ">", "i");
    no("string", ">", "I");
    yes("nested.string", "==", "nested hello world");
}

#[test]
fn go_choria_ints() {
    yes("nested.inumber", "==", "2");
    no("inumber", "==", "2");
    no("inumber", "!=", "1");
    yes("inumber", ">=", "1");
    no("inumber", ">", "1");
    yes("inumber", "<", "10");
}

#[test]
fn go_choria_floats() {
    yes("nested.fnumber", "==", "2.2");
    yes("fnumber", "==", "1.2");
    yes("fnumber", "=~", "/1\\.\\d+/");
    no("fnumber", "!=", "1.2");
    no("fnumber", "<=", "1.01");
    yes("fnumber", ">=", "1");
    yes("fnumber", "<", "10");
    no("fnumber", "<", "1.0");
    no("fnumber", ">", "10");
    yes("fnumber", ">", "1.0");
}

#[test]
fn go_choria_true_booleans() {
    for value in ["true", "T", "1", "t"] {
        yes("tbool", "==", value);
    }
    no("tbool", "==", "false");
    yes("tbool", "!=", "bob");
    yes("tbool", "!=", "false");
    no("tbool", "!=", "T");
}

#[test]
fn go_choria_false_booleans() {
    for value in ["false", "F", "0", "f"] {
        yes("fbool", "==", value);
    }
    no("fbool", "==", "true");
    yes("fbool", "!=", "bob");
    no("fbool", "!=", "true");
    yes("fbool", "!=", "false");
}

#[test]
fn go_choria_match_all_or_nothing() {
    let facts = facts();
    let good = [
        filter("string", "==", "hello world"),
        filter("nested.string", "==", "nested hello world"),
    ];
    assert!(match_facts(&good, &facts));
    let mixed = [
        filter("string", "==", "hello world"),
        filter("nested.string", "==", "fail"),
    ];
    assert!(!match_facts(&mixed, &facts));
}

#[test]
fn string_operators() {
    yes("string", "<=", "HELLO WORLD");
    yes("string", ">=", "hello world");
    no("string", "<=", "hello");
    yes("string", "=~", "world$");
    yes("string", "=~", "//^HELLO//");
    yes("string", "=~", "/");
    yes("greek", "==", "σίσυφος");
    assert!(matches!(
        fails("string", "=~", "/(/"),
        FactError::InvalidRegex { .. }
    ));
}

#[test]
fn number_quirks() {
    // gtMatch uses >= for float values.
    yes("fnumber", ">", "1.2");
    no("fnumber", ">", "1.3");
    no("fnumber", "<", "1.2");
    yes("fnumber", "<=", "1.2");
    // Integer values compare against the truncated fact, as text for `==`.
    yes("fnumber", "==", "1");
    yes("trunc", "==", "2");
    no("trunc", ">", "2");
    no("inumber", "==", "01");
    no("inumber", "==", "+1");
    yes("inumber", "!=", "01");
    no("inumber", "==", "one");
    yes("negative", "<", "-2");
    yes("negative", "==", "-3.0");
    // `=~` prints floats as %.4f and integers as integers.
    yes("fnumber", "=~", "/^1\\.2000$/");
    yes("trunc", "=~", "/^2$/");
    yes("inumber", "=~", "1");
    // Beyond 2^53 gjson parses the literal and wraps it into an int64.
    yes("big", "==", "-6101065172474983726");
    yes("big", ">", "1.0");
}

#[test]
fn number_errors() {
    assert_eq!(
        fails("inumber", "<", "abc"),
        FactError::InvalidNumber("abc".into())
    );
    assert_eq!(
        fails("inumber", ">=", "1x"),
        FactError::InvalidNumber("1x".into())
    );
    assert_eq!(
        fails("inumber", "==", "1.x"),
        FactError::InvalidNumber("1.x".into())
    );
    assert_eq!(
        fails("inumber", "!=", "1.0e400"),
        FactError::InvalidNumber("1.0e400".into())
    );
    assert!(matches!(
        fails("inumber", "=~", "/1(/"),
        FactError::InvalidRegex { .. }
    ));
}

#[test]
fn boolean_quirks() {
    no("tbool", "==", "tRuE");
    no("tbool", "!=", "tRuE");
    yes("tbool", "==", "TRUE");
    yes("fbool", "==", "bob");
    yes("fbool", "==", "tRuE");
    yes("tbool", "=~", "TRUE");
    yes("tbool", "=~", "tRuE");
    no("tbool", "=~", "/true/");
    yes("fbool", "=~", "/false/");
    no("fbool", "=~", "TRUE");
    for op in ["<", "<=", ">", ">="] {
        let err = fails("tbool", op, "1");
        assert!(
            matches!(err, FactError::NotComparable { kind: "True", .. }),
            "{op}"
        );
        let err = fails("fbool", op, "1");
        assert!(
            matches!(err, FactError::NotComparable { kind: "False", .. }),
            "{op}"
        );
    }
}

#[test]
fn null_and_structured_facts() {
    for fact in ["nothing", "object", "list"] {
        for op in ["==", "!=", "=~"] {
            no(fact, op, "x");
        }
    }
    no("object", "==", "{\"a\":1}");
    assert!(matches!(
        fails("nothing", "<", "1"),
        FactError::NotComparable { kind: "Null", .. }
    ));
    assert!(matches!(
        fails("object", ">=", "1"),
        FactError::NotComparable { kind: "JSON", .. }
    ));
    assert!(matches!(
        fails("list", ">", "1"),
        FactError::NotComparable { kind: "JSON", .. }
    ));
}

#[test]
fn missing_facts_never_match() {
    for op in ["==", "!=", "<", "<=", ">", ">=", "=~"] {
        no("absent", op, "x");
        no("nested.absent", op, "1");
    }
}

#[test]
fn gjson_paths_in_filters() {
    yes("list.1", "==", "2");
    yes("list.#", "==", "3");
    yes("list.#", ">", "2");
    yes("list.#", "=~", "/^3\\.0000$/");
    no("list.#.a", "==", "x");
    assert!(matches!(
        fails("list.#.a", "<", "1"),
        FactError::NotComparable { kind: "JSON", .. }
    ));
    yes("dotted\\.name", "==", "escaped");
    no("dotted.name", "==", "escaped");
    yes("nest*.inum?er", "==", "2");
    let err = fails("list.#(>1)", "==", "2");
    assert_eq!(err, FactError::UnsupportedPath("list.#(>1)".into()));
}

#[test]
fn match_facts_rules() {
    let facts = facts();
    assert!(!match_facts(&[], &facts), "an empty list matches nothing");
    assert!(
        !match_facts(&[filter("tbool", "<", "1")], &facts),
        "an error is no match"
    );
    let erring = [
        filter("string", "==", "hello world"),
        filter("inumber", "<", "abc"),
    ];
    assert!(!match_facts(&erring, &facts));
    let all = [
        filter("inumber", "==", "1"),
        filter("tbool", "==", "true"),
        filter("list.#", ">=", "3"),
    ];
    assert!(match_facts(&all, &facts));
}

#[test]
fn lookup_returns_only_present_values() {
    let facts = facts();
    assert_eq!(lookup(&facts, "nested.inumber"), Some(&json!(2)));
    assert_eq!(lookup(&facts, "list.2"), Some(&json!(3)));
    assert_eq!(lookup(&facts, "dotted\\.name"), Some(&json!("escaped")));
    assert_eq!(lookup(&facts, "nothing"), Some(&Value::Null));
    assert_eq!(lookup(&facts, "nested.missing"), None);
    assert_eq!(
        lookup(&facts, "list.#"),
        None,
        "computed counts are not stored values"
    );
    assert_eq!(lookup(&facts, "@reverse"), None);
}

#[test]
fn errors_display() {
    let err = FactError::NotComparable {
        kind: "True",
        operator: FactOperator::Lt,
    };
    assert_eq!(
        err.to_string(),
        "do not know how to evaluate data of type True with <"
    );
    assert_eq!(
        FactError::InvalidNumber("x".into()).to_string(),
        "invalid number \"x\""
    );
}
