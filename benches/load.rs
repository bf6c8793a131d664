//! Nimbus's own load tool, run as `cargo bench --bench load -- <mode> [options]`
//! (`benches/run.sh`, `benches/realtime.sh` and `benches/storage.sh` drive it).
//! Seven modes:
//!
//! - `http`: N keep-alive HTTP/1.1 connections, each sending one request after the
//!   other, for a fixed time; prints requests/s, p50/p99/max latency and errors
//!   (with `--expect`, also the responses whose body lacks a given text).
//! - `reference`: a bare axum handler answering `POST /` with a fixed GraphQL
//!   response, the ceiling Nimbus's own `{ __typename }` is measured against.
//! - `file-reference`: a bare axum handler answering `GET /` with one file's bytes,
//!   held in memory and sent in 512 KiB frames: the ceiling of any download over
//!   HTTP/1.1 on the machine, which Nimbus's downloads are measured against.
//! - `ws-idle`: N graphql-transport-ws connections holding one `realtime`
//!   subscription each; prints what they cost in the server's resident memory and,
//!   with `--fanout`, how long one event takes to reach every subscriber.
//! - `argon2`: how many password checks one core does with the Argon2id parameters
//!   Nimbus hashes new passwords with (`nimbus::auth::passwords`), the cost that
//!   dominates a sign-in.
//! - `fanout` and `ws-reference` (in `benches/realtime/fanout.rs`): N subscribers of
//!   Nimbus (graphql-transport-ws), PocketBase (SSE) or a bare tokio-tungstenite
//!   broadcast server, each signed in as its own user: their memory, the delivery
//!   time of one event to all of them, and the events delivered per second at
//!   fixed publishing rates.
//!
//! Every mode prints a last line starting with `RESULT` (space-separated `key=value`)
//! for scripts. It sends traffic only to the addresses it is given, stops by itself
//! after `--duration` (or once the subscribers are measured) and holds no state.
//! With no mode (as `cargo bench` and `cargo test --all-targets` run it) it prints
//! its usage and exits successfully.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

// In a folder of its own: a file directly under benches/ would be taken for a
// bench target of its own.
#[path = "realtime/fanout.rs"]
mod fanout;

const USAGE: &str = "\
usage: cargo bench --bench load -- <mode> [options]

modes:
  http --url URL [--body JSON] [--method POST] [--header K:V]... [--expect TEXT]
       [--connections 32] [--duration 10s] [--warmup 2s] [--threads 1]
      keep-alive HTTP/1.1 load; prints requests/s, p50/p99/max latency, errors
      (--expect: a response whose body lacks TEXT counts as unexpected)
  reference --listen ADDR [--threads 2]
      a bare axum handler answering POST / with {\"data\":{\"__typename\":\"Query\"}}
  file-reference --listen ADDR --file PATH [--threads 2]
      a bare axum handler answering GET / with the file's bytes, read into memory
      once and sent in 512 KiB frames
  ws-idle --url ws://HOST:PORT/v1/graphql/ws --key KEY --server-pid PID
       [--connections 10000] [--parallel 64] [--fanout] [--threads 1]
       [--http-url http://HOST:PORT/v1/graphql] [--metrics-url http://HOST:PORT/metrics]
      N idle connections with one realtime subscription each; prints the server's
      resident memory before and after, and with --fanout the delivery time of one event
  argon2 [--duration 5s]
      password checks per second on one core, with Nimbus's Argon2id parameters
  fanout --protocol graphql-ws|sse|ws --url URL --server-pid PID
       --trigger-url URL [--trigger-method POST] [--trigger-header K:V]...
       [--trigger-body JSON] [--trigger-expect TEXT] [--tokens FILE]
       [--connections N] [--parallel 64] [--project default] [--query SUBSCRIPTION]
       [--topic posts] [--metrics-url http://HOST:PORT/metrics] [--repeat 5]
       [--gap 2s] [--writes 20] [--writes-duration 30s] [--rates 5,10,20]
       [--duration 10s] [--senders 4] [--threads 1]
      N subscribers (one token per line of FILE each); their memory on the server,
      then --repeat single events (each triggered by one request whose body has
      @SEQ@ replaced by the event's number, which the event carries as `views`)
      timed to every subscriber, then (--writes) a stream of that many events/s
      for --writes-duration, timing the triggering writes while each fans out,
      then a stream at each of --rates events/s for --duration, stopping at the
      first rate not sustained
  ws-reference --listen ADDR --trigger-listen ADDR [--threads 2]
      a bare tokio-tungstenite server: every body POSTed to the trigger address
      goes to every connected WebSocket as one text frame

--threads is the number of runtime threads of this tool (1, like `wrk -t1`).
Durations: 10s, 500ms, 2m, or plain seconds.";

/// The one response the reference handler gives.
const REFERENCE_BODY: &str = r#"{"data":{"__typename":"Query"}}"#;
/// The mutation `--fanout` sends; every `keys` subscriber is told about the new key.
const FANOUT_MUTATION: &str = r#"mutation { createApiKey(input: {name: "bench fanout", scopes: ["keys.read"]}) { apiKey { id } } }"#;
const SUBSCRIPTION: &str = r#"subscription { realtime(channels: ["keys"]) { events payload } }"#;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench` to every bench binary; it means nothing here.
    args.retain(|a| a != "--bench");
    // No mode, or only test-harness flags: `cargo bench` or `cargo test --all-targets`
    // running every target. Nothing to measure then, and that is no failure.
    let Some(mode) = args.first().cloned().filter(|m| !m.starts_with('-')) else {
        println!("{USAGE}");
        return;
    };
    let outcome = Options::parse(&args[1..]).and_then(|options| match mode.as_str() {
        "http" => run(options.threads(1)?, http_mode(options)),
        "reference" => run(options.threads(2)?, reference_mode(options)),
        "file-reference" => run(options.threads(2)?, file_reference_mode(options)),
        "ws-idle" => run(options.threads(1)?, ws_idle_mode(options)),
        "argon2" => argon2_mode(&options),
        "fanout" => run(options.threads(1)?, fanout::fanout_mode(options)),
        "ws-reference" => run(options.threads(2)?, fanout::ws_reference_mode(options)),
        "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown mode `{other}`\n\n{USAGE}").into()),
    });
    if let Err(err) = outcome {
        eprintln!("error: {err}");
        std::process::exit(2);
    }
}

/// Runs `work` on a runtime of `threads` threads (a current-thread one for 1).
fn run(threads: usize, work: impl Future<Output = Result<()>>) -> Result<()> {
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(work)
}

/// `--name value` options and bare `--flag`s, as given.
struct Options {
    values: HashMap<String, Vec<String>>,
    flags: Vec<String>,
}

impl Options {
    const FLAGS: &[&str] = &["fanout"];

    fn parse(args: &[String]) -> Result<Self> {
        let mut values: HashMap<String, Vec<String>> = HashMap::new();
        let mut flags = Vec::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument `{arg}`"))?;
            if Self::FLAGS.contains(&name) {
                flags.push(name.to_string());
                continue;
            }
            let value = args
                .next()
                .ok_or_else(|| format!("`--{name}` needs a value"))?;
            values
                .entry(name.to_string())
                .or_default()
                .push(value.clone());
        }
        Ok(Options { values, flags })
    }

    /// Fails on an option the mode does not know, so a typo is not silently ignored.
    fn only(&self, known: &[&str]) -> Result<()> {
        let mut given = self.values.keys().chain(&self.flags);
        match given.find(|name| !known.contains(&name.as_str())) {
            Some(name) => Err(format!("unknown option `--{name}`\n\n{USAGE}").into()),
            None => Ok(()),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    fn all(&self, name: &str) -> &[String] {
        self.values.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    fn required(&self, name: &str) -> Result<&str> {
        self.get(name)
            .ok_or_else(|| format!("`--{name}` is required\n\n{USAGE}").into())
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    fn number(&self, name: &str, default: usize) -> Result<usize> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("`--{name}` takes a whole number, not `{v}`").into()),
        }
    }

    fn duration(&self, name: &str, default: Duration) -> Result<Duration> {
        self.get(name).map_or(Ok(default), parse_duration)
    }

    fn threads(&self, default: usize) -> Result<usize> {
        let threads = self.number("threads", default)?;
        if threads == 0 {
            return Err("`--threads` must be at least 1".into());
        }
        Ok(threads)
    }
}

fn parse_duration(text: &str) -> Result<Duration> {
    let invalid = || format!("`{text}` is not a duration (e.g. 10s, 500ms, 2m)");
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        _ => return Err(invalid().into()),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// An `http://host:port/path` URL taken apart for a client connection.
#[derive(Clone)]
struct Target {
    addr: String,
    host: HeaderValue,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{url}`: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, "/"),
        };
        let addr = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Target {
            addr,
            host: HeaderValue::from_str(authority)?,
            path: path.to_string(),
        })
    }

    async fn connect(&self) -> Result<http1::SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(&self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// What every request of a run carries, and what every response should contain.
struct RequestTemplate {
    target: Target,
    method: Method,
    headers: Vec<(hyper::header::HeaderName, HeaderValue)>,
    body: Bytes,
    expect: Option<Vec<u8>>,
}

impl RequestTemplate {
    /// Whether a response body has the expected text (always, when none is set).
    fn as_expected(&self, body: &[u8]) -> bool {
        self.expect
            .as_deref()
            .is_none_or(|text| body.windows(text.len()).any(|w| w == text))
    }
}

impl RequestTemplate {
    fn build(&self) -> Request<Full<Bytes>> {
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(self.target.path.as_str())
            .header(hyper::header::HOST, self.target.host.clone());
        for (name, value) in &self.headers {
            request = request.header(name, value.clone());
        }
        request
            .body(Full::new(self.body.clone()))
            .expect("method, path and headers were validated when parsed")
    }
}

fn parse_header(text: &str) -> Result<(hyper::header::HeaderName, HeaderValue)> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("`--header {text}`: expected NAME:VALUE"))?;
    Ok((name.trim().parse()?, HeaderValue::from_str(value.trim())?))
}

/// One request on a fresh connection, for the few control calls of `ws-idle`.
async fn request_once(
    url: &str,
    method: Method,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(StatusCode, Bytes)> {
    let target = Target::parse(url)?;
    let mut sender = target.connect().await?;
    let mut request = Request::builder()
        .method(method)
        .uri(target.path.as_str())
        .header(hyper::header::HOST, target.host.clone());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::copy_from_slice(body.as_bytes())))?)
        .await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// What one HTTP client connection measured after the warm-up.
#[derive(Default)]
struct WorkerStats {
    /// Latency of each measured request, in microseconds.
    latencies_us: Vec<u32>,
    non_2xx: u64,
    /// 2xx responses whose body lacks the `--expect` text.
    unexpected: u64,
    /// Connections that failed or broke (each is opened again).
    io_errors: u64,
}

async fn http_worker(
    template: Arc<RequestTemplate>,
    measure_from: Instant,
    end: Instant,
) -> WorkerStats {
    let mut stats = WorkerStats::default();
    'connection: while Instant::now() < end {
        let mut sender = match template.target.connect().await {
            Ok(sender) => sender,
            Err(_) => {
                stats.io_errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        loop {
            let started = Instant::now();
            if started >= end {
                break 'connection;
            }
            let outcome = match sender.send_request(template.build()).await {
                Ok(response) => {
                    let status = response.status();
                    response
                        .into_body()
                        .collect()
                        .await
                        .map(|body| (status, body.to_bytes()))
                        .map_err(BoxError::from)
                }
                Err(err) => Err(err.into()),
            };
            let measured = started >= measure_from;
            match outcome {
                Ok((status, body)) if measured => {
                    let micros = started.elapsed().as_micros();
                    stats
                        .latencies_us
                        .push(u32::try_from(micros).unwrap_or(u32::MAX));
                    if !status.is_success() {
                        stats.non_2xx += 1;
                    } else if !template.as_expected(&body) {
                        stats.unexpected += 1;
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    if measured {
                        stats.io_errors += 1;
                    }
                    continue 'connection;
                }
            }
        }
    }
    stats
}

/// The value at quantile `q` (0..=1) of sorted `values`.
fn quantile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn millis(micros: u32) -> f64 {
    f64::from(micros) / 1000.0
}

async fn http_mode(options: Options) -> Result<()> {
    options.only(&[
        "url",
        "body",
        "method",
        "header",
        "expect",
        "connections",
        "duration",
        "warmup",
        "threads",
    ])?;
    let target = Target::parse(options.required("url")?)?;
    let body = options.get("body").unwrap_or("").to_string();
    let method: Method = match options.get("method") {
        Some(m) => m.to_ascii_uppercase().parse()?,
        None if body.is_empty() => Method::GET,
        None => Method::POST,
    };
    let mut headers = options
        .all("header")
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>>>()?;
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(name, _)| name == hyper::header::CONTENT_TYPE)
    {
        headers.push((
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
    }
    let connections = options.number("connections", 32)?.max(1);
    let duration = options.duration("duration", Duration::from_secs(10))?;
    let warmup = options.duration("warmup", Duration::from_secs(2))?;
    let template = Arc::new(RequestTemplate {
        target,
        method,
        headers,
        body: Bytes::from(body),
        expect: options.get("expect").map(|t| t.as_bytes().to_vec()),
    });

    // One request first, so a wrong URL or body fails loudly instead of as a
    // table of errors.
    let mut probe = template
        .target
        .connect()
        .await
        .map_err(|err| format!("cannot connect to {}: {err}", template.target.addr))?;
    let response = probe.send_request(template.build()).await?;
    let status = response.status();
    let sample = response.into_body().collect().await?.to_bytes();
    drop(probe);
    println!(
        "probe: {status} {}",
        String::from_utf8_lossy(&sample[..sample.len().min(200)])
    );
    if !status.is_success() || !template.as_expected(&sample) {
        return Err(format!(
            "the first response is not what was expected: {status} {}",
            String::from_utf8_lossy(&sample)
        )
        .into());
    }

    println!(
        "http: {} {}{} with {connections} connections for {:?} after {:?} of warm-up",
        template.method, template.target.addr, template.target.path, duration, warmup
    );
    let measure_from = Instant::now() + warmup;
    let end = measure_from + duration;
    let workers: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(http_worker(template.clone(), measure_from, end)))
        .collect();
    let mut latencies = Vec::new();
    let (mut non_2xx, mut unexpected, mut io_errors) = (0, 0, 0);
    for worker in workers {
        let stats = worker.await?;
        latencies.extend(stats.latencies_us);
        non_2xx += stats.non_2xx;
        unexpected += stats.unexpected;
        io_errors += stats.io_errors;
    }
    latencies.sort_unstable();
    let requests = latencies.len();
    let rps = requests as f64 / duration.as_secs_f64();
    let (p50, p99, max) = (
        millis(quantile(&latencies, 0.50)),
        millis(quantile(&latencies, 0.99)),
        millis(latencies.last().copied().unwrap_or_default()),
    );
    println!("  requests:   {requests}");
    println!("  requests/s: {rps:.0}");
    println!("  latency:    p50 {p50:.3} ms   p99 {p99:.3} ms   max {max:.3} ms");
    println!(
        "  errors:     {non_2xx} non-2xx, {unexpected} without the expected text, {io_errors} connection errors"
    );
    println!(
        "RESULT mode=http requests={requests} rps={rps:.0} p50_ms={p50:.3} p99_ms={p99:.3} max_ms={max:.3} non_2xx={non_2xx} unexpected={unexpected} io_errors={io_errors}"
    );
    Ok(())
}

/// Checks one password against an Argon2id hash made by Nimbus, over and over on this
/// one thread: what a sign-in costs in CPU, without the server around it.
fn argon2_mode(options: &Options) -> Result<()> {
    use nimbus::auth::passwords::{StoredHash, hash_password, verify_password};

    options.only(&["duration"])?;
    let duration = options.duration("duration", Duration::from_secs(5))?;
    let password = "correct horse battery staple";
    let phc = hash_password(password)?;
    // `$argon2id$v=19$m=19456,t=2,p=1$salt$hash`: the parameters, as stored.
    let params = phc.split('$').nth(3).unwrap_or_default().to_string();
    let param = |name: &str| {
        params
            .split(',')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or("?")
            .to_string()
    };
    let stored = StoredHash::from_stored(&phc)?;
    println!("argon2: checking one password against {params} for {duration:?} on one thread");
    let started = Instant::now();
    let mut checks = 0u64;
    while started.elapsed() < duration {
        if !verify_password(password, &stored)? {
            return Err("the password did not verify against its own hash".into());
        }
        checks += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let per_second = checks as f64 / seconds;
    let ms_each = 1000.0 * seconds / checks.max(1) as f64;
    println!("  {checks} checks, {per_second:.1} per second, {ms_each:.1} ms each");
    println!(
        "RESULT mode=argon2 m_kib={} t={} p={} checks={checks} per_second={per_second:.1} ms_each={ms_each:.1}",
        param("m"),
        param("t"),
        param("p")
    );
    Ok(())
}

async fn reference_mode(options: Options) -> Result<()> {
    options.only(&["listen", "threads"])?;
    let addr: SocketAddr = options.required("listen")?.parse()?;
    // Reads the body, as any real handler must, and answers with fixed bytes: what
    // a GraphQL server could at best do for `{ __typename }`.
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(|_body: Bytes| async {
            (
                [(hyper::header::CONTENT_TYPE, "application/json")],
                REFERENCE_BODY,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("reference: listening on http://{}/", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// Frames of the file reference's answers, as Nimbus sends a local file's.
const FILE_FRAME: usize = 512 * 1024;

async fn file_reference_mode(options: Options) -> Result<()> {
    options.only(&["listen", "file", "threads"])?;
    let addr: SocketAddr = options.required("listen")?.parse()?;
    // Held in memory: no server that reads the file as it sends can be faster.
    let file = Bytes::from(std::fs::read(options.required("file")?)?);
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let file = file.clone();
            // Sent with its length, as Nimbus sends a file (not chunked).
            let length = file.len().to_string();
            async move {
                let frames = (0..file.len()).step_by(FILE_FRAME).map(move |at| {
                    Ok::<_, std::io::Error>(file.slice(at..(at + FILE_FRAME).min(file.len())))
                });
                (
                    [(hyper::header::CONTENT_TYPE, "application/octet-stream")],
                    [(hyper::header::CONTENT_LENGTH, length)],
                    axum::body::Body::from_stream(futures_util::stream::iter(frames)),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "file-reference: listening on http://{}/",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}

/// The resident memory of process `pid` in KiB, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status").into())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// What a subscriber's task reports.
enum WsEvent {
    /// The subscription's first `next` arrived.
    Next { at: Instant },
    /// The server sent `error` or `complete`, or closed, or the socket failed.
    Failed { why: String },
}

type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens one connection, has it acknowledged and subscribes; the returned stream is
/// ready to be watched.
async fn open_subscriber(url: &str, key: &str) -> Result<WsStream> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let init = serde_json::json!({"type": "connection_init", "payload": {"X-Nimbus-Key": key}});
    ws.send(Message::text(init.to_string())).await?;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| "no connection_ack within 30 s")?
            .ok_or("closed before connection_ack")??;
        if let Message::Text(text) = &message {
            let value: serde_json::Value = serde_json::from_str(text)?;
            match value["type"].as_str() {
                Some("connection_ack") => break,
                Some("ping") => ws.send(Message::text(r#"{"type":"pong"}"#)).await?,
                _ => return Err(format!("expected connection_ack, got {text}").into()),
            }
        } else if let Message::Close(frame) = message {
            return Err(format!("closed before connection_ack: {frame:?}").into());
        }
    }
    let subscribe =
        serde_json::json!({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}});
    ws.send(Message::text(subscribe.to_string())).await?;
    Ok(ws)
}

/// Holds one subscriber until `stop` changes, answering pings and reporting its first
/// `next` and any failure.
async fn watch_subscriber(
    mut ws: WsStream,
    events: mpsc::UnboundedSender<WsEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let mut delivered = false;
    loop {
        let message = tokio::select! {
            _ = stop.changed() => {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                return;
            }
            message = ws.next() => message,
        };
        let failure = match message {
            Some(Ok(Message::Text(text))) => {
                let value: serde_json::Value =
                    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
                match value["type"].as_str() {
                    Some("next") if value["payload"]["errors"].is_null() => {
                        if !delivered {
                            delivered = true;
                            let _ = events.send(WsEvent::Next { at: Instant::now() });
                        }
                        continue;
                    }
                    Some("ping") => {
                        if ws.send(Message::text(r#"{"type":"pong"}"#)).await.is_ok() {
                            continue;
                        }
                        "the pong could not be sent".to_string()
                    }
                    Some("pong") => continue,
                    _ => format!("unexpected message {text}"),
                }
            }
            Some(Ok(Message::Close(frame))) => format!("closed by the server: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(err)) => format!("socket error: {err}"),
            None => "closed".to_string(),
        };
        let _ = events.send(WsEvent::Failed { why: failure });
        return;
    }
}

/// The `nimbus_subscriptions_active` gauge at `metrics_url`, if it can be read.
async fn active_subscriptions(metrics_url: &str) -> Option<u64> {
    let (status, body) = request_once(metrics_url, Method::GET, &[], "").await.ok()?;
    if !status.is_success() {
        return None;
    }
    String::from_utf8_lossy(&body).lines().find_map(|line| {
        let value = line.strip_prefix("nimbus_subscriptions_active ")?;
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// Replaces `ws://host:port/...` with `http://host:port{path}`.
fn http_url_beside(ws_url: &str, path: &str) -> Result<String> {
    let rest = ws_url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("`{ws_url}`: only ws:// URLs are supported"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    Ok(format!("http://{authority}{path}"))
}

async fn ws_idle_mode(options: Options) -> Result<()> {
    options.only(&[
        "url",
        "key",
        "server-pid",
        "connections",
        "parallel",
        "fanout",
        "threads",
        "http-url",
        "metrics-url",
    ])?;
    let url = options.required("url")?.to_string();
    let key = options.required("key")?.to_string();
    let pid: u32 = options.required("server-pid")?.parse()?;
    let connections = options.number("connections", 10_000)?.max(1);
    let parallel = options.number("parallel", 64)?.max(1);
    let http_url = match options.get("http-url") {
        Some(u) => u.to_string(),
        None => http_url_beside(&url, "/v1/graphql")?,
    };
    let metrics_url = match options.get("metrics-url") {
        Some(u) => u.to_string(),
        None => http_url_beside(&url, "/metrics")?,
    };
    let baseline_subscriptions = active_subscriptions(&metrics_url).await.unwrap_or(0);

    let before = rss_kib(pid)?;
    println!(
        "ws-idle: server pid {pid} RSS before: {:.1} MiB; opening {connections} connections ({parallel} at a time)",
        mib(before)
    );
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let opening = Instant::now();
    let mut opened = futures_util::stream::iter(0..connections)
        .map(|_| open_subscriber(&url, &key))
        .buffer_unordered(parallel);
    let mut open_failures = 0usize;
    let mut first_failure = None;
    while let Some(outcome) = opened.next().await {
        match outcome {
            Ok(ws) => {
                tokio::spawn(watch_subscriber(ws, events_tx.clone(), stop_rx.clone()));
            }
            Err(err) => {
                open_failures += 1;
                first_failure.get_or_insert_with(|| err.to_string());
            }
        }
    }
    drop(opened);
    drop(events_tx);
    let subscribed = connections - open_failures;
    println!(
        "  opened {subscribed} in {:.1} s ({open_failures} failed{})",
        opening.elapsed().as_secs_f64(),
        first_failure
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default()
    );

    // graphql-transport-ws does not acknowledge a subscription; the server's own
    // gauge tells when every one of them is live.
    let waiting = Instant::now();
    let target = baseline_subscriptions + subscribed as u64;
    let mut live = None;
    while waiting.elapsed() < Duration::from_secs(60) {
        live = active_subscriptions(&metrics_url).await;
        match live {
            Some(n) if n >= target => break,
            None => break,
            Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    match live {
        Some(n) => println!(
            "  server reports {} live subscriptions",
            n - baseline_subscriptions.min(n)
        ),
        None => {
            println!("  /metrics unreadable; waiting 2 s for subscriptions to settle");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    // Let allocator and runtime settle, then read once more for a stable figure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid)?;
    let added = after.saturating_sub(before);
    let per_connection = added as f64 / subscribed.max(1) as f64;
    println!(
        "  RSS after:  {:.1} MiB (+{:.1} MiB, {per_connection:.1} KiB per connection)",
        mib(after),
        mib(added)
    );

    let mut fanout = String::new();
    let mut failed_subscribers = 0usize;
    while let Ok(event) = events.try_recv() {
        if let WsEvent::Failed { why } = event {
            failed_subscribers += 1;
            if failed_subscribers == 1 {
                println!("  a subscriber failed: {why}");
            }
        }
    }
    if options.flag("fanout") {
        let sent = Instant::now();
        let (status, body) = request_once(
            &http_url,
            Method::POST,
            &[("content-type", "application/json"), ("x-nimbus-key", &key)],
            &serde_json::json!({ "query": FANOUT_MUTATION }).to_string(),
        )
        .await?;
        let mutation_ms = sent.elapsed().as_secs_f64() * 1000.0;
        if !status.is_success() || body.windows(8).any(|w| w == b"\"errors\"") {
            return Err(format!(
                "the fan-out mutation failed: {status} {}",
                String::from_utf8_lossy(&body)
            )
            .into());
        }
        let expected = subscribed - failed_subscribers;
        let mut delays_us = Vec::with_capacity(expected);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while delays_us.len() < expected {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(WsEvent::Next { at })) => delays_us
                    .push(u32::try_from(at.duration_since(sent).as_micros()).unwrap_or(u32::MAX)),
                Ok(Some(WsEvent::Failed { why })) => {
                    failed_subscribers += 1;
                    if failed_subscribers == 1 {
                        println!("  a subscriber failed: {why}");
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        delays_us.sort_unstable();
        let (p50, p99, max) = (
            millis(quantile(&delays_us, 0.50)),
            millis(quantile(&delays_us, 0.99)),
            millis(delays_us.last().copied().unwrap_or_default()),
        );
        println!(
            "  fan-out: mutation answered in {mutation_ms:.1} ms; {} of {expected} subscribers got the event: p50 {p50:.1} ms  p99 {p99:.1} ms  max {max:.1} ms (from sending the mutation)",
            delays_us.len()
        );
        fanout = format!(
            " fanout_mutation_ms={mutation_ms:.1} fanout_received={} fanout_p50_ms={p50:.1} fanout_p99_ms={p99:.1} fanout_max_ms={max:.1}",
            delays_us.len()
        );
    }

    let _ = stop_tx.send(true);
    // Every watcher ends once it has closed its socket and dropped its sender.
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while events.recv().await.is_some() {}
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let closed = rss_kib(pid)?;
    println!(
        "  RSS 2 s after closing every connection: {:.1} MiB",
        mib(closed)
    );
    println!(
        "RESULT mode=ws-idle connections={subscribed} open_failures={open_failures} failed_subscribers={failed_subscribers} rss_before_mib={:.1} rss_after_mib={:.1} added_mib={:.1} kib_per_connection={per_connection:.1} rss_closed_mib={:.1}{fanout}",
        mib(before),
        mib(after),
        mib(added),
        mib(closed)
    );
    Ok(())
}
