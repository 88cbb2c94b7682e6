//! A Choria protocol v2 organization for tests: its token issuer, fedgate's delegating identity
//! in it (seed and token files, as a config names them), and fleets of v2 servers that trust it.

use std::path::PathBuf;
use std::sync::Arc;

use super::Network;
use crate::fleet::{self, DEFAULT_MAX_IN_FLIGHT, Fleet, FleetConfig, FleetV2};
use fedgate::nats;
use fedgate::security::v2::tokens::{
    ClientClaims, ClientPermissions, ServerClaims, StandardClaims,
};
use fedgate::security::v2::{Issuers, TokenIssuer, V2Signer, V2Verifier};
use fedgate::security::{CaBundle, Now, Verifier};
use fedgate::wire::Limits;

/// The organization every v2 test token belongs to (go-choria's default `ou`).
pub const ORG: &str = "choria";
/// fedgate's caller id in v2 organizations, as its delegating token names it.
pub const FEDGATE_CALLER: &str = "choria=fedgate";

/// A v2 organization and fedgate's standing in it.
pub struct V2Org {
    /// The organization issuer.
    pub issuer: TokenIssuer,
    /// Holds fedgate's seed and token when the organization made its own folder.
    _dir: Option<tempfile::TempDir>,
    /// fedgate's seed file (64 hex characters).
    pub seed: PathBuf,
    /// fedgate's token file: a chain issuer's token with `authentication_delegator`.
    pub token: PathBuf,
    servers: Arc<V2Signer>,
}

impl V2Org {
    /// An organization whose issuer, fedgate and servers have the keys of seeds `n`, `n + 1`
    /// and `n + 2`; fedgate's token holds `permissions` (a delegator's, for a working setup).
    pub fn with_fedgate(n: u8, permissions: ClientPermissions) -> V2Org {
        let dir = tempfile::tempdir().expect("temp dir");
        let seeds = [[n; 32], [n + 1; 32], [n + 2; 32]];
        let mut org = V2Org::build(seeds, permissions, dir.path(), 24 * 3600).expect("v2 org");
        org._dir = Some(dir);
        org
    }

    /// An organization with fresh random keys, fedgate a delegator in it, its seed and token
    /// written in `dir`, every token valid for `validity` seconds: the demo's.
    pub fn generate(dir: &std::path::Path, validity: i64) -> Result<V2Org, String> {
        let mut seeds = [[0u8; 32]; 3];
        for seed in &mut seeds {
            aws_lc_rs::rand::fill(seed).map_err(|_| "no randomness for a v2 seed".to_string())?;
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        V2Org::build(seeds, ClientPermissions::delegator(), dir, validity)
    }

    /// The organization with the issuer, fedgate and server keys of `seeds`.
    fn build(
        [issuer_seed, fedgate_seed, server_seed]: [[u8; 32]; 3],
        permissions: ClientPermissions,
        dir: &std::path::Path,
        validity: i64,
    ) -> Result<V2Org, String> {
        let issuer = TokenIssuer::org(&issuer_seed)?;
        let now = Now::system().unix_seconds();
        let claims = ClientClaims {
            callerid: FEDGATE_CALLER.into(),
            ou: ORG.into(),
            permissions: Some(permissions),
            ..ClientClaims::default()
        };
        let (token, _) = issuer.chain_issuer(claims, &fedgate_seed, now - 60, validity)?;
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok::<_, String>(path)
        };
        let seed = write("fedgate.seed", hex::encode(fedgate_seed))?;
        let token_file = write("fedgate.jwt", token)?;
        let key = V2Signer::from_seed(&server_seed, String::new())?;
        let server_token = issuer.issue_server(
            ServerClaims {
                identity: "fleet.example.net".into(),
                collectives: vec![ORG.into()],
                ou: ORG.into(),
                standard: StandardClaims {
                    public_key: key.public_key(),
                    ..StandardClaims::default()
                },
            },
            now - 60,
            validity,
        );
        let servers = Arc::new(V2Signer::from_seed(&server_seed, server_token)?);
        Ok(V2Org {
            issuer,
            _dir: None,
            seed,
            token: token_file,
            servers,
        })
    }

    /// An organization where fedgate holds a delegator's token.
    pub fn new(n: u8) -> V2Org {
        V2Org::with_fedgate(n, ClientPermissions::delegator())
    }

    /// The issuers its servers trust.
    pub fn issuers(&self) -> Issuers {
        Issuers::default()
            .with(ORG, &self.issuer.public_key())
            .expect("issuer key")
    }

    /// The `v2 = {...}` line of a `[collectives.<name>]` table.
    pub fn config_line(&self) -> String {
        format!(
            "v2 = {{ issuers = {{ {ORG} = {:?} }}, seed = {:?}, token = {:?} }}",
            self.issuer.public_key(),
            self.seed,
            self.token
        )
    }

    /// A caller of this organization with the key of `seed` and `permissions`, for an hour.
    pub fn caller(&self, seed: u8, callerid: &str, permissions: ClientPermissions) -> V2Signer {
        self.issuer
            .client_signer(
                &[seed; 32],
                callerid,
                ORG,
                permissions,
                (Now::system().unix_seconds() - 60, 3600),
            )
            .expect("caller token")
    }

    /// What a fleet of this organization's servers checks requests with and signs replies with.
    pub fn fleet_v2(&self, limits: Limits) -> FleetV2 {
        FleetV2 {
            verifier: V2Verifier::new(self.issuers(), limits),
            server: self.servers.clone(),
        }
    }

    /// `count` v2 servers in `network`'s collective, trusting this organization's issuer.
    pub async fn start_fleet(&self, network: &Network, count: usize) -> Fleet {
        let identity = network.realm.fleet.as_ref().expect("fleet identity");
        let client = nats::connect(&network.endpoint(identity), "test-fleet-v2")
            .await
            .expect("connect fleet");
        let limits = Limits::default();
        let name = &network.realm.name;
        let config = FleetConfig {
            nodes: fleet::generate(name, count, std::slice::from_ref(name)),
            // Unused: a v2 fleet verifies with `v2`.
            verifier: Verifier::with_defaults(
                CaBundle::from_file(&network.realm.ca).expect("CA"),
                limits,
            ),
            limits,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            policy: None,
            ddl: None,
            v2: Some(self.fleet_v2(limits)),
        };
        Fleet::start(client, config).await.expect("start v2 fleet")
    }
}
