//! Every metric fedgate exports, in one place: name, type, unit, labels and HELP text.
//! [`describe`] hands them to the recorder; docs/metrics.md lists the same, and a test keeps
//! the two and the code in step.

use metrics::Unit;

/// A Prometheus metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; its name ends in `_total` (except go-choria's names).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted in buckets.
    Histogram,
    /// Observations as `_sum`, `_count` and quantiles (go-choria's `choria_federation_time`).
    Summary,
}

impl Kind {
    /// The type as the Prometheus text format names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// One exported metric.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    /// Its name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its unit, when it has one (the name ends with it).
    pub unit: Option<Unit>,
    /// Its labels.
    pub labels: &'static [&'static str],
    /// Its HELP text.
    pub help: &'static str,
    /// Bucket bounds, for a histogram.
    pub buckets: &'static [f64],
}

/// Buckets for relaying one federated message: 25 µs to 1 s.
pub const RELAY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0,
];

/// Buckets for an audit write or a legacy delivery's handling: 100 µs to 10 s.
pub const WORK_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Buckets for a whole edge request, replies included: 5 ms to 2 minutes.
pub const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

const fn counter(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        unit: None,
        labels,
        help,
        buckets: &[],
    }
}

const fn gauge(
    name: &'static str,
    unit: Option<Unit>,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind: Kind::Gauge,
        unit,
        labels,
        help,
        buckets: &[],
    }
}

const fn seconds(
    name: &'static str,
    labels: &'static [&'static str],
    buckets: &'static [f64],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels,
        help,
        buckets,
    }
}

/// The labels of go-choria's federation metrics, as fedgate sets them.
const CHORIA: &[&str] = &["cluster", "identity", "direction"];

/// Every metric fedgate exports itself (process metrics come from `metrics-process`).
pub const METRICS: &[Metric] = &[
    // The process.
    gauge(
        "fedgate_build_info",
        None,
        &["version", "commit", "fedgate_instance"],
        "Always 1: the fedgate version and commit this process runs, and its instance name.",
    ),
    gauge(
        "fedgate_certificate_expiry_timestamp_seconds",
        Some(Unit::Seconds),
        &["entry", "subject"],
        "When a configured certificate (or Choria protocol v2 token fedgate holds) expires, Unix seconds; entry is the config key naming its file.",
    ),
    gauge(
        "fedgate_ready",
        None,
        &[],
        "1 when every dependency /readyz watches is usable (NATS and AMQP connections, audit sinks, the registry), else 0.",
    ),
    gauge(
        "fedgate_dependencies_not_ready",
        None,
        &[],
        "Dependencies /readyz names as not usable now.",
    ),
    counter(
        "fedgate_nats_slow_consumer_total",
        &["connection"],
        "Messages the NATS client dropped because one subscription's reader fell behind its buffer (async-nats' slow consumer; nats-server does not see these), by connection; a lower bound, since the client itself drops reports past 128 queued events.",
    ),
    gauge(
        "fedgate_runtime_alive_tasks",
        None,
        &[],
        "Tokio tasks alive now.",
    ),
    gauge(
        "fedgate_runtime_global_queue_depth",
        None,
        &[],
        "Tokio tasks waiting in the global queue for a worker thread.",
    ),
    // The federation broker, under go-choria's names.
    counter(
        "choria_federation_received_msgs",
        CHORIA,
        "Number of messages received by a Federation Broker instance (go-choria's name).",
    ),
    counter(
        "choria_federation_published_msgs",
        CHORIA,
        "Number of messages published by a Federation Broker instance (go-choria's name).",
    ),
    counter(
        "choria_federation_errors",
        CHORIA,
        "Messages that could not be published (go-choria's name).",
    ),
    Metric {
        name: "choria_federation_time",
        kind: Kind::Summary,
        unit: Some(Unit::Seconds),
        labels: CHORIA,
        help: "Time taken to process messages, in seconds (go-choria's name and type; see fedgate_federation_processing_duration_seconds).",
        buckets: &[],
    },
    seconds(
        "fedgate_federation_processing_duration_seconds",
        &["cluster", "direction"],
        RELAY_BUCKETS,
        "Time taken to process one federated message, from receipt to publish.",
    ),
    counter(
        "fedgate_federation_refused_total",
        &["cluster", "direction", "reason"],
        "Federated messages the broker refused, by reason.",
    ),
    counter(
        "fedgate_refusals_total",
        &["edge", "stage", "code"],
        "Requests refused, by ingress (edge), admission stage and refusal code; shared by every ingress.",
    ),
    // The gate and the audit trail.
    gauge(
        "fedgate_gate_pending_completions",
        None,
        &[],
        "Admitted requests whose completion record waits for their reply window to close.",
    ),
    counter(
        "fedgate_audit_records_total",
        &["sink", "decision"],
        "Audit records a sink wrote, by decision (allow, deny, none).",
    ),
    counter(
        "fedgate_audit_errors_total",
        &["sink"],
        "Audit records a sink failed to write.",
    ),
    seconds(
        "fedgate_audit_write_duration_seconds",
        &["sink"],
        WORK_BUCKETS,
        "Time taken to write one audit record to a sink, until it is accepted or refused.",
    ),
    counter(
        "fedgate_audit_untracked_total",
        &[],
        "Completion records written at once because too many requests awaited theirs.",
    ),
    counter(
        "fedgate_audit_aggregated_total",
        &["kind"],
        "Refusals folded into a per-source summary record instead of a record each.",
    ),
    counter(
        "fedgate_audit_checkpoints_total",
        &["sink"],
        "Signed checkpoints written into an audit chain.",
    ),
    counter(
        "fedgate_audit_chain_conflicts_total",
        &[],
        "Times another writer had appended to this instance's JetStream audit chain.",
    ),
    counter(
        "fedgate_audit_late_records_total",
        &[],
        "JetStream audit records reported failed that reached the stream after all.",
    ),
    counter(
        "fedgate_audit_backfilled_total",
        &[],
        "Audit records another sink accepted while the JetStream stream was away, published to the stream once it was back.",
    ),
    counter(
        "fedgate_audit_backfill_dropped_total",
        &[],
        "Audit records the JetStream sink could not keep for the stream while it was away (backlog full); a missing_records correction in the stream counts them.",
    ),
    gauge(
        "fedgate_audit_trail_bytes",
        Some(Unit::Bytes),
        &[],
        "Size of the file audit trail: the active file and its rotated files.",
    ),
    gauge(
        "fedgate_audit_disk_fill_ratio",
        None,
        &["of"],
        "How full the audit trail's disk budget or filesystem is, 0 to 1.",
    ),
    // Policy and registry.
    counter(
        "fedgate_policy_reloads_total",
        &["result"],
        "Reloads of the policy directory, by result (ok, error).",
    ),
    gauge(
        "fedgate_policy_reload_failed",
        None,
        &[],
        "1 while the last policy reload failed and the last good policy is kept, else 0.",
    ),
    gauge("fedgate_policy_files", None, &[], "Policy files loaded."),
    counter(
        "fedgate_policy_compound_skipped_total",
        &[],
        "Compound policy statements skipped, as Choria skips them.",
    ),
    counter(
        "fedgate_policy_lines_skipped_total",
        &["file_kind", "reason"],
        "Policy and groups file lines skipped as go-choria skips them, where skipping cannot widen access.",
    ),
    gauge(
        "fedgate_registry_revision",
        None,
        &[],
        "The registry revision this instance runs.",
    ),
    gauge(
        "fedgate_registry_heard_timestamp_seconds",
        Some(Unit::Seconds),
        &[],
        "When this instance last heard from the registry, Unix seconds (0: never).",
    ),
    gauge(
        "fedgate_registry_refused_revision",
        None,
        &[],
        "The last registry revision this instance refused (0 when none).",
    ),
    gauge(
        "fedgate_registry_membership_pending",
        None,
        &[],
        "1 while some membership of the registry revision is not served, else 0.",
    ),
    counter(
        "fedgate_registry_applied_total",
        &["result"],
        "Registry revisions offered to this instance, by result (ok, refused).",
    ),
    counter(
        "fedgate_registry_refused_total",
        &["reason"],
        "Registry revisions refused, by reason.",
    ),
    // The WebSocket edge.
    gauge(
        "fedgate_edge_sockets",
        None,
        &[],
        "WebSocket sessions open now.",
    ),
    counter(
        "fedgate_edge_requests_total",
        &["result"],
        "Edge requests ended, by result (done or an error code).",
    ),
    seconds(
        "fedgate_edge_request_duration_seconds",
        &["result"],
        REQUEST_BUCKETS,
        "Time taken by one edge request, from receipt to its done or error, replies included.",
    ),
    counter(
        "fedgate_edge_refused_total",
        &["reason"],
        "HTTP requests, upgrades and sockets the edge refused, by reason.",
    ),
    counter(
        "fedgate_edge_errors_total",
        &["code"],
        "Errors the edge sent on a socket, by code.",
    ),
    counter(
        "fedgate_edge_signed_refused_total",
        &["reason"],
        "Requests signed by their caller that the edge refused, by refusal code.",
    ),
    counter(
        "fedgate_edge_closed_total",
        &["reason"],
        "Sockets the edge closed, by reason (token_expired, idle, write_timeout).",
    ),
    counter(
        "fedgate_edge_revoked_total",
        &["at"],
        "Revoked tokens refused, at the upgrade or on an open socket.",
    ),
    counter(
        "fedgate_edge_logins_total",
        &["result"],
        "Password logins checked, by result (ok, refused).",
    ),
    counter(
        "fedgate_edge_login_refused_total",
        &["reason"],
        "Password logins refused before the check, by reason (rates and queues).",
    ),
    // Legacy MCollective.
    counter(
        "fedgate_legacy_requests_published_total",
        &["legacy"],
        "Requests fedgate published into a legacy collective.",
    ),
    seconds(
        "fedgate_legacy_request_duration_seconds",
        &["legacy", "result"],
        WORK_BUCKETS,
        "Time taken to handle one bridged legacy request, from delivery to forwarded, refused or requeued.",
    ),
    counter(
        "fedgate_legacy_refused_total",
        &["legacy", "reason"],
        "Bridged legacy requests refused, by reason.",
    ),
    counter(
        "fedgate_legacy_requeued_total",
        &["legacy", "reason"],
        "Bridged legacy requests put back on the queue because fedgate could not act on them then.",
    ),
    counter(
        "fedgate_legacy_duplicates_total",
        &["legacy"],
        "Bridged legacy requests served as copies of one already taken: the same signed body under another request id, within its TTL, as mcollectived serves it.",
    ),
    counter(
        "fedgate_legacy_bare_bodies_total",
        &["legacy"],
        "Bridged legacy requests with a bare pre-2.0 body (TTL and time unsigned).",
    ),
    counter(
        "fedgate_legacy_own_requests_dropped_total",
        &["legacy"],
        "Requests fedgate itself published that came back to it, dropped.",
    ),
    counter(
        "fedgate_legacy_replies_sent_total",
        &["legacy"],
        "Replies sent back to legacy callers.",
    ),
    counter(
        "fedgate_legacy_replies_failed_total",
        &["legacy"],
        "Replies to legacy callers that could not be published, after waiting up to 15 s for a recovering channel.",
    ),
    counter(
        "fedgate_legacy_replies_dropped_total",
        &[],
        "Replies for legacy callers dropped because their queue was full.",
    ),
    counter(
        "fedgate_legacy_replies_refused_total",
        &["legacy", "reason"],
        "Replies from legacy servers refused, by reason.",
    ),
    counter(
        "fedgate_legacy_facade_refused_total",
        &["legacy", "reason"],
        "Choria requests to a served legacy collective refused, by reason.",
    ),
    gauge(
        "fedgate_legacy_directed_bindings",
        None,
        &["legacy"],
        "Nodes the bridge's queue is bound for directed requests.",
    ),
];

/// Gives the recorder every metric's HELP text and unit.
pub fn describe() {
    for metric in METRICS {
        let (name, unit, help) = (metric.name, metric.unit, metric.help);
        match (metric.kind, unit) {
            (Kind::Counter, Some(unit)) => metrics::describe_counter!(name, unit, help),
            (Kind::Counter, None) => metrics::describe_counter!(name, help),
            (Kind::Gauge, Some(unit)) => metrics::describe_gauge!(name, unit, help),
            (Kind::Gauge, None) => metrics::describe_gauge!(name, help),
            (Kind::Histogram | Kind::Summary, Some(unit)) => {
                metrics::describe_histogram!(name, unit, help)
            }
            (Kind::Histogram | Kind::Summary, None) => metrics::describe_histogram!(name, help),
        }
    }
}
