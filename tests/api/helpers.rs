//! Starting servers for tests and talking to them.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use nimbus::Server;
use nimbus::config::Config;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// How long a test waits for anything that should arrive.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub url: String,
    pub ws_url: String,
    pub admin_key: String,
    pub server: Option<Server>,
    pub client: reqwest::Client,
    pub config: Config,
    _dir: tempfile::TempDir,
}

/// Where the suite's shared dependencies are, from the environment.
pub fn test_database_server() -> Option<String> {
    std::env::var("NIMBUS_TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
}

pub fn test_redis() -> Option<String> {
    std::env::var("NIMBUS_TEST_REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty())
}

/// Where tests keep files: an S3-compatible bucket when `NIMBUS_TEST_STORAGE` is an
/// `s3://` URL (each server under a prefix of its own), else the data dir.
pub fn test_storage() -> Option<String> {
    let base = std::env::var("NIMBUS_TEST_STORAGE")
        .ok()
        .filter(|v| !v.is_empty())?;
    let prefix = nimbus::db::ids::generate();
    Some(match base.split_once('?') {
        Some((location, query)) => format!("{}/{prefix}?{query}", location.trim_end_matches('/')),
        None => format!("{}/{prefix}", base.trim_end_matches('/')),
    })
}

/// A fresh, empty MariaDB database on the test server, when one is configured.
pub async fn fresh_database() -> Option<String> {
    use sqlx::Connection as _;
    let server = test_database_server()?;
    let name = format!("nimbus_test_{}", nimbus::db::ids::generate());
    let mut conn = sqlx::mysql::MySqlConnection::connect(&server)
        .await
        .expect("connect to the test MariaDB server");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    Some(format!("{}/{name}", server.trim_end_matches('/')))
}

/// A configuration for a test server: port 0, a temp data dir, the test database
/// (fresh) and Redis (with a unique prefix, so tests never see each other's events).
pub async fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::with_data_dir(dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.database_url = fresh_database().await;
    config.redis_url = test_redis();
    config.storage = test_storage();
    config.redis_prefix = format!("nimbus-test-{}", nimbus::db::ids::generate());
    config.database_max_connections = 8;
    config
}

/// Server logs go to the test's output (shown for failing tests); `NIMBUS_TEST_LOG`
/// sets the filter (default `warn`).
fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let filter = std::env::var("NIMBUS_TEST_LOG").unwrap_or_else(|_| "warn".into());
        // The statement counter sees every statement and operation span, whatever
        // the printed logs show.
        let counted = tracing_subscriber::filter::Targets::new()
            .with_target("sqlx::query", tracing::Level::TRACE)
            .with_target("nimbus", tracing::Level::INFO);
        let _ = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(tracing_subscriber::EnvFilter::new(filter)),
            )
            .with(crate::statements::StatementCounter.with_filter(counted))
            .try_init();
    });
}

pub async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path()).await;
    spawn_with(config, dir).await
}

/// Starts a server with this configuration; the first start must create an admin key.
pub async fn spawn_with(config: Config, dir: tempfile::TempDir) -> TestApp {
    init_logging();
    let server = Server::start(config.clone()).await.expect("server starts");
    let admin_key = server
        .first_admin_key()
        .expect("a fresh database gets a first admin key")
        .to_string();
    from_server(server, admin_key, config, dir)
}

pub fn from_server(
    server: Server,
    admin_key: String,
    config: Config,
    dir: tempfile::TempDir,
) -> TestApp {
    let addr = server.local_addr();
    TestApp {
        url: format!("http://{addr}"),
        ws_url: format!("ws://{addr}/v1/graphql/ws"),
        admin_key,
        server: Some(server),
        client: reqwest::Client::new(),
        config,
        _dir: dir,
    }
}

/// A GraphQL answer: HTTP status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The `extensions.code` of the first error.
    pub fn code(&self) -> &str {
        self.body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or("<none>")
    }

    /// Panics with the whole answer unless it has data and no errors.
    pub fn ok(self) -> Value {
        assert!(
            self.body.get("errors").is_none(),
            "unexpected errors: {:#}",
            self.body
        );
        self.body["data"].clone()
    }
}

impl TestApp {
    pub async fn post(&self, body: Value, headers: &[(&str, &str)]) -> Answer {
        let mut request = self
            .client
            .post(format!("{}/v1/graphql", self.url))
            .json(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, body }
    }

    /// The body of a GET of `path` (e.g. `/metrics`), as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A counter or gauge from `/metrics`, labels included in `name` (0 before its
    /// first change). Every server of the test binary adds to the same ones.
    pub async fn metric(&self, name: &str) -> f64 {
        self.get_text("/metrics")
            .await
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// A multipart GraphQL request (uploads) with `boundary`, as Apollo's and urql's
    /// upload links send it; the caller adds its credential and body.
    pub fn multipart_post(&self, boundary: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/v1/graphql", self.url))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .header("apollo-require-preflight", "true")
    }

    /// A query as the admin, on the default project.
    pub async fn admin(&self, query: &str, variables: Value) -> Answer {
        self.post(
            json!({"query": query, "variables": variables}),
            &[("x-nimbus-key", &self.admin_key)],
        )
        .await
    }

    /// A query with a given key and project.
    pub async fn as_key(&self, key: &str, project: &str, query: &str, variables: Value) -> Answer {
        self.post(
            json!({"query": query, "variables": variables}),
            &[("x-nimbus-key", key), ("x-nimbus-project", project)],
        )
        .await
    }

    /// A query as a signed-in user, with the session secret as a bearer token.
    pub async fn as_session(&self, secret: &str, query: &str, variables: Value) -> Answer {
        let bearer = format!("Bearer {secret}");
        self.post(
            json!({"query": query, "variables": variables}),
            &[("authorization", &bearer)],
        )
        .await
    }

    /// Creates a key in `project` with `scopes` as the admin; returns its secret.
    pub async fn create_key(&self, project: &str, scopes: &[&str]) -> String {
        let data = self
            .admin(
                "mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret apiKey { id } } }",
                json!({"input": {"projectId": project, "name": "test", "scopes": scopes}}),
            )
            .await
            .ok();
        data["createApiKey"]["secret"].as_str().unwrap().to_string()
    }

    /// Signs up a user with `email` (password `db-password-1`) and signs them in;
    /// returns the session secret.
    pub async fn signed_in(&self, email: &str) -> String {
        self.post(json!({"query": "mutation($e: String!) { createAccount(input: {email: $e, password: \"db-password-1\"}) { id } }", "variables": {"e": email}}), &[])
            .await
            .ok();
        self.password_session(email, "db-password-1").await
    }

    /// A new session of the user with `email` and `password`: its secret.
    pub async fn password_session(&self, email: &str, password: &str) -> String {
        let signed = self
            .post(json!({"query": "mutation($e: String!, $p: String!) { createEmailPasswordSession(input: {email: $e, password: $p}) { secret } }", "variables": {"e": email, "p": password}}), &[])
            .await
            .ok();
        signed["createEmailPasswordSession"]["secret"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn create_project(&self, id: &str) {
        self.admin(
            "mutation($id: ID!) { createProject(input: {id: $id, name: \"Test\"}) { id } }",
            json!({"id": id}),
        )
        .await
        .ok();
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// A GraphQL WebSocket client speaking one of the two subprotocols.
pub struct WsClient {
    pub socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    pub legacy: bool,
}

impl WsClient {
    /// Connects with `graphql-transport-ws` (or the legacy `graphql-ws` when `legacy`).
    pub async fn connect(url: &str, legacy: bool) -> WsClient {
        let mut request = url.into_client_request().unwrap();
        let protocol = if legacy {
            "graphql-ws"
        } else {
            "graphql-transport-ws"
        };
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().unwrap());
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket connects");
        assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
        WsClient { socket, legacy }
    }

    pub async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
    }

    /// The next JSON message, skipping pings/keep-alives; None when the socket closed
    /// (with the close frame's code and reason in the Err).
    pub async fn next_json(&mut self) -> Result<Value, (u16, String)> {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a message within the wait")
                .unwrap_or(Ok(Message::Close(None)));
            match message {
                Ok(Message::Text(text)) => {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    if matches!(value["type"].as_str(), Some("ka" | "ping" | "pong")) {
                        continue;
                    }
                    return Ok(value);
                }
                Ok(Message::Close(frame)) => {
                    return Err(frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new())));
                }
                Ok(_) => continue,
                Err(err) => return Err((1006, err.to_string())),
            }
        }
    }

    /// Sends `ping` and waits for the `pong` (graphql-transport-ws).
    pub async fn ping_pong(&mut self) {
        self.send(json!({"type": "ping"})).await;
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a pong within the wait")
                .expect("socket open")
                .expect("no socket error");
            if let Message::Text(text) = message
                && serde_json::from_str::<Value>(&text).unwrap()["type"] == "pong"
            {
                return;
            }
        }
    }

    /// `connection_init` with this payload; returns the server's answer.
    pub async fn init(&mut self, payload: Value) -> Result<Value, (u16, String)> {
        self.send(json!({"type": "connection_init", "payload": payload}))
            .await;
        self.next_json().await
    }

    pub async fn subscribe(&mut self, id: &str, query: &str) {
        let kind = if self.legacy { "start" } else { "subscribe" };
        self.send(json!({"id": id, "type": kind, "payload": {"query": query}}))
            .await;
    }
}

/// How to start a [`ServeProcess`].
#[derive(Debug, Default)]
pub struct ServeOptions {
    /// The data dir (default: a fresh one); the same as the test server's shares
    /// its local file store.
    pub data_dir: Option<std::path::PathBuf>,
    /// An `RLIMIT_FSIZE` for the process, in bytes: writes past it fail with EFBIG,
    /// as on a full disk.
    pub file_size_limit: Option<u64>,
    /// Settings on top of the shared ones, e.g. `("NIMBUS_PREVIEW_CONCURRENCY", "2")`.
    pub env: Vec<(&'static str, String)>,
}

/// A `nimbus serve` process sharing a test server's database, Redis (when it has
/// one) and secret: a replica that can be killed without warning, as a crash would.
pub struct ServeProcess {
    child: std::process::Child,
    pub url: String,
    pub ws_url: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl ServeProcess {
    pub async fn start(app: &TestApp, options: ServeOptions) -> ServeProcess {
        let config = &app.config;
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("replica.log");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_nimbus"));
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("NIMBUS_")) {
            command.env_remove(name);
        }
        command
            .arg("serve")
            .env("NIMBUS_LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "NIMBUS_DATA_DIR",
                options.data_dir.as_deref().unwrap_or(dir.path()),
            )
            .env("NIMBUS_DATABASE_URL", config.effective_database_url())
            .env("NIMBUS_REDIS_PREFIX", &config.redis_prefix)
            .env(
                "NIMBUS_SECRET",
                config.secret.as_deref().expect("replicas share a secret"),
            )
            .env(
                "NIMBUS_PRESENCE_TIMEOUT",
                config.presence_timeout_secs.to_string(),
            )
            .env("NIMBUS_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(redis) = &config.redis_url {
            command.env("NIMBUS_REDIS_URL", redis);
        }
        if let Some(storage) = &config.storage {
            command.env("NIMBUS_STORAGE", storage);
        }
        for (name, value) in &options.env {
            command.env(name, value);
        }
        if let Some(limit) = options.file_size_limit {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: between fork and exec only async-signal-safe calls are made.
            unsafe {
                command.pre_exec(move || {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let limit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut replica = ServeProcess {
            child: command.spawn().expect("nimbus starts"),
            url: format!("http://127.0.0.1:{port}"),
            ws_url: format!("ws://127.0.0.1:{port}/v1/graphql/ws"),
            log,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let health = app.client.get(format!("{}/health", replica.url)).send();
            if health.await.is_ok_and(|r| r.status() == 200) {
                return replica;
            }
            if let Some(status) = replica.child.try_wait().unwrap() {
                panic!("the replica exited ({status}): {}", replica.log_text());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the replica did not come up: {}",
                replica.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id, e.g. to read its `/proc/PID/status`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no LEAVE, no goodbye to Redis, heartbeats just stop.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP connection to `app` from a client that reads slowly: its receive window and
/// segment size are small, so the server's socket buffers for it fill after tens of
/// kilobytes (loopback's defaults would take megabytes).
pub async fn small_window_connection(app: &TestApp) -> tokio::net::TcpStream {
    use std::os::fd::AsRawFd as _;
    let address: std::net::SocketAddr = app.url.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let segment: libc::c_int = 536;
    // SAFETY: sets one integer option on a socket this function owns.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&segment as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "TCP_MAXSEG: {}", std::io::Error::last_os_error());
    socket.connect(address).await.expect("connects")
}

/// The code an authenticator app shows now for a TOTP secret in base32.
pub fn totp_now(secret: &str) -> String {
    let secret = nimbus::auth::totp::TotpSecret::from_base32(secret).unwrap();
    nimbus::auth::totp::code_at(&secret, chrono::Utc::now().timestamp() as u64)
}

/// Adds a TOTP authenticator to the session's user and verifies it with a code;
/// returns the authenticator's secret.
pub async fn enrol_totp(app: &TestApp, session: &str) -> String {
    let added = app
        .as_session(
            session,
            "mutation { createMfaAuthenticator { secret } }",
            json!({}),
        )
        .await
        .ok();
    let secret = added["createMfaAuthenticator"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    app.as_session(
        session,
        "mutation($c: String!) { verifyMfaAuthenticator(input: {code: $c}) }",
        json!({"c": totp_now(&secret)}),
    )
    .await
    .ok();
    secret
}
