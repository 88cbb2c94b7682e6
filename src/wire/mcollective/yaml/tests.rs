//! YAML tests: Psych's scalar resolution, what `safe_load` refuses, and strings and keys that
//! must read back as written.

use super::write::float_text;
use super::*;
use crate::wire::mcollective::Ruby;

#[test]
fn psych_scalars_resolve_as_psych_does() {
    let doc =
        "---\n:a: 60\n:b: yes\n:c: ~\n:d: ':e'\n:f: 1.5\n:g: \"60\"\n:h: 2.12.5\n:i: cert=alice\n";
    let value = decode(doc.as_bytes()).unwrap();
    assert_eq!(value.get("a"), Some(&Ruby::Int(60)));
    assert_eq!(value.get("b"), Some(&Ruby::Bool(true)));
    assert_eq!(value.get("c"), Some(&Ruby::Nil));
    assert_eq!(value.get("d"), Some(&Ruby::str(":e")));
    assert_eq!(value.get("f"), Some(&Ruby::Float(1.5)));
    // A key too long to be a simple key is written in the explicit form.
    let long = Ruby::Hash(vec![(Ruby::Str("k".repeat(1100)), Ruby::Int(1))]);
    assert!(encode(&long).starts_with("---\n? "), "{}", encode(&long));
    assert_eq!(decode(encode(&long).as_bytes()).unwrap(), long);
    // A block that opens with an empty line would take its indentation from the next.
    let text = Ruby::Str("\n - ---\nZ\n".into());
    assert_eq!(decode(encode(&text).as_bytes()).unwrap(), text);
    // A text of its own is indented under `---`, so a line `...` does not end the document.
    let text = Ruby::Str("...\n---\n\n".into());
    assert_eq!(encode(&text), "--- |+\n  ...\n  ---\n\n");
    assert_eq!(decode(encode(&text).as_bytes()).unwrap(), text);
    // Floats are written as Ruby's Float#to_s writes them, and read back as Floats.
    for (f, text) in [
        (-7.7304011e19, "-7.7304011e+19"),
        (1e16, "1.0e+16"),
        (1.5e-5, "1.5e-05"),
        (1e100, "1.0e+100"),
        (0.0001, "0.0001"),
        (123.0, "123.0"),
    ] {
        assert_eq!(float_text(f), text);
        let back = decode(encode(&Ruby::Float(f)).as_bytes()).unwrap();
        assert_eq!(back, Ruby::Float(f), "{text}");
    }
    assert_eq!(value.get("g"), Some(&Ruby::str("60")));
    assert_eq!(value.get("h"), Some(&Ruby::str("2.12.5")));
    assert_eq!(value.get("i"), Some(&Ruby::str("cert=alice")));
}

#[test]
fn what_safe_load_refuses_is_refused() {
    for doc in [
        "--- &a [1]\n--- *a\n",
        "---\n:a: &x 1\n:b: *x\n",
        "--- !ruby/object:Foo {}\n",
        "---\n:when: 2026-01-01\n",
        "--- [1, 2\n",
        "--- 1\n--- 2\n",
    ] {
        assert!(decode(doc.as_bytes()).is_err(), "{doc}");
    }
    let deep = format!("--- {}{}\n", "[".repeat(100), "]".repeat(100));
    assert!(decode(deep.as_bytes()).is_err());
}

#[test]
fn no_key_or_value_can_inject_yaml() {
    let tricky = [
        "x: 1\n  :action: restart\n  :y",
        "a\nb\r  :action: restart",
        "a\u{2028}:action: restart",
        "a\u{85}:action: restart",
        " leading\nspace",
        "quote\" and \\ backslash",
    ];
    for text in tricky {
        let value = Ruby::Hash(vec![
            (Ruby::sym(text), Ruby::str(text)),
            (Ruby::sym("action"), Ruby::str("status")),
        ]);
        let yaml = encode(&value);
        assert_eq!(
            decode(yaml.as_bytes()).unwrap(),
            value,
            "{text:?} as {yaml}"
        );
    }
}

#[test]
fn strings_are_written_so_they_read_back() {
    for text in [
        "plain",
        "==",
        "--- pong\n",
        "yes",
        "60",
        ":sym",
        "a: b",
        "two\nlines\n",
        "no newline\nat end",
        "",
        "it's",
        "0789",
        "tab\there",
    ] {
        let value = Ruby::Hash(vec![(Ruby::sym("k"), Ruby::str(text))]);
        let yaml = encode(&value);
        assert_eq!(
            decode(yaml.as_bytes()).unwrap(),
            value,
            "{text:?} as {yaml}"
        );
    }
}
