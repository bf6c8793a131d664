//! Accepting connections, so that slow or numerous clients cannot exhaust a
//! replica: every connection, HTTP or WebSocket, counts against a total cap (kept
//! below the process's open-file limit) and a cap per client address, checked when
//! it is accepted, before anything is read or spawned for it; and an HTTP/1
//! connection must deliver each request head within the header timeout and may
//! wait for its next request no longer than the idle timeout; a head larger than
//! the configured size is refused (431) rather than buffered.
//!
//! hyper has one timer for both (`header_read_timeout`, which starts as soon as a
//! connection waits for a request, idle time included), so [`HeadTimer`] gives it
//! a deadline that depends on the connection: the header timeout from when a new
//! connection opens; on a kept-alive one, the idle timeout until the next request's
//! first byte arrives, then the header timeout from that byte. A write that waits
//! longer than the send timeout for the client to read ends the connection, so a
//! client that stops reading its answers cannot hold one. Upgraded (WebSocket)
//! connections keep their place under the caps until they close; their own
//! shorter timeouts are the WebSocket handler's.
//!
//! A connection over a cap is answered without reading its request: 503 with
//! `Retry-After` and a JSON body coded `TOO_MANY_CONNECTIONS`, then closed. Only a
//! bounded number of such answers are under way at once; past that, refused
//! connections are closed at once, without an answer. So are those of an address
//! already answered [`ANSWERS_PER_RETRY`] times within the `Retry-After`: a client
//! that reconnects in a loop regardless costs an accept and a close each time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::error::codes;

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// Longest a write may wait for the client to read.
    pub send_timeout: Duration,
    /// Largest request head; a larger one is answered 431.
    pub max_head_bytes: usize,
    /// Most open connections.
    pub max_total: usize,
    /// Most open connections per client address; 0 for no cap.
    pub max_per_client: usize,
}

/// Most a connection reads at once (hyper's buffer starts at 8 KiB and grows to
/// this while reads fill it). It is apart from the head limit (hyper's
/// `max_header_size`, checked after each read of a head), so either can change
/// alone. Reads of 512 KiB were measured: they raised the server's peak RSS during
/// a 100 MiB upload by about 18 MiB (hyper's buffers and the batches holding them
/// live longer) for no CPU per MiB that could be told from noise.
const READ_BUFFER: usize = 64 * 1024;

/// File descriptors kept for everything but client connections: the database
/// pool, Redis, files being read or written, the listener.
const RESERVED_FDS: usize = 128;
/// Refused connections being answered at once; more are closed without an answer.
const MAX_REFUSING: usize = 64;
/// How long a refused connection's answer may take, for each of reading the
/// request, writing the answer and waiting for the client to close.
const REFUSAL_GRACE: Duration = Duration::from_millis(500);
/// The `Retry-After` of a refusal, in seconds.
const REFUSAL_RETRY_AFTER_SECS: u32 = 1;

impl ConnectionLimits {
    /// The total cap lowered to what the process's open-file limit allows, keeping
    /// `reserved` descriptors (on top of [`RESERVED_FDS`]) for other uses: past the
    /// limit, `accept` itself would fail and every client would wait.
    pub fn within_file_limit(mut self, reserved: usize) -> Self {
        if let Some(files) = open_file_limit() {
            let allowed = files.saturating_sub(RESERVED_FDS + reserved).max(1);
            if allowed < self.max_total {
                tracing::warn!(
                    configured = self.max_total,
                    allowed,
                    open_file_limit = files,
                    "the open-file limit lowers the connection cap"
                );
                self.max_total = allowed;
            }
        }
        self
    }
}

#[cfg(unix)]
fn open_file_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (read == 0 && limit.rlim_cur != libc::RLIM_INFINITY)
        .then(|| usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<usize> {
    None
}

/// Serves `service` (the router inside its layers) on `listener` until `shutdown`
/// resolves, then lets every open HTTP connection finish its request in flight.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: HttpService<B> + Clone,
    B: ResponseBody,
{
    let mut service = service;
    // Each connection calls its copy of the service without asking it first
    // whether it is ready: the router always is, and its layers add no
    // back-pressure of their own. Asked once here, so that a service that
    // was not would show at once, and not as requests that never end.
    if !matches!(
        service.poll_ready(&mut Context::from_waker(std::task::Waker::noop())),
        Poll::Ready(Ok(()))
    ) {
        return Err(std::io::Error::other(
            "the HTTP service is not ready to serve",
        ));
    }
    let caps = Arc::new(Caps {
        limits,
        open: AtomicUsize::new(0),
        per_client: Mutex::default(),
    });
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let mut answered = Answered::default();
    let (stop, stopping) = watch::channel(false);
    // Every connection task holds a receiver: all have ended when none is left.
    let (ended, running) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors or memory, or a connection reset before it
                    // was accepted: wait a little rather than spin.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        match caps.admit(peer.ip()) {
            Ok(admitted) => {
                let service = service.clone();
                let stopping = stopping.clone();
                let running = running.clone();
                tokio::spawn(async move {
                    serve_connection(stream, peer, admitted, service, limits, stopping).await;
                    drop(running);
                });
            }
            Err(refusal) => {
                if answered.answers(client_key(peer.ip()), Instant::now()) {
                    refuse(stream, refusal, &refusing);
                } else {
                    metrics::counter!("nimbus_http_connections_refused_total", "cap" => refusal.label())
                        .increment(1);
                }
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    drop(running);
    ended.closed().await;
    Ok(())
}

async fn serve_connection<S, B>(
    stream: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
    service: S,
    limits: ConnectionLimits,
    mut stopping: watch::Receiver<bool>,
) where
    S: HttpService<B>,
    B: ResponseBody,
{
    let reads = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Tracked {
        stream,
        reads: reads.clone(),
        send_timeout: limits.send_timeout,
        write_deadline: None,
        write_waiting: false,
        _admitted: admitted,
    });
    let service = OneConnection {
        service: RefCell::new(service),
        peer,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(HeadTimer {
            reads,
            header: limits.header_timeout,
            idle: limits.idle_timeout,
        })
        .header_read_timeout(limits.header_timeout)
        // The head limit is hyper's own, apart from its read buffer.
        .max_header_size(limits.max_head_bytes)
        .max_buf_size(READ_BUFFER.max(limits.max_head_bytes));
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stopping.wait_for(|stop| *stop) => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}

/// What [`serve`] can serve: a service answering hyper's requests, never failing
/// (errors are answers), whose futures may move between threads.
pub trait HttpService<B>:
    tower::Service<
        hyper::Request<Incoming>,
        Response = hyper::Response<B>,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
    + 'static
{
}

impl<S, B> HttpService<B> for S where
    S: tower::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Send
        + 'static
{
}

/// A body hyper can send from any thread.
pub trait ResponseBody:
    hyper::body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static
{
}

impl<B> ResponseBody for B where
    B: hyper::body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

/// The service as one connection calls it: its own copy, made once for the
/// connection rather than for each request (copying the CORS layer's rules
/// allocates), and each request told the connection's peer.
struct OneConnection<S> {
    /// Borrowed only while a call makes its future: hyper calls one at a time.
    service: RefCell<S>,
    peer: SocketAddr,
}

impl<S, B> hyper::service::Service<hyper::Request<Incoming>> for OneConnection<S>
where
    S: tower::Service<hyper::Request<Incoming>, Response = hyper::Response<B>>,
{
    type Response = hyper::Response<B>;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        self.service.borrow_mut().call(request)
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    ServerFull,
    ClientFull,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::ServerFull => "server",
            Refusal::ClientFull => "client",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refusal::ServerFull => {
                "the server has as many connections open as it allows; retry later"
            }
            Refusal::ClientFull => {
                "this client address has as many connections open as the server allows; close some or retry later"
            }
        }
    }
}

/// Answers a refused connection with a 503 and closes it, in the background and
/// within [`REFUSAL_GRACE`] per step; closes it at once when [`MAX_REFUSING`]
/// answers are under way.
fn refuse(mut stream: TcpStream, refusal: Refusal, refusing: &Arc<Semaphore>) {
    metrics::counter!("nimbus_http_connections_refused_total", "cap" => refusal.label())
        .increment(1);
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let body = serde_json::json!({"errors": [{
            "message": refusal.message(),
            "extensions": {"code": codes::TOO_MANY_CONNECTIONS},
        }]})
        .to_string();
        let answer = format!(
            "HTTP/1.1 {}\r\ncontent-type: application/json\r\nretry-after: {REFUSAL_RETRY_AFTER_SECS}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            crate::error::codes::http_status(codes::TOO_MANY_CONNECTIONS),
            body.len()
        );
        let mut scratch = [0u8; 1024];
        // What the client sent first is read, so that closing with it unread does
        // not reset the connection before the client reads the answer.
        let _ = tokio::time::timeout(REFUSAL_GRACE, stream.read(&mut scratch)).await;
        let written = tokio::time::timeout(REFUSAL_GRACE, async {
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await
        })
        .await;
        if matches!(written, Ok(Ok(()))) {
            let _ = tokio::time::timeout(REFUSAL_GRACE, async {
                while matches!(stream.read(&mut scratch).await, Ok(n) if n > 0) {}
            })
            .await;
        }
    });
}

/// Refusals answered to one client address within a `Retry-After`; more are
/// closed at once.
const ANSWERS_PER_RETRY: usize = 16;

/// The refusals answered to each client address in its current `Retry-After`
/// window (when it began, how many), to answer at most [`ANSWERS_PER_RETRY`].
#[derive(Default)]
struct Answered {
    at: HashMap<IpAddr, (Instant, usize)>,
    /// The size `at` may reach before the addresses answered earlier than the
    /// `Retry-After` are swept (it doubles past what a sweep leaves).
    sweep_at: usize,
}

/// The fewest addresses kept before a sweep.
const MIN_ANSWERED_SWEEP: usize = 1024;

impl Answered {
    /// Whether a refusal of `client` at `now` is to be answered: not when it was
    /// answered [`ANSWERS_PER_RETRY`] times within the `Retry-After`.
    fn answers(&mut self, client: IpAddr, now: Instant) -> bool {
        let window = Duration::from_secs(REFUSAL_RETRY_AFTER_SECS.into());
        if self.at.len() >= self.sweep_at.max(MIN_ANSWERED_SWEEP) {
            self.at
                .retain(|_, (start, _)| now.duration_since(*start) < window);
            self.sweep_at = self.at.len() * 2;
        }
        let (start, answered) = self.at.entry(client).or_insert((now, 0));
        if now.duration_since(*start) >= window {
            (*start, *answered) = (now, 0);
        }
        *answered += 1;
        *answered <= ANSWERS_PER_RETRY
    }
}

/// Open connections, in total and per client.
struct Caps {
    limits: ConnectionLimits,
    open: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

impl Caps {
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admitted, Refusal> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.limits.max_total {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::ServerFull);
        }
        let client = (self.limits.max_per_client > 0).then(|| client_key(peer));
        if let Some(client) = client {
            let mut per_client = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
            let open = per_client.entry(client).or_insert(0);
            if *open >= self.limits.max_per_client {
                drop(per_client);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::ClientFull);
            }
            *open += 1;
        }
        metrics::gauge!("nimbus_http_connections").increment(1.0);
        Ok(Admitted {
            caps: self.clone(),
            client,
        })
    }
}

/// The address connections are counted under: an IPv4 address, or the /64
/// network of an IPv6 one (one host is usually given a whole /64).
pub(crate) fn client_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// A connection's place under the caps, given back when it closes.
struct Admitted {
    caps: Arc<Caps>,
    client: Option<IpAddr>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.caps.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("nimbus_http_connections").decrement(1.0);
        if let Some(client) = self.client {
            let mut per_client = self
                .caps
                .per_client
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(open) = per_client.get_mut(&client) {
                *open -= 1;
                if *open == 0 {
                    per_client.remove(&client);
                }
            }
        }
    }
}

/// A client connection that counts its reads (for [`HeadTimer`]), fails a write
/// that cannot go out within the send timeout (the client stopped reading), and
/// holds its place under the caps for as long as it is open, upgraded or not.
struct Tracked {
    stream: TcpStream,
    reads: Arc<AtomicU64>,
    send_timeout: Duration,
    /// The deadline of the write waiting for the client, made on the first wait.
    write_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether a write is waiting (the deadline is set for it).
    write_waiting: bool,
    _admitted: Admitted,
}

impl Tracked {
    /// `polled`, a write's outcome, unless the write has waited for the client for
    /// longer than the send timeout. Costs nothing while writes go out at once.
    fn within_send_timeout<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.write_waiting = false;
            return polled;
        }
        let timeout = self.send_timeout;
        let deadline = self
            .write_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if !self.write_waiting {
            self.write_waiting = true;
            deadline.as_mut().reset(Instant::now() + timeout);
        }
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.reads.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.within_send_timeout(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.within_send_timeout(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        this.within_send_timeout(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// hyper's timer for one connection. hyper only times the wait for a request head
/// with it, and asks for a new deadline each time it starts waiting: the deadline
/// given is replaced by [`HeadWait`]'s.
#[derive(Clone)]
struct HeadTimer {
    reads: Arc<AtomicU64>,
    header: Duration,
    idle: Duration,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        TokioTimer::new().sleep(duration)
    }

    fn sleep_until(&self, _deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let started = Instant::now();
        let reads = self.reads.load(Ordering::Relaxed);
        // Nothing read yet: a new connection, which owes its first request head now.
        let deadline = if reads == 0 {
            started + self.header
        } else {
            started + self.idle
        };
        Box::pin(HeadWait {
            reads: self.reads.clone(),
            reads_before: reads,
            fresh: reads == 0,
            started,
            first_byte: None,
            header: self.header,
            idle: self.idle,
            sleep: tokio::time::sleep_until(deadline),
        })
    }
}

pin_project_lite::pin_project! {
    /// The wait for one request head. hyper polls it each time the connection
    /// reads and still lacks a whole head, so it sees the first byte arrive.
    struct HeadWait {
        reads: Arc<AtomicU64>,
        reads_before: u64,
        fresh: bool,
        started: Instant,
        first_byte: Option<Instant>,
        header: Duration,
        idle: Duration,
        #[pin]
        sleep: tokio::time::Sleep,
    }
}

impl Future for HeadWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let deadline = if *this.fresh {
            *this.started + *this.header
        } else if let Some(first_byte) = this.first_byte {
            *first_byte + *this.header
        } else if this.reads.load(Ordering::Relaxed) != *this.reads_before {
            let now = Instant::now();
            *this.first_byte = Some(now);
            now + *this.header
        } else {
            *this.started + *this.idle
        };
        if this.sleep.deadline() != deadline {
            this.sleep.as_mut().reset(deadline);
        }
        this.sleep.poll(cx)
    }
}

impl hyper::rt::Sleep for HeadWait {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64_network() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn caps_refuse_past_the_total_and_per_client_and_free_on_close() {
        let caps = Arc::new(Caps {
            limits: ConnectionLimits {
                header_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(1),
                send_timeout: Duration::from_secs(1),
                max_head_bytes: 8192,
                max_total: 3,
                max_per_client: 2,
            },
            open: AtomicUsize::new(0),
            per_client: Mutex::default(),
        });
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        let first = caps.admit(one).unwrap();
        let _second = caps.admit(one).unwrap();
        assert!(matches!(caps.admit(one), Err(Refusal::ClientFull)));
        let _third = caps.admit(two).unwrap();
        assert!(matches!(caps.admit(two), Err(Refusal::ServerFull)));
        drop(first);
        let _again = caps.admit(one).unwrap();
        assert_eq!(caps.open.load(Ordering::Acquire), 3);
    }

    #[test]
    fn an_address_is_answered_a_bounded_number_of_refusals_per_retry_after() {
        let mut answered = Answered::default();
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        let start = Instant::now();
        for _ in 0..ANSWERS_PER_RETRY {
            assert!(answered.answers(one, start));
        }
        let soon = start + Duration::from_millis(900);
        assert!(!answered.answers(one, soon));
        assert!(answered.answers(two, soon));
        let later = start + Duration::from_secs(REFUSAL_RETRY_AFTER_SECS.into());
        assert!(answered.answers(one, later));
        // Sweeps keep the map to the addresses answered within the window.
        let mut answered = Answered::default();
        for i in 0..MIN_ANSWERED_SWEEP as u32 {
            answered.answers(IpAddr::from(i.to_be_bytes()), start);
        }
        answered.answers(two, later + Duration::from_secs(5));
        assert_eq!(answered.at.len(), 1);
    }
}
