//! The soak's setting: a dev PKI, the prod and london networks, the simulated fleet, the legacy
//! collective's exchanges on RabbitMQ, and the config of the `fedgate run` under test.

use std::path::{Path, PathBuf};

use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};

use super::SoakOptions;
use crate::bench::{BenchError, setup_err};
use crate::devpki::{self, DevPki, DevPkiOptions, RealmPki};
use crate::natsd::{NatsServer, NatsServerConfig};
use fedgate::edge::auth::TokenKeys;
use fedgate::nats::NatsEndpoint;

/// The networks, the fleet and the files of the soak.
pub(super) struct Topology {
    pub(super) pki: DevPki,
    pub(super) prod: NatsServer,
    _london: NatsServer,
    _fleet: crate::fleet::Fleet,
    pub(super) config: PathBuf,
    pub(super) token_key: PathBuf,
    pub(super) legacy_keys: PathBuf,
    pub(super) collective: String,
    amqp: Connection,
}

pub(super) fn realm<'a>(pki: &'a DevPki, name: &str) -> Result<&'a RealmPki, BenchError> {
    pki.realm(name)
        .ok_or_else(|| BenchError(format!("no {name} realm")))
}

pub(super) fn endpoint(
    server: &NatsServer,
    realm: &RealmPki,
    pair: &devpki::CertPair,
) -> NatsEndpoint {
    NatsEndpoint {
        urls: vec![server.url().to_string()],
        ca: Some(realm.ca.clone()),
        identity: Some((pair.cert.clone(), pair.key.clone())),
        auth: None,
    }
}

impl Topology {
    pub(super) async fn start(dir: &Path, options: &SoakOptions) -> Result<Topology, BenchError> {
        let pki =
            devpki::generate(&dir.join("pki"), &DevPkiOptions::default()).map_err(setup_err)?;
        let start = |name: &str| {
            let realm = realm(&pki, name)?;
            NatsServer::start(
                &dir.join(format!("nats-{name}")),
                NatsServerConfig {
                    name: format!("soak-{name}"),
                    tls: Some(realm.nats_tls()),
                    ..NatsServerConfig::default()
                },
            )
            .map_err(setup_err)
        };
        let (prod, london) = (start("prod")?, start("london")?);
        let london_pki = realm(&pki, "london")?;
        let fleet_pair = london_pki
            .fleet
            .as_ref()
            .ok_or_else(|| BenchError("no fleet identity".into()))?;
        let fleet_client =
            fedgate::nats::connect(&endpoint(&london, london_pki, fleet_pair), "soak-fleet")
                .await
                .map_err(setup_err)?;
        let fleet = crate::bench::start_fleet(&pki, fleet_client, options.nodes).await?;

        let legacy_keys = dir.join("legacy");
        crate::bench::legacy::write_keys(&legacy_keys)?;
        let collective = format!("fgsoak{}", std::process::id());
        let amqp = Connection::connect(&options.amqp, ConnectionProperties::default())
            .await
            .map_err(setup_err)?;
        declare_exchanges(&amqp, &collective).await?;
        let (config, token_key) = write_config(
            dir,
            &pki,
            &prod,
            &london,
            &options.amqp,
            &collective,
            &legacy_keys,
        )?;
        Ok(Topology {
            pki,
            prod,
            _london: london,
            _fleet: fleet,
            config,
            token_key,
            legacy_keys,
            collective,
            amqp,
        })
    }

    pub(super) async fn stop(self) {
        if let Ok(channel) = self.amqp.create_channel().await {
            for suffix in ["broadcast", "directed"] {
                let _ = channel
                    .exchange_delete(
                        format!("{}_{suffix}", self.collective).as_str().into(),
                        ExchangeDeleteOptions::default(),
                    )
                    .await;
            }
            let _ = channel
                .queue_delete(
                    format!("{}.requests", self.collective).as_str().into(),
                    Default::default(),
                )
                .await;
            let _ = channel.close(200, "done".into()).await;
        }
        let _ = self.amqp.close(200, "done".into()).await;
    }
}

fn write_config(
    dir: &Path,
    pki: &DevPki,
    prod: &NatsServer,
    london: &NatsServer,
    amqp: &str,
    collective: &str,
    keys: &Path,
) -> Result<(PathBuf, PathBuf), BenchError> {
    let (prod_pki, london_pki) = (realm(pki, "prod")?, realm(pki, "london")?);
    let privileged = london_pki
        .privileged
        .as_ref()
        .ok_or_else(|| BenchError("no privileged signer".into()))?;
    let write = |name: &str, text: &str| crate::bench::write_file(dir, name, text);
    let token_key = write("token.key", &TokenKeys::generate_pem().map_err(setup_err)?)?;
    let rules = write(
        "identity.toml",
        "[[rule]]\nfrom = \"prod\"\nto = [\"london\"]\nglob = \"choria=*.mcollective\"\nas = \"$0\"\n\n\
         [[rule]]\nfrom = \"edge\"\nto = [\"london\"]\nglob = \"up=*\"\nas = \"choria=$1.mcollective\"\n\n\
         [[rule]]\nfrom = \"oldsite\"\nto = [\"london\"]\nglob = \"cert=*\"\nas = \"choria=$1.mcollective\"\n",
    )?;
    write("policies/default.policy", "policy default allow\n")?;
    std::fs::create_dir_all(dir.join("audit")).map_err(setup_err)?;
    let network = |table: &str, server: &NatsServer, realm: &RealmPki| {
        format!(
            "[{table}]\nnats = [{:?}]\nca = {:?}\ntls = {{ certificate = {:?}, key = {:?} }}\n",
            server.url(),
            realm.ca,
            realm.fedgate.cert,
            realm.fedgate.key
        )
    };
    let config = write(
        "fedgate.toml",
        &format!(
            "[instance]\nname = \"soak\"\n\n[identity]\nrules = {rules:?}\n\n\
             [policy]\ndir = {:?}\n\n[audit]\nfile = {:?}\n\n{}\n{}\
             signer = {{ certificate = {:?}, key = {:?} }}\n\n\
             [edge]\nlisten = \"127.0.0.1:0\"\ntoken_key = {token_key:?}\n\n\
             [legacy.oldsite]\namqp = {amqp:?}\ncollective = {collective:?}\nserver_public = {:?}\n\
             server_private = {:?}\nclient_keys = {:?}\nsigners = {:?}\n\
             bridge = {{ collective = \"london\", agents = [\"rpcutil\"], refresh_s = 3600, queue = \"{collective}.requests\" }}\n",
            dir.join("policies"),
            dir.join("audit/audit.log"),
            network("federations.prod", prod, prod_pki),
            network("federations.prod.collectives.london", london, london_pki),
            privileged.cert,
            privileged.key,
            keys.join("server-public.pem"),
            keys.join("server-private.pem"),
            keys.join("clients"),
            keys.join("signers"),
        ),
    )?;
    Ok((config, token_key))
}

/// The legacy collective's broadcast and directed exchanges, as MCollective's RabbitMQ
/// connector expects them.
async fn declare_exchanges(amqp: &Connection, collective: &str) -> Result<(), BenchError> {
    let channel = amqp.create_channel().await.map_err(setup_err)?;
    for (suffix, kind) in [
        ("broadcast", ExchangeKind::Topic),
        ("directed", ExchangeKind::Direct),
    ] {
        channel
            .exchange_declare(
                format!("{collective}_{suffix}").as_str().into(),
                kind,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(setup_err)?;
    }
    channel.close(200, "done".into()).await.map_err(setup_err)?;
    Ok(())
}
