//! The files `fedgate-dev demo` writes: identity rules, users, each instance's config (with the
//! edge on TLS with the edge CA) and the client config.

use std::path::{Path, PathBuf};

use anyhow::Context;
use fedgate::edge::auth::{TokenKeys, hash_password};
use fedgate::legacy::site::LegacySite;
use fedgate_dev::devpki::{DevPki, RealmPki};
use fedgate_dev::natsd::NatsServer;
use fedgate_dev::testing::v2::V2Org;

use super::{Args, LEGACY, OSAKA, Servers, USERS, realm};

const IDENTITY_RULES: &str = r#"# Written by `fedgate-dev demo`.
# Web users (up=<name>) act in every collective as <name>.mcollective (in osaka, which
# speaks Choria protocol v2, under a token fedgate issues them for each request).
[[rule]]
from = "edge"
to = ["london", "tokyo", "osaka"]
glob = "up=*"
as = "choria=$1.mcollective"

# Edge certificates (client certificates and signed requests) keep their Choria names.
[[rule]]
from = "edge"
to = ["london", "tokyo", "osaka"]
glob = "choria=*.mcollective"
as = "$0"

# Federation clients keep their Choria names.
[[rule]]
from = "prod"
to = ["london", "tokyo", "osaka"]
glob = "choria=*.mcollective"
as = "$0"
"#;

const LEGACY_RULES: &str = r#"
# The legacy site: alice reaches it from the web as the key fedgate holds (cert=fedgate); mco
# users reach the federation's collectives under their certificate's name; london's alice
# reaches it from Choria.
[[rule]]
from = "edge"
to = ["oldsite"]
caller = "up=alice"
as = "cert=fedgate"

[[rule]]
from = "oldsite"
to = ["london", "tokyo"]
glob = "cert=*"
as = "choria=$1.mcollective"

[[rule]]
from = "london"
to = ["oldsite"]
caller = "choria=alice.mcollective"
as = "cert=fedgate"
"#;

/// Paths every instance's config names.
pub(super) struct Files {
    pub(super) identity: PathBuf,
    pub(super) policies: PathBuf,
    pub(super) ddl: Option<PathBuf>,
    /// The page from disk (`--web-root`), instead of the console built into the binary.
    pub(super) web_root: Option<PathBuf>,
    /// Whether the edge serves a page at all.
    pub(super) page: bool,
    pub(super) token_key: PathBuf,
    pub(super) users: PathBuf,
    /// Simulated nodes in all.
    pub(super) nodes: usize,
}

impl Files {
    pub(super) fn prepare(dir: &Path, args: &Args, legacy: bool) -> anyhow::Result<Files> {
        let identity = dir.join("identity.toml");
        let mut rules = IDENTITY_RULES.to_string();
        if legacy {
            rules.push_str(LEGACY_RULES);
        }
        std::fs::write(&identity, rules)?;
        let policies = args
            .policies
            .canonicalize()
            .with_context(|| format!("the policies folder {}", args.policies.display()))?;
        let ddl = args.ddl.canonicalize().ok();
        let web_root = match &args.web_root {
            Some(root) if root.join("index.html").is_file() => Some(root.canonicalize()?),
            Some(root) => anyhow::bail!("no web page at {} (no index.html)", root.display()),
            None => None,
        };
        let page = web_root.is_some() || fedgate::edge::console::embedded();
        if !page {
            eprintln!(
                "fedgate-dev demo: this fedgate was built without the web console (scripts/setup-deps builds the page, then rebuild); the edge serves only its API"
            );
        }
        let token_key = dir.join("token.key");
        if !token_key.exists() {
            write_private(&token_key, TokenKeys::generate_pem()?.as_bytes())?;
        }
        let users = dir.join("users.toml");
        let mut text = String::from("# Written by `fedgate-dev demo`.\n");
        for (user, password) in USERS {
            text.push_str(&format!(
                "[users.{user}]\npassword = {:?}\n",
                hash_password(password)?
            ));
        }
        write_private(&users, text.as_bytes())?;
        Ok(Files {
            identity,
            policies,
            ddl,
            web_root,
            page,
            token_key,
            users,
            nodes: args.nodes,
        })
    }
}

/// The instance's checkpoint key (`<name>.checkpoint.key`, 0600, kept across runs as the trail
/// is) and its public half beside it (`.pub`), for `fedgate audit verify --key`.
fn checkpoint_key(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let key = dir.join(format!("{name}.checkpoint.key"));
    if !key.exists() {
        let (private, public) =
            fedgate::audit::checkpoint::generate().map_err(anyhow::Error::msg)?;
        write_private(&key, private.as_bytes())?;
        std::fs::write(dir.join(format!("{name}.checkpoint.key.pub")), public)?;
    }
    Ok(key)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

/// A network's table: URL, CA and fedgate's TLS identity there.
fn network(table: &str, server: &NatsServer, realm: &RealmPki, extra: &str) -> String {
    format!(
        "[{table}]\nnats = [{:?}]\nca = {:?}\ntls = {{ certificate = {:?}, key = {:?} }}\n{extra}\n",
        server.url(),
        realm.ca,
        realm.fedgate.cert,
        realm.fedgate.key
    )
}

/// The replay guard on the federation's JetStream, shared by both instances, and the DDLs every
/// call is checked against.
fn gateway_block(prod: &NatsServer, realm: &RealmPki, files: &Files) -> String {
    let mut block = format!(
        "[replay]\nnats = [{:?}]\nca = {:?}\ntls = {{ certificate = {:?}, key = {:?} }}\n\n",
        prod.url(),
        realm.ca,
        realm.fedgate.cert,
        realm.fedgate.key
    );
    if let Some(ddl) = &files.ddl {
        block.push_str(&format!("[ddl]\ndir = {ddl:?}\n\n"));
    }
    block
}

fn signer(realm: &RealmPki) -> anyhow::Result<String> {
    let pair = realm
        .privileged
        .as_ref()
        .with_context(|| format!("realm {} has no privileged certificate", realm.name))?;
    Ok(format!(
        "signer = {{ certificate = {:?}, key = {:?} }}\n",
        pair.cert, pair.key
    ))
}

/// The `[edge]` table: TLS with the edge realm's server certificate, client certificates and
/// signed requests checked against the edge CA, tokens and passwords for the web page.
fn edge_block(port: u16, files: &Files, edge: &RealmPki) -> String {
    // A browser reads a federation-wide broadcast slower than the fleet answers it: the
    // outbox holds every reply of one (about 200 bytes each), so a big demo fleet never trips
    // the slow-reader limit (4008).
    let queue = (files.nodes * 2).max(16_384);
    // The fleet runs on the same cores and answers a broadcast faster than the edge passes it
    // on, so the edge's NATS client may have to hold every reply of one for a moment.
    let replies = files.nodes.clamp(262_144, 16 << 20);
    let mut block = format!(
        "[edge]\nlisten = \"127.0.0.1:{port}\"\nca = {:?}\n\
         tls = {{ certificate = {:?}, key = {:?} }}\ntoken_key = {:?}\nusers = {:?}\n\
         origins = [\"https://127.0.0.1:{port}\", \"https://localhost:{port}\"]\n\
         auditors = [\"up=alice\"]\noutbound_queue = {queue}\noutbound_queue_bytes = {}\n\
         reply_buffer = {replies}\n",
        edge.ca,
        edge.server.cert,
        edge.server.key,
        files.token_key,
        files.users,
        (queue * 512).max(8 << 20),
    );
    if let Some(root) = &files.web_root {
        block.push_str(&format!("web_root = {root:?}\n"));
    }
    if let Some(ddl) = &files.ddl {
        block.push_str(&format!("ddl_dir = {ddl:?}\n"));
    }
    block
}

#[allow(clippy::too_many_arguments)]
pub(super) fn write_instance_config(
    dir: &Path,
    name: &str,
    port: u16,
    files: &Files,
    pki: &DevPki,
    servers: &Servers,
    osaka: &V2Org,
    legacy: Option<&LegacySite>,
) -> anyhow::Result<PathBuf> {
    let (prod, london, tokyo) = (
        realm(pki, "prod")?,
        realm(pki, "london")?,
        realm(pki, "tokyo")?,
    );
    std::fs::create_dir_all(dir.join("audit"))?;
    let checkpoint_key = checkpoint_key(dir, name)?;
    let edge = edge_block(port, files, realm(pki, "edge")?);
    let text = format!(
        "# Written by `fedgate-dev demo` for instance {name}.\n\
         [instance]\nname = {name:?}\nstats_interval = 2\n\n\
         [identity]\nrules = {:?}\n\n[policy]\ndir = {:?}\n\n\
         [audit]\nfile = {:?}\n\n[audit.checkpoint]\nkey = {checkpoint_key:?}\n\n{}{}{}{}{}{}{edge}",
        files.identity,
        files.policies,
        dir.join("audit").join(format!("{name}.log")),
        gateway_block(&servers.prod, prod, files),
        network("federations.prod", &servers.prod, prod, ""),
        network(
            "federations.prod.collectives.london",
            &servers.london,
            london,
            &signer(london)?
        ),
        network(
            "federations.prod.collectives.tokyo",
            &servers.tokyo,
            tokyo,
            &signer(tokyo)?
        ),
        // osaka shares tokyo's NATS network; its servers trust its own token issuer, and
        // fedgate signs into it as a delegator.
        network(
            &format!("federations.prod.collectives.{OSAKA}"),
            &servers.tokyo,
            tokyo,
            &osaka.config_line()
        ),
        legacy
            .map(|site| {
                site.config_block(
                    LEGACY,
                    "choria = \"london\"\nbridge = { collective = \"prod\", refresh_s = 30 }\n",
                )
            })
            .unwrap_or_default(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

pub(super) fn write_client_config(
    dir: &Path,
    pki: &DevPki,
    servers: &Servers,
    legacy: bool,
) -> anyhow::Result<PathBuf> {
    let london = realm(pki, "london")?;
    let alice = london
        .users
        .get("alice")
        .context("the dev PKI has no user alice")?;
    let mut text = format!(
        "# Written by `fedgate-dev demo`: alice of london, straight to the london collective.\n\
         [client]\ncertificate = {:?}\nkey = {:?}\n\n\
         [collectives.london]\nnats = [{:?}]\nca = {:?}\n",
        alice.cert,
        alice.key,
        servers.london.url(),
        london.ca,
    );
    if legacy {
        // fedgate serves the legacy collective on london's network.
        text.push_str(&format!(
            "\n[collectives.{LEGACY}]\nnats = [{:?}]\nca = {:?}\n",
            servers.london.url(),
            london.ca,
        ));
    }
    let path = dir.join("fedgate.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The client config of prod's alice, through the federation's brokers (`fedgate rpc
/// --federation prod`), which reach every member collective, osaka's v2 one included.
pub(super) fn write_federation_client_config(
    dir: &Path,
    pki: &DevPki,
    servers: &Servers,
) -> anyhow::Result<PathBuf> {
    let prod = realm(pki, "prod")?;
    let alice = prod
        .users
        .get("alice")
        .context("the dev PKI has no user alice in prod")?;
    let text = format!(
        "# Written by `fedgate-dev demo`: alice of prod, through the federation's brokers.\n\
         [client]\ncertificate = {:?}\nkey = {:?}\n\n\
         [federations.prod]\nnats = [{:?}]\nca = {:?}\n",
        alice.cert,
        alice.key,
        servers.prod.url(),
        prod.ca,
    );
    let path = dir.join("fedgate-prod.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
