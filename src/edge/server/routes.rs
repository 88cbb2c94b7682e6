//! The edge's HTTP routes: `/ws`, `/login`, `/healthz`, and the page's read-only API
//! (`/api/...`, answered from [`crate::edge::api`]), each needing the socket's credentials.
//! `/metrics` and `/readyz` are served on the metrics address only ([`crate::metrics`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::logins::{self, Busy, RateRefusal};
use super::shared::{Peer, Shared, bearer};
use super::upgrade::upgrade;
use crate::config::EdgeConfig;
use crate::edge::api::AuditQuery;
use crate::edge::auth;
use crate::edge::dispatch::Principal;
use crate::edge::http::{Reason, refuse};

/// Every route of the edge, over `shared`.
pub(super) fn router(shared: Arc<Shared>, edge: &EdgeConfig) -> Router {
    let mut router = Router::new()
        .route("/ws", get(upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/realms", get(realms))
        .route("/api/ddl", get(agents))
        .route("/api/ddl/{agent}", get(ddl))
        .route("/api/audit", get(audit))
        .route("/api/instances", get(instances))
        .route("/login", post(login));
    if let Some(root) = &edge.web_root {
        router = router.fallback_service(tower_http::services::ServeDir::new(root));
    } else if edge.console {
        router = router.fallback(get(crate::edge::console::serve));
    }
    router.with_state(shared)
}

/// The body of `POST /login`.
#[derive(serde::Deserialize)]
struct Login {
    user: String,
    password: String,
}

/// `POST /login`: a token for a user of the users file.
async fn login(
    State(shared): State<Arc<Shared>>,
    Extension(remote): Extension<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    // The users of the rules in force now (a registry revision may change them).
    let users = shared.dispatch.rules().users.clone();
    let (Some(users), Some(keys)) = (users, &shared.tokens) else {
        return refuse(
            StatusCode::NOT_FOUND,
            Reason::Login,
            "password login is not configured",
        );
    };
    if body.len() > 4096 {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            Reason::Login,
            "request too large",
        );
    }
    let Some(login) = serde_json::from_slice::<Login>(&body)
        .ok()
        .filter(|l| auth::caller_for(&l.user).is_ok())
    else {
        return refuse(
            StatusCode::BAD_REQUEST,
            Reason::Login,
            "send {\"user\":...,\"password\":...}",
        );
    };
    let source = logins::source(remote.ip());
    // The source's rate first: a flood of made-up user names is stopped before it costs a
    // rate-limit bucket per name.
    if let Err(refusal) = shared.login_rate.check(source) {
        let (status, label, message) = match refusal {
            RateRefusal::Source => (
                StatusCode::TOO_MANY_REQUESTS,
                "source_rate",
                "too many login attempts from this address",
            ),
            RateRefusal::Sources => (
                StatusCode::SERVICE_UNAVAILABLE,
                "sources",
                "too many addresses logging in at once",
            ),
        };
        return login_refused(status, label, message);
    }
    if shared
        .limiter
        .check_key(&format!("login:{}", login.user))
        .is_err()
    {
        return login_refused(
            StatusCode::TOO_MANY_REQUESTS,
            "user_rate",
            "too many login attempts for this user",
        );
    }
    // argon2 is deliberately slow and memory-hungry: keep it off the async workers, run only
    // a few at once, and let each source wait only behind its own logins.
    let _permit = match shared.logins.enter(source).await {
        Ok(permit) => permit,
        Err(busy) => {
            let message = match busy {
                Busy::SourceQueue => "too many logins from this address in progress",
                Busy::Queue | Busy::Wait => "too many logins in progress",
            };
            return login_refused(StatusCode::SERVICE_UNAVAILABLE, busy.as_str(), message);
        }
    };
    let name = login.user.clone();
    let checked = tokio::task::spawn_blocking(move || {
        users
            .check(&name, &login.password)
            .map(|user| user.collectives.clone())
    })
    .await;
    let collectives = match checked {
        Ok(Ok(collectives)) => collectives,
        _ => {
            metrics::counter!("fedgate_edge_logins_total", "result" => "refused").increment(1);
            return refuse(
                StatusCode::UNAUTHORIZED,
                Reason::Login,
                "unknown user or wrong password",
            );
        }
    };
    let now = SystemTime::now();
    match keys.issue_login(&login.user, shared.settings.token_ttl, collectives, now) {
        Ok(token) => {
            metrics::counter!("fedgate_edge_logins_total", "result" => "ok").increment(1);
            axum::Json(json!({
                "token": token,
                "expires": auth::unix(now) + shared.settings.token_ttl.as_secs(),
                "caller": format!("up={}", login.user),
            }))
            .into_response()
        }
        Err(err) => refuse(StatusCode::BAD_REQUEST, Reason::Login, &err.to_string()),
    }
}

/// A login turned away before its password was checked: `rate_limited`, and counted in
/// `fedgate_edge_login_refused_total{reason}` under `label`.
fn login_refused(status: StatusCode, label: &'static str, message: &str) -> Response {
    metrics::counter!("fedgate_edge_login_refused_total", "reason" => label).increment(1);
    refuse(status, Reason::RateLimited, message)
}

/// The caller of an API request: its bearer token or client certificate, which every route
/// needs; without one the request is refused with 401.
struct Caller(Principal);

impl axum::extract::FromRequestParts<Arc<Shared>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        shared: &Arc<Shared>,
    ) -> Result<Caller, Response> {
        let peer = parts.extensions.get::<Peer>().cloned().unwrap_or_default();
        match shared.principal(bearer(&parts.headers), &peer).await {
            Ok(Some(principal)) => Ok(Caller(principal)),
            Err(message) => Err(refuse(StatusCode::UNAUTHORIZED, Reason::Token, &message)),
            Ok(None) => Err(refuse(
                StatusCode::UNAUTHORIZED,
                Reason::Unauthenticated,
                "send a bearer token or a client certificate",
            )),
        }
    }
}

/// `GET /api/realms`: where the caller may send requests, and which views it may open.
async fn realms(State(shared): State<Arc<Shared>>, Caller(principal): Caller) -> Response {
    let (collectives, federations) = shared.dispatch.reachable(&principal);
    axum::Json(json!({
        "caller": principal.caller.as_str(),
        "collectives": collectives,
        "federations": federations,
        "audit": shared.api.is_auditor(&principal.caller),
        "instances": shared.api.has_instances(),
    }))
    .into_response()
}

/// `GET /api/ddl`: the agents with a DDL.
async fn agents(State(shared): State<Arc<Shared>>, _: Caller) -> Response {
    axum::Json(shared.api.agents()).into_response()
}

/// `GET /api/ddl/{agent}`: one agent's DDL.
async fn ddl(
    State(shared): State<Arc<Shared>>,
    _: Caller,
    axum::extract::Path(agent): axum::extract::Path<String>,
) -> Response {
    match shared.api.ddl(&agent) {
        Some(ddl) => axum::Json(ddl.clone()).into_response(),
        None => refuse(StatusCode::NOT_FOUND, Reason::Ddl, "no DDL for this agent"),
    }
}

/// `GET /api/audit`: recent records and the chain's status, for auditors.
async fn audit(
    State(shared): State<Arc<Shared>>,
    Caller(principal): Caller,
    query: Result<axum::extract::Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !shared.api.is_auditor(&principal.caller) {
        return refuse(
            StatusCode::FORBIDDEN,
            Reason::NotAuditor,
            "this caller may not read the audit trail (edge.auditors)",
        );
    }
    let Ok(axum::extract::Query(query)) = query else {
        return refuse(
            StatusCode::BAD_REQUEST,
            Reason::Query,
            "use caller, agent, decision (allow or deny), after and limit",
        );
    };
    let worker = shared.clone();
    match tokio::task::spawn_blocking(move || worker.api.audit(&query)).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(_) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            Reason::Audit,
            "reading the trail failed",
        ),
    }
}

/// `GET /api/instances`: each Federation Broker instance's figures.
async fn instances(State(shared): State<Arc<Shared>>, _: Caller) -> Response {
    axum::Json(shared.api.instances()).into_response()
}
