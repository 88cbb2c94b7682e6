//! What every ingress decides with: the rules in force, the replay guard, the audit trail that
//! records every decision before anything is forwarded, refusal replies for verified callers,
//! and the completion records that count each allowed request's replies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::checks::Lifetime;
use super::replay::ReplayGuard;
use crate::audit::{Auditor, Event, Kind, Verdict};
use crate::ddl::DdlSet;
use crate::policy::{Decision, Denied, Query, Vantage, authorize, describe};
use crate::rules::{RuleStore, Rules};
use crate::security::Now;
use crate::wire::choria_v1::{
    Filter, Reply, ReplyEnvelope, RpcReply, SecureReply, StatusCode, Transport, TransportHeaders,
};

/// Allowed requests whose replies are being counted; beyond this, completions are written at
/// once with no count.
pub const MAX_PENDING: usize = 65_536;
/// How long after a request's TTL its completion record is written.
const GRACE: Duration = Duration::from_secs(2);

/// Policy, audit and completion tracking of one broker instance.
pub struct Gate {
    /// The current policy, identity map and users.
    pub rules: Arc<RuleStore>,
    /// Where decisions are recorded.
    pub auditor: Auditor,
    /// This instance's name, the sender of refusal replies.
    pub instance: String,
    /// Signed requests already forwarded, shared by every instance when configured so.
    pub replay: ReplayGuard,
    /// How long a signed request may live and must still have to live.
    pub lifetime: Lifetime,
    /// The DDLs calls are checked against, when configured.
    pub ddl: Option<Arc<DdlSet>>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

struct Pending {
    event: Event,
    replies: u64,
    deadline: Instant,
}

impl Gate {
    /// A gate over `rules` writing to `auditor`, with a replay guard in this process.
    pub fn new(rules: Arc<RuleStore>, auditor: Auditor, instance: String) -> Gate {
        Gate {
            rules,
            auditor,
            instance,
            replay: ReplayGuard::local(),
            lifetime: Lifetime::default(),
            ddl: None,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// The same gate with `replay` as its guard and `lifetime` as its window rules.
    pub fn with_replay(self, replay: ReplayGuard, lifetime: Lifetime) -> Gate {
        Gate {
            replay,
            lifetime,
            ..self
        }
    }

    /// The same gate checking calls against `ddl`.
    pub fn with_ddl(self, ddl: Option<Arc<DdlSet>>) -> Gate {
        Gate { ddl, ..self }
    }

    /// Checks a call's agent, action and inputs against the DDLs, before any fan-out; passes
    /// when no DDLs are configured.
    pub fn check_inputs(
        &self,
        agent: &str,
        action: &str,
        data: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), super::Refusal> {
        match &self.ddl {
            Some(ddl) => ddl.check(agent, action, data).map_err(super::Refusal::from),
            None => Ok(()),
        }
    }

    /// Writes a decision record; Err means the request must not be forwarded.
    pub async fn record(&self, event: Event) -> Result<String, crate::audit::AuditError> {
        let result = self.auditor.record(Kind::Decision, event).await;
        if let Err(err) = &result {
            tracing::error!(error = %err, "audit failed; refusing the request");
        }
        result
    }

    /// Starts counting the replies of an allowed request (`link` is its decision record).
    pub async fn track(&self, request_id: &str, link: String, event: &Event, ttl: Duration) {
        let overflow = {
            let mut pending = self.lock();
            if let Some(entry) = pending.get_mut(request_id) {
                entry.event.links.push(link);
                entry
                    .event
                    .collectives
                    .extend(event.collectives.iter().cloned());
                return;
            }
            let mut completion = completion_of(event);
            completion.links.push(link);
            if pending.len() < MAX_PENDING {
                pending.insert(
                    request_id.to_string(),
                    Pending {
                        event: completion,
                        replies: 0,
                        deadline: Instant::now() + ttl + GRACE,
                    },
                );
                metrics::gauge!("fedgate_gate_pending_completions").set(pending.len() as f64);
                None
            } else {
                completion.reason =
                    format!("replies not counted: more than {MAX_PENDING} requests in flight");
                Some(completion)
            }
        };
        if let Some(event) = overflow {
            metrics::counter!("fedgate_audit_untracked_total").increment(1);
            let _ = self.auditor.record(Kind::Completion, event).await;
        }
    }

    /// The rules to handle one request with: take them once, before mapping its caller.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.rules()
    }

    /// Decides `query` at the gateway with `rules`' policy: on a permit, adds the rule's
    /// conditions to `filter` (noting them in `event`) and returns the deciding rule. The
    /// event notes the registry revision either way.
    pub fn authorize(
        &self,
        rules: &Rules,
        query: &Query<'_>,
        filter: &mut Filter,
        event: &mut Event,
    ) -> Result<String, Denied> {
        event.revision = rules.revision;
        match authorize(&rules.policy, query, Vantage::Gateway) {
            Decision::Permit(permit) => {
                if let Some(conditions) = &permit.restrict {
                    conditions.restrict(filter);
                    event.restricted = Some(describe(conditions));
                }
                Ok(permit.source.to_string())
            }
            Decision::Denied(denied) => Err(denied),
        }
    }

    /// Writes the completion record of a request whose replies were counted by its caller.
    pub async fn complete_now(&self, decision: &Event, link: String, replies: u64) {
        let mut event = completion_of(decision);
        event.links.push(link);
        event.replies = Some(replies);
        if let Err(err) = self.auditor.record(Kind::Completion, event).await {
            tracing::error!(error = %err, "could not record a request's completion");
        }
    }

    /// Counts one relayed reply.
    pub fn replied(&self, request_id: &str) {
        if let Some(entry) = self.lock().get_mut(request_id) {
            entry.replies += 1;
        }
    }

    /// Writes the completion records that are due (all of them when `all`).
    pub async fn complete_due(&self, all: bool) {
        let now = Instant::now();
        let due: Vec<Pending> = {
            let mut pending = self.lock();
            let keys: Vec<String> = pending
                .iter()
                .filter(|(_, p)| all || p.deadline <= now)
                .map(|(k, _)| k.clone())
                .collect();
            let due = keys.iter().filter_map(|k| pending.remove(k)).collect();
            metrics::gauge!("fedgate_gate_pending_completions").set(pending.len() as f64);
            due
        };
        for mut done in due {
            done.event.replies = Some(done.replies);
            if let Err(err) = self.auditor.record(Kind::Completion, done.event).await {
                tracing::error!(error = %err, "could not record a request's completion");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The completion record's content: who, what, where, without the decision details.
fn completion_of(event: &Event) -> Event {
    Event {
        edge: event.edge.clone(),
        realm: event.realm.clone(),
        caller: event.caller.clone(),
        mapped_caller: event.mapped_caller.clone(),
        request_id: event.request_id.clone(),
        collectives: event.collectives.clone(),
        agent: event.agent.clone(),
        action: event.action.clone(),
        decision: Some(Verdict::Allow),
        stage: "complete".into(),
        ..Event::default()
    }
}

/// A short, readable summary of a filter for audit records.
pub fn summarize(filter: &Filter) -> String {
    let mut parts = Vec::new();
    for fact in &filter.fact {
        parts.push(format!("fact:{fact}"));
    }
    for class in &filter.cf_class {
        parts.push(format!("class:{class}"));
    }
    for agent in &filter.agent {
        parts.push(format!("agent:{agent}"));
    }
    match filter.identity.len() {
        0 => {}
        1..=5 => parts.extend(filter.identity.iter().map(|i| format!("identity:{i}"))),
        n => parts.push(format!("identity:{n} entries")),
    }
    if !filter.compound.is_empty() {
        parts.push(format!("compound:{} groups", filter.compound.len()));
    }
    let mut text = parts.join(" ");
    if text.len() > 1024 {
        let mut cut = 1024;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// The body of fedgate's answer to a verified caller whose request it did not forward:
/// MCollective status 1 (aborted), the reason as the status message, and the decision as data.
pub fn refusal_body(action: &str, event: &Event) -> RpcReply {
    RpcReply::new(
        action,
        StatusCode::Aborted,
        format!("fedgate refused the request: {}", event.reason),
        json!({
            "fedgate": {
                "decision": "deny",
                "stage": event.stage,
                "code": event.code,
                "rule": event.rule,
                "reason": event.reason,
                "collectives": event.collectives,
            }
        }),
    )
}

/// The sender of fedgate's own answers.
pub fn refusal_sender(instance: &str) -> String {
    format!("fedgate:{instance}")
}

/// A reply from fedgate itself telling a verified caller why its request was not forwarded
/// ([`refusal_body`]), as a v1 transport.
pub fn refusal_reply(
    instance: &str,
    request_id: &str,
    agent: &str,
    action: &str,
    event: &Event,
) -> Transport {
    let body = refusal_body(action, event);
    let sender = refusal_sender(instance);
    let envelope = ReplyEnvelope {
        requestid: request_id.to_string(),
        senderid: sender.clone(),
        agent: agent.to_string(),
        time: Now::system().unix_seconds(),
    };
    let secure = SecureReply::new(Reply::new(body.encode_string(), envelope).encode_string());
    // Delivered on the client's own reply subject without a federation header, like any reply
    // a broker relays back.
    let headers = TransportHeaders {
        mc_sender: Some(sender),
        ..TransportHeaders::default()
    };
    Transport::new(secure.encode(), headers)
}
