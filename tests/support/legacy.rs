//! A real legacy MCollective site for tests ([`fedgate::legacy::site::LegacySite`]), in a
//! temporary folder and a vhost of its own per test.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};

use fedgate::wire::mcollective::Serializer;

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
    pub reply_to: String,
}

impl Publisher {
    pub async fn new(site: &LegacySite) -> Publisher {
        let connection =
            lapin::Connection::connect(&site.amqp_url(), lapin::ConnectionProperties::default())
                .await
                .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .unwrap();
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
