//! The legacy side's client: MCollective requests signed with an RSA key, published on
//! RabbitMQ, with replies counted per request.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::sync::oneshot;

use super::REQUEST_TIMEOUT;
use crate::bench::{BenchError, setup_err};
use fedgate::security::Now;
use fedgate::security::legacy::{LegacySigner, NewLegacyRequest};
use fedgate::wire::mcollective::envelope::LegacyReply;
use fedgate::wire::mcollective::{Ruby, Serializer};

/// Legacy requests waiting for replies: replies still to come, and whom to tell when none are.
type Waiting = HashMap<String, (usize, oneshot::Sender<()>)>;

/// A legacy MCollective client: signs requests with its RSA key, publishes them on the
/// collective's broadcast exchange and matches replies on its private queue by request id.
pub(super) struct LegacyClient {
    signer: LegacySigner,
    channel: lapin::Channel,
    connection: Connection,
    collective: String,
    reply_to: String,
    waiting: Arc<Mutex<Waiting>>,
    reader: tokio::task::JoinHandle<()>,
}

impl LegacyClient {
    pub(super) async fn connect(
        amqp: &str,
        collective: &str,
        key: &Path,
    ) -> Result<LegacyClient, BenchError> {
        let connection = Connection::connect(amqp, ConnectionProperties::default())
            .await
            .map_err(setup_err)?;
        let channel = connection.create_channel().await.map_err(setup_err)?;
        let queue = fedgate::legacy::declare_private_queue(&channel, "")
            .await
            .map_err(setup_err)?;
        let reply_to = queue.name().as_str().to_string();
        let mut replies = fedgate::legacy::consume_unacked(&channel, &reply_to, "soak")
            .await
            .map_err(setup_err)?;
        let waiting: Arc<Mutex<Waiting>> = Arc::default();
        let reader = {
            let waiting = waiting.clone();
            tokio::spawn(async move {
                while let Some(Ok(delivery)) = replies.next().await {
                    let Ok(reply) =
                        LegacyReply::decode(Serializer::Marshal, &delivery.data, 1 << 20)
                    else {
                        continue;
                    };
                    let mut waiting = waiting.lock().unwrap_or_else(|p| p.into_inner());
                    let finished = match waiting.get_mut(&reply.requestid) {
                        Some((left, _)) => {
                            *left = left.saturating_sub(1);
                            *left == 0
                        }
                        None => false,
                    };
                    if finished && let Some((_, done)) = waiting.remove(&reply.requestid) {
                        let _ = done.send(());
                    }
                }
            })
        };
        Ok(LegacyClient {
            signer: LegacySigner::from_file(key, "alice").map_err(setup_err)?,
            channel,
            connection,
            collective: collective.to_string(),
            reply_to,
            waiting,
            reader,
        })
    }

    pub(super) async fn ping(&self, n: u64, nodes: usize) -> Result<(), String> {
        let requestid = format!("{:016x}{n:016x}", std::process::id());
        let filter = fedgate::legacy::legacy_filter(&Default::default(), "rpcutil")?;
        let msg = Ruby::Hash(vec![
            (Ruby::sym("agent"), Ruby::str("rpcutil")),
            (Ruby::sym("action"), Ruby::str("ping")),
            // The signed body must differ between requests, or the second of two in one
            // second is a replay of the first.
            (
                Ruby::sym("data"),
                Ruby::Hash(vec![(Ruby::sym("n"), Ruby::Int(n as i64))]),
            ),
        ]);
        let request = self
            .signer
            .sign_request(
                Serializer::Marshal,
                &NewLegacyRequest {
                    msg,
                    senderid: "soak.example.net",
                    requestid: &requestid,
                    filter,
                    collective: &self.collective,
                    agent: "rpcutil",
                    ttl: 60,
                    msgtime: Now::system().unix_seconds(),
                },
            )
            .map_err(|e| e.to_string())?;
        let (done, answered) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(requestid.clone(), (nodes, done));
        let published = self
            .channel
            .basic_publish(
                format!("{}_broadcast", self.collective).as_str().into(),
                "rpcutil".into(),
                BasicPublishOptions::default(),
                &request.encode(Serializer::Marshal),
                BasicProperties::default()
                    .with_reply_to(self.reply_to.as_str().into())
                    .with_expiration("60000".into()),
            )
            .await;
        let outcome = match published {
            Err(err) => Err(format!("publish: {err}")),
            Ok(_) => match tokio::time::timeout(REQUEST_TIMEOUT, answered).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(format!("not every one of {nodes} nodes answered")),
            },
        };
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&requestid);
        outcome
    }

    pub(super) async fn close(&self) {
        self.reader.abort();
        let _ = self.channel.close(200, "done".into()).await;
        let _ = self.connection.close(200, "done".into()).await;
    }
}
