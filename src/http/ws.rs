//! GraphQL over WebSocket at `/v1/graphql/ws`, with both the current
//! `graphql-transport-ws` and the legacy `graphql-ws` subprotocols. The project and
//! credential come from the `connection_init` payload (`X-Nimbus-Project`,
//! `X-Nimbus-Key`, `Authorization: Bearer <session secret>`; top level or under
//! `headers`, any case), else from `?project=` and the upgrade request's headers and
//! session cookie. A connection may hold a bounded number of subscriptions.
//!
//! One task serves a connection. Subscriptions that follow bus events (`realtime`,
//! `postChanged`, `fileChanged`, …) hand their [`Watch`] over to it: the connection
//! then reads the bus once for all of them, asks each watch what an event means,
//! checks once whether its caller may read the resource, and sends a response
//! rendered once per operation and outcome for every subscriber that asked alike
//! (see [`render`]). Other operations run as async-graphql streams.
//!
//! A client that stops reading its socket must not hold the server's resources
//! forever: once TCP buffers fill, a write waits, and one that cannot finish within
//! `NIMBUS_WS_SEND_TIMEOUT` closes the connection (best-effort close frame
//! `4008 SUBSCRIBER_TOO_SLOW: …`), dropping its subscriptions. While a write waits,
//! the connection holds just that one message, and its subscriptions fall behind in
//! the bus's bounded ring rather than queue here.
//!
//! [`Watch`]: crate::services::realtime::watch::Watch

mod render;

pub use render::Shapes;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::dynamic::Schema;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, ClientMessage};
use async_graphql::{Data, Request, Response, ServerError};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse as _, Response as HttpResponse};
use futures_util::stream::{self, BoxStream};
use futures_util::{FutureExt as _, StreamExt as _, future};
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::StreamMap;

use crate::AppState;
use crate::auth::{Caller, Credential};
use crate::bus::{BusMessage, Published};
use crate::error::{AppError, AppResult};
use crate::graphql::LoadedProject;
use crate::graphql::limits::coded;
use crate::http::identity::{self, KEY_HEADER, PROJECT_HEADER, Presented};
use crate::http::metrics::GaugeGuard;
use crate::services::databases::tx::{Finished, Mode, RequestTx};
use crate::services::realtime::watch::{Watch, WatchSlot};
use crate::services::users::service::reload_session;

use render::{Renderer, Shape};

/// Largest message a client may send.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Small buffers keep an idle connection cheap (10,000 of them are the goal):
/// clients send little (`subscribe` is a few hundred bytes), and tungstenite
/// grows the buffer when a larger message arrives.
const READ_BUFFER_BYTES: usize = 256;
/// Close code for a client that stopped reading: an application code (4000-4999)
/// that graphql-ws does not define, so its client takes the close as non-fatal and
/// reconnects.
const TOO_SLOW_CLOSE_CODE: u16 = 4008;
/// How long the close frame of a client that stopped reading gets to go out
/// before the connection is dropped anyway.
const TOO_SLOW_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Close codes of the graphql-transport-ws protocol (and, where the legacy one has
/// none, of ours): a message that is not one, `connection_init` not sent in time,
/// an operation before the acknowledgement, an id in use, a second init.
const CLOSE_BAD_MESSAGE: u16 = 1002;
const CLOSE_INIT_TIMEOUT: u16 = 4408;
const CLOSE_UNAUTHORIZED: u16 = 4401;
const CLOSE_ID_IN_USE: u16 = 4409;
const CLOSE_TOO_MANY_INITS: u16 = 4429;

#[derive(Deserialize)]
pub struct WsParams {
    project: Option<String>,
}

/// The two GraphQL-over-WebSocket subprotocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// `graphql-transport-ws` (the graphql-ws library).
    Transport,
    /// `graphql-ws` (subscriptions-transport-ws, legacy).
    Legacy,
}

impl Protocol {
    /// The first protocol the client offers that Nimbus speaks.
    fn offered(headers: &HeaderMap) -> Option<Protocol> {
        headers
            .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .find_map(|offered| match offered.trim() {
                p if p.eq_ignore_ascii_case("graphql-transport-ws") => Some(Protocol::Transport),
                p if p.eq_ignore_ascii_case("graphql-ws") => Some(Protocol::Legacy),
                _ => None,
            })
    }

    /// The message type of an operation's result.
    fn next_type(self) -> &'static str {
        match self {
            Protocol::Transport => "next",
            Protocol::Legacy => "data",
        }
    }
}

/// `GET /v1/graphql/ws`: upgrades to a GraphQL WebSocket.
pub async fn graphql_ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<WsParams>,
    upgrade: WebSocketUpgrade,
) -> HttpResponse {
    let Some(protocol) = Protocol::offered(&headers) else {
        let body = serde_json::json!({"errors": [{
            "message": "offer the graphql-transport-ws or graphql-ws subprotocol",
            "extensions": {"code": "UNSUPPORTED_SUBPROTOCOL"},
        }]});
        return (axum::http::StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    };
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

async fn serve_socket(state: AppState, socket: WebSocket, protocol: Protocol, upgrade: Presented) {
    let _open = GaugeGuard::raise("nimbus_websocket_connections");
    let mut link = Link {
        socket,
        protocol,
        send_timeout: Duration::from_secs(state.config.ws_send_timeout_secs),
    };
    let init_timeout = Duration::from_secs(state.config.ws_init_timeout_secs);
    let initialising = Box::pin(initialise(&state, &mut link, upgrade, init_timeout));
    let Ok(Some(addressed)) = initialising.await else {
        return;
    };
    let connection = Connection::new(state, link, addressed.caller, addressed.loaded);
    connection.run().await;
}

/// The connection is over: the client left, broke the protocol, or stopped reading.
struct Gone;

/// What a client sent, as far as the protocol is concerned.
enum Incoming {
    /// Boxed: a `subscribe` holds a whole request, which would otherwise take room
    /// in every idle connection's task.
    Message(Box<ClientMessage>),
    /// Not a message of the protocol: the connection closes with 1002.
    Malformed(String),
}

/// The socket of one connection, with every write given `send_timeout`.
struct Link {
    socket: WebSocket,
    protocol: Protocol,
    send_timeout: Duration,
}

impl Link {
    /// The next protocol message; `None` once the socket is closed.
    async fn receive(&mut self) -> Option<Incoming> {
        loop {
            let bytes = match self.socket.recv().await? {
                Ok(Message::Text(text)) => axum::body::Bytes::from(text),
                Ok(Message::Binary(bytes)) => bytes,
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(_)) | Err(_) => return None,
            };
            return Some(match ClientMessage::from_bytes(&bytes) {
                Ok(message) => Incoming::Message(Box::new(message)),
                Err(err) => Incoming::Malformed(err.to_string()),
            });
        }
    }

    async fn send_text(&mut self, text: String) -> Result<(), Gone> {
        self.send(Message::Text(text.into())).await
    }

    /// Writes one message. One that cannot be written within the send timeout
    /// means the client stopped reading: the connection ends, with a best-effort
    /// `SUBSCRIBER_TOO_SLOW` close frame behind the unsent data (so it reaches only
    /// a client that resumes reading in time).
    async fn send(&mut self, message: Message) -> Result<(), Gone> {
        match tokio::time::timeout(self.send_timeout, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Gone),
            Err(_) => {
                metrics::counter!("nimbus_websocket_too_slow_total").increment(1);
                tracing::warn!(
                    timeout_secs = self.send_timeout.as_secs(),
                    "closing a WebSocket whose client stopped reading"
                );
                let reason = close_reason(
                    "SUBSCRIBER_TOO_SLOW",
                    &format!(
                        "the client read nothing for {}s; reconnect and re-query",
                        self.send_timeout.as_secs()
                    ),
                );
                let close = close_message(TOO_SLOW_CLOSE_CODE, reason);
                let _ = tokio::time::timeout(TOO_SLOW_CLOSE_GRACE, self.socket.send(close)).await;
                Err(Gone)
            }
        }
    }

    /// Ends the connection with a close frame.
    async fn close(&mut self, code: u16, reason: String) -> Gone {
        let _ = self.send(close_message(code, reason)).await;
        Gone
    }

    async fn send_response(&mut self, id: &str, response: &Response) -> Result<(), Gone> {
        let payload = serde_json::to_string(response).unwrap_or_else(|_| "null".into());
        self.send_text(format!("{}{payload}}}", frame_prefix(self.protocol, id)))
            .await
    }

    async fn send_complete(&mut self, id: &str) -> Result<(), Gone> {
        let message = serde_json::json!({"type": "complete", "id": id});
        self.send_text(message.to_string()).await
    }

    async fn send_pong(&mut self) -> Result<(), Gone> {
        self.send_text(r#"{"type":"pong"}"#.into()).await
    }
}

/// The start of an operation result message for subscription `id`, up to its
/// payload: `{"type":"next","id":"1","payload":`.
fn frame_prefix(protocol: Protocol, id: &str) -> String {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".into());
    format!(
        r#"{{"type":"{}","id":{id},"payload":"#,
        protocol.next_type()
    )
}

fn close_message(code: u16, reason: String) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Waits for `connection_init` (answering pings meanwhile) and works out who the
/// caller is. `Ok(None)`: refused, timed out or left; the socket is done.
async fn initialise(
    state: &AppState,
    link: &mut Link,
    upgrade: Presented,
    init_timeout: Duration,
) -> Result<Option<identity::Addressed>, Gone> {
    let deadline = tokio::time::sleep(init_timeout);
    tokio::pin!(deadline);
    let payload = loop {
        let incoming = tokio::select! {
            incoming = link.receive() => incoming,
            () = &mut deadline => {
                // A socket that never says who it is holds memory for nothing.
                tracing::debug!("closing a WebSocket that sent no connection_init in time");
                return Err(link.close(CLOSE_INIT_TIMEOUT, "Connection initialisation timeout".into()).await);
            }
        };
        match incoming {
            None => return Err(Gone),
            Some(Incoming::Malformed(reason)) => {
                return Err(link
                    .close(CLOSE_BAD_MESSAGE, close_reason("INVALID_MESSAGE", &reason))
                    .await);
            }
            Some(Incoming::Message(message)) => match *message {
                ClientMessage::ConnectionInit { payload } => break payload.unwrap_or_default(),
                ClientMessage::Ping { .. } => link.send_pong().await?,
                ClientMessage::Pong { .. } | ClientMessage::Stop { .. } => {}
                ClientMessage::Start { .. } => {
                    return Err(link.close(CLOSE_UNAUTHORIZED, "Unauthorized".into()).await);
                }
                ClientMessage::ConnectionTerminate => return Err(Gone),
            },
        }
    };
    let presented = Presented {
        project: payload_value(&payload, PROJECT_HEADER).or(upgrade.project),
        key: payload_value(&payload, KEY_HEADER).or(upgrade.key),
        session: payload_value(&payload, "authorization")
            .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()))
            .or(upgrade.session),
    };
    match identity::resolve(state, &presented).await {
        Ok(addressed) => {
            link.send_text(r#"{"type":"connection_ack"}"#.into())
                .await?;
            Ok(Some(addressed))
        }
        Err(err) => {
            let reason = close_reason(&err.code(), &err.message());
            if link.protocol == Protocol::Legacy {
                let refusal = serde_json::json!({
                    "type": "connection_error",
                    "payload": {"message": reason},
                });
                link.send_text(refusal.to_string()).await?;
            }
            link.close(CLOSE_BAD_MESSAGE, reason).await;
            Ok(None)
        }
    }
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

/// What an operation run as an async-graphql stream produces.
enum Step {
    /// Boxed, as [`Incoming::Message`].
    Respond(Box<Response>),
    /// The stream ended. A subscription whose resolver left a watch in the slot
    /// continues as one of the connection's watches.
    End(Box<Started>),
}

/// How an operation was asked for, kept until its stream ends.
struct Started {
    slot: WatchSlot,
    query: String,
    operation_name: Option<String>,
    variables: async_graphql::Variables,
}

/// A subscription the connection follows itself.
struct Watching {
    id: String,
    /// `{"type":"next","id":…,"payload":`
    frame_prefix: Box<str>,
    watch: Box<dyn Watch>,
    shape: Arc<Shape>,
    _active: GaugeGuard,
}

/// One initialised connection.
struct Connection {
    state: AppState,
    link: Link,
    loaded: Arc<LoadedProject>,
    caller: Caller,
    /// The caller's roles as permission strings, worked out once (and again when
    /// the user changes).
    roles: Vec<String>,
    /// The request data every operation gets: the caller.
    data: Arc<Data>,
    /// The event that ends everything when the caller's own key is deleted.
    own_key_revoked: Option<String>,
    operations: StreamMap<String, BoxStream<'static, Step>>,
    watching: Vec<Watching>,
    /// The bus, while some watch needs it (or a subscription is starting).
    bus: Option<broadcast::Receiver<Arc<Published>>>,
}

impl Connection {
    fn new(state: AppState, link: Link, caller: Caller, loaded: Arc<LoadedProject>) -> Self {
        Connection {
            own_key_revoked: caller.key().map(|k| format!("keys.{}.delete", k.key_id)),
            roles: caller.roles().as_strings(),
            data: Arc::new(caller_data(&caller)),
            caller,
            state,
            link,
            loaded,
            operations: StreamMap::new(),
            watching: Vec::new(),
            bus: None,
        }
    }

    fn schema(&self) -> &Schema {
        &self.loaded.schema
    }

    async fn run(mut self) {
        loop {
            // The handlers are boxed: the task keeps only what an idle connection
            // needs between messages (10,000 idle connections are the goal), not
            // the largest handler's state.
            let step = tokio::select! {
                incoming = self.link.receive() => match incoming {
                    Some(incoming) => Box::pin(self.on_incoming(incoming)).await,
                    None => return,
                },
                Some((id, step)) = self.operations.next(), if !self.operations.is_empty() => {
                    Box::pin(self.on_step(id, step)).await
                }
                received = recv_bus(&mut self.bus) => Box::pin(self.on_bus(received)).await,
            };
            if step.is_err() {
                return;
            }
        }
    }

    async fn on_incoming(&mut self, incoming: Incoming) -> Result<(), Gone> {
        let message = match incoming {
            Incoming::Message(message) => message,
            Incoming::Malformed(reason) => {
                let reason = close_reason("INVALID_MESSAGE", &reason);
                return Err(self.link.close(CLOSE_BAD_MESSAGE, reason).await);
            }
        };
        match *message {
            ClientMessage::Start { id, payload } => self.start(id, payload).await,
            ClientMessage::Stop { id } => {
                let stopped = self.operations.remove(&id).is_some() || {
                    let before = self.watching.len();
                    self.watching.retain(|w| w.id != id);
                    self.watching.len() < before
                };
                self.release_bus();
                if stopped {
                    self.link.send_complete(&id).await?;
                }
                Ok(())
            }
            ClientMessage::Ping { .. } => self.link.send_pong().await,
            ClientMessage::Pong { .. } => Ok(()),
            ClientMessage::ConnectionInit { .. } => {
                let reason = "Too many initialisation requests".to_string();
                Err(self.link.close(CLOSE_TOO_MANY_INITS, reason).await)
            }
            ClientMessage::ConnectionTerminate => Err(Gone),
        }
    }

    fn active(&self) -> usize {
        self.operations.len() + self.watching.len()
    }

    fn in_use(&self, id: &str) -> bool {
        self.operations.contains_key(id) || self.watching.iter().any(|w| w.id == id)
    }

    /// Starts operation `id`, running it as far as it goes without waiting, so a
    /// subscription is listening before the next client message is read.
    async fn start(&mut self, id: String, mut request: Request) -> Result<(), Gone> {
        if self.in_use(&id) {
            let reason = format!("Subscriber for {id} already exists");
            return Err(self.link.close(CLOSE_ID_IN_USE, reason).await);
        }
        let max = self.state.config.ws_max_subscriptions;
        if self.active() >= max {
            let refusal = Response::from_errors(vec![coded(
                format!("a connection holds at most {max} subscriptions"),
                "TOO_MANY_SUBSCRIPTIONS",
            )]);
            self.link.send_response(&id, &refusal).await?;
            return self.link.send_complete(&id).await;
        }
        if let Err(refused) = self.state.parsed_queries.prepare(&mut request) {
            self.link
                .send_response(&id, &Response::from_errors(vec![refused]))
                .await?;
            return self.link.send_complete(&id).await;
        }
        // Listening starts now, so an event published once the subscription's
        // resolver ran is not missed before its watch is registered.
        if self.bus.is_none() {
            self.bus = Some(self.state.bus.subscribe());
        }
        let started = Box::new(Started {
            slot: WatchSlot::default(),
            query: request.query.clone(),
            operation_name: request.operation_name.clone(),
            variables: request.variables.clone(),
        });
        let tx = RequestTx::new(&self.state, Mode::Exclusive);
        let request = request.data(tx.clone()).data(started.slot.clone());
        let responses = self
            .schema()
            .execute_stream_with_session_data(request, self.data.clone())
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
            });
        let mut steps = responses
            .map(|response| Step::Respond(Box::new(response)))
            .chain(stream::once(future::ready(Step::End(started))))
            .boxed();
        loop {
            match steps.next().now_or_never() {
                Some(Some(step)) => {
                    let ended = matches!(step, Step::End(_));
                    self.on_step(id.clone(), step).await?;
                    if ended {
                        return Ok(());
                    }
                }
                Some(None) => return Ok(()),
                None => {
                    self.operations.insert(id, steps);
                    return Ok(());
                }
            }
        }
    }

    async fn on_step(&mut self, id: String, step: Step) -> Result<(), Gone> {
        match step {
            Step::Respond(response) => self.link.send_response(&id, &response).await,
            Step::End(started) => {
                self.operations.remove(&id);
                let Started {
                    slot,
                    query,
                    operation_name,
                    variables,
                } = *started;
                match slot.take() {
                    Some(watch) => {
                        let shape = self.state.subscription_shapes.intern(Shape::new(
                            &self.loaded,
                            query,
                            operation_name,
                            variables,
                        ));
                        self.watching.push(Watching {
                            frame_prefix: frame_prefix(self.link.protocol, &id).into(),
                            id,
                            watch,
                            shape,
                            _active: GaugeGuard::raise("nimbus_subscriptions_active"),
                        });
                        if self.bus.is_none() {
                            self.bus = Some(self.state.bus.subscribe());
                        }
                        Ok(())
                    }
                    None => {
                        self.release_bus();
                        self.link.send_complete(&id).await
                    }
                }
            }
        }
    }

    /// Stops reading the bus when no watch needs it and none is starting (an
    /// operation still running may yet become one, and must not miss what was
    /// published once its resolver ran).
    fn release_bus(&mut self) {
        if self.watching.is_empty() && self.operations.is_empty() {
            self.bus = None;
        }
    }

    async fn on_bus(&mut self, received: Result<Arc<Published>, RecvError>) -> Result<(), Gone> {
        let published = match received {
            Ok(published) => published,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "dropping realtime subscribers that fell behind");
                let error = coded(
                    format!(
                        "the subscriber fell {missed} events behind and was dropped; resubscribe and re-query"
                    ),
                    "SUBSCRIBER_TOO_SLOW",
                );
                return self.end_watches(error).await;
            }
            Err(RecvError::Closed) => {
                self.bus = None;
                for watching in std::mem::take(&mut self.watching) {
                    self.link.send_complete(&watching.id).await?;
                }
                return Ok(());
            }
        };
        match &published.message {
            BusMessage::Event(event) => {
                if self.watching.is_empty() {
                    self.release_bus();
                    return Ok(());
                }
                if event.project_id != self.caller.project.id {
                    return Ok(());
                }
                if (self.own_key_revoked.as_ref()).is_some_and(|name| event.events.contains(name)) {
                    let error = AppError::InvalidApiKey.to_graphql();
                    return self
                        .end_watches(error.into_server_error(Default::default()))
                        .await;
                }
                let mut readable = None;
                let renderer = Renderer {
                    state: &self.state,
                    schema: &self.loaded.schema,
                    data: &self.data,
                };
                for watching in &self.watching {
                    let Some(outcome) = watching.watch.outcome(event) else {
                        continue;
                    };
                    if !*readable.get_or_insert_with(|| self.caller.may_receive(event, &self.roles))
                    {
                        return Ok(());
                    }
                    let payload = renderer
                        .payload(
                            &published,
                            event,
                            watching.watch.as_ref(),
                            &watching.shape,
                            outcome,
                        )
                        .await;
                    let frame = format!("{}{payload}}}", watching.frame_prefix);
                    self.link.send_text(frame).await?;
                }
                Ok(())
            }
            BusMessage::UserChanged {
                project_id,
                user_id,
            } => self.on_user_changed(project_id, user_id).await,
            BusMessage::ProjectChanged { .. } | BusMessage::Presence(_) => Ok(()),
        }
    }

    /// The caller's own user changed (signed out, blocked, deleted, new team
    /// roles): reload the session, or end the watches with the reason.
    async fn on_user_changed(&mut self, project_id: &str, user_id: &str) -> Result<(), Gone> {
        let Credential::Session(session) = &self.caller.credential else {
            return Ok(());
        };
        if session.user.project_id != project_id || session.user.id != user_id {
            return Ok(());
        }
        match reload_session(&self.state, session).await {
            Ok(reloaded) => {
                self.caller.credential = Credential::Session(reloaded);
                self.roles = self.caller.roles().as_strings();
                self.data = Arc::new(caller_data(&self.caller));
                Ok(())
            }
            Err(err) => {
                let error = err.to_graphql().into_server_error(Default::default());
                self.end_watches(error).await
            }
        }
    }

    /// Ends every watch with `error` (a result with it, then `complete`).
    async fn end_watches(&mut self, error: ServerError) -> Result<(), Gone> {
        let ended = std::mem::take(&mut self.watching);
        self.bus = None;
        let response = Response::from_errors(vec![error]);
        for watching in ended {
            self.link.send_response(&watching.id, &response).await?;
            self.link.send_complete(&watching.id).await?;
        }
        Ok(())
    }
}

/// The next bus message, or never when not listening.
async fn recv_bus(
    bus: &mut Option<broadcast::Receiver<Arc<Published>>>,
) -> Result<Arc<Published>, RecvError> {
    match bus {
        Some(bus) => bus.recv().await,
        None => future::pending().await,
    }
}

fn caller_data(caller: &Caller) -> Data {
    let mut data = Data::default();
    data.insert(caller.clone());
    data
}

/// The response as the end of its writes leaves it.
fn after_finish(response: Response, finished: AppResult<Finished>) -> Response {
    match finished {
        Ok(Finished::Kept) => response,
        // Results of writes that were undone must not be shown. (Exclusive
        // transactions are never asked to run again.)
        Ok(Finished::RolledBack | Finished::Retry) => {
            let mut response = response;
            response.data = async_graphql::Value::Null;
            response
        }
        Err(err) => {
            Response::from_errors(vec![err.to_graphql().into_server_error(Default::default())])
        }
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

    #[test]
    fn picks_the_first_protocol_offered_that_nimbus_speaks() {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            "chat, graphql-ws, graphql-transport-ws".parse().unwrap(),
        );
        assert_eq!(Protocol::offered(&headers), Some(Protocol::Legacy));
        headers.insert(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            "chat".parse().unwrap(),
        );
        assert_eq!(Protocol::offered(&headers), None);
    }

    #[test]
    fn result_frames_name_the_subscription_and_protocol() {
        let prefix = frame_prefix(Protocol::Transport, "a\"b");
        let frame = format!("{prefix}{{\"data\":1}}}}");
        let parsed: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(parsed["type"], "next");
        assert_eq!(parsed["id"], "a\"b");
        assert_eq!(parsed["payload"]["data"], 1);
        assert!(frame_prefix(Protocol::Legacy, "1").contains("\"data\""));
    }
}
