//! Prometheus metrics at `/metrics`: GraphQL requests by operation and outcome, a
//! latency histogram, open WebSocket connections, active subscriptions and database
//! pool use, and group commit. One recorder per process, shared by every server in it.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Distinct operation names kept as labels; later names count as `other`, so a client
/// inventing names cannot grow the metrics without bound.
const MAX_OPERATION_LABELS: usize = 200;
static OPERATION_LABELS: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();

/// Installs the process-wide recorder once; later calls do nothing.
pub fn install_recorder() {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("nimbus_graphql_request_duration_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            )
            .ok()?
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).ok()?;
        // Histogram samples pile up until upkeep folds them in; without a regular
        // upkeep, memory would grow with every request between scrapes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let upkeep = handle.clone();
            runtime.spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    every.tick().await;
                    upkeep.run_upkeep();
                }
            });
        }
        metrics::describe_counter!(
            "nimbus_graphql_requests_total",
            "GraphQL operations executed, by operation name and outcome."
        );
        metrics::describe_histogram!(
            "nimbus_graphql_request_duration_seconds",
            metrics::Unit::Seconds,
            "Time to execute a GraphQL operation."
        );
        metrics::describe_gauge!(
            "nimbus_websocket_connections",
            "Open GraphQL WebSocket connections."
        );
        metrics::describe_gauge!(
            "nimbus_subscriptions_active",
            "Active GraphQL subscriptions."
        );
        metrics::describe_counter!(
            "nimbus_websocket_too_slow_total",
            "WebSocket connections closed because their client stopped reading."
        );
        metrics::describe_gauge!(
            "nimbus_db_pool_connections",
            "Database pool connections, by state."
        );
        metrics::describe_counter!(
            "nimbus_write_batches_total",
            "Transactions shared by document writes of several requests (group-committed batches on SQLite, shared inserts of creates on MariaDB), by outcome."
        );
        metrics::describe_counter!(
            "nimbus_write_batch_members_total",
            "Requests that wrote in shared transactions."
        );
        metrics::describe_counter!(
            "nimbus_operations_rerun_total",
            "Operations run again, alone, after their shared transaction rolled back."
        );
        Some(handle)
    });
}

fn operation_label(name: Option<&str>) -> String {
    let Some(name) = name.filter(|n| n.len() <= 64) else {
        return if name.is_some() {
            "other".into()
        } else {
            "anonymous".into()
        };
    };
    let labels = OPERATION_LABELS.get_or_init(Default::default);
    let Ok(mut labels) = labels.lock() else {
        return "other".into();
    };
    if labels.contains(name) || labels.len() < MAX_OPERATION_LABELS {
        labels.insert(name.to_string());
        name.to_string()
    } else {
        "other".into()
    }
}

/// Raises a gauge while alive and lowers it when dropped: an open connection, a live
/// subscription.
pub struct GaugeGuard(&'static str);

impl GaugeGuard {
    pub fn raise(name: &'static str) -> Self {
        metrics::gauge!(name).increment(1.0);
        GaugeGuard(name)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}

/// Counts one executed operation.
pub fn record_operation(name: Option<&str>, elapsed: Duration, ok: bool) {
    let operation = operation_label(name);
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!("nimbus_graphql_requests_total", "operation" => operation.clone(), "outcome" => outcome).increment(1);
    metrics::histogram!("nimbus_graphql_request_duration_seconds", "operation" => operation)
        .record(elapsed.as_secs_f64());
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let (size, idle) = state.db.pool_usage();
    metrics::gauge!("nimbus_db_pool_connections", "state" => "idle").set(idle as f64);
    metrics::gauge!("nimbus_db_pool_connections", "state" => "in_use")
        .set(size.saturating_sub(idle as u32) as f64);
    metrics::gauge!("nimbus_db_pool_connections", "state" => "max")
        .set(state.config.database_max_connections.max(2) as f64);
    let body = match HANDLE.get().and_then(Option::as_ref) {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::from("# metrics recorder not installed\n"),
    };
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}
