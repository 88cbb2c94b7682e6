//! One edge request, the same path as every other: map the caller into each collective, authorize
//! the mapped caller with actionpolicy, record the decision, sign with fedgate's privileged
//! certificate there as the mapped caller, publish, and stream the replies back.
//!
//! A request names a collective, or a federation: then it goes to every member collective the
//! edge has a privileged signer for, each with its own mapping, decision and audit record, and
//! the replies are merged. Self-signed Choria requests are verified against the edge CA first
//! ([`Dispatcher::verify_signed`]) and then take the same path as the caller they name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::job::{DEFAULT_TTL, check_id, collection};
mod run;

use super::homes::{HOME_TTL, Homes, MAX_HOMES};
pub use super::job::{Job, Scope};
use super::protocol::{ErrorCode, SignedMessage};
use crate::audit::{Event, Verdict};
use crate::client::RpcCall;
use crate::config::Config;
use crate::gateway::gate::Gate;
use crate::gateway::{Ask, CallError, Claim, Code, Mode, Why, admit, choria_call};
use crate::rules::Rules;
use crate::security::{CaBundle, CallerId, Now, Signer, VerifiedRequest, Verifier};
use crate::subjects::is_valid_name;
use crate::wire::Limits;
use crate::wire::choria_v1::SecureRequest;

/// Who a request speaks for.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The caller id before mapping: `choria=<CN>` or `up=<user>`.
    pub caller: CallerId,
    /// `certificate`, `token` or `signed`.
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
pub enum EdgeTarget {
    /// A Choria collective on NATS, where fedgate's privileged certificate signs.
    Choria {
        /// Its NATS connection.
        nats: async_nats::Client,
        /// fedgate's privileged signer there.
        signer: Arc<Signer>,
        /// Its name on the wire.
        internal: String,
    },
    /// A legacy MCollective collective on RabbitMQ, where fedgate signs as the mapped
    /// `cert=<name>`.
    Legacy(Arc<crate::legacy::LegacyLink>),
}

/// Everything a request needs besides its socket.
pub struct Dispatcher {
    realm: String,
    gate: Arc<Gate>,
    targets: BTreeMap<String, EdgeTarget>,
    /// Each federation's member collectives that the edge has a signer for.
    /// Each federation's members this edge reaches; replaced when membership changes.
    federations: arc_swap::ArcSwap<Membership>,
    /// Members it could not reach at start-up (through another federation, or unconnected).
    unreached: Vec<String>,
    /// Verifies self-signed requests against the edge CA.
    verifier: Option<Verifier>,
    sender: String,
    limits: Limits,
    /// Which collective each node answered from, for a federation's directed requests.
    homes: Homes,
}

/// A request admitted into one collective: recorded, ready to publish.
struct Admitted<'d> {
    collective: String,
    target: &'d EdgeTarget,
    mapped: CallerId,
    call: RpcCall,
    requestid: String,
    event: Event,
    link: String,
}

/// Why a collective did not take a request.
struct Refused {
    code: ErrorCode,
    message: String,
}

impl Refused {
    fn new(code: ErrorCode, message: String) -> Refused {
        Refused { code, message }
    }
}

impl Dispatcher {
    /// Connects to every collective that has a privileged signer.
    pub async fn connect(
        config: &Config,
        gate: Arc<Gate>,
        instance: &str,
    ) -> Result<Dispatcher, String> {
        let edge = config.edge.as_ref();
        let realm = edge.map_or_else(|| "edge".to_string(), |e| e.realm.clone());
        let limits = Limits::default();
        let verifier = edge
            .and_then(|e| e.ca.as_ref())
            .map(|ca| {
                CaBundle::from_file(ca)
                    .map(|bundle| Verifier::with_defaults(bundle, limits))
                    .map_err(|e| format!("edge ca: {e}"))
            })
            .transpose()?;
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
                EdgeTarget::Choria {
                    nats,
                    signer: Arc::new(signer),
                    internal: collective.internal_name(name).to_string(),
                },
            );
        }
        for (name, legacy) in &config.legacy {
            let link = crate::legacy::LegacyLink::connect(name, legacy, instance)
                .await
                .map_err(|e| format!("legacy {name}: {e}"))?;
            targets.insert(name.clone(), EdgeTarget::Legacy(Arc::new(link)));
        }
        let (federations, unreached) = federation_members(config, &targets)?;
        Ok(Dispatcher {
            realm,
            gate,
            targets,
            federations: arc_swap::ArcSwap::from_pointee(federations),
            unreached,
            verifier,
            sender: format!("fedgate-edge-{instance}"),
            limits,
            homes: Homes::new(MAX_HOMES, HOME_TTL),
        })
    }

    /// Whether this edge verifies self-signed requests (`[edge]` has a `ca`).
    pub fn takes_signed(&self) -> bool {
        self.verifier.is_some()
    }

    /// The rules in force now.
    pub fn rules(&self) -> Arc<Rules> {
        self.gate.rules()
    }

    fn mapped(&self, rules: &Rules, principal: &Principal, collective: &str) -> bool {
        principal.allows(collective)
            && crate::gateway::admit::maps(rules, &self.realm, &principal.caller, collective)
    }

    /// Takes the federations' membership from `config` (a new registry revision). Members on
    /// networks this edge did not connect to at start-up are left out and returned: they take
    /// effect at the next start.
    pub fn set_membership(&self, config: &Config) -> Result<Vec<String>, String> {
        let (federations, unreached) = federation_members(config, &self.targets)?;
        self.federations.store(Arc::new(federations));
        Ok(unreached
            .into_iter()
            .filter(|m| !self.unreached.contains(m))
            .collect())
    }

    /// The collectives and federations `principal` could reach: allowed by its token and mapped
    /// by a rule (a federation when at least one of its members is).
    pub fn reachable(&self, principal: &Principal) -> (Vec<String>, Vec<String>) {
        let rules = self.gate.rules();
        let collectives = self
            .targets
            .keys()
            .filter(|name| self.mapped(&rules, principal, name))
            .cloned()
            .collect();
        let federations = self
            .federations
            .load()
            .iter()
            .filter(|(_, members)| members.iter().any(|m| self.mapped(&rules, principal, m)))
            .map(|(name, _)| name.clone())
            .collect();
        (collectives, federations)
    }

    fn event(&self, principal: &Principal, job: &Job, collective: Option<&str>) -> Event {
        Event {
            edge: "websocket".into(),
            realm: self.realm.clone(),
            caller: Some(principal.caller.as_str().to_string()),
            collectives: collective.map(str::to_string).into_iter().collect(),
            agent: Some(job.agent.clone()),
            action: Some(job.action.clone()),
            data_keys: job.data.keys().cloned().collect(),
            targets: job.targets.len(),
            request_id: job.requestid.clone(),
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
    pub async fn refused_early(&self, principal: &Principal, job: &Job, code: &str, reason: &str) {
        let event = self.event(principal, job, None);
        self.refuse(event, "edge", code, reason.into(), None).await;
    }

    /// Records an `rpc` message that is not a valid request; `caller` is who sent it.
    pub async fn refused_invalid(&self, principal: &Principal, message: &str) {
        let event = Event {
            edge: "websocket".into(),
            realm: self.realm.clone(),
            caller: Some(principal.caller.as_str().to_string()),
            ..Event::default()
        };
        self.refuse(event, "decode", "invalid", message.into(), None)
            .await;
    }

    /// Verifies a self-signed Choria request against the edge CA, as a Choria server would
    /// (chain, caller name, allow list, signature, TTL), refuses a request id seen before, and
    /// returns the verified caller and the request as a job. Every refusal is recorded with the
    /// caller the request claims.
    pub async fn verify_signed(
        &self,
        signed: SignedMessage,
        now: Now,
    ) -> Result<(Principal, Job), (ErrorCode, String)> {
        check_id(&signed.id).map_err(|m| (ErrorCode::Invalid, m))?;
        let bytes = match &signed.request {
            Value::String(text) => text.clone().into_bytes(),
            other => serde_json::to_vec(other).unwrap_or_default(),
        };
        let secure = SecureRequest::decode(&bytes, &self.limits);
        let claimed = secure
            .as_ref()
            .ok()
            .and_then(|s| s.request(&self.limits).ok());
        let refusal = |code: &str, stage: &str, message: String| {
            let event = Event {
                edge: "websocket".into(),
                realm: self.realm.clone(),
                claimed_caller: claimed.as_ref().map(|r| r.envelope.callerid.clone()),
                request_id: claimed.as_ref().map(|r| r.envelope.requestid.clone()),
                collectives: claimed
                    .as_ref()
                    .map(|r| r.envelope.collective.clone())
                    .into_iter()
                    .collect(),
                agent: claimed.as_ref().map(|r| r.envelope.agent.clone()),
                ..Event::default()
            };
            let code = code.to_string();
            let stage = stage.to_string();
            async move {
                self.refuse(event, &stage, &code, message.clone(), None)
                    .await;
                message
            }
        };
        let Some(verifier) = &self.verifier else {
            let message = "this edge takes no signed requests: [edge] has no ca".to_string();
            return Err((
                ErrorCode::Unverified,
                refusal("unverified", "verify", message).await,
            ));
        };
        let verified = match secure.map_err(crate::security::VerifyError::from) {
            Ok(secure) => verifier.verify(secure, now),
            Err(err) => Err(err),
        };
        let verified = match verified {
            Ok(verified) => verified,
            Err(err) => {
                metrics::counter!("fedgate_edge_signed_refused_total", "reason" => err.reason().as_str())
                    .increment(1);
                let message = format!("signed request refused: {err}");
                return Err((
                    ErrorCode::Unverified,
                    refusal(err.reason().as_str(), "verify", message).await,
                ));
            }
        };
        if let Err(message) = bound_to_certificate(&verified) {
            metrics::counter!("fedgate_edge_signed_refused_total", "reason" => "caller_kind")
                .increment(1);
            return Err((
                ErrorCode::Unverified,
                refusal("caller_kind", "verify", message).await,
            ));
        }
        let envelope = &verified.request().envelope;
        // The call as signed, decided as on every ingress: discovery is `discovery#ping`, and
        // the payload must be for the envelope's agent.
        let body = match choria_call(verified.request(), &self.limits) {
            Ok(body) => body,
            Err(CallError::Refused(mismatch)) => {
                let code = mismatch.code.as_str();
                return Err((
                    ErrorCode::Invalid,
                    refusal(code, "decode", mismatch.reason.clone()).await,
                ));
            }
            Err(CallError::Malformed(err)) => {
                let message = format!("the payload is not an RPC request: {err}");
                return Err((
                    ErrorCode::Invalid,
                    refusal("invalid", "decode", message).await,
                ));
            }
        };
        if !is_valid_name(&body.action) {
            let message = format!("action {:?} is not a valid name", body.action);
            return Err((
                ErrorCode::Invalid,
                refusal("invalid", "decode", message).await,
            ));
        }
        let (timeout, limit) = match collection(&signed.targets, signed.timeout_ms, signed.limit) {
            Ok(settings) => settings,
            Err(message) => {
                return Err((
                    ErrorCode::Invalid,
                    refusal("invalid", "decode", message).await,
                ));
            }
        };
        // The same lifetime rules as every ingress: a capped signed TTL, and enough life left;
        // the published request ends with the original (`RpcCall::expires`).
        let now_s = now.unix_seconds();
        let until = match self.gate.lifetime.check(envelope.time, envelope.ttl, now_s) {
            Ok(until) => until,
            Err(window) => {
                metrics::counter!("fedgate_edge_signed_refused_total", "reason" => window.code.as_str())
                    .increment(1);
                let code = match window.code {
                    Code::Expiring => ErrorCode::Expiring,
                    _ => ErrorCode::Invalid,
                };
                let message = format!("request {}: {}", envelope.requestid, window.reason);
                return Err((code, refusal(window.code.as_str(), "verify", message).await));
            }
        };
        let principal = Principal {
            caller: verified.caller().clone(),
            method: "signed",
            expires: None,
            collectives: None,
            token_id: None,
        };
        let job = Job {
            id: signed.id,
            scope: Scope::Collective(envelope.collective.clone()),
            agent: body.agent,
            action: body.action,
            data: body.data,
            filter: envelope.filter.clone(),
            targets: signed.targets,
            timeout,
            limit,
            // Valid no longer than the client's own request is.
            ttl: DEFAULT_TTL,
            expires: Some(until),
            requestid: Some(envelope.requestid.clone()),
            signed: Some(verified.secure().message.clone()),
        };
        Ok((principal, job))
    }

    /// Maps, authorizes and records one collective's share of a request.
    async fn admit<'d>(
        &'d self,
        rules: &Rules,
        principal: &Principal,
        job: &Job,
        collective: &str,
        targets: &[String],
    ) -> Result<Admitted<'d>, Refused> {
        let mut event = self.event(principal, job, Some(collective));
        event.revision = rules.revision;
        event.targets = targets.len();
        let target = match self.targets.get(collective) {
            Some(target) if principal.allows(collective) => target,
            _ => {
                let message =
                    format!("collective {collective} is not reachable with these credentials");
                self.refuse(event, "route", "unknown_collective", message.clone(), None)
                    .await;
                return Err(Refused::new(ErrorCode::UnknownCollective, message));
            }
        };
        let requestid = job
            .requestid
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        event.request_id = Some(requestid.clone());
        if self.gate.auditor.records_values(&job.agent, &job.action) {
            event.data = Some(job.data.clone());
        }
        let ask = Ask {
            realm: &self.realm,
            caller: &principal.caller,
            collective,
            agent: &job.agent,
            action: &job.action,
            filter: &job.filter,
        };
        let admitted = match admit(&self.gate, rules, &ask, event) {
            Ok(admitted) => admitted,
            Err(not) => {
                let code = match not.why {
                    Why::Map(_) => ErrorCode::Unmapped,
                    Why::Policy(_) => ErrorCode::Denied,
                };
                let _ = self.gate.record(not.event).await;
                return Err(Refused::new(code, not.reason));
            }
        };
        // A self-signed request is claimed for this collective and its targets, once mapped and
        // authorized, so no caller can fill the guard for others.
        let claim = job.signed.as_ref().map(|signed| Claim {
            realm: &self.realm,
            signed: signed.as_bytes(),
            collective,
            mode: match targets {
                [] => Mode::Broadcast,
                targets => Mode::Directed(targets),
            },
        });
        if let Some(claim) = &claim {
            let now = Now::system().unix_seconds();
            let until = job.expires.unwrap_or(now);
            if let Err(err) = self.gate.replay.claim(claim, until, now).await {
                let refusal = crate::gateway::Refusal::from(err);
                metrics::counter!("fedgate_edge_signed_refused_total", "reason" => refusal.code.as_str())
                    .increment(1);
                let mut event = admitted.event().clone();
                event.decision = Some(Verdict::Deny);
                event.stage = refusal.stage.as_str().into();
                event.code = refusal.code.as_str().into();
                event.reason = refusal.reason.clone();
                let _ = self.gate.record(event).await;
                return Err(Refused::new(ErrorCode::Unverified, refusal.reason));
            }
        }
        let recorded = match self.gate.record_admitted(admitted).await {
            Ok(recorded) => recorded,
            Err((_, err)) => {
                // Nothing was sent: the claim goes back, so the caller may send it again.
                if let Some(claim) = &claim {
                    self.gate.replay.release(claim).await;
                }
                return Err(Refused::new(
                    ErrorCode::AuditFailed,
                    format!("the request could not be recorded, so it was not sent: {err}"),
                ));
            }
        };
        let wire_name = match target {
            EdgeTarget::Choria { internal, .. } => internal.as_str(),
            EdgeTarget::Legacy(link) => link.name(),
        };
        let call = RpcCall {
            data: job.data.clone(),
            filter: recorded.filter().clone(),
            targets: targets.to_vec(),
            timeout: job.timeout,
            // A federation's limit is shared by its members (see `run`): none waits for it alone.
            expect: job
                .limit
                .filter(|_| matches!(job.scope, Scope::Collective(_))),
            idle: Duration::from_secs(1).min(job.timeout),
            ttl: job.ttl,
            expires: job.expires,
            ..RpcCall::new(wire_name, &job.agent, &job.action)
        };
        Ok(Admitted {
            collective: collective.to_string(),
            target,
            mapped: recorded.mapped().clone(),
            call,
            requestid,
            event: recorded.event().clone(),
            link: recorded.link().to_string(),
        })
    }
}

/// Kinds of caller id a certificate speaks as: Choria's `choria=` and MCollective's `cert=`.
const CERTIFICATE_KINDS: [&str; 2] = ["choria", "cert"];

/// A certificate speaks only as `choria=<name>` or `cert=<name>` of a name it carries (which
/// the verifier checked), with nothing after the name; a password or token user is `up=`, and
/// a certificate is not. A privileged certificate may speak for anyone, as in Choria.
fn bound_to_certificate(verified: &VerifiedRequest) -> Result<(), String> {
    let caller = verified.caller();
    if verified.privileged() || (CERTIFICATE_KINDS.contains(&caller.kind()) && caller.is_exact()) {
        return Ok(());
    }
    Err(format!(
        "the certificate of {} speaks as choria={} or cert={}, not as {}",
        verified.signer(),
        caller.identity(),
        caller.identity(),
        caller.as_str()
    ))
}

/// Each federation's members an edge reaches, by federation.
type Membership = BTreeMap<String, Vec<String>>;

/// Each federation's members that `targets` reaches, and the members it does not.
fn federation_members(
    config: &Config,
    targets: &BTreeMap<String, EdgeTarget>,
) -> Result<(Membership, Vec<String>), String> {
    let mut federations = BTreeMap::new();
    let mut unreached = Vec::new();
    for name in config.federations.keys() {
        let (members, missing): (Vec<String>, Vec<String>) = config
            .routes(name)?
            .into_keys()
            .partition(|c| targets.contains_key(c));
        unreached.extend(missing.into_iter().map(|m| format!("{name}:{m}")));
        if !members.is_empty() {
            federations.insert(name.clone(), members);
        }
    }
    Ok((federations, unreached))
}
