//! What the unit tests of the embedded pages (`console`, `playground`) share: a
//! request to a router without a server, and readers of its answer.

use axum::{
    Router,
    body::Body,
    http::{HeaderName, Request},
    response::Response,
};
use tower::ServiceExt;

/// Answers `GET uri` from `router`.
pub async fn get(router: Router, uri: &str) -> Response {
    router
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap()
}

/// The header `name` of `response`, empty when absent or not text.
pub fn header(response: &Response, name: HeaderName) -> &str {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

/// The whole body of `response`, as text.
pub async fn body_text(response: Response) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}
