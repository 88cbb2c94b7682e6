//! The edge's HTTP refusals: one reason per kind of refusal, each answered as
//! `{"error":"<reason>","message":"..."}` and counted; docs/websocket.md lists them all.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why the edge refused an HTTP request or a WebSocket upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// An `Origin` not in the allowlist, or no `Origin` and no credentials.
    Origin,
    /// A token that does not verify or has expired.
    Token,
    /// The global connection limit.
    Connections,
    /// fedgate is shutting down.
    ShuttingDown,
    /// `fedgate.v1.signed` on an edge without a CA to verify signed requests with.
    SignedRequests,
    /// An API request without a token or client certificate.
    Unauthenticated,
    /// `/api/audit` by a caller not in `edge.auditors`.
    NotAuditor,
    /// A bad `/api/audit` query.
    Query,
    /// No DDL for that agent.
    Ddl,
    /// Reading the audit trail failed.
    Audit,
    /// `POST /login` refused: not configured, malformed, or wrong user or password.
    Login,
    /// Too many login attempts, or logins in progress.
    RateLimited,
}

impl Reason {
    /// Every reason: for the documentation check, and each counted from zero at start-up.
    pub const ALL: [Reason; 12] = [
        Reason::Origin,
        Reason::Token,
        Reason::Connections,
        Reason::ShuttingDown,
        Reason::SignedRequests,
        Reason::Unauthenticated,
        Reason::NotAuditor,
        Reason::Query,
        Reason::Ddl,
        Reason::Audit,
        Reason::Login,
        Reason::RateLimited,
    ];

    /// The reason as answered and counted.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Origin => "origin",
            Reason::Token => "token",
            Reason::Connections => "connections",
            Reason::ShuttingDown => "shutting_down",
            Reason::SignedRequests => "signed_requests",
            Reason::Unauthenticated => "unauthenticated",
            Reason::NotAuditor => "not_auditor",
            Reason::Query => "query",
            Reason::Ddl => "ddl",
            Reason::Audit => "audit",
            Reason::Login => "login",
            Reason::RateLimited => "rate_limited",
        }
    }
}

/// Puts the edge's refusal and login counters in the metrics at zero, so dashboards and alerts
/// see the series (and their rate) before the first refusal rather than nothing.
pub(super) fn count_from_zero() {
    for reason in Reason::ALL {
        metrics::counter!("fedgate_edge_refused_total", "reason" => reason.as_str()).increment(0);
    }
    for result in ["ok", "refused"] {
        metrics::counter!("fedgate_edge_logins_total", "result" => result).increment(0);
    }
}

/// A JSON refusal, counted in `fedgate_edge_refused_total{reason}`.
pub(super) fn refuse(status: StatusCode, reason: Reason, message: &str) -> Response {
    let reason = reason.as_str();
    metrics::counter!("fedgate_edge_refused_total", "reason" => reason).increment(1);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": reason, "message": message}).to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reasons of docs/websocket.md's "HTTP refusals" table.
    fn documented_reasons() -> Vec<String> {
        let doc = include_str!("../../docs/websocket.md");
        let table = doc
            .split("## HTTP refusals")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .unwrap_or_default();
        table
            .lines()
            .filter(|line| line.starts_with('|'))
            .filter_map(|line| line.split('|').nth(2))
            .filter_map(|cell| cell.trim().strip_prefix('`')?.strip_suffix('`'))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_http_refusal_reason_is_documented() {
        let documented = documented_reasons();
        for reason in Reason::ALL {
            assert!(
                documented.iter().any(|d| d == reason.as_str()),
                "{} is not in docs/websocket.md's HTTP refusals: {documented:?}",
                reason.as_str()
            );
        }
        for documented in &documented {
            assert!(
                Reason::ALL.iter().any(|r| r.as_str() == documented),
                "docs/websocket.md lists {documented}, which the edge never answers"
            );
        }
    }
}
