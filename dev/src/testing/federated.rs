//! Federated requests as a federation client sends them in resign mode: signed by a realm's
//! user, sent to `<federation>` ingest with a federation header, and the replies read back.

use std::time::Duration;

use crate::devpki::CertPair;
use fedgate::security::Signer;
use fedgate::subjects;
use fedgate::wire::Limits;
use fedgate::wire::choria_v1::{
    FederationHeader, Filter, Request, RequestEnvelope, SecureReply, SecureRequest, Transport,
    TransportHeaders,
};
use futures::StreamExt;
use serde_json::Value;

/// A request signed by `signer` with envelope agent `agent` and payload `message`.
#[derive(Clone)]
pub struct Signed {
    /// The signed request.
    pub secure: SecureRequest,
    /// Its request id.
    pub requestid: String,
    /// Its caller id.
    pub caller: String,
}

/// Signs a request to london by `signer`, `ttl` seconds long and made `age` seconds ago.
pub fn sign(signer: &CertPair, agent: &str, message: &str, ttl: i64, age: i64) -> Signed {
    let signer = Signer::from_files(&signer.cert, &signer.key).unwrap();
    let caller = format!("choria={}", signer.certname());
    let requestid = uuid::Uuid::new_v4().simple().to_string();
    let now = fedgate::security::Now::system().unix_seconds();
    let request = Request::new(
        message.to_string(),
        RequestEnvelope {
            requestid: requestid.clone(),
            senderid: "test-client".into(),
            callerid: caller.clone(),
            collective: "london".into(),
            agent: agent.into(),
            ttl,
            time: now - age,
            filter: Filter::default(),
        },
    );
    Signed {
        secure: signer.sign_request(&request).unwrap(),
        requestid,
        caller,
    }
}

/// An RPC body with no inputs.
pub fn rpc(agent: &str, action: &str) -> String {
    format!(r#"{{"agent":"{agent}","action":"{action}","data":{{}}}}"#)
}

/// What the client hears on a fresh reply subject after sending `signed` to `targets` with the
/// federation header's `req`: each reply's sender and body (JSON, or the text for discovery).
pub struct Sent {
    /// The reply subject's subscription.
    pub replies: async_nats::Subscriber,
}

/// Sends `signed` with the federation header's `req` to `targets`, and listens on a fresh reply
/// subject.
pub async fn send(
    client: &async_nats::Client,
    signed: &Signed,
    req: &str,
    targets: &[String],
) -> Sent {
    let reply_to = reply_subject(signed);
    let replies = client.subscribe(reply_to.clone()).await.unwrap();
    publish(client, signed, req, targets, &reply_to).await;
    Sent { replies }
}

/// A fresh reply subject for `signed`'s caller.
pub fn reply_subject(signed: &Signed) -> String {
    subjects::reply(
        "london",
        &signed.caller,
        &uuid::Uuid::new_v4().simple().to_string(),
    )
}

/// Publishes `signed` to the prod federation's ingest, its replies going to `reply_to`.
pub async fn publish(
    client: &async_nats::Client,
    signed: &Signed,
    req: &str,
    targets: &[String],
    reply_to: &str,
) {
    let headers = TransportHeaders {
        reply_to: Some(reply_to.to_string()),
        mc_sender: Some("test-client".into()),
        federation: Some(FederationHeader {
            req: Some(req.to_string()),
            reply_to: None,
            target: targets.to_vec(),
        }),
        ..TransportHeaders::default()
    };
    let transport = Transport::new(signed.secure.encode(), headers);
    client
        .publish(
            subjects::federation_ingest("prod"),
            transport.encode().into(),
        )
        .await
        .unwrap();
    client.flush().await.unwrap();
}

/// A reply as the client reads it: its sender and body (JSON, or the text for discovery).
pub fn read_reply(payload: &[u8]) -> (String, Value) {
    let limits = Limits::default();
    let transport = Transport::decode(payload, &limits).unwrap();
    let reply = SecureReply::decode(&transport.data, &limits)
        .unwrap()
        .reply(&limits)
        .unwrap();
    let body = serde_json::from_str(&reply.message).unwrap_or(Value::String(reply.message.clone()));
    (reply.envelope.senderid, body)
}

impl Sent {
    /// Replies until `count` arrived or `wait` passed since the last one.
    pub async fn collect(mut self, count: usize, wait: Duration) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while out.len() < count {
            let Ok(Some(message)) = tokio::time::timeout(wait, self.replies.next()).await else {
                break;
            };
            out.push(read_reply(&message.payload));
        }
        out
    }

    /// Nothing comes back: fedgate tells no one about a replay, since its reply subject is the
    /// replayer's choice.
    pub async fn unanswered(self) {
        let replies = self.collect(1, Duration::from_secs(2)).await;
        assert!(replies.is_empty(), "{replies:?}");
    }

    /// fedgate's refusal: its code, from the one reply it sends.
    pub async fn refusal(self) -> String {
        let replies = self.collect(1, Duration::from_secs(10)).await;
        let Some((sender, body)) = replies.first() else {
            panic!("no refusal reply");
        };
        assert!(sender.starts_with("fedgate:"), "{sender}: {body}");
        body["data"]["fedgate"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}
