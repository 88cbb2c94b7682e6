//! The relay comparison: messages delivered per second to one WebSocket client, by
//! nats-server's WebSocket listener and by the edge.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::process::{EdgeProcess, cpu_time};
use crate::bench::{BenchError, setup_err};
use crate::natsd::NatsServer;
use fedgate::edge::client::{Connect, open};
use fedgate::security::Now;
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::{
    Reply, ReplyEnvelope, RpcReply, SecureReply, SecureRequest, StatusCode, Transport,
    TransportHeaders,
};

/// The agent the relay source answers for; no simulated node has it.
const RELAY_AGENT: &str = "relay";

/// One side of the relay comparison: messages per second reaching the client, and messages
/// per CPU second of the process that turns them into WebSocket frames (nats-server, or the
/// edge).
#[derive(Clone, Copy, Debug)]
pub(super) struct RelayRate {
    pub(super) per_second: f64,
    pub(super) per_cpu_second: f64,
}

impl RelayRate {
    fn new(messages: usize, took: Duration, cpu: Duration) -> RelayRate {
        let messages = messages.saturating_sub(1) as f64;
        RelayRate {
            per_second: messages / took.as_secs_f64(),
            per_cpu_second: messages / cpu.as_secs_f64().max(1e-9),
        }
    }
}

/// Messages per second reaching one WebSocket client: from a NATS subscription over
/// nats-server's WebSocket listener, and as `reply` frames from the edge. Each side's
/// relaying process is timed on the CPU over the same span.
pub(super) async fn relay_rates(
    nats: &NatsServer,
    publisher: async_nats::Client,
    edge: &EdgeProcess,
    connect: &Connect,
    messages: usize,
) -> Result<(RelayRate, RelayRate), BenchError> {
    let sample = reply_transport("0123456789abcdef0123456789abcdef", "relay00000", "x");
    let payload = Bytes::from(sample.encode());

    // nats-server: a subscriber over WebSocket. A run that loses messages is reported and run
    // again on a fresh connection (it is the baseline's loss, not the edge's).
    let mut attempts = 0;
    let baseline = loop {
        attempts += 1;
        match nats_websocket_rate(nats, &publisher, &payload, messages).await {
            Ok(rate) => break rate,
            Err(err) if attempts < 3 => {
                tracing::warn!(%err, "nats-server WebSocket run failed; again")
            }
            Err(err) => return Err(err),
        }
    };

    let edge = edge_relay_rate(&publisher, edge, connect, messages).await?;
    Ok((baseline, edge))
}

/// Messages per second reaching one WebSocket client as `reply` frames from the edge: one
/// broadcast answered by `messages` distinct senders, published at once.
async fn edge_relay_rate(
    publisher: &async_nats::Client,
    edge: &EdgeProcess,
    connect: &Connect,
    messages: usize,
) -> Result<RelayRate, BenchError> {
    let source = publisher.clone();
    let mut requests = source
        .subscribe(fedgate::subjects::broadcast("london", RELAY_AGENT))
        .await
        .map_err(setup_err)?;
    source.flush().await.map_err(setup_err)?;
    let answer = tokio::spawn(async move {
        let message = requests.next().await?;
        let limits = Limits::default();
        let transport = Transport::decode(&message.payload, &limits).ok()?;
        let secure = SecureRequest::decode(&transport.data, &limits).ok()?;
        let request = secure.request(&limits).ok()?;
        let reply_to = transport.headers.reply_to.clone()?;
        let replies: Vec<Bytes> = (0..messages)
            .map(|n| {
                let sender = format!("relay{n:05}");
                Bytes::from(reply_transport(&request.envelope.requestid, &sender, "x").encode())
            })
            .collect();
        for reply in replies {
            source.publish(reply_to.clone(), reply).await.ok()?;
        }
        source.flush().await.ok()
    });
    let mut socket = open(connect).await.map_err(setup_err)?;
    let request = json!({"type":"rpc","id":"relay","collective":"london","agent":RELAY_AGENT,"action":"ping","limit":messages,"timeout_ms":60000});
    socket
        .send(Message::Text(request.to_string().into()))
        .await
        .map_err(setup_err)?;
    let (mut first, mut replies) = (None, 0usize);
    let mut cpu_at_first = Duration::ZERO;
    let took = loop {
        let frame = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .map_err(|_| BenchError("edge relay: no frame for 60 s".into()))?;
        let Some(Ok(Message::Text(text))) = frame else {
            continue;
        };
        if text.as_str().starts_with(r#"{"type":"reply""#) {
            if first.is_none() {
                cpu_at_first = edge.cpu()?;
                first = Some(Instant::now());
            }
            replies += 1;
            if replies == messages {
                break first.map_or(Duration::ZERO, |f| f.elapsed());
            }
        } else if !text.as_str().starts_with(r#"{"type":"welcome""#) {
            return Err(BenchError(format!("edge relay: {text}")));
        }
    };
    let cpu = edge.cpu()?.saturating_sub(cpu_at_first);
    let _ = answer.await;
    let _ = socket.close(None).await;
    Ok(RelayRate::new(messages, took, cpu))
}

/// Messages per second reaching one NATS subscriber over nats-server's WebSocket listener, from
/// its first message to its last.
async fn nats_websocket_rate(
    nats: &NatsServer,
    publisher: &async_nats::Client,
    payload: &Bytes,
    messages: usize,
) -> Result<RelayRate, BenchError> {
    let ws_url = nats
        .websocket_url()
        .ok_or_else(|| BenchError("nats-server reported no websocket port".into()))?;
    let subscriber = async_nats::connect(ws_url).await.map_err(setup_err)?;
    let mut subscription = subscriber
        .subscribe("bench.relay")
        .await
        .map_err(setup_err)?;
    subscriber.flush().await.map_err(setup_err)?;
    let mut cpu_at_first = Duration::ZERO;
    let receive = async {
        let mut first = None;
        for n in 0..messages {
            match tokio::time::timeout(Duration::from_secs(10), subscription.next()).await {
                Ok(Some(_)) => {
                    if first.is_none() {
                        cpu_at_first = cpu_time(nats.pid())?;
                        first = Some(Instant::now());
                    }
                }
                Ok(None) => {
                    return Err(BenchError(format!(
                        "nats-server WebSocket: the subscription ended after {n} of {messages} messages"
                    )));
                }
                Err(_) => {
                    return Err(BenchError(format!(
                        "nats-server WebSocket: {n} of {messages} messages arrived, then none for 10 s"
                    )));
                }
            }
        }
        Ok(first.map_or(Duration::ZERO, |f| f.elapsed()))
    };
    let send = async {
        for _ in 0..messages {
            publisher
                .publish("bench.relay", payload.clone())
                .await
                .map_err(setup_err)?;
        }
        publisher.flush().await.map_err(setup_err)
    };
    let (took, sent) = tokio::join!(receive, send);
    sent?;
    let took = took?;
    let cpu = cpu_time(nats.pid())?.saturating_sub(cpu_at_first);
    Ok(RelayRate::new(messages, took, cpu))
}

/// A node's reply transport to `requestid`, as the simulated fleet builds it.
fn reply_transport(requestid: &str, sender: &str, pong: &str) -> Transport {
    let body = RpcReply::new("ping", StatusCode::Ok, "OK", json!({"pong": pong}));
    let envelope = ReplyEnvelope {
        requestid: requestid.to_string(),
        senderid: sender.to_string(),
        agent: RELAY_AGENT.to_string(),
        time: Now::system().unix_seconds(),
    };
    let body = serde_json::to_string(&body).unwrap_or_default();
    let secure = SecureReply::new(Reply::new(body, envelope).encode_string());
    let headers = TransportHeaders {
        mc_sender: Some(sender.to_string()),
        ..TransportHeaders::default()
    };
    Transport::new(secure.encode(), headers)
}
