//! Running one admitted request: expand its scope into collectives (each directed target only
//! to the member that holds it, when that is known), admit each share, publish, merge the
//! replies, and end with `done` or `error`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Admitted, Dispatcher, EdgeTarget, Job, Principal, Scope};
use crate::client::{ReplyEvent, RpcClient, Summary};
use crate::edge::protocol::{ErrorCode, ServerMessage};
use crate::gateway::{Code, Refusal, Stage};

/// Replies as they arrive, across every collective of a request.
struct Tally<'a> {
    job: &'a Job,
    /// Replies sent per admitted collective: all, and with status 0.
    per_call: Vec<[AtomicUsize; 2]>,
    sent: AtomicUsize,
    /// Directed targets that answered, anywhere.
    answered: Mutex<HashSet<String>>,
    /// Cancelled at `limit` replies, or when every target answered.
    enough: CancellationToken,
}

impl Tally<'_> {
    /// Whether to pass `reply` on: not past `limit`, and not a target that already answered
    /// from another member. Cancels `enough` at the last reply wanted.
    fn take(&self, index: usize, reply: &ReplyEvent) -> bool {
        let mut complete = false;
        if !self.job.targets.is_empty() {
            let Ok(mut answered) = self.answered.lock() else {
                return false;
            };
            if !answered.insert(reply.sender.clone()) {
                return false;
            }
            complete = answered.len() == self.job.targets.len();
        }
        let n = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        if self.job.limit.is_some_and(|limit| n > limit) {
            return false;
        }
        self.per_call[index][0].fetch_add(1, Ordering::Relaxed);
        if reply.statuscode == 0 {
            self.per_call[index][1].fetch_add(1, Ordering::Relaxed);
        }
        if complete || self.job.limit == Some(n) {
            self.enough.cancel();
        }
        true
    }

    /// What each call had sent, as its result, when the request stopped early.
    fn summaries(&self, started: Instant) -> Vec<Result<Summary, String>> {
        self.per_call
            .iter()
            .map(|[all, ok]| {
                let (all, ok) = (all.load(Ordering::Relaxed), ok.load(Ordering::Relaxed));
                Ok(Summary {
                    responses: all,
                    ok,
                    failed: all - ok,
                    elapsed: started.elapsed(),
                    ..Summary::default()
                })
            })
            .collect()
    }

    /// Directed targets that answered nowhere, in the order asked.
    fn missing(&self) -> Vec<String> {
        let answered = self.answered.lock().map(|a| a.clone()).unwrap_or_default();
        self.job
            .targets
            .iter()
            .filter(|t| !answered.contains(*t))
            .cloned()
            .collect()
    }
}

impl Dispatcher {
    /// Runs one request, sending replies and the final `done` or `error` through `send`.
    pub async fn run(
        &self,
        principal: &Principal,
        job: Job,
        cancel: CancellationToken,
        send: &(impl Fn(ServerMessage) + Sync),
    ) {
        let span = crate::gateway::request_span("websocket");
        span.record("req", job.requestid.as_deref().unwrap_or(&job.id));
        span.record("caller", principal.caller.as_str());
        let started = Instant::now();
        let result = self
            .run_one(principal, job, cancel, send)
            .instrument(span)
            .await;
        metrics::counter!("fedgate_edge_requests_total", "result" => result).increment(1);
        metrics::histogram!("fedgate_edge_request_duration_seconds", "result" => result)
            .record(started.elapsed().as_secs_f64());
    }

    /// Runs one request; its result as counted: `done` or the error code sent.
    async fn run_one(
        &self,
        principal: &Principal,
        job: Job,
        cancel: CancellationToken,
        send: &(impl Fn(ServerMessage) + Sync),
    ) -> &'static str {
        let id = job.id.clone();
        let error = |code: ErrorCode, message: String| {
            send(ServerMessage::error(Some(&id), code, message));
            code.as_str()
        };
        let refused = |refusal: &Refusal| {
            let message = ServerMessage::refused(Some(&id), refusal);
            let result = match &message {
                ServerMessage::Error { code, .. } => code.as_str(),
                _ => "refused",
            };
            send(message);
            result
        };
        // The call against the agent's DDL, once, before any fan-out.
        if let Err(refusal) = self.gate.check_inputs(&job.agent, &job.action, &job.data) {
            let event = self.event(principal, &job, None);
            return refused(&self.refused(event, refusal).await);
        }
        let shares = match self.shares(principal, &job).await {
            Ok(shares) => shares,
            Err(refusal) => return refused(&refusal),
        };
        let (admitted, mut members_refused) = match self.admit_all(principal, &job, &shares).await {
            Ok(admitted) => admitted,
            Err(refusal) => return refused(&refusal),
        };
        let tally = Tally {
            job: &job,
            per_call: admitted.iter().map(|_| Default::default()).collect(),
            sent: AtomicUsize::new(0),
            answered: Mutex::new(HashSet::new()),
            enough: CancellationToken::new(),
        };
        let started = Instant::now();
        let Some(results) = self.collect(&admitted, &tally, &cancel, send).await else {
            for one in admitted {
                self.gate.complete_now(&one.event, one.link, 0).await;
            }
            return error(ErrorCode::Cancelled, "cancelled".into());
        };
        let results = results.unwrap_or_else(|| tally.summaries(started));
        let (merged, failures) = self.complete(admitted, results).await;
        if merged.requestids.is_empty() {
            let message: Vec<String> = failures.iter().map(|(c, e)| format!("{c}: {e}")).collect();
            return error(ErrorCode::Unavailable, message.join("; "));
        }
        for (collective, message) in failures {
            members_refused.insert(collective, format!("unavailable: {message}"));
        }
        let missing = tally.missing();
        // A target that did not answer from its learnt home is looked for everywhere next time.
        for target in &missing {
            self.homes.forget(target);
        }
        send(ServerMessage::Done {
            id: id.clone(),
            responses: merged.responses,
            ok: merged.ok,
            failed: merged.failed,
            missing,
            elapsed_ms: u64::try_from(merged.elapsed.as_millis()).unwrap_or(u64::MAX),
            requestids: merged.requestids,
            ended: merged.ended,
            refused: members_refused,
        });
        "done"
    }

    /// Admits each share; the collectives that refused it, with why. Refused everywhere: the
    /// first refusal.
    async fn admit_all<'d>(
        &'d self,
        principal: &Principal,
        job: &Job,
        shares: &BTreeMap<String, Vec<String>>,
    ) -> Result<(Vec<Admitted<'d>>, BTreeMap<String, String>), Refusal> {
        let mut admitted = Vec::new();
        let mut refused = BTreeMap::new();
        let mut first_refusal = None;
        // One set of rules maps and authorizes every member's copy of the request.
        let rules = self.gate.rules();
        for (collective, targets) in shares {
            match self
                .admit(&rules, principal, job, collective, targets)
                .await
            {
                Ok(one) => admitted.push(one),
                Err(refusal) => {
                    let why = format!("{}: {}", refusal.code.as_str(), refusal.reason);
                    refused.insert(collective.clone(), why);
                    first_refusal.get_or_insert(refusal);
                }
            }
        }
        if admitted.is_empty() {
            return Err(first_refusal.unwrap_or_else(|| {
                Refusal::new(Stage::Route, Code::UnknownCollective, "no target")
            }));
        }
        Ok((admitted, refused))
    }

    /// Writes each share's completion record and merges the summaries; the collectives whose
    /// call failed, with why.
    async fn complete(
        &self,
        admitted: Vec<Admitted<'_>>,
        results: Vec<Result<Summary, String>>,
    ) -> (Summary, Vec<(String, String)>) {
        let mut merged = Summary::default();
        let mut failures = Vec::new();
        for (one, result) in admitted.into_iter().zip(results) {
            let replies = result.as_ref().map_or(0, |s| s.responses as u64);
            self.gate.complete_now(&one.event, one.link, replies).await;
            match result {
                Ok(summary) => {
                    merged.responses += summary.responses;
                    merged.ok += summary.ok;
                    merged.failed += summary.failed;
                    merged.elapsed = merged.elapsed.max(summary.elapsed);
                    merged.ended = merged.ended.max(summary.ended);
                    merged.requestids.push(one.cleared.requestid().to_string());
                }
                Err(err) => failures.push((one.collective, err)),
            }
        }
        (merged, failures)
    }

    /// The collectives a request goes to, each with its directed targets: a collective with all
    /// of them; a federation's members, each with the targets it holds (all members for a
    /// broadcast, and for targets whose home is not known yet).
    async fn shares(
        &self,
        principal: &Principal,
        job: &Job,
    ) -> Result<BTreeMap<String, Vec<String>>, Refusal> {
        let name = match &job.scope {
            Scope::Collective(name) => {
                return Ok(BTreeMap::from([(name.clone(), job.targets.clone())]));
            }
            Scope::Federation(name) => name,
        };
        let Some(members) = self.federations.load().get(name).cloned() else {
            let message = format!("federation {name} is not reachable from this edge");
            let mut event = self.event(principal, job, None);
            event.collectives = vec![name.clone()];
            let refusal = Refusal::new(Stage::Route, Code::UnknownCollective, message);
            return Err(self.refused(event, refusal).await);
        };
        if job.targets.is_empty() {
            return Ok(members.into_iter().map(|m| (m, Vec::new())).collect());
        }
        Ok(self.homes.split(&job.targets, &members, Instant::now()))
    }

    /// Publishes every admitted share and collects the replies: `None` when cancelled, `Some(None)`
    /// when the request stopped early (its limit, or every target answered), else each call's
    /// result.
    async fn collect(
        &self,
        admitted: &[Admitted<'_>],
        tally: &Tally<'_>,
        cancel: &CancellationToken,
        send: &(impl Fn(ServerMessage) + Sync),
    ) -> Option<Option<Vec<Result<Summary, String>>>> {
        let id = &tally.job.id;
        let on_reply = |index: usize, reply: &ReplyEvent| {
            self.homes
                .learn(&reply.sender, &admitted[index].collective, Instant::now());
            if !tally.take(index, reply) {
                return;
            }
            send(ServerMessage::Reply {
                id: id.clone(),
                sender: reply.sender.clone(),
                statuscode: reply.statuscode,
                statusmsg: reply.statusmsg.clone(),
                data: reply.data.clone(),
            });
        };
        let calls = admitted.iter().enumerate().map(|(index, one)| async move {
            let on_reply = |reply: &ReplyEvent| on_reply(index, reply);
            match one.target {
                EdgeTarget::Choria { nats, egress, .. } => {
                    let client = RpcClient::new(
                        nats.clone(),
                        egress.clone(),
                        one.cleared.mapped().clone(),
                        self.sender.clone(),
                        self.limits,
                    );
                    client
                        .call_cleared(&one.cleared, &one.call, on_reply)
                        .await
                        .map_err(|e| e.to_string())
                }
                EdgeTarget::Legacy(link) => link
                    .call(&one.cleared, &one.call, on_reply)
                    .await
                    .map_err(|e| e.to_string()),
            }
        });
        tokio::select! {
            // A single call that reached its limit has also finished, with its own figures.
            biased;
            results = futures::future::join_all(calls) => Some(Some(results)),
            _ = tally.enough.cancelled() => Some(None),
            _ = cancel.cancelled() => None,
        }
    }
}
