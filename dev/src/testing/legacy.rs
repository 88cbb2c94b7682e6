//! A real legacy MCollective site for tests ([`fedgate::legacy::site::LegacySite`]), in a
//! temporary folder and a vhost of its own per test.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fedgate::security::legacy::{LegacySigner, LegacyVerifier, NewLegacyRequest};
use fedgate::wire::mcollective::envelope::LegacyReply;
use fedgate::wire::mcollective::{Ruby, Serializer};

static SITES: AtomicUsize = AtomicUsize::new(0);

/// A site whose folder lives as long as it does.
pub struct LegacySite {
    site: fedgate::legacy::site::LegacySite,
    _dir: tempfile::TempDir,
}

impl LegacySite {
    /// A site with its own vhost, `/fedgate-t-<pid>-<n>`.
    pub async fn new(serializer: Serializer) -> LegacySite {
        let n = SITES.fetch_add(1, Ordering::Relaxed);
        let vhost = format!("/fedgate-t-{}-{n}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let site = fedgate::legacy::site::LegacySite::create(dir.path(), &vhost, serializer)
            .await
            .unwrap();
        LegacySite { site, _dir: dir }
    }

    /// Starts a node, or fails the test.
    pub fn start_node(&mut self, identity: &str, facts: &str) {
        self.site.start_node(identity, facts).unwrap();
    }

    /// Starts a node with its own classes, or fails the test.
    pub fn start_node_with_classes(&mut self, identity: &str, facts: &str, classes: &[&str]) {
        self.site
            .start_node_with_classes(identity, facts, Some(classes))
            .unwrap();
    }

    /// Runs the real `mco` client with `args`.
    pub fn mco(&self, args: &[&str]) -> std::process::Output {
        self.site
            .mco_command(args)
            .output()
            .expect("mco (scripts/setup-deps installs mcollective-client)")
    }
}

impl Deref for LegacySite {
    type Target = fedgate::legacy::site::LegacySite;
    fn deref(&self) -> &Self::Target {
        &self.site
    }
}

impl DerefMut for LegacySite {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.site
    }
}

/// A client of the site's broker with a reply queue of its own.
pub struct Publisher {
    _connection: lapin::Connection,
    /// The channel, in confirm mode.
    pub channel: lapin::Channel,
    /// Its private reply queue.
    pub reply_to: String,
}

impl Publisher {
    /// A publisher on `site`'s broker.
    pub async fn new(site: &LegacySite) -> Publisher {
        Publisher::connect(&site.amqp_url()).await
    }

    /// A publisher on the broker at `amqp`.
    pub async fn connect(amqp: &str) -> Publisher {
        let connection = lapin::Connection::connect(amqp, lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .unwrap();
        // Exclusive but not auto-delete (unlike `legacy::declare_private_queue`): a test may
        // consume the replies, drop the consumer and consume again, and an auto-delete queue
        // goes with its last consumer.
        let queue = channel
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
        Publisher {
            reply_to: queue.name().as_str().to_string(),
            _connection: connection,
            channel,
        }
    }

    /// Consumes the reply queue (without acknowledgements, as `mco` reads replies).
    pub async fn replies(&self) -> lapin::Consumer {
        fedgate::legacy::consume_unacked(&self.channel, &self.reply_to, "replies")
            .await
            .unwrap()
    }

    /// Publishes to `exchange` with `key`, as mco does.
    pub async fn publish(&self, (exchange, key): (&str, &str), bytes: &[u8]) {
        let properties = lapin::BasicProperties::default()
            .with_reply_to(self.reply_to.as_str().into())
            .with_expiration("70000".into());
        self.channel
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
}

/// A `fedgate run` config bridging `site` (through `amqp`) into london, with `legacy_extra`
/// in its `[legacy.oldsite]`.
pub fn write_bridge_config(
    dir: &std::path::Path,
    site: &LegacySite,
    london: &super::Network,
    amqp: &str,
    legacy_extra: &str,
) -> std::path::PathBuf {
    let rules = dir.join("identity.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nfrom = \"oldsite\"\nto = [\"london\"]\nglob = \"cert=*\"\nas = \"choria=$1.mcollective\"\n",
    )
    .unwrap();
    let legacy = site
        .config_block(
            "oldsite",
            &format!("{legacy_extra}\nbridge = {{ collective = \"london\", refresh_s = 5 }}"),
        )
        .replace(&site.amqp_url(), amqp);
    let text = format!(
        "[instance]\nname = \"bridge1\"\n\n[identity]\nrules = {rules:?}\n\n{}{}{legacy}",
        super::gate_block(
            dir,
            &[(
                "rpcutil.policy",
                "policy default deny\nallow\tchoria=alice.mcollective\tping\t*\t*\n"
            )],
            ""
        ),
        super::collective_block("collectives.london", london),
    );
    let path = dir.join("fedgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A signed `rpcutil ping` from alice, as the Marshal mco sends it.
pub fn ping(signer: &LegacySigner, (msgtime, ttl): (i64, i64), requestid: &str) -> Vec<u8> {
    let msg = Ruby::Hash(vec![
        (Ruby::sym("agent"), Ruby::str("rpcutil")),
        (Ruby::sym("action"), Ruby::str("ping")),
        (Ruby::sym("data"), Ruby::Hash(Vec::new())),
    ]);
    let new = NewLegacyRequest {
        msg,
        senderid: "client.example.net",
        requestid,
        filter: fedgate::legacy::legacy_filter(&Default::default(), "rpcutil").unwrap(),
        collective: "mcollective",
        agent: "rpcutil",
        ttl,
        msgtime,
    };
    signer
        .sign_request(Serializer::Marshal, &new)
        .unwrap()
        .encode(Serializer::Marshal)
}

/// Publishes `bytes` as mco does: to the broadcast exchange for rpcutil, replies to the
/// publisher's queue, expiring in the broker `(ttl + 10) * 1000` ms after.
pub async fn send(publisher: &Publisher, bytes: &[u8], ttl: i64) {
    let properties = lapin::BasicProperties::default()
        .with_reply_to(publisher.reply_to.as_str().into())
        .with_expiration(((ttl + 10) * 1000).to_string().into());
    publisher
        .channel
        .basic_publish(
            "mcollective_broadcast".into(),
            "rpcutil".into(),
            lapin::options::BasicPublishOptions::default(),
            bytes,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Replies by request id as (sender, statuscode, statusmsg), each verified with the servers'
/// key, until none has come for `quiet` or `done` holds.
pub async fn collect_replies(
    site: &LegacySite,
    publisher: &Publisher,
    quiet: Duration,
    done: impl Fn(&BTreeMap<String, Vec<(String, i64, String)>>) -> bool,
) -> BTreeMap<String, Vec<(String, i64, String)>> {
    let verifier =
        LegacyVerifier::new(&site.key("clients"), &site.key("server-public.pem"), 30).unwrap();
    let mut consumer = publisher.replies().await;
    let mut replies: BTreeMap<String, Vec<(String, i64, String)>> = BTreeMap::new();
    while !done(&replies) {
        let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(quiet, futures::StreamExt::next(&mut consumer)).await
        else {
            break;
        };
        let reply = LegacyReply::decode(Serializer::Marshal, &delivery.data, 1 << 20).unwrap();
        verifier
            .verify_reply(&reply)
            .expect("signed by the servers' key");
        let body = reply.reply_body(Serializer::Marshal).unwrap();
        let event = fedgate::legacy::translate(&reply.senderid, &body, Duration::ZERO);
        replies.entry(reply.requestid).or_default().push((
            reply.senderid,
            event.statuscode,
            event.statusmsg,
        ));
    }
    let _ = publisher
        .channel
        .basic_cancel("replies".into(), Default::default())
        .await;
    replies
}
