//! The one admission path every ingress feeds: the Federation Broker in resign mode, the
//! WebSocket edge, the legacy ingress and the legacy facade.
//!
//! ```text
//! ingress: bytes -> verified caller, the call as signed, scope, window, destinations
//!   -> checks   agents agree (body, envelope, route); signed request id; TTL cap; life left;
//!               agent, action and inputs against the DDLs
//!   -> admit    per collective: map the caller, authorize the mapped caller  => Admitted
//!   -> replay   claim the signed bytes for the destination, on every instance
//!   -> record   the decision record                                         => Recorded
//!   -> publish  only a Recorded request; then replies are tracked and completed
//! ```
//! Ingresses keep only what is theirs: framing, acknowledgements and the encoding of answers.

pub mod admit;
pub mod checks;
pub mod gate;
pub mod refusal;
pub mod replay;

use std::sync::Arc;

pub use admit::{Admitted, Ask, Cleared, NotAdmitted, Recorded, Why, admit};
pub use checks::{
    Call, CallError, DEFAULT_MAX_SIGNED_TTL, DEFAULT_MIN_LIFE, Lifetime, agents_agree, choria_call,
    request_ids_agree,
};
pub use gate::Gate;
pub use refusal::{Code, Refusal, Stage};
pub use replay::{Claim, Mode, ReplayGuard};

use crate::audit::{Auditor, FileSink, JetStreamSink, Sink};
use crate::config::Config;
use crate::ddl::{DdlSet, UnknownAgents};
use crate::rules::{RuleStore, Rules};

/// The span one request's log lines carry on every ingress: the edge it came in on, and the
/// request id and caller once they are verified ([`note_request`]).
pub fn request_span(edge: &'static str) -> tracing::Span {
    tracing::info_span!(
        "request",
        edge,
        req = tracing::field::Empty,
        caller = tracing::field::Empty
    )
}

/// Notes the verified request id and caller on the current request's span.
pub fn note_request(requestid: &str, caller: &str) {
    let span = tracing::Span::current();
    span.record("req", requestid);
    span.record("caller", caller);
}

/// Why the gate could not open.
#[derive(Debug, thiserror::Error)]
#[error("{owner}: {problem}")]
pub struct GateError {
    /// What needed the gate (a federation, `edge`).
    pub owner: String,
    /// What is wrong.
    pub problem: String,
}

/// Loads the rules, opens the audit trail and the replay guard that every ingress of this
/// process shares; `owner` names what needed them, in errors.
pub async fn open_gate(
    config: &Config,
    owner: &str,
    instance: &str,
) -> Result<Arc<Gate>, GateError> {
    let problem = |problem: String| GateError {
        owner: owner.to_string(),
        problem,
    };
    let (Some(policy), Some(audit)) = (&config.policy, &config.audit) else {
        return Err(problem("resign mode needs [policy] and [audit]".into()));
    };
    let rules = Rules::load(config).map_err(problem)?;
    // With a registry the rules change only by revision; in file mode the policy directory and
    // the users file are watched.
    let watched = config
        .registry
        .is_none()
        .then_some((policy.dir.as_path(), policy.unconfigured));
    let users = config.edge.as_ref().and_then(|e| e.users.as_deref());
    let store = RuleStore::new(rules, watched).with_users_file(users.filter(|_| watched.is_some()));
    let mut sinks = Vec::new();
    let checkpoints = match &audit.checkpoint {
        Some(checkpoint) => Some(Arc::new(checkpoint.signer().map_err(problem)?)),
        None => None,
    };
    if let Some(mut options) = audit.file_options(instance) {
        options.checkpoints = checkpoints.clone();
        sinks.push(Sink::File(
            FileSink::open(options).map_err(|e| problem(e.to_string()))?,
        ));
    }
    if let Some(mut options) = audit.stream_options(instance) {
        options.checkpoints = checkpoints;
        sinks.push(Sink::JetStream(
            JetStreamSink::open(options)
                .await
                .map_err(|e| problem(e.to_string()))?,
        ));
    }
    let auditor = Auditor::new(instance, sinks, audit.record_values.clone());
    let lifetime = Lifetime::from_config(&config.replay);
    let guard = if config.replay.nats.is_empty() {
        ReplayGuard::local()
    } else {
        let client = crate::nats::connect_watched(
            &config.replay.endpoint(),
            &format!("fedgate replay {instance}"),
            "nats replay guard",
        )
        .await
        .map_err(|e| problem(format!("replay guard: {e}")))?;
        ReplayGuard::shared(
            client,
            &config.replay.bucket,
            lifetime.keep(),
            config.replay.replicas,
        )
        .await
        .map_err(problem)?
    };
    let ddl = match &config.ddl {
        Some(ddl) => {
            let unknown = if ddl.refuse_unknown_agents {
                UnknownAgents::Refuse
            } else {
                UnknownAgents::Pass
            };
            let set = DdlSet::load(&ddl.dir, unknown).map_err(|e| problem(e.to_string()))?;
            Some(Arc::new(set))
        }
        None => None,
    };
    let gate = Gate::new(Arc::new(store), auditor, instance.to_string());
    Ok(Arc::new(gate.with_replay(guard, lifetime).with_ddl(ddl)))
}
