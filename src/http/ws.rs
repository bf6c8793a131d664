//! GraphQL over WebSocket at `/v1/graphql/ws`, with both the current
//! `graphql-transport-ws` and the legacy `graphql-ws` subprotocols. The project and
//! credential come from the `connection_init` payload (`X-Nimbus-Project`,
//! `X-Nimbus-Key`, `Authorization: Bearer <session secret>`; top level or under
//! `headers`, any case), else from `?project=` and the upgrade request's headers and
//! session cookie. A connection may hold a bounded number of subscriptions.
//!
//! A client that stops reading its socket must not hold the server's resources
//! forever: once TCP buffers fill, a write waits, and one that cannot finish within
//! `NIMBUS_WS_SEND_TIMEOUT` closes the connection (best-effort close frame
//! `4008 SUBSCRIBER_TOO_SLOW: …`), dropping its subscriptions. While a write waits,
//! the connection holds just that one message: the GraphQL side waits for the
//! socket, and its subscriptions fall behind in the bus's bounded ring rather than
//! queue here.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_graphql::dynamic::Schema;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::{Data, Executor, Request, Response};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response as HttpResponse;
use futures_util::future;
use futures_util::stream::{self, BoxStream};
use futures_util::{Sink, SinkExt as _, StreamExt as _};
use serde::Deserialize;

use crate::AppState;
use crate::error::AppResult;
use crate::graphql::limits::coded;
use crate::http::identity::{self, KEY_HEADER, PROJECT_HEADER, Presented};
use crate::http::metrics::GaugeGuard;
use crate::services::databases::tx::{Finished, Mode, RequestTx};

/// Largest message a client may send.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Small buffers keep an idle connection cheap (10,000 of them are the goal);
/// tungstenite grows them when a larger message arrives.
const READ_BUFFER_BYTES: usize = 1024;
/// Close code for a client that stopped reading: an application code (4000-4999)
/// that graphql-ws does not define, so its client takes the close as non-fatal and
/// reconnects.
const TOO_SLOW_CLOSE_CODE: u16 = 4008;
/// How long the close frame of a client that stopped reading gets to go out
/// before the connection is dropped anyway.
const TOO_SLOW_CLOSE_GRACE: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
pub struct WsParams {
    project: Option<String>,
}

/// `GET /v1/graphql/ws`: upgrades to a GraphQL WebSocket.
pub async fn graphql_ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<WsParams>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> HttpResponse {
    let mut presented = Presented::from_headers(&headers);
    if params.project.is_some() {
        presented.project = params.project;
    }
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve_socket(state, socket, protocol, presented))
}

async fn serve_socket(
    state: AppState,
    socket: WebSocket,
    protocol: GraphQLProtocol,
    upgrade: Presented,
) {
    let _open = GaugeGuard::raise("nimbus_websocket_connections");
    let executor = ConnectionExecutor {
        state: state.clone(),
        schema: Arc::new(OnceLock::new()),
        active: Arc::new(AtomicUsize::new(0)),
        max_active: state.config.ws_max_subscriptions,
    };
    let schema_slot = executor.schema.clone();
    let initialised = Arc::new(AtomicBool::new(false));
    let init_seen = initialised.clone();
    let init_timeout = Duration::from_secs(state.config.ws_init_timeout_secs);
    let send_timeout = Duration::from_secs(state.config.ws_send_timeout_secs);
    let (to_client, from_client) = socket.split();
    let to_client = bounded_sends(to_client, send_timeout);
    let serving = GraphQLWebSocket::new_with_pair(to_client, from_client, executor, protocol)
        .on_connection_init(move |payload| async move {
            init_seen.store(true, Ordering::SeqCst);
            let presented = Presented {
                project: payload_value(&payload, PROJECT_HEADER).or(upgrade.project),
                key: payload_value(&payload, KEY_HEADER).or(upgrade.key),
                session: payload_value(&payload, "authorization")
                    .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()))
                    .or(upgrade.session),
            };
            match identity::resolve(&state, &presented).await {
                Ok(addressed) => {
                    let _ = schema_slot.set(addressed.loaded.schema.clone());
                    let mut data = Data::default();
                    data.insert(addressed.caller);
                    Ok(data)
                }
                Err(err) => Err(async_graphql::Error::new(close_reason(
                    &err.code(),
                    &err.message(),
                ))),
            }
        })
        .serve();
    tokio::pin!(serving);
    tokio::select! {
        () = &mut serving => return,
        () = tokio::time::sleep(init_timeout) => {}
    }
    if initialised.load(Ordering::SeqCst) {
        serving.await;
    } else {
        // A socket that never says who it is holds memory for nothing: drop it.
        tracing::debug!("closing a WebSocket that sent no connection_init in time");
    }
}

/// The socket's sending half, with every message given `send_timeout` to be
/// written. One that takes longer means the client stopped reading: the sink then
/// tries to close with `SUBSCRIBER_TOO_SLOW` and fails, which ends the connection
/// (the GraphQL side stops at the first failed send) and frees what it held.
fn bounded_sends(
    socket: impl Sink<Message, Error = axum::Error> + Unpin + Send,
    send_timeout: Duration,
) -> impl Sink<Message, Error = axum::Error> + Send {
    futures_util::sink::unfold(socket, move |mut socket, message: Message| async move {
        match tokio::time::timeout(send_timeout, socket.send(message)).await {
            Ok(Ok(())) => Ok(socket),
            Ok(Err(err)) => Err(err),
            Err(_) => {
                metrics::counter!("nimbus_websocket_too_slow_total").increment(1);
                tracing::warn!(
                    timeout_secs = send_timeout.as_secs(),
                    "closing a WebSocket whose client stopped reading"
                );
                // Behind the unsent data, so it reaches only a client that resumes
                // reading in time; the others see the connection end.
                let close = Message::Close(Some(CloseFrame {
                    code: TOO_SLOW_CLOSE_CODE,
                    reason: close_reason(
                        "SUBSCRIBER_TOO_SLOW",
                        &format!(
                            "the client read nothing for {}s; reconnect and re-query",
                            send_timeout.as_secs()
                        ),
                    )
                    .into(),
                }));
                let _ = tokio::time::timeout(TOO_SLOW_CLOSE_GRACE, socket.send(close)).await;
                Err(axum::Error::new("the client stopped reading"))
            }
        }
    })
}

/// A WebSocket close reason is at most 123 bytes: `CODE: message`, cut at a char boundary.
fn close_reason(code: &str, message: &str) -> String {
    let mut reason = format!("{code}: {message}");
    if reason.len() > 120 {
        let mut end = 120;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

/// A string entry of the `connection_init` payload, matched case-insensitively, at
/// the top level or under `headers`.
fn payload_value(payload: &serde_json::Value, name: &str) -> Option<String> {
    let find = |object: &serde_json::Value| {
        object.as_object()?.iter().find_map(|(k, v)| {
            (k.eq_ignore_ascii_case(name))
                .then(|| v.as_str())
                .flatten()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        })
    };
    find(payload).or_else(|| payload.get("headers").and_then(find))
}

/// Runs operations of one connection on the schema of the project chosen at
/// `connection_init`, holding at most `max_active` subscriptions at once.
#[derive(Clone)]
struct ConnectionExecutor {
    state: AppState,
    schema: Arc<OnceLock<Schema>>,
    active: Arc<AtomicUsize>,
    max_active: usize,
}

/// Releases a subscription slot of its connection when dropped.
struct SubscriptionSlot(Arc<AtomicUsize>);

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response whose writes were undone: its data must not be shown.
/// The response as the end of its writes leaves it.
fn after_finish(response: Response, finished: AppResult<Finished>) -> Response {
    match finished {
        Ok(Finished::Kept) => response,
        // Results of writes that were undone must not be shown. (Exclusive
        // transactions are never asked to run again.)
        Ok(Finished::RolledBack | Finished::Retry) => without_data(response),
        Err(err) => {
            Response::from_errors(vec![err.to_graphql().into_server_error(Default::default())])
        }
    }
}

fn without_data(mut response: Response) -> Response {
    response.data = async_graphql::Value::Null;
    response
}

fn error_stream(message: &str, code: &str) -> BoxStream<'static, Response> {
    stream::once(futures_util::future::ready(Response::from_errors(vec![
        coded(message, code),
    ])))
    .boxed()
}

impl Executor for ConnectionExecutor {
    async fn execute(&self, request: Request) -> Response {
        match self.schema.get() {
            Some(schema) => {
                let tx = RequestTx::new(&self.state, Mode::Exclusive);
                let response = schema.execute(request.data(tx.clone())).await;
                let finished = tx.finish(response.errors.is_empty()).await;
                after_finish(response, finished)
            }
            None => Response::from_errors(vec![coded(
                "send connection_init first",
                "CONNECTION_NOT_INITIALISED",
            )]),
        }
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        let Some(schema) = self.schema.get() else {
            return error_stream("send connection_init first", "CONNECTION_NOT_INITIALISED");
        };
        let taken = self.active.fetch_add(1, Ordering::SeqCst);
        let slot = SubscriptionSlot(self.active.clone());
        if taken >= self.max_active {
            return error_stream(
                &format!(
                    "a connection holds at most {} subscriptions",
                    self.max_active
                ),
                "TOO_MANY_SUBSCRIPTIONS",
            );
        }
        // Queries and mutations come through here too: each response ends the
        // request's document transaction (subscriptions never open one).
        let tx = RequestTx::new(&self.state, Mode::Exclusive);
        schema
            .execute_stream_with_session_data(
                request.data(tx.clone()),
                session_data.unwrap_or_default(),
            )
            .then(move |response| {
                // Most responses (every event of a subscription) follow no write:
                // nothing to finish, and nothing held per subscription meanwhile.
                if !tx.has_writes() {
                    return future::Either::Left(future::ready(response));
                }
                let tx = tx.clone();
                future::Either::Right(Box::pin(async move {
                    let finished = tx.finish(response.errors.is_empty()).await;
                    after_finish(response, finished)
                }))
            })
            .map(move |response| {
                let _held = &slot;
                response
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_payload_entries_in_any_case_and_under_headers() {
        let flat = serde_json::json!({"X-Nimbus-Key": "k", "x-nimbus-project": "p"});
        assert_eq!(payload_value(&flat, KEY_HEADER).as_deref(), Some("k"));
        assert_eq!(payload_value(&flat, PROJECT_HEADER).as_deref(), Some("p"));
        let nested = serde_json::json!({"headers": {"X-NIMBUS-KEY": "k2"}});
        assert_eq!(payload_value(&nested, KEY_HEADER).as_deref(), Some("k2"));
        assert_eq!(
            payload_value(&serde_json::json!({"X-Nimbus-Key": ""}), KEY_HEADER),
            None
        );
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let reason = close_reason("INVALID_API_KEY", &"é".repeat(200));
        assert!(reason.len() <= 123);
    }
}
