//! The Grafana dashboard and the Prometheus alert rules that ship in `dist/` (issue 22, item 9)
//! name only metrics fedgate exports: every name is in the metrics catalog, and a real
//! `fedgate run` (edge, re-signing federation member, file audit) that served an allowed and a
//! denied request exports each one, except the families of sides this instance does not run
//! (the legacy bridge, the registry), which the catalog still has to hold. The rules pass
//! `promtool check rules`.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use fedgate::edge::auth::TokenKeys;
use serde_json::json;
use support::edge::{next_json, open, rpc};
use support::{BrokerProcess, Network, collective_block, gate_block, network_block, realm};

/// Families only a legacy bridge or a registry follower sets.
const NOT_RUN_HERE: [&str; 2] = ["fedgate_legacy_", "fedgate_registry_"];

/// Every metric name an expression in `text` uses (`up` and PromQL's own words aside), with a
/// histogram's or summary's `_bucket`, `_count` and `_sum` series taken back to its name.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if !["fedgate_", "choria_", "process_"]
            .iter()
            .any(|p| word.starts_with(p))
        {
            continue;
        }
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| word.strip_suffix(s))
            .filter(|base| catalog_has(base))
            .unwrap_or(word);
        names.insert(base.to_string());
    }
    names
}

fn catalog_has(name: &str) -> bool {
    fedgate::metrics::catalog::METRICS
        .iter()
        .any(|m| m.name == name)
}

fn dist(path: &str) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dist")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The expressions of the dashboard's panels and variables.
fn dashboard_exprs() -> String {
    let dashboard: serde_json::Value =
        serde_json::from_str(&dist("grafana/fedgate-dashboard.json"))
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("an expr").to_string());
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(query) = variable["definition"].as_str() {
            exprs.push(query.to_string());
        }
    }
    assert!(exprs.len() > 20, "{exprs:?}");
    exprs.join("\n")
}

#[test]
fn the_alert_rules_pass_promtool() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/prometheus/fedgate-alerts.yml");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (Debian's prometheus package; scripts/setup-deps installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_rules_name_only_exported_metrics() {
    let rules = dist("prometheus/fedgate-alerts.yml");
    let wanted: BTreeSet<String> = metric_names(&dashboard_exprs())
        .into_iter()
        .chain(metric_names(&rules))
        .collect();
    // The alerts the issue asks for are there.
    for name in [
        "fedgate_refusals_total",
        "fedgate_audit_errors_total",
        "fedgate_audit_disk_fill_ratio",
        "fedgate_policy_reload_failed",
        "fedgate_registry_refused_total",
        "fedgate_registry_membership_pending",
        "fedgate_certificate_expiry_timestamp_seconds",
        "fedgate_ready",
    ] {
        assert!(metric_names(&rules).contains(name), "no alert on {name}");
    }
    let unknown: Vec<&String> = wanted
        .iter()
        .filter(|n| !n.starts_with("process_") && !catalog_has(n))
        .collect();
    assert!(
        unknown.is_empty(),
        "not in the metrics catalog: {unknown:?}"
    );

    // A running instance (edge, a pass-through federation, file audit) that served an allowed
    // and a denied request.
    let (london, prod) = (Network::start("london"), Network::start("prod"));
    let dir = tempfile::tempdir().unwrap();
    let token_key = dir.path().join("token.key");
    std::fs::write(&token_key, TokenKeys::generate_pem().unwrap()).unwrap();
    let rules_file = dir.path().join("identity.toml");
    std::fs::write(&rules_file, support::EDGE_USERS_TO_LONDON).unwrap();
    let edge = realm("edge");
    let config = dir.path().join("fedgate.toml");
    std::fs::write(
        &config,
        format!(
            "[identity]\nrules = {rules_file:?}\n\n{}{}{}\n\
             [edge]\nlisten = \"127.0.0.1:0\"\n\
             tls = {{ certificate = {:?}, key = {:?} }}\norigins = [\"https://ops.example\"]\n\
             token_key = {token_key:?}\n",
            gate_block(
                dir.path(),
                &[("rpcutil.policy", "policy default deny\nallow * ping * *\n")],
                ""
            ),
            collective_block("collectives.london", &london),
            network_block(
                "federations.prod",
                &prod,
                "mode = \"pass-through\"\nmembers = [\"london\"]"
            ),
            edge.server.cert,
            edge.server.key,
        ),
    )
    .unwrap();
    let mut run = BrokerProcess::spawn(&config, "dashboards").await;
    let token = TokenKeys::load(&token_key)
        .unwrap()
        .issue(
            "alice",
            Duration::from_secs(300),
            None,
            std::time::SystemTime::now(),
        )
        .unwrap();
    let url = run
        .edge
        .clone()
        .expect("an edge")
        .replace("127.0.0.1", "localhost");
    let mut socket = open(&url, Some(&token), None, None).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "welcome");
    for (n, action) in ["ping", "inventory"].iter().enumerate() {
        rpc(
            &mut socket,
            json!({"type":"rpc","id":format!("r{n}"),"collective":"london","agent":"rpcutil","action":action,"timeout_ms":2000}),
        )
        .await;
    }
    let scrape = run.scrape().await;
    run.terminate().await;
    drop(prod);

    let exported: BTreeSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|n| !NOT_RUN_HERE.iter().any(|p| n.starts_with(p)))
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard or the rules name metrics this instance does not export: {missing:?}\n{scrape}"
    );
}
