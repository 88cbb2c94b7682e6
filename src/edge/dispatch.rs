//! One edge request, the same path as every other: map the caller into the collective, authorize
//! the mapped caller with actionpolicy, record the decision, sign with fedgate's privileged
//! certificate there as the mapped caller, publish, and stream the replies back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::protocol::{ErrorCode, RpcMessage, ServerMessage};
use crate::audit::{Event, Verdict};
use crate::client::{RpcCall, RpcClient};
use crate::config::Config;
use crate::federation::gate::{self, Gate};
use crate::policy::{Decision, Query, Vantage, authorize, describe};
use crate::security::identity::{IdentityRules, Mapping};
use crate::security::{CallerId, Signer};
use crate::subjects::is_valid_name;
use crate::wire::Limits;

/// Longest request id a client may choose.
const MAX_ID: usize = 64;
/// Most explicit targets in one request.
pub const MAX_TARGETS: usize = 1000;
/// Longest time a request may collect replies.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Collection time when the client names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Who a socket speaks for.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The caller id before mapping: `choria=<CN>` or `up=<user>`.
    pub caller: CallerId,
    /// `certificate` or `token`.
    pub method: &'static str,
    /// Token expiry, Unix seconds.
    pub expires: Option<u64>,
    /// Collectives the token allows; none means all.
    pub collectives: Option<Vec<String>>,
    /// The token's id, for the audit trail (never the token).
    pub token_id: Option<String>,
}

impl Principal {
    fn allows(&self, collective: &str) -> bool {
        self.collectives
            .as_ref()
            .is_none_or(|list| list.iter().any(|c| c == collective))
    }
}

/// A collective the edge publishes into.
pub struct EdgeTarget {
    nats: async_nats::Client,
    signer: Arc<Signer>,
    internal: String,
}

/// Everything a request needs besides its socket.
pub struct Dispatcher {
    realm: String,
    identity: Arc<IdentityRules>,
    gate: Arc<Gate>,
    targets: BTreeMap<String, EdgeTarget>,
    sender: String,
    limits: Limits,
}

impl Dispatcher {
    /// Connects to every collective that has a privileged signer.
    pub async fn connect(
        config: &Config,
        gate: Arc<Gate>,
        instance: &str,
    ) -> Result<Dispatcher, String> {
        let realm = config
            .edge
            .as_ref()
            .map_or_else(|| "edge".to_string(), |e| e.realm.clone());
        let mut targets = BTreeMap::new();
        for (name, collective) in &config.collectives {
            let Some(signer) = &collective.signer else {
                continue;
            };
            let signer = Signer::from_files(&signer.certificate, &signer.key)
                .map_err(|e| format!("collective {name} signer: {e}"))?;
            let nats =
                crate::nats::connect(&collective.endpoint(), &format!("fedgate edge {instance}"))
                    .await
                    .map_err(|e| format!("collective {name}: {e}"))?;
            targets.insert(
                name.clone(),
                EdgeTarget {
                    nats,
                    signer: Arc::new(signer),
                    internal: collective.internal_name(name).to_string(),
                },
            );
        }
        Ok(Dispatcher {
            realm,
            identity: config.identity_rules().clone(),
            gate,
            targets,
            sender: format!("fedgate-edge-{instance}"),
            limits: Limits::default(),
        })
    }

    /// The collectives `principal` could reach: allowed by its token and mapped by a rule.
    pub fn reachable(&self, principal: &Principal) -> Vec<String> {
        self.targets
            .keys()
            .filter(|name| principal.allows(name))
            .filter(|name| {
                matches!(
                    self.identity.map(&self.realm, &principal.caller, name),
                    Mapping::Mapped { .. }
                )
            })
            .cloned()
            .collect()
    }

    fn event(&self, principal: &Principal, rpc: &RpcMessage) -> Event {
        Event {
            edge: "websocket".into(),
            realm: self.realm.clone(),
            caller: Some(principal.caller.as_str().to_string()),
            collectives: rpc.collective.iter().cloned().collect(),
            agent: Some(rpc.agent.clone()),
            action: Some(rpc.action.clone()),
            data_keys: rpc.data.keys().cloned().collect(),
            targets: rpc.targets.len(),
            ..Event::default()
        }
    }

    async fn refuse(
        &self,
        mut event: Event,
        stage: &str,
        code: &str,
        reason: String,
        rule: Option<String>,
    ) {
        event.decision = Some(Verdict::Deny);
        event.stage = stage.into();
        event.code = code.into();
        event.reason = reason;
        event.rule = rule;
        // A refusal that cannot be recorded is still a refusal.
        let _ = self.gate.record(event).await;
    }

    /// Records a request refused before it was looked at (rate limit).
    pub async fn refused_early(
        &self,
        principal: &Principal,
        rpc: &RpcMessage,
        code: &str,
        reason: &str,
    ) {
        let event = self.event(principal, rpc);
        self.refuse(event, "edge", code, reason.into(), None).await;
    }

    /// Runs one request, sending replies and the final `done` or `error` through `send`.
    pub async fn run(
        &self,
        principal: &Principal,
        rpc: RpcMessage,
        cancel: CancellationToken,
        send: &(impl Fn(ServerMessage) + Sync),
    ) {
        let id = rpc.id.clone();
        let error = |code: ErrorCode, message: String| {
            metrics::counter!("fedgate_edge_requests_total", "result" => code.as_str())
                .increment(1);
            send(ServerMessage::error(Some(&id), code, message));
        };
        if let Err(message) = validate(&rpc) {
            let event = self.event(principal, &rpc);
            self.refuse(event, "decode", "invalid", message.clone(), None)
                .await;
            return error(ErrorCode::Invalid, message);
        }
        let Some(collective) = rpc.collective.clone() else {
            let message = match &rpc.federation {
                Some(f) => {
                    format!("federation {f} is not reachable from this edge; name a collective")
                }
                None => "name a collective".into(),
            };
            return error(ErrorCode::UnknownCollective, message);
        };
        let event = self.event(principal, &rpc);
        let target = match self.targets.get(&collective) {
            Some(target) if principal.allows(&collective) => target,
            _ => {
                let message =
                    format!("collective {collective} is not reachable with these credentials");
                self.refuse(event, "route", "unknown_collective", message.clone(), None)
                    .await;
                return error(ErrorCode::UnknownCollective, message);
            }
        };
        // Map the caller into the collective.
        let (mapped, identity_rule) =
            match self
                .identity
                .map(&self.realm, &principal.caller, &collective)
            {
                Mapping::Mapped { callerid, rule } => (callerid, rule.to_string()),
                Mapping::Denied(denial) => {
                    let message = format!(
                        "{} may not act in {collective}: {}",
                        principal.caller.as_str(),
                        denial.reason()
                    );
                    let rule = denial.rule().map(ToString::to_string);
                    self.refuse(event, "map", denial.reason(), message.clone(), rule)
                        .await;
                    return error(ErrorCode::Unmapped, message);
                }
            };
        let mut event = event;
        event.mapped_caller = Some(mapped.as_str().to_string());
        // Authorize the mapped caller.
        let policy = self.gate.policy.current();
        let query = Query {
            collective: &collective,
            agent: &rpc.agent,
            action: &rpc.action,
            caller: mapped.as_str(),
        };
        let mut filter = rpc.filter.into_filter();
        let (rule, restrict) = match authorize(&policy, &query, Vantage::Gateway) {
            Decision::Permit(permit) => (permit.source.to_string(), permit.restrict),
            Decision::Denied(denied) => {
                let rule = denied.source.to_string();
                let message = denied.reason.clone();
                self.refuse(
                    event,
                    "authorize",
                    "denied",
                    message.clone(),
                    Some(rule.clone()),
                )
                .await;
                return error(ErrorCode::Denied, format!("{message} (rule {rule})"));
            }
        };
        if let Some(conditions) = &restrict {
            conditions.restrict(&mut filter);
            event.restricted = Some(describe(conditions));
        }
        let requestid = uuid::Uuid::new_v4().simple().to_string();
        event.request_id = Some(requestid.clone());
        event.filter = gate::summarize(&filter);
        if self.gate.auditor.records_values(&rpc.agent, &rpc.action) {
            event.data = Some(rpc.data.clone());
        }
        event.decision = Some(Verdict::Allow);
        event.stage = "authorize".into();
        event.code = "allowed".into();
        event.rule = Some(rule.clone());
        event.reason = format!("allowed by {rule}; mapped by {identity_rule}");
        let link = match self.gate.record(event.clone()).await {
            Ok(link) => link,
            Err(err) => {
                return error(
                    ErrorCode::AuditFailed,
                    format!("the request could not be recorded, so it was not sent: {err}"),
                );
            }
        };
        let timeout = rpc
            .timeout_ms
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
            .min(MAX_TIMEOUT);
        let call = RpcCall {
            data: rpc.data,
            filter,
            targets: rpc.targets,
            timeout,
            expect: rpc.limit,
            idle: Duration::from_secs(1).min(timeout),
            ..RpcCall::new(&target.internal, &rpc.agent, &rpc.action)
        };
        let client = RpcClient::new(
            target.nats.clone(),
            target.signer.clone(),
            mapped,
            self.sender.clone(),
            self.limits,
        );
        let on_reply = |reply: &crate::client::ReplyEvent| {
            send(ServerMessage::Reply {
                id: id.clone(),
                sender: reply.sender.clone(),
                statuscode: reply.statuscode,
                statusmsg: reply.statusmsg.clone(),
                data: reply.data.clone(),
            });
        };
        let outcome = tokio::select! {
            summary = client.call_as(&call, &requestid, on_reply) => Some(summary),
            _ = cancel.cancelled() => None,
        };
        match outcome {
            None => {
                self.gate.complete_now(&event, link, 0).await;
                error(ErrorCode::Cancelled, "cancelled".into());
            }
            Some(Err(err)) => {
                self.gate.complete_now(&event, link, 0).await;
                error(ErrorCode::Unavailable, err.to_string());
            }
            Some(Ok(summary)) => {
                self.gate
                    .complete_now(&event, link, summary.responses as u64)
                    .await;
                metrics::counter!("fedgate_edge_requests_total", "result" => "done").increment(1);
                send(ServerMessage::Done {
                    id: id.clone(),
                    responses: summary.responses,
                    ok: summary.ok,
                    failed: summary.failed,
                    missing: summary.missing,
                    elapsed_ms: u64::try_from(summary.elapsed.as_millis()).unwrap_or(u64::MAX),
                    requestid,
                });
            }
        }
    }
}

fn validate(rpc: &RpcMessage) -> Result<(), String> {
    if rpc.id.is_empty() || rpc.id.len() > MAX_ID {
        return Err(format!("id must be 1 to {MAX_ID} characters"));
    }
    if rpc.collective.is_some() && rpc.federation.is_some() {
        return Err("name a collective or a federation, not both".into());
    }
    for (what, name) in [("agent", &rpc.agent), ("action", &rpc.action)] {
        if !is_valid_name(name) {
            return Err(format!("{what} {name:?} is not a valid name"));
        }
    }
    if rpc.targets.len() > MAX_TARGETS {
        return Err(format!("at most {MAX_TARGETS} targets"));
    }
    if rpc.timeout_ms.is_some_and(|t| t < 100) {
        return Err("timeout_ms must be at least 100".into());
    }
    if rpc.limit == Some(0) {
        return Err("limit must be at least 1".into());
    }
    Ok(())
}
