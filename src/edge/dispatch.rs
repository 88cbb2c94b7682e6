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

mod run;
mod signed;

use super::homes::{HOME_TTL, Homes, MAX_HOMES};
pub use super::job::{Job, Scope};
use crate::audit::flood::{Aggregator, Keyed, Take};
use crate::audit::{Event, Verdict};
use crate::client::{Egress, RpcCall};
use crate::config::Config;
use crate::gateway::gate::Gate;
use crate::gateway::{self, Ask, Claim, Cleared, Code, Mode, Recorded, Refusal, Stage, admit};
use crate::rules::Rules;
use crate::security::{CaBundle, CallerId, Now, Verifier};
use crate::wire::Limits;

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
    /// The token's claims, to check it against revocations (never the token).
    pub token: Option<Arc<crate::edge::auth::Claims>>,
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
        /// How fedgate signs there: its privileged certificate (v1), or as a delegator (v2).
        egress: Egress,
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
    /// Verifies signed Choria v2 requests against `[edge] issuers`.
    v2_verifier: Option<crate::security::v2::V2Verifier>,
    /// The keys fedgate signs into v2 collectives with: a request signed with one of them, or
    /// for a caller token fedgate issued, was published by fedgate and never comes back in.
    own_v2_keys: std::collections::BTreeSet<String>,
    sender: String,
    limits: Limits,
    /// Which collective each node answered from, for a federation's directed requests.
    homes: Homes,
    /// The budgets of refusals before verification (per source address) and before a decision
    /// (rate-limited, per caller).
    flood: Option<Arc<Floods>>,
}

/// A request admitted into one collective: recorded, ready to publish.
struct Admitted<'d> {
    collective: String,
    target: &'d EdgeTarget,
    /// What the share may be published as.
    cleared: Cleared,
    call: RpcCall,
    event: Event,
    link: String,
}

/// The edge's record budgets.
struct Floods {
    unverified: Aggregator,
    rate_limited: Aggregator,
}

/// Writes each interval's summary records until the budgets are dropped with their dispatcher.
fn summarize(floods: std::sync::Weak<Floods>, gate: Arc<Gate>, interval: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            ticks.tick().await;
            let Some(floods) = floods.upgrade() else {
                return;
            };
            let summaries = floods.unverified.drain();
            let summaries = summaries.into_iter().chain(floods.rate_limited.drain());
            for event in summaries {
                // A summary that cannot be recorded is counted by the auditor like any record.
                let _ = gate.record(event).await;
            }
        }
    });
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
        // Without an `[edge]` (the legacy bridge's dispatcher), the client's own default.
        let reply_buffer =
            edge.map_or(crate::nats::DEFAULT_SUBSCRIPTION_BUFFER, |e| e.reply_buffer);
        let limits = Limits::default();
        let verifier = edge
            .and_then(|e| e.ca.as_ref())
            .map(|ca| {
                CaBundle::from_file(ca)
                    .map(|bundle| Verifier::with_defaults(bundle, limits))
                    .map_err(|e| format!("edge ca: {e}"))
            })
            .transpose()?;
        let v2_verifier = edge
            .map(|e| e.v2_issuers())
            .transpose()
            .map_err(|e| format!("edge issuers: {e}"))?
            .flatten()
            .map(|issuers| crate::security::v2::V2Verifier::new(issuers, limits));
        let mut targets = BTreeMap::new();
        for (name, collective) in &config.collectives {
            let Some(egress) = collective.load_egress(name, limits, Now::system())? else {
                continue;
            };
            let nats = crate::nats::connect_buffered(
                &collective.endpoint(),
                &format!("fedgate edge {instance}"),
                &format!("nats collective {name} (edge)"),
                reply_buffer,
            )
            .await
            .map_err(|e| format!("collective {name}: {e}"))?;
            targets.insert(
                name.clone(),
                EdgeTarget::Choria {
                    nats,
                    egress,
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
        let own_v2_keys = targets
            .values()
            .filter_map(|target| match target {
                EdgeTarget::Choria {
                    egress: Egress::V2(egress),
                    ..
                } => Some(egress.public_key()),
                _ => None,
            })
            .collect();
        let (federations, unreached) = federation_members(config, &targets)?;
        let flood = edge.map(|e| {
            let interval = Duration::from_secs(e.unverified_interval_s.max(1));
            let floods = Arc::new(Floods {
                unverified: Aggregator::new(Keyed::Source, e.unverified_budget, interval),
                rate_limited: Aggregator::new(Keyed::RateLimited, e.unverified_budget, interval),
            });
            summarize(Arc::downgrade(&floods), gate.clone(), interval);
            floods
        });
        Ok(Dispatcher {
            realm,
            gate,
            targets,
            federations: arc_swap::ArcSwap::from_pointee(federations),
            unreached,
            verifier,
            v2_verifier,
            own_v2_keys,
            sender: format!("fedgate-edge-{instance}"),
            limits,
            homes: Homes::new(MAX_HOMES, HOME_TTL),
            flood,
        })
    }

    /// Whether this edge verifies self-signed requests (`[edge]` has a `ca`, or v2 `issuers`).
    pub fn takes_signed(&self) -> bool {
        self.verifier.is_some() || self.v2_verifier.is_some()
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

    /// Records and counts a request the admission path refused; hands the refusal back.
    async fn refused(&self, mut event: Event, refusal: Refusal) -> Refusal {
        refusal.count("websocket");
        refusal.mark(&mut event);
        // A refusal that cannot be recorded is still a refusal.
        let _ = self.gate.record(event).await;
        refusal
    }

    /// Records and counts a request refused before its caller was verified; from a source over
    /// its budget, it is counted in that source's summary record instead.
    async fn refused_unverified(
        &self,
        mut event: Event,
        refusal: Refusal,
        source: Option<std::net::IpAddr>,
    ) -> Refusal {
        let (Some(flood), Some(source)) = (&self.flood, source) else {
            return self.refused(event, refusal).await;
        };
        refusal.count("websocket");
        refusal.mark(&mut event);
        if flood.unverified.take(&source.to_string(), &event) == Take::Record {
            let _ = self.gate.record(event).await;
        }
        refusal
    }

    /// Records a request refused before it was looked at (rate limit); beyond the budget, in
    /// the caller's summary record.
    pub async fn refused_early(&self, principal: &Principal, job: &Job, code: &str, reason: &str) {
        let mut event = self.event(principal, job, None);
        event.decision = Some(Verdict::Deny);
        event.stage = "edge".into();
        event.code = code.into();
        event.reason = reason.into();
        let caller = principal.caller.as_str();
        if self
            .flood
            .as_ref()
            .is_none_or(|flood| flood.rate_limited.take(caller, &event) == Take::Record)
        {
            // A refusal that cannot be recorded is still a refusal.
            let _ = self.gate.record(event).await;
        }
    }

    /// Records a token refused because the users file in force revokes it.
    pub async fn refused_revoked(&self, principal: &Principal, reason: &str) {
        let event = Event {
            edge: "websocket".into(),
            realm: self.realm.clone(),
            caller: Some(principal.caller.as_str().to_string()),
            revision: self.gate.rules().revision,
            ..Event::default()
        };
        self.refuse(event, "edge", "token_revoked", reason.into(), None)
            .await;
    }

    /// The rules' version, which changes whenever new rules (policy, users) are in force.
    pub fn rule_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.gate.rules.changes()
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

    /// Maps, authorizes and records one collective's share of a request.
    async fn admit<'d>(
        &'d self,
        rules: &Rules,
        principal: &Principal,
        job: &Job,
        collective: &str,
        targets: &[String],
    ) -> Result<Admitted<'d>, Refusal> {
        let mut event = self.event(principal, job, Some(collective));
        event.revision = rules.revision;
        event.targets = targets.len();
        let target = match self.targets.get(collective) {
            Some(target) if principal.allows(collective) => target,
            _ => {
                let message =
                    format!("collective {collective} is not reachable with these credentials");
                let refusal = Refusal::new(Stage::Route, Code::UnknownCollective, message);
                return Err(self.refused(event, refusal).await);
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
            Err(not) => return Err(self.refused(not.event, not.refusal).await),
        };
        let recorded = self.record(admitted, job, collective, targets).await?;
        let call = share_call(job, target, &recorded, targets);
        Ok(Admitted {
            collective: collective.to_string(),
            target,
            cleared: recorded.cleared(),
            call,
            event: recorded.event().clone(),
            link: recorded.link().to_string(),
        })
    }

    /// Claims a self-signed request for this collective and its targets (once mapped and
    /// authorized, so no caller can fill the guard for others), then records the decision.
    async fn record(
        &self,
        admitted: gateway::Admitted,
        job: &Job,
        collective: &str,
        targets: &[String],
    ) -> Result<Recorded, Refusal> {
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
                let refusal = Refusal::from(err);
                metrics::counter!("fedgate_edge_signed_refused_total", "reason" => refusal.code.as_str())
                    .increment(1);
                return Err(self.refused(admitted.event().clone(), refusal).await);
            }
        }
        match self.gate.record_admitted(admitted).await {
            Ok(recorded) => Ok(recorded),
            Err((_, err)) => {
                // Not sent: the signed request may be tried again.
                if let Some(claim) = &claim {
                    self.gate.replay.release(claim).await;
                }
                let refusal = Refusal::unrecorded(&err);
                refusal.count("websocket");
                Err(refusal)
            }
        }
    }
}

/// One collective's call of a recorded request.
fn share_call(job: &Job, target: &EdgeTarget, recorded: &Recorded, targets: &[String]) -> RpcCall {
    let wire_name = match target {
        EdgeTarget::Choria { internal, .. } => internal.as_str(),
        EdgeTarget::Legacy(link) => link.name(),
    };
    RpcCall {
        data: job.data.clone(),
        filter: recorded.filter().clone(),
        targets: targets.to_vec(),
        timeout: job.timeout,
        // A federation's limit is shared by its members (see `run`): none waits for it alone.
        expect: job
            .limit
            .filter(|_| matches!(job.scope, Scope::Collective(_))),
        // With a limit, the shares wait for it together (the tally stops them all when it is
        // reached); only a broadcast without one ends on a quiet second. A member that paused
        // for a second ended its share early, and a big fleet's late replies were never heard.
        idle: match job.limit {
            Some(_) => job.timeout,
            None => Duration::from_secs(1).min(job.timeout),
        },
        ttl: job.ttl,
        expires: job.expires,
        ..RpcCall::new(wire_name, &job.agent, &job.action)
    }
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
