//! The broker's resign mode through the admission path: one request verified and checked once,
//! then each destination collective's share admitted, claimed, re-signed, recorded and only
//! then published; every refusal of a verified caller recorded, counted and answered.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::Client;

use super::{ClusterContext, EDGE, clip, publish_all, refuse};
use crate::audit::{Event, Verdict};
use crate::federation::resign::{self, ResignRules, ResignTarget};
use crate::federation::resign::{Verified, translate};
use crate::federation::stats::Direction;
use crate::federation::transform::{ClusterRules, Destination, Egress, Refusal, RoutedRequest};
use crate::gateway::gate::{self, Gate};
use crate::gateway::{
    Admitted, Ask, Call, CallError, Claim, Mode, Recorded, Refusal as Admission, Why, admit,
    choria_call,
};
use crate::rules::Rules;
use crate::security::Now;
use crate::subjects::Target;
use crate::wire::Limits;
use crate::wire::choria_v1::{RelayTransport, Request, SecureRequest};
use crate::wire::choria_v2;

/// Resign mode through the admission path: verify once and check the call as signed (agents,
/// request id, lifetime), then per destination collective admit (map, authorize), claim the
/// signed bytes against replays, re-sign, record, and only then publish. A caller refused in one
/// collective still reaches the others; every refusal of a verified caller is answered on its
/// reply subject.
pub(super) async fn relay_resigned(
    ctx: &ClusterContext,
    rules: &ResignRules,
    gate: &Gate,
    routed: &RoutedRequest<'_>,
) {
    let now = Now::system();
    let mut event = Event {
        edge: EDGE.into(),
        realm: rules.realm.clone(),
        collectives: routed
            .groups()
            .keys()
            .map(|d| d.network().to_string())
            .collect(),
        targets: routed.groups().values().map(Vec::len).sum(),
        ..Event::default()
    };
    let verified = match resign::verify(routed, rules, now) {
        Ok(verified) => verified,
        Err(refusal) => {
            claimed(&mut event, routed, rules);
            deny(&mut event, "verify", &refusal);
            let _ = gate.record(event).await;
            return refuse(ctx, Direction::Request, &refusal);
        }
    };
    let request = verified.request();
    crate::gateway::note_request(&request.envelope.requestid, verified.caller().as_str());
    event.request_id = Some(request.envelope.requestid.clone());
    event.caller = Some(verified.caller().as_str().to_string());
    event.agent = Some(request.envelope.agent.clone());
    event.caller_filter = gate::summarize(&request.envelope.filter);
    let (call, until) = match checked(routed, (rules, gate), &verified, &mut event, now) {
        Ok(checked) => checked,
        Err(refusal) => {
            deny(&mut event, "decode", &refusal);
            return answer_refusal(ctx, gate, routed, event, &refusal).await;
        }
    };
    let ttl = Duration::from_secs(request.envelope.ttl.clamp(0, rules.max_ttl) as u64);
    // One set of rules maps and authorizes every copy of the request.
    let book = gate.rules();
    event.revision = book.revision;
    let share = Share {
        ctx,
        rules,
        gate,
        routed,
        verified: &verified,
        call: &call,
        until,
        now,
    };
    for (destination, targets) in routed.groups() {
        let Some(client) = ctx.networks.get(destination.network()) else {
            ctx.stats.error(Direction::Request);
            continue;
        };
        let event = Event {
            targets: targets.len(),
            ..event.clone()
        };
        if let Some(recorded) = share
            .admit(&book, destination, targets, client, event)
            .await
        {
            let (recorded, egress) = recorded;
            publish_recorded(ctx, client, &recorded, egress).await;
            gate.track(
                &request.envelope.requestid,
                recorded.link().to_string(),
                recorded.event(),
                ttl,
            )
            .await;
        }
    }
}

/// The checks of the call as signed, once for every destination: the federation header's
/// request id, the agents, the inputs against the DDL, and the lifetime. Hands back the call
/// and when the request stops being valid.
fn checked(
    routed: &RoutedRequest<'_>,
    (rules, gate): (&ResignRules, &Gate),
    verified: &Verified,
    event: &mut Event,
    now: Now,
) -> Result<(Call, i64), Refusal> {
    let request = verified.request();
    resign::check_headers(routed, verified)?;
    let call = choria_call(request, &rules.limits).map_err(|err| match err {
        CallError::Malformed(err) => Refusal::Malformed(err),
        CallError::Refused(refusal) => Refusal::Admission(refusal),
    })?;
    event.action = Some(call.action.clone());
    event.data_keys = call.data.keys().cloned().collect();
    if gate.auditor.records_values(&call.agent, &call.action) {
        event.data = Some(call.data.clone());
    }
    gate.check_inputs(&call.agent, &call.action, &call.data)
        .map_err(Refusal::Admission)?;
    let (time, ttl) = (request.envelope.time, request.envelope.ttl);
    let until = gate
        .lifetime
        .check(time, ttl, now.unix_seconds())
        .map_err(Refusal::Admission)?;
    Ok((call, until))
}

/// What every destination's share of one resigned request is decided with.
struct Share<'a> {
    ctx: &'a ClusterContext,
    rules: &'a ResignRules,
    gate: &'a Gate,
    routed: &'a RoutedRequest<'a>,
    verified: &'a Verified,
    call: &'a Call,
    until: i64,
    now: Now,
}

impl Share<'_> {
    /// Admits, claims, re-signs and records one destination's share; `None` when it was refused
    /// (recorded and answered here).
    async fn admit(
        &self,
        book: &Rules,
        destination: &Destination,
        targets: &[String],
        client: &Client,
        event: Event,
    ) -> Option<(Recorded, Vec<Egress>)> {
        let (ctx, gate, routed) = (self.ctx, self.gate, self.routed);
        let collective = destination.network();
        let request = self.verified.request();
        let target = match self.rules.target(collective) {
            Ok(target) => target,
            Err(refusal) => {
                let mut event = event;
                deny(&mut event, "map", &refusal);
                answer_refusal(ctx, gate, routed, event, &refusal).await;
                return None;
            }
        };
        let ask = Ask {
            realm: &self.rules.realm,
            caller: self.verified.caller(),
            collective,
            agent: &self.call.agent,
            action: &self.call.action,
            filter: &request.envelope.filter,
        };
        let admitted = match admit(gate, book, &ask, event) {
            Ok(admitted) => admitted,
            Err(not) => {
                let req = &request.envelope.requestid;
                let rule = not.refusal.rule.as_deref().unwrap_or("none");
                match &not.why {
                    Why::Map(_) => {
                        tracing::warn!(cluster = %ctx.rules.cluster, %req, code = not.refusal.code.as_str(), rule, "{}", clip(&not.refusal.reason))
                    }
                    Why::Policy(denied) => {
                        tracing::info!(cluster = %ctx.rules.cluster, %req, rule, kind = denied.kind.as_str(), "request denied by policy")
                    }
                }
                let refusal = Refusal::Admission(not.refusal);
                answer_refusal(ctx, gate, routed, not.event, &refusal).await;
                return None;
            }
        };
        let mode = match Target::parse(&targets[0]) {
            Some(Target::Broadcast { .. }) | None => Mode::Broadcast,
            Some(Target::Node { .. }) => Mode::Directed(targets),
        };
        let claim = Claim {
            realm: &self.rules.realm,
            signed: self.verified.signed_bytes(),
            collective,
            mode,
        };
        if let Err(err) = gate
            .replay
            .claim(&claim, self.until, self.now.unix_seconds())
            .await
        {
            let refusal = Refusal::Admission(err.into());
            let mut event = admitted.event().clone();
            deny(&mut event, "replay", &refusal);
            // A replay's reply subject is the replayer's choice, not the caller's: it is
            // recorded and counted, never answered.
            if let Err(err) = gate.record(event).await {
                tracing::error!(error = %err, "could not record a refusal");
            }
            refuse(ctx, Direction::Request, &refusal);
            return None;
        }
        let egress = self.resign(destination, targets, client, target, &admitted);
        let egress = match egress {
            Ok(egress) => egress,
            Err((stage, refusal)) => {
                gate.replay.release(&claim).await;
                let mut event = admitted.event().clone();
                deny(&mut event, stage, &refusal);
                answer_refusal(ctx, gate, routed, event, &refusal).await;
                return None;
            }
        };
        match gate.record_admitted(admitted).await {
            Ok(recorded) => Some((recorded, egress)),
            Err((admitted, err)) => {
                gate.replay.release(&claim).await;
                let refusal = Refusal::Admission(Admission::unrecorded(&err));
                let mut event = admitted.event().clone();
                deny(&mut event, "audit", &refusal);
                reply_to_caller(ctx, gate, routed, &event).await;
                refuse(ctx, Direction::Request, &refusal);
                None
            }
        }
    }

    /// Re-signs one destination's share as its mapped caller with the restricted filter; the
    /// stage and refusal when it cannot be, or the destination is not connected.
    fn resign(
        &self,
        destination: &Destination,
        targets: &[String],
        client: &Client,
        target: &ResignTarget,
        admitted: &Admitted,
    ) -> Result<Vec<Egress>, (&'static str, Refusal)> {
        let outbound = self.ctx.urls.get(destination.network(), client);
        let inbound = self.ctx.federation_url();
        let mapped = resign::Mapped {
            target,
            callerid: admitted.mapped(),
        };
        let resigned = resign::resign_for(
            self.routed,
            self.verified,
            destination,
            targets,
            (&self.ctx.rules, self.rules),
            (&*inbound, &*outbound),
            mapped,
            admitted.filter(),
            self.now,
        );
        match resigned {
            Err(refusal) => Err(("resign", refusal)),
            Ok(_) if client.connection_state() != async_nats::connection::State::Connected => {
                let collective = destination.network().to_string();
                Err(("publish", Refusal::Unreachable(collective)))
            }
            Ok(resigned) => Ok(resigned.egress),
        }
    }
}

/// Marks `event` as refused at `stage` for `refusal`.
pub(super) fn deny(event: &mut Event, stage: &str, refusal: &Refusal) {
    if let Refusal::Admission(admission) = refusal {
        admission.mark(event);
        // Parts of the reason come off the wire (a header's request id, a target's agent).
        event.reason = clip(&event.reason);
        return;
    }
    event.decision = Some(Verdict::Deny);
    event.stage = stage.into();
    event.code = refusal.reason().into();
    event.reason = err_text(refusal);
}

fn err_text(refusal: &Refusal) -> String {
    clip(&refusal.to_string())
}

/// What an unverifiable request claims, for the audit record (marked as claimed, not proven).
fn claimed(event: &mut Event, routed: &RoutedRequest<'_>, rules: &ResignRules) {
    let limits = &rules.limits;
    let Some(request) = claimed_request(routed.transport(), limits) else {
        return;
    };
    event.request_id = Some(clip(&request.envelope.requestid));
    claim(event, &request, limits);
}

/// What a request refused before it could be routed (its framing or routing: `max_hops`,
/// `bad_reply_to`, `not_member`...) claims, for the audit record, so `audit query` finds it:
/// the federation header's request id (else the signed request's), the collectives its targets
/// name, and the caller id, agent and action the signed request claims when its data decodes.
/// Nothing of it is verified: the caller id goes in `claimed_caller`, never in `caller`.
pub(super) fn claimed_unrouted(event: &mut Event, bytes: &[u8], rules: &ClusterRules) {
    let limits = &rules.limits;
    let Ok(transport) = RelayTransport::decode(bytes, limits) else {
        return;
    };
    if let Some(federation) = &transport.headers.federation {
        event.request_id = federation.req.clone();
        event.targets = federation.target.len();
        let named: BTreeSet<&str> = federation
            .target
            .iter()
            .filter_map(|target| Target::parse(target))
            .map(|target| target.collective())
            .collect();
        event.collectives = named.into_iter().map(str::to_string).collect();
    }
    let Some(request) = claimed_request(&transport, limits) else {
        return;
    };
    if event.request_id.is_none() {
        event.request_id = Some(request.envelope.requestid.clone());
    }
    claim(event, &request, limits);
}

/// The request inside a transport's data (a v2 one in v1's terms), decoded without checking
/// its signature.
fn claimed_request(transport: &RelayTransport<'_>, limits: &Limits) -> Option<Request> {
    let data = crate::wire::decode_base64_lenient(transport.data()).ok()?;
    if transport.is_v2() {
        let secure = choria_v2::SecureRequest::decode(&data, limits).ok()?;
        return Some(secure.decode_request(limits).ok()?.view_v1());
    }
    SecureRequest::decode(&data, limits)
        .ok()?
        .request(limits)
        .ok()
}

/// Notes what an unverified `request` claims: its caller id as claimed, its agent and action.
fn claim(event: &mut Event, request: &Request, limits: &Limits) {
    event.claimed_caller = Some(clip(&request.envelope.callerid));
    event.agent = Some(clip(&request.envelope.agent));
    if let Ok(rpc) = request.rpc(limits) {
        event.action = Some(clip(&rpc.action));
    }
}

/// Records a refusal of a verified caller, answers it, and counts it.
async fn answer_refusal(
    ctx: &ClusterContext,
    gate: &Gate,
    routed: &RoutedRequest<'_>,
    event: Event,
    refusal: &Refusal,
) {
    if let Err(err) = gate.record(event.clone()).await {
        tracing::error!(error = %err, "could not record a refusal");
    }
    reply_to_caller(ctx, gate, routed, &event).await;
    refuse(ctx, Direction::Request, refusal);
}

/// Tells the caller why: a reply from `fedgate:<instance>` with status 1 on its reply subject.
async fn reply_to_caller(
    ctx: &ClusterContext,
    gate: &Gate,
    routed: &RoutedRequest<'_>,
    event: &Event,
) {
    let (agent, action) = (
        event.agent.as_deref().unwrap_or_default(),
        event.action.as_deref().unwrap_or_default(),
    );
    let subject = routed.reply_to().to_string();
    // A v2 caller is answered in v2, under its own request id.
    let payload = if routed.transport().is_v2() {
        let body = gate::refusal_body(action, event);
        let sender = gate::refusal_sender(&gate.instance);
        translate::refusal_v2(&body, routed.request_id(), &sender, agent)
    } else {
        gate::refusal_reply(&gate.instance, routed.request_id(), agent, action, event).encode()
    };
    if let Err(err) = ctx.federation.publish(subject, payload.into()).await {
        tracing::warn!(cluster = %ctx.rules.cluster, %err, "could not tell the caller why its request was refused");
    }
}

/// Publishes a recorded request's messages: in resign mode nothing that is not on the record
/// goes out.
async fn publish_recorded(
    ctx: &ClusterContext,
    client: &Client,
    _recorded: &Recorded,
    egress: Vec<Egress>,
) {
    publish_all(ctx, client, egress).await;
}
