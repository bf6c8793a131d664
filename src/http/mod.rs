//! The HTTP and WebSocket surface of Nimbus: the router, and `serve` used by
//! `nimbus serve` and by the tests.

pub mod avatars;
pub mod client;
pub mod connections;
pub mod console;
pub mod console_session;
pub mod functions;
pub mod graphql;
pub mod health;
pub mod identity;
pub mod metrics;
pub mod multipart;
pub mod oauth2;
#[cfg(test)]
mod page_tests;
pub mod playground;
pub mod storage;
pub mod usage;
pub mod ws;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Method};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::AppState;
use crate::error::codes;

/// An HTML page embedded in the binary, with the headers every such page gets:
/// revalidated on each load (its assets are what is cached), its own CSP, never
/// framed (`X-Frame-Options` for browsers that predate `frame-ancestors`), no
/// sniffing and no referrer.
pub(crate) fn embedded_page(csp: &'static str, html: &'static str) -> axum::response::Response {
    use axum::http::header;
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}

/// The CORS rules of every answer.
fn cors() -> CorsLayer {
    // API keys travel in headers, never cookies, so any origin may call without
    // credentials; per-project allowed origins come with cookie sessions.
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::OPTIONS])
        .allow_headers([
            axum::http::header::CONTENT_TYPE,
            axum::http::header::ACCEPT,
            axum::http::header::AUTHORIZATION,
            HeaderName::from_static(identity::PROJECT_HEADER),
            HeaderName::from_static(identity::KEY_HEADER),
            HeaderName::from_static("x-nimbus-locale"),
            HeaderName::from_static("x-nimbus-timeout"),
            HeaderName::from_static("x-appwrite-timeout"),
            HeaderName::from_static("apollo-require-preflight"),
            HeaderName::from_static("x-apollo-operation-name"),
            axum::http::header::CONTENT_RANGE,
            axum::http::header::RANGE,
            axum::http::header::IF_NONE_MATCH,
        ])
        .expose_headers([
            axum::http::header::CONTENT_RANGE,
            axum::http::header::CONTENT_DISPOSITION,
            axum::http::header::ETAG,
            HeaderName::from_static("repr-digest"),
        ])
}

/// Every route of the server; [`serve`] puts the layers every request passes
/// around it.
pub fn router(state: AppState) -> Router {
    let file = |endpoint: &str| format!("/v1/storage/buckets/{{bucket}}/files/{{file}}/{endpoint}");
    // Streamed bodies (files) are counted as they pass; GraphQL and function
    // calls count their own, whose lengths they know, without the layer's cost.
    let streamed = Router::new()
        .route(&file("download"), get(storage::download))
        .route(&file("view"), get(storage::view))
        .route(&file("preview"), get(storage::preview))
        .route(&file("upload"), axum::routing::put(storage::upload_chunk));
    // Off, requests do not pass through the bandwidth count at all.
    let streamed = if state.usage.enabled() {
        streamed.route_layer(axum::middleware::from_fn(usage::count))
    } else {
        streamed
    };
    Router::new()
        .route(
            "/v1/graphql",
            get(graphql::graphql_get).post(graphql::graphql_post),
        )
        .route("/v1/graphql/ws", get(ws::graphql_ws))
        .route("/v1/graphql/schema.graphql", get(graphql::schema_sdl))
        .route("/v1/functions/{function}", any(functions::execute))
        .route("/v1/functions/{function}/{*path}", any(functions::execute))
        .route("/v1/account/oauth2/{provider}", get(oauth2::start))
        .route(
            "/v1/account/oauth2/callback/{provider}/{project}",
            get(oauth2::callback),
        )
        .route("/v1/avatars/qr", get(avatars::qr))
        .route("/v1/avatars/flags/{code}", get(avatars::flag))
        .route("/v1/avatars/browsers/{code}", get(avatars::browser))
        .route("/v1/avatars/credit-cards/{code}", get(avatars::credit_card))
        .route("/v1/avatars/initials", get(avatars::initials))
        .route("/v1/avatars/image", get(avatars::image))
        .route("/v1/avatars/favicon", get(avatars::favicon))
        .route(
            "/console/api/session",
            get(console_session::get_session)
                .post(console_session::create_session)
                .delete(console_session::delete_session),
        )
        .route(
            "/console/api/totp",
            axum::routing::post(console_session::create_totp).delete(console_session::delete_totp),
        )
        .route(
            "/console/api/totp/verify",
            axum::routing::post(console_session::verify_totp),
        )
        .route("/health", get(health::health))
        .route("/metrics", get(metrics::metrics))
        .merge(streamed)
        .merge(playground::router())
        .merge(console::router())
        .fallback(not_found)
        // No `DefaultBodyLimit` layer: no handler takes a body extractor it would
        // bound (each reads its body itself, with its own limit and error), and
        // the layer would cost every request an extension and a level of futures.
        .with_state(state)
}

async fn not_found() -> impl IntoResponse {
    graphql::plain_error(
        codes::NOT_FOUND,
        "no such endpoint; GraphQL is served at /v1/graphql",
    )
}

/// The data of `body`, failing with `TimedOut` (and raising the flag returned)
/// once no more arrives for `stall`: a streamed body (an upload) may take long,
/// but must keep coming.
pub fn stall_limited(
    body: axum::body::Body,
    stall: Duration,
) -> (
    futures_util::stream::BoxStream<'static, std::io::Result<axum::body::Bytes>>,
    Arc<AtomicBool>,
) {
    use futures_util::StreamExt as _;
    let stalled = Arc::new(AtomicBool::new(false));
    let flag = stalled.clone();
    let stream = tokio_stream::StreamExt::timeout(body.into_data_stream(), stall).map(
        move |item| match item {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(err)) => Err(std::io::Error::other(err)),
            Err(_) => {
                flag.store(true, Ordering::Relaxed);
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request body stopped arriving",
                ))
            }
        },
    );
    (stream.boxed(), stalled)
}

/// Serves until `shutdown` resolves, then finishes in-flight requests. Connections
/// are capped and timed as `state.config` says (see [`connections`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = &state.config;
    let limits = connections::ConnectionLimits {
        header_timeout: Duration::from_secs(config.http_header_timeout_secs),
        idle_timeout: Duration::from_secs(config.http_idle_timeout_secs),
        send_timeout: Duration::from_secs(config.http_send_timeout_secs),
        max_head_bytes: usize::try_from(config.http_max_head_bytes).unwrap_or(usize::MAX),
        max_total: usize::try_from(config.max_connections).unwrap_or(usize::MAX),
        max_per_client: usize::try_from(config.max_connections_per_client).unwrap_or(usize::MAX),
    }
    .within_file_limit(config.database_max_connections as usize);
    // The trace, panic and CORS layers wrap the router once, as one service
    // (outermost first), rather than through `Router::layer`, which wraps every
    // route in a boxed service of its own whose future each request boxes and
    // moves again, with the request inside it. They see every request the
    // routes' layers saw, the fallback's included.
    let service = tower::ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(graphql::panic_response))
        .layer(cors())
        .service(router(state));
    connections::serve(listener, service, limits, shutdown).await
}
