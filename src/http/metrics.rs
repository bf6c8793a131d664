//! Prometheus metrics at `/metrics`: GraphQL requests by operation and outcome, a
//! latency histogram, open WebSocket connections, active subscriptions and database
//! pool use, and group commit. One recorder per process, shared by every server in it.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;
use crate::config::Config;

/// The label of operations without a name.
const ANONYMOUS: &str = "anonymous";
/// The label of operations whose name has no label of its own.
const OTHER: &str = "other";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The labelled operations, by name: registered once, then counted without
/// allocating. Process-wide, like the recorder.
static OPERATIONS: OnceLock<RwLock<HashMap<Box<str>, OperationMetrics>>> = OnceLock::new();
/// Longest operation name given its own label.
const MAX_LABELLED_NAME: usize = 64;

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
            "nimbus_http_connections",
            "Open client connections, HTTP and WebSocket."
        );
        metrics::describe_counter!(
            "nimbus_http_connections_refused_total",
            "Connections refused at a connection cap, by cap (`server` or `client`)."
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
        metrics::describe_gauge!(
            "nimbus_consumer_position",
            "Stored event log position of a log consumer (webhooks), on the replica holding it: every event up to it is handled."
        );
        metrics::describe_gauge!(
            "nimbus_consumer_lag",
            "Event log positions logged but not yet read by a log consumer, on the replica holding it."
        );
        metrics::describe_gauge!(
            "nimbus_consumer_waiting_positions",
            "Missing event log positions a log consumer waits for (transactions not committed yet, or rolled back)."
        );
        metrics::describe_gauge!(
            "nimbus_consumer_leader",
            "1 on the replica holding a log consumer's lease, else 0."
        );
        metrics::describe_counter!(
            "nimbus_consumer_gaps_given_up_total",
            "Event log positions a log consumer gave up after they stayed missing for a minute."
        );
        metrics::describe_counter!(
            "nimbus_event_log_pruned_unhandled_total",
            "Event log entries pruned before a log consumer handled them (it was stopped or failing for longer than the retention allows)."
        );
        metrics::describe_counter!(
            "nimbus_usage_flush_failures_total",
            "Flushes of usage counts the database refused; their counts wait for the next flush."
        );
        metrics::describe_counter!(
            "nimbus_usage_dropped_total",
            "Usage rows dropped because too many waited for the database."
        );
        metrics::describe_counter!(
            "nimbus_operations_rerun_total",
            "Operations run again, alone, after their shared transaction rolled back."
        );
        Some(handle)
    });
}

/// The metrics of one operation label.
struct OperationMetrics {
    ok: Counter,
    error: Counter,
    duration: Histogram,
}

impl OperationMetrics {
    fn register(label: &str) -> Self {
        let label = label.to_string();
        OperationMetrics {
            ok: metrics::counter!("nimbus_graphql_requests_total", "operation" => label.clone(), "outcome" => "ok"),
            error: metrics::counter!("nimbus_graphql_requests_total", "operation" => label.clone(), "outcome" => "error"),
            duration: metrics::histogram!("nimbus_graphql_request_duration_seconds", "operation" => label),
        }
    }

    fn record(&self, elapsed: Duration, ok: bool) {
        if ok { &self.ok } else { &self.error }.increment(1);
        self.duration.record(elapsed.as_secs_f64());
    }
}

/// Whether `name` may be a label: a GraphQL name (`[_A-Za-z][_0-9A-Za-z]*`) of
/// moderate length. Names come from parsed documents, so this only guards
/// against a change upstream letting other text through.
fn labellable(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= MAX_LABELLED_NAME
        && bytes
            .next()
            .is_some_and(|b| b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

/// Counts one executed operation under its label: its name when that is already
/// a label, or becomes one (it passed validation, `admit`, and fewer than
/// `NIMBUS_METRICS_MAX_OPERATIONS` names have labels); `anonymous` without a name;
/// `other` for every other name. Labels are never taken back, so names a client
/// invents cannot push out those already counted.
pub fn record_operation(
    config: &Config,
    name: Option<&str>,
    elapsed: Duration,
    ok: bool,
    admit: bool,
) {
    let operations = OPERATIONS.get_or_init(|| {
        let mut fixed = HashMap::new();
        for label in [ANONYMOUS, OTHER] {
            fixed.insert(label.into(), OperationMetrics::register(label));
        }
        RwLock::new(fixed)
    });
    let label = match name {
        None => ANONYMOUS,
        // The fixed labels are not operation names, whatever a client calls one.
        Some(ANONYMOUS | OTHER) => OTHER,
        Some(name) => name,
    };
    if let Ok(operations) = operations.read()
        && let Some(metrics) = operations.get(label)
    {
        metrics.record(elapsed, ok);
        return;
    }
    let Ok(mut operations) = operations.write() else {
        return;
    };
    // Two fixed labels besides the operation names.
    let room = operations.len() < config.metrics_max_operations + 2;
    let label = if admit && room && labellable(label) {
        label
    } else {
        OTHER
    };
    operations
        .entry(label.into())
        .or_insert_with(|| OperationMetrics::register(label))
        .record(elapsed, ok);
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
