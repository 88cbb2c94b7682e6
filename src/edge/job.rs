//! An edge request as the dispatcher runs it, however it arrived, and the checks every
//! request's id and collection settings pass.

use std::time::Duration;

use serde_json::{Map, Value};

use super::protocol::RpcMessage;
use crate::subjects::is_valid_name;
use crate::wire::choria_v1::Filter;

/// Longest request id a client may choose.
pub(super) const MAX_ID: usize = 64;
/// Most explicit targets in one request.
pub const MAX_TARGETS: usize = 1000;
/// Shortest time a request may collect replies, milliseconds.
pub const MIN_TIMEOUT_MS: u64 = 100;
/// Longest time a request may collect replies, milliseconds.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// TTL of the requests the edge publishes, as Choria's clients default to.
pub(super) const DEFAULT_TTL: i64 = 60;
/// Collection time when the client names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One collective.
    Collective(String),
    /// Every member collective of a federation.
    Federation(String),
}

/// A request, however it arrived: an `rpc` message or a verified self-signed request.
#[derive(Debug)]
pub struct Job {
    /// The client's id for it.
    pub id: String,
    /// Where it goes.
    pub scope: Scope,
    /// Agent.
    pub agent: String,
    /// Action.
    pub action: String,
    /// Inputs.
    pub data: Map<String, Value>,
    /// The caller's filter (policy may add to it).
    pub filter: Filter,
    /// Directed targets; empty means broadcast.
    pub targets: Vec<String>,
    /// How long to collect replies.
    pub timeout: Duration,
    /// Stop after this many replies.
    pub limit: Option<usize>,
    /// Seconds the published request stays valid.
    pub ttl: i64,
    /// For a self-signed request, the Unix second its original stops being valid; the
    /// published request ends then too.
    pub expires: Option<i64>,
    /// The request id a self-signed request carries; fedgate keeps it, so the client finds its
    /// request in the audit trail and on the nodes.
    pub requestid: Option<String>,
    /// The bytes a self-signed request's caller signed, which the replay guard claims.
    pub signed: Option<String>,
}

impl Job {
    /// Checks an `rpc` message and turns it into a job.
    pub fn from_rpc(rpc: RpcMessage) -> Result<Job, (String, String)> {
        let id = rpc.id.clone();
        let fail = |message: String| (id.clone(), message);
        check_id(&rpc.id).map_err(fail)?;
        let scope = match (rpc.collective, rpc.federation) {
            (Some(c), None) => Scope::Collective(c),
            (None, Some(f)) => Scope::Federation(f),
            (Some(_), Some(_)) => {
                return Err(fail("name a collective or a federation, not both".into()));
            }
            (None, None) => return Err(fail("name a collective or a federation".into())),
        };
        for (what, name) in [("agent", &rpc.agent), ("action", &rpc.action)] {
            if !is_valid_name(name) {
                return Err(fail(format!("{what} {name:?} is not a valid name")));
            }
        }
        let (timeout, limit) = collection(&rpc.targets, rpc.timeout_ms, rpc.limit).map_err(fail)?;
        Ok(Job {
            id: rpc.id,
            scope,
            agent: rpc.agent,
            action: rpc.action,
            data: rpc.data,
            filter: rpc.filter.into_filter(),
            targets: rpc.targets,
            timeout,
            limit,
            ttl: DEFAULT_TTL,
            expires: None,
            requestid: None,
            signed: None,
        })
    }
}

pub(super) fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID {
        return Err(format!("id must be 1 to {MAX_ID} characters"));
    }
    Ok(())
}

/// The collection settings every request shares.
pub(super) fn collection(
    targets: &[String],
    timeout_ms: Option<u64>,
    limit: Option<usize>,
) -> Result<(Duration, Option<usize>), String> {
    if targets.len() > MAX_TARGETS {
        return Err(format!("at most {MAX_TARGETS} targets"));
    }
    if let Some(bad) = targets
        .iter()
        .find(|t| t.len() > 255 || !crate::subjects::is_valid_dotted(t))
    {
        return Err(format!("target {bad:?} is not a node name"));
    }
    if let Some(ms) = timeout_ms.filter(|ms| !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(ms)) {
        return Err(format!(
            "timeout_ms must be from {MIN_TIMEOUT_MS} to {MAX_TIMEOUT_MS}, not {ms}"
        ));
    }
    if limit == Some(0) {
        return Err("limit must be at least 1".into());
    }
    let timeout = timeout_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    Ok((timeout, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_ms_outside_its_documented_range_is_refused() {
        for bad in [0, 99, 60_001, u64::MAX] {
            assert!(
                collection(&[], Some(bad), None).is_err(),
                "timeout_ms {bad} was accepted"
            );
        }
        for good in [100, 5_000, 60_000] {
            let (timeout, _) = collection(&[], Some(good), None).unwrap();
            assert_eq!(timeout, Duration::from_millis(good));
        }
        assert_eq!(collection(&[], None, None).unwrap().0, DEFAULT_TIMEOUT);
    }
}
