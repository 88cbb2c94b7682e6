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
use support::legacy::{LegacySite, Publisher};

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
        "[instance]\nname = \"bridge1\"\n\n[identity]\nrules = {rules:?}\n\n{}{}\
         [edge]\nlisten = \"127.0.0.1:0\"\ntoken_key = {key:?}\n",
        gate_block(
            dir.path(),
            &[(
                "rpcutil.policy",
                "policy default deny\nallow\tcert=fedgate\tping inventory get_fact\t*\t*\n"
            )],
            ""
        ),
        site.config_block("oldsite", "identity = \"fedgate.example.net\""),
    );
    let path = dir.path().join("fedgate.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let gate = fedgate::gateway::open_gate(&config, "edge", "bridge1")
        .await
        .unwrap();
    let dispatcher = Dispatcher::connect(&config, gate, "bridge1").await.unwrap();
    let edge = Edge::start(&config, dispatcher).await.unwrap();
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
    fleet: fedgate_dev::fleet::Fleet,
    nodes: Vec<fedgate_dev::fleet::NodeSpec>,
    ingress: fedgate::legacy::ingress::Ingress,
    dir: tempfile::TempDir,
}

async fn bridge(site: &LegacySite) -> Bridge {
    bridge_with(site, "").await
}

/// [`bridge`] with `extra` settings in the site's `bridge` table (each `, key = value`).
async fn bridge_with(site: &LegacySite, extra: &str) -> Bridge {
    let london = support::Network::start("london");
    let nodes = fedgate_dev::fleet::generate("london", 50, &["london".into()]);
    let fleet = london.start_fleet_with(nodes.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("identity.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nfrom = \"oldsite\"\nto = [\"london\"]\nglob = \"cert=*\"\nas = \"choria=$1.mcollective\"\n",
    )
    .unwrap();
    let text = format!(
        "[instance]\nname = \"bridge1\"\n\n[identity]\nrules = {rules:?}\n\n{}{}{}",
        gate_block(
            dir.path(),
            &[(
                "rpcutil.policy",
                "policy default deny\nallow\tchoria=alice.mcollective\tping get_fact inventory\t*\t*\n"
            )],
            ""
        ),
        support::collective_block("collectives.london", &london),
        site.config_block(
            "oldsite",
            &format!("bridge = {{ collective = \"london\", refresh_s = 5{extra} }}")
        ),
    );
    let path = dir.path().join("fedgate.toml");
    std::fs::write(&path, text).unwrap();
    let ingress = start_bridge(dir.path()).await;
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
    publish_to(
        channel,
        ("mcollective_broadcast", "rpcutil"),
        bytes,
        reply_to,
        "70000",
    )
    .await;
}

/// Publishes to `exchange` with `key`, expiring in the queue after `expiration` ms ("" never).
async fn publish_to(
    channel: &lapin::Channel,
    (exchange, key): (&str, &str),
    bytes: &[u8],
    reply_to: &str,
    expiration: &str,
) {
    let mut properties = lapin::BasicProperties::default().with_reply_to(reply_to.into());
    if !expiration.is_empty() {
        properties = properties.with_expiration(expiration.into());
    }
    channel
        .basic_publish(
            exchange.into(),
            key.into(),
            lapin::options::BasicPublishOptions::default(),
            bytes,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// A request for `agent`'s `action` signed by `signer` at `msgtime`, as the Marshal mco sends.
fn legacy_request(
    signer: &fedgate::security::legacy::LegacySigner,
    (agent, action, data): (&str, &str, Vec<(&str, &str)>),
    (msgtime, ttl): (i64, i64),
    requestid: &str,
) -> fedgate::wire::mcollective::envelope::LegacyRequest {
    use fedgate::wire::mcollective::Ruby;
    let data = data
        .into_iter()
        .map(|(k, v)| (Ruby::sym(k), Ruby::str(v)))
        .collect();
    let msg = Ruby::Hash(vec![
        (Ruby::sym("agent"), Ruby::str(agent)),
        (Ruby::sym("action"), Ruby::str(action)),
        (Ruby::sym("data"), Ruby::Hash(data)),
    ]);
    let new = fedgate::security::legacy::NewLegacyRequest {
        msg,
        senderid: "client.example.net",
        requestid,
        filter: fedgate::legacy::legacy_filter(&Default::default(), "rpcutil").unwrap(),
        collective: "mcollective",
        agent: "rpcutil",
        ttl,
        msgtime,
    };
    signer.sign_request(Serializer::Marshal, &new).unwrap()
}

/// Counts, by request id, the requests that reach the Choria collective.
async fn watch_forwarded(
    london: &support::Network,
) -> std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, usize>>> {
    use fedgate::wire::choria_v1::{SecureRequest, Transport};
    let nats = london.connect_as("alice").await;
    let mut requests = futures::stream::select_all([
        nats.subscribe("london.broadcast.>").await.unwrap(),
        nats.subscribe("london.node.>").await.unwrap(),
    ]);
    nats.flush().await.unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let counts = seen.clone();
    tokio::spawn(async move {
        let _keep = nats;
        let limits = fedgate::wire::Limits::default();
        while let Some(message) = futures::StreamExt::next(&mut requests).await {
            let id = Transport::decode(&message.payload, &limits)
                .ok()
                .and_then(|t| SecureRequest::decode(&t.data, &limits).ok())
                .and_then(|s| s.request(&limits).ok())
                .map(|r| r.envelope.requestid);
            if let Some(id) = id {
                *counts.lock().unwrap().entry(id).or_insert(0) += 1;
            }
        }
    });
    seen
}

/// Waits up to `seconds` for `done` to hold.
async fn eventually(seconds: u64, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..seconds * 10 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_legacy_requests_are_refused_recorded_and_never_forwarded() {
    use fedgate::security::legacy::LegacySigner;
    let site = LegacySite::new(Serializer::Marshal).await;
    let bridge = bridge(&site).await;
    let s = Serializer::Marshal;
    let alice = LegacySigner::from_file(&site.key("alice-private.pem"), "alice").unwrap();
    let impostor = LegacySigner::from_file(&site.key("fedgate-private.pem"), "alice").unwrap();
    let mallory = LegacySigner::from_file(&site.key("fedgate-private.pem"), "mallory").unwrap();
    let now = fedgate::security::Now::system().unix_seconds();
    let request = |signer: &LegacySigner, agent: &str, msgtime: i64, id: &str| {
        legacy_request(signer, (agent, "ping", vec![]), (msgtime, 60), id)
    };
    let id = |n: u8| format!("{:032x}", n);

    let connection =
        lapin::Connection::connect(&site.amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let replies = fedgate::legacy::declare_private_queue(&channel, "")
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
    let replies = collect_replies(&mut consumer, s).await;
    let answered = replies.iter().filter(|r| r.status == 0).count();
    assert_eq!(answered, 50);
    // Each caller refused once its signature verified is told why in a signed reply: the
    // replay and the one whose unsigned agent disagrees (not the request that expired a minute
    // ago, past the expiration mco gives it in the queue: nobody waits for it).
    let mut told: Vec<&str> = replies
        .iter()
        .filter(|r| r.status == 1)
        .map(|r| r.code.as_str())
        .collect();
    told.sort();
    assert_eq!(told, ["replay", "unsigned_field_disagrees"]);
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

/// A legacy reply as a client sees it once its signature checked out with the servers' key.
#[derive(Debug)]
struct Told {
    sender: String,
    requestid: String,
    status: i64,
    /// `statusmsg` of an RPC reply, `"pong"` for discovery.
    message: String,
    /// fedgate's refusal code, when it refused.
    code: String,
}

/// Every reply on `consumer` until none has come for 5 s, each verified with the site's
/// server key.
async fn collect_replies(consumer: &mut lapin::Consumer, s: Serializer) -> Vec<Told> {
    use fedgate::wire::mcollective::Ruby;
    use fedgate::wire::mcollective::envelope::LegacyReply;
    let mut replies = Vec::new();
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(consumer)).await
    {
        let reply = LegacyReply::decode(s, &delivery.data, 1 << 20).unwrap();
        let body = s.decode(&reply.body).unwrap();
        let text = |v: Option<&Ruby>| v.and_then(Ruby::as_str).unwrap_or_default().to_string();
        let (status, message) = match &body {
            Ruby::Hash(_) => (
                body.get("statuscode").and_then(Ruby::as_int).unwrap(),
                text(body.get("statusmsg")),
            ),
            other => (0, text(Some(other))),
        };
        let code = body
            .get("data")
            .and_then(|d| d.get("fedgate"))
            .and_then(|f| f.get("code"));
        replies.push(Told {
            sender: reply.senderid.clone(),
            requestid: reply.requestid.clone(),
            status,
            message,
            code: text(code),
        });
    }
    replies
}

/// Starts the bridge `oldsite` as instance `bridge1` from `dir/fedgate.toml`.
async fn start_bridge(dir: &std::path::Path) -> fedgate::legacy::ingress::Ingress {
    let config = Config::load(&dir.join("fedgate.toml")).unwrap();
    let gate = fedgate::gateway::open_gate(&config, "edge", "bridge1")
        .await
        .unwrap();
    fedgate::legacy::ingress::Ingress::start(&config, "oldsite", gate, "bridge1")
        .await
        .unwrap()
}

async fn directed_bindings(ingress: &fedgate::legacy::ingress::Ingress, nodes: usize) {
    for _ in 0..100 {
        if ingress.directed_bindings() == nodes {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ingress.directed_bindings(), nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_wait_in_the_durable_queue_while_fedgate_is_down() {
    use fedgate::security::legacy::LegacySigner;
    let site = LegacySite::new(Serializer::Marshal).await;
    let Bridge {
        london,
        fleet: _fleet,
        nodes,
        ingress,
        dir,
    } = bridge(&site).await;
    directed_bindings(&ingress, 50).await;
    let forwarded = watch_forwarded(&london).await;
    ingress.shutdown(Duration::from_secs(2)).await;

    // While no fedgate consumes, legacy clients go on sending.
    let alice = LegacySigner::from_file(&site.key("alice-private.pem"), "alice").unwrap();
    let publisher = Publisher::new(&site).await;
    let (channel, reply_to) = (&publisher.channel, &publisher.reply_to);
    let now = fedgate::security::Now::system().unix_seconds();
    let id = |n: u8| format!("{:032x}", n);
    let one = nodes[3].identity.clone();
    let broadcast = ("mcollective_broadcast", "rpcutil");
    let ping = || ("rpcutil", "ping", vec![]);
    let fact = |f| ("rpcutil", "get_fact", vec![("fact", f)]);
    for (request, route, expiration) in [
        // Live for a minute: a broadcast, and a request directed to one node.
        (
            legacy_request(&alice, ping(), (now, 60), &id(1)),
            broadcast,
            "60000",
        ),
        (
            legacy_request(&alice, fact("c"), (now, 60), &id(2)),
            ("mcollective_directed", one.as_str()),
            "60000",
        ),
        // Expired by the time fedgate is back: one the broker keeps (no AMQP expiration), which
        // fedgate must refuse itself, and one the broker drops.
        (
            legacy_request(&alice, fact("a"), (now, 2), &id(3)),
            broadcast,
            "",
        ),
        (
            legacy_request(&alice, fact("b"), (now, 2), &id(4)),
            broadcast,
            "2000",
        ),
    ] {
        publish_to(
            channel,
            route,
            &request.encode(Serializer::Marshal),
            reply_to,
            expiration,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        !forwarded
            .lock()
            .unwrap()
            .keys()
            .any(|id| id.starts_with("0000")),
        "nothing is forwarded while fedgate is down"
    );

    let ingress = start_bridge(dir.path()).await;
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
    let mut answered = std::collections::BTreeMap::<String, usize>::new();
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(
        Duration::from_secs(5),
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
        *answered.entry(reply.requestid).or_default() += 1;
    }
    // The two live requests were bridged and answered (the broadcast by every node); the one
    // that expired in the queue is told it was refused; the one the broker dropped is not.
    assert_eq!(
        answered,
        [(id(1), 50), (id(2), 1), (id(3), 1)].into_iter().collect(),
        "replies by request"
    );
    // Besides the bridge's own discovery for its directed bindings.
    let ours: std::collections::BTreeMap<String, usize> = forwarded
        .lock()
        .unwrap()
        .iter()
        .filter(|(id, _)| id.starts_with("0000"))
        .map(|(id, n)| (id.clone(), *n))
        .collect();
    assert_eq!(
        ours,
        [(id(1), 1), (id(2), 1)].into_iter().collect(),
        "requests forwarded to Choria"
    );
    let records = support::audit_records(&dir.path().join("audit/audit.log"));
    let about = |n: u8| {
        records
            .iter()
            .filter(|r| r.event.request_id.as_deref() == Some(id(n).as_str()))
            .map(|r| r.event.code.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        about(3),
        ["ttl_expired"],
        "fedgate refuses what expired in the queue"
    );
    assert!(about(4).is_empty(), "the broker dropped the one it expired");
    drop(publisher);
    ingress.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bridge_recovers_when_the_broker_closes_its_connections() {
    use fedgate::security::legacy::LegacySigner;
    let site = LegacySite::new(Serializer::Marshal).await;
    let bridge = bridge(&site).await;
    directed_bindings(&bridge.ingress, 50).await;
    let results = rpc_results(&site, &["rpcutil", "ping"]);
    assert_eq!(results.len(), 50);
    let forwarded = watch_forwarded(&bridge.london).await;
    let before = forwarded.lock().unwrap().len();
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

    // A stream of requests, one node each, all in the queue before the connections drop.
    const STREAM: usize = 6000;
    let alice = LegacySigner::from_file(&site.key("alice-private.pem"), "alice").unwrap();
    let now = fedgate::security::Now::system().unix_seconds();
    let ids: Vec<String> = (0..STREAM)
        .map(|n| format!("{:032x}", 0xf000 + n))
        .collect();
    let messages: Vec<(String, Vec<u8>)> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            let fact = format!("f{n}");
            let request = legacy_request(
                &alice,
                ("rpcutil", "get_fact", vec![("fact", fact.as_str())]),
                (now, 120),
                id,
            );
            (
                bridge.nodes[n % bridge.nodes.len()].identity.clone(),
                request.encode(Serializer::Marshal),
            )
        })
        .collect();
    let connection =
        lapin::Connection::connect(&site.amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    // Published back to back, then confirmed, so the queue fills faster than fedgate drains it.
    let mut confirms = Vec::new();
    for (node, bytes) in &messages {
        let confirm = channel
            .basic_publish(
                "mcollective_directed".into(),
                node.as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                bytes,
                lapin::BasicProperties::default().with_reply_to("fedgate-test-unread".into()),
            )
            .await
            .unwrap();
        confirms.push(confirm);
    }
    for confirm in confirms {
        assert!(confirm.await.unwrap().is_ack());
    }
    // Mid-stream: some forwarded, more in the queue and in fedgate's hands.
    let midway = eventually(30, || {
        forwarded.lock().unwrap().len() >= before + STREAM / 10
    })
    .await;
    assert!(midway, "the stream started");
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
    let at_close = forwarded.lock().unwrap().len() - before;
    assert!(at_close < STREAM, "the connections closed mid-stream");
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
    // Nothing that was in the queue or in fedgate's hands was lost (what had not been
    // acknowledged was delivered again), and nothing was forwarded twice.
    let all_there = eventually(60, || {
        let seen = forwarded.lock().unwrap();
        ids.iter().all(|id| seen.contains_key(id))
    })
    .await;
    let seen = forwarded.lock().unwrap().clone();
    let missing = ids.iter().filter(|id| !seen.contains_key(*id)).count();
    assert!(
        all_there,
        "{missing} of {STREAM} requests never reached Choria"
    );
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "forwarded more than once: {twice:?}");
    let records = support::audit_records(&bridge.dir.path().join("audit/audit.log"));
    let ours: std::collections::BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let decided = |code: &str| {
        records
            .iter()
            .filter(|r| r.kind == fedgate::audit::Kind::Decision && r.event.code == code)
            .filter(|r| ours.contains(r.event.request_id.as_deref().unwrap_or("")))
            .count()
    };
    // One decision each; what the broker delivered again after the forward was dropped as a
    // duplicate (and recorded), and nothing was refused.
    assert_eq!(decided("allowed"), STREAM);
    let decisions = records
        .iter()
        .filter(|r| r.kind == fedgate::audit::Kind::Decision)
        .filter(|r| ours.contains(r.event.request_id.as_deref().unwrap_or("")))
        .count();
    assert_eq!(decisions, STREAM + decided("duplicate_delivery"));
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
        "[instance]\nname = \"facade1\"\n\n[identity]\nrules = {rules:?}\n\n{}{}{}",
        gate_block(
            dir.path(),
            &[(
                "rpcutil.policy",
                "policy default deny\nallow\tcert=fedgate\tping\t*\t*\n"
            )],
            ""
        ),
        support::network_block("collectives.london", &london, ""),
        site.config_block("oldsite", "choria = \"london\""),
    );
    let path = dir.path().join("fedgate.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let gate = fedgate::gateway::open_gate(&config, "edge", "facade1")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federation_reaches_legacy_nodes_beside_choria_ones() {
    let site = site(Serializer::Yaml).await;
    let prod = support::Network::start("prod");
    let london = support::Network::start("london");
    let fleet = london.start_fleet(10).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("identity.toml");
    // Into the federation's members as themselves; from london's side into the legacy site as
    // fedgate's legacy identity.
    std::fs::write(
        &rules,
        "[[rule]]\nfrom = \"prod\"\nto = [\"london\", \"oldsite\"]\ncaller = \"choria=alice.mcollective\"\nas = \"$0\"\n\n\
         [[rule]]\nfrom = \"london\"\nto = [\"oldsite\"]\nglob = \"choria=*.mcollective\"\nas = \"cert=fedgate\"\n\n\
         [[rule]]\nfrom = \"edge\"\nto = [\"london\"]\nglob = \"up=*\"\nas = \"choria=$1.mcollective\"\n\n\
         [[rule]]\nfrom = \"edge\"\nto = [\"oldsite\"]\nglob = \"up=*\"\nas = \"cert=fedgate\"\n",
    )
    .unwrap();
    let key = dir.path().join("token.key");
    std::fs::write(&key, TokenKeys::generate_pem().unwrap()).unwrap();
    let privileged = support::realm("london").privileged.as_ref().unwrap();
    let text = format!(
        "[instance]\nname = \"fed1\"\n\n[identity]\nrules = {rules:?}\n\n{}{}{}{}\
         [edge]\nlisten = \"127.0.0.1:0\"\ntoken_key = {key:?}\n",
        gate_block(
            dir.path(),
            &[(
                "rpcutil.policy",
                "policy default deny\nallow\tchoria=alice.mcollective\tping\t*\t*\n\
                 allow\tcert=fedgate\tping\t*\t*\n"
            )],
            ""
        ),
        support::network_block("federations.prod", &prod, "members = [\"oldsite\"]"),
        support::network_block(
            "federations.prod.collectives.london",
            &london,
            &format!(
                "signer = {{ certificate = {:?}, key = {:?} }}",
                privileged.cert, privileged.key
            )
        ),
        site.config_block("oldsite", "choria = \"london\""),
    );
    let path = dir.path().join("fedgate.toml");
    std::fs::write(&path, text).unwrap();
    let fedgate = support::BrokerProcess::spawn(&path, "fed1").await;

    // prod's alice calls the federation as any Choria federation client does: one request for
    // the Choria collective, one for the legacy one, both through the broker.
    let alice = prod.client(support::user("prod", "alice"), None).await;
    let ping = |collective: &str, expect: usize| {
        let mut call = fedgate::client::RpcCall::new(collective, "rpcutil", "ping");
        call.federation = Some("prod".into());
        call.expect = Some(expect);
        call.timeout = Duration::from_secs(20);
        call
    };
    let mut senders = Vec::new();
    let summary = alice
        .call_many(&[ping("london", 10), ping("oldsite", 2)], |reply| {
            senders.push((reply.sender.clone(), reply.statuscode));
        })
        .await
        .unwrap();
    assert_eq!((summary.responses, summary.ok), (12, 12), "{summary:?}");
    let legacy: Vec<_> = senders
        .iter()
        .filter(|(s, _)| s.starts_with("legacy"))
        .map(|(s, _)| s.as_str())
        .collect();
    assert_eq!(legacy.len(), 2);
    for node in NODES {
        assert!(legacy.contains(&node), "{senders:?}");
    }
    assert_eq!(
        fleet
            .stats()
            .acted_for("choria=alice.mcollective", "fedgate.privileged.mcollective"),
        10
    );
    // The legacy nodes acted for fedgate's legacy identity, on a request the bridge signed.
    for node in NODES {
        assert!(
            site.log(node).contains("cert=fedgate"),
            "{}",
            site.log(node)
        );
    }
    // Two decisions on the way to the legacy nodes (the broker's, into oldsite on london's
    // network, and the facade's, into the legacy collective), one to london's nodes.
    let records = support::audit_records(&dir.path().join("audit/audit.log"));
    let mut allowed: Vec<(String, String, String)> = records
        .iter()
        .filter(|r| r.event.decision == Some(fedgate::audit::Verdict::Allow))
        .map(|r| {
            (
                r.event.edge.clone(),
                r.event.collectives.join(","),
                r.event.mapped_caller.clone().unwrap_or_default(),
            )
        })
        .collect();
    allowed.sort();
    assert_eq!(
        allowed,
        [
            (
                "choria-nats".into(),
                "oldsite".into(),
                "cert=fedgate".into()
            ),
            (
                "federation".into(),
                "london".into(),
                "choria=alice.mcollective".into()
            ),
            (
                "federation".into(),
                "oldsite".into(),
                "choria=alice.mcollective".into()
            ),
        ]
    );

    // The same fedgate's WebSocket edge: a federation target fans out to london's nodes and,
    // through the bridge, to the legacy ones.
    let mut url = None;
    for _ in 0..100 {
        url = fedgate
            .logs()
            .iter()
            .find_map(|l| l.split("edge on ").nth(1).map(str::to_string));
        if url.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = TokenKeys::load(&key)
        .unwrap()
        .issue("alice", Duration::from_secs(300), None, SystemTime::now())
        .unwrap();
    let mut client = WsClient::connect(&Connect {
        url: url.expect("the edge is up"),
        token: Some(token),
        ..Connect::default()
    })
    .await
    .unwrap();
    let mut senders = Vec::new();
    let done = client
        .call(
            &json!({"type":"rpc","id":"f1","federation":"prod","agent":"rpcutil","action":"ping","limit":12,"timeout_ms":15000}),
            |r| senders.push(r.message["sender"].as_str().unwrap().to_string()),
        )
        .await
        .unwrap();
    assert_eq!(senders.len(), 12, "{done}");
    for node in NODES {
        assert!(senders.iter().any(|s| s == node), "{senders:?}");
    }
    assert!(
        done["refused"].as_array().is_none_or(Vec::is_empty),
        "{done}"
    );
    // A limit is shared by the members: five replies in all, and the request ends with them
    // rather than waiting for each member to reach five.
    let started = std::time::Instant::now();
    let mut replies = 0;
    let done = client
        .call(
            &json!({"type":"rpc","id":"f2","federation":"prod","agent":"rpcutil","action":"ping","limit":5,"timeout_ms":15000}),
            |_| replies += 1,
        )
        .await
        .unwrap();
    assert_eq!(
        (replies, done["responses"].as_u64()),
        (5, Some(5)),
        "{done}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{done}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mco_reaches_every_member_of_a_federation() {
    let site = LegacySite::new(Serializer::Yaml).await;
    let prod = support::Network::start("prod");
    let london = support::Network::start("london");
    let tokyo = support::Network::start("tokyo");
    let _london_fleet = london.start_fleet(20).await;
    let _tokyo_fleet = tokyo.start_fleet(20).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("identity.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nfrom = \"oldsite\"\nto = [\"london\", \"tokyo\"]\nglob = \"cert=*\"\nas = \"choria=$1.mcollective\"\n",
    )
    .unwrap();
    let signer = |realm: &str| {
        let pair = support::realm(realm).privileged.as_ref().unwrap();
        format!(
            "signer = {{ certificate = {:?}, key = {:?} }}",
            pair.cert, pair.key
        )
    };
    let text = format!(
        "[instance]\nname = \"bridge1\"\n\n[identity]\nrules = {rules:?}\n\n{}{}{}{}{}",
        gate_block(
            dir.path(),
            &[(
                "rpcutil.policy",
                "policy default deny\nallow\tchoria=alice.mcollective\tping\t*\t*\n"
            )],
            ""
        ),
        support::network_block("federations.prod", &prod, ""),
        support::network_block(
            "federations.prod.collectives.london",
            &london,
            &signer("london")
        ),
        support::network_block(
            "federations.prod.collectives.tokyo",
            &tokyo,
            &signer("tokyo")
        ),
        site.config_block(
            "oldsite",
            "bridge = { collective = \"prod\", refresh_s = 5 }"
        ),
    );
    let path = dir.path().join("fedgate.toml");
    std::fs::write(&path, text).unwrap();
    let ingress = start_bridge(dir.path()).await;
    directed_bindings(&ingress, 40).await;

    // mco ping: every node of both member collectives answers.
    let output = site.mco(&["ping", "--dt", "5"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let count = |prefix: &str| stdout.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!((count("london-"), count("tokyo-")), (20, 20), "{stdout}");

    // A broadcast reaches both; a directed request only the collective that has the node.
    let results = rpc_results(&site, &["rpcutil", "ping"]);
    assert_eq!(results.len(), 40, "{results:?}");
    assert!(results.iter().all(|r| r.1 == 0));
    let results = rpc_results(&site, &["rpcutil", "ping", "-I", "tokyo-0007"]);
    assert_eq!(results, [("tokyo-0007".to_string(), 0)]);
    // Policy allows ping only: a broadcast inventory is refused by both members, each refusal
    // is on the record, and mco hears the refusal once, from the bridge.
    let results = rpc_results(&site, &["rpcutil", "inventory"]);
    assert_eq!(results, [("fedgate-bridge-bridge1".to_string(), 1)]);

    // One decision per member collective for each bridged request.
    let records = support::audit_records(&dir.path().join("audit/audit.log"));
    let mut denied: Vec<String> = records
        .iter()
        .filter(|r| r.event.decision == Some(fedgate::audit::Verdict::Deny))
        .map(|r| format!("{} {}", r.event.collectives.join(","), r.event.code))
        .collect();
    denied.sort();
    assert_eq!(denied, ["london denied", "tokyo denied"]);
    let decided = |collective: &str| {
        records
            .iter()
            .filter(|r| r.kind == fedgate::audit::Kind::Decision)
            .filter(|r| r.event.decision == Some(fedgate::audit::Verdict::Allow))
            .filter(|r| r.event.collectives == [collective])
            .count()
    };
    // ping; rpc (discovery, broadcast); -I with one identity (no discovery: one directed copy,
    // to tokyo only); inventory (discovery, then the refused broadcast).
    assert_eq!((decided("london"), decided("tokyo")), (4, 5));
    ingress.shutdown(Duration::from_secs(2)).await;
}

/// Runs `mco` with each of `calls` at once; their outputs, in order.
async fn mco_together(site: &LegacySite, calls: &[Vec<String>]) -> Vec<String> {
    let children: Vec<std::process::Child> = calls
        .iter()
        .map(|args| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            site.mco_command(&args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|child| {
                let output = child.wait_with_output().unwrap();
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                )
            })
            .collect()
    })
    .await
    .unwrap()
}

/// The london nodes an `mco` output names, sorted.
fn london_nodes(output: &str) -> Vec<String> {
    let mut nodes: Vec<String> = output
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("london-"))
        .map(str::to_string)
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mco_calls_sharing_one_key_are_each_served() {
    // mco signs its message, TTL and second, not its request id: calls made together with one
    // key sign identical bodies. mcollectived serves each; so does fedgate.
    let site = LegacySite::new(Serializer::Marshal).await;
    let bridge = bridge(&site).await;
    directed_bindings(&bridge.ingress, 50).await;
    let mut all: Vec<String> = bridge.nodes.iter().map(|n| n.identity.clone()).collect();
    all.sort();

    let ping: Vec<String> = ["ping", "--dt", "5"].map(String::from).to_vec();
    let outputs = mco_together(&site, &[ping.clone(), ping.clone(), ping]).await;
    for output in &outputs {
        assert_eq!(london_nodes(output), all, "{output}");
    }

    // Ten rpc calls with different filters, each discovering five nodes and sending each a
    // directed copy: every call gets exactly its nodes.
    let filters: Vec<String> = (0..5)
        .flat_map(|tens| {
            [
                format!("/^london-00{tens}[0-4]$/"),
                format!("/^london-00{tens}[5-9]$/"),
            ]
        })
        .collect();
    let calls: Vec<Vec<String>> = filters
        .iter()
        .map(|filter| {
            [
                "rpc",
                "--json",
                "--dt",
                "5",
                "rpcutil",
                "ping",
                "-I",
                filter.as_str(),
            ]
            .map(String::from)
            .to_vec()
        })
        .collect();
    let outputs = mco_together(&site, &calls).await;
    for (filter, output) in filters.iter().zip(&outputs) {
        let pattern = regex::Regex::new(filter.trim_matches('/')).unwrap();
        let wanted: Vec<String> = all
            .iter()
            .filter(|n| pattern.is_match(n))
            .cloned()
            .collect();
        assert_eq!(wanted.len(), 5);
        assert_eq!(london_nodes(output), wanted, "{filter}: {output}");
    }

    // The copies are on the record as duplicates of the first.
    let records = support::audit_records(&bridge.dir.path().join("audit/audit.log"));
    let duplicates = records
        .iter()
        .filter(|r| r.event.duplicate.is_some())
        .count();
    assert!(duplicates >= 1, "{duplicates} duplicates recorded");
    assert!(
        records
            .iter()
            .all(|r| r.event.decision != Some(fedgate::audit::Verdict::Deny))
    );
    bridge.ingress.shutdown(Duration::from_secs(2)).await;
}

/// A bare pre-2.0 request: the message alone, signed, with the envelope's TTL and time.
fn bare_request(
    signer: &fedgate::security::legacy::LegacySigner,
    s: Serializer,
    (agent, msg): (&str, fedgate::wire::mcollective::Ruby),
    requestid: &str,
) -> fedgate::wire::mcollective::envelope::LegacyRequest {
    let body = s.encode(&msg);
    fedgate::wire::mcollective::envelope::LegacyRequest {
        hash: signer.sign(&body).unwrap(),
        body,
        senderid: "client.example.net".into(),
        requestid: requestid.into(),
        filter: fedgate::legacy::legacy_filter(&Default::default(), agent).unwrap(),
        collective: "mcollective".into(),
        agent: agent.into(),
        callerid: "cert=alice".into(),
        ttl: 60,
        msgtime: fedgate::security::Now::system().unix_seconds(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_request_ids_and_old_bodies_are_taken_as_mcollectived_takes_them() {
    use fedgate::security::legacy::LegacySigner;
    use fedgate::wire::mcollective::Ruby;
    // A real mcollectived beside fedgate on the same exchanges: every request below reaches
    // both, so each answer fedgate gives is set beside the daemon's.
    let mut site = LegacySite::new(Serializer::Marshal).await;
    site.start_node("legacy1.example.net", "---\nrole: legacy\n");
    let bridge = bridge_with(&site, ", max_copies = 2").await;
    directed_bindings(&bridge.ingress, 50).await;
    let s = Serializer::Marshal;
    let alice = LegacySigner::from_file(&site.key("alice-private.pem"), "alice").unwrap();
    let publisher = Publisher::new(&site).await;
    let mut consumer = publisher.replies().await;
    let route = ("mcollective_broadcast", "rpcutil");
    let now = fedgate::security::Now::system().unix_seconds();
    let request = |id: &str| legacy_request(&alice, ("rpcutil", "ping", vec![]), (now, 60), id);
    // (legacy node's replies, london's replies, fedgate's refusal codes) for one request id.
    let answers = |replies: &[Told], id: &str| {
        let of = |r: &&Told| r.requestid == id;
        let legacy = replies
            .iter()
            .filter(of)
            .filter(|r| r.sender == "legacy1.example.net")
            .count();
        let london = replies
            .iter()
            .filter(of)
            .filter(|r| r.sender.starts_with("london-") && r.status == 0)
            .count();
        let mut refused: Vec<String> = replies
            .iter()
            .filter(of)
            .filter(|r| r.status == 1)
            .map(|r| format!("{}: {}", r.code, r.message))
            .collect();
        refused.sort();
        (legacy, london, refused)
    };

    // mco's 32 hex characters, another client's 40, and a UUID with its dashes: one body under
    // three ids. The daemon answers all three; fedgate serves two copies (max_copies = 2) and
    // tells the third why not.
    let ids = [
        "0123456789abcdef0123456789abcdef".to_string(),
        "0123456789abcdef0123456789abcdef01234567".to_string(),
        "01234567-89ab-cdef-0123-456789abcdef".to_string(),
    ];
    // The first frame again, request id and all, is a replay, which fedgate refuses and says
    // so. Then an id no client makes, which fedgate does not echo into replies. (A pause
    // between each: fedgate takes deliveries concurrently, and the order decides which copy
    // is one too many.)
    let odd = "x".repeat(65);
    for id in [&ids[0], &ids[1], &ids[2], &ids[0], &odd] {
        publisher.publish(route, &request(id).encode(s)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let replies = collect_replies(&mut consumer, s).await;
    let (legacy, london, refused) = answers(&replies, &ids[0]);
    assert_eq!(
        (legacy, london),
        (2, 50),
        "the daemon keeps no replay cache"
    );
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].starts_with("replay: ") && refused[0].contains("already forwarded"),
        "{refused:?}"
    );
    assert_eq!(answers(&replies, &ids[1]), (1, 50, vec![]));
    let (legacy, london, refused) = answers(&replies, &ids[2]);
    assert_eq!((legacy, london), (1, 0));
    assert!(
        refused.len() == 1 && refused[0].contains("under 2 request ids"),
        "{refused:?}"
    );
    assert_eq!(answers(&replies, &odd).0, 1, "mcollectived takes any id");
    assert_eq!(answers(&replies, &odd).1, 0);

    // A pre-2.0 discovery ping, its TTL and time unsigned: the daemon answers it (plugin.ssl.
    // enforce_ttl unset), and so does fedgate. A bare SimpleRPC Hash: the daemon drops it
    // ("does not have a secure TTL"); fedgate refuses it and says so.
    let ping = bare_request(&alice, s, ("discovery", Ruby::str("ping")), &"b".repeat(32));
    publisher
        .publish(("mcollective_broadcast", "discovery"), &ping.encode(s))
        .await;
    let rpc = Ruby::Hash(vec![
        (Ruby::sym("agent"), Ruby::str("rpcutil")),
        (Ruby::sym("action"), Ruby::str("ping")),
        (Ruby::sym("data"), Ruby::Hash(vec![])),
    ]);
    let bare_rpc = bare_request(&alice, s, ("rpcutil", rpc), &"c".repeat(32));
    publisher.publish(route, &bare_rpc.encode(s)).await;
    let replies = collect_replies(&mut consumer, s).await;
    let pongs: Vec<&Told> = replies.iter().filter(|r| r.message == "pong").collect();
    assert_eq!(pongs.len(), 51, "{replies:?}");
    assert!(pongs.iter().any(|r| r.sender == "legacy1.example.net"));
    let (legacy, london, refused) = answers(&replies, &"c".repeat(32));
    assert_eq!((legacy, london), (0, 0));
    assert!(
        refused.len() == 1 && refused[0].starts_with("malformed_envelope: "),
        "{refused:?}"
    );

    // On the record: the second id as a duplicate, the rest refused with their reasons.
    let records = support::audit_records(&bridge.dir.path().join("audit/audit.log"));
    let of = |id: &str| {
        records
            .iter()
            .filter(|r| r.kind == fedgate::audit::Kind::Decision)
            .filter(|r| {
                let legacy = r
                    .event
                    .legacy_request_id
                    .as_ref()
                    .or(r.event.request_id.as_ref());
                legacy.map(String::as_str) == Some(id)
            })
            .map(|r| (r.event.code.clone(), r.event.duplicate))
            .collect::<Vec<_>>()
    };
    assert_eq!(of(&ids[1]), [("allowed".to_string(), Some(1))]);
    // Choria takes 32 hex characters: the 40-character id went in under one derived from it,
    // and the record holds both.
    let derived = fedgate::legacy::choria_request_id(&ids[1]);
    assert_eq!(derived.len(), 32);
    assert!(
        records
            .iter()
            .any(|r| r.event.request_id.as_deref() == Some(derived.as_str())
                && r.event.legacy_request_id.as_deref() == Some(ids[1].as_str()))
    );
    assert_eq!(of(&ids[2]), [("replay".to_string(), None)]);
    // (Cut to 64 characters on the record.)
    let cut = format!("{}…", "x".repeat(63));
    assert_eq!(of(&cut), [("unsigned_field_disagrees".to_string(), None)]);
    assert_eq!(
        of(&"c".repeat(32)),
        [("malformed_envelope".to_string(), None)]
    );
    assert_eq!(of(&"b".repeat(32)), [("allowed".to_string(), None)]);
    bridge.ingress.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enforce_ttl_refuses_old_bodies_as_mcollectived_does() {
    use fedgate::security::legacy::LegacySigner;
    use fedgate::wire::mcollective::Ruby;
    let site = LegacySite::new(Serializer::Marshal).await;
    let bridge = bridge_with(&site, ", enforce_ttl = true").await;
    let s = Serializer::Marshal;
    let alice = LegacySigner::from_file(&site.key("alice-private.pem"), "alice").unwrap();
    let publisher = Publisher::new(&site).await;
    let ping = bare_request(&alice, s, ("discovery", Ruby::str("ping")), &"d".repeat(32));
    publisher
        .publish(("mcollective_broadcast", "discovery"), &ping.encode(s))
        .await;
    let mut code = String::new();
    for _ in 0..100 {
        let records = support::audit_records(&bridge.dir.path().join("audit/audit.log"));
        if let Some(record) = records
            .iter()
            .find(|r| r.event.request_id.as_deref() == Some(&"d".repeat(32)))
        {
            code = record.event.code.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(code, "old_protocol");
    assert_eq!(
        bridge
            .fleet
            .stats()
            .acted_for("choria=alice.mcollective", "fedgate.privileged.mcollective"),
        0
    );
    bridge.ingress.shutdown(Duration::from_secs(2)).await;
}
