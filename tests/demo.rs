//! `fedgate demo --smoke`: the README's demo path starts, answers one ping from every node, and stops.

mod support;

#[test]
fn demo_smoke_run_pings_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(support::fedgate_bin())
        .args(["demo", "--smoke", "--nodes", "25", "--dir"])
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
    assert_eq!(report["summary"]["ok"], 25);
    assert_eq!(report["fleet"]["replies"], 25);
    assert!(
        dir.path().join("fedgate.toml").is_file(),
        "the demo writes a client config"
    );
}
