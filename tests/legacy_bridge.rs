//! fedgate and the real Debian MCollective 2.12 on the local RabbitMQ: WebSocket clients reach
//! legacy `mcollectived` nodes through fedgate, in both serializers.

mod support;

use std::time::{Duration, SystemTime};

use fedgate::config::Config;
use fedgate::edge::auth::TokenKeys;
use fedgate::edge::client::{Connect, WsClient};
use fedgate::edge::{Dispatcher, Edge};
use fedgate::wire::mcollective::Serializer;
use serde_json::json;
use support::gate_block;
use support::legacy::LegacySite;

const NODES: [&str; 2] = ["legacy1.example.net", "legacy2.example.net"];

async fn site(serializer: Serializer) -> LegacySite {
    let mut site = LegacySite::new(serializer).await;
    for (n, identity) in NODES.iter().enumerate() {
        site.start_node(
            identity,
            &format!("---\nrole: legacy\ncountry: {}\n", ["de", "fr"][n]),
        );
    }
    site
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_mco_client_reaches_the_real_daemons() {
    let site = site(Serializer::Marshal).await;
    let output = site.mco(&["ping"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    for node in NODES {
        assert!(
            stdout.contains(node),
            "{stdout}{}\n{}",
            String::from_utf8_lossy(&output.stderr),
            site.log(node)
        );
    }
}

struct Gateway {
    edge: Edge,
    keys: TokenKeys,
    _dir: tempfile::TempDir,
}

async fn gateway(site: &LegacySite) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("identity.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nfrom = \"edge\"\nto = [\"oldsite\"]\nglob = \"up=*\"\nas = \"cert=fedgate\"\n",
    )
    .unwrap();
    let key = dir.path().join("token.key");
    std::fs::write(&key, TokenKeys::generate_pem().unwrap()).unwrap();
    let text = format!(
        "[instance]\nname = \"bridge1\"\n\n[identity]\nrules = {rules:?}\n\n{}\
         [legacy.oldsite]\namqp = {:?}\nserializer = {:?}\nserver_public = {:?}\n\
         client_keys = {:?}\nsigners = {:?}\nidentity = \"fedgate.example.net\"\n\n\
         [edge]\nlisten = \"127.0.0.1:0\"\ntoken_key = {key:?}\n",
        gate_block(
            dir.path(),
            &[(
                "rpcutil.policy",
                "policy default deny\nallow\tcert=fedgate\tping inventory get_fact\t*\t*\n"
            )],
            ""
        ),
        site.amqp_url(),
        site.serializer.as_str(),
        site.key("server-public.pem"),
        site.key("clients"),
        site.key("signers"),
    );
    let path = dir.path().join("fedgate.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let gate = fedgate::federation::open_gate(&config, "edge", "bridge1")
        .await
        .unwrap();
    let dispatcher = Dispatcher::connect(&config, gate, "bridge1").await.unwrap();
    let edge = Edge::start(&config, dispatcher, None).await.unwrap();
    Gateway {
        edge,
        keys: TokenKeys::load(&key).unwrap(),
        _dir: dir,
    }
}

async fn websocket_reaches_legacy_nodes(serializer: Serializer) {
    let site = site(serializer).await;
    let gateway = gateway(&site).await;
    let token = gateway
        .keys
        .issue("alice", Duration::from_secs(300), None, SystemTime::now())
        .unwrap();
    let mut client = WsClient::connect(&Connect {
        url: gateway.edge.ws_url(),
        token: Some(token),
        ..Connect::default()
    })
    .await
    .unwrap();

    // A broadcast: both nodes answer, with their own names.
    let mut senders = Vec::new();
    let done = client
        .call(
            &json!({"type":"rpc","id":"b1","collective":"oldsite","agent":"rpcutil","action":"ping","limit":2,"timeout_ms":15000}),
            |r| {
                assert_eq!(r.message["statuscode"], 0, "{}", r.message);
                assert!(r.message["data"]["pong"].is_number(), "{}", r.message);
                senders.push(r.message["sender"].as_str().unwrap().to_string());
            },
        )
        .await
        .unwrap();
    senders.sort();
    assert_eq!(senders, NODES, "{done}");
    assert_eq!(done["responses"], 2, "{done}");

    // Directed at one node, and a fact filter that matches the other.
    let done = client
        .call(
            &json!({"type":"rpc","id":"d1","collective":"oldsite","agent":"rpcutil","action":"ping","targets":["legacy2.example.net"],"timeout_ms":15000}),
            |r| assert_eq!(r.message["sender"], "legacy2.example.net"),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            done["responses"].as_u64(),
            done["missing"].as_array().map(Vec::len)
        ),
        (Some(1), Some(0)),
        "{done}"
    );
    let mut senders = Vec::new();
    let done = client
        .call(
            &json!({"type":"rpc","id":"f1","collective":"oldsite","agent":"rpcutil","action":"get_fact","data":{"fact":"country"},"filter":{"fact":[{"fact":"country","operator":"==","value":"fr"}]},"timeout_ms":5000}),
            |r| {
                assert_eq!(r.message["data"]["value"], "fr", "{}", r.message);
                senders.push(r.message["sender"].as_str().unwrap().to_string());
            },
        )
        .await
        .unwrap();
    assert_eq!(senders, ["legacy2.example.net"], "{done}");

    // Policy still applies on the way to a legacy collective.
    let error = client
        .call(
            &json!({"type":"rpc","id":"x1","collective":"oldsite","agent":"rpcutil","action":"daemon_stats"}),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(error["code"], "denied", "{error}");
    client.close().await;
    gateway.edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_clients_reach_legacy_nodes_over_marshal() {
    websocket_reaches_legacy_nodes(Serializer::Marshal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_clients_reach_legacy_nodes_over_yaml() {
    websocket_reaches_legacy_nodes(Serializer::Yaml).await;
}

/// A fedgate bridging legacy clients of `site` to 50 simulated Choria nodes in london.
struct Bridge {
    london: support::Network,
    fleet: fedgate::fleet::Fleet,
    nodes: Vec<fedgate::fleet::NodeSpec>,
    ingress: fedgate::legacy::ingress::Ingress,
    dir: tempfile::TempDir,
}

async fn bridge(site: &LegacySite) -> Bridge {
    let london = support::Network::start("london");
    let nodes = fedgate::fleet::generate("london", 50, &["london".into()]);
    let fleet = london.start_fleet_with(nodes.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("identity.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nfrom = \"oldsite\"\nto = [\"london\"]\nglob = \"cert=*\"\nas = \"choria=$1.mcollective\"\n",
    )
    .unwrap();
    let privileged = support::realm("london").privileged.as_ref().unwrap();
    let text = format!(
        "[instance]\nname = \"bridge1\"\n\n[identity]\nrules = {rules:?}\n\n{}{}\
         [legacy.oldsite]\namqp = {:?}\nserializer = {:?}\nserver_public = {:?}\n\
         server_private = {:?}\nclient_keys = {:?}\nsigners = {:?}\n\
         bridge = {{ collective = \"london\", refresh_s = 5 }}\n",
        gate_block(
            dir.path(),
            &[(
                "rpcutil.policy",
                "policy default deny\nallow\tchoria=alice.mcollective\tping get_fact inventory\t*\t*\n"
            )],
            ""
        ),
        support::network_block(
            "collectives.london",
            &london,
            &format!(
                "signer = {{ certificate = {:?}, key = {:?} }}",
                privileged.cert, privileged.key
            )
        ),
        site.amqp_url(),
        site.serializer.as_str(),
        site.key("server-public.pem"),
        site.key("server-private.pem"),
        site.key("clients"),
        site.key("signers"),
    );
    let path = dir.path().join("fedgate.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let gate = fedgate::federation::open_gate(&config, "edge", "bridge1")
        .await
        .unwrap();
    let ingress = fedgate::legacy::ingress::Ingress::start(&config, "oldsite", gate, "bridge1")
        .await
        .unwrap();
    Bridge {
        london,
        fleet,
        nodes,
        ingress,
        dir,
    }
}

/// `mco rpc --json` results as (sender, statuscode).
fn rpc_results(site: &LegacySite, args: &[&str]) -> Vec<(String, i64)> {
    // mco signs a second's time and no request id, so the same call made twice in one second is
    // one signed request, which the bridge takes once: keep consecutive calls a second apart.
    std::thread::sleep(Duration::from_millis(1100));
    // A generous discovery timeout: the tests share two cores.
    let mut full = vec!["rpc", "--json", "--dt", "5"];
    full.extend_from_slice(args);
    let output = site.mco(&full);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let results: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}{}", String::from_utf8_lossy(&output.stderr)));
    let mut out: Vec<(String, i64)> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["sender"].as_str().unwrap().to_string(),
                r["statuscode"].as_i64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn mco_reaches_choria_nodes(serializer: Serializer) {
    let site = LegacySite::new(serializer).await;
    let bridge = bridge(&site).await;
    let mut all: Vec<String> = bridge.nodes.iter().map(|n| n.identity.clone()).collect();
    all.sort();
    // Directed requests need a binding per node; discovery on a busy machine may take a refresh.
    for _ in 0..100 {
        if bridge.ingress.directed_bindings() == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(bridge.ingress.directed_bindings(), 50);

    // mco ping: discovery, answered by every Choria node.
    let output = site.mco(&["ping", "--dt", "5"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let pinged: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.starts_with("london-"))
        .collect();
    assert_eq!(
        pinged.len(),
        50,
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // mco rpc rpcutil ping: discovery, then a broadcast (more than 10 nodes).
    let results = rpc_results(&site, &["rpcutil", "ping"]);
    assert_eq!(results.iter().map(|r| r.0.clone()).collect::<Vec<_>>(), all);
    assert!(results.iter().all(|r| r.1 == 0));

    // -I: one node, sent directed to it.
    let one = &all[7];
    let results = rpc_results(&site, &["rpcutil", "ping", "-I", one]);
    assert_eq!(results, [(one.clone(), 0)]);
    // Three nodes found by discovery: one directed copy each, the same request id on all three.
    let three = rpc_results(&site, &["rpcutil", "ping", "-I", "/^london-000[123]$/"]);
    assert_eq!(
        three.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        [&all[1], &all[2], &all[3]]
    );

    // -F: exactly the nodes whose facts match.
    let mut uk: Vec<String> = bridge
        .nodes
        .iter()
        .filter(|n| n.facts["country"] == "uk")
        .map(|n| n.identity.clone())
        .collect();
    uk.sort();
    let results = rpc_results(&site, &["rpcutil", "ping", "-F", "country=uk"]);
    assert_eq!(results.iter().map(|r| r.0.clone()).collect::<Vec<_>>(), uk);

    // Every bridged request was decided and recorded as cert=alice, mapped.
    let records = support::audit_records(&bridge.dir.path().join("audit/audit.log"));
    let allowed: Vec<_> = records
        .iter()
        .filter(|r| {
            r.kind == fedgate::audit::Kind::Decision
                && r.event.decision == Some(fedgate::audit::Verdict::Allow)
        })
        .collect();
    // mco ping; rpc (discovery, broadcast); -I one (directed); -I three (discovery, three
    // directed copies); -F (discovery, broadcast).
    assert_eq!(allowed.len(), 10);
    // Each decision is closed by a completion record once its replies are in.
    let mut completions = 0;
    for _ in 0..100 {
        let records = support::audit_records(&bridge.dir.path().join("audit/audit.log"));
        completions = records
            .iter()
            .filter(|r| r.kind == fedgate::audit::Kind::Completion)
            .count();
        if completions == allowed.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(completions, allowed.len());
    assert!(allowed.iter().all(|r| r.event.edge == "legacy-amqp"
        && r.event.caller.as_deref() == Some("cert=alice")
        && r.event.mapped_caller.as_deref() == Some("choria=alice.mcollective")));
    bridge.ingress.shutdown(Duration::from_secs(2)).await;
    drop(bridge.london);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mco_reaches_choria_nodes_over_marshal() {
    mco_reaches_choria_nodes(Serializer::Marshal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mco_reaches_choria_nodes_over_yaml() {
    mco_reaches_choria_nodes(Serializer::Yaml).await;
}

/// Publishes a legacy request as mco would: to the broadcast exchange, replies to `reply_to`.
async fn publish(channel: &lapin::Channel, bytes: &[u8], reply_to: &str) {
    channel
        .basic_publish(
            "mcollective_broadcast".into(),
            "rpcutil".into(),
            lapin::options::BasicPublishOptions::default(),
            bytes,
            lapin::BasicProperties::default()
                .with_reply_to(reply_to.into())
                .with_expiration("70000".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_legacy_requests_are_refused_recorded_and_never_forwarded() {
    use fedgate::security::legacy::{LegacySigner, NewLegacyRequest};
    use fedgate::wire::mcollective::Ruby;
    let site = LegacySite::new(Serializer::Marshal).await;
    let bridge = bridge(&site).await;
    let s = Serializer::Marshal;
    let alice = LegacySigner::from_file(&site.key("alice-private.pem"), "alice").unwrap();
    let impostor = LegacySigner::from_file(&site.key("fedgate-private.pem"), "alice").unwrap();
    let mallory = LegacySigner::from_file(&site.key("fedgate-private.pem"), "mallory").unwrap();
    let now = fedgate::security::Now::system().unix_seconds();
    let filter = fedgate::legacy::legacy_filter(&Default::default(), "rpcutil");
    let request = |signer: &LegacySigner, agent: &str, msgtime: i64, id: &str| {
        let msg = Ruby::Hash(vec![
            (Ruby::sym("agent"), Ruby::str(agent)),
            (Ruby::sym("action"), Ruby::str("ping")),
            (Ruby::sym("data"), Ruby::Hash(vec![])),
        ]);
        let new = NewLegacyRequest {
            msg,
            senderid: "client.example.net",
            requestid: id,
            filter: filter.clone(),
            collective: "mcollective",
            agent: "rpcutil",
            ttl: 60,
            msgtime,
        };
        signer.sign_request(s, &new).unwrap()
    };
    let id = |n: u8| format!("{:032x}", n);

    let connection =
        lapin::Connection::connect(&site.amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let replies = channel
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let reply_to = replies.name().as_str().to_string();

    let mut tampered = request(&alice, "rpcutil", now, &id(1));
    let last = tampered.body.len() - 2;
    tampered.body[last] ^= 1;
    let wrong_key = request(&impostor, "rpcutil", now, &id(2));
    let unknown = request(&mallory, "rpcutil", now, &id(3));
    let expired = request(&alice, "rpcutil", now - 120, &id(4));
    let disagrees = request(&alice, "puppet", now, &id(5));
    let good = request(&alice, "rpcutil", now, &id(6));
    for message in [
        &tampered, &wrong_key, &unknown, &expired, &disagrees, &good, &good,
    ] {
        publish(&channel, &message.encode(s), &reply_to).await;
    }
    publish(&channel, b"\x04\x08o:\x0bObject\x00", &reply_to).await;
    publish(&channel, b"---\n:body: [yaml, not marshal\n", &reply_to).await;

    // The one good request is answered by all 50 nodes, once.
    let mut consumer = channel
        .basic_consume(
            reply_to.as_str().into(),
            "test".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let mut answered = 0;
    while let Ok(Some(Ok(_))) = tokio::time::timeout(
        Duration::from_secs(5),
        futures::StreamExt::next(&mut consumer),
    )
    .await
    {
        answered += 1;
    }
    assert_eq!(answered, 50);
    assert_eq!(
        bridge
            .fleet
            .stats()
            .acted_for("choria=alice.mcollective", "fedgate.privileged.mcollective"),
        50
    );

    let records = support::audit_records(&bridge.dir.path().join("audit/audit.log"));
    let mut refused: Vec<&str> = records
        .iter()
        .filter(|r| r.event.decision == Some(fedgate::audit::Verdict::Deny))
        .map(|r| r.event.code.as_str())
        .collect();
    refused.sort();
    assert_eq!(
        refused,
        [
            "bad_signature",
            "bad_signature",
            "malformed_marshal",
            "malformed_marshal",
            "replay",
            "ttl_expired",
            "unknown_caller",
            "unsigned_field_disagrees"
        ]
    );
    let _ = connection.close(200, "done".into()).await;
    bridge.ingress.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bridge_recovers_when_the_broker_closes_its_connections() {
    let site = LegacySite::new(Serializer::Marshal).await;
    let bridge = bridge(&site).await;
    let results = rpc_results(&site, &["rpcutil", "ping"]);
    assert_eq!(results.len(), 50);
    let fedgate_connections = || {
        let out = std::process::Command::new("rabbitmqctl")
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .args(["-q", "list_connections", "vhost", "client_properties"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                l.starts_with(&format!("{}\t", site.vhost))
                    && l.contains("fedgate bridge1 bridge oldsite")
            })
            .count()
    };
    assert_eq!(fedgate_connections(), 1);
    // RabbitMQ drops every connection of this site's vhost, fedgate's included (other tests'
    // vhosts are left alone).
    let closed = std::process::Command::new("rabbitmqctl")
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .args([
            "-q",
            "close_all_connections",
            "--vhost",
            &site.vhost,
            "test: broker restart",
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(closed.success());
    // lapin reconnects and restores the queue, bindings and consumer; requests work again.
    let mut last = Vec::new();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        last = rpc_results(&site, &["rpcutil", "ping"]);
        if last.len() == 50 {
            break;
        }
    }
    assert_eq!(last.len(), 50, "{last:?}");
    assert_eq!(fedgate_connections(), 1, "fedgate reconnected");
    bridge.ingress.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fedgate_rpc_reaches_legacy_nodes_through_a_choria_collective() {
    let site = site(Serializer::Marshal).await;
    let london = support::Network::start("london");
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("identity.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nfrom = \"london\"\nto = [\"oldsite\"]\nglob = \"choria=*.mcollective\"\nas = \"cert=fedgate\"\n",
    )
    .unwrap();
    let text = format!(
        "[instance]\nname = \"facade1\"\n\n[identity]\nrules = {rules:?}\n\n{}{}\
         [legacy.oldsite]\namqp = {:?}\nserializer = \"marshal\"\nserver_public = {:?}\n\
         client_keys = {:?}\nsigners = {:?}\nchoria = \"london\"\n",
        gate_block(
            dir.path(),
            &[(
                "rpcutil.policy",
                "policy default deny\nallow\tcert=fedgate\tping\t*\t*\n"
            )],
            ""
        ),
        support::network_block("collectives.london", &london, ""),
        site.amqp_url(),
        site.key("server-public.pem"),
        site.key("clients"),
        site.key("signers"),
    );
    let path = dir.path().join("fedgate.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let gate = fedgate::federation::open_gate(&config, "edge", "facade1")
        .await
        .unwrap();
    let link =
        fedgate::legacy::LegacyLink::connect("oldsite", &config.legacy["oldsite"], "facade1")
            .await
            .unwrap();
    let facade = fedgate::legacy::facade::Facade::start(
        &config,
        "oldsite",
        std::sync::Arc::new(link),
        gate,
        "facade1",
    )
    .await
    .unwrap();

    // The real Choria-side client: fedgate rpc as alice of london, to the collective oldsite.
    let alice = support::user("london", "alice");
    let run = |extra: &[&str]| {
        let mut command = tokio::process::Command::new(support::fedgate_bin());
        command
            .args([
                "rpc",
                "--collective",
                "oldsite",
                "--nats",
                london.server.url(),
                "--ca",
            ])
            .arg(&london.realm.ca)
            .arg("--cert")
            .arg(&alice.cert)
            .arg("--key")
            .arg(&alice.key)
            .args(["--json", "--timeout", "10"])
            .args(extra)
            .args(["rpcutil", "ping"]);
        command
    };
    let senders = |output: &std::process::Output| {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut senders: Vec<String> = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["type"] == "reply")
            .map(|v| v["reply"]["sender"].as_str().unwrap().to_string())
            .collect();
        senders.sort();
        senders
    };
    let output = run(&["--expect", "2"]).output().await.unwrap();
    assert_eq!(
        senders(&output),
        NODES,
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success());
    facade.shutdown(Duration::from_secs(2)).await;
}
