//! Nimbus: a GraphQL-first backend for app developers in one binary. This crate
//! root wires the parts into [`AppState`] and runs them as a [`Server`], the same
//! way for `nimbus serve` and for the integration tests.

/// Who is calling: API key secrets, scopes, the caller and its grants.
pub mod auth;
/// The event bus between writes, subscriptions and replicas (Redis or in-process).
pub mod bus;
/// Settings from flags and `NIMBUS_*` variables.
pub mod config;
/// The SQLite/MariaDB pool, migrations, ids and pagination.
pub mod db;
/// `AppError` and its GraphQL form.
pub mod error;
/// File storage.
pub mod files;
/// Gauges raised while a value lives (open connections, live subscriptions).
pub mod gauge;
/// Per-project schema assembly, caching, limits and shared GraphQL types.
pub mod graphql;
/// The HTTP and WebSocket surface: router, GraphQL transport, health, metrics, playground, console.
pub mod http;
/// Durable background jobs: a table, leases, retries, dead letters, CRON schedules.
pub mod jobs;
/// Outgoing email: SMTP, or an outbox folder for development; queued as jobs.
pub mod mail;
/// Outgoing HTTP to user-named URLs, kept off the server's own network.
pub mod outbound;
/// The JavaScript sandbox functions run in.
pub mod sandbox;
/// The services, one folder each.
pub mod services;

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use bus::{Bus, BusMessage};
use config::Config;
use db::Db;
use files::FileStore;
use graphql::ProjectSchemas;

/// How long start-up waits for the database or Redis before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a request needs, shared by all of them.
pub struct AppInner {
    pub config: Config,
    pub db: Db,
    pub bus: Bus,
    pub files: FileStore,
    pub mailer: mail::Mailer,
    /// The durable job queue and this replica's worker settings.
    pub jobs: jobs::Jobs,
    pub schemas: ProjectSchemas<services::LoadedProject>,
    /// The type and root field names of the core schema, which collections may not take.
    pub core_names: &'static std::collections::HashSet<String>,
    /// The team memberships of users, which the users service reads through it.
    pub memberships: &'static dyn services::users::TeamMemberships,
    pub sessions: auth::session_cache::SessionCache,
    pub rate_limiter: auth::rate_limit::RateLimiter,
    /// Signs and verifies the short-lived JWTs of `createJWT`.
    pub jwt: auth::jwt::JwtKeys,
    /// The server secret, for signing and encryption.
    pub secret: String,
    /// Signs the cursors of realtime events and checks those sent back.
    pub cursors: Arc<services::realtime::resume::Cursors>,
    /// Who is on which presence channel, on every replica.
    pub presence: Arc<services::realtime::presence::PresenceRegistry>,
    /// Parsed query documents by their text.
    pub parsed_queries: graphql::parsed::ParsedQueries,
    /// Serialised answers of operations alike for every caller.
    pub kept_answers: graphql::alike::KeptAnswers,
    /// The subscription operations WebSocket connections watch with, one of each.
    pub subscription_shapes: http::ws::Shapes,
    /// The WebSockets and subscriptions each client address holds here.
    pub ws_clients: http::ws::SocketsPerClient,
    /// Shared inserts of single creates (both backends; on SQLite a flight
    /// takes the writer's turn as a group-committed batch does).
    pub creates: Option<services::databases::create_batch::CreateBatches>,
    /// Turns to render image previews, and the queue for them.
    pub preview_turns: services::storage::preview::Turns,
    pub preview_cache: Arc<services::storage::preview::CacheBudget>,
    /// Client address to country, for `locale`.
    pub geoip: services::locale::geoip::GeoIp,
    /// Avatars drawn lately, kept in memory.
    pub avatars: services::avatars::cache::AvatarCache,
    /// The sandbox threads functions run on, and what their executions share.
    pub functions: services::functions::Runtime,
    /// What this replica counted of each project's usage since its last flush.
    pub usage: Arc<services::usage::counters::Usage>,
}

/// A cheap handle on [`AppInner`].
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    /// Connects to the database (applying migrations) and the bus, and prepares file
    /// storage: what every command that touches data needs.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        // First: a wrong path is found before the database is touched.
        let geoip = services::locale::geoip::GeoIp::open(config.geoip_db.as_deref())?;
        // Before the first SQLite connection opens: every one gets the function.
        services::databases::spatial::install_sqlite_function();
        let db = Db::connect(&config, CONNECT_TIMEOUT).await?;
        db.migrate().await?;
        services::databases::upgrade::permission_tables(&db).await?;
        let bus = match &config.redis_url {
            Some(url) => Bus::redis(url, &config.redis_prefix, &db).await?,
            None => Bus::in_process(&db).await?,
        };
        let files = match &config.storage {
            Some(location) if location.starts_with("s3://") => FileStore::from_url(location)?,
            Some(directory) => FileStore::local(directory)?,
            None => FileStore::local(config.data_dir.join("files"))?,
        };
        let mailer = mail::Mailer::from_config(
            config.smtp_url.as_deref(),
            &config.mail_from,
            &config.data_dir.join("outbox"),
        )?;
        tracing::info!(mail = %mailer.describe(), "outgoing email");
        let secret = load_or_create_secret(&config)?;
        let rate_limiter = auth::rate_limit::RateLimiter::new(
            config.rate_limits,
            &config.redis_prefix,
            bus.redis_connection(),
        );
        // A quarter of the document connections at most hold a shared insert
        // (on SQLite one at a time writes, and the others wait for its turn).
        let max_flights = (config.database_max_connections as usize * 3 / 4) / 4;
        let creates = Some(services::databases::create_batch::CreateBatches::new(
            db.clone(),
            max_flights,
        ));
        let preview_turns =
            services::storage::preview::Turns::new(config.preview_slots(), config.preview_queue);
        let parsed_queries =
            graphql::parsed::ParsedQueries::new(graphql::limits::QueryLimits::of(&config));
        let config_for_jobs = config.clone();
        let presence = Arc::new(services::realtime::presence::PresenceRegistry::default());
        bus.set_presence_book(presence.clone());
        let usage = Arc::new(services::usage::counters::Usage::new(
            config.usage,
            usize::try_from(config.usage_max_keys).unwrap_or(usize::MAX),
        ));
        if config.usage {
            bus.set_commit_watch(usage.clone());
        }
        let state = AppState(Arc::new(AppInner {
            creates,
            preview_turns,
            preview_cache: Arc::new(services::storage::preview::CacheBudget::new(
                config.preview_cache_bytes,
            )),
            geoip,
            avatars: services::avatars::cache::AvatarCache::new(
                usize::try_from(config.avatar_cache_entries).unwrap_or(usize::MAX),
                usize::try_from(config.avatar_cache_bytes).unwrap_or(usize::MAX),
            ),
            functions: services::functions::Runtime::new(&config)?,
            usage,
            config,
            db,
            bus,
            files,
            mailer,
            jobs: jobs::Jobs::new(&config_for_jobs),
            schemas: ProjectSchemas::default(),
            core_names: services::core_names(),
            memberships: services::team_memberships(),
            sessions: Default::default(),
            rate_limiter,
            jwt: auth::jwt::JwtKeys::new(&secret),
            cursors: Arc::new(services::realtime::resume::Cursors::new(&secret)),
            secret,
            presence,
            parsed_queries,
            kept_answers: Default::default(),
            subscription_shapes: Default::default(),
            ws_clients: Default::default(),
        }));
        services::projects::service::ensure_default_project(&state)
            .await
            .map_err(|e| e.into_anyhow().context("cannot create the default project"))?;
        Ok(state)
    }

    /// Closes the pool and stops background tasks.
    pub async fn close(&self) {
        self.bus.shutdown();
        self.db.close().await;
    }
}

/// The configured secret, or the one kept in the data dir (created on first use).
fn load_or_create_secret(config: &Config) -> anyhow::Result<String> {
    if let Some(secret) = &config.secret {
        anyhow::ensure!(
            secret.len() >= 32,
            "NIMBUS_SECRET must be at least 32 characters long"
        );
        return Ok(secret.clone());
    }
    let path = config.data_dir.join("secret");
    match std::fs::read_to_string(&path) {
        Ok(secret) if secret.trim().len() >= 32 => return Ok(secret.trim().to_string()),
        Ok(_) => anyhow::bail!("{} is shorter than 32 characters", path.display()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let secret = auth::secrets::random_token();
    write_private(&path, &secret).with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated the server secret");
    Ok(secret)
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// A running server.
pub struct Server {
    state: AppState,
    local_addr: SocketAddr,
    admin_key: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    serving: JoinHandle<std::io::Result<()>>,
    invalidations: JoinHandle<()>,
    presence: JoinHandle<()>,
    uploads: JoinHandle<()>,
    structure: JoinHandle<()>,
    pruning: JoinHandle<()>,
    jobs: JoinHandle<()>,
    consumers: Consumers,
    usage: Option<(tokio::sync::watch::Sender<bool>, JoinHandle<()>)>,
    /// The writer of sync execution records queued behind their responses.
    records: (tokio::sync::watch::Sender<bool>, JoinHandle<()>),
}

/// This replica's event log consumers, stopped (their leases released) on shutdown.
struct Consumers {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Consumers {
    /// How long a shutdown waits for a consumer to finish its step and release.
    const STOP_WAIT: Duration = Duration::from_secs(5);

    async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            Self::finish(task).await;
        }
    }

    /// Waits for a stopped task to finish its last step, aborting it after
    /// [`Self::STOP_WAIT`].
    async fn finish(task: JoinHandle<()>) {
        let abort = task.abort_handle();
        if tokio::time::timeout(Self::STOP_WAIT, task).await.is_err() {
            abort.abort();
        }
    }
}

impl Server {
    /// Opens everything, creates the first admin key on the server's first start, and
    /// starts serving on `config.listen` (port 0 picks a free port).
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        http::metrics::install_recorder();
        let listen = config.listen;
        let state = AppState::open(config).await?;
        let invalidations = tokio::spawn(follow_project_changes(state.clone()));
        let presence = tokio::spawn(services::realtime::presence::keep_alive(state.clone()));
        let uploads = tokio::spawn(services::storage::upload::sweep_forever(state.clone()));
        let structure = tokio::spawn(services::databases::intents::settle_forever(state.clone()));
        let pruning = tokio::spawn(bus::log::prune_forever(
            state.db.clone(),
            Duration::from_secs(state.config.event_retention_secs),
        ));
        tokio::spawn(http::multipart::sweep_spool(
            state.config.upload_spool_dir(),
        ));
        let jobs = start_jobs(&state).await;
        let consumers = start_consumers(&state);
        let usage = state.config.usage.then(|| {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(services::usage::service::flush_forever(
                state.clone(),
                stopped,
            ));
            (stop, task)
        });
        let records = {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(services::functions::service::record_forever(
                state.clone(),
                stopped,
            ));
            (stop, task)
        };
        let admin_key = services::keys::service::bootstrap_admin_key(&state)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create the first admin key: {}", e.message()))?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(http::serve(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        tracing::info!(
            address = %local_addr,
            database = state.db.dialect().name(),
            bus = if state.config.redis_url.is_some() { "redis" } else { "in-process" },
            "Nimbus is serving"
        );
        Ok(Server {
            state,
            local_addr,
            admin_key,
            stop: Some(stop),
            serving,
            invalidations,
            presence,
            uploads,
            structure,
            pruning,
            jobs,
            consumers,
            usage,
            records,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The secret of the admin key created by this start, when it was the first.
    pub fn first_admin_key(&self) -> Option<&str> {
        self.admin_key.as_deref()
    }

    /// Stops accepting, lets in-flight requests finish, and closes everything.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = (&mut self.serving).await;
        self.invalidations.abort();
        self.presence.abort();
        self.uploads.abort();
        self.structure.abort();
        self.pruning.abort();
        self.jobs.abort();
        // Requests are done: the last counts are flushed.
        if let Some((stop, task)) = self.usage.take() {
            let _ = stop.send(true);
            Consumers::finish(task).await;
        }
        // Requests are done: the execution records still queued are written.
        let (stop, task) = self.records;
        let _ = stop.send(true);
        Consumers::finish(task).await;
        self.consumers.stop().await;
        self.state.close().await;
        served
            .context("the server task failed")?
            .context("serving failed")
    }
}

/// Registers the handler of every kind of job and starts this replica's job
/// worker.
async fn start_jobs(state: &AppState) -> JoinHandle<()> {
    use services::webhooks;
    let mut handlers: std::collections::HashMap<&'static str, Arc<dyn jobs::Handler>> =
        std::collections::HashMap::new();
    handlers.insert(mail::queue::KIND, Arc::new(mail::queue::MailJobs));
    handlers.insert(
        webhooks::service::KIND,
        Arc::new(webhooks::deliver::WebhookJobs),
    );
    handlers.insert(
        webhooks::service::PRUNE_KIND,
        Arc::new(webhooks::deliver::PruneDeliveries),
    );
    {
        use services::users::service::{PRUNE_LOGS_KIND, PruneActivityLogs};
        handlers.insert(PRUNE_LOGS_KIND, Arc::new(PruneActivityLogs));
        if let Err(err) = state
            .jobs
            .schedule(
                state,
                PRUNE_LOGS_KIND,
                "",
                PRUNE_LOGS_KIND,
                serde_json::Value::Null,
                "37 * * * *",
            )
            .await
        {
            tracing::warn!(error = %err, "cannot set up the pruning of activity logs");
        }
    }
    {
        use services::functions::{execute, service};
        handlers.insert(service::EXECUTE_KIND, Arc::new(execute::ExecuteJobs));
        handlers.insert(service::SCHEDULE_KIND, Arc::new(execute::ScheduleJobs));
        handlers.insert(service::PRUNE_KIND, Arc::new(execute::PruneExecutions));
        state
            .functions
            .set_gateway(Arc::new(http::functions::FunctionsGateway));
        if let Err(err) = state
            .jobs
            .schedule(
                state,
                service::PRUNE_KIND,
                "",
                service::PRUNE_KIND,
                serde_json::Value::Null,
                "29 * * * *",
            )
            .await
        {
            tracing::warn!(error = %err, "cannot set up the pruning of function executions");
        }
    }
    state.jobs.set_handlers(handlers);
    if let Err(err) = state
        .jobs
        .schedule(
            state,
            webhooks::service::PRUNE_KIND,
            "",
            webhooks::service::PRUNE_KIND,
            serde_json::Value::Null,
            "23 * * * *",
        )
        .await
    {
        tracing::warn!(error = %err, "cannot set up the pruning of webhook deliveries");
    }
    tokio::spawn(jobs::work_forever(state.clone()))
}

/// Starts this replica's share of the event log consumers (each runs on the one
/// replica holding its lease), where this replica runs background work at all.
fn start_consumers(state: &AppState) -> Consumers {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let consumers: Vec<Arc<dyn bus::consumer::Consumer>> = vec![
        Arc::new(services::webhooks::Deliveries),
        Arc::new(services::functions::Triggers::default()),
    ];
    let lease = Duration::from_secs(state.config.consumer_lease_secs);
    let tasks = if state.config.jobs_concurrency == 0 {
        Vec::new()
    } else {
        consumers
            .into_iter()
            .map(|consumer| {
                tokio::spawn(bus::consumer::run(
                    state.clone(),
                    consumer,
                    lease,
                    stopped.clone(),
                ))
            })
            .collect()
    };
    Consumers { stop, tasks }
}

/// The key an event name such as `keys.K.delete` is about.
fn key_of(event_name: &str) -> Option<&str> {
    let mut parts = event_name.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("keys"), Some(id), Some(_), None) if id != "*" => Some(id),
        _ => None,
    }
}

/// Drops cached project and session state whenever any replica logs a change (the
/// relay delivers every logged change, a missed notification within a second, so a
/// Redis outage loses none), and all of it when this replica's own broadcast
/// dropped messages.
async fn follow_project_changes(state: AppState) {
    let mut messages = state.bus.subscribe();
    loop {
        match messages.recv().await {
            Ok(message) => match &message.message {
                BusMessage::ProjectChanged { project_id } => {
                    state.schemas.invalidate(project_id).await;
                    state.sessions.evict_project(project_id);
                    state.functions.function_changed(project_id, None);
                }
                BusMessage::UserChanged {
                    project_id,
                    user_id,
                } => {
                    state.sessions.evict_user(project_id, user_id);
                }
                // A console administrator signed out or changed: connections
                // acting with their sessions here re-check them.
                BusMessage::AdminChanged { email } => {
                    state.sessions.key_changed(&auth::console_key_id(email));
                }
                // Recorded by the presence book as the bus heard it.
                BusMessage::Presence(_) => {}
                BusMessage::Event(event) => {
                    // A key deleted (or changed) on any replica: connections
                    // holding it here re-check it.
                    for key_id in event.events.iter().filter_map(|name| key_of(name)) {
                        state.sessions.key_changed(key_id);
                    }
                    // A function, its variables or deployments changed: executions
                    // here read them again.
                    state.functions.heard(event);
                }
                // Changes logged during the gap reach this loop from the relay,
                // which reads the log: nothing cached needs dropping, and no
                // connection need re-check its credential against the database.
                // Presence is not logged: it is reconciled.
                BusMessage::Resumed => services::realtime::presence::reconcile(&state).await,
            },
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                // Changes may have been missed: forget everything rather than serve stale.
                state.schemas.invalidate_all().await;
                state.sessions.clear();
                state.functions.forget_ready();
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The module graph read from the source: which top-level module (or service)
/// names which through `crate::` paths, `use` lines and paths in code alike.
/// Layers are checked on this graph rather than trusted to review: nothing below
/// `services` names a service, no service names `http`, and no two modules or
/// services depend on each other, directly or around a loop.
#[cfg(test)]
mod architecture {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// Edges between services that still close a loop, to be broken by moving code
    /// to its owner; the test fails once one is gone, so the list only shrinks. No
    /// other edge may close a loop.
    const STILL_TO_BREAK: &[(&str, &str, &str)] = &[];

    /// Modules that may name services: the crate root wires them, `http` calls them.
    const ABOVE_SERVICES: &[&str] = &["http"];

    type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

    pub(crate) fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The node a file belongs to: its top-level module, or `services::NAME` for a
    /// service's folder (`services` alone for the registry); `None` for the root.
    fn node_of_file(relative: &Path) -> Option<String> {
        let parts: Vec<String> = relative
            .with_extension("")
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        match parts.as_slice() {
            [root] if root == "lib" || root == "main" => None,
            [services, name, ..] if services == "services" && name != "mod" => {
                Some(format!("services::{name}"))
            }
            [first, ..] => Some(first.clone()),
            [] => None,
        }
    }

    /// The node a `crate::` path names; `None` for an item of the crate root.
    fn node_of_path(src: &Path, path: &[&str]) -> Option<String> {
        let first = *path.first()?;
        if first == "services" {
            if let Some(name) = path.get(1)
                && src.join("services").join(name).is_dir()
            {
                return Some(format!("services::{name}"));
            }
            return Some("services".into());
        }
        (src.join(format!("{first}.rs")).is_file() || src.join(first).is_dir())
            .then(|| first.to_string())
    }

    /// The text without comments, so doc links and prose name nothing.
    fn without_comments(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find("//") {
            // `//` inside a string (a URL) is not a comment: keep the line whole
            // when an odd number of quotes precede it on its line.
            let line_start = rest[..at].rfind('\n').map_or(0, |i| i + 1);
            let quotes = rest[line_start..at].matches('"').count();
            if quotes % 2 == 1 {
                out.push_str(&rest[..at + 2]);
                rest = &rest[at + 2..];
                continue;
            }
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            rest = &rest[rest.find('\n').unwrap_or(rest.len())..];
        }
        out.push_str(rest);
        out
    }

    /// Expands a `use` tree (`a::{b, c::{d, e}}`) into its paths.
    fn expand(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
        let segments = |path: &str| -> Vec<String> {
            path.split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        let mut depth = 0;
        let mut item = String::new();
        let mut items = Vec::new();
        for ch in tree.chars() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if ch == ',' && depth == 0 {
                items.push(std::mem::take(&mut item));
            } else {
                item.push(ch);
            }
        }
        items.push(item);
        for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
            let mut path = prefix.to_vec();
            if let Some(open) = item.find('{') {
                let close = item.rfind('}').unwrap_or(item.len());
                path.extend(segments(&item[..open]));
                expand(&path, &item[open + 1..close], out);
            } else {
                let item = item.split_whitespace().next().unwrap_or(item);
                path.extend(segments(item));
                out.push(path);
            }
        }
    }

    /// Every `crate::` path of a file: those of `use` trees, expanded, and those
    /// written out in code.
    fn crate_paths(text: &str) -> Vec<Vec<String>> {
        let text = without_comments(text);
        let mut paths = Vec::new();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().next_back();
            let after = &rest[at + "crate::".len()..];
            let is_use = rest[..at].trim_end().ends_with("use");
            rest = after;
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            if is_use {
                let end = after.find(';').unwrap_or(after.len());
                expand(&[], &after[..end], &mut paths);
            } else {
                let path: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                paths.push(
                    path.split("::")
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                );
            }
        }
        paths
    }

    /// node → the nodes it names → the files that name them.
    fn graph() -> Graph {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut graph = Graph::new();
        for file in files {
            let relative = file.strip_prefix(&src).unwrap();
            let Some(from) = node_of_file(relative) else {
                continue;
            };
            let text = std::fs::read_to_string(&file).unwrap();
            for path in crate_paths(&text) {
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                if let Some(to) = node_of_path(&src, &path)
                    && to != from
                {
                    graph
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_default()
                        .insert(relative.display().to_string());
                }
            }
        }
        graph
    }

    fn is_service(node: &str) -> bool {
        node == "services" || node.starts_with("services::")
    }

    /// A loop in `graph`, as the nodes around it, if there is one.
    fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Open,
            Done,
        }
        fn visit(
            graph: &Graph,
            node: &str,
            marks: &mut BTreeMap<String, Mark>,
            stack: &mut Vec<String>,
        ) -> Option<Vec<String>> {
            match marks.get(node) {
                Some(Mark::Done) => return None,
                Some(Mark::Open) => {
                    let start = stack.iter().position(|n| n == node).unwrap();
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(node.to_string());
                    return Some(cycle);
                }
                None => {}
            }
            marks.insert(node.to_string(), Mark::Open);
            stack.push(node.to_string());
            for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
                if let Some(cycle) = visit(graph, next, marks, stack) {
                    return Some(cycle);
                }
            }
            stack.pop();
            marks.insert(node.to_string(), Mark::Done);
            None
        }
        let mut marks = BTreeMap::new();
        for node in graph.keys() {
            if let Some(cycle) = visit(graph, node, &mut marks, &mut Vec::new()) {
                return Some(cycle);
            }
        }
        None
    }

    #[test]
    fn reads_use_trees_and_paths_in_code() {
        let paths = crate_paths(
            "use crate::a::{b, c::{d as e, f}};\n// crate::commented::out\nlet x = crate::g::h(1); $crate::i::j;",
        );
        let paths: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
        assert_eq!(paths, ["a::b", "a::c::d", "a::c::f", "g::h"]);
    }

    #[test]
    fn nothing_below_services_names_a_service_and_no_service_names_http() {
        let graph = graph();
        let mut wrong = Vec::new();
        for (from, edges) in &graph {
            for (to, files) in edges {
                let below_names_service =
                    !is_service(from) && !ABOVE_SERVICES.contains(&from.as_str()) && is_service(to);
                let service_names_http = is_service(from) && to == "http";
                if below_names_service || service_names_http {
                    wrong.push(format!("{from} -> {to} (in {files:?})"));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "these imports cross the layers the wrong way:\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn no_modules_or_services_depend_on_each_other_around_a_loop() {
        let mut graph = graph();
        for (from, to, why) in STILL_TO_BREAK {
            let removed = graph.get_mut(*from).and_then(|edges| edges.remove(*to));
            assert!(
                removed.is_some(),
                "{from} no longer names {to} ({why}): take it off STILL_TO_BREAK"
            );
        }
        if let Some(cycle) = find_cycle(&graph) {
            let steps: Vec<String> = cycle
                .windows(2)
                .map(|pair| {
                    format!(
                        "{} -> {} (in {:?})",
                        pair[0], pair[1], graph[&pair[0]][&pair[1]]
                    )
                })
                .collect();
            panic!(
                "the module graph has a cycle: {}\n{}",
                cycle.join(" -> "),
                steps.join("\n")
            );
        }
    }
}
