//! A socket's requests in flight: duplicate ids, the per-socket limit, the caller's rate, and
//! one task per request.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::outbox::Outbox;
use super::shared::Shared;
use crate::edge::dispatch::{Job, Principal};
use crate::edge::protocol::{ErrorCode, ServerMessage};

/// A socket's requests in flight.
pub(super) struct Requests {
    pub(super) shared: Arc<Shared>,
    pub(super) in_flight: HashMap<String, CancellationToken>,
    pub(super) tasks: TaskTracker,
    /// Each request task sends its id here when it ends.
    pub(super) finished: mpsc::UnboundedSender<String>,
    pub(super) out: Outbox,
}

impl Requests {
    /// Whether a request `id` may start: not a duplicate, and under the socket's limit. Sends
    /// the error when not.
    pub(super) fn room_for(&self, id: &str) -> bool {
        let (code, message) = if self.in_flight.contains_key(id) {
            (
                ErrorCode::DuplicateId,
                "a request with this id is in flight".to_string(),
            )
        } else if self.in_flight.len() >= self.shared.settings.max_in_flight {
            (
                ErrorCode::TooManyInFlight,
                format!(
                    "at most {} requests in flight per socket",
                    self.shared.settings.max_in_flight
                ),
            )
        } else {
            return true;
        };
        self.out.reject(Some(id), code, message);
        false
    }

    /// Applies the caller's rate limit, then runs the job in its own task.
    pub(super) async fn start(&mut self, principal: Arc<Principal>, job: Job) {
        let shared = self.shared.clone();
        if shared
            .limiter
            .check_key(&principal.caller.as_str().to_string())
            .is_err()
        {
            shared
                .dispatch
                .refused_early(&principal, &job, "rate_limited", "rate limit exceeded")
                .await;
            self.out.reject(
                Some(&job.id),
                ErrorCode::RateLimited,
                "rate limit exceeded; slow down",
            );
            return;
        }
        let cancel = CancellationToken::new();
        let id = job.id.clone();
        self.in_flight.insert(id.clone(), cancel.clone());
        let out = self.out.clone();
        let finished = self.finished.clone();
        self.tasks.spawn(async move {
            // The id is released before the request's last message is queued: a client may
            // reuse it as soon as it reads `done` or `error`.
            let release = std::sync::Once::new();
            let send = |message: ServerMessage| {
                if message.ends_request() {
                    release.call_once(|| drop(finished.send(id.clone())));
                }
                out.push(&message);
            };
            shared.dispatch.run(&principal, job, cancel, &send).await;
            release.call_once(|| drop(finished.send(id.clone())));
        });
    }
}
