//! A connection against a real nats-server.

use super::*;

/// The counter's value for `connection` in the rendered metrics, if it has one.
fn slow_consumer_drops(rendered: &str, connection: &str) -> Option<f64> {
    let series = format!("fedgate_nats_slow_consumer_total{{connection=\"{connection}\"}} ");
    rendered
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_a_slow_subscription_drops_are_counted_not_silent() {
    let handle = crate::metrics::install().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server =
        fedgate_dev::natsd::NatsServer::start(dir.path(), Default::default()).expect("nats-server");
    let endpoint = NatsEndpoint {
        urls: vec![server.url().to_string()],
        ca: None,
        identity: None,
        auth: None,
    };
    let client = connect(&endpoint, "slow reader").await.unwrap();
    // Subscribed and never read: the client buffers 65,536 messages for it, then drops.
    let _unread = client.subscribe("replies").await.unwrap();
    client.flush().await.unwrap();
    let publisher = async_nats::connect(server.url()).await.unwrap();
    for _ in 0..70_000 {
        publisher.publish("replies", "r".into()).await.unwrap();
    }
    publisher.flush().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let drops = slow_consumer_drops(&handle.render(), "slow reader");
        if drops.is_some_and(|n| n > 0.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no slow-consumer drop counted: {drops:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
