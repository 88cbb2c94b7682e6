//! The metrics address of a real `fedgate run`: every fedgate metric has HELP and counters end
//! in `_total`, the build, certificate and process metrics are there, `/metrics` is not on the
//! edge, and `/healthz` and `/readyz` answer, `/readyz` naming a collective whose nats-server is
//! down until it is back.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use fedgate::edge::auth::TokenKeys;
use support::{
    BrokerProcess, EDGE_USERS_TO_LONDON, Network, collective_block, gate_block, network_block,
};

/// `GET path` over HTTP/1.0: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Polls `GET path` until `done` holds for its answer, for at most 30 s; the last answer.
async fn wait_for(addr: SocketAddr, path: &str, done: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(addr, path).await;
        if done(status, &body) || tokio::time::Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The metric family a sample line belongs to: its name without labels, and without a
/// histogram's or summary's `_bucket`, `_sum` or `_count` when `families` has the stem.
fn family<'a>(line: &'a str, families: &BTreeMap<String, String>) -> &'a str {
    let name = line.split(['{', ' ']).next().unwrap_or_default();
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(stem) = name.strip_suffix(suffix)
            && families.contains_key(stem)
        {
            return stem;
        }
    }
    name
}

/// `# TYPE` and `# HELP` of a Prometheus text: name to type, and the names with HELP.
fn headers(text: &str) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut types = BTreeMap::new();
    let mut helped = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("#"), Some("TYPE"), Some(name), Some(kind)) => {
                types.insert(name.to_string(), kind.to_string());
            }
            (Some("#"), Some("HELP"), Some(name), Some(_)) => {
                helped.insert(name.to_string());
            }
            _ => {}
        }
    }
    (types, helped)
}

/// An instance with an edge on london, and a pass-through federation over london.
struct EdgeSite {
    _london: Network,
    _prod: Network,
    _dir: tempfile::TempDir,
    process: BrokerProcess,
}

impl EdgeSite {
    async fn start() -> EdgeSite {
        let (london, prod) = (Network::start("london"), Network::start("prod"));
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("identity.toml");
        std::fs::write(&rules, EDGE_USERS_TO_LONDON).unwrap();
        let key = dir.path().join("token.key");
        std::fs::write(&key, TokenKeys::generate_pem().unwrap()).unwrap();
        let text = format!(
            "[identity]\nrules = {rules:?}\n\n{}{}{}\n[edge]\nlisten = \"127.0.0.1:0\"\ntoken_key = {key:?}\n",
            gate_block(dir.path(), &[], ""),
            collective_block("collectives.london", &london),
            network_block(
                "federations.prod",
                &prod,
                "mode = \"pass-through\"\nmembers = [\"london\"]"
            ),
        );
        let config = dir.path().join("fedgate.toml");
        std::fs::write(&config, text).unwrap();
        let process = BrokerProcess::spawn(&config, "metrics-edge").await;
        EdgeSite {
            _london: london,
            _prod: prod,
            _dir: dir,
            process,
        }
    }

    fn metrics(&self) -> SocketAddr {
        self.process.metrics.expect("a metrics address")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fedgate_metric_has_help_and_every_counter_ends_in_total() {
    let site = EdgeSite::start().await;
    // A refusal and an audit record or two, so that more than the start-up's metrics exist.
    let edge: SocketAddr = site
        .process
        .edge
        .as_deref()
        .and_then(|url| url.strip_prefix("ws://")?.strip_suffix("/ws")?.parse().ok())
        .expect("the edge's address");
    let (status, _) = get(edge, "/api/realms").await;
    assert_eq!(status, 401, "an API call without credentials is refused");
    let (status, body) = get(site.metrics(), "/metrics").await;
    assert_eq!(status, 200);
    let (types, helped) = headers(&body);
    let mut checked = 0;
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = family(line, &types);
        if !name.starts_with("fedgate_") {
            continue;
        }
        checked += 1;
        let kind = types
            .get(name)
            .unwrap_or_else(|| panic!("{name} has no TYPE"));
        assert!(helped.contains(name), "{name} has no HELP");
        if kind == "counter" {
            assert!(
                name.ends_with("_total"),
                "the counter {name} does not end in _total"
            );
        }
    }
    assert!(checked > 10, "too few fedgate series to check:\n{body}");
    for (name, kind) in &types {
        assert!(helped.contains(name), "{name} ({kind}) has no HELP");
    }
    assert!(
        !body.contains("{instance=\"") && !body.contains(",instance=\""),
        "no series carries an `instance` label, Prometheus' own:\n{body}"
    );
    let build = body
        .lines()
        .find(|l| l.starts_with("fedgate_build_info{"))
        .expect("fedgate_build_info");
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && build.contains("commit=\"")
            && build.contains("fedgate_instance=\"metrics-edge\"")
            && build.ends_with(" 1"),
        "{build}"
    );
    // Every configured certificate, named by its config key.
    for entry in [
        "collectives.london.ca",
        "collectives.london.tls.certificate",
        "collectives.london.signer.certificate",
        "federations.prod.ca",
        "federations.prod.tls.certificate",
    ] {
        let expiry = site
            .process
            .counter(
                "fedgate_certificate_expiry_timestamp_seconds",
                &[("entry", entry)],
            )
            .await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(expiry > now, "{entry}: expires at {expiry}");
    }
    assert_eq!(
        types
            .get("process_resident_memory_bytes")
            .map(String::as_str),
        Some("gauge")
    );
    assert_eq!(
        types.get("choria_federation_time").map(String::as_str),
        Some("summary")
    );
    assert_eq!(
        types
            .get("fedgate_federation_processing_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    assert!(
        body.lines()
            .any(|l| l.starts_with("choria_federation_received_msgs{")
                && l.contains("identity=\"metrics-edge\"")),
        "go-choria's metrics carry the instance as identity:\n{body}"
    );
    // Health and metrics are on the metrics address, not on the public edge.
    assert_eq!(
        get(edge, "/metrics").await.0,
        404,
        "the edge does not serve /metrics"
    );
    assert_eq!(get(site.metrics(), "/healthz").await, (200, "ok\n".into()));
    let (status, body) = wait_for(site.metrics(), "/readyz", |s, _| s == 200).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_a_collective_whose_server_is_down_until_it_is_back() {
    let (prod, mut london, tokyo) = (
        Network::start("prod"),
        Network::start("london"),
        Network::start("tokyo"),
    );
    let dir = tempfile::tempdir().unwrap();
    // A broker-only instance: a pass-through federation, no gate, no edge.
    let text = format!(
        "{}{}{}",
        network_block("federations.prod", &prod, "mode = \"pass-through\""),
        network_block("federations.prod.collectives.london", &london, ""),
        network_block("federations.prod.collectives.tokyo", &tokyo, ""),
    );
    let config = dir.path().join("fedgate.toml");
    std::fs::write(&config, text).unwrap();
    let process = BrokerProcess::spawn(&config, "ready").await;
    let metrics = process.metrics.expect("a metrics address");
    assert_eq!(get(metrics, "/healthz").await.0, 200);
    let (status, body) = wait_for(metrics, "/readyz", |s, _| s == 200).await;
    assert_eq!(status, 200, "ready once connected: {body}");

    london.server.stop();
    let (status, body) = wait_for(metrics, "/readyz", |s, _| s == 503).await;
    assert_eq!(status, 503, "not ready with london down: {body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
    let names: Vec<&str> = answer["not_ready"]
        .as_array()
        .expect("not_ready")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, ["nats collective london (broker)"], "{body}");
    assert_eq!(answer["not_ready"][0]["problem"], "disconnected", "{body}");
    assert_eq!(get(metrics, "/healthz").await.0, 200, "alive all along");

    london.server.restart().unwrap();
    let (status, body) = wait_for(metrics, "/readyz", |s, _| s == 200).await;
    assert_eq!(status, 200, "ready again once london is back: {body}");
}
