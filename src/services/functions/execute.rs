//! Running an execution: the program (from the cache, or the database), the
//! function's variables as `env`, its limits, and the [`FunctionHost`] through
//! which the guest reaches out: `fetch` through the replica's one pooled client
//! behind the outbound guard (every redirect checked like a first URL, a timeout,
//! a capped answer) and `nimbus.graphql` as the calling user (also, checked again,
//! when the execution runs later as a job) or with exactly the function's scopes.
//! Also the jobs that run asynchronous and scheduled executions, and the pruning
//! of old records.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;

use crate::AppState;
use crate::auth::caller::ApiKeyGrant;
use crate::auth::scopes::Scope;
use crate::auth::{Caller, Credential};
use crate::bus::{CAUSE, Cause, log};
use crate::db::now_millis;
use crate::error::{AppError, AppResult};
use crate::jobs::{Failure, Handler, Job};
use crate::outbound;
use crate::sandbox::{
    self, FetchRequest, FetchResponse, Host, Invocation, Limits, Outcome, Program,
};

use super::service::{self, ExecutionRequest};
use super::{Execution, Function, status, store};

/// Most redirects a guest's `fetch` follows, each checked like a first URL.
const MAX_REDIRECTS: usize = 5;
/// How long one `fetch` may take, redirects included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// Most bytes of a `fetch` answer handed to the guest.
pub const FETCH_MAX_BYTES: usize = 5 << 20;
const MAX_FETCH_URL: usize = 8192;

/// As whom the guest's `nimbus.graphql` calls run.
#[derive(Debug, Clone)]
pub struct Identity {
    pub project_id: String,
    pub credential: Credential,
    /// Where changes to credentials stood before a user's session was checked
    /// ([`Caller::checked_at`]); unused for the function's own identity, which
    /// the function's reading carries.
    pub checked_at: u64,
}

impl Identity {
    /// A signed-in caller's own identity, with its permissions, held as a JWT of
    /// its session would be (as an execution that runs later holds it): the
    /// function acts on the user's data, not on their credentials, sessions or
    /// JWTs, whoever wrote its code. Anyone else (a guest, a key, a schedule) gets
    /// exactly the function's scopes, as an API key holding them would (made once
    /// per reading of the function).
    pub fn of(caller: &Caller, ready: &super::Ready) -> Arc<Identity> {
        // A session owing its second factor never gets here (`may_execute`); were
        // it to, it would act with the function's scopes, not as the user.
        match caller.signed_in().ok().flatten() {
            Some(session) => {
                let delegated = if session.by_jwt {
                    session.clone()
                } else {
                    Arc::new(crate::auth::session_cache::ResolvedSession {
                        session: session.session.clone(),
                        user: session.user.clone(),
                        memberships: session.memberships.clone(),
                        by_jwt: true,
                        jwt_expires_at: None,
                    })
                };
                Arc::new(Identity {
                    project_id: ready.function.project_id.clone(),
                    credential: Credential::Session(delegated),
                    checked_at: caller.checked_at,
                })
            }
            // Made when the function was read; its key may have expired since.
            _ if ready.function.reach.expired_at(crate::db::now_millis()) => {
                Arc::new(Identity::function(&ready.function))
            }
            _ => ready.identity.clone(),
        }
    }

    /// The function's own identity: its scopes, nothing more, and none once the key
    /// that gave them has expired.
    pub fn function(function: &Function) -> Identity {
        let expired = function.reach.expired_at(crate::db::now_millis());
        Identity {
            project_id: function.project_id.clone(),
            credential: Credential::Key(Box::new(ApiKeyGrant {
                key_id: format!("function:{}", function.id),
                project_id: function.project_id.clone(),
                scopes: function
                    .scopes
                    .iter()
                    .filter(|_| !expired)
                    .filter_map(|name| Scope::from_name(name))
                    .filter(|scope| *scope != Scope::Admin)
                    .collect(),
                expires_at: function.reach.expires_at(),
                handed_on_by: function.reach.key_id().map(String::from),
            })),
            checked_at: 0,
        }
    }

    /// For an execution that runs later: as the user who started it, if the job
    /// names their session and it is still good (checked now); with exactly the
    /// function's scopes when no user started it; with a guest's roles, never more
    /// than the user had, for a user's job that names no session.
    async fn deferred(
        state: &AppState,
        function: &Function,
        execution: &Execution,
        job: &Job,
    ) -> AppResult<Identity> {
        if !execution
            .caller
            .as_deref()
            .is_some_and(|c| c.starts_with("user:"))
        {
            return Ok(Identity::function(function));
        }
        let named = |field: &str| {
            job.payload
                .get("caller")
                .and_then(|c| c.get(field))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let (Some(user_id), Some(session_id), Some(gateway)) = (
            named("userId"),
            named("sessionId"),
            state.functions.gateway(),
        ) else {
            return Ok(Identity {
                project_id: function.project_id.clone(),
                credential: Credential::Anonymous,
                checked_at: 0,
            });
        };
        // The job's user is the execution's caller, whatever the payload says.
        if execution.caller.as_deref() != Some(format!("user:{user_id}").as_str()) {
            return Err(AppError::InvalidSession);
        }
        // Started with a JWT, it acts no longer than the JWT would have.
        let jwt_expires_at = job
            .payload
            .get("caller")
            .and_then(|c| c.get("jwtExpiresAt"))
            .and_then(serde_json::Value::as_i64);
        let checked_at = state.sessions.credential_changes();
        let credential = gateway
            .delegated(state, &function.project_id, &user_id, &session_id)
            .await
            .and_then(|credential| within_jwt(credential, jwt_expires_at))?;
        Ok(Identity {
            project_id: function.project_id.clone(),
            credential,
            checked_at,
        })
    }
}

/// A user's credential lent to an execution, held to the JWT that started it:
/// `JWT_EXPIRED` once that has passed, else the credential carrying its end.
fn within_jwt(credential: Credential, jwt_expires_at: Option<i64>) -> AppResult<Credential> {
    let Some(jwt_expires_at) = jwt_expires_at else {
        return Ok(credential);
    };
    if jwt_expires_at <= crate::db::now_millis() {
        return Err(AppError::JwtExpired);
    }
    Ok(match credential {
        Credential::Session(resolved) => {
            Credential::Session(Arc::new(crate::auth::session_cache::ResolvedSession {
                session: resolved.session.clone(),
                user: resolved.user.clone(),
                memberships: resolved.memberships.clone(),
                by_jwt: true,
                jwt_expires_at: Some(jwt_expires_at),
            }))
        }
        other => other,
    })
}

/// What a guest reaches outside the sandbox during one execution.
pub struct FunctionHost {
    state: AppState,
    identity: Arc<Identity>,
    /// Stamped on the events its `nimbus.graphql` writes cause.
    cause: Cause,
    /// For an execution acting as a user: what tells that their session may have
    /// ended since it started.
    session: Option<Arc<SessionWatch>>,
    /// For an execution acting with the function's own scopes: what they were
    /// handed on by, compared with the function as this replica knows it now
    /// before each call.
    reach: Option<Arc<ReachCheck>>,
}

/// The function's own scopes as an execution started with them. A key revoked
/// (its delegation ended), a key's expiry or the function's new scopes reach its
/// `nimbus.graphql` calls at once, not when the execution ends: each call looks
/// the function up in the replica's cache of functions, which drops a function
/// when such a change is heard (on any replica, through the event log).
struct ReachCheck {
    function_id: String,
    reach: crate::auth::Delegation,
    scopes: Vec<String>,
}

impl ReachCheck {
    fn of(identity: &Identity, function: &Function) -> Option<Arc<ReachCheck>> {
        match &identity.credential {
            Credential::Key(key) if key.key_id == format!("function:{}", function.id) => {
                Some(Arc::new(ReachCheck {
                    function_id: function.id.clone(),
                    reach: function.reach.clone(),
                    scopes: function.scopes.clone(),
                }))
            }
            _ => None,
        }
    }

    /// The credential to use now: `None` while the one the execution holds
    /// stands.
    async fn current(&self, state: &AppState, project_id: &str) -> AppResult<Option<Credential>> {
        let ready = super::service::ready(state, project_id, &self.function_id).await?;
        let now = crate::db::now_millis();
        let function = &ready.function;
        if function.reach == self.reach
            && function.scopes == self.scopes
            && !self.reach.expired_at(now)
        {
            return Ok(None);
        }
        Ok(Some(Identity::function(function).credential))
    }
}

/// The user session an execution acts with, watched: a sign-out, a block, a new
/// password or the session's end reaches its `nimbus.graphql` calls at once, as
/// it reaches the user's open sockets, not when the execution ends.
struct SessionWatch {
    user_id: String,
    session_id: String,
    /// When the session ends, or the JWT that lent it, whichever comes first.
    expires_at: i64,
    jwt_expires_at: Option<i64>,
    changes: crate::auth::session_cache::Wakes,
    seen: crate::auth::session_cache::Wake,
    stale_from_start: bool,
}

impl SessionWatch {
    fn of(state: &AppState, identity: &Identity) -> Option<Arc<SessionWatch>> {
        let Credential::Session(resolved) = &identity.credential else {
            return None;
        };
        let changes = state
            .sessions
            .watch(crate::auth::session_cache::Holder::User {
                project_id: identity.project_id.clone(),
                user_id: resolved.user.id.clone(),
            });
        let seen = changes.now();
        // A change heard between the session's check and this watch rang no
        // bell it hears.
        let stale_from_start = state.sessions.credential_changes() != identity.checked_at;
        Some(Arc::new(SessionWatch {
            user_id: resolved.user.id.clone(),
            session_id: resolved.session.id.clone(),
            expires_at: resolved
                .session
                .expires_at
                .min(resolved.jwt_expires_at.unwrap_or(i64::MAX)),
            jwt_expires_at: resolved.jwt_expires_at,
            changes,
            seen,
            stale_from_start,
        }))
    }

    /// Whether the session must be read again before it acts.
    fn stale(&self) -> bool {
        self.stale_from_start
            || self.expires_at <= crate::db::now_millis()
            || self.changes.now() != self.seen
    }
}

impl Host for FunctionHost {
    fn fetch(&self, request: FetchRequest) -> BoxFuture<'static, Result<FetchResponse, String>> {
        let client = self.state.functions.fetch_client().clone();
        Box::pin(async move {
            match tokio::time::timeout(FETCH_TIMEOUT, fetch(&client, request)).await {
                Ok(answer) => answer,
                Err(_) => Err(format!("no answer within {} s", FETCH_TIMEOUT.as_secs())),
            }
        })
    }

    fn graphql(&self, query: String, variables: String) -> BoxFuture<'static, String> {
        let state = self.state.clone();
        let identity = self.identity.clone();
        let cause = self.cause.clone();
        let session = self.session.clone();
        let reach = self.reach.clone();
        Box::pin(async move {
            match state.functions.gateway() {
                Some(gateway) => {
                    let mut credential = identity.credential.clone();
                    if let Some(reach) = reach {
                        match reach.current(&state, &identity.project_id).await {
                            Ok(None) => {}
                            Ok(Some(now)) => credential = now,
                            Err(err) => return refusal(&err),
                        }
                    }
                    if let Some(session) = session.filter(|session| session.stale()) {
                        let fresh = gateway
                            .delegated(
                                &state,
                                &identity.project_id,
                                &session.user_id,
                                &session.session_id,
                            )
                            .await
                            .and_then(|fresh| within_jwt(fresh, session.jwt_expires_at));
                        match fresh {
                            Ok(fresh) => credential = fresh,
                            Err(err) => return refusal(&err),
                        }
                    }
                    CAUSE
                        .scope(
                            cause,
                            gateway.execute(
                                &state,
                                &identity.project_id,
                                credential,
                                query,
                                variables,
                            ),
                        )
                        .await
                }
                None => serde_json::json!({
                    "errors": [{ "message": "GraphQL is not available to functions on this server" }]
                })
                .to_string(),
            }
        })
    }
}

/// A `nimbus.graphql` answer refusing the call with `err`.
fn refusal(err: &AppError) -> String {
    serde_json::json!({ "errors": [{
        "message": err.message(),
        "extensions": { "code": err.code() },
    }] })
    .to_string()
}

/// Headers a guest may not set on an outgoing request: the connection's own.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

/// The one client of guests' `fetch` on this replica: public addresses only,
/// unless `NIMBUS_FUNCTIONS_ALLOW_PRIVATE` opens every one or
/// `NIMBUS_FUNCTIONS_FETCH_ALLOW` lists some. Sharing it keeps connections to the
/// hosts functions call open between executions.
pub fn fetch_client(config: &crate::config::Config) -> anyhow::Result<outbound::GuardedClient> {
    let allowed: outbound::Allowed = if config.functions_allow_private {
        std::sync::Arc::new(outbound::any_address)
    } else {
        let listed = config.functions_fetch_allow.clone();
        std::sync::Arc::new(move |ip| outbound::is_public(ip) || listed.contains(ip))
    };
    let builder = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(8)
        .user_agent(concat!(
            "nimbus/",
            env!("CARGO_PKG_VERSION"),
            " (functions)"
        ));
    Ok(outbound::GuardedClient::new(
        builder,
        allowed,
        FETCH_TIMEOUT,
    )?)
}

/// One guest `fetch`: each URL (the first and every redirect's target) checked and
/// connected to only at addresses checked, the answer read up to
/// [`FETCH_MAX_BYTES`].
async fn fetch(
    client: &outbound::GuardedClient,
    request: FetchRequest,
) -> Result<FetchResponse, String> {
    let mut method = reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("`{}` is not an HTTP method", request.method))?;
    let mut body = Some(request.body);
    let mut url = outbound::check_url(&request.url, MAX_FETCH_URL)
        .map_err(|refused| format!("the URL {refused}"))?;
    let mut which = "the URL";
    for _ in 0..=MAX_REDIRECTS {
        let mut outgoing = client
            .request(method.clone(), url.clone())
            .map_err(|refused| format!("{which} {refused}"))?;
        for (name, value) in &request.headers {
            if !is_hop_by_hop(name) {
                outgoing = outgoing.header(name.as_str(), value.as_str());
            }
        }
        if let Some(body) = body.clone().filter(|b| !b.is_empty()) {
            outgoing = outgoing.body(body);
        }
        let response = outgoing
            .send()
            .await
            .map_err(|err| match outbound::refusal(&err) {
                Some(refused) => format!("{which} {refused}"),
                None => format!("the request failed: {}", without_url(&err)),
            })?;
        let code = response.status();
        if code.is_redirection()
            && let Some(location) = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
        {
            let next = url
                .join(location)
                .map_err(|_| "a redirect names no URL".to_string())?;
            which = "a redirect's URL";
            url = outbound::check_url(next.as_str(), MAX_FETCH_URL)
                .map_err(|refused| format!("{which} {refused}"))?;
            // As browsers do: 303 (and 301/302 after a POST) continue as a GET.
            if code == reqwest::StatusCode::SEE_OTHER
                || (matches!(code.as_u16(), 301 | 302) && method == reqwest::Method::POST)
            {
                method = reqwest::Method::GET;
                body = None;
            }
            continue;
        }
        let headers = response
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let final_url = response.url().to_string();
        if response
            .content_length()
            .is_some_and(|n| n > FETCH_MAX_BYTES as u64)
        {
            return Err(format!("the answer is over {FETCH_MAX_BYTES} bytes"));
        }
        let mut bytes = Vec::new();
        let mut counted = Counted {
            held: &request.held,
            bytes: 0,
        };
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|err| format!("reading the answer failed: {}", without_url(&err)))?;
            if bytes.len() + chunk.len() > FETCH_MAX_BYTES {
                return Err(format!("the answer is over {FETCH_MAX_BYTES} bytes"));
            }
            if !counted.held.take(chunk.len()) {
                return Err(format!(
                    "the answer (over {} bytes so far) does not fit under the function's memory limit",
                    bytes.len() + chunk.len()
                ));
            }
            counted.bytes += chunk.len();
            bytes.extend_from_slice(&chunk);
        }
        // Counted until the engine takes it.
        counted.bytes = 0;
        return Ok(FetchResponse {
            status: code.as_u16(),
            url: final_url,
            headers,
            body: bytes.into(),
        });
    }
    Err(format!("more than {MAX_REDIRECTS} redirects"))
}

/// The part of a fetch answer counted on the execution's [`Held`], given back
/// if the answer is dropped before it reaches the guest.
struct Counted<'a> {
    held: &'a crate::sandbox::Held,
    bytes: usize,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.held.give_back(self.bytes);
    }
}

/// A reqwest error's text without the URL (which the guest knows) or addresses.
fn without_url(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".into()
    } else if err.is_connect() {
        "cannot connect".into()
    } else {
        "the connection failed".into()
    }
}

/// The compiled program of a deployment, from the cache or the database.
async fn program(
    state: &AppState,
    function: &Function,
    deployment_id: &str,
) -> AppResult<Option<Program>> {
    if let Some(program) = state.functions.cached(&function.project_id, deployment_id) {
        return Ok(Some(program));
    }
    // Boxed, so that an execution's future does not carry the reading inline.
    Box::pin(read_program(state, function, deployment_id)).await
}

/// The compiled program of a deployment read from the database, and kept.
async fn read_program(
    state: &AppState,
    function: &Function,
    deployment_id: &str,
) -> AppResult<Option<Program>> {
    let Some(bytes) = store::program(
        state.db.pool(),
        &function.project_id,
        &function.id,
        deployment_id,
    )
    .await?
    else {
        return Ok(None);
    };
    let program = Program::from_bytes(bytes);
    state
        .functions
        .keep(&function.project_id, deployment_id, program.clone());
    Ok(Some(program))
}

/// How much longer than its CPU time an execution may take in all: the host calls
/// it waits on, and the moment a CPU-bound guest needs to be interrupted (so that
/// it fails with the CPU limit, which says what happened, not the wall time).
const WALL_GRACE: Duration = Duration::from_secs(1);

/// The limits of an execution of `function`: its memory, and its timeout as CPU
/// time (wall time a grace later); the rest the sandbox's defaults. `cap` bounds
/// both further (a job's lease).
fn limits(function: &Function, cap: Option<Duration>) -> Limits {
    let timeout = Duration::from_secs(function.timeout.clamp(1, service::MAX_TIMEOUT) as u64);
    let wall = timeout + WALL_GRACE;
    let wall = cap.map_or(wall, |cap| wall.min(cap));
    Limits {
        memory: (function.memory.clamp(1, service::MAX_MEMORY) as usize) << 20,
        cpu: timeout.min(wall),
        wall,
        ..Limits::default()
    }
}

/// Runs the active deployment of the function kept `ready` on a sandbox thread,
/// with its variables and (when warm) in its warm context. `TOO_MANY_EXECUTIONS`
/// when the pool's queue is full.
pub async fn run(
    state: &AppState,
    ready: &super::Ready,
    identity: Arc<Identity>,
    request: ExecutionRequest,
) -> AppResult<Outcome> {
    let function = &ready.function;
    let deployment_id = function.deployment_id.as_deref().unwrap_or_default();
    let place = Place {
        deployment_id,
        env: ready.env.clone(),
        warm: ready.warm_key(deployment_id),
        wall: None,
        depth: 1,
    };
    run_deployment(state, function, place, identity, request).await
}

/// Where and how long an execution runs.
struct Place<'a> {
    deployment_id: &'a str,
    env: Arc<std::collections::BTreeMap<String, String>>,
    warm: Option<sandbox::WarmKey>,
    /// Set for a job: it must end within its lease.
    wall: Option<Duration>,
    /// How deep in a chain of event triggers it runs.
    depth: u32,
}

async fn run_deployment(
    state: &AppState,
    function: &Function,
    place: Place<'_>,
    identity: Arc<Identity>,
    request: ExecutionRequest,
) -> AppResult<Outcome> {
    let Place {
        deployment_id,
        env,
        warm,
        wall,
        depth,
    } = place;
    let Some(program) = program(state, function, deployment_id).await? else {
        return Ok(Outcome {
            result: Err(sandbox::Failure::InvalidResponse(
                "the deployment was deleted".into(),
            )),
            logs: String::new(),
            errors: String::new(),
            logs_truncated: false,
            duration: Duration::ZERO,
        });
    };
    let mut path = request.path;
    let query = match path.find('?') {
        Some(at) => {
            let query = path[at + 1..].to_string();
            path.truncate(at);
            query
        }
        None => String::new(),
    };
    let invocation = Invocation {
        tenant: function.project_id.as_str().into(),
        program,
        env,
        warm,
        request: sandbox::Request {
            method: request.method,
            scheme: request.scheme,
            host: request.host,
            port: request.port,
            path,
            query_string: query,
            headers: request.headers,
            body: request.body,
        },
        limits: limits(function, wall),
        host: Arc::new(FunctionHost {
            state: state.clone(),
            session: SessionWatch::of(state, &identity),
            reach: ReachCheck::of(&identity, function),
            identity,
            cause: Cause {
                function_id: function.id.clone(),
                depth,
            },
        }),
    };
    let started = std::time::Instant::now();
    // A job (`wall` set: it must end within its lease) waits for a place, bounded
    // by the jobs' own concurrency; a request is refused at once.
    let outcome =
        if wall.is_some() {
            state.functions.pool.run_when_free(invocation).await
        } else {
            state.functions.pool.run(invocation).await.map_err(|busy| {
                AppError::TooManyExecutions {
                    retry_after: busy.retry_after.as_secs().max(1),
                }
            })?
        };
    let metrics = &state.functions.metrics;
    if outcome.result.is_ok() {
        metrics.completed.increment(1);
    } else {
        metrics.failed.increment(1);
    }
    metrics.seconds.record(started.elapsed().as_secs_f64());
    Ok(outcome)
}

/// Writes how a run went into its record.
/// A run's duration in whole milliseconds, rounded up: a run under a millisecond
/// took time all the same, and reads as 0.001 s rather than none.
fn whole_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros().div_ceil(1000)).unwrap_or(i64::MAX)
}

pub fn apply(execution: &mut Execution, outcome: Outcome) {
    execution.logs = outcome.logs;
    execution.errors = outcome.errors;
    execution.logs_truncated = outcome.logs_truncated;
    if outcome.logs_truncated {
        execution
            .errors
            .push_str("\n[logs were cut at the size limit]");
    }
    execution.duration_ms = whole_millis(outcome.duration);
    execution.updated_at = now_millis();
    match outcome.result {
        Ok(response) => {
            execution.status = status::COMPLETED.into();
            execution.response_status = i64::from(response.status);
            execution.response_headers = response.headers;
            execution.response_body = response.body;
            execution.failure = None;
        }
        Err(failure) => {
            execution.status = status::FAILED.into();
            execution.response_status = 500;
            execution.failure = Some(failure.code().to_string());
            let detail = match &failure {
                sandbox::Failure::Thrown(message) | sandbox::Failure::InvalidResponse(message) => {
                    message.clone()
                }
                other => other.code().to_string(),
            };
            if !execution.errors.is_empty() && !execution.errors.ends_with('\n') {
                execution.errors.push('\n');
            }
            execution.errors.push_str(&detail);
        }
    }
}

/// Records that an execution did not run because its caller may no longer run it.
fn refuse(execution: &mut Execution, err: &AppError) {
    execution.status = status::FAILED.into();
    execution.response_status = i64::from(err.http_status().as_u16());
    execution.failure = Some(err.code().to_string());
    execution.errors = err.message();
    execution.updated_at = now_millis();
}

fn payload_field(job: &Job, name: &str) -> Result<String, Failure> {
    job.payload
        .get(name)
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| Failure::Permanent(format!("the job has no {name}")))
}

fn retry(err: impl std::fmt::Display) -> Failure {
    Failure::Retry(format!("database: {err}"))
}

/// What a queued execution runs as, if it may still run: the function enabled
/// with an active deployment, and a call by a guest or a user still allowed by
/// the function's execute roles as they are now. Disabling a function, or taking
/// a role off it, stops the calls already queued, as it stops new ones.
async fn still_allowed(
    state: &AppState,
    function: &Function,
    execution: &Execution,
    job: &Job,
) -> AppResult<Identity> {
    service::can_run(function)?;
    let identity = Identity::deferred(state, function, execution, job).await?;
    let called = matches!(execution.trigger.as_str(), "http" | "graphql");
    match execution.caller.as_deref() {
        Some(caller) if called && caller.starts_with("user:") => {
            service::may_execute_as(&identity.credential, function)?;
        }
        None if called => service::may_execute_as(&Credential::Anonymous, function)?,
        // Keys, functions and the console run any function (`executions.write`,
        // checked when called); schedules and events are the function's own.
        _ => {}
    }
    Ok(identity)
}

/// Runs asynchronous executions (`functions.execute` jobs).
pub struct ExecuteJobs;

#[async_trait::async_trait]
impl Handler for ExecuteJobs {
    async fn run(&self, state: &AppState, job: &Job) -> Result<(), Failure> {
        let function_id = payload_field(job, "functionId")?;
        let execution_id = payload_field(job, "executionId")?;
        // How deep in a chain of event triggers it runs (1 when no event started it).
        let depth = job
            .payload
            .get("depth")
            .and_then(|v| v.as_u64())
            .map_or(1, |d| u32::try_from(d).unwrap_or(u32::MAX));
        let pool = state.db.pool();
        let project = &job.project_id;
        let Some(mut execution) = store::find_execution(pool, project, &function_id, &execution_id)
            .await
            .map_err(retry)?
        else {
            // Deleted since (with its function, or pruned).
            return Ok(());
        };
        if !status::is_pending(&execution.status) {
            // Ran already: a job runs at least once.
            return Ok(());
        }
        // A scheduled one is claimed before it runs: from then on it can no longer
        // be cancelled (deleted), and one cancelled first does not run.
        // Its watchers hear that it started, and may no longer cancel it.
        if execution.status == status::SCHEDULED {
            let at = now_millis().max(execution.updated_at + 1);
            let mut tx = pool.begin().await.map_err(retry)?;
            if !store::start_scheduled(&mut *tx, &execution, at)
                .await
                .map_err(retry)?
            {
                return Ok(());
            }
            execution.status = status::PROCESSING.into();
            execution.updated_at = at;
            commit_execution_update(state, tx, &execution, depth).await?;
        }
        let Some(function) = store::find(pool, project, &function_id)
            .await
            .map_err(retry)?
        else {
            return Ok(());
        };
        let body = store::request_body(pool, project, &function_id, &execution_id)
            .await
            .map_err(retry)?
            .unwrap_or_default();
        let request = ExecutionRequest {
            method: execution.request_method.clone(),
            path: execution.request_path.clone(),
            headers: execution.request_headers.clone(),
            body: body.into(),
            host: String::new(),
            scheme: "https".into(),
            port: 443,
        };
        // The run must end within the job's lease.
        let wall = Duration::from_secs(state.config.jobs_lease_secs.saturating_sub(5).max(1));
        match still_allowed(state, &function, &execution, job).await {
            Ok(identity) => {
                // The deployment active now: one replaced since the call was
                // queued (its code found wanting) does not run any more.
                if let Some(active) = &function.deployment_id {
                    execution.deployment_id.clone_from(active);
                }
                let (env, warm) = service::environment(state, &function, &execution.deployment_id)
                    .await
                    .map_err(|err| Failure::Retry(err.message()))?;
                let place = Place {
                    deployment_id: &execution.deployment_id,
                    env,
                    warm,
                    wall: Some(wall),
                    depth,
                };
                let outcome = match run_deployment(
                    state,
                    &function,
                    place,
                    Arc::new(identity),
                    request,
                )
                .await
                {
                    Ok(outcome) => outcome,
                    Err(AppError::TooManyExecutions { .. }) => {
                        return Err(Failure::Retry("every sandbox thread is busy".into()));
                    }
                    Err(err) => return Err(Failure::Retry(err.message())),
                };
                apply(&mut execution, outcome);
            }
            // Its user signed out, or was blocked or deleted, or lost the right
            // to run it, or the function was disabled, since: it does not run,
            // and says why.
            Err(err) if !err.http_status().is_server_error() => refuse(&mut execution, &err),
            Err(err) => return Err(Failure::Retry(err.message())),
        }
        execution
            .response_body
            .truncate(service::KEPT_RESPONSE_BYTES);
        let mut tx = pool.begin().await.map_err(retry)?;
        if store::finish_execution(&mut *tx, &execution)
            .await
            .map_err(retry)?
        {
            commit_execution_update(state, tx, &execution, depth).await?;
        }
        Ok(())
    }
}

/// Commits `tx`, which changed `execution`, with its `update` event, caused by
/// its function at `depth` in a chain of event triggers (so the function's own
/// event triggers stop where they must).
async fn commit_execution_update(
    state: &AppState,
    tx: sqlx::Transaction<'static, sqlx::Any>,
    execution: &Execution,
    depth: u32,
) -> Result<(), Failure> {
    let cause = Cause {
        function_id: execution.function_id.clone(),
        depth,
    };
    CAUSE
        .scope(
            cause,
            log::commit(
                &state.bus,
                tx,
                vec![service::execution_event(execution, "update")],
            ),
        )
        .await
        .map_err(retry)
}

/// Turns a function's CRON tick into an execution (`functions.schedule` jobs).
pub struct ScheduleJobs;

#[async_trait::async_trait]
impl Handler for ScheduleJobs {
    async fn run(&self, state: &AppState, job: &Job) -> Result<(), Failure> {
        let function_id = payload_field(job, "functionId")?;
        let function = store::find(state.db.pool(), &job.project_id, &function_id)
            .await
            .map_err(retry)?;
        let Some(function) = function.filter(|f| f.schedule.is_some()) else {
            // Deleted, or its schedule removed, and the schedule row outlived it.
            let id = service::schedule_id(&job.project_id, &function_id);
            state
                .jobs
                .unschedule(state, &id)
                .await
                .map_err(|err| Failure::Retry(err.to_string()))?;
            return Ok(());
        };
        if !function.enabled || function.deployment_id.is_none() {
            return Ok(());
        }
        service::execute_scheduled(state, &function)
            .await
            .map_err(|err| Failure::Retry(err.message()))
    }
}

/// Deletes execution records past `NIMBUS_EXECUTION_RETENTION`.
pub struct PruneExecutions;

#[async_trait::async_trait]
impl Handler for PruneExecutions {
    async fn run(&self, state: &AppState, _job: &Job) -> Result<(), Failure> {
        let before = now_millis() - (state.config.execution_retention_secs as i64) * 1000;
        store::prune_executions(state.db.pool(), before)
            .await
            .map(|_| ())
            .map_err(retry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_lasts_at_least_a_millisecond() {
        assert_eq!(whole_millis(Duration::from_micros(180)), 1);
        assert_eq!(whole_millis(Duration::from_micros(1_000)), 1);
        assert_eq!(whole_millis(Duration::from_micros(1_001)), 2);
        assert_eq!(whole_millis(Duration::ZERO), 0);
    }
}
