//! The canonical form of audit records (docs/audit-format.md), pinned by golden files: sealing
//! the same events must give the same bytes, byte for byte, whatever the JSON library's version
//! or features, and trails written by earlier versions must still verify.
//!
//! `FEDGATE_BLESS=1 cargo test --test audit_golden` rewrites the golden file; do that only for a
//! deliberate format change, with a new format version.

use std::path::PathBuf;

use fedgate::audit::record::{self, ChainState, Event, Kind, Verdict};
use fedgate::audit::review;
use serde_json::json;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/audit")
        .join(name)
}

/// Events that exercise every rule of the canonical form: key order (including caller-chosen
/// keys outside ASCII), string escapes (quotes, backslashes, control characters, DEL, line and
/// paragraph separators, characters outside the BMP), and numbers (integers at both ends of
/// their range, fractions, exponents, negative zero).
fn events() -> Vec<(Kind, Event)> {
    let header = Event::default();
    let allow = Event {
        edge: "websocket".into(),
        realm: "edge".into(),
        caller: Some("up=alice".into()),
        mapped_caller: Some("choria=alice.mcollective".into()),
        request_id: Some("0f4c2a8e9b7d4e1f8a6c5b3d2e1f0a9b".into()),
        collectives: vec!["london".into(), "tokyo".into()],
        agent: Some("service".into()),
        action: Some("restart".into()),
        data_keys: vec!["service".into()],
        data: json!({"service": "nginx"}).as_object().cloned(),
        filter: "agent=service; fact os=linux".into(),
        caller_filter: "agent=service".into(),
        targets: 2,
        decision: Some(Verdict::Allow),
        stage: "authorize".into(),
        rule: Some("service.policy:3".into()),
        code: "allowed".into(),
        revision: Some(7),
        ..Event::default()
    };
    let strange = Event {
        edge: "websocket".into(),
        claimed_caller: Some(
            "mallory\n\u{1b}[32mallow\u{7f}\t\"quoted\" back\\slash /slash \u{2028}\u{2029}".into(),
        ),
        request_id: Some("café-日本-😀".into()),
        decision: Some(Verdict::Deny),
        stage: "verify".into(),
        code: "bad_signature".into(),
        reason: "signature does not verify \u{0}\u{1f}".into(),
        data: json!({
            "zeta": 1, "Zeta": 2, "é": 3, "e": 4, "\u{ffff}": 5, "😀": 6, "": 7,
            "numbers": [0, -0.0, 0.1, 1.5e-7, 1e21, 123456789.125, -9223372036854775808i64,
                        18446744073709551615u64, 2.5e300, -1, 1.0, 1e15, 1e16, 1e20,
                        0.00001, 0.000001, 0.0000001, 5e-324, 1.7976931348623157e308],
            "nested": {"b": [true, false, null], "a": {"y": "", "x": "\u{8}\u{c}"}},
        })
        .as_object()
        .cloned(),
        ..Event::default()
    };
    let completion = Event {
        edge: "federation".into(),
        links: vec!["golden:ID2".into()],
        replies: Some(3),
        ..Event::default()
    };
    let correction = Event {
        stage: "audit".into(),
        code: "late_record".into(),
        links: vec!["golden:ID3".into()],
        ..Event::default()
    };
    vec![
        (Kind::Header, header),
        (Kind::Decision, allow),
        (Kind::Decision, strange),
        (Kind::Completion, completion),
        (Kind::Correction, correction),
    ]
}

fn sealed() -> Vec<u8> {
    let mut state = ChainState::genesis();
    let mut out = Vec::new();
    for (index, (kind, event)) in events().into_iter().enumerate() {
        let (_, line) = record::seal(
            kind,
            format!("golden:ID{index}"),
            "golden",
            format!("2026-12-05T01:{index:02}:00.000000Z"),
            event,
            &mut state,
        );
        out.extend_from_slice(&line);
        out.push(b'\n');
    }
    out
}

#[test]
fn sealing_gives_the_golden_bytes() {
    let path = golden("v1.log");
    let bytes = sealed();
    if std::env::var_os("FEDGATE_BLESS").is_some() {
        std::fs::write(&path, &bytes).unwrap();
    }
    let expected = std::fs::read(&path).unwrap();
    let (got, want) = (
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&expected),
    );
    for (number, (got, want)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(
            got,
            want,
            "line {} differs from {}",
            number + 1,
            path.display()
        );
    }
    assert_eq!(bytes, expected, "{} differs", path.display());
}

#[test]
fn the_golden_trail_verifies_from_its_genesis() {
    let intact = review::verify(&[golden("v1.log")]).unwrap();
    assert_eq!(intact.records, 5);
    assert_eq!(intact.start, ChainState::genesis());
}

#[test]
fn a_golden_line_edited_in_one_byte_fails_at_that_line() {
    let bytes = std::fs::read(golden("v1.log")).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    // Re-escaping a character that was written raw keeps the JSON's meaning but not its form.
    let edited = text.replacen("café", "caf\\u00e9", 1);
    assert_ne!(edited, text);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("audit.log");
    std::fs::write(&copy, edited).unwrap();
    let broken = review::verify(&[copy]).unwrap_err();
    assert_eq!(broken.line, 3, "{broken}");
    assert!(broken.problem.contains("canonical"), "{broken}");
}
