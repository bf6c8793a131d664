//! GraphQL over WebSocket at `/v1/graphql/ws`, with both the current
//! `graphql-transport-ws` and the legacy `graphql-ws` subprotocols. The project and
//! credential come from the `connection_init` payload (`X-Nimbus-Project`,
//! `X-Nimbus-Key`, `Authorization: Bearer <session secret>`; top level or under
//! `headers`, any case), else from `?project=` and the upgrade request's headers and
//! that project's session cookie. The cookie is sent by the browser whichever page
//! opens the socket, so an upgrade it authenticates must come from one of the
//! project's origins (else HTTP 403 `ORIGIN_NOT_ALLOWED`, before the upgrade; when
//! those cannot be read, the upgrade is refused with the load error, not let through); a
//! credential in `connection_init` is the page's own and needs no such check. The
//! console's cookie counts only on an upgrade from the server's own origin, with its
//! CSRF token in the `connection_init` payload (`csrf`); it is ignored otherwise. A
//! connection may hold a bounded number of subscriptions; one client address may
//! hold a bounded number of sockets (refused before the upgrade, 503
//! `TOO_MANY_CONNECTIONS`) and of subscriptions over all its sockets
//! (`TOO_MANY_SUBSCRIPTIONS`), counted on this replica.
//!
//! The credential is checked for every operation, not once per connection: the
//! connection hears (through the session cache, on every replica) when its user,
//! session, key or project changes, and after a bus gap, and then re-checks it
//! against the database; a timer in its loop fires when the session, JWT or key
//! expires. The caller every operation gets is the current one. A credential that
//! no longer holds ends the connection: its subscriptions end with the error (its
//! presences leave), and the socket closes with `4403 CODE: message`.
//!
//! One task serves a connection. Subscriptions that follow bus events (`realtime`,
//! `postChanged`, `fileChanged`, …) hand their [`Watch`] over to it: the connection
//! then reads the bus once for all of them, asks each watch what an event means,
//! checks once whether its caller may read the resource, and sends a response
//! rendered once per operation and outcome for every subscriber that asked alike
//! (see [`render`]). A watch resuming after a cursor is first sent what the event
//! log holds since, a page at a time, one step (an event sent, a page read) per
//! turn of the connection's loop, so that a changed credential, an expiry or the
//! client's messages are acted on between them; the bus waits meanwhile, and a
//! client address replays on a bounded number of sockets at once
//! (`RATE_LIMITED`). Live, the watch skips what the replay covered
//! ([`resume::Handover`]). Connections are woken for bus messages a
//! chunk at a time (`bus::paced`), so a fan-out to every socket does not hold up
//! the replica's other work. Other operations run as async-graphql streams.
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
mod upgrade;

pub use render::Shapes;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use async_graphql::dynamic::Schema;
use async_graphql::http::ClientMessage;
use async_graphql::{Data, Request, Response, ServerError};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::Response as HttpResponse;
use futures_util::stream::{self, BoxStream};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _, future};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Sleep;
use tokio_stream::StreamMap;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use crate::AppState;
use crate::auth::Caller;
use crate::auth::permissions::RoleNames;
use crate::auth::session_cache::{Wake, Wakes};
use crate::bus::{BusMessage, PacedReceiver, Published};
use crate::db::now_millis;
use crate::error::{AppError, AppResult, codes};
use crate::gauge::GaugeGuard;
use crate::graphql::budget::Size;
use crate::graphql::limits::coded;
use crate::http::graphql::plain_error;
use crate::http::identity::{self, Addressed, KEY_HEADER, PROJECT_HEADER, Presented};
use crate::http::usage;
use crate::services::LoadedProject;
use crate::services::admins;
use crate::services::databases::tx::{Finished, Mode, RequestTx};
use crate::services::projects::DEFAULT_PROJECT;
use crate::services::realtime::resume;
use crate::services::realtime::watch::{Watch, WatchSlot};
use crate::services::usage::counters::ConnectionGuard;
use crate::services::users::service::ClientInfo;

use render::{Renderer, Shape};
use upgrade::{Socket, Upgrade, Upgraded};

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
/// none, of ours): a message that is not one of the protocol's (graphql-ws
/// `BadRequest`; the legacy protocol, which defines none, gets 1002),
/// `connection_init` not sent in time, an operation before the acknowledgement,
/// an id in use, a second init.
const CLOSE_BAD_REQUEST: u16 = 4400;
const CLOSE_BAD_MESSAGE: u16 = 1002;
const CLOSE_INIT_TIMEOUT: u16 = 4408;
const CLOSE_UNAUTHORIZED: u16 = 4401;
const CLOSE_ID_IN_USE: u16 = 4409;
const CLOSE_TOO_MANY_INITS: u16 = 4429;
/// The credential no longer holds (graphql-ws `Forbidden`).
const CLOSE_FORBIDDEN: u16 = 4403;
/// It could not be re-checked (graphql-ws `InternalServerError`).
const CLOSE_INTERNAL: u16 = 4500;
/// Longest operation id a client may give (graphql-ws uses UUIDs).
const MAX_OPERATION_ID_BYTES: usize = 128;
/// Most bytes the subscriptions of one socket may keep for their lifetime, their
/// query texts and variables (counted as held, [`Size::memory`]) together: each
/// is within the message size and the variables' bounds, but a hundred of them
/// at those bounds would hold hundreds of megabytes for as long as the socket
/// stays open. Real subscriptions keep a few kilobytes each.
const MAX_KEPT_PER_SOCKET: u64 = 2 * 1024 * 1024;

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

    /// The subprotocol's name, as the handshake's answer echoes it.
    fn name(self) -> &'static str {
        match self {
            Protocol::Transport => "graphql-transport-ws",
            Protocol::Legacy => "graphql-ws",
        }
    }

    /// The message type of an operation's result.
    fn next_type(self) -> &'static str {
        match self {
            Protocol::Transport => "next",
            Protocol::Legacy => "data",
        }
    }

    /// Whether `kind` is a client message type of this protocol: async-graphql
    /// reads the types of both protocols into one message, so the legacy-only
    /// ones are told apart here. The legacy protocol keeps accepting all of them.
    fn speaks(self, kind: &str) -> bool {
        match self {
            Protocol::Transport => !matches!(kind, "start" | "stop" | "connection_terminate"),
            Protocol::Legacy => true,
        }
    }

    /// The close code for a message that is not one of the protocol's.
    fn bad_message_close(self) -> u16 {
        match self {
            Protocol::Transport => CLOSE_BAD_REQUEST,
            Protocol::Legacy => CLOSE_BAD_MESSAGE,
        }
    }

    /// The close code for a refused `connection_init` (graphql-ws `Forbidden`; the
    /// legacy protocol sends `connection_error` first and closes as for a bad
    /// message).
    fn refused_close(self) -> u16 {
        match self {
            Protocol::Transport => CLOSE_FORBIDDEN,
            Protocol::Legacy => CLOSE_BAD_MESSAGE,
        }
    }
}

/// The `type` of a client message, read on its own to tell the protocols apart.
#[derive(Deserialize)]
struct MessageType<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
}

/// What the WebSockets of each client address hold on this replica.
#[derive(Default)]
pub struct SocketsPerClient {
    usage: Mutex<HashMap<IpAddr, Usage>>,
}

#[derive(Default, Clone, Copy)]
struct Usage {
    sockets: usize,
    subscriptions: usize,
    /// Its sockets replaying the event log for a resumed subscription.
    replays: usize,
    /// The text its subscriptions' filters may read of each event
    /// (`Watch::scan_cost`).
    filter_text: u64,
}

impl SocketsPerClient {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Usage>> {
        self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sockets of one client address replaying at once (each replays its resumed
/// subscriptions one after another): a few, so that one address cannot take every
/// turn to read the log (`resume`), whatever it resubscribes.
const MAX_REPLAYS_PER_CLIENT: usize = 2;

/// One socket's place under its client address's caps, given back when it closes.
struct ClientShare {
    state: AppState,
    client: IpAddr,
    /// The subscriptions of this socket counted for the address.
    subscriptions: usize,
    /// Whether this socket is counted as replaying for the address.
    replaying: bool,
    /// The filter text of this socket's subscriptions counted for the address.
    filter_text: u64,
}

impl ClientShare {
    /// A place for one more socket of `client`, unless it holds `max` (0: no cap).
    fn open(state: &AppState, client: IpAddr, max: usize) -> Option<ClientShare> {
        let mut usage = state.ws_clients.lock();
        let used = usage.entry(client).or_default();
        if max > 0 && used.sockets >= max {
            return None;
        }
        used.sockets += 1;
        Some(ClientShare {
            state: state.clone(),
            client,
            subscriptions: 0,
            replaying: false,
            filter_text: 0,
        })
    }

    /// Counts this socket as replaying (it may already be), unless its address has
    /// [`MAX_REPLAYS_PER_CLIENT`] sockets replaying.
    fn begin_replay(&mut self) -> bool {
        if self.replaying {
            return true;
        }
        let mut usage = self.state.ws_clients.lock();
        let used = usage.entry(self.client).or_default();
        if used.replays >= MAX_REPLAYS_PER_CLIENT {
            return false;
        }
        used.replays += 1;
        self.replaying = true;
        true
    }

    /// Counts this socket as replaying or not, as `replaying` says (locks only on
    /// a change).
    fn settle_replay(&mut self, replaying: bool) {
        if self.replaying && !replaying {
            let mut usage = self.state.ws_clients.lock();
            if let Some(used) = usage.get_mut(&self.client) {
                used.replays = used.replays.saturating_sub(1);
            }
            self.replaying = false;
        }
    }

    /// Counts `active` subscriptions for this socket (locks only on a change).
    fn settle(&mut self, active: usize) {
        if active == self.subscriptions {
            return;
        }
        let mut usage = self.state.ws_clients.lock();
        let used = usage.entry(self.client).or_default();
        used.subscriptions = (used.subscriptions + active).saturating_sub(self.subscriptions);
        self.subscriptions = active;
    }

    /// Counts `more` filter text for one more subscription (on top of `held`, the
    /// socket's subscriptions'), unless the address's would then be over `max`
    /// (0: no cap).
    fn admit_filter_text(&mut self, held: u64, more: u64, max: u64) -> bool {
        let mut usage = self.state.ws_clients.lock();
        let used = usage.entry(self.client).or_default();
        used.filter_text = (used.filter_text + held).saturating_sub(self.filter_text);
        self.filter_text = held;
        if more == 0 {
            return true;
        }
        if max > 0 && used.filter_text.saturating_add(more) > max {
            return false;
        }
        used.filter_text += more;
        self.filter_text += more;
        true
    }

    /// Counts one more subscription (on top of `active`), unless the address holds
    /// `max` over all its sockets (0: no cap).
    fn admit(&mut self, active: usize, max: usize) -> bool {
        self.settle(active);
        if max == 0 {
            return true;
        }
        let mut usage = self.state.ws_clients.lock();
        let used = usage.entry(self.client).or_default();
        if used.subscriptions >= max {
            return false;
        }
        used.subscriptions += 1;
        self.subscriptions += 1;
        true
    }
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let mut usage = self.state.ws_clients.lock();
        if let Some(used) = usage.get_mut(&self.client) {
            used.sockets = used.sockets.saturating_sub(1);
            used.subscriptions = used.subscriptions.saturating_sub(self.subscriptions);
            used.replays = used.replays.saturating_sub(usize::from(self.replaying));
            used.filter_text = used.filter_text.saturating_sub(self.filter_text);
            if used.sockets == 0 {
                usage.remove(&self.client);
            }
        }
    }
}

/// Filter text an event's matching may read on one socket before the socket's
/// task lets the runtime's other tasks run: a socket of many text filters does not
/// hold a worker for the whole event.
const YIELD_AFTER_SCAN: u64 = 1 << 20;

/// `GET /v1/graphql/ws`: upgrades to a GraphQL WebSocket.
pub async fn graphql_ws(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(params): Query<WsParams>,
    upgrade: Upgrade,
) -> HttpResponse {
    let Some(protocol) = Protocol::offered(&headers) else {
        return plain_error(
            codes::UNSUPPORTED_SUBPROTOCOL,
            "offer the graphql-transport-ws or graphql-ws subprotocol",
        );
    };
    let mut presented = match &params.project {
        Some(project) => Presented::for_project(&headers, project),
        None => Presented::from_headers(&headers),
    };
    // The console cookie counts only on a socket the console's own page opens (and
    // then with the CSRF token in `connection_init`): the browser sends it
    // whichever page opens the socket.
    if !identity::from_own_page(&state.config, &headers) {
        presented.console = None;
    }
    if let Some(refusal) = foreign_cookie_upgrade(&state, &headers, &presented).await {
        return refusal;
    }
    let max = state.config.ws_max_per_client;
    let client = crate::http::client::client_info(&state.config, peer, &headers);
    let Some(share) =
        ClientShare::open(&state, crate::http::connections::client_key(peer.ip()), max)
    else {
        let mut refusal = plain_error(
            codes::TOO_MANY_CONNECTIONS,
            &format!("this client address has {max} WebSockets open, the most allowed"),
        );
        refusal.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        return refusal;
    };
    let opening = Box::new(Opening {
        state,
        protocol,
        upgrade: presented,
        client,
        share,
    });
    upgrade.accept(protocol.name(), move |upgraded| {
        serve_socket(opening, upgraded)
    })
}

/// The refusal of an upgrade that the session cookie would authenticate, from a page
/// that is not one of the project's: the browser sends the cookie whichever page
/// opens the socket, and a WebSocket is not bound by CORS.
async fn foreign_cookie_upgrade(
    state: &AppState,
    headers: &HeaderMap,
    presented: &Presented,
) -> Option<HttpResponse> {
    if !presented.session_from_cookie || presented.key.is_some() {
        return None;
    }
    // Browsers always send `Origin` on a WebSocket upgrade; other clients hold no
    // ambient cookie.
    let origin = identity::header(headers, "origin")?;
    let project_id = presented.project.as_deref().unwrap_or(DEFAULT_PROJECT);
    let loaded = match state.schemas.get(state, project_id).await {
        Ok(loaded) => loaded,
        // An unknown project is refused at `connection_init`, as any other.
        Err(AppError::ProjectNotFound { .. }) => return None,
        // Its origins cannot be told now: the cookie does not get the benefit of
        // the doubt.
        Err(err) => {
            tracing::warn!(project = %project_id, error = ?err, "refusing a cookie upgrade whose project's origins cannot be read");
            return Some(plain_error(&err.code(), &err.message()));
        }
    };
    let host = identity::header(headers, "host");
    if identity::origin_allowed(origin, host, &loaded.project) {
        return None;
    }
    Some(plain_error(
        codes::ORIGIN_NOT_ALLOWED,
        "a session cookie authenticates WebSockets only from the project's own origins (redirectHosts); send the session in connection_init instead",
    ))
}

/// What an upgraded socket starts with, until `connection_init` says who the caller is.
struct Opening {
    state: AppState,
    protocol: Protocol,
    /// What the upgrade request presented.
    upgrade: Presented,
    client: ClientInfo,
    share: ClientShare,
}

/// Serves an upgraded connection. The task keeps this future for as long as the
/// connection lives (10,000 idle connections are the goal), so it holds only
/// pointers: the socket is made in a box of its own, the connection lives in
/// one box, the initialisation in another while it runs. (A future keeps what
/// it captured, and what it moved out of, beside every later state.)
fn serve_socket(opening: Box<Opening>, upgraded: Upgraded) -> impl Future<Output = ()> + Send {
    let upgraded = Box::new(upgraded);
    async move {
        let _open = GaugeGuard::raise("nimbus_websocket_connections");
        let link = Box::pin(Link::new(
            upgraded,
            opening.protocol,
            Duration::from_secs(opening.state.config.ws_send_timeout_secs),
        ))
        .await;
        if let Some(connection) = Box::pin(open(opening, link)).await {
            // The database connections its operations lease count for its
            // client's share (ADR 48).
            let client = crate::http::client::lease_client(&connection.client.ip);
            crate::db::lease::LEASE_CLIENT
                .scope(client, connection.run())
                .await;
        }
    }
}

/// Waits for `connection_init` and makes the connection; `None` when the socket
/// is done.
async fn open(opening: Box<Opening>, mut link: Box<Link>) -> Option<Box<Connection>> {
    let Opening {
        state,
        protocol: _,
        upgrade,
        client,
        share,
    } = *opening;
    let init_timeout = Duration::from_secs(state.config.ws_init_timeout_secs);
    let Ok(Some((addressed, presented))) =
        initialise(&state, &mut link, upgrade, init_timeout).await
    else {
        return None;
    };
    let mut connection = Connection::new(state, *link, addressed, presented, client, share);
    // A sign-out, block or revocation heard between the credential's check and
    // the watch begun in `new` rang no bell this connection hears: check again
    // before the first operation runs.
    if connection.state.sessions.credential_changes() != connection.caller.checked_at {
        connection.recheck().await.ok()?;
    }
    Some(connection)
}

/// The connection is over: the client left, broke the protocol, or stopped reading.
struct Gone;

/// What a client sent, as far as the protocol is concerned.
enum Incoming {
    /// Boxed: a `subscribe` holds a whole request, which would otherwise take room
    /// in every idle connection's task.
    Message(Box<ClientMessage>),
    /// Not a message of the protocol: the connection closes with 4400 (legacy:
    /// 1002).
    Malformed(String),
}

/// The socket of one connection, with every write given `send_timeout`.
struct Link {
    socket: Socket,
    protocol: Protocol,
    send_timeout: Duration,
    /// The project's usage counters once the connection is made (usage on): the
    /// connection counts as open while it holds them, and its messages' bytes
    /// are counted. One pointer in every idle connection.
    usage: Option<ConnectionGuard>,
}

impl Link {
    /// The WebSocket over `upgraded`, with small buffers that grow with what is
    /// read and written, and the message and frame size caps.
    async fn new(upgraded: Box<Upgraded>, protocol: Protocol, send_timeout: Duration) -> Box<Link> {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(0)
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES));
        Box::new(Link {
            socket: upgrade::socket(*upgraded, config).await,
            protocol,
            send_timeout,
            usage: None,
        })
    }

    /// The next protocol message; `None` once the socket is closed.
    async fn receive(&mut self) -> Option<Incoming> {
        loop {
            let bytes = match self.socket.next().await? {
                Ok(Message::Text(text)) => axum::body::Bytes::from(text),
                Ok(Message::Binary(bytes)) => bytes,
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Ok(Message::Close(_)) | Err(_) => return None,
            };
            if let Some(usage) = &self.usage {
                usage.counters().ws_received(bytes.len() as u64);
            }
            if let Ok(MessageType { kind: Some(kind) }) = serde_json::from_slice(&bytes)
                && !self.protocol.speaks(&kind)
            {
                return Some(Incoming::Malformed(format!(
                    "`{kind}` is not a message type of this subprotocol"
                )));
            }
            return Some(match ClientMessage::from_bytes(&bytes) {
                // Kept for as long as the operation runs, and written into each of
                // its messages.
                Ok(ClientMessage::Start { id, .. }) if id.len() > MAX_OPERATION_ID_BYTES => {
                    Incoming::Malformed(format!(
                        "an operation id is at most {MAX_OPERATION_ID_BYTES} bytes"
                    ))
                }
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
        if let Some(usage) = &self.usage {
            let bytes = match &message {
                Message::Text(text) => text.len(),
                Message::Binary(bytes) => bytes.len(),
                _ => 0,
            };
            usage.counters().ws_sent(bytes as u64);
        }
        let sent = {
            let send = self.socket.send(message);
            tokio::pin!(send);
            // Most writes go out at once (the socket's buffer has room): the timer
            // is armed only for one that has to wait, not for every delivery.
            match std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await {
                Poll::Ready(sent) => Ok(sent),
                Poll::Pending => tokio::time::timeout(self.send_timeout, send).await,
            }
        };
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Gone),
            Err(_) => {
                metrics::counter!("nimbus_websocket_too_slow_total").increment(1);
                tracing::warn!(
                    timeout_secs = self.send_timeout.as_secs(),
                    "closing a WebSocket whose client stopped reading"
                );
                let reason = close_reason(
                    codes::SUBSCRIBER_TOO_SLOW,
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
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

/// Waits for `connection_init` (answering pings meanwhile) and works out who the
/// caller is, and with what credential. `Ok(None)`: refused, timed out or left; the
/// socket is done.
async fn initialise(
    state: &AppState,
    link: &mut Link,
    upgrade: Presented,
    init_timeout: Duration,
) -> Result<Option<(Addressed, Presented)>, Gone> {
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
                let code = link.protocol.bad_message_close();
                let reason = close_reason(codes::INVALID_MESSAGE, &reason);
                return Err(link.close(code, reason).await);
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
    let project = payload_value(&payload, PROJECT_HEADER);
    // The upgrade's cookie is the session of the upgrade's project (whose origins
    // were checked): it does not follow the socket to another one.
    let upgrade_session = match &project {
        Some(project)
            if upgrade.session_from_cookie && upgrade.project.as_ref() != Some(project) =>
        {
            None
        }
        _ => upgrade.session,
    };
    let bearer = payload_value(&payload, "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()));
    let csrf = payload_value(&payload, "csrf");
    let console = upgrade.console.map(|proof| identity::ConsoleProof {
        csrf: csrf.or(proof.csrf),
        ..proof
    });
    let mut presented = Presented {
        project: project.or(upgrade.project),
        key: payload_value(&payload, KEY_HEADER).or(upgrade.key),
        session_from_cookie: bearer.is_none() && upgrade.session_from_cookie,
        session: bearer.or(upgrade_session),
        console,
    };
    match identity::resolve(state, &presented).await {
        Ok(addressed) => {
            // Without a key, a key's grant is the console session's: kept to be
            // re-checked. Otherwise it was not let in with it, and a re-check must
            // not fail for it.
            let by_console = presented.key.is_none()
                && matches!(addressed.caller.credential, crate::auth::Credential::Key(_));
            if !by_console {
                presented.console = None;
            }
            link.send_text(r#"{"type":"connection_ack"}"#.into())
                .await?;
            Ok(Some((addressed, presented)))
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
            link.close(link.protocol.refused_close(), reason).await;
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

/// The bytes a subscription keeps while it lasts, its query text and variables
/// as held; 0 for any other operation (it keeps nothing once answered).
fn kept_by(request: &mut Request) -> u64 {
    use async_graphql::parser::types::{DocumentOperations, OperationType};
    let name = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return 0;
    };
    let ty = match (&document.operations, name) {
        (DocumentOperations::Single(operation), _) => Some(operation.node.ty),
        (DocumentOperations::Multiple(operations), Some(name)) => operations
            .get(name.as_str())
            .map(|operation| operation.node.ty),
        (DocumentOperations::Multiple(_), None) => None,
    };
    if ty != Some(OperationType::Subscription) {
        return 0;
    }
    (request.query.len() as u64).saturating_add(Size::of_variables(&request.variables).memory())
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
    /// What it keeps while it lasts, in bytes ([`kept_by`]).
    kept: u64,
}

/// A subscription the connection follows itself.
struct Watching {
    id: String,
    /// `{"type":"next","id":…,"payload":`
    frame_prefix: Box<str>,
    watch: Box<dyn Watch>,
    shape: Arc<Shape>,
    /// Resumed after a cursor: which events the live stream sends and which its
    /// replay does (none when it did not resume).
    handover: Option<Box<resume::Handover>>,
    /// The replay under way, until it is over.
    replaying: Option<Box<Replaying>>,
    /// What it keeps, in bytes, counted against [`MAX_KEPT_PER_SOCKET`].
    kept: u64,
    _active: GaugeGuard,
}

impl Watching {
    /// Its message for `event` seen as `outcome`, rendered (or shared) by `renderer`.
    async fn frame(
        &self,
        renderer: &Renderer<'_>,
        published: &Published,
        event: &crate::bus::Event,
        outcome: crate::services::realtime::watch::Outcome,
    ) -> tokio_tungstenite::tungstenite::Utf8Bytes {
        renderer
            .frame(
                published,
                event,
                self.watch.as_ref(),
                &self.shape,
                outcome,
                &self.frame_prefix,
            )
            .await
    }
}

/// A replay under way: where it is in the log, and the events of the page read
/// that are not sent yet (one page at most).
struct Replaying {
    replay: resume::Replay,
    page: std::collections::VecDeque<Arc<Published>>,
}

/// One initialised connection.
struct Connection {
    state: AppState,
    link: Link,
    loaded: Arc<LoadedProject>,
    caller: Caller,
    /// The caller's roles as permission strings, worked out once (and again when
    /// the user changes).
    roles: RoleNames,
    /// What the client presented, checked again whenever it may have changed.
    presented: Presented,
    /// Tells when the credential (user, session, key; or anything, after a bus
    /// gap) or the project may have changed, on any replica.
    changes: Wakes,
    /// The changes already acted on.
    seen: Wake,
    /// The wait for the next change, armed for the `seen` it holds: kept across
    /// the loop's turns, so a bus message handled does not cost a waiter
    /// unregistered and registered again (two locks per delivery of a fan-out).
    changed: Option<(Wake, ChangeWait)>,
    /// Bus messages handled since the client's side was last given way
    /// ([`BUS_TURNS_BEFORE_OTHERS`]).
    bus_in_a_row: u8,
    /// When the credential expires (milliseconds since the epoch), and the timer
    /// that fires then: the one timer of an idle connection.
    expires_at: Option<i64>,
    expiry: Option<Pin<Box<Sleep>>>,
    /// The events that say the caller's own key changed.
    /// Boxed: most connections hold a session, not a key.
    own_key_events: Option<Box<(String, String)>>,
    operations: StreamMap<String, BoxStream<'static, Step>>,
    /// What the operations still streaming keep ([`kept_by`]), by id: counted
    /// with the watches' against [`MAX_KEPT_PER_SOCKET`].
    streaming_kept: HashMap<String, u64>,
    watching: Vec<Watching>,
    /// The bus, while some watch needs it (or a subscription is starting).
    bus: Option<PacedReceiver>,
    /// The client's address, as operations see it (rate limits, presence caps).
    /// Operations and renders get it, with the caller, in request data made for
    /// each: an idle connection holds no copy.
    client: ClientInfo,
    /// This socket's place under its address's caps.
    share: ClientShare,
    /// When a console session acting here was last checked (none for any other
    /// credential): its use over the socket renews its idle end, as over HTTP, at
    /// most every [`admins::service::touch_every_ms`], not with every message.
    console_checked: Option<tokio::time::Instant>,
}

impl Connection {
    fn new(
        state: AppState,
        link: Link,
        addressed: Addressed,
        presented: Presented,
        client: ClientInfo,
        share: ClientShare,
    ) -> Box<Self> {
        let Addressed {
            caller,
            loaded,
            expires_at,
        } = addressed;
        let changes = state.sessions.watch(caller.holder());
        let seen = changes.now();
        let mut link = link;
        link.usage = loaded.usage.as_ref().map(|counters| counters.connection());
        let mut connection = Box::new(Connection {
            seen,
            changes,
            changed: None,
            bus_in_a_row: 0,
            own_key_events: caller.key().map(|k| {
                Box::new((
                    format!("keys.{}.delete", k.key_id),
                    format!("keys.{}.update", k.key_id),
                ))
            }),
            roles: caller.roles().names(),
            client,
            share,
            caller,
            presented,
            expires_at: None,
            expiry: None,
            state,
            link,
            loaded,
            operations: StreamMap::new(),
            streaming_kept: HashMap::new(),
            watching: Vec::new(),
            bus: None,
            console_checked: None,
        });
        if connection.presented.console.is_some() {
            connection.console_checked = Some(tokio::time::Instant::now());
        }
        connection.expire_at(expires_at);
        connection
    }

    /// Sets the expiry timer (reusing the one there is).
    fn expire_at(&mut self, expires_at: Option<i64>) {
        self.expires_at = expires_at;
        let Some(at) = expires_at else {
            self.expiry = None;
            return;
        };
        // A millisecond late rather than early: the check at the deadline must
        // find the credential expired.
        let left = u64::try_from(at.saturating_sub(now_millis())).unwrap_or(0) + 1;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(left);
        match &mut self.expiry {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.expiry = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    fn expired(&self) -> bool {
        self.expires_at.is_some_and(|at| at <= now_millis())
    }

    /// Whether the console session acting here is due a check that marks it used
    /// (and moves the connection's expiry to its new idle end).
    fn console_due(&self) -> bool {
        let every = admins::service::touch_every_ms(&self.state);
        self.console_checked.is_some_and(|at| {
            at.elapsed() >= Duration::from_millis(u64::try_from(every).unwrap_or(u64::MAX))
        })
    }

    /// Acts on a change heard: re-checks the credential, or reloads the project
    /// when only it changed.
    async fn on_change(&mut self) -> Result<(), Gone> {
        let now = self.changes.now();
        if now.credential != self.seen.credential {
            self.recheck().await
        } else if now.project != self.seen.project {
            self.seen = now;
            self.reload_project().await
        } else {
            Ok(())
        }
    }

    /// Checks the credential again, past every cache: the connection goes on with
    /// the caller as it is now, or ends.
    async fn recheck(&mut self) -> Result<(), Gone> {
        self.seen = self.changes.now();
        if self.console_checked.is_some() {
            self.console_checked = Some(tokio::time::Instant::now());
        }
        match identity::recheck(&self.state, &self.presented).await {
            Ok(addressed) => {
                self.roles = addressed.caller.roles().names();
                self.caller = addressed.caller;
                self.loaded = addressed.loaded;
                self.expire_at(addressed.expires_at);
                Ok(())
            }
            Err(err) => Err(self.revoke(err).await),
        }
    }

    /// Takes the project as it is now (its settings, its schema with the
    /// collections' permissions); the credential stands.
    async fn reload_project(&mut self) -> Result<(), Gone> {
        self.current_project().await
    }

    /// Takes the project's schema as this replica has it now when it is not the
    /// one held: a structure change (a new attribute) is selectable by the next
    /// operation on an open socket, even one that starts before the change's
    /// notification wakes the connection. A cache look-up when nothing changed.
    async fn current_project(&mut self) -> Result<(), Gone> {
        match self
            .state
            .schemas
            .get(&self.state, &self.caller.project.id)
            .await
        {
            Ok(loaded) if Arc::ptr_eq(&loaded, &self.loaded) => Ok(()),
            Ok(loaded) => {
                self.caller.project = loaded.project.clone();
                self.loaded = loaded;
                Ok(())
            }
            Err(err) => Err(self.revoke(err).await),
        }
    }

    /// Ends the connection whose credential no longer holds: every operation ends
    /// with the error (a presence held here leaves), then the socket closes with
    /// `4403 CODE: message` (`4500` when the check itself failed).
    async fn revoke(&mut self, err: AppError) -> Gone {
        tracing::debug!(code = %err.code(), "closing a WebSocket whose credential no longer holds");
        metrics::counter!("nimbus_websocket_revoked_total").increment(1);
        let close_code = if err.http_status().is_server_error() {
            CLOSE_INTERNAL
        } else {
            CLOSE_FORBIDDEN
        };
        let reason = close_reason(&err.code(), &err.message());
        let ids: Vec<String> = (self.operations.keys().cloned())
            .chain(self.watching.iter().map(|w| w.id.clone()))
            .collect();
        // Dropped before anything is sent, so they stop at once.
        self.operations = StreamMap::new();
        self.watching.clear();
        self.bus = None;
        let response =
            Response::from_errors(vec![err.to_graphql().into_server_error(Default::default())]);
        for id in ids {
            if self.link.send_response(&id, &response).await.is_err()
                || self.link.send_complete(&id).await.is_err()
            {
                return Gone;
            }
        }
        self.link.close(close_code, reason).await
    }

    fn schema(&self) -> &Schema {
        &self.loaded.schema
    }

    async fn run(mut self: Box<Self>) {
        loop {
            if self
                .changed
                .as_ref()
                .is_none_or(|(armed, _)| *armed != self.seen)
            {
                let wait = Box::pin(self.changes.changed_from_owned(self.seen));
                self.changed = Some((self.seen, wait));
            }
            // The handlers are boxed: the task keeps only what an idle connection
            // needs between messages (10,000 idle connections are the goal), not
            // the largest handler's state.
            //
            // The bus is looked at first: in a fan-out, a connection is woken for
            // the bus, and the other waits are left as they are registered
            // instead of being polled again for every delivery. A change of
            // credential or an expiry is still acted on before the next event is
            // delivered (`on_bus` looks at both), and the bus's backlog is bounded.
            // So that a bus that always has more cannot hold a client's own
            // messages (a `complete`, a ping) back for long, every so many bus
            // messages the bus lets the other waits be looked at first.
            let give_way = self.bus_in_a_row >= BUS_TURNS_BEFORE_OTHERS;
            // While a resumed subscription replays the log, the bus waits (its
            // ring holds what comes meanwhile), so that nothing live overtakes
            // the replay; everything else is attended to between the replay's
            // steps, each one event sent or one page read.
            let replaying = self.replaying();
            let step = tokio::select! {
                biased;
                received = recv_bus(&mut self.bus, give_way), if !replaying => {
                    self.bus_in_a_row = if give_way { 0 } else { self.bus_in_a_row + 1 };
                    Box::pin(self.on_bus(received)).await
                }
                () = wait_change(&mut self.changed) => Box::pin(self.on_change()).await,
                () = until(&mut self.expiry) => Box::pin(self.recheck()).await,
                incoming = self.link.receive() => match incoming {
                    Some(incoming) => Box::pin(self.on_incoming(incoming)).await,
                    None => return,
                },
                Some((id, step)) = self.operations.next(), if !self.operations.is_empty() => {
                    Box::pin(self.on_step(id, step)).await
                }
                () = future::ready(()), if replaying => Box::pin(self.replay_step()).await,
            };
            if step.is_err() {
                return;
            }
            self.share.settle(self.active());
            let replaying = self.replaying();
            self.share.settle_replay(replaying);
        }
    }

    /// Whether a resumed subscription is replaying the log.
    fn replaying(&self) -> bool {
        self.watching.iter().any(|w| w.replaying.is_some())
    }

    /// One step of the first replay under way: one event of the page read sent,
    /// or the next page read; once the log is read up to its handover, the
    /// subscription goes on live. One out of time, or that cannot read the log,
    /// ends with the error.
    async fn replay_step(&mut self) -> Result<(), Gone> {
        let Some(index) = self.watching.iter().position(|w| w.replaying.is_some()) else {
            return Ok(());
        };
        let watching = &mut self.watching[index];
        let Some(replaying) = watching.replaying.as_mut() else {
            return Ok(());
        };
        let error = if replaying.replay.overdue() {
            resume::Replay::overdue_error()
        } else if let Some(published) = replaying.page.pop_front() {
            let BusMessage::Event(event) = &published.message else {
                return Ok(());
            };
            let Some(outcome) = watching.watch.outcome(event, &self.caller) else {
                return Ok(());
            };
            // The caller's roles may have changed since the page was read.
            if !self.caller.may_receive(event, &self.roles) {
                return Ok(());
            }
            let renderer = Renderer {
                state: &self.state,
                schema: &self.loaded.schema,
                caller: &self.caller,
                client: &self.client,
            };
            let frame = watching.frame(&renderer, &published, event, outcome).await;
            return self.link.send(Message::Text(frame)).await;
        } else {
            let watch = watching.watch.as_ref();
            let wanted = |event: &crate::bus::Event| watch.outcome(event, &self.caller).is_some();
            let page = replaying
                .replay
                .next_page(
                    &self.state,
                    &self.caller,
                    &self.roles,
                    crate::services::resource_access(),
                    wanted,
                )
                .await;
            match page {
                Ok(Some(events)) => {
                    replaying.page.extend(events);
                    return Ok(());
                }
                Ok(None) => {
                    watching.replaying = None;
                    return Ok(());
                }
                Err(err) => err.to_graphql().into_server_error(Default::default()),
            }
        };
        let ended = self.watching.remove(index);
        self.release_bus();
        let response = Response::from_errors(vec![error]);
        self.link.send_response(&ended.id, &response).await?;
        self.link.send_complete(&ended.id).await
    }

    async fn on_incoming(&mut self, incoming: Incoming) -> Result<(), Gone> {
        let message = match incoming {
            Incoming::Message(message) => message,
            Incoming::Malformed(reason) => {
                let code = self.link.protocol.bad_message_close();
                let reason = close_reason(codes::INVALID_MESSAGE, &reason);
                return Err(self.link.close(code, reason).await);
            }
        };
        match *message {
            ClientMessage::Start { id, payload } => self.start(id, payload).await,
            ClientMessage::Stop { id } => {
                self.streaming_kept.remove(&id);
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
        // A change heard, or an expiry passed, while this message arrived goes
        // first: the operation gets the credential as it is now.
        if self.expired() || self.console_due() {
            self.recheck().await?;
        } else if self.changes.now() != self.seen {
            self.on_change().await?;
        }
        self.current_project().await?;
        if self.in_use(&id) {
            let reason = format!("Subscriber for {id} already exists");
            return Err(self.link.close(CLOSE_ID_IN_USE, reason).await);
        }
        let max = self.state.config.ws_max_subscriptions;
        if self.active() >= max {
            let refusal = Response::from_errors(vec![coded(
                format!("a connection holds at most {max} subscriptions"),
                codes::TOO_MANY_SUBSCRIPTIONS,
            )]);
            self.link.send_response(&id, &refusal).await?;
            return self.link.send_complete(&id).await;
        }
        let per_client = self.state.config.ws_max_subscriptions_per_client;
        if !self.share.admit(self.active(), per_client) {
            let refusal = Response::from_errors(vec![coded(
                format!(
                    "a client address holds at most {per_client} subscriptions over all its connections"
                ),
                codes::TOO_MANY_SUBSCRIPTIONS,
            )]);
            self.link.send_response(&id, &refusal).await?;
            return self.link.send_complete(&id).await;
        }
        if let Err(refused) = self.state.parsed_queries.prepare(&mut request) {
            let refusal = Response::from_errors(vec![refused]);
            if let Some(usage) = &self.link.usage {
                usage
                    .counters()
                    .operation(&[], usage::error_codes(&refusal));
            }
            self.link.send_response(&id, &refusal).await?;
            return self.link.send_complete(&id).await;
        }
        let kept = kept_by(&mut request);
        let held: u64 = self
            .watching
            .iter()
            .map(|watching| watching.kept)
            .sum::<u64>()
            + self.streaming_kept.values().sum::<u64>();
        if kept > 0 && held.saturating_add(kept) > MAX_KEPT_PER_SOCKET {
            let refusal = Response::from_errors(vec![coded(
                format!(
                    "the subscriptions of a connection keep at most {MAX_KEPT_PER_SOCKET} bytes \
                     of query text and variables; this one would add {kept} to {held}"
                ),
                codes::TOO_MANY_SUBSCRIPTIONS,
            )]);
            if let Some(usage) = &self.link.usage {
                usage
                    .counters()
                    .operation(&[], usage::error_codes(&refusal));
            }
            self.link.send_response(&id, &refusal).await?;
            return self.link.send_complete(&id).await;
        }
        if let Some(usage) = &self.link.usage {
            let roots = usage::known_roots(self.schema(), usage::roots_of(&mut request));
            usage.counters().operation(&roots, std::iter::empty());
        }
        // Listening starts now, so an event published once the subscription's
        // resolver ran is not missed before its watch is registered.
        if self.bus.is_none() {
            self.bus = Some(self.state.bus.subscribe_paced());
        }
        let started = Box::new(Started {
            slot: WatchSlot::default(),
            query: request.query.clone(),
            operation_name: request.operation_name.clone(),
            variables: request.variables.clone(),
            kept,
        });
        let tx = RequestTx::new(&self.state, Mode::Exclusive);
        let request = request.data(tx.clone()).data(started.slot.clone());
        let responses = self
            .schema()
            .execute_stream_with_session_data(
                request,
                Arc::new(caller_data(&self.caller, &self.client)),
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
                    if kept > 0 {
                        self.streaming_kept.insert(id.clone(), kept);
                    }
                    self.operations.insert(id, steps);
                    return Ok(());
                }
            }
        }
    }

    async fn on_step(&mut self, id: String, step: Step) -> Result<(), Gone> {
        match step {
            Step::Respond(response) => {
                if let Some(usage) = &self.link.usage
                    && !response.errors.is_empty()
                {
                    usage.counters().errors(usage::error_codes(&response));
                }
                self.link.send_response(&id, &response).await
            }
            Step::End(started) => {
                self.operations.remove(&id);
                self.streaming_kept.remove(&id);
                let Started {
                    slot,
                    query,
                    operation_name,
                    variables,
                    kept,
                } = *started;
                match slot.take() {
                    Some(watch) => {
                        let held = self.watching.iter().map(|w| w.watch.scan_cost()).sum();
                        let max = self.state.config.ws_max_filter_text_per_client;
                        if !self.share.admit_filter_text(held, watch.scan_cost(), max) {
                            self.release_bus();
                            let refusal = Response::from_errors(vec![coded(
                                format!(
                                    "the filters of a client address's subscriptions may read at most {max} characters of each changed document"
                                ),
                                codes::TOO_MANY_SUBSCRIPTIONS,
                            )]);
                            self.link.send_response(&id, &refusal).await?;
                            return self.link.send_complete(&id).await;
                        }
                        let shape = self.state.subscription_shapes.intern(Shape::new(
                            &self.loaded,
                            query,
                            operation_name,
                            variables,
                        ));
                        if self.bus.is_none() {
                            self.bus = Some(self.state.bus.subscribe_paced());
                        }
                        let mut watching = Watching {
                            frame_prefix: frame_prefix(self.link.protocol, &id).into(),
                            id,
                            watch,
                            shape,
                            handover: None,
                            replaying: None,
                            kept,
                            _active: GaugeGuard::raise("nimbus_subscriptions_active"),
                        };
                        if let Some(after) = watching.watch.resume_after() {
                            if !self.share.begin_replay() {
                                self.release_bus();
                                let refusal = Response::from_errors(vec![
                                    AppError::RateLimited { retry_after: 1 }
                                        .to_graphql()
                                        .into_server_error(Default::default()),
                                ]);
                                self.link.send_response(&watching.id, &refusal).await?;
                                return self.link.send_complete(&watching.id).await;
                            }
                            // The bus is listened to already (since the operation
                            // started): what the relay delivers from now on reaches
                            // this watch live, and the replay reads the rest.
                            let handover = resume::Handover::join(&self.state, after);
                            let replay =
                                resume::Replay::new(&self.caller.project.id, handover.clone());
                            watching.handover = Some(Box::new(handover));
                            watching.replaying = Some(Box::new(Replaying {
                                replay,
                                page: Default::default(),
                            }));
                        }
                        // Room for just this one: most connections hold one
                        // subscription, and a vector's first growth is to four.
                        self.watching.reserve_exact(1);
                        self.watching.push(watching);
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
                    codes::SUBSCRIBER_TOO_SLOW,
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
                // A change of credential heard, or an expiry passed, goes before
                // the event: the bus is looked at before those waits.
                if self.changes.now() != self.seen {
                    self.on_change().await?;
                } else if self.expiry.as_ref().is_some_and(|sleep| sleep.is_elapsed()) {
                    self.recheck().await?;
                }
                // The caller's own key changed: heard here, in order with the
                // events, so none that follows is delivered on the old key.
                if (self.own_key_events.as_deref())
                    .is_some_and(|(a, b)| event.events.iter().any(|e| e == a || e == b))
                {
                    return self.recheck().await;
                }
                let mut readable = None;
                let renderer = Renderer {
                    state: &self.state,
                    schema: &self.loaded.schema,
                    caller: &self.caller,
                    client: &self.client,
                };
                // Text read by filters since this task last let the others run.
                let mut scanned = 0u64;
                for watching in &mut self.watching {
                    if scanned >= YIELD_AFTER_SCAN {
                        scanned = 0;
                        tokio::task::yield_now().await;
                    }
                    scanned += watching.watch.scan_cost();
                    if let Some(handover) = &watching.handover {
                        if !handover.live(event.position) {
                            continue;
                        }
                        // Past the replay, with nothing the relay may yet deliver
                        // late: nothing more to tell apart.
                        if handover.settled_by(event.position) {
                            watching.handover = None;
                        }
                    }
                    let Some(outcome) = watching.watch.outcome(event, &self.caller) else {
                        continue;
                    };
                    if !*readable.get_or_insert_with(|| self.caller.may_receive(event, &self.roles))
                    {
                        return Ok(());
                    }
                    let frame = watching.frame(&renderer, &published, event, outcome).await;
                    self.link.send(Message::Text(frame)).await?;
                }
                Ok(())
            }
            BusMessage::UserChanged {
                project_id,
                user_id,
            } => self.on_user_changed(project_id, user_id).await,
            // The administrator whose console session the caller holds signed out
            // or changed: heard here, in order with the events.
            BusMessage::AdminChanged { email }
                if self
                    .caller
                    .key()
                    .is_some_and(|key| key.key_id == crate::auth::console_key_id(email)) =>
            {
                self.recheck().await
            }
            BusMessage::AdminChanged { .. } => Ok(()),
            // Also heard through the session cache, which re-checks every
            // connection concerned, watching or not.
            BusMessage::ProjectChanged { .. } | BusMessage::Presence(_) | BusMessage::Resumed => {
                Ok(())
            }
        }
    }

    /// The caller's own user changed (signed out, blocked, deleted, new team roles
    /// or labels): heard here, in order with the events, so that none that follows
    /// is delivered on the old roles.
    async fn on_user_changed(&mut self, project_id: &str, user_id: &str) -> Result<(), Gone> {
        match self.caller.require_session_owing_mfa() {
            Ok(session) if session.user.project_id == project_id && session.user.id == user_id => {
                self.recheck().await
            }
            _ => Ok(()),
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

/// A connection's wait for a change of its credential or project.
type ChangeWait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// When the armed wait for a change ends (it is then disarmed); never without one.
async fn wait_change(changed: &mut Option<(Wake, ChangeWait)>) {
    match changed {
        Some((_, wait)) => {
            wait.as_mut().await;
            *changed = None;
        }
        None => future::pending().await,
    }
}

/// When the timer fires; never without one.
async fn until(expiry: &mut Option<Pin<Box<Sleep>>>) {
    match expiry {
        Some(sleep) => sleep.as_mut().await,
        None => future::pending().await,
    }
}

/// The next bus message, or never when not listening.
/// Bus messages a connection handles in a row before its other waits (the
/// client's messages, its operations, a change of credential) are looked at first.
const BUS_TURNS_BEFORE_OTHERS: u8 = 32;

/// The next bus message; when `give_way`, only after the task has yielded once,
/// so that a `biased` select looks at its other branches before this one ends.
async fn recv_bus(
    bus: &mut Option<PacedReceiver>,
    give_way: bool,
) -> Result<Arc<Published>, RecvError> {
    match bus {
        Some(bus) => {
            if give_way {
                tokio::task::yield_now().await;
            }
            bus.recv().await
        }
        None => future::pending().await,
    }
}

fn caller_data(caller: &Caller, client: &ClientInfo) -> Data {
    let mut data = Data::default();
    data.insert(caller.clone());
    data.insert(client.clone());
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
