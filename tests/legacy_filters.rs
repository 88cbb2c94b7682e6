//! Every filter form `mco` can send selects the same nodes through fedgate as mcollectived 2.12
//! selects, and every filter a Choria client sends selects the same legacy nodes as Choria
//! nodes; where a side has no form for a filter, fedgate refuses it and says why. Four real
//! `mcollectived` daemons and four simulated Choria nodes share names, facts and classes.

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::Duration;

use fedgate::config::Config;
use fedgate::wire::mcollective::{Ruby, Serializer};
use serde_json::json;
use support::legacy::{LegacySite, Publisher};
use support::{gate_block, network_block};

/// identity, country, cpus, role, production.
const NODES: [(&str, &str, u64, &str, bool); 4] = [
    ("alpha.example.net", "uk", 4, "web", true),
    ("bravo.example.net", "de", 8, "web", false),
    ("charlie.example.net", "uk", 16, "db", true),
    ("delta.example.net", "fr", 2, "db", false),
];

fn classes(role: &str, production: bool) -> Vec<String> {
    let mut classes = vec!["base".to_string(), format!("role::{role}")];
    if production {
        classes.push("production".into());
    }
    classes
}

fn choria_nodes() -> Vec<fedgate_dev::fleet::NodeSpec> {
    NODES
        .iter()
        .map(
            |(identity, country, cpus, role, production)| fedgate_dev::fleet::NodeSpec {
                identity: identity.to_string(),
                collectives: vec!["london".into()],
                facts: json!({"country": country, "cpus": cpus, "role": role}),
                classes: classes(role, *production),
                agents: fedgate_dev::fleet::agents::AGENTS
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            },
        )
        .collect()
}

async fn legacy_nodes() -> LegacySite {
    let mut site = LegacySite::new(Serializer::Marshal).await;
    for (identity, country, cpus, role, production) in NODES {
        let facts = format!("---\ncountry: {country}\ncpus: {cpus}\nrole: {role}\n");
        let classes = classes(role, production);
        let classes: Vec<&str> = classes.iter().map(String::as_str).collect();
        site.start_node_with_classes(identity, &facts, &classes);
    }
    site
}

/// One filter, as an mco command line and as a `fedgate rpc` one, and what each selects.
struct Row {
    name: &'static str,
    mco: &'static [&'static str],
    /// Nodes (by first letter) mcollectived selects for `mco`, and so the Choria nodes must.
    legacy: &'static str,
    choria: &'static [&'static str],
    /// Nodes Choria selects for `choria`, and so the legacy nodes must.
    selects: &'static str,
    /// When the legacy side has no form for `choria`: what fedgate's refusal says.
    refused: Option<&'static str>,
}

const fn row(
    name: &'static str,
    mco: &'static [&'static str],
    legacy: &'static str,
    choria: &'static [&'static str],
    selects: &'static str,
) -> Row {
    Row {
        name,
        mco,
        legacy,
        choria,
        selects,
        refused: None,
    }
}

const ROWS: &[Row] = &[
    row("no filter", &[], "abcd", &[], "abcd"),
    row(
        "-I plain",
        &["-I", "alpha.example.net"],
        "a",
        &["--identity", "alpha.example.net"],
        "a",
    ),
    row(
        "-I regex",
        &["-I", "/^(alpha|charlie)/"],
        "ac",
        &["--identity", "/^(alpha|charlie)/"],
        "ac",
    ),
    row(
        "-F =",
        &["-F", "country=uk"],
        "ac",
        &["--fact", "country=uk"],
        "ac",
    ),
    row(
        "-F ==",
        &["-F", "country==de"],
        "b",
        &["--fact", "country==de"],
        "b",
    ),
    row(
        "-F =~",
        &["-F", "country=~/^(de|fr)$/"],
        "bd",
        &["--fact", "country=~/^(de|fr)$/"],
        "bd",
    ),
    row(
        "-F !=",
        &["-F", "country!=uk"],
        "bd",
        &["--fact", "country!=uk"],
        "bd",
    ),
    row("-F <", &["-F", "cpus<8"], "ad", &["--fact", "cpus<8"], "ad"),
    row("-F >", &["-F", "cpus>4"], "bc", &["--fact", "cpus>4"], "bc"),
    row(
        "-F <=",
        &["-F", "cpus<=4"],
        "ad",
        &["--fact", "cpus<=4"],
        "ad",
    ),
    row(
        "-F >=",
        &["-F", "cpus>=8"],
        "bc",
        &["--fact", "cpus>=8"],
        "bc",
    ),
    row(
        "-C plain",
        &["-C", "role::web"],
        "ab",
        &["--class", "role::web"],
        "ab",
    ),
    row(
        "-C regex",
        &["-C", "/^role::d/"],
        "cd",
        &["--class", "/^role::d/"],
        "cd",
    ),
    row("-A", &["-A", "rpcutil"], "abcd", &[], "abcd"),
    row(
        "-S and",
        &["-S", "country=uk and role::web"],
        "a",
        &["-S", r#"with("country=uk") && ("role::web" in classes)"#],
        "a",
    ),
    row(
        "-S or, not, parentheses",
        &["-S", "(country=de or cpus>=16) and not /^role::w/"],
        "c",
        &[
            "-S",
            r#"(with("country=de") || with("cpus>=16")) && !any(classes, # matches "^role::w")"#,
        ],
        "c",
    ),
    row(
        "-S fact regex",
        &["-S", "role=/^d/ or country=de"],
        "bcd",
        &["-S", r#"with("role=~/^d/") or with("country=de")"#],
        "bcd",
    ),
    row(
        "-S twice",
        &["-S", "country=uk", "-S", "production"],
        "ac",
        &[
            "-S",
            r#"with("country=uk")"#,
            "-S",
            r#"("production" in classes)"#,
        ],
        "ac",
    ),
    row(
        "combined",
        &[
            "-F",
            "country=uk",
            "-C",
            "production",
            "-I",
            "/a/",
            "-S",
            "cpus<10",
        ],
        "a",
        &[
            "--fact",
            "country=uk",
            "--class",
            "production",
            "--identity",
            "/a/",
            "-S",
            r#"with("cpus<10")"#,
        ],
        "a",
    ),
    // mcollectived reads `country!=uk` in -S as the fact `country!`, which no node has; fedgate
    // refuses it towards Choria, and Choria's != has no legacy compound form.
    Row {
        name: "-S !=",
        mco: &["-S", "country!=uk"],
        legacy: "",
        choria: &["-S", r#"with("country!=uk")"#],
        selects: "bd",
        refused: Some("no !="),
    },
    // with() also matches agents on Choria nodes; the legacy compound language tests classes.
    Row {
        name: "with() a class or an agent",
        mco: &["-S", "role::web"],
        legacy: "ab",
        choria: &["-S", r#"with("rpcutil")"#],
        selects: "abcd",
        refused: Some("classes only"),
    },
];

/// The nodes named by first letters.
fn named(letters: &str) -> BTreeSet<String> {
    letters
        .chars()
        .map(|c| {
            NODES
                .iter()
                .find(|n| n.0.starts_with(c))
                .expect("a node letter")
                .0
                .to_string()
        })
        .collect()
}

/// Runs commands a few at a time.
fn run_all(commands: Vec<Command>) -> Vec<Output> {
    let mut outputs = Vec::new();
    let mut commands = commands.into_iter().peekable();
    while commands.peek().is_some() {
        let children: Vec<_> = commands
            .by_ref()
            .take(4)
            .map(|mut c| c.spawn().expect("spawn"))
            .collect();
        outputs.extend(children.into_iter().map(|c| c.wait_with_output().unwrap()));
    }
    outputs
}

/// Runs commands one after another, each with the daemons and the fleet to itself.
fn run_each(commands: Vec<Command>) -> Vec<Output> {
    commands
        .into_iter()
        .map(|mut c| {
            let output = c.output().expect("run");
            std::thread::sleep(Duration::from_millis(200));
            output
        })
        .collect()
}

/// `mco find`: discovery with the row's filter.
fn mco_find(site: &LegacySite, row: &Row) -> Command {
    let mut args = vec!["find", "--dt", "2"];
    args.extend_from_slice(row.mco);
    let mut command = site.mco_command(&args);
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

fn found(output: &Output) -> BTreeSet<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with(".example.net"))
        .map(str::to_string)
        .collect()
}

/// Replies of `fedgate rpc --json`: (sender, statuscode, statusmsg).
fn replies(output: &Output) -> Vec<(String, i64, String)> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "reply")
        .map(|v| {
            let r = &v["reply"];
            (
                r["sender"].as_str().unwrap_or_default().to_string(),
                r["statuscode"].as_i64().unwrap_or(-1),
                r["statusmsg"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn show(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// fedgate bridging `site`'s legacy clients to london's Choria nodes.
async fn bridge(
    site: &LegacySite,
    london: &support::Network,
    dir: &std::path::Path,
) -> fedgate::legacy::ingress::Ingress {
    let rules = dir.join("identity.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nfrom = \"oldsite\"\nto = [\"london\"]\nglob = \"cert=*\"\nas = \"choria=$1.mcollective\"\n",
    )
    .unwrap();
    let text = format!(
        "[instance]\nname = \"bridge1\"\n\n[identity]\nrules = {rules:?}\n\n{}{}{}",
        gate_block(dir, &[("rpcutil.policy", "policy default allow\n")], ""),
        support::collective_block("collectives.london", london),
        site.config_block(
            "oldsite",
            "bridge = { collective = \"london\", refresh_s = 2 }"
        ),
    );
    std::fs::write(dir.join("fedgate.toml"), text).unwrap();
    let config = Config::load(&dir.join("fedgate.toml")).unwrap();
    let gate = fedgate::gateway::open_gate(&config, "edge", "bridge1")
        .await
        .unwrap();
    fedgate::legacy::ingress::Ingress::start(&config, "oldsite", gate, "bridge1")
        .await
        .unwrap()
}

/// fedgate serving `site`'s legacy nodes to london's Choria clients as the collective `legacy`.
async fn facade(
    site: &LegacySite,
    london: &support::Network,
    dir: &std::path::Path,
) -> fedgate::legacy::facade::Facade {
    let rules = dir.join("identity.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nfrom = \"london\"\nto = [\"legacy\"]\nglob = \"choria=*.mcollective\"\nas = \"cert=fedgate\"\n",
    )
    .unwrap();
    let text = format!(
        "[instance]\nname = \"facade1\"\n\n[identity]\nrules = {rules:?}\n\n{}{}{}",
        gate_block(dir, &[("rpcutil.policy", "policy default allow\n")], ""),
        network_block("collectives.london", london, ""),
        site.config_block("legacy", "choria = \"london\""),
    );
    std::fs::write(dir.join("fedgate.toml"), text).unwrap();
    let config = Config::load(&dir.join("fedgate.toml")).unwrap();
    let gate = fedgate::gateway::open_gate(&config, "edge", "facade1")
        .await
        .unwrap();
    let link = fedgate::legacy::LegacyLink::connect("legacy", &config.legacy["legacy"], "facade1")
        .await
        .unwrap();
    fedgate::legacy::facade::Facade::start(
        &config,
        "legacy",
        std::sync::Arc::new(link),
        gate,
        "facade1",
    )
    .await
    .unwrap()
}

/// `fedgate rpc` as london's alice, to `collective`, with the row's filter.
fn fedgate_rpc(london: &support::Network, collective: &str, row: &Row) -> Command {
    let alice = support::user("london", "alice");
    let mut command = Command::new(support::fedgate_bin());
    command
        .args([
            "rpc",
            "--collective",
            collective,
            "--nats",
            london.server.url(),
            "--ca",
        ])
        .arg(&london.realm.ca)
        .arg("--cert")
        .arg(&alice.cert)
        .arg("--key")
        .arg(&alice.key)
        .args(["--json", "--timeout", "6", "--idle", "2"])
        .args(row.choria)
        .args(["rpcutil", "ping"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_mco_filter_form_selects_the_same_nodes_on_both_sides() {
    let real = legacy_nodes().await;
    let london = support::Network::start("london");
    let fleet = london.start_fleet_with(choria_nodes()).await;
    let bridged = LegacySite::new(Serializer::Marshal).await;
    let bridge_dir = tempfile::tempdir().unwrap();
    let ingress = bridge(&bridged, &london, bridge_dir.path()).await;
    let facade_dir = tempfile::tempdir().unwrap();
    let facade = facade(&real, &london, facade_dir.path()).await;
    for _ in 0..100 {
        if ingress.directed_bindings() == NODES.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // mco's filters: the real daemons, and the Choria nodes through fedgate; Choria's filters:
    // the Choria nodes, and the real daemons through fedgate.
    let mut parallel = Vec::new();
    let mut one_by_one = Vec::new();
    for row in ROWS {
        parallel.push(mco_find(&real, row));
        one_by_one.push(mco_find(&bridged, row));
        parallel.push(fedgate_rpc(&london, "london", row));
        parallel.push(fedgate_rpc(&london, "legacy", row));
    }
    let through_bridge = tokio::task::spawn_blocking(move || run_each(one_by_one));
    let others = tokio::task::spawn_blocking(move || run_all(parallel));
    let (through_bridge, others) = (through_bridge.await.unwrap(), others.await.unwrap());
    let mut failures = Vec::new();
    for (index, row) in ROWS.iter().enumerate() {
        let (direct, through) = (&others[3 * index], &through_bridge[index]);
        let want = named(row.legacy);
        if found(direct) != want || found(through) != want {
            failures.push(format!(
                "{}: mco {:?} wants {want:?}\n  mcollectived: {}\n  Choria through fedgate: {}",
                row.name,
                row.mco,
                show(direct),
                show(through)
            ));
        }
        let (direct, through) = (&others[3 * index + 1], &others[3 * index + 2]);
        let want = named(row.selects);
        let choria_selected: BTreeSet<String> = replies(direct).into_iter().map(|r| r.0).collect();
        let legacy_replies = replies(through);
        let legacy_ok = match row.refused {
            None => {
                legacy_replies.iter().all(|r| r.1 == 0)
                    && legacy_replies
                        .iter()
                        .map(|r| r.0.clone())
                        .collect::<BTreeSet<_>>()
                        == want
            }
            Some(why) => {
                legacy_replies.len() == 1
                    && legacy_replies[0].1 != 0
                    && legacy_replies[0].2.contains(why)
            }
        };
        if choria_selected != want || !legacy_ok {
            failures.push(format!(
                "{}: fedgate rpc {:?} wants {want:?}{}\n  Choria: {}\n  legacy through fedgate: {}",
                row.name,
                row.choria,
                row.refused
                    .map(|r| format!(", refused towards legacy ({r})"))
                    .unwrap_or_default(),
                show(direct),
                show(through)
            ));
        }
    }
    if !failures.is_empty() {
        let records = support::audit_records(&bridge_dir.path().join("audit/audit.log"));
        let refused: Vec<String> = records
            .iter()
            .filter(|r| !r.event.code.is_empty())
            .map(|r| format!("{} {}", r.event.code, r.event.reason))
            .collect();
        panic!("{}\nbridge refusals: {refused:#?}", failures.join("\n"));
    }
    facade.shutdown(Duration::from_secs(2)).await;
    ingress.shutdown(Duration::from_secs(2)).await;
    fleet.shutdown().await;
}

/// A Marshal `rpcutil ping` signed by the site's alice, with `fact` as its only filter.
fn request_with_fact(site: &LegacySite, fact: Ruby, n: i64) -> Vec<u8> {
    use fedgate::security::legacy::{LegacySigner, NewLegacyRequest};
    let alice = LegacySigner::from_file(&site.key("alice-private.pem"), "alice").unwrap();
    let msg = Ruby::Hash(vec![
        (Ruby::sym("agent"), Ruby::str("rpcutil")),
        (Ruby::sym("action"), Ruby::str("ping")),
        (
            Ruby::sym("data"),
            Ruby::Hash(vec![(Ruby::sym("n"), Ruby::Int(n))]),
        ),
    ]);
    let filter = Ruby::Hash(vec![
        (Ruby::str("fact"), Ruby::Array(vec![fact])),
        (Ruby::str("cf_class"), Ruby::Array(Vec::new())),
        (Ruby::str("agent"), Ruby::Array(vec![Ruby::str("rpcutil")])),
        (Ruby::str("identity"), Ruby::Array(Vec::new())),
        (Ruby::str("compound"), Ruby::Array(Vec::new())),
    ]);
    let requestid = format!("{n:032x}");
    let new = NewLegacyRequest {
        msg,
        senderid: "client.example.net",
        requestid: &requestid,
        filter,
        collective: "mcollective",
        agent: "rpcutil",
        ttl: 60,
        msgtime: fedgate::security::Now::system().unix_seconds(),
    };
    alice
        .sign_request(Serializer::Marshal, &new)
        .unwrap()
        .encode(Serializer::Marshal)
}

/// Publishes `bytes` as mco would and gives back (sender, statusmsg) of each reply in 4 s.
async fn publish_and_collect(site: &LegacySite, bytes: &[u8]) -> Vec<(String, String)> {
    let publisher = Publisher::new(site).await;
    let mut consumer = publisher.replies().await;
    publisher
        .publish(("mcollective_broadcast", "rpcutil"), bytes)
        .await;
    let mut replies = Vec::new();
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(
        Duration::from_secs(4),
        futures::StreamExt::next(&mut consumer),
    )
    .await
    {
        let reply = fedgate::wire::mcollective::envelope::LegacyReply::decode(
            Serializer::Marshal,
            &delivery.data,
            1 << 20,
        )
        .unwrap();
        let body = Serializer::Marshal.decode(&reply.body).unwrap();
        let message = body
            .get("statusmsg")
            .and_then(Ruby::as_str)
            .unwrap_or_default()
            .to_string();
        replies.push((reply.senderid, message));
    }
    replies.sort();
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fact_filter_without_an_operator_selects_no_node_and_fedgate_says_so() {
    let real = legacy_nodes().await;
    let london = support::Network::start("london");
    let fleet = london.start_fleet_with(choria_nodes()).await;
    let bridged = LegacySite::new(Serializer::Marshal).await;
    let dir = tempfile::tempdir().unwrap();
    let ingress = bridge(&bridged, &london, dir.path()).await;
    let fact = |operator: Option<&str>| {
        let mut pairs = vec![
            (Ruby::sym("fact"), Ruby::str("country")),
            (Ruby::sym("value"), Ruby::str("uk")),
        ];
        if let Some(op) = operator {
            pairs.push((Ruby::sym("operator"), Ruby::str(op)));
        }
        Ruby::Hash(pairs)
    };
    let senders = |replies: &[(String, String)]| -> Vec<String> {
        replies.iter().map(|r| r.0.clone()).collect()
    };
    let uk = ["alpha.example.net", "charlie.example.net"];

    // With `==`, the uk nodes answer on both sides.
    let replies = publish_and_collect(&real, &request_with_fact(&real, fact(Some("==")), 1)).await;
    assert_eq!(senders(&replies), uk, "mcollectived");
    let replies =
        publish_and_collect(&bridged, &request_with_fact(&bridged, fact(Some("==")), 2)).await;
    assert_eq!(senders(&replies), uk, "Choria through fedgate");

    // Without an operator, and with go-choria's `=`, mcollectived 2.12 selects no node.
    for (n, operator) in [(3, None), (4, Some("="))] {
        let bytes = request_with_fact(&real, fact(operator), n);
        assert_eq!(publish_and_collect(&real, &bytes).await, [], "{operator:?}");
        // fedgate selects none either, and tells the caller why.
        let bytes = request_with_fact(&bridged, fact(operator), n + 10);
        let replies = publish_and_collect(&bridged, &bytes).await;
        assert_eq!(replies.len(), 1, "{operator:?}: {replies:?}");
        assert!(
            replies[0].1.contains("selects no node"),
            "{operator:?}: {replies:?}"
        );
    }
    ingress.shutdown(Duration::from_secs(2)).await;
    fleet.shutdown().await;
}
