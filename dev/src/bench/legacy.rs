//! Legacy MCollective requests bridged to Choria, per second, next to a raw AMQP round trip on
//! the same broker and next to the signing ceiling of the path.
//!
//! A bridged request costs fedgate a SHA-1 signature check (the legacy caller), a re-signature
//! with its privileged key (aws-lc-rs, SHA-256), and a SHA-1 signature per reply (OpenSSL, the
//! servers' key); the simulated node verifies and answers in the same process. The raw baseline
//! moves a message of the same size through RabbitMQ to a responder and back, with no crypto.
//! Both run with the same number of requests in flight against the local RabbitMQ
//! (`amqp://guest:guest@127.0.0.1:5672/%2F`, exchanges named for this run and deleted after).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicPublishOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

use super::{BenchError, Row, row, setup_err};
use crate::devpki;
use fedgate::config::Config;
use fedgate::legacy::ingress::Ingress;
use fedgate::legacy::{consume_unacked, declare_private_queue};
use fedgate::security::legacy::{LegacySigner, NewLegacyRequest};
use fedgate::security::{Now, Signer};
use fedgate::wire::mcollective::{Ruby, Serializer};

/// How much to measure.
#[derive(Clone, Debug)]
pub struct LegacyOptions {
    /// Requests per side.
    pub requests: usize,
    /// Requests in flight.
    pub window: usize,
    /// The broker.
    pub amqp: String,
}

impl Default for LegacyOptions {
    fn default() -> Self {
        LegacyOptions {
            requests: 2_000,
            window: 64,
            amqp: "amqp://guest:guest@127.0.0.1:5672/%2F".into(),
        }
    }
}

/// Runs the benchmark with its files under `work_dir`.
pub async fn run(work_dir: &Path, options: &LegacyOptions) -> Result<Vec<Row>, BenchError> {
    let (pki, nats) = super::tls_collective(work_dir, false)?;
    let london = pki
        .realm("london")
        .ok_or_else(|| BenchError("no london realm".into()))?;
    let _fleet = super::fleet_on(&pki, &nats, 1).await?;

    let keys = work_dir.join("legacy");
    write_keys(&keys)?;

    let collective = format!("fgbench{}", std::process::id());
    let connection = Connection::connect(&options.amqp, ConnectionProperties::default())
        .await
        .map_err(setup_err)?;
    let channel = connection.create_channel().await.map_err(setup_err)?;
    declare_exchanges(&channel, &collective).await?;
    let privileged = london
        .privileged
        .as_ref()
        .ok_or_else(|| BenchError("no privileged signer".into()))?;
    let config_path = write_config(
        work_dir,
        options,
        nats.url(),
        london,
        privileged,
        &collective,
    )?;
    let ingress = start_ingress(&config_path).await?;

    let bridged_payloads = bridged_payloads(&keys, &collective, options.requests)?;
    let size = bridged_payloads.first().map_or(0, Vec::len);
    // The raw baseline: a responder that answers every message with one of the same size.
    let responding = raw_responder(&connection, &channel, &collective).await?;
    let raw_payloads: Vec<Vec<u8>> = (0..options.requests).map(|_| vec![b'x'; size]).collect();

    let raw = round_trips(
        &connection,
        &collective,
        "raw",
        &raw_payloads,
        options.window,
    )
    .await?;
    let bridged = round_trips(
        &connection,
        &collective,
        "rpcutil",
        &bridged_payloads,
        options.window,
    )
    .await?;
    responding.abort();
    ingress.shutdown(Duration::from_secs(2)).await;
    let ceiling = signing_ceiling(privileged, &keys.join("server-private.pem"))?;
    clean_up(connection, &channel, &collective).await;
    Ok(rows(size, options.window, raw, bridged, ceiling))
}

/// The bridged rate next to the raw round trip, and next to the signing ceiling.
fn rows(size: usize, window: usize, raw: f64, bridged: f64, ceiling: f64) -> Vec<Row> {
    let name = format!("legacy requests bridged/s ({size} B marshal, {window} in flight)");
    vec![
        row(
            name.clone(),
            "raw AMQP publish, consume, reply",
            (raw, bridged),
        ),
        row(
            name,
            "signing ceiling: aws-lc-rs RSA-2048 SHA-256 + OpenSSL SHA-1 per request",
            (ceiling, bridged),
        ),
    ]
}

/// The queue the bridge consumes requests from.
fn requests_queue(collective: &str) -> String {
    format!("{collective}.requests")
}

/// The collective's `_broadcast` and `_directed` exchanges, deleted when unused.
async fn declare_exchanges(channel: &lapin::Channel, collective: &str) -> Result<(), BenchError> {
    for (suffix, kind) in [
        ("broadcast", ExchangeKind::Topic),
        ("directed", ExchangeKind::Direct),
    ] {
        channel
            .exchange_declare(
                format!("{collective}_{suffix}").as_str().into(),
                kind,
                ExchangeDeclareOptions {
                    auto_delete: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(setup_err)?;
    }
    Ok(())
}

/// Writes the identity rules, an allow-all policy and a config that bridges the legacy
/// collective `oldsite` to london; gives back the config's path.
fn write_config(
    work_dir: &Path,
    options: &LegacyOptions,
    nats: &str,
    london: &devpki::RealmPki,
    privileged: &devpki::CertPair,
    collective: &str,
) -> Result<std::path::PathBuf, BenchError> {
    let keys = work_dir.join("legacy");
    let rules = work_dir.join("identity.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nfrom = \"oldsite\"\nto = [\"london\"]\nglob = \"cert=*\"\nas = \"choria=$1.mcollective\"\n",
    )
    .map_err(setup_err)?;
    std::fs::create_dir_all(work_dir.join("policies")).map_err(setup_err)?;
    std::fs::write(
        work_dir.join("policies/default.policy"),
        "policy default allow\n",
    )
    .map_err(setup_err)?;
    let config_path = work_dir.join("fedgate.toml");
    let queue = requests_queue(collective);
    std::fs::write(
        &config_path,
        format!(
            "[instance]\nname = \"bench\"\n\n[identity]\nrules = {rules:?}\n\n\
             [policy]\ndir = {:?}\n\n[audit]\nfile = {:?}\n\n\
             [collectives.london]\nnats = [{:?}]\nca = {:?}\ntls = {{ certificate = {:?}, key = {:?} }}\n\
             signer = {{ certificate = {:?}, key = {:?} }}\n\n\
             [legacy.oldsite]\namqp = {:?}\ncollective = {collective:?}\nserver_public = {:?}\n\
             server_private = {:?}\nclient_keys = {:?}\nsigners = {:?}\n\
             bridge = {{ collective = \"london\", agents = [\"rpcutil\"], prefetch = {}, refresh_s = 3600, queue = {queue:?} }}\n",
            work_dir.join("policies"),
            work_dir.join("audit.log"),
            nats,
            london.ca,
            london.fedgate.cert,
            london.fedgate.key,
            privileged.cert,
            privileged.key,
            options.amqp,
            keys.join("server-public.pem"),
            keys.join("server-private.pem"),
            keys.join("clients"),
            keys.join("signers"),
            options.window.min(u16::MAX as usize),
        ),
    )
    .map_err(setup_err)?;
    Ok(config_path)
}

/// The bridge of `oldsite`, with its own gate, as `fedgate run` starts it.
async fn start_ingress(config_path: &Path) -> Result<Ingress, BenchError> {
    let config = Config::load(config_path).map_err(setup_err)?;
    let gate = fedgate::gateway::open_gate(&config, "edge", "bench")
        .await
        .map_err(setup_err)?;
    Ingress::start(&config, "oldsite", gate, "bench")
        .await
        .map_err(setup_err)
}

/// `requests` encoded `rpcutil.ping` requests signed by the legacy client alice.
fn bridged_payloads(
    keys: &Path,
    collective: &str,
    requests: usize,
) -> Result<Vec<Vec<u8>>, BenchError> {
    let alice =
        LegacySigner::from_file(&keys.join("alice-private.pem"), "alice").map_err(setup_err)?;
    let now = Now::system().unix_seconds();
    let filter =
        fedgate::legacy::legacy_filter(&Default::default(), "rpcutil").map_err(setup_err)?;
    let mut payloads = Vec::with_capacity(requests);
    for n in 0..requests {
        let requestid = format!("{n:032x}");
        let msg = Ruby::Hash(vec![
            (Ruby::sym("agent"), Ruby::str("rpcutil")),
            (Ruby::sym("action"), Ruby::str("ping")),
            (
                Ruby::sym("data"),
                Ruby::Hash(vec![(Ruby::sym("n"), Ruby::Int(n as i64))]),
            ),
        ]);
        let request = alice
            .sign_request(
                Serializer::Marshal,
                &NewLegacyRequest {
                    msg,
                    senderid: "bench.example.net",
                    requestid: &requestid,
                    filter: filter.clone(),
                    collective,
                    agent: "rpcutil",
                    ttl: 600,
                    msgtime: now,
                },
            )
            .map_err(setup_err)?;
        payloads.push(request.encode(Serializer::Marshal));
    }
    Ok(payloads)
}

/// A responder on the routing key `raw` of the broadcast exchange that sends every message
/// back to its `reply_to`.
async fn raw_responder(
    connection: &Connection,
    channel: &lapin::Channel,
    collective: &str,
) -> Result<tokio::task::JoinHandle<()>, BenchError> {
    let raw_queue = format!("{collective}.raw");
    channel
        .queue_declare(
            raw_queue.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(setup_err)?;
    channel
        .queue_bind(
            raw_queue.as_str().into(),
            format!("{collective}_broadcast").as_str().into(),
            "raw".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(setup_err)?;
    let responder = connection.create_channel().await.map_err(setup_err)?;
    let mut raw_consumer = consume_unacked(&responder, &raw_queue, "responder")
        .await
        .map_err(setup_err)?;
    Ok(tokio::spawn(async move {
        while let Some(Ok(delivery)) = raw_consumer.next().await {
            let Some(reply_to) = delivery.properties.reply_to().clone() else {
                continue;
            };
            let _ = responder
                .basic_publish(
                    "".into(),
                    reply_to.as_str().into(),
                    BasicPublishOptions::default(),
                    &delivery.data,
                    BasicProperties::default(),
                )
                .await;
        }
    }))
}

/// Deletes the run's exchanges and the bridge's queue, and closes the connection.
async fn clean_up(connection: Connection, channel: &lapin::Channel, collective: &str) {
    for suffix in ["broadcast", "directed"] {
        let _ = channel
            .exchange_delete(
                format!("{collective}_{suffix}").as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }
    let _ = channel
        .queue_delete(
            requests_queue(collective).as_str().into(),
            Default::default(),
        )
        .await;
    let _ = connection.close(200, "done".into()).await;
}

/// Legacy keys under `keys`: the servers' pair (`server-{private,public}.pem`) and the client
/// alice (`alice-private.pem`, `clients/alice.pem`), with an empty `signers` directory.
pub(crate) fn write_keys(keys: &Path) -> Result<(), BenchError> {
    for sub in ["clients", "signers"] {
        std::fs::create_dir_all(keys.join(sub)).map_err(setup_err)?;
    }
    for (name, public) in [
        ("server", "server-public.pem"),
        ("alice", "clients/alice.pem"),
    ] {
        let key = openssl::rsa::Rsa::generate(2048).map_err(setup_err)?;
        let private_pem = key.private_key_to_pem().map_err(setup_err)?;
        std::fs::write(keys.join(format!("{name}-private.pem")), private_pem).map_err(setup_err)?;
        let public_pem = key.public_key_to_pem().map_err(setup_err)?;
        std::fs::write(keys.join(public), public_pem).map_err(setup_err)?;
    }
    Ok(())
}

/// Requests per second: publish `payloads` with `window` in flight, each done at its first reply.
async fn round_trips(
    connection: &Connection,
    collective: &str,
    routing_key: &str,
    payloads: &[Vec<u8>],
    window: usize,
) -> Result<f64, BenchError> {
    let channel = connection.create_channel().await.map_err(setup_err)?;
    let queue = declare_private_queue(&channel, "")
        .await
        .map_err(setup_err)?;
    let reply_to = queue.name().as_str().to_string();
    let mut replies = consume_unacked(&channel, &reply_to, "bench")
        .await
        .map_err(setup_err)?;
    let credits = Arc::new(tokio::sync::Semaphore::new(window.max(1)));
    let exchange = format!("{collective}_broadcast");
    let started = Instant::now();
    let send = async {
        for payload in payloads {
            credits.acquire().await.map_err(setup_err)?.forget();
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    payload,
                    BasicProperties::default()
                        .with_reply_to(reply_to.as_str().into())
                        .with_expiration("600000".into()),
                )
                .await
                .map_err(setup_err)?;
        }
        Ok::<_, BenchError>(())
    };
    let receive = async {
        for n in 0..payloads.len() {
            match tokio::time::timeout(Duration::from_secs(30), replies.next()).await {
                Ok(Some(Ok(_))) => credits.add_permits(1),
                _ => {
                    return Err(BenchError(format!(
                        "{routing_key}: {n} of {} answered, then none for 30 s",
                        payloads.len()
                    )));
                }
            }
        }
        Ok(started.elapsed())
    };
    let (sent, took) = tokio::join!(send, receive);
    sent?;
    let took = took?;
    let _ = channel.close(200, "done".into()).await;
    Ok(payloads.len() as f64 / took.as_secs_f64())
}

/// Requests per second that the two signatures of a bridged request allow on one core.
fn signing_ceiling(privileged: &devpki::CertPair, server_key: &Path) -> Result<f64, BenchError> {
    let signer = Signer::from_files(&privileged.cert, &privileged.key).map_err(setup_err)?;
    let legacy = LegacySigner::from_file(server_key, "server").map_err(setup_err)?;
    let body = vec![b'x'; 512];
    let per_second = |op: &mut dyn FnMut() -> bool| -> Result<f64, BenchError> {
        let started = Instant::now();
        let mut n = 0u32;
        while started.elapsed() < Duration::from_secs(1) {
            if !op() {
                return Err(BenchError("signing failed".into()));
            }
            n += 1;
        }
        Ok(f64::from(n) / started.elapsed().as_secs_f64())
    };
    let choria = per_second(&mut || signer.sign(&body).is_ok())?;
    let sha1 = per_second(&mut || legacy.sign(&body).is_ok())?;
    Ok(1.0 / (1.0 / choria + 1.0 / sha1))
}
