//! What a re-signing cluster holds: the federation's verifier, and each reachable collective's
//! internal name and fedgate's privileged signer there, loaded once from the config.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::Config;
use crate::security::{Signer, Verifier};
use crate::wire::Limits;

/// What a re-signing cluster needs besides routing.
#[derive(Debug)]
pub struct ResignRules {
    /// The realm callers are verified in: the federation's name.
    pub realm: String,
    /// The federation's CA and name patterns.
    pub verifier: Verifier,
    /// Each reachable collective's internal name and fedgate's privileged signer there.
    pub targets: BTreeMap<String, ResignTarget>,
    /// Longest TTL of a re-signed request.
    pub max_ttl: i64,
}

/// A collective that a re-signing cluster publishes into.
#[derive(Debug)]
pub struct ResignTarget {
    /// The collective's name in its subjects and envelopes.
    pub internal_name: String,
    /// fedgate's privileged certificate and key from the collective's CA.
    pub signer: Arc<Signer>,
}

impl ResignRules {
    /// Loads the verifier, identity rules and signers of the served federation `name`.
    pub fn from_config(config: &Config, name: &str, limits: Limits) -> Result<Self, String> {
        let federation = config
            .federation(name)
            .ok_or_else(|| format!("no federation {name}"))?;
        let verifier = federation
            .verifier(limits)?
            .ok_or("resign mode needs the federation's ca to verify callers")?;
        let mut targets = BTreeMap::new();
        for collective in config.routes(name)?.into_keys() {
            let member = config.served_on(&collective).ok_or_else(|| {
                format!("resign mode reaches collectives only; {collective} is not one")
            })?;
            let signer = member
                .signer
                .as_ref()
                .ok_or_else(|| format!("collective {collective} has no signer"))?;
            let signer = Signer::from_files(&signer.certificate, &signer.key)
                .map_err(|e| format!("collective {collective} signer: {e}"))?;
            let target = ResignTarget {
                internal_name: config.member_internal_name(&collective).to_string(),
                signer: Arc::new(signer),
            };
            targets.insert(collective, target);
        }
        Ok(ResignRules {
            realm: name.to_string(),
            verifier,
            targets,
            max_ttl: federation.max_ttl,
        })
    }
}
