//! What every route and session of the edge shares, and who a request is from.

use std::sync::Arc;
use std::time::SystemTime;

use axum::http::{HeaderMap, header};
use governor::DefaultKeyedRateLimiter;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::limits::{AddressSlots, Settings};
use super::logins::{LoginQueue, LoginRate};
use crate::edge::api::Api;
use crate::edge::auth::{Claims, Revocation, TokenKeys};
use crate::edge::dispatch::{Dispatcher, Principal};
use crate::security::CallerId;

/// What every request handler shares.
pub(super) struct Shared {
    pub(super) settings: Settings,
    pub(super) tokens: Option<TokenKeys>,
    pub(super) limiter: DefaultKeyedRateLimiter<String>,
    pub(super) connections: Arc<Semaphore>,
    /// Connections not upgraded to a WebSocket.
    pub(super) handshakes: Arc<Semaphore>,
    /// The same, per remote address.
    pub(super) handshakes_by_address: Arc<AddressSlots>,
    /// Password checks, queued fairly per source address.
    pub(super) logins: Arc<LoginQueue>,
    /// Logins per source address.
    pub(super) login_rate: LoginRate,
    pub(super) stop: CancellationToken,
    pub(super) sessions: TaskTracker,
    pub(super) dispatch: Dispatcher,
    pub(super) api: Api,
}

/// Who the TLS layer says the peer is.
#[derive(Clone, Debug, Default)]
pub(super) struct Peer {
    /// `choria=<CN>` of its verified client certificate.
    pub(super) certificate: Option<CallerId>,
}

/// The bearer token of `Authorization: Bearer …`.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl Shared {
    /// The principal of a bearer token, which must verify now and not be revoked.
    pub(super) async fn principal_from_token(&self, token: &str) -> Result<Principal, String> {
        let Some(keys) = &self.tokens else {
            return Err("this edge does not accept tokens".into());
        };
        let claims: Claims = keys
            .verify(token, SystemTime::now())
            .map_err(|e| e.to_string())?;
        let caller = CallerId::parse(&claims.callerid).map_err(|e| e.to_string())?;
        let principal = Principal {
            caller,
            method: "token",
            expires: Some(claims.exp),
            collectives: claims.collectives.clone(),
            token: Some(Arc::new(claims)),
        };
        match self.revocation(&principal) {
            Some(revocation) => Err(self
                .refused_revoked(&principal, &revocation, "upgrade")
                .await),
            None => Ok(principal),
        }
    }

    /// Counts, logs (with the token's `jti`, never the token) and records a revoked token
    /// refused `at` the upgrade or on an open `socket`; the message to answer with.
    pub(super) async fn refused_revoked(
        &self,
        principal: &Principal,
        revocation: &Revocation,
        at: &'static str,
    ) -> String {
        metrics::counter!("fedgate_edge_revoked_total", "at" => at).increment(1);
        let jti = principal.token.as_ref().map_or("", |c| c.jti.as_str());
        tracing::warn!(caller = %principal.caller.as_str(), jti, at, reason = %revocation, "revoked token refused");
        let message = format!("token revoked: {revocation}");
        self.dispatch
            .refused_revoked(principal, &format!("{message} (jti {jti})"))
            .await;
        message
    }

    /// Why `principal`'s token is revoked by the users file in force, if it is.
    pub(super) fn revocation(&self, principal: &Principal) -> Option<Revocation> {
        let claims = principal.token.as_ref()?;
        self.dispatch
            .rules()
            .users
            .as_ref()?
            .revocation(&claims.facts())
    }

    /// Who a request is from: its token if it has one (which must verify), else the client
    /// certificate; `None` when it has neither.
    pub(super) async fn principal(
        &self,
        token: Option<&str>,
        peer: &Peer,
    ) -> Result<Option<Principal>, String> {
        match (token, &peer.certificate) {
            (Some(token), _) => self.principal_from_token(token).await.map(Some),
            (None, Some(caller)) => Ok(Some(Principal {
                caller: caller.clone(),
                method: "certificate",
                expires: None,
                collectives: None,
                token: None,
            })),
            (None, None) => Ok(None),
        }
    }
}
