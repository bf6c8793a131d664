//! The WebSocket handshake of `/v1/graphql/ws`, answered here on hyper's upgrade
//! rather than through axum's `WebSocketUpgrade`: the task that serves an upgraded
//! socket lives as long as the connection (10,000 idle ones are the goal), and
//! axum's keeps the socket's configuration, the chosen subprotocol's header and
//! the socket itself beside the connection's own future for the whole of its
//! life. Here the connection's future makes the socket where it keeps it. It checks
//! what axum checked (HTTP/1.1 `GET` with `Connection: upgrade`, `Upgrade:
//! websocket`, version 13 and a key; the server speaks HTTP/1 only) and echoes the
//! subprotocol the connection will actually speak.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::error::codes;
use crate::http::graphql::plain_error;

/// An upgraded connection, before it is a WebSocket.
pub use hyper::upgrade::Upgraded;

/// A WebSocket over an upgraded connection.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// A request to upgrade to a WebSocket, checked.
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        let refused = |reason: &str| {
            plain_error(
                codes::BAD_REQUEST,
                &format!("not a WebSocket upgrade: {reason}"),
            )
        };
        if parts.method != axum::http::Method::GET {
            return Err(refused("the method must be GET"));
        }
        if !lists_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(refused("`Connection` does not include `upgrade`"));
        }
        if !lists_token(&parts.headers, header::UPGRADE, "websocket") {
            return Err(refused("`Upgrade` is not `websocket`"));
        }
        let version = parts.headers.get(header::SEC_WEBSOCKET_VERSION);
        if version.is_none_or(|v| v.as_bytes() != b"13") {
            return Err(refused("`Sec-WebSocket-Version` is not 13"));
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return Err(refused("`Sec-WebSocket-Key` is missing"));
        };
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(refused("the connection cannot be upgraded"));
        };
        Ok(Upgrade { key, on_upgrade })
    }
}

impl Upgrade {
    /// Answers `101 Switching Protocols` with `protocol`, and once the client has
    /// it, serves the upgraded connection with `serve` on a task of its own. The
    /// task holds `serve`'s future and little else: `serve` makes the socket
    /// ([`socket`]) where it keeps it.
    pub fn accept<F, Fut>(self, protocol: &'static str, serve: F) -> Response
    where
        F: FnOnce(Upgraded) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Upgrade { key, on_upgrade } = self;
        tokio::spawn(async move {
            // A client that went away before the switch leaves nothing to serve.
            if let Ok(upgraded) = on_upgrade.await {
                serve(upgraded).await;
            }
        });
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol),
        );
        response
    }
}

/// The WebSocket over an upgraded connection (no handshake is left to do).
pub async fn socket(upgraded: Upgraded, config: WebSocketConfig) -> Socket {
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await
}

/// Whether header `name` lists `token` (comma-separated, any case).
fn lists_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tokens_in_lists_of_any_case() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        assert!(lists_token(&headers, header::CONNECTION, "upgrade"));
        assert!(!lists_token(&headers, header::UPGRADE, "websocket"));
        headers.insert(header::UPGRADE, "WebSocket".parse().unwrap());
        assert!(lists_token(&headers, header::UPGRADE, "websocket"));
    }
}
