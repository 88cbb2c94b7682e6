//! `fedgate demo --smoke`: the README's demo path starts the whole topology, answers one ping
//! from every node of the federation through the WebSocket edge, and stops.

mod support;

#[test]
fn demo_smoke_run_pings_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(support::fedgate_bin())
        .args(["demo", "--smoke", "--nodes", "25", "--port", "0", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
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
    // took the ping; each federation member got its own decision).
    let records = support::audit_records(&dir.path().join("audit/fedgate-1.log"));
    let allowed: Vec<_> = records
        .iter()
        .filter(|r| r.kind == fedgate::audit::Kind::Decision)
        .filter(|r| r.event.decision == Some(fedgate::audit::Verdict::Allow))
        .map(|r| r.event.collectives.join(","))
        .collect();
    assert_eq!(allowed, ["london", "tokyo"]);
}
