//! Prometheus metrics: one process-wide recorder, rendered at `GET /metrics`.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets for processing times, in seconds: 25 µs to 1 s.
const TIME_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0,
];

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("could not install the metrics recorder: {0}")]
pub struct MetricsError(String);

/// Installs the process-wide recorder once and returns its handle; later calls return the same.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_time".into()), TIME_BUCKETS)
        .map_err(|e| MetricsError(e.to_string()))?
        .install_recorder()
        .map_err(|e| MetricsError(e.to_string()))?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The `/metrics` route.
pub fn router(handle: PrometheusHandle) -> Router {
    Router::new().route("/metrics", get(move || std::future::ready(handle.render())))
}

/// Serves `/metrics` on a bound listener until `shutdown` resolves; also runs the recorder's
/// upkeep and, every second, sets the runtime's gauges: `fedgate_runtime_alive_tasks` and
/// `fedgate_runtime_global_queue_depth` (tasks waiting for a worker).
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let upkeep = handle.clone();
    let upkeep_task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        for n in 0u64.. {
            ticker.tick().await;
            let runtime = tokio::runtime::Handle::current().metrics();
            metrics::gauge!("fedgate_runtime_alive_tasks").set(runtime.num_alive_tasks() as f64);
            metrics::gauge!("fedgate_runtime_global_queue_depth")
                .set(runtime.global_queue_depth() as f64);
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
