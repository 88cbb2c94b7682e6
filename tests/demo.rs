//! `fedgate demo --smoke`: the README's demo path starts the whole topology, answers one ping
//! from every node of the federation through the WebSocket edge, and stops.

mod support;

/// Runs `fedgate demo --smoke` with the legacy site in `serializer`; its report.
fn smoke(dir: &std::path::Path, serializer: &str) -> serde_json::Value {
    let output = support::fedgate_dev(&["demo", "--smoke", "--nodes", "25", "--port", "0"])
        .args(["--legacy-serializer", serializer, "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    // The legacy site both ways: the real mco pings the 20 nodes of the federation's v1
    // collectives (15 in london, 5 in tokyo; the bridge re-signs as v1, so osaka's v2 nodes are
    // not bridged) and its own 2 through the bridge, and a Choria client on the edge reaches
    // its 2 mcollectived nodes.
    assert_eq!(
        report["legacy"],
        serde_json::json!({"serializer": serializer, "mco_ping": 22, "choria_ok": 2}),
        "{report}"
    );
    // osaka's 5 Choria protocol v2 nodes answer a v1 client of the federation: the broker
    // re-signs its request as v2 and translates each reply back (the edge's ping above reached
    // them too, as fedgate's delegation).
    assert_eq!(
        report["v2"],
        serde_json::json!({"collective": "osaka", "nodes": 5, "federation_ok": 5}),
        "{report}"
    );
    report
}

#[test]
fn demo_smoke_run_with_a_yaml_legacy_site() {
    let dir = tempfile::tempdir().unwrap();
    let report = smoke(dir.path(), "yaml");
    assert_eq!(report["ok"], 25);
    // The edge stopped at the limit, not on an idle gap or the timeout.
    assert_eq!(report["ended"], "complete", "{report}");
}

#[test]
fn demo_smoke_run_pings_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let report = smoke(dir.path(), "marshal");
    assert_eq!(
        (report["responses"].as_u64(), report["ok"].as_u64()),
        (Some(25), Some(25))
    );
    assert_eq!(report["instances"], 2);
    assert!(
        dir.path().join("fedgate.toml").is_file(),
        "the demo writes a client config"
    );
    // Both instances recorded decisions in their own audit trails (the edge of the first one
    // took the pings: each federation member got its own decision, and the legacy collective
    // one).
    let records = support::audit_records(&dir.path().join("audit/fedgate-1.log"));
    let mut allowed: Vec<_> = records
        .iter()
        .filter(|r| r.kind == fedgate::audit::Kind::Decision)
        .filter(|r| r.event.decision == Some(fedgate::audit::Verdict::Allow))
        .filter(|r| r.event.edge == "websocket")
        .map(|r| r.event.collectives.join(","))
        .collect();
    allowed.sort();
    assert_eq!(allowed, ["london", "oldsite", "osaka", "tokyo"]);
}
