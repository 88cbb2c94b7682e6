//! What every route and session of the edge shares, and who a request is from.

use std::sync::Arc;
use std::time::SystemTime;

use axum::http::{HeaderMap, header};
use governor::DefaultKeyedRateLimiter;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::limits::{AddressSlots, Settings};
use crate::edge::api::Api;
use crate::edge::auth::{Claims, TokenKeys};
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
    /// Password checks running at once.
    pub(super) logins: Arc<Semaphore>,
    pub(super) metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
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
    /// The principal of a bearer token, which must verify now.
    pub(super) fn principal_from_token(&self, token: &str) -> Result<Principal, String> {
        let Some(keys) = &self.tokens else {
            return Err("this edge does not accept tokens".into());
        };
        let claims: Claims = keys
            .verify(token, SystemTime::now())
            .map_err(|e| e.to_string())?;
        let caller = CallerId::parse(&claims.callerid).map_err(|e| e.to_string())?;
        Ok(Principal {
            caller,
            method: "token",
            expires: Some(claims.exp),
            collectives: claims.collectives,
            token_id: Some(claims.jti),
        })
    }

    /// Who a request is from: its token if it has one (which must verify), else the client
    /// certificate; `None` when it has neither.
    pub(super) fn principal(
        &self,
        token: Option<&str>,
        peer: &Peer,
    ) -> Result<Option<Principal>, String> {
        match (token, &peer.certificate) {
            (Some(token), _) => self.principal_from_token(token).map(Some),
            (None, Some(caller)) => Ok(Some(Principal {
                caller: caller.clone(),
                method: "certificate",
                expires: None,
                collectives: None,
                token_id: None,
            })),
            (None, None) => Ok(None),
        }
    }
}
