//! What a re-signing cluster holds: the federation's verifiers (its CA for v1 callers, its
//! token issuer for v2 ones), and each reachable collective's internal name and how fedgate
//! signs into it (a privileged certificate, or a v2 delegator's seed and token), loaded once
//! from the config.

use std::collections::{BTreeMap, BTreeSet};

use crate::client::Egress;
use crate::config::Config;
use crate::security::v2::{Issuers, V2Verifier};
use crate::security::{Now, Verifier};
use crate::wire::Limits;

/// What a re-signing cluster needs besides routing.
#[derive(Debug)]
pub struct ResignRules {
    /// The realm callers are verified in: the federation's name.
    pub realm: String,
    /// The federation's CA and name patterns, for v1 callers; `None` when it takes v2 only.
    pub verifier: Option<Verifier>,
    /// The federation's token issuer, for Choria protocol v2 callers; `None` when it takes v1
    /// only.
    pub v2_verifier: Option<V2Verifier>,
    /// The public keys fedgate signs with in v2 collectives: a request signed with one, or for
    /// a caller token fedgate issued, is one fedgate published itself and does not come back in.
    pub own_v2_keys: BTreeSet<String>,
    /// Each reachable collective's internal name and fedgate's signer there.
    pub targets: BTreeMap<String, ResignTarget>,
    /// Longest TTL of a re-signed request.
    pub max_ttl: i64,
    /// Decode limits.
    pub limits: Limits,
}

/// A collective that a re-signing cluster publishes into.
#[derive(Debug)]
pub struct ResignTarget {
    /// The collective's name in its subjects and envelopes.
    pub internal_name: String,
    /// fedgate's privileged certificate from the collective's CA, or its delegating identity in
    /// a v2 collective.
    pub signer: Egress,
}

impl ResignRules {
    /// Loads the verifiers, identity rules and signers of the served federation `name`.
    pub fn from_config(config: &Config, name: &str, limits: Limits) -> Result<Self, String> {
        let federation = config
            .federation(name)
            .ok_or_else(|| format!("no federation {name}"))?;
        let verifier = federation.verifier(limits)?;
        let v2_verifier = Issuers::for_realm(&federation.issuers)
            .map_err(|e| format!("federation {name} issuers: {e}"))?
            .map(|issuers| V2Verifier::new(issuers, limits));
        if verifier.is_none() && v2_verifier.is_none() {
            return Err(
                "resign mode needs the federation's ca or issuers to verify callers".into(),
            );
        }
        let mut targets = BTreeMap::new();
        for collective in config.routes(name)?.into_keys() {
            let member = config.served_on(&collective).ok_or_else(|| {
                format!("resign mode reaches collectives only; {collective} is not one")
            })?;
            let signer = member
                .load_egress(&collective, limits, Now::system())?
                .ok_or_else(|| format!("collective {collective} has no signer"))?;
            let target = ResignTarget {
                internal_name: config.member_internal_name(&collective).to_string(),
                signer,
            };
            targets.insert(collective, target);
        }
        // Every v2 collective fedgate signs into, reached through this cluster or only from the
        // edge: a request it published into any of them does not come back in here.
        let mut own_v2_keys = BTreeSet::new();
        for (collective, config) in &config.collectives {
            if let Some(v2) = &config.v2 {
                let signer = crate::security::v2::V2Signer::from_files(&v2.seed, &v2.token)
                    .map_err(|e| format!("collective {collective} v2: {e}"))?;
                own_v2_keys.insert(signer.public_key());
            }
        }
        Ok(ResignRules {
            realm: name.to_string(),
            verifier,
            v2_verifier,
            own_v2_keys,
            targets,
            max_ttl: federation.max_ttl,
            limits,
        })
    }
}
