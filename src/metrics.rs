//! Prometheus metrics and health, on the metrics address only: one process-wide recorder
//! rendered at `GET /metrics`, `GET /healthz` (alive) and `GET /readyz` (every dependency
//! usable). docs/metrics.md lists every metric.
//!
//! - [`catalog`]: every metric's name, type, unit, labels and HELP text;
//! - [`certs`]: when each configured certificate expires.

pub mod catalog;
pub mod certs;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use self::catalog::{Kind, METRICS};
use self::certs::CertFile;

/// How often the certificates' expiries are read again.
const CERT_REFRESH: Duration = Duration::from_secs(60);

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("could not install the metrics recorder: {0}")]
pub struct MetricsError(String);

/// Installs the process-wide recorder once, with every metric described, and returns its
/// handle; later calls return the same.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let mut builder = PrometheusBuilder::new();
    // Histograms get their buckets; a histogram without (`choria_federation_time`) is rendered
    // as a summary, as go-choria exports it.
    for metric in METRICS.iter().filter(|m| m.kind == Kind::Histogram) {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(metric.name.into()), metric.buckets)
            .map_err(|e| MetricsError(e.to_string()))?;
    }
    let handle = builder
        .install_recorder()
        .map_err(|e| MetricsError(e.to_string()))?;
    let handle = HANDLE.get_or_init(|| handle).clone();
    catalog::describe();
    process().describe();
    Ok(handle)
}

/// The process metrics collector (`process_*`: CPU, memory, file descriptors, threads).
fn process() -> &'static metrics_process::Collector {
    static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();
    PROCESS.get_or_init(metrics_process::Collector::default)
}

/// Sets `fedgate_build_info` for this process.
pub fn build_info(instance: &str) {
    metrics::gauge!(
        "fedgate_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => env!("FEDGATE_COMMIT"),
        "fedgate_instance" => instance.to_string()
    )
    .set(1.0);
}

/// The routes of the metrics address: `/metrics`, `/healthz` and `/readyz`.
pub fn router(handle: PrometheusHandle) -> Router {
    let handle = Arc::new(handle);
    Router::new()
        .route(
            "/metrics",
            get(move || {
                process().collect();
                readiness_gauges();
                std::future::ready(handle.render())
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { readyz() }))
}

/// Sets `fedgate_ready` and `fedgate_dependencies_not_ready` from what `/readyz` would answer
/// now, so an alert needs no probe of its own. Label-less: a dependency that went away leaves
/// no stale series behind.
fn readiness_gauges() {
    let readiness = crate::health::readiness();
    metrics::gauge!("fedgate_ready").set(if readiness.is_ready() { 1.0 } else { 0.0 });
    metrics::gauge!("fedgate_dependencies_not_ready").set(readiness.not_ready.len() as f64);
}

/// 200 `ready` when every watched dependency is usable; else 503 with JSON naming those that
/// are not.
fn readyz() -> Response {
    let readiness = crate::health::readiness();
    if readiness.is_ready() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let body = serde_json::json!({
        "ready": false,
        "not_ready": readiness.not_ready,
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}

/// Serves the metrics address on a bound listener until `shutdown` resolves; also runs the
/// recorder's upkeep and, every second, sets the runtime's gauges: `fedgate_runtime_alive_tasks`
/// and `fedgate_runtime_global_queue_depth` (tasks waiting for a worker); and every minute the
/// expiries of `certificates`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    certificates: Vec<CertFile>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let upkeep = handle.clone();
    let upkeep_task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let every = |period: Duration| period.as_secs().max(1);
        for n in 0u64.. {
            ticker.tick().await;
            let runtime = tokio::runtime::Handle::current().metrics();
            metrics::gauge!("fedgate_runtime_alive_tasks").set(runtime.num_alive_tasks() as f64);
            metrics::gauge!("fedgate_runtime_global_queue_depth")
                .set(runtime.global_queue_depth() as f64);
            if n % every(CERT_REFRESH) == 0 {
                certs::publish(&certificates);
            }
            if n % 5 == 0 {
                upkeep.run_upkeep();
            }
        }
    });
    let result = axum::serve(listener, router(handle))
        .with_graceful_shutdown(shutdown)
        .await;
    upkeep_task.abort();
    result
}

#[cfg(test)]
mod tests;
