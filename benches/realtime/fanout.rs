//! The load tool's realtime modes (`benches/realtime.sh` drives them):
//!
//! - `fanout`: N subscribers of one server, each signed in with its own token, over
//!   graphql-transport-ws (Nimbus), SSE (PocketBase's `/api/realtime`) or a bare
//!   WebSocket (`ws-reference`). It reads what they cost in the server's resident
//!   memory, then makes the server publish: one event at a time (`--repeat`), timing
//!   each subscriber's receipt from the sending of the triggering request (and from
//!   its response, which PocketBase, and Nimbus under load, send only after the
//!   event has gone out); then, with `--writes`, writes during fan-out: a stream
//!   of updates, each fanning out to every subscriber while the next ones are
//!   written, timing the updates themselves (a `WRITES` line); and then a stream
//!   of events at fixed rates (`--rates`), counting what is delivered per second
//!   in total and which subscribers the server dropped.
//! - `ws-reference`: the limit those figures are measured against: a bare
//!   tokio-tungstenite server that sends every body POSTed to its trigger port to
//!   every WebSocket connected to it, through a tokio broadcast channel and one task
//!   per connection, with the socket settings of Nimbus's own (1 KiB read buffer,
//!   no write buffer, Nagle left on).
//!
//! Every event carries its sequence number as the value of a `"views":` key (the
//! field the triggering update sets), which is how a subscriber knows which event
//! it received. The triggering requests go out from threads of their own over fresh
//! connections, so their timestamps do not wait behind 10,000 subscriber tasks on
//! the tool's runtime.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::{
    Options, Result, Target, WsStream, active_subscriptions, mib, quantile, request_once, rss_kib,
};

/// How the subscribers listen.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// graphql-transport-ws: `connection_init` with the token as a bearer
    /// credential, then one subscription; events are `next` messages.
    GraphqlWs,
    /// PocketBase realtime: `GET` an SSE stream, take the client id from its
    /// `PB_CONNECT` event, `POST` the subscription with the token; events are SSE
    /// events named after the topic.
    Sse,
    /// A bare WebSocket (`ws-reference`): every text frame after `ready` is an event.
    Plain,
}

impl Protocol {
    fn parse(name: &str) -> Result<Self> {
        match name {
            "graphql-ws" => Ok(Protocol::GraphqlWs),
            "sse" => Ok(Protocol::Sse),
            "ws" => Ok(Protocol::Plain),
            other => Err(format!("`--protocol {other}`: expected graphql-ws, sse or ws").into()),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Protocol::GraphqlWs => "graphql-ws",
            Protocol::Sse => "sse",
            Protocol::Plain => "ws",
        }
    }
}

/// What every subscriber of a run connects to and asks for.
struct Setup {
    protocol: Protocol,
    url: String,
    /// graphql-ws: the `X-Nimbus-Project` of `connection_init`.
    project: String,
    /// graphql-ws: the subscription document.
    query: String,
    /// sse: the subscription topic (the collection's name).
    topic: String,
}

/// What a subscriber's task tells the measuring task.
enum Report {
    /// Event number `seq` arrived at `at`.
    Got { seq: u32, at: Instant },
    /// The server ended the subscription or the connection, or the socket failed.
    Failed { why: String },
}

/// The client side of every subscriber socket: small buffers, so that 10,000 of
/// them fit beside the server on the same machine.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// The sequence number an event carries: the integer after its `"views":`.
fn sequence_of(text: &[u8]) -> Option<u32> {
    let at = find(text, b"\"views\":")? + b"\"views\":".len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&text[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn shortened(text: &str) -> String {
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// What one WebSocket text frame is to a subscriber.
enum Frame {
    Event(u32),
    Ping,
    Ignored,
    Unexpected,
}

fn classify(protocol: Protocol, text: &[u8]) -> Frame {
    let event = || sequence_of(text).map_or(Frame::Unexpected, Frame::Event);
    match protocol {
        Protocol::Plain | Protocol::Sse => event(),
        Protocol::GraphqlWs if contains(text, br#""type":"next""#) => {
            if contains(text, br#""errors""#) {
                Frame::Unexpected
            } else {
                event()
            }
        }
        Protocol::GraphqlWs if contains(text, br#""type":"ping""#) => Frame::Ping,
        Protocol::GraphqlWs if contains(text, br#""type":"pong""#) => Frame::Ignored,
        Protocol::GraphqlWs => Frame::Unexpected,
    }
}

/// One PocketBase realtime connection: the response body of its `GET
/// /api/realtime`, read as SSE events.
struct SseStream {
    /// Held so the connection stays open as long as the stream is read.
    _sender: http1::SendRequest<Full<Bytes>>,
    body: hyper::body::Incoming,
    /// Received bytes (without `\r`) not yet taken as an event.
    buffer: Vec<u8>,
}

impl SseStream {
    /// The next whole event as (name, data); `None` when the stream ended.
    async fn next_event(&mut self) -> Result<Option<(String, String)>> {
        loop {
            if let Some(event) = self.take_event() {
                return Ok(Some(event));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend(data.iter().filter(|&&b| b != b'\r'));
                    }
                }
                Some(Err(err)) => return Err(err.into()),
                None => return Ok(None),
            }
        }
    }

    fn take_event(&mut self) -> Option<(String, String)> {
        let end = find(&self.buffer, b"\n\n")?;
        let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
        let text = String::from_utf8_lossy(&block[..end]);
        let (mut name, mut data) = (String::from("message"), String::new());
        for line in text.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim_start().to_string();
            } else if let Some(value) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        Some((name, data))
    }
}

enum Subscriber {
    Ws(Box<WsStream>),
    Sse(Box<SseStream>),
}

/// Waits up to 30 s for the next text frame, answering graphql-ws pings meanwhile.
async fn next_text(ws: &mut WsStream, what: &str) -> Result<String> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| format!("no {what} within 30 s"))?
            .ok_or_else(|| format!("closed before {what}"))??;
        match message {
            Message::Text(text) if text.contains(r#""type":"ping""#) => {
                ws.send(Message::text(r#"{"type":"pong"}"#)).await?;
            }
            Message::Text(text) => return Ok(text.to_string()),
            Message::Close(frame) => return Err(format!("closed before {what}: {frame:?}").into()),
            _ => {}
        }
    }
}

async fn connect_ws(url: &str, subprotocol: Option<&'static str>) -> Result<WsStream> {
    let mut request = url.into_client_request()?;
    if let Some(subprotocol) = subprotocol {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(subprotocol),
        );
    }
    let (ws, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(client_config()), true).await?;
    Ok(ws)
}

/// Opens one subscriber and returns once the server has it (as far as the
/// protocol tells: graphql-ws does not acknowledge a subscription).
async fn open(setup: &Setup, token: Option<&str>) -> Result<Subscriber> {
    match setup.protocol {
        Protocol::GraphqlWs => {
            let token = token.ok_or("graphql-ws subscribers need --tokens")?;
            let mut ws = connect_ws(&setup.url, Some("graphql-transport-ws")).await?;
            let init = serde_json::json!({"type": "connection_init", "payload": {
                "Authorization": format!("Bearer {token}"),
                "X-Nimbus-Project": setup.project,
            }});
            ws.send(Message::text(init.to_string())).await?;
            let ack = next_text(&mut ws, "connection_ack").await?;
            if !ack.contains(r#""type":"connection_ack""#) {
                return Err(format!("expected connection_ack, got {}", shortened(&ack)).into());
            }
            let subscribe = serde_json::json!({"id": "1", "type": "subscribe",
                "payload": {"query": setup.query}});
            ws.send(Message::text(subscribe.to_string())).await?;
            Ok(Subscriber::Ws(Box::new(ws)))
        }
        Protocol::Plain => {
            let mut ws = connect_ws(&setup.url, None).await?;
            let ready = next_text(&mut ws, "ready").await?;
            if ready != "ready" {
                return Err(format!("expected `ready`, got {}", shortened(&ready)).into());
            }
            Ok(Subscriber::Ws(Box::new(ws)))
        }
        Protocol::Sse => {
            let token = token.ok_or("sse subscribers need --tokens")?;
            let target = Target::parse(&setup.url)?;
            let mut sender = target.connect().await?;
            let request = Request::builder()
                .method(Method::GET)
                .uri(target.path.as_str())
                .header(hyper::header::HOST, target.host.clone())
                .header(hyper::header::ACCEPT, "text/event-stream")
                .body(Full::new(Bytes::new()))?;
            let response = sender.send_request(request).await?;
            if !response.status().is_success() {
                return Err(format!("GET {} answered {}", setup.url, response.status()).into());
            }
            let mut stream = SseStream {
                _sender: sender,
                body: response.into_body(),
                buffer: Vec::new(),
            };
            let (name, data) = tokio::time::timeout(Duration::from_secs(30), stream.next_event())
                .await
                .map_err(|_| "no PB_CONNECT within 30 s")??
                .ok_or("the SSE stream ended before PB_CONNECT")?;
            if name != "PB_CONNECT" {
                return Err(format!("expected PB_CONNECT, got event `{name}`").into());
            }
            let connect: serde_json::Value = serde_json::from_str(&data)?;
            let client_id = connect["clientId"]
                .as_str()
                .ok_or_else(|| format!("PB_CONNECT without a clientId: {data}"))?;
            let body = serde_json::json!({"clientId": client_id, "subscriptions": [setup.topic]});
            let (status, answer) = request_once(
                &setup.url,
                Method::POST,
                &[
                    ("content-type", "application/json"),
                    ("authorization", token),
                ],
                &body.to_string(),
            )
            .await?;
            if !status.is_success() {
                return Err(format!(
                    "the subscription POST answered {status}: {}",
                    shortened(&String::from_utf8_lossy(&answer))
                )
                .into());
            }
            Ok(Subscriber::Sse(Box::new(stream)))
        }
    }
}

/// Holds one subscriber until `stop` changes, reporting every event it receives
/// and its end if the server ends it first.
async fn watch_subscriber(
    subscriber: Subscriber,
    protocol: Protocol,
    topic: Arc<str>,
    reports: mpsc::UnboundedSender<Report>,
    mut stop: watch::Receiver<bool>,
) {
    let why = match subscriber {
        Subscriber::Ws(ws) => {
            let mut ws = *ws;
            loop {
                let message = tokio::select! {
                    _ = stop.changed() => {
                        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                        return;
                    }
                    message = ws.next() => message,
                };
                let at = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => match classify(protocol, text.as_bytes()) {
                        Frame::Event(seq) => {
                            let _ = reports.send(Report::Got { seq, at });
                        }
                        Frame::Ping => {
                            if ws.send(Message::text(r#"{"type":"pong"}"#)).await.is_err() {
                                break "the pong could not be sent".to_string();
                            }
                        }
                        Frame::Ignored => {}
                        Frame::Unexpected => {
                            break format!("unexpected message {}", shortened(&text));
                        }
                    },
                    Some(Ok(Message::Close(frame))) => {
                        break format!("closed by the server: {frame:?}");
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => break format!("socket error: {err}"),
                    None => break "closed".to_string(),
                }
            }
        }
        Subscriber::Sse(mut sse) => loop {
            let event = tokio::select! {
                _ = stop.changed() => return,
                event = sse.next_event() => event,
            };
            let at = Instant::now();
            match event {
                Ok(Some((name, data))) if name == *topic => match sequence_of(data.as_bytes()) {
                    Some(seq) => {
                        let _ = reports.send(Report::Got { seq, at });
                    }
                    None => break format!("an event without views: {}", shortened(&data)),
                },
                Ok(Some(_)) => {}
                Ok(None) => break "the SSE stream ended".to_string(),
                Err(err) => break format!("SSE stream error: {err}"),
            }
        },
    };
    let _ = reports.send(Report::Failed { why });
}

/// The HTTP request that makes the server publish event number `seq` (`@SEQ@` in
/// its body), sent over a fresh connection with blocking I/O from the calling
/// thread.
struct Trigger {
    addr: String,
    host: String,
    path: String,
    method: String,
    headers: Vec<String>,
    body: String,
    expect: Option<String>,
}

/// One trigger request: when it went out, when its whole response was in, and
/// whether that response was the expected one.
struct Fired {
    seq: u32,
    due: Instant,
    sent: Instant,
    answered: Instant,
    failure: Option<String>,
}

/// Whether `response` holds a whole HTTP/1.1 response.
fn complete(response: &[u8]) -> bool {
    let Some(end) = find(response, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    let body = &response[end + 4..];
    match head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        Some(length) => body.len() >= length,
        None if head.contains("transfer-encoding: chunked") => body.ends_with(b"0\r\n\r\n"),
        None => false,
    }
}

impl Trigger {
    fn from_options(options: &Options) -> Result<Self> {
        let target = Target::parse(options.required("trigger-url")?)?;
        let headers = options
            .all("trigger-header")
            .iter()
            .map(|h| {
                h.split_once(':')
                    .map(|(name, value)| format!("{}: {}", name.trim(), value.trim()))
                    .ok_or_else(|| format!("`--trigger-header {h}`: expected NAME:VALUE").into())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Trigger {
            addr: target.addr,
            host: target.host.to_str()?.to_string(),
            path: target.path,
            method: options
                .get("trigger-method")
                .unwrap_or("POST")
                .to_ascii_uppercase(),
            headers,
            body: options.get("trigger-body").unwrap_or("").to_string(),
            expect: options.get("trigger-expect").map(str::to_string),
        })
    }

    fn exchange(&self, seq: u32) -> Result<(Instant, Instant, Vec<u8>)> {
        let body = self.body.replace("@SEQ@", &seq.to_string());
        let mut request = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.method,
            self.path,
            self.host,
            body.len()
        );
        for header in &self.headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        request.push_str(&body);
        let mut stream = std::net::TcpStream::connect(&self.addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let sent = Instant::now();
        stream.write_all(request.as_bytes())?;
        let mut response = Vec::with_capacity(4096);
        let mut chunk = [0u8; 8192];
        while !complete(&response) {
            let read = stream.read(&mut chunk)?;
            if read == 0 {
                break;
            }
            response.extend_from_slice(&chunk[..read]);
        }
        Ok((sent, Instant::now(), response))
    }

    /// Sends event `seq`'s request (blocking); `due` is when it was meant to go.
    fn fire(&self, seq: u32, due: Instant) -> Fired {
        let (sent, answered, failure) = match self.exchange(seq) {
            Ok((sent, answered, response)) => {
                let text = String::from_utf8_lossy(&response);
                let ok = text.starts_with("HTTP/1.1 2")
                    && !text.contains("\"errors\"")
                    && self.expect.as_deref().is_none_or(|e| text.contains(e));
                (sent, answered, (!ok).then(|| shortened(&text)))
            }
            Err(err) => (due, Instant::now(), Some(err.to_string())),
        };
        Fired {
            seq,
            due,
            sent,
            answered,
            failure,
        }
    }
}

/// `b - a` in milliseconds, negative when `b` came first.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    if b >= a {
        b.duration_since(a).as_secs_f64() * 1000.0
    } else {
        -(a.duration_since(b).as_secs_f64() * 1000.0)
    }
}

/// p50, p99 and max of `values` (sorted here).
fn spread(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_unstable_by(f64::total_cmp);
    (
        quantile(values, 0.50),
        quantile(values, 0.99),
        values.last().copied().unwrap_or_default(),
    )
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    quantile(&sorted, 0.5)
}

/// CPU seconds process `pid` ("self" for this one) has used on all its threads.
fn cpu_seconds(pid: &str) -> f64 {
    let ticks = || -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the name: state is field 3, utime and stime are fields 14 and 15.
        let rest = stat.get(stat.rfind(')')? + 2..)?;
        let mut fields = rest.split_whitespace().skip(11);
        Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
    };
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks().unwrap_or(0) as f64 / hz as f64
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.1}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The subscribers still connected, and why the others ended.
struct Audience {
    live: usize,
    dropped: usize,
    first_drop: Option<String>,
}

impl Audience {
    fn lost(&mut self, why: String) {
        self.live = self.live.saturating_sub(1);
        self.dropped += 1;
        if self.first_drop.is_none() {
            println!("  a subscriber ended: {why}");
            self.first_drop = Some(why);
        }
    }
}

pub async fn fanout_mode(options: Options) -> Result<()> {
    options.only(&[
        "protocol",
        "url",
        "tokens",
        "project",
        "query",
        "topic",
        "connections",
        "parallel",
        "server-pid",
        "metrics-url",
        "trigger-url",
        "trigger-method",
        "trigger-header",
        "trigger-body",
        "trigger-expect",
        "repeat",
        "gap",
        "rates",
        "duration",
        "writes",
        "writes-duration",
        "senders",
        "threads",
    ])?;
    let protocol = Protocol::parse(options.required("protocol")?)?;
    let setup = Arc::new(Setup {
        protocol,
        url: options.required("url")?.to_string(),
        project: options.get("project").unwrap_or("default").to_string(),
        query: options.get("query").unwrap_or_default().to_string(),
        topic: options.get("topic").unwrap_or("posts").to_string(),
    });
    if protocol == Protocol::GraphqlWs && setup.query.is_empty() {
        return Err("graphql-ws subscribers need --query".into());
    }
    let tokens: Arc<Vec<String>> = Arc::new(match options.get("tokens") {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {path}: {err}"))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    });
    let default_connections = if tokens.is_empty() {
        10_000
    } else {
        tokens.len()
    };
    let connections = options.number("connections", default_connections)?.max(1);
    if protocol != Protocol::Plain && tokens.len() < connections {
        return Err(format!(
            "{connections} subscribers need as many tokens; --tokens has {}",
            tokens.len()
        )
        .into());
    }
    let parallel = options.number("parallel", 64)?.max(1);
    let pid: u32 = options.required("server-pid")?.parse()?;
    let metrics_url = options.get("metrics-url").map(str::to_string);
    let trigger = Arc::new(Trigger::from_options(&options)?);
    let repeat = options.number("repeat", 5)?;
    let gap = options.duration("gap", Duration::from_secs(2))?;
    let duration = options.duration("duration", Duration::from_secs(10))?;
    let senders = options.number("senders", 4)?.max(1);
    let writes: Option<f64> = match options.get("writes") {
        None | Some("" | "none") => None,
        Some(rate) => Some(
            rate.parse::<f64>()
                .ok()
                .filter(|r| *r > 0.0)
                .ok_or_else(|| format!("`--writes`: `{rate}` is not a positive rate"))?,
        ),
    };
    let writes_duration = options.duration("writes-duration", Duration::from_secs(30))?;
    let rates: Vec<f64> = match options.get("rates") {
        None | Some("" | "none") => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|r| {
                r.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| *r > 0.0)
                    .ok_or_else(|| format!("`--rates`: `{r}` is not a positive rate").into())
            })
            .collect::<Result<_>>()?,
    };

    // graphql-transport-ws does not acknowledge a subscription: the server's own
    // gauge tells when every one of them is live.
    // The gauge appears in /metrics only once a first subscription has moved it.
    let baseline = match &metrics_url {
        Some(url) => active_subscriptions(url).await.unwrap_or(0),
        None => 0,
    };
    let before = rss_kib(pid)?;
    println!(
        "fanout ({}): server pid {pid} RSS before: {:.1} MiB; opening {connections} subscribers ({parallel} at a time)",
        protocol.name(),
        mib(before)
    );
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let topic: Arc<str> = setup.topic.as_str().into();
    let opening = Instant::now();
    let mut opened = futures_util::stream::iter(0..connections)
        .map(|i| {
            let setup = setup.clone();
            let tokens = tokens.clone();
            async move { open(&setup, tokens.get(i).map(String::as_str)).await }
        })
        .buffer_unordered(parallel);
    let (mut open_failures, mut first_open_failure) = (0usize, None);
    while let Some(outcome) = opened.next().await {
        match outcome {
            Ok(subscriber) => {
                tokio::spawn(watch_subscriber(
                    subscriber,
                    protocol,
                    topic.clone(),
                    reports_tx.clone(),
                    stop_rx.clone(),
                ));
            }
            Err(err) => {
                open_failures += 1;
                first_open_failure.get_or_insert_with(|| err.to_string());
            }
        }
    }
    drop(opened);
    drop(reports_tx);
    let subscribed = connections - open_failures;
    let open_seconds = opening.elapsed().as_secs_f64();
    println!(
        "  opened {subscribed} in {open_seconds:.1} s ({open_failures} failed{})",
        first_open_failure
            .as_deref()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default()
    );
    if subscribed == 0 {
        return Err("no subscriber could be opened".into());
    }
    let mut live_subscriptions = None;
    if let Some(url) = &metrics_url {
        let waiting = Instant::now();
        let target = baseline + subscribed as u64;
        let mut live = None;
        while waiting.elapsed() < Duration::from_secs(60) {
            live = active_subscriptions(url).await;
            if live.is_some_and(|n| n >= target) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        live_subscriptions = live.map(|n| n.saturating_sub(baseline));
        println!(
            "  the server reports {} live subscriptions (of {subscribed}) after {:.1} s",
            live_subscriptions.map_or("no".to_string(), |n| n.to_string()),
            waiting.elapsed().as_secs_f64()
        );
    }
    // Let the allocator and runtime settle, then read once for a stable figure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid)?;
    let added = after.saturating_sub(before);
    let per_subscriber = added as f64 / subscribed as f64;
    println!(
        "  RSS with them: {:.1} MiB (+{:.1} MiB, {per_subscriber:.1} KiB per subscriber)",
        mib(after),
        mib(added)
    );

    let mut audience = Audience {
        live: subscribed,
        dropped: 0,
        first_drop: None,
    };
    while let Ok(report) = reports.try_recv() {
        if let Report::Failed { why } = report {
            audience.lost(why);
        }
    }

    let mut seq: u32 = 0;
    let mut round_p50 = Vec::new();
    let mut round_p99 = Vec::new();
    let mut round_max = Vec::new();
    let mut round_resp_p99 = Vec::new();
    let mut round_mutation = Vec::new();
    let mut round_received = Vec::new();
    // Server CPU per delivered event in each round, µs.
    let mut round_cpu_us = Vec::new();
    for round in 1..=repeat {
        tokio::time::sleep(gap).await;
        seq += 1;
        let expected = audience.live;
        let cpu_before = cpu_seconds(&pid.to_string());
        let fired = {
            let trigger = trigger.clone();
            let this = seq;
            tokio::task::spawn_blocking(move || trigger.fire(this, Instant::now())).await?
        };
        if let Some(failure) = &fired.failure {
            return Err(format!("the triggering request failed: {failure}").into());
        }
        let mut arrivals = Vec::with_capacity(expected);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while arrivals.len() < expected {
            match tokio::time::timeout_at(deadline, reports.recv()).await {
                Ok(Some(Report::Got { seq: s, at })) if s == seq => arrivals.push(at),
                Ok(Some(Report::Got { .. })) => {}
                Ok(Some(Report::Failed { why })) => audience.lost(why),
                Ok(None) | Err(_) => break,
            }
        }
        let server_ms = (cpu_seconds(&pid.to_string()) - cpu_before) * 1000.0;
        let mut from_answer: Vec<f64> = arrivals
            .iter()
            .map(|&at| signed_ms(fired.answered, at))
            .collect();
        let mut from_sent: Vec<f64> = arrivals
            .iter()
            .map(|&at| signed_ms(fired.sent, at))
            .collect();
        let (p50, p99, max) = spread(&mut from_sent);
        let (resp_p50, resp_p99, resp_max) = spread(&mut from_answer);
        let mutation_ms = signed_ms(fired.sent, fired.answered);
        println!(
            "  round {round}: {} of {expected} got event {seq}; from sending the update: p50 {p50:.1} ms  p99 {p99:.1} ms  max {max:.1} ms; from its response: p50 {resp_p50:.1}  p99 {resp_p99:.1}  max {resp_max:.1} ms; response after {mutation_ms:.1} ms; server CPU {server_ms:.0} ms",
            arrivals.len()
        );
        println!(
            "ROUND n={round} expected={expected} received={} p50_ms={p50:.1} p99_ms={p99:.1} max_ms={max:.1} resp_p50_ms={resp_p50:.1} resp_p99_ms={resp_p99:.1} resp_max_ms={resp_max:.1} mutation_ms={mutation_ms:.1} server_cpu_ms={server_ms:.0}",
            arrivals.len()
        );
        round_p50.push(p50);
        round_p99.push(p99);
        round_max.push(max);
        round_resp_p99.push(resp_p99);
        round_mutation.push(mutation_ms);
        round_received.push(arrivals.len() as f64);
        round_cpu_us.push(server_ms * 1000.0 / arrivals.len().max(1) as f64);
    }

    // Writes during fan-out: each update of the stream fans out to every
    // subscriber while the next ones are being written; what matters here is how
    // long the writes take.
    if let Some(rate) = writes.filter(|_| audience.live > 0) {
        tokio::time::sleep(gap).await;
        steady_step(
            "WRITES",
            pid,
            rate,
            writes_duration,
            senders,
            &trigger,
            &mut seq,
            &mut reports,
            &mut audience,
        )
        .await?;
    }

    let mut best_rate: Option<(f64, f64)> = None;
    let mut steps = 0;
    for &rate in &rates {
        if audience.live == 0 {
            break;
        }
        tokio::time::sleep(gap).await;
        steps += 1;
        let outcome = steady_step(
            "STEADY",
            pid,
            rate,
            duration,
            senders,
            &trigger,
            &mut seq,
            &mut reports,
            &mut audience,
        )
        .await?;
        if outcome.sustained {
            best_rate = Some((rate, outcome.per_second));
        } else {
            break;
        }
    }

    let _ = stop_tx.send(true);
    // Every watcher ends once it has closed its socket and dropped its sender.
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while reports.recv().await.is_some() {}
    })
    .await;
    let rounds = if repeat > 0 {
        format!(
            " rounds={repeat} received_min={:.0} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} resp_p99_ms={:.1} mutation_ms={:.1} server_us_per_delivery={:.1} p99s_ms={}",
            round_received.iter().copied().fold(f64::INFINITY, f64::min),
            median(&round_p50),
            median(&round_p99),
            round_max.iter().copied().fold(0.0, f64::max),
            median(&round_resp_p99),
            median(&round_mutation),
            median(&round_cpu_us),
            list(&round_p99)
        )
    } else {
        String::new()
    };
    let sustained = match best_rate {
        Some((rate, per_second)) => {
            format!(" best_sustained_rate={rate} best_sustained_per_second={per_second:.0}")
        }
        None => String::new(),
    };
    println!(
        "RESULT mode=fanout protocol={} connections={subscribed} open_failures={open_failures} open_seconds={open_seconds:.1} server_reported={} dropped={} rss_before_mib={:.1} rss_after_mib={:.1} added_mib={:.1} kib_per_subscriber={per_subscriber:.1}{rounds} steps={steps}{sustained}",
        protocol.name(),
        live_subscriptions.map_or("-".to_string(), |n| n.to_string()),
        audience.dropped,
        mib(before),
        mib(after),
        mib(added),
    );
    Ok(())
}

/// What one fixed-rate step measured.
struct StepOutcome {
    /// Deliveries per second: when sustained, the rate times the subscribers (every
    /// one was delivered; the measured figure is that within the jitter of the
    /// first and last deliveries); otherwise, as measured.
    per_second: f64,
    sustained: bool,
}

/// Sends `rate` events a second for `duration` from `senders` threads, collecting
/// the deliveries until every live subscriber has every event or nothing arrives
/// for 3 s; prints a line starting with `label` (`STEADY`, `WRITES`).
#[allow(clippy::too_many_arguments)]
async fn steady_step(
    label: &str,
    pid: u32,
    rate: f64,
    duration: Duration,
    senders: usize,
    trigger: &Arc<Trigger>,
    seq: &mut u32,
    reports: &mut mpsc::UnboundedReceiver<Report>,
    audience: &mut Audience,
) -> Result<StepOutcome> {
    let updates = ((rate * duration.as_secs_f64()).round() as u32).max(1);
    let first = *seq + 1;
    *seq += updates;
    let live_at_start = audience.live;
    let dropped_before = audience.dropped;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let (server_cpu0, client_cpu0, wall0) = (
        cpu_seconds(&pid.to_string()),
        cpu_seconds("self"),
        Instant::now(),
    );
    let start = Instant::now() + Duration::from_millis(50);
    let threads = senders.min(updates as usize);
    println!(
        "  steady: {rate} events/s for {:?} ({updates} events, {threads} sending threads) to {live_at_start} subscribers",
        duration
    );
    let handles: Vec<std::thread::JoinHandle<Vec<Fired>>> = (0..threads)
        .map(|thread| {
            let trigger = trigger.clone();
            std::thread::spawn(move || {
                (thread as u32..updates)
                    .step_by(threads)
                    .map(|i| {
                        let due = start + interval * i;
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        trigger.fire(first + i, due)
                    })
                    .collect()
            })
        })
        .collect();
    let mut handles: Vec<Option<std::thread::JoinHandle<Vec<Fired>>>> =
        handles.into_iter().map(Some).collect();
    let mut fired: Vec<Fired> = Vec::with_capacity(updates as usize);
    let mut arrivals: Vec<(u32, Instant)> =
        Vec::with_capacity((updates as usize * live_at_start).min(4_000_000));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_progress = Instant::now();
    let mut sent_all_at: Option<Instant> = None;
    loop {
        tokio::select! {
            report = reports.recv() => match report {
                Some(Report::Got { seq: s, at }) if (first..first + updates).contains(&s) => {
                    arrivals.push((s, at));
                    last_progress = at;
                }
                Some(Report::Got { .. }) => {}
                Some(Report::Failed { why }) => audience.lost(why),
                None => break,
            },
            _ = tick.tick() => {
                for slot in handles.iter_mut() {
                    if slot.as_ref().is_some_and(|h| h.is_finished()) {
                        let handle = slot.take().expect("checked above");
                        fired.extend(handle.join().map_err(|_| "a sending thread panicked")?);
                    }
                }
                if sent_all_at.is_none() && handles.iter().all(Option::is_none) {
                    sent_all_at = Some(Instant::now());
                }
                if let Some(done) = sent_all_at {
                    let ok = fired.iter().filter(|f| f.failure.is_none()).count();
                    let now = Instant::now();
                    if arrivals.len() >= ok * audience.live
                        || now.duration_since(last_progress.max(done)) > Duration::from_secs(3)
                        || now.duration_since(done) > Duration::from_secs(60)
                    {
                        break;
                    }
                }
            }
        }
    }
    let wall = wall0.elapsed().as_secs_f64();
    let server_cpu = cpu_seconds(&pid.to_string()) - server_cpu0;
    let client_cores = (cpu_seconds("self") - client_cpu0) / wall;
    let server_cores = server_cpu / wall;
    fired.sort_unstable_by_key(|f| f.seq);
    let failed: Vec<&Fired> = fired.iter().filter(|f| f.failure.is_some()).collect();
    if let Some(first_failure) = failed.first() {
        println!(
            "  {} triggering requests failed; the first: {}",
            failed.len(),
            first_failure.failure.as_deref().unwrap_or_default()
        );
    }
    let ok = fired.len() - failed.len();
    let expected = ok * live_at_start;
    let delivered = arrivals.len();
    let missing = expected.saturating_sub(delivered);
    let request = |s: u32| fired.get((s - first) as usize);
    let mut from_sent: Vec<f64> = arrivals
        .iter()
        .filter_map(|&(s, at)| request(s).map(|f| signed_ms(f.sent, at)))
        .collect();
    let mut from_answer: Vec<f64> = arrivals
        .iter()
        .filter_map(|&(s, at)| request(s).map(|f| signed_ms(f.answered, at)))
        .collect();
    let (p50, p99, max) = spread(&mut from_sent);
    drop(from_sent);
    let (resp_p50, resp_p99, _) = spread(&mut from_answer);
    drop(from_answer);
    let mut mutation: Vec<f64> = fired
        .iter()
        .filter(|f| f.failure.is_none())
        .map(|f| signed_ms(f.sent, f.answered))
        .collect();
    let (mutation_p50, mutation_p99, _) = spread(&mut mutation);
    let late_ms = fired
        .iter()
        .map(|f| signed_ms(f.due, f.sent))
        .fold(0.0, f64::max);
    // Over the step's own duration, or longer when the deliveries spread further.
    let first_arrival = arrivals.iter().map(|&(_, at)| at).min();
    let last_arrival = arrivals.iter().map(|&(_, at)| at).max();
    let span = match (first_arrival, last_arrival) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    }
    .max(duration.as_secs_f64());
    let server_us = server_cpu * 1e6 / delivered.max(1) as f64;
    let per_second = delivered as f64 / span;
    let dropped = audience.dropped - dropped_before;
    // Kept pace: every update went out on time and every delivery arrived within
    // the step (and a second of latency), rather than the step stretching out.
    let kept_pace = late_ms < 1000.0 && span <= duration.as_secs_f64() + 1.0;
    let sustained = !fired.is_empty()
        && failed.is_empty()
        && missing == 0
        && dropped == 0
        && p99 < 1000.0
        && kept_pace;
    println!(
        "  steady {rate}/s: {delivered} of {expected} deliveries in {span:.1} s = {per_second:.0} events/s; from sending p50 {p50:.1} ms  p99 {p99:.1} ms  max {max:.1} ms (from the response p50 {resp_p50:.1}  p99 {resp_p99:.1}); {dropped} subscribers dropped; responses p50 {mutation_p50:.1} ms  p99 {mutation_p99:.1} ms; sending at most {late_ms:.0} ms behind schedule; server {server_cores:.2} cores ({server_us:.1} µs per delivery), this tool {client_cores:.2} cores: {}",
        if sustained {
            "sustained"
        } else {
            "NOT sustained"
        }
    );
    println!(
        "{label} rate={rate} events={} ok={ok} subscribers={live_at_start} expected={expected} delivered={delivered} missing={missing} span_s={span:.2} per_second={per_second:.0} p50_ms={p50:.1} p99_ms={p99:.1} max_ms={max:.1} resp_p50_ms={resp_p50:.1} resp_p99_ms={resp_p99:.1} dropped={dropped} mutation_p50_ms={mutation_p50:.1} mutation_p99_ms={mutation_p99:.1} late_ms={late_ms:.0} server_cores={server_cores:.2} server_us_per_delivery={server_us:.1} client_cores={client_cores:.2} sustained={}",
        fired.len(),
        if sustained { "yes" } else { "no" }
    );
    Ok(StepOutcome {
        per_second: if sustained {
            rate * live_at_start as f64
        } else {
            per_second
        },
        sustained,
    })
}

pub async fn ws_reference_mode(options: Options) -> Result<()> {
    options.only(&["listen", "trigger-listen", "threads"])?;
    let addr: SocketAddr = options.required("listen")?.parse()?;
    let trigger_addr: SocketAddr = options.required("trigger-listen")?.parse()?;
    // As deep as Nimbus's bus: a connection that falls further behind is dropped.
    let (events, _) = broadcast::channel::<Utf8Bytes>(4096);
    let publish = events.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: String| {
            let receivers = publish.send(Utf8Bytes::from(body)).unwrap_or(0);
            async move {
                (
                    [(hyper::header::CONTENT_TYPE, "application/json")],
                    format!("{{\"receivers\":{receivers}}}"),
                )
            }
        }),
    );
    let trigger = tokio::net::TcpListener::bind(trigger_addr).await?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "ws-reference: WebSockets on ws://{}/, trigger on http://{}/",
        listener.local_addr()?,
        trigger.local_addr()?
    );
    tokio::spawn(async move {
        if let Err(err) = axum::serve(trigger, app).await {
            eprintln!("ws-reference: the trigger server failed: {err}");
        }
    });
    loop {
        let (stream, _) = listener.accept().await?;
        // Subscribed before the handshake, so `ready` means nothing is missed.
        tokio::spawn(serve_reference_socket(stream, events.subscribe()));
    }
}

async fn serve_reference_socket(stream: TcpStream, mut events: broadcast::Receiver<Utf8Bytes>) {
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    if ws.send(Message::text("ready")).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(text) => {
                    if ws.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = ws.close(None).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
