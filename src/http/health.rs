//! `GET /health`: one entry per dependency (database, bus, file storage), HTTP 200
//! when all are up and 503 when one is down. Checks run concurrently, each bounded
//! in time, so a hung dependency cannot hang the health check.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Check {
    status: &'static str,
    kind: &'static str,
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn timed<F>(kind: &'static str, check: F) -> Check
where
    F: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {CHECK_TIMEOUT:?}")));
    Check {
        status: if outcome.is_ok() { "up" } else { "down" },
        kind,
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        error: outcome.err(),
    }
}

pub async fn health(State(state): State<AppState>) -> Response {
    let bus_health = async {
        let health = state.bus.health().await;
        match health.error {
            None if health.up => Ok(()),
            error => Err(error.unwrap_or_else(|| "down".into())),
        }
    };
    let bus_kind = if state.config.redis_url.is_some() {
        "redis"
    } else {
        "in-process"
    };
    let (database, bus, storage) = tokio::join!(
        timed(state.db.dialect().name(), async {
            // The driver's error text can name hosts or files; the log gets it, the
            // (unauthenticated) endpoint only a summary.
            state.db.ping().await.map(|_| ()).map_err(|err| {
                tracing::warn!(error = %err, "health: database check failed");
                "the database does not answer".to_string()
            })
        }),
        timed(bus_kind, async {
            bus_health.await.map_err(|err| {
                tracing::warn!(error = %err, "health: bus check failed");
                "the event bus is disconnected".to_string()
            })
        }),
        timed(state.files.kind(), async {
            state.files.check().await.map_err(|err| {
                tracing::warn!(error = %err, "health: file storage check failed");
                "file storage is not writable".to_string()
            })
        }),
    );
    let up = [&database, &bus, &storage].iter().all(|c| c.status == "up");
    let status = if up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if up { "up" } else { "down" },
        "version": env!("CARGO_PKG_VERSION"),
        "checks": { "database": database, "bus": bus, "storage": storage },
    });
    (status, Json(body)).into_response()
}
