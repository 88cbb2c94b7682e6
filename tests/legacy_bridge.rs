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
