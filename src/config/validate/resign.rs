//! Checks of a re-signing federation: its CA, policy, audit trail and signers.

use std::collections::BTreeMap;

use super::checker::Checker;
use super::routes::Route;
use crate::config::{Config, ConfigError};

impl Config {
    /// A re-signing federation verifies callers against its CA and needs fedgate's privileged
    /// signer in every collective it reaches.
    pub(super) fn validate_resign(
        &self,
        check: &Checker<'_>,
        served: &str,
        routes: &BTreeMap<String, Route>,
    ) -> Result<(), ConfigError> {
        let key = format!("federations.{served}");
        let federation = &self.federations[served];
        crate::security::v2::Issuers::for_realm(&federation.issuers)
            .map_err(|problem| check.invalid(format!("{key}.issuers"), problem))?;
        if federation.ca.is_none() && federation.issuers.is_empty() {
            return Err(check.invalid(
                format!("{key}.ca"),
                "is required in resign mode, to verify callers (or issuers, for Choria protocol v2 callers only; or set mode = \"pass-through\")",
            ));
        }
        // A federation without members is only a client's view of it (`fedgate rpc`).
        match &self.policy {
            _ if routes.is_empty() || self.rules_pending() => {}
            None => {
                return Err(check.invalid(
                    "policy.dir",
                    format!("is required: federation {served} re-signs requests, and every re-signed request is authorized with actionpolicy"),
                ));
            }
            Some(policy) if !policy.dir.is_dir() => {
                return Err(check.invalid(
                    "policy.dir",
                    format!("{} is not a directory", policy.dir.display()),
                ));
            }
            Some(_) => {}
        }
        if !routes.is_empty() {
            self.validate_audit(check, served)?;
        }
        for (collective, route) in routes {
            match route {
                Route::Via(member) => {
                    return Err(check.invalid(
                        format!("{key}.members"),
                        format!("{member} is a federation; resign mode reaches member collectives only, so chain federations in pass-through mode"),
                    ));
                }
                Route::Direct
                    if self
                        .served_on(collective)
                        .is_none_or(|c| c.signer.is_none() && c.v2.is_none()) =>
                {
                    return Err(check.invalid(
                        format!("collectives.{collective}.signer"),
                        format!("is required: federation {served} re-signs requests for {collective} with fedgate's privileged certificate from its CA (for a legacy collective, the CA of the Choria collective it is served on), or, for a Choria protocol v2 collective, as a delegator with its v2 seed and token"),
                    ));
                }
                Route::Direct => {}
            }
        }
        Ok(())
    }
}
