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

use std::collections::BTreeMap;
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
    /// Whether each sandbox thread keeps one context per deployment, with the
    /// program loaded, between executions (module state persists on that thread).
    pub warm: bool,
    /// Whether its successful synchronous executions are recorded; failed and
    /// asynchronous ones always are (ADR 31).
    pub logging: bool,
    /// The API scopes its `nimbus.graphql` calls hold when no user called it.
    pub scopes: Vec<String>,
    /// What the key that last changed its code or configuration may read, and until
    /// when: the events that trigger it, and how long its scopes last.
    pub reach: crate::auth::Delegation,
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
    /// Queued as a job that waits for its `scheduled_at`.
    pub const SCHEDULED: &str = "scheduled";

    /// Whether an execution in `status` has yet to run (a job will run it).
    pub fn is_pending(status: &str) -> bool {
        status == WAITING || status == PROCESSING || status == SCHEDULED
    }
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
    pub response_body: bytes::Bytes,
    pub logs: String,
    pub errors: String,
    /// Whether logs and errors went past the log limit and were cut.
    pub logs_truncated: bool,
    /// The failure's stable code (`EXECUTION_CPU_LIMIT`, …), when it failed.
    pub failure: Option<String>,
    pub duration_ms: i64,
    /// When it was asked to run, if at a set time (`createExecution`'s
    /// `scheduledAt`).
    pub scheduled_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Runs `nimbus.graphql` calls of guests against a project's own schema, as a
/// given caller. The HTTP layer, which owns GraphQL execution, supplies it.
#[async_trait::async_trait]
pub trait Gateway: Send + Sync {
    /// Executes `query` with `variables` (a JSON object's text; anything else is
    /// no variables) in project `project_id`, as the holder of `credential`;
    /// answers the GraphQL response as JSON text (`data`, `errors`), its keys in
    /// the order `/v1/graphql` writes them.
    async fn execute(
        &self,
        state: &AppState,
        project_id: &str,
        credential: Credential,
        query: String,
        variables: String,
    ) -> String;

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

/// Functions kept ready (settings and opened variables), by project and id.
const CACHED_FUNCTIONS: usize = 4096;

/// How long a ready function is trusted without hearing of a change: the bound of
/// a change whose event this replica never heard (none is expected: the relay
/// reads the log), the same as the session cache's.
pub const READY_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Sync execution records waiting to be written behind their responses; past
/// this, a record is written before its response, as a backpressure.
const PENDING_RECORDS: usize = 4096;

/// Most records one transaction writes.
pub(crate) const RECORDS_PER_BATCH: usize = 256;

/// A function as executions need it: its settings, its variables opened, and
/// what every execution of it would otherwise build again (its own identity,
/// the key of its warm contexts). Shared, never copied, by the executions that
/// run it.
#[derive(Debug)]
pub struct Ready {
    pub function: Function,
    pub env: Arc<BTreeMap<String, String>>,
    /// As whom its `nimbus.graphql` calls run when no signed-in user called it.
    pub(crate) identity: Arc<execute::Identity>,
    /// The warm context an execution of its active deployment runs in, when the
    /// function is warm and this reading is the one kept (a reading that crossed
    /// a change runs in a fresh context).
    warm: Option<crate::sandbox::WarmKey>,
    loaded: std::time::Instant,
    /// Unique to this reading of the function and its variables: the version of
    /// its warm contexts, which a changed function therefore never reuses.
    generation: u64,
}

impl Ready {
    /// The warm context an execution of this very function's `deployment_id`
    /// runs in, when the function is warm.
    pub(crate) fn warm_key(&self, deployment_id: &str) -> Option<crate::sandbox::WarmKey> {
        match &self.warm {
            Some(key) if self.function.deployment_id.as_deref() == Some(deployment_id) => {
                Some(key.clone())
            }
            Some(_) => self.function.warm.then(|| crate::sandbox::WarmKey {
                owner: warm_owner(&self.function.project_id, Some(&self.function.id)).into(),
                version: format!("{}/{deployment_id}", self.generation).into(),
            }),
            None => None,
        }
    }
}

/// The owner of a function's warm contexts, or the prefix of all of a project's.
fn warm_owner(project_id: &str, id: Option<&str>) -> String {
    format!("{project_id}/{}", id.unwrap_or_default())
}

/// Counts readings of functions, for [`Ready::generation`].
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The functions kept ready, and a count of the changes heard: a function loaded
/// while a change was heard is not kept, since it may have been read before it.
struct ReadyCache {
    entries: lru::LruCache<(String, String), Arc<Ready>>,
    changes: u64,
}

/// What executions share on this replica: the sandbox's worker pool, the compiled
/// programs lately run, the way to the project's GraphQL, and the one HTTP client
/// of guests' `fetch` (its connections pooled, each checked by the outbound guard).
pub struct Runtime {
    pub pool: Pool,
    programs: Mutex<lru::LruCache<(String, String), Program>>,
    ready: Mutex<ReadyCache>,
    records: Records,
    gateway: OnceLock<Arc<dyn Gateway>>,
    fetch: crate::outbound::GuardedClient,
    pub(crate) metrics: ExecutionMetrics,
}

/// The metrics every execution updates, registered once (the recorder is
/// installed before any server state is made): looking each up in the
/// recorder's registry per execution would cost more than updating it.
pub(crate) struct ExecutionMetrics {
    /// `nimbus_function_executions_total`, outcome `completed` and `failed`.
    pub completed: metrics::Counter,
    pub failed: metrics::Counter,
    /// `nimbus_function_execution_seconds`.
    pub seconds: metrics::Histogram,
}

impl ExecutionMetrics {
    fn register() -> Self {
        ExecutionMetrics {
            completed: metrics::counter!("nimbus_function_executions_total", "outcome" => "completed"),
            failed: metrics::counter!("nimbus_function_executions_total", "outcome" => "failed"),
            seconds: metrics::histogram!("nimbus_function_execution_seconds"),
        }
    }
}

/// A sync execution's record waiting to be written behind its response, with
/// the creation time of the function it ran as: that tells the function from a
/// later one of the same id, so a record that outlived its function's deletion is
/// not written ([`store::insert_execution_of`]).
pub(crate) struct QueuedRecord {
    /// Shared with the response being sent: the record keeps the first
    /// [`service::KEPT_RESPONSE_BYTES`] of its body.
    pub execution: Arc<Execution>,
    pub function_created_at: i64,
}

/// The queue of sync execution records written behind their responses
/// ([`service::record_forever`]), while its writer runs.
struct Records {
    sender: tokio::sync::mpsc::Sender<QueuedRecord>,
    receiver: Mutex<Option<tokio::sync::mpsc::Receiver<QueuedRecord>>>,
    writing: std::sync::atomic::AtomicBool,
}

impl Runtime {
    pub fn new(config: &Config) -> anyhow::Result<Runtime> {
        Ok(Runtime {
            pool: Pool::with_handle(
                config.functions_workers(),
                config.functions_queue,
                config.functions_shares(),
                tokio::runtime::Handle::try_current().ok(),
            ),
            programs: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(CACHED_PROGRAMS).expect("not zero"),
            )),
            ready: Mutex::new(ReadyCache {
                entries: lru::LruCache::new(
                    std::num::NonZeroUsize::new(CACHED_FUNCTIONS).expect("not zero"),
                ),
                changes: 0,
            }),
            records: {
                let (sender, receiver) = tokio::sync::mpsc::channel(PENDING_RECORDS);
                Records {
                    sender,
                    receiver: Mutex::new(Some(receiver)),
                    writing: std::sync::atomic::AtomicBool::new(false),
                }
            },
            gateway: OnceLock::new(),
            fetch: execute::fetch_client(config)?,
            metrics: ExecutionMetrics::register(),
        })
    }

    /// Function `id` of the project, ready, if kept and fresh.
    pub(crate) fn ready(&self, project_id: &str, id: &str) -> Option<Arc<Ready>> {
        let mut cache = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        let key = (project_id.to_string(), id.to_string());
        match cache.entries.get(&key) {
            Some(ready) if ready.loaded.elapsed() < READY_TTL => Some(ready.clone()),
            Some(_) => {
                cache.entries.pop(&key);
                None
            }
            None => None,
        }
    }

    /// The count of changes heard so far; [`Runtime::keep_ready`] takes it.
    pub(crate) fn changes_heard(&self) -> u64 {
        self.ready.lock().unwrap_or_else(|e| e.into_inner()).changes
    }

    /// Keeps `function` with its variables, read after `changes_heard` answered
    /// `heard`, unless a change was heard since (it may have been read before it).
    pub(crate) fn keep_ready(
        &self,
        heard: u64,
        function: Function,
        env: BTreeMap<String, String>,
    ) -> Arc<Ready> {
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut cache = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        let kept = cache.changes == heard;
        let warm = (kept && function.warm).then(|| crate::sandbox::WarmKey {
            owner: warm_owner(&function.project_id, Some(&function.id)).into(),
            version: format!(
                "{generation}/{}",
                function.deployment_id.as_deref().unwrap_or_default()
            )
            .into(),
        });
        let ready = Arc::new(Ready {
            identity: Arc::new(execute::Identity::function(&function)),
            function,
            env: Arc::new(env),
            warm,
            loaded: std::time::Instant::now(),
            generation,
        });
        if kept {
            let key = (ready.function.project_id.clone(), ready.function.id.clone());
            cache.entries.put(key, ready.clone());
        }
        ready
    }

    /// Forgets what is kept of function `id` (all of the project's when `None`),
    /// its warm contexts included.
    pub fn function_changed(&self, project_id: &str, id: Option<&str>) {
        self.pool.forget_warm(&warm_owner(project_id, id));
        let mut cache = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        cache.changes += 1;
        match id {
            Some(id) => {
                cache.entries.pop(&(project_id.to_string(), id.to_string()));
            }
            None => {
                let gone: Vec<_> = cache
                    .entries
                    .iter()
                    .filter(|((project, _), _)| project == project_id)
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in gone {
                    cache.entries.pop(&key);
                }
            }
        }
    }

    /// Forgets what the key `key_id` of `project_id` handed on: its project's
    /// functions, and any other project's whose scopes it gave (an `admin` key
    /// configures any project).
    pub fn key_revoked(&self, project_id: &str, key_id: &str) {
        self.function_changed(project_id, None);
        let elsewhere: Vec<(String, String)> = {
            let cache = self.ready.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .entries
                .iter()
                .filter(|(_, ready)| ready.function.reach.key_id() == Some(key_id))
                .map(|(key, _)| key.clone())
                .collect()
        };
        for (project, id) in elsewhere {
            self.function_changed(&project, Some(&id));
        }
    }

    /// Forgets every function kept: changes may have been missed.
    pub fn forget_ready(&self) {
        self.pool.forget_warm("");
        let mut cache = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        cache.changes += 1;
        cache.entries.clear();
    }

    /// Forgets what a logged event changes: a function, its variables or its
    /// deployments (not its executions, which change nothing kept).
    pub fn heard(&self, event: &crate::bus::Event) {
        for name in &event.events {
            if let Some(id) = changed_function(name) {
                self.function_changed(&event.project_id, Some(id));
            } else if let Some(key_id) = name
                .strip_prefix("keys.")
                .and_then(|rest| rest.strip_suffix(".delete"))
                .filter(|id| *id != "*")
            {
                self.key_revoked(&event.project_id, key_id);
            }
        }
    }

    /// Queues a sync execution's record for the writer; hands it back when there is
    /// no writer or its queue is full (the caller writes it then).
    pub(crate) fn record_later(&self, execution: QueuedRecord) -> Result<(), QueuedRecord> {
        if !self
            .records
            .writing
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(execution);
        }
        self.records
            .sender
            .try_send(execution)
            .map_err(|err| match err {
                tokio::sync::mpsc::error::TrySendError::Full(e)
                | tokio::sync::mpsc::error::TrySendError::Closed(e) => e,
            })
    }

    /// The queue of records to write, for the one writer; `None` after the first.
    pub(crate) fn take_records(&self) -> Option<tokio::sync::mpsc::Receiver<QueuedRecord>> {
        let receiver = self
            .records
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if receiver.is_some() {
            self.records
                .writing
                .store(true, std::sync::atomic::Ordering::Release);
        }
        receiver
    }

    /// Records go to the writer no more (it is stopping): callers write their own.
    pub(crate) fn stop_recording_later(&self) {
        self.records
            .writing
            .store(false, std::sync::atomic::Ordering::Release);
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

/// The function an event name says changed: `functions.F.<action>`,
/// `functions.F.variables.K.<action>` or `functions.F.deployments.D.<action>`
/// (with or without a detail after the action); not its executions, and not the
/// `*` patterns.
fn changed_function(name: &str) -> Option<&str> {
    let mut parts = name.split('.');
    if parts.next()? != "functions" {
        return None;
    }
    let id = parts.next().filter(|id| *id != "*")?;
    match parts.next()? {
        "executions" => None,
        _ => Some(id),
    }
}

#[cfg(test)]
mod tests {
    use super::changed_function;

    #[test]
    fn events_of_a_function_its_variables_and_deployments_change_it_but_executions_do_not() {
        assert_eq!(changed_function("functions.f1.update"), Some("f1"));
        assert_eq!(changed_function("functions.f1.delete"), Some("f1"));
        assert_eq!(
            changed_function("functions.f1.variables.KEY.update"),
            Some("f1")
        );
        assert_eq!(
            changed_function("functions.f1.deployments.d1.delete"),
            Some("f1")
        );
        assert_eq!(changed_function("functions.f1.executions.e1.create"), None);
        assert_eq!(changed_function("functions.*.update"), None);
        assert_eq!(changed_function("functions.f1"), None);
        assert_eq!(changed_function("documents.f1.update"), None);
    }
}
