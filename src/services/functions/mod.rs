//! Functions: per project, user code run in the in-process JavaScript sandbox
//! ([`crate::sandbox`]). A function holds its settings (who may execute it, its
//! CRON schedule, limits, the API scopes its own `nimbus.graphql` calls get) and
//! its variables, sealed at rest; a deployment is uploaded code compiled once and
//! stored; an execution runs the active deployment synchronously, as a durable job
//! (`async`), on a schedule tick, or from the plain HTTP route, and is recorded with
//! its response and logs for `NIMBUS_EXECUTION_RETENTION`.
//!
//! What a guest reaches outside the sandbox goes through [`execute::FunctionHost`]:
//! `fetch` with the outbound guard of [`crate::outbound`], and `nimbus.graphql`
//! against the project's own schema as the calling user, or with exactly the
//! function's scopes, through the [`Gateway`] the HTTP layer supplies.
//!
//! Events trigger functions through the event log consumer [`Triggers`]: for each
//! logged event, whichever replica logged it, one execution job per subscribed
//! function, queued in the transaction that stores the consumer's position and
//! keyed by function and event id, so each event runs each function once. A change
//! made on behalf of an execution carries its cause ([`crate::bus::Cause`]): it
//! does not trigger the function that made it, and chains of triggers stop at
//! [`service::MAX_TRIGGER_DEPTH`].

pub mod execute;
pub mod schema;
pub mod service;
pub mod store;

use std::sync::{Arc, Mutex, OnceLock};

use crate::AppState;
use crate::auth::Credential;
use crate::config::Config;
use crate::sandbox::{Pool, Program};

pub use schema::register;

/// The event log consumer that turns events into executions of the functions
/// subscribed to them: on one replica at a time, in the transaction that stores
/// how far it got ([`crate::bus::consumer`]).
#[derive(Default)]
pub struct Triggers {
    /// The execution events of the last batch, announced once it committed.
    logged: Mutex<Vec<crate::db::event_log::Logged>>,
}

#[async_trait::async_trait]
impl crate::bus::consumer::Consumer for Triggers {
    fn name(&self) -> &'static str {
        "functions"
    }

    async fn wanted(
        &self,
        state: &AppState,
        projects: &[&str],
    ) -> crate::error::AppResult<std::collections::HashSet<String>> {
        service::projects_triggering(state, projects).await
    }

    async fn handle(
        &self,
        state: &AppState,
        conn: &mut sqlx::AnyConnection,
        batch: &[(i64, crate::bus::Event)],
    ) -> crate::error::AppResult<()> {
        self.logged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let mut subscribed = service::Subscribed::default();
        let mut messages = Vec::new();
        for (_, event) in batch {
            messages
                .extend(service::queue_triggered(state, &mut *conn, &mut subscribed, event).await?);
        }
        // Logged last, so the positions they take stay open for a short time.
        let logged =
            crate::db::event_log::append(&mut *conn, crate::bus::log::entries(messages)).await?;
        *self.logged.lock().unwrap_or_else(|e| e.into_inner()) = logged;
        Ok(())
    }

    fn committed(&self, state: &AppState) {
        state.jobs.wake();
        let logged = std::mem::take(&mut *self.logged.lock().unwrap_or_else(|e| e.into_inner()));
        if !logged.is_empty() {
            let bus = state.bus.clone();
            tokio::spawn(async move { bus.announce(logged).await });
        }
    }
}

/// A function's settings, without its variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub id: String,
    pub project_id: String,
    pub name: String,
    /// The one runtime there is: `js`.
    pub runtime: String,
    /// The module whose default export runs.
    pub entrypoint: String,
    /// Roles that may execute it (`any`, `users`, `user:ID`, `team:ID`, …).
    pub execute: Vec<String>,
    /// Event patterns, checked (Appwrite's names, `*` wildcards).
    pub events: Vec<String>,
    /// A CRON expression (5 fields, or 6 with seconds), UTC.
    pub schedule: Option<String>,
    /// Seconds an execution may take.
    pub timeout: i64,
    /// MiB of engine heap an execution may use.
    pub memory: i64,
    pub enabled: bool,
    /// The API scopes its `nimbus.graphql` calls hold when no user called it.
    pub scopes: Vec<String>,
    /// The active deployment.
    pub deployment_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A variable, without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub function_id: String,
    pub key: String,
    /// Bytes of its value.
    pub size: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A deployment, without its program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: String,
    pub function_id: String,
    pub entrypoint: String,
    /// Bytes uploaded.
    pub source_size: i64,
    /// Modules it holds.
    pub modules: i64,
    pub created_at: i64,
}

/// Where an execution stands.
pub mod status {
    /// Queued as a job (asynchronous).
    pub const WAITING: &str = "waiting";
    /// On a sandbox thread.
    pub const PROCESSING: &str = "processing";
    /// The function answered.
    pub const COMPLETED: &str = "completed";
    /// It threw, hit a limit, or could not run.
    pub const FAILED: &str = "failed";
}

/// One execution, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    pub id: String,
    pub project_id: String,
    pub function_id: String,
    pub deployment_id: String,
    /// `http`, `graphql`, `schedule` or `event`.
    pub trigger: String,
    /// One of [`status`].
    pub status: String,
    /// `user:ID`, `key:ID`, or none for a guest or a schedule.
    pub caller: Option<String>,
    pub request_method: String,
    pub request_path: String,
    pub request_headers: Vec<(String, String)>,
    pub response_status: i64,
    pub response_headers: Vec<(String, String)>,
    pub response_body: Vec<u8>,
    pub logs: String,
    pub errors: String,
    /// The failure's stable code (`EXECUTION_CPU_LIMIT`, …), when it failed.
    pub failure: Option<String>,
    pub duration_ms: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Runs `nimbus.graphql` calls of guests against a project's own schema, as a
/// given caller. The HTTP layer, which owns GraphQL execution, supplies it.
#[async_trait::async_trait]
pub trait Gateway: Send + Sync {
    /// Executes `query` with `variables` in project `project_id`, as the holder of
    /// `credential`; answers the GraphQL response as JSON (`data`, `errors`).
    async fn execute(
        &self,
        state: &AppState,
        project_id: &str,
        credential: Credential,
        query: String,
        variables: serde_json::Value,
    ) -> serde_json::Value;

    /// The credential of user `user_id`'s session `session_id`, for an execution
    /// that runs on their behalf after the request that started it; an error (its
    /// code recorded as the execution's failure) when the session ended or the
    /// user was blocked or deleted since.
    async fn delegated(
        &self,
        state: &AppState,
        project_id: &str,
        user_id: &str,
        session_id: &str,
    ) -> crate::error::AppResult<Credential>;
}

/// Request data of a `nimbus.graphql` call: the operation runs inside a
/// function's execution, which holds a sandbox thread while it waits.
#[derive(Debug, Clone, Copy)]
pub struct InsideFunction;

/// Compiled programs kept in memory, by project and deployment: loading one from
/// the database costs more than running it.
const CACHED_PROGRAMS: usize = 64;

/// What executions share on this replica: the sandbox's worker pool, the compiled
/// programs lately run, the way to the project's GraphQL, and the one HTTP client
/// of guests' `fetch` (its connections pooled, each checked by the outbound guard).
pub struct Runtime {
    pub pool: Pool,
    programs: Mutex<lru::LruCache<(String, String), Program>>,
    gateway: OnceLock<Arc<dyn Gateway>>,
    fetch: crate::outbound::GuardedClient,
}

impl Runtime {
    pub fn new(config: &Config) -> anyhow::Result<Runtime> {
        Ok(Runtime {
            pool: Pool::new(config.functions_workers(), config.functions_queue),
            programs: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(CACHED_PROGRAMS).expect("not zero"),
            )),
            gateway: OnceLock::new(),
            fetch: execute::fetch_client(config)?,
        })
    }

    pub(crate) fn fetch_client(&self) -> &crate::outbound::GuardedClient {
        &self.fetch
    }

    /// Sets how `nimbus.graphql` reaches the schema; once, at start.
    pub fn set_gateway(&self, gateway: Arc<dyn Gateway>) {
        if self.gateway.set(gateway).is_err() {
            tracing::warn!("the functions' GraphQL gateway was set twice; the first stays");
        }
    }

    pub(crate) fn gateway(&self) -> Option<Arc<dyn Gateway>> {
        self.gateway.get().cloned()
    }

    pub(crate) fn cached(&self, project_id: &str, deployment_id: &str) -> Option<Program> {
        self.programs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(project_id.to_string(), deployment_id.to_string()))
            .cloned()
    }

    pub(crate) fn keep(&self, project_id: &str, deployment_id: &str, program: Program) {
        self.programs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put((project_id.to_string(), deployment_id.to_string()), program);
    }

    pub(crate) fn forget(&self, project_id: &str, deployment_id: &str) {
        self.programs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop(&(project_id.to_string(), deployment_id.to_string()));
    }
}
