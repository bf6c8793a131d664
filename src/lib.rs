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
/// Per-project schema assembly, caching, limits and shared GraphQL types.
pub mod graphql;
/// The HTTP and WebSocket surface: router, GraphQL transport, health, metrics, playground.
pub mod http;
/// Outgoing email: SMTP, or an outbox folder for development.
pub mod mail;
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
    pub schemas: ProjectSchemas,
    pub sessions: auth::session_cache::SessionCache,
    pub rate_limiter: auth::rate_limit::RateLimiter,
    /// Signs and verifies the short-lived JWTs of `createJWT`.
    pub jwt: auth::jwt::JwtKeys,
    /// The server secret, for signing and encryption.
    pub secret: String,
    /// Calls to third parties (OAuth2 providers): no redirects followed, bounded time.
    pub http: reqwest::Client,
    /// Who is on which presence channel, on every replica.
    pub presence: services::realtime::presence::PresenceRegistry,
    /// Parsed query documents by their text.
    pub parsed_queries: graphql::parsed::ParsedQueries,
    /// The subscription operations WebSocket connections watch with, one of each.
    pub subscription_shapes: http::ws::Shapes,
    /// The WebSockets and subscriptions each client address holds here.
    pub ws_clients: http::ws::SocketsPerClient,
    /// Shared inserts of single creates (MariaDB; SQLite has group commit).
    pub creates: Option<services::databases::create_batch::CreateBatches>,
    /// Turns to render image previews, and the queue for them.
    pub preview_turns: services::storage::preview::Turns,
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
        let db = Db::connect(&config, CONNECT_TIMEOUT).await?;
        db.migrate().await?;
        services::databases::upgrade::permission_tables(&db).await?;
        let bus = match &config.redis_url {
            Some(url) => Bus::redis(url, &config.redis_prefix).await?,
            None => Bus::in_process(),
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
        let creates = (db.dialect() == db::Dialect::MySql).then(|| {
            // A quarter of the document connections at most hold a shared insert.
            let max_flights = (config.database_max_connections as usize * 3 / 4) / 4;
            services::databases::create_batch::CreateBatches::new(db.clone(), max_flights)
        });
        let preview_turns =
            services::storage::preview::Turns::new(config.preview_slots(), config.preview_queue);
        let parsed_queries =
            graphql::parsed::ParsedQueries::new(graphql::limits::QueryLimits::of(&config));
        let state = AppState(Arc::new(AppInner {
            creates,
            preview_turns,
            config,
            db,
            bus,
            files,
            mailer,
            schemas: ProjectSchemas::default(),
            sessions: Default::default(),
            rate_limiter,
            jwt: auth::jwt::JwtKeys::new(&secret),
            secret,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(15))
                .user_agent(concat!("nimbus/", env!("CARGO_PKG_VERSION")))
                .build()
                .context("cannot build the HTTP client")?,
            presence: Default::default(),
            parsed_queries,
            subscription_shapes: Default::default(),
            ws_clients: Default::default(),
        }));
        services::projects::service::ensure_default_project(&state)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create the default project: {}", e.message()))?;
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
        tokio::spawn(http::multipart::sweep_spool(
            state.config.upload_spool_dir(),
        ));
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
        self.state.close().await;
        served
            .context("the server task failed")?
            .context("serving failed")
    }
}

/// The key an event name such as `keys.K.delete` is about.
fn key_of(event_name: &str) -> Option<&str> {
    let mut parts = event_name.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("keys"), Some(id), Some(_), None) if id != "*" => Some(id),
        _ => None,
    }
}

/// Drops cached project and session state whenever any replica announces a change,
/// and all of it after a gap in the announcements.
async fn follow_project_changes(state: AppState) {
    let mut messages = state.bus.subscribe();
    loop {
        match messages.recv().await {
            Ok(message) => match &message.message {
                BusMessage::ProjectChanged { project_id } => {
                    state.schemas.invalidate(project_id).await;
                    state.sessions.evict_project(project_id);
                }
                BusMessage::UserChanged {
                    project_id,
                    user_id,
                } => {
                    state.sessions.evict_user(project_id, user_id);
                }
                BusMessage::Presence(presence) => state.presence.apply(presence),
                BusMessage::Event(event) => {
                    // A key deleted (or changed) on any replica: connections
                    // holding it here re-check it.
                    for key_id in event.events.iter().filter_map(|name| key_of(name)) {
                        state.sessions.key_changed(key_id);
                    }
                }
                BusMessage::Resumed => {
                    state.schemas.invalidate_all().await;
                    state.sessions.clear();
                }
            },
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                // Changes may have been missed: forget everything rather than serve stale.
                state.schemas.invalidate_all().await;
                state.sessions.clear();
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
