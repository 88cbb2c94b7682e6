//! fedgate and a legacy broker over mutual TLS: a RabbitMQ node of the test's own whose TLS
//! listener requires a client certificate from the dev PKI's tokyo CA. With `ca` and `tls` set
//! the bridge and the link connect and a request is served; without the client certificate, or
//! trusting another CA, `fedgate run` refuses to start and says why.

mod support;

use std::time::Duration;

use fedgate::config::Config;
use fedgate::security::legacy::LegacySigner;
use fedgate::wire::mcollective::Serializer;
use support::BrokerProcess;
use support::legacy::{LegacySite, Publisher, collect_replies, ping, send, write_bridge_config};
use support::rabbit::{NodeTls, RabbitNode};

const NODES: usize = 5;

/// A node with a TLS listener for tokyo's clients, and MCollective's exchanges on its `/`.
async fn tls_node() -> RabbitNode {
    let tokyo = support::realm("tokyo");
    let node = tokio::task::spawn_blocking(|| {
        RabbitNode::start(
            "tls",
            Some(&NodeTls {
                cert: tokyo.server.cert.clone(),
                key: tokyo.server.key.clone(),
                client_ca: tokyo.ca.clone(),
            }),
        )
    })
    .await
    .unwrap();
    let connection =
        lapin::Connection::connect(&node.amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    for (name, kind) in [
        ("mcollective_broadcast", lapin::ExchangeKind::Topic),
        ("mcollective_directed", lapin::ExchangeKind::Direct),
    ] {
        channel
            .exchange_declare(
                name.into(),
                kind,
                lapin::options::ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
    }
    let _ = connection.close(200, "done".into()).await;
    node
}

/// `ca = ...` and, unless `None`, `tls = { ... }` for `[legacy.oldsite]`.
fn tls_settings(ca: &std::path::Path, identity: Option<&fedgate_dev::devpki::CertPair>) -> String {
    let mut text = format!("ca = {ca:?}\n");
    if let Some(pair) = identity {
        text.push_str(&format!(
            "tls = {{ certificate = {:?}, key = {:?} }}\n",
            pair.cert, pair.key
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bridge_and_the_link_reach_a_broker_over_mutual_tls() {
    let node = tls_node().await;
    // The site's keys and signers; its own vhost on the shared broker is not used.
    let site = LegacySite::new(Serializer::Marshal).await;
    let london = support::Network::start("london");
    let _fleet = london.start_fleet(NODES).await;
    let tokyo = support::realm("tokyo");
    let dir = tempfile::tempdir().unwrap();
    let config = write_bridge_config(
        dir.path(),
        &site,
        &london,
        &node.amqps_url(),
        &tls_settings(&tokyo.ca, Some(&tokyo.fedgate)),
    );
    let mut fedgate = BrokerProcess::spawn(&config, "bridge1").await;
    let alice = LegacySigner::from_file(&site.key("alice-private.pem"), "alice").unwrap();
    let publisher = Publisher::connect(&node.amqp_url()).await;
    let now = fedgate::security::Now::system().unix_seconds();
    let requestid = format!("{:032x}", 7);
    send(&publisher, &ping(&alice, (now, 60), &requestid), 60).await;
    let replies = collect_replies(&site, &publisher, Duration::from_secs(20), |r| {
        r.get(&requestid).is_some_and(|v| v.len() == NODES)
    })
    .await;
    let statuses: Vec<i64> = replies
        .get(&requestid)
        .map(|v| v.iter().map(|r| r.1).collect())
        .unwrap_or_default();
    assert_eq!(
        statuses,
        vec![0; NODES],
        "{replies:?}\n{}",
        fedgate.logs().join("\n")
    );
    // The link (facade, edge) connects the same way.
    let loaded = Config::load(&config).unwrap();
    let link = fedgate::legacy::LegacyLink::connect("oldsite", &loaded.legacy["oldsite"], "tls1")
        .await
        .expect("the link connects over mutual TLS");
    link.close().await;
    fedgate.terminate().await;
}

/// `fedgate run` with `config`: it must exit at once, failing; returns its stderr.
async fn refused_start(config: &std::path::Path) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(support::fedgate_bin())
            .args(["run", "--instance", "bridge1", "--config"])
            .arg(config)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("fedgate run gave up within a minute")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success(), "{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fedgate_run_refuses_to_start_without_its_client_certificate_or_trusting_another_ca() {
    let node = tls_node().await;
    let site = LegacySite::new(Serializer::Marshal).await;
    let london = support::Network::start("london");
    let tokyo = support::realm("tokyo");
    let addr = format!("localhost:{}", node.amqps_port.unwrap());

    let dir = tempfile::tempdir().unwrap();
    let no_identity = write_bridge_config(
        dir.path(),
        &site,
        &london,
        &node.amqps_url(),
        &tls_settings(&tokyo.ca, None),
    );
    let stderr = refused_start(&no_identity).await;
    assert!(
        stderr.contains(&format!("TLS with the broker at {addr} failed"))
            // The broker's alert, or (TLS 1.3) the connection closed before it could be read.
            && (stderr.contains("CertificateRequired")
                || stderr.contains("closed the connection once TLS was set up"))
            && stderr.contains("check `tls`"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let london_ca = &support::realm("london").ca;
    let other_ca = write_bridge_config(
        dir.path(),
        &site,
        &london,
        &node.amqps_url(),
        &tls_settings(london_ca, None),
    );
    let stderr = refused_start(&other_ca).await;
    assert!(
        stderr.contains(&format!("TLS with the broker at {addr} failed"))
            && stderr.contains("UnknownIssuer")
            && stderr.contains("is `ca` the CA"),
        "{stderr}"
    );
    assert!(!stderr.contains("guest:guest"), "no password in: {stderr}");
}
