//! The JavaScript sandbox that functions run in: a deployment's ES modules compiled
//! once to a [`Program`], and each execution run in a fresh engine context on a
//! worker thread of a bounded [`Pool`], with hard limits on memory, CPU time, wall
//! time, stack depth, log size and response size. A function may opt in to warm
//! contexts ([`WarmKey`]): each worker thread then keeps its deployment loaded in
//! one context, whose module-level state persists between that deployment's
//! executions on that thread, while everything request-scoped (request, `env`,
//! logs, host calls and their identity, limits) is still per execution.
//!
//! The guest sees what Appwrite's function runtimes give it, and nothing of the
//! host: its entrypoint's default export is called with a context
//! `{ req, res, log, error, env }` and returns one of `res.send(body, status,
//! headers)`, `res.text(…)`, `res.json(value, status, headers)`,
//! `res.binary(bytes, status, headers)`, `res.empty()` or
//! `res.redirect(url, status)` (301 unless given). `res.json` sets
//! `content-type: application/json`, `res.text` `text/plain; charset=utf-8` and
//! `res.binary` `application/octet-stream`, unless the headers given name one.
//! `req` has `method`, `scheme`, `host`, `port`, `path`, `queryString`, `query`
//! (an object; a repeated key keeps its last value), `headers` (lower-cased
//! names), `bodyText`, `bodyJson` (throws `SyntaxError` on a body that is not
//! JSON), `bodyBinary` (a `Uint8Array`) and `url`. `console.*` and `log`/`error`
//! are captured into the execution's logs. `env` (also `process.env`) holds the
//! function's variables only. `fetch(url, init)` (a Response-like answer with
//! `status`, `ok`, `url`, `headers.get()`, `text()`, `json()`, `arrayBuffer()`)
//! and `nimbus.graphql(query, variables)` (`{ data, errors }`) reach out through
//! the [`Host`], which applies the outbound address guard and the function's
//! scopes. Also there: `Headers`, `TextEncoder`/`TextDecoder` (UTF-8),
//! `queueMicrotask`, and `setTimeout`/`clearTimeout`, whose callbacks run only
//! while the execution does (they count as pending work until the wall time;
//! those still pending when the response is ready are dropped). Imports resolve
//! among the deployment's own modules by relative path, nothing else. The
//! sandbox itself has no filesystem, network, process, `std`/`os` modules,
//! `require`, clock beyond `Date`/`performance`, or host environment.
//!
//! This module knows nothing of projects, storage or GraphQL: the functions
//! service stores programs and records executions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

mod engine;
mod json;
mod meter;
mod pool;
mod program;
#[cfg(test)]
mod tests;

pub use pool::{Pool, Shares};

/// Per-execution limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The engine's heap, which holds every value and buffer the guest gets,
    /// together with the host's copies of the requests of its host calls in
    /// flight.
    pub memory: usize,
    /// Time spent running guest code (host calls excluded).
    pub cpu: Duration,
    /// Time from start to response, host calls included.
    pub wall: Duration,
    /// The engine's stack.
    pub stack: usize,
    /// Bytes of `console.*`/`log`/`error` output kept; the rest is cut and marked.
    pub log: usize,
    /// Bytes of response body.
    pub response: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 64 << 20,
            cpu: Duration::from_secs(15),
            wall: Duration::from_secs(15),
            stack: 512 << 10,
            log: 64 << 10,
            response: 6 << 20,
        }
    }
}

/// A deployment's code: ES modules by relative path, and which one is the
/// entrypoint. A single pre-bundled file is one module.
#[derive(Debug, Clone)]
pub struct Source {
    pub modules: BTreeMap<String, String>,
    pub entrypoint: String,
}

/// Why a deployment's code cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    /// What is wrong, for the developer (no host paths).
    pub message: String,
    /// The module it is in, when known.
    pub module: Option<String>,
    /// 1-based line, when known.
    pub line: Option<u32>,
}

/// Compiled code, ready to run any number of times: stored with its deployment.
#[derive(Debug, Clone)]
pub struct Program {
    bytes: Arc<[u8]>,
}

impl Program {
    /// The form stored with a deployment.
    pub fn to_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A program read back from storage; checked when it first runs.
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> Program {
        Program {
            bytes: bytes.into(),
        }
    }
}

/// Compiles a deployment: every module parsed and compiled to bytecode, imports
/// resolved among the modules (no others exist), the entrypoint's default export
/// checked to exist and be a function.
///
/// Checking the export runs the modules' top-level code once, in a sandbox with
/// no host (host calls reject) and a CPU limit of two seconds: call it from a
/// blocking thread (`spawn_blocking`), never on the async runtime.
pub fn compile(source: &Source) -> Result<Program, CompileError> {
    program::compile(source)
}

/// What the guest sees as its request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    /// Without the `?`.
    pub query_string: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// What the guest answered.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// How an execution failed; [`Failure::code`] is its stable name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The guest threw, or its promise rejected: the error's message and stack.
    Thrown(String),
    /// Guest code ran longer than [`Limits::cpu`].
    CpuLimit,
    /// The execution took longer than [`Limits::wall`].
    Timeout,
    MemoryLimit,
    StackOverflow,
    /// The returned promise can never settle (nothing left to wait for).
    NeverSettled,
    ResponseTooLarge,
    /// The entrypoint returned something that is not a `res.*` result, or the
    /// program no longer loads.
    InvalidResponse(String),
    /// The engine itself failed (a bug, not the guest's doing); the worker was
    /// replaced.
    Crashed,
}

impl Failure {
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Thrown(_) => crate::error::codes::EXECUTION_THREW,
            Failure::CpuLimit => crate::error::codes::EXECUTION_CPU_LIMIT,
            Failure::Timeout => crate::error::codes::EXECUTION_TIMEOUT,
            Failure::MemoryLimit => crate::error::codes::EXECUTION_MEMORY_LIMIT,
            Failure::StackOverflow => crate::error::codes::EXECUTION_STACK_OVERFLOW,
            Failure::NeverSettled => crate::error::codes::EXECUTION_NEVER_SETTLED,
            Failure::ResponseTooLarge => crate::error::codes::EXECUTION_RESPONSE_TOO_LARGE,
            Failure::InvalidResponse(_) => crate::error::codes::EXECUTION_INVALID_RESPONSE,
            Failure::Crashed => crate::error::codes::EXECUTION_CRASHED,
        }
    }
}

/// One finished execution.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: Result<Response, Failure>,
    /// `console.log`/`info`/`debug` and `log(…)`, one line each.
    pub logs: String,
    /// `console.warn`/`error` and `error(…)`.
    pub errors: String,
    /// Whether output past [`Limits::log`] was cut.
    pub logs_truncated: bool,
    pub duration: Duration,
}

/// Bytes the host holds for one execution outside its engine, counted against
/// its memory limit with what the engine allocates: answers of host calls read
/// but not yet handed to the guest (up to 64 calls of several MiB each would
/// otherwise live beside the limit, not under it). Shared with the host's
/// futures, which run on other threads.
#[derive(Debug, Clone)]
pub struct Held {
    bytes: Arc<std::sync::atomic::AtomicUsize>,
    limit: usize,
}

impl Held {
    pub(crate) fn new(limit: usize) -> Held {
        Held {
            bytes: Arc::default(),
            limit,
        }
    }

    /// Counts `n` more bytes, when they fit under the limit.
    pub fn take(&self, n: usize) -> bool {
        use std::sync::atomic::Ordering;
        self.bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    /// Gives back bytes [`Held::take`] counted.
    pub fn give_back(&self, n: usize) {
        use std::sync::atomic::Ordering;
        let _ = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(n))
            });
    }

    /// The bytes held now.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// An outgoing request of the guest's `fetch`.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// Where the host counts the answer's bytes as it reads them.
    pub held: Held,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Its answer, body already capped by the host.
#[derive(Debug, Clone)]
pub struct FetchResponse {
    pub status: u16,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// What a guest can reach outside the sandbox, supplied per execution by the
/// functions service. Its futures run on the server's async runtime, never on a
/// sandbox thread.
pub trait Host: Send + Sync {
    /// An outgoing HTTP request; the error is a message for the guest (it becomes
    /// a rejected promise).
    fn fetch(&self, request: FetchRequest) -> BoxFuture<'static, Result<FetchResponse, String>>;

    /// A GraphQL operation against the project's own schema, as the function or
    /// its caller. `variables` is the guest's object as JSON text; the answer is
    /// the GraphQL response (`data`, `errors`) as JSON text, which the guest
    /// receives parsed: its keys in the order the host wrote them.
    fn graphql(&self, query: String, variables: String) -> BoxFuture<'static, String>;
}

/// One execution to run.
pub struct Invocation {
    pub program: Program,
    /// The function's variables, as `env` and `process.env` (shared by the
    /// executions of one reading of them).
    pub env: Arc<BTreeMap<String, String>>,
    pub request: Request,
    pub limits: Limits,
    pub host: Arc<dyn Host>,
    /// Run in the warm context this key names, kept on the worker thread between
    /// executions (made when there is none); `None`: a fresh context, dropped
    /// after this one execution.
    pub warm: Option<WarmKey>,
    /// Whose execution it is (a project): the pool shares its threads and queue
    /// among tenants ([`Shares`]).
    pub tenant: Arc<str>,
}

/// Which kept context an execution may reuse. A worker thread keeps at most one
/// per `owner`; an execution whose `version` differs from the kept one's drops
/// it and starts a new one, so a context never outlives what it was made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmKey {
    /// Whose context it is (a project's function); [`Pool::forget_warm`] drops
    /// the contexts whose owner starts with a prefix.
    pub owner: Arc<str>,
    /// What it was made from: the deployment, the settings and the variables as
    /// read. Everything that changes them changes this.
    pub version: Arc<str>,
}

/// The pool is full: the caller answers `TOO_MANY_EXECUTIONS` with `Retry-After`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("too many executions are running or waiting")]
pub struct Busy {
    pub retry_after: Duration,
}
