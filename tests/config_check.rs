//! `fedgate config check` (issue 22, configuration): a config judged as `fedgate run` judges
//! it, without connecting; a bad one exits 78 (EX_CONFIG) naming the key, from `check` and
//! from `run` alike, so a service manager can stop restarting it.

mod support;

use std::path::Path;

use support::{Network, collective_block, gate_block};

fn write(dir: &Path, london: &Network, instance: &str) -> std::path::PathBuf {
    let rules = dir.join("identity.toml");
    std::fs::write(&rules, "").unwrap();
    let path = dir.join("fedgate.toml");
    std::fs::write(
        &path,
        format!(
            "{instance}[identity]\nrules = {rules:?}\n\n{}{}",
            gate_block(dir, &[], ""),
            collective_block("collectives.london", london),
        ),
    )
    .unwrap();
    path
}

fn fedgate(args: &[&str], config: &Path) -> std::process::Output {
    std::process::Command::new(support::fedgate_bin())
        .args(args)
        .arg(config)
        .env_remove("FEDGATE_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn a_config_is_checked_as_run_loads_it_and_a_bad_one_exits_78_naming_the_key() {
    let london = Network::start("london");
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), &london, "[instance]\nname = \"gw1\"\n\n");
    let out = fedgate(&["config", "check"], &good);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(": ok: instance gw1 would serve"),
        "{stdout}"
    );

    for (instance, named) in [
        ("[instance]\ncolour = \"blue\"\n\n", "colour"),
        ("[instance]\nname = \"gw 1\"\n\n", "`instance.name`"),
        ("[instance]\nlog_format = \"xml\"\n\n", "log_format"),
        (
            "[edge]\nlisten = \"127.0.0.1:0\"\nreply_buffer = 10\n\n",
            "`edge.reply_buffer`: must be between 1024 and 16777216",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let bad = write(dir.path(), &london, instance);
        for args in [&["config", "check"][..], &["run", "--config"][..]] {
            let out = fedgate(args, &bad);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{args:?} {instance}: {stderr}");
            assert!(stderr.contains(named), "{args:?}: {stderr}");
        }
    }
}

#[test]
fn the_version_names_the_commit_it_was_built_from() {
    let out = std::process::Command::new(support::fedgate_bin())
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert_eq!(head.len(), 12, "this test runs in a git checkout");
    assert_eq!(
        version.trim(),
        format!("fedgate {} ({head})", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_systemd_unit_verifies_and_starts_only_a_checked_config() {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/fedgate.service"))
            .unwrap();
    // The exit code a bad config gives is the one systemd is told not to restart on.
    assert!(unit.contains("RestartPreventExitStatus=78"));
    assert!(unit.contains("ExecStartPre=/usr/bin/fedgate config check\n"));
    // `run` tells systemd when it serves (tests/systemd_notify.rs); SIGHUP reloads.
    assert!(unit.contains("\nType=notify\n"));
    assert!(unit.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"));
    let setting = |key: &str| -> u64 {
        let line = unit.lines().find(|l| l.starts_with(&format!("{key}=")));
        line.and_then(|l| l[key.len() + 1..].parse().ok())
            .unwrap_or_else(|| panic!("{key} in the unit"))
    };
    // The edge's default max_connections (10,000) and max_handshakes (1,024), with room.
    assert!(setting("LimitNOFILE") >= 2 * (10_000 + 1_024));
    // Above the edge's default shutdown grace plus the default drain_timeout (10 s each).
    assert!(setting("TimeoutStopSec") > 10 + 10);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fedgate.service");
    let bin = support::fedgate_bin();
    std::fs::write(&path, unit.replace("/usr/bin/fedgate", bin)).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        // Documentation=man:fedgate-run(1) is found once the package is installed;
        // scripts/package verifies the packaged unit with its man pages.
        .arg("--man=no")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("fedgate.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
}

/// The subcommands a `--help` lists.
fn commands(help: std::process::Output) -> Vec<String> {
    assert!(help.status.success());
    String::from_utf8_lossy(&help.stdout)
        .lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_whitespace().next().map(String::from))
        .collect()
}

#[test]
fn the_gateway_binary_holds_only_what_operators_run_and_fedgate_dev_the_tooling() {
    let gateway = std::process::Command::new(support::fedgate_bin())
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(
        commands(gateway),
        [
            "inspect", "certs", "identity", "audit", "policy", "rpc", "ws-rpc", "run", "observe",
            "token", "registry", "config", "help"
        ]
    );
    let dev = support::fedgate_dev(&["--help"]).output().unwrap();
    assert_eq!(commands(dev), ["certs", "fleet", "demo", "bench", "help"]);
}

#[test]
fn certs_expiry_lists_every_configured_certificate_and_fails_within_the_window() {
    let london = Network::start("london");
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), &london, "");
    let expiry = |within: &str| {
        let out = fedgate(
            &["certs", "expiry", "--json", "--within", within, "--config"],
            &config,
        );
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        (
            out.status.code(),
            lines,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, lines, stderr) = expiry("1");
    assert_eq!(code, Some(0), "{stderr}");
    let entries: std::collections::BTreeSet<&str> =
        lines.iter().map(|l| l["entry"].as_str().unwrap()).collect();
    for entry in [
        "collectives.london.ca",
        "collectives.london.tls.certificate",
        "collectives.london.signer.certificate",
    ] {
        assert!(entries.contains(entry), "{entry} missing from {lines:?}");
    }
    // Soonest first, each with its subject and the days it has left.
    let expires: Vec<i64> = lines
        .iter()
        .map(|l| l["expires"].as_i64().unwrap())
        .collect();
    assert!(expires.is_sorted(), "{expires:?}");
    for line in &lines {
        assert!(line["subject"].as_str().unwrap().contains("CN="), "{line}");
        assert!(line["days_left"].as_i64().unwrap() > 1, "{line}");
    }
    // A window longer than the certificates live fails, naming how many.
    let (code, lines_again, stderr) = expiry("1000000");
    assert_eq!(code, Some(1));
    assert_eq!(lines_again.len(), lines.len());
    assert!(
        stderr.contains(&format!(
            "{} certificate(s) expire within 1000000 days",
            lines.len()
        )),
        "{stderr}"
    );
}
