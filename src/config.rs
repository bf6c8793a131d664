//! Server configuration: every setting is a `nimbus serve` flag and a `NIMBUS_*`
//! environment variable, with defaults that start a working server on a laptop.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Settings of a Nimbus server. Doc comments become `nimbus serve --help`.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address and port the HTTP and WebSocket server listens on.
    #[arg(long, env = "NIMBUS_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Directory for the SQLite database, local file storage and generated secrets.
    #[arg(long, env = "NIMBUS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Database URL: `sqlite://PATH` or `mysql://USER:PASSWORD@HOST:PORT/DB` (MariaDB).
    /// Unset: a SQLite file `nimbus.db` in the data directory.
    #[arg(long, env = "NIMBUS_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Maximum number of pooled database connections.
    #[arg(long, env = "NIMBUS_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Milliseconds one database statement may run before the database stops it
    /// and the request answers `DATABASE_TIMEOUT` (0: no limit). On MariaDB every
    /// statement but structure changes and migrations; on SQLite, statements that
    /// only read.
    #[arg(
        long,
        env = "NIMBUS_DATABASE_STATEMENT_TIMEOUT_MS",
        default_value_t = 15_000
    )]
    pub database_statement_timeout_ms: u64,

    /// Redis URL (`redis://HOST:PORT`) for the event bus shared by replicas.
    /// Unset: an in-process bus (one replica).
    #[arg(long, env = "NIMBUS_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis channel Nimbus uses, so deployments can share one Redis.
    #[arg(long, env = "NIMBUS_REDIS_PREFIX", default_value = "nimbus")]
    pub redis_prefix: String,

    /// Server secret used to sign and encrypt (at least 32 characters).
    /// Unset: generated on first start and kept in `DATA_DIR/secret`; replicas must share it.
    #[arg(long, env = "NIMBUS_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// SMTP server for outgoing email: `smtp://[user:password@]host[:port]` (STARTTLS
    /// when offered; required with credentials) or `smtps://…` (TLS). Unset: messages
    /// are written as .eml files to `DATA_DIR/outbox`.
    #[arg(long, env = "NIMBUS_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// Sender of outgoing email, e.g. `Acme <no-reply@acme.example>`.
    #[arg(
        long,
        env = "NIMBUS_MAIL_FROM",
        default_value = "Nimbus <no-reply@nimbus.localhost>"
    )]
    pub mail_from: String,

    /// Abuse limits on sign-up, sign-in and password changes (e.g. 10 sign-ins per
    /// email and IP per hour), shared by replicas through Redis. `false` turns them off.
    #[arg(long, env = "NIMBUS_RATE_LIMITS", default_value_t = true, action = clap::ArgAction::Set)]
    pub rate_limits: bool,

    /// Mark session cookies `Secure` (sent over HTTPS only): turn on behind TLS.
    /// Implied by an `https://` public URL.
    #[arg(long, env = "NIMBUS_COOKIE_SECURE", default_value_t = false, action = clap::ArgAction::Set)]
    pub cookie_secure: bool,

    /// Seconds a console administrator's session lasts unused: a console left idle
    /// this long must sign in again.
    #[arg(long, env = "NIMBUS_CONSOLE_SESSION_IDLE", default_value_t = 12 * 3600, value_parser = clap::value_parser!(u64).range(60..))]
    pub console_session_idle_secs: u64,

    /// Seconds a console administrator's session lasts at most, however used.
    #[arg(long, env = "NIMBUS_CONSOLE_SESSION_LIFETIME", default_value_t = 7 * 24 * 3600, value_parser = clap::value_parser!(u64).range(60..))]
    pub console_session_lifetime_secs: u64,

    /// The address browsers reach this server at (`https://api.example.com`): the base
    /// of the OAuth2 callback URL registered with providers, and of file URLs.
    /// Required for OAuth2 sign-in (the request's `Host` header is the client's to
    /// choose, so it is never used); with `https://`, OAuth2 cookies are `Secure`.
    #[arg(long, env = "NIMBUS_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Log filter, in `tracing` env-filter syntax (`info`, `nimbus=debug,info`, ...).
    #[arg(long, env = "NIMBUS_LOG", default_value = "info")]
    pub log: String,

    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, env = "NIMBUS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Whether GraphQL introspection (and so the playground's docs and code generators) is on.
    #[arg(long, env = "NIMBUS_INTROSPECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub introspection: bool,

    /// Deepest selection nesting a query may have.
    #[arg(long, env = "NIMBUS_GRAPHQL_MAX_DEPTH", default_value_t = 15)]
    pub graphql_max_depth: usize,

    /// Highest complexity a query may have: the selections it runs, fragments
    /// expanded, each counting one (a list's field counts once, whatever its length;
    /// `graphql_max_nodes` bounds what lists return).
    #[arg(long, env = "NIMBUS_GRAPHQL_MAX_COMPLEXITY", default_value_t = 5000)]
    pub graphql_max_complexity: usize,

    /// Most nodes an operation's paged lists may return, each list's page size
    /// (`first`, `last`, else 20) times the nodes of the lists it is nested in.
    #[arg(long, env = "NIMBUS_GRAPHQL_MAX_NODES", default_value_t = 100_000)]
    pub graphql_max_nodes: u64,

    /// Milliseconds a query operation may run before it is stopped with
    /// `OPERATION_TIMEOUT` (0: no limit). Mutations are not stopped halfway; each
    /// of their statements has its own deadline (`NIMBUS_DATABASE_STATEMENT_TIMEOUT_MS`).
    #[arg(
        long,
        env = "NIMBUS_GRAPHQL_QUERY_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub graphql_query_timeout_ms: u64,

    /// Most bytes of values one query operation's answer may hold (strings and
    /// numbers as they are produced, names aside); past it the operation is stopped
    /// with `RESPONSE_TOO_LARGE`. 0 for no such limit.
    #[arg(
        long,
        env = "NIMBUS_GRAPHQL_MAX_RESPONSE_BYTES",
        default_value_t = 64 << 20
    )]
    pub graphql_max_response_bytes: u64,

    /// Most aliased fields a query document may contain.
    #[arg(long, env = "NIMBUS_GRAPHQL_MAX_ALIASES", default_value_t = 100)]
    pub graphql_max_aliases: usize,

    /// Largest GraphQL query text accepted, in bytes.
    #[arg(long, env = "NIMBUS_GRAPHQL_MAX_QUERY_BYTES", default_value_t = 256 * 1024)]
    pub graphql_max_query_bytes: usize,

    /// Most values (each number, string, list, object…) the variables of one request
    /// may hold. Each use of a variable in the operation is a copy of it: the uses
    /// together may add up to four times this.
    #[arg(
        long,
        env = "NIMBUS_GRAPHQL_MAX_VARIABLE_VALUES",
        default_value_t = 100_000
    )]
    pub graphql_max_variable_values: u64,

    /// Most bytes of text (strings, enum values, object keys) the variables of one
    /// request may hold; their uses together may add up to four times this.
    #[arg(long, env = "NIMBUS_GRAPHQL_MAX_VARIABLES_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub graphql_max_variables_bytes: u64,

    /// Most operations in one batched (JSON array) request; 0 turns batching off.
    #[arg(long, env = "NIMBUS_GRAPHQL_MAX_BATCH", default_value_t = 10)]
    pub graphql_max_batch: usize,

    /// Most directives on one field, fragment spread, inline fragment, variable or
    /// operation or fragment definition.
    #[arg(long, env = "NIMBUS_GRAPHQL_MAX_DIRECTIVES", default_value_t = 16)]
    pub graphql_max_directives: usize,

    /// Seconds a client has to send the head of a request (request line and headers),
    /// counted from when its connection opens and, on a kept-alive connection, from
    /// the first byte of each later request. Slower connections are closed.
    #[arg(long, env = "NIMBUS_HTTP_HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_timeout_secs: u64,

    /// Largest request head (request line, with a GET query, and headers) accepted,
    /// in bytes; a longer one is answered 431.
    #[arg(long, env = "NIMBUS_HTTP_MAX_HEAD_BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u64).range(8192..=(16 * 1024 * 1024)))]
    pub http_max_head_bytes: u64,

    /// Seconds a kept-alive connection may wait for its next request before it is closed.
    #[arg(long, env = "NIMBUS_HTTP_IDLE_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_idle_timeout_secs: u64,

    /// Seconds a request body may take: the whole body of a GraphQL request, and each
    /// wait for more of a streamed upload. A slower client gets 408 `REQUEST_TIMEOUT`.
    #[arg(long, env = "NIMBUS_HTTP_BODY_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_body_timeout_secs: u64,

    /// Seconds a response may wait for its client to read it (no byte of it can be
    /// sent meanwhile) before the connection is closed.
    #[arg(long, env = "NIMBUS_HTTP_SEND_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_send_timeout_secs: u64,

    /// Most connections open at once, HTTP and WebSocket alike; further ones are
    /// refused (503 `TOO_MANY_CONNECTIONS`). Kept below the process's open-file limit
    /// whatever it is set to.
    #[arg(long, env = "NIMBUS_MAX_CONNECTIONS", default_value_t = 16384, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    /// Most connections open at once from one client address (for IPv6, one /64
    /// network); 0 for no such cap. Behind a reverse proxy every connection comes
    /// from the proxy: raise it, or set 0 and cap clients at the proxy.
    #[arg(long, env = "NIMBUS_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 512)]
    pub max_connections_per_client: u64,

    /// Distinct operation names `/metrics` labels; the first ones seen keep their
    /// label, later ones are counted as `other`.
    #[arg(long, env = "NIMBUS_METRICS_MAX_OPERATIONS", default_value_t = 200)]
    pub metrics_max_operations: usize,

    /// Largest request body accepted on `/v1/graphql`, in bytes (multipart uploads excepted).
    #[arg(long, env = "NIMBUS_MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Largest file accepted in a multipart GraphQL upload, in bytes.
    #[arg(long, env = "NIMBUS_MAX_UPLOAD_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_upload_bytes: usize,

    /// Largest multipart GraphQL request as a whole (operations, map and every file),
    /// in bytes. Unset: `NIMBUS_MAX_UPLOAD_BYTES` plus `NIMBUS_MAX_BODY_BYTES`.
    #[arg(long, env = "NIMBUS_MAX_MULTIPART_BYTES")]
    pub max_multipart_bytes: Option<u64>,

    /// Most files one multipart GraphQL request may carry.
    #[arg(long, env = "NIMBUS_MAX_UPLOAD_FILES", default_value_t = 16)]
    pub max_upload_files: usize,

    /// Bytes a file part may have when the operation does not name the bucket it
    /// goes to (so it could not be authorised before it arrives).
    #[arg(long, env = "NIMBUS_MAX_UNAUTHORISED_UPLOAD_BYTES", default_value_t = 64 * 1024)]
    pub max_unauthorised_upload_bytes: u64,

    /// Most subscriptions one WebSocket connection may hold at once.
    #[arg(long, env = "NIMBUS_WS_MAX_SUBSCRIPTIONS", default_value_t = 100)]
    pub ws_max_subscriptions: usize,

    /// Most WebSockets open at once from one client address (for IPv6, one /64
    /// network); 0 for no such cap. Behind a reverse proxy every socket comes from
    /// the proxy: raise it, or set 0 and cap clients at the proxy.
    #[arg(long, env = "NIMBUS_WS_MAX_PER_CLIENT", default_value_t = 256)]
    pub ws_max_per_client: usize,

    /// Most subscriptions open at once over all the WebSockets of one client
    /// address; 0 for no such cap (the per-connection cap still holds). Behind a
    /// reverse proxy everyone shares the proxy's address: raise it, or set 0.
    #[arg(
        long,
        env = "NIMBUS_WS_MAX_SUBSCRIPTIONS_PER_CLIENT",
        default_value_t = 4096
    )]
    pub ws_max_subscriptions_per_client: usize,

    /// Most text the filters of one client address's subscriptions may read of
    /// each changed document, in characters, over all its WebSockets (each event
    /// is matched against every filter of its collection in memory); 0 for no
    /// such cap. Past it a subscription is refused with `TOO_MANY_SUBSCRIPTIONS`.
    #[arg(
        long,
        env = "NIMBUS_WS_MAX_FILTER_TEXT_PER_CLIENT",
        default_value_t = 64 << 20
    )]
    pub ws_max_filter_text_per_client: u64,

    /// Seconds a new WebSocket has to send `connection_init` before it is closed.
    #[arg(long, env = "NIMBUS_WS_INIT_TIMEOUT", default_value_t = 10)]
    pub ws_init_timeout_secs: u64,

    /// Seconds a message to a WebSocket client may take to be written before the
    /// client counts as not reading: its connection is then closed with
    /// `SUBSCRIBER_TOO_SLOW` and everything it held is freed.
    #[arg(long, env = "NIMBUS_WS_SEND_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub ws_send_timeout_secs: u64,

    /// Seconds a presence outlives the last word from its replica. Each replica
    /// re-announces its presences every quarter of this, and the others drop those
    /// not heard of for this long, so a replica that dies takes its presences with
    /// it. The same on every replica.
    #[arg(long, env = "NIMBUS_PRESENCE_TIMEOUT", default_value_t = 20, value_parser = clap::value_parser!(u64).range(2..))]
    pub presence_timeout_secs: u64,

    /// Most presences on one channel of a project, on this replica's view of all
    /// replicas; 0 for no cap.
    #[arg(long, env = "NIMBUS_PRESENCE_MAX_PER_CHANNEL", default_value_t = 1000)]
    pub presence_max_per_channel: usize,

    /// Most presences one signed-in user holds at once, over all channels of a
    /// project; 0 for no cap.
    #[arg(long, env = "NIMBUS_PRESENCE_MAX_PER_USER", default_value_t = 50)]
    pub presence_max_per_user: usize,

    /// Most presences announced at once from one client address (for IPv6, one /64
    /// network), over all projects; 0 for no cap. Behind a reverse proxy everyone
    /// shares the proxy's address: raise it, or set 0.
    #[arg(long, env = "NIMBUS_PRESENCE_MAX_PER_CLIENT", default_value_t = 500)]
    pub presence_max_per_client: usize,

    /// Most presences one client address may open per second on this replica (each
    /// is a JOIN, and later a LEAVE, sent to every watcher of its channel); 0 for no
    /// cap. Past it `presence` fails with `RATE_LIMITED`.
    #[arg(
        long,
        env = "NIMBUS_PRESENCE_MAX_JOINS_PER_CLIENT",
        default_value_t = 20
    )]
    pub presence_max_joins_per_client: usize,

    /// Presence updates one client address may send per second on this replica
    /// (each presence an `updatePresence` changes counts one); 0 for no cap.
    #[arg(
        long,
        env = "NIMBUS_PRESENCE_MAX_UPDATES_PER_CLIENT",
        default_value_t = 50
    )]
    pub presence_max_updates_per_client: usize,

    /// Largest state a presence may carry, in bytes of JSON.
    #[arg(long, env = "NIMBUS_PRESENCE_MAX_STATE_BYTES", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(2..=65_536))]
    pub presence_max_state_bytes: u64,

    /// Most presences a new watcher of a channel is sent (as JOINs, oldest first)
    /// when it subscribes; later changes all arrive.
    #[arg(long, env = "NIMBUS_PRESENCE_MAX_REPLAY", default_value_t = 100)]
    pub presence_max_replay: usize,

    /// Most emails (verification, recovery, magic URL, email OTP, invitations) one
    /// sender (a signed-in user, or an API key) may have sent per hour; 0 for no cap.
    #[arg(long, env = "NIMBUS_MAIL_MAX_PER_SENDER", default_value_t = 100)]
    pub mail_max_per_sender: u32,

    /// Most emails requests from one client address (for IPv6, one /64 network) may
    /// have sent per hour, whoever asks; 0 for no cap. Behind a reverse proxy, list it
    /// in `NIMBUS_TRUSTED_PROXIES`, or everyone shares the proxy's address.
    #[arg(long, env = "NIMBUS_MAIL_MAX_PER_CLIENT", default_value_t = 200)]
    pub mail_max_per_client: u32,

    /// Where file bytes live: a directory, or an S3-compatible bucket as
    /// `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&allow_http=true]` (credentials from
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`). Default: `DATA_DIR/files`.
    #[arg(long, env = "NIMBUS_STORAGE")]
    pub storage: Option<String>,

    /// Largest `maximumFileSize` a bucket may set, in bytes.
    #[arg(long, env = "NIMBUS_STORAGE_MAX_FILE_SIZE", default_value_t = 5 * 1024 * 1024 * 1024)]
    pub storage_max_file_size: u64,

    /// Size of each chunk of a resumable upload, in bytes (the last may be shorter).
    #[arg(long, env = "NIMBUS_UPLOAD_CHUNK_SIZE", default_value_t = 5 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(65_536..=(256 * 1024 * 1024)))]
    pub upload_chunk_size: u64,

    /// Seconds an unfinished resumable upload is kept after its last chunk; then its
    /// chunks are deleted and its id is free again.
    #[arg(long, env = "NIMBUS_UPLOAD_EXPIRY", default_value_t = 24 * 3600, value_parser = clap::value_parser!(u64).range(60..))]
    pub upload_expiry_secs: u64,

    /// Seconds the event log keeps an event: a replica (or a subscription resuming
    /// from a cursor) that fell further behind cannot catch up, and must resync.
    #[arg(long, env = "NIMBUS_EVENT_RETENTION", default_value_t = 24 * 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub event_retention_secs: u64,

    /// Most unfinished resumable uploads one uploader (a user or an API key) may
    /// have in a project at once.
    #[arg(long, env = "NIMBUS_UPLOAD_MAX_PENDING", default_value_t = 100)]
    pub upload_max_pending: u64,

    /// Most bytes the unfinished resumable uploads of one uploader in a project may
    /// announce in all (their chunks stay on disk until they finish or expire).
    #[arg(long, env = "NIMBUS_UPLOAD_MAX_PENDING_BYTES", default_value_t = 10 * 1024 * 1024 * 1024)]
    pub upload_max_pending_bytes: u64,

    /// A ClamAV daemon (`host:port`) that scans uploads to buckets with `antivirus`
    /// on; infected files are refused. Unset: no scanning.
    #[arg(long, env = "NIMBUS_CLAMD")]
    pub clamd: Option<String>,

    /// Teams one user may create per hour (each id stays claimed for good); 0: no
    /// limit.
    #[arg(long, env = "NIMBUS_TEAMS_PER_USER_PER_HOUR", default_value_t = 60)]
    pub teams_per_user_per_hour: u32,

    /// Invitations one user may make per hour, in all their teams (each tells
    /// whether a user id exists); 0: no limit. Servers' keys are not counted.
    #[arg(long, env = "NIMBUS_INVITES_PER_USER_PER_HOUR", default_value_t = 100)]
    pub invites_per_user_per_hour: u32,

    /// Uploads one client (a signed-in user, or a guest's address; keys are not
    /// counted) may start per minute, each file of a multipart request and each
    /// resumable upload one, as Appwrite's `createFile` limits them; 0: no limit.
    #[arg(long, env = "NIMBUS_UPLOADS_PER_MINUTE", default_value_t = 60)]
    pub uploads_per_minute: u32,

    /// Largest file scanned for viruses, in bytes; larger files are kept unscanned
    /// (Appwrite's behaviour with 20000000: clamd's default `StreamMaxLength` is
    /// 25 MB, and a scan it refuses refuses the upload). 0, the default: scan every
    /// size, and clamd must take the buckets' largest files.
    #[arg(long, env = "NIMBUS_ANTIVIRUS_MAX_BYTES", default_value_t = 0)]
    pub antivirus_max_bytes: u64,

    /// Largest image (in pixels) a preview decodes; larger ones are refused before
    /// their pixels are allocated.
    #[arg(long, env = "NIMBUS_PREVIEW_MAX_PIXELS", default_value_t = 50_000_000)]
    pub preview_max_pixels: u64,

    /// Previews rendered at once (decoding is CPU- and memory-heavy). 0: half the CPU
    /// cores, at least one, so that renders leave cores to other requests.
    #[arg(long, env = "NIMBUS_PREVIEW_CONCURRENCY", default_value_t = 0)]
    pub preview_concurrency: usize,

    /// Previews that may wait for a render slot, holding no image meanwhile; past
    /// them a preview is answered 503 `SERVICE_UNAVAILABLE` with `Retry-After`.
    #[arg(long, env = "NIMBUS_PREVIEW_QUEUE", default_value_t = 32)]
    pub preview_queue: usize,

    /// Previews and avatars one client address may have rendered per minute (those
    /// read from a cache are not counted), so that one client cannot keep the
    /// render slots from everyone else; past it, 429 `RATE_LIMITED` with `Retry-After`.
    #[arg(long, env = "NIMBUS_PREVIEW_RENDERS_PER_MINUTE", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub preview_renders_per_minute: u32,

    /// Bytes of rendered previews a replica keeps on its disk; past them, the
    /// previews of the files least recently previewed anew go first. 0: none kept.
    #[arg(long, env = "NIMBUS_PREVIEW_CACHE_BYTES", default_value_t = 2 * 1024 * 1024 * 1024)]
    pub preview_cache_bytes: u64,

    /// Reverse proxies whose `X-Forwarded-For` gives the client address, as
    /// comma-separated addresses or CIDR networks (`127.0.0.1,10.0.0.0/8`). The header
    /// is read from the right past every listed hop; from any other peer it is
    /// ignored. Empty: the connection's peer is the client.
    #[arg(
        long,
        env = "NIMBUS_TRUSTED_PROXIES",
        default_value = "",
        hide_default_value = true
    )]
    pub trusted_proxies: TrustedProxies,

    /// Background jobs (emails, webhook deliveries) one replica runs at once, one
    /// project's at most three quarters of them (all with fewer than four); 0: this
    /// replica runs none (other replicas do).
    #[arg(long, env = "NIMBUS_JOBS_CONCURRENCY", default_value_t = 12)]
    pub jobs_concurrency: usize,

    /// Attempts of a background job before it is dead-lettered (kept, listed by
    /// `jobs(status: DEAD)`, retried only by an administrator). With the default
    /// backoff, 12 attempts span about two hours: an SMTP relay or a webhook receiver
    /// may be down that long without losing anything.
    #[arg(long, env = "NIMBUS_JOBS_MAX_ATTEMPTS", default_value_t = 12)]
    pub jobs_max_attempts: u32,

    /// Delay before the first retry of a failed job, in milliseconds; each further
    /// retry waits twice as long (at most an hour), with random jitter.
    #[arg(long, env = "NIMBUS_JOBS_RETRY_BASE_MS", default_value_t = 5000)]
    pub jobs_retry_base_ms: u64,

    /// How long a replica holds a job it runs, in seconds: a job whose replica died
    /// is run by another once this has passed. Longer than any job may take.
    #[arg(long, env = "NIMBUS_JOBS_LEASE_SECS", default_value_t = 120)]
    pub jobs_lease_secs: u64,

    /// How often an idle replica looks for due jobs, in milliseconds (jobs enqueued
    /// on the same replica start at once).
    #[arg(long, env = "NIMBUS_JOBS_POLL_MS", default_value_t = 1000)]
    pub jobs_poll_ms: u64,

    /// How long a replica holds an event log consumer (the one turning events into
    /// webhook deliveries), in seconds, renewed while it runs: when the replica dies,
    /// another takes over once this has passed.
    #[arg(long, env = "NIMBUS_CONSUMER_LEASE_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub consumer_lease_secs: u64,

    /// Days finished jobs and webhook delivery logs are kept.
    #[arg(long, env = "NIMBUS_JOBS_RETENTION_DAYS", default_value_t = 7)]
    pub jobs_retention_days: u32,

    /// Seconds a webhook receiver has to answer one delivery (connecting included).
    #[arg(long, env = "NIMBUS_WEBHOOKS_TIMEOUT_SECS", default_value_t = 10)]
    pub webhooks_timeout_secs: u64,

    /// Consecutive failed deliveries after which a webhook is disabled (re-enabled
    /// by `updateWebhook`).
    #[arg(long, env = "NIMBUS_WEBHOOKS_FAILURE_THRESHOLD", default_value_t = 10)]
    pub webhooks_failure_threshold: u32,

    /// Let webhooks deliver to loopback, private, link-local and other reserved
    /// addresses. Off: such URLs are refused, also when a name resolves to one.
    #[arg(long, env = "NIMBUS_WEBHOOKS_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhooks_allow_private: bool,

    /// Sandbox threads that run function executions on this replica, each one
    /// execution at a time; 0: twice the CPU cores.
    #[arg(long, env = "NIMBUS_FUNCTIONS_WORKERS", default_value_t = 0)]
    pub functions_workers: usize,

    /// Executions that may wait for a sandbox thread; past them an execution is
    /// refused with `TOO_MANY_EXECUTIONS` (HTTP 429 with `Retry-After`).
    #[arg(long, env = "NIMBUS_FUNCTIONS_QUEUE", default_value_t = 256)]
    pub functions_queue: usize,

    /// Sandbox threads one project's executions run on at once on this replica;
    /// 0: three quarters of them (all when there are fewer than four). A project
    /// also holds at most three quarters of the queue: executions that sleep
    /// until their timeout cannot take every thread from the other projects.
    #[arg(long, env = "NIMBUS_FUNCTIONS_PER_PROJECT", default_value_t = 0)]
    pub functions_per_project: usize,

    /// Asynchronous executions (`createExecution` with `async: true`, also those a
    /// function queues) one project may have waiting; past them such a call is
    /// refused with `TOO_MANY_EXECUTIONS`. Event triggers and schedules are not
    /// refused.
    #[arg(long, env = "NIMBUS_FUNCTIONS_MAX_WAITING", default_value_t = 10_000)]
    pub functions_max_waiting: usize,

    /// Executions asked for at a later time (`createExecution`'s `scheduledAt`)
    /// one project may have waiting for their time; past them another is refused
    /// with `TOO_MANY_EXECUTIONS`. Each user (and all guests together) may have at
    /// most 100 of them.
    #[arg(long, env = "NIMBUS_FUNCTIONS_MAX_SCHEDULED", default_value_t = 10_000)]
    pub functions_max_scheduled: usize,

    /// Teams one user may be a confirmed member of (creating one makes its creator
    /// a member): every request of a user carries the roles of all their teams.
    /// 0: no bound.
    #[arg(long, env = "NIMBUS_TEAMS_MAX_PER_USER", default_value_t = 1_000)]
    pub teams_max_per_user: usize,

    /// Let functions' `fetch` reach loopback, private, link-local and other reserved
    /// addresses. Off: such URLs are refused, also when a name resolves to one or a
    /// redirect leads to one.
    #[arg(long, env = "NIMBUS_FUNCTIONS_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub functions_allow_private: bool,

    /// Addresses and CIDR networks functions' `fetch` may reach although they are
    /// private (`10.1.2.3,192.168.7.0/24`), e.g. one internal service, without
    /// opening the whole private network as `NIMBUS_FUNCTIONS_ALLOW_PRIVATE` does.
    #[arg(
        long,
        env = "NIMBUS_FUNCTIONS_FETCH_ALLOW",
        default_value = "",
        hide_default_value = true
    )]
    pub functions_fetch_allow: Networks,

    /// Deployments one project may upload per minute: each is compiled, up to two
    /// seconds of CPU. Past it, `RATE_LIMITED` with `Retry-After`; 0: no limit.
    #[arg(
        long,
        env = "NIMBUS_FUNCTIONS_DEPLOYMENTS_PER_MINUTE",
        default_value_t = 20
    )]
    pub functions_deployments_per_minute: u32,

    /// Most bytes of a request body passed to a function (plain HTTP route and
    /// `createExecution`); a larger one is refused with `REQUEST_TOO_LARGE`.
    #[arg(long, env = "NIMBUS_FUNCTIONS_MAX_REQUEST_BYTES", default_value_t = 6 << 20)]
    pub functions_max_request_bytes: usize,

    /// Seconds execution records (request, response, logs) are kept.
    #[arg(long, env = "NIMBUS_EXECUTION_RETENTION", default_value_t = 7 * 24 * 3600, value_parser = clap::value_parser!(u64).range(60..))]
    pub execution_retention_secs: u64,

    /// Let OAuth2 and OpenID Connect sign-in reach a provider's discovery, token and
    /// userinfo endpoints at loopback, private, link-local and other reserved
    /// addresses (an identity provider on the operator's own network). Off: such
    /// URLs are refused when configured and not asked at sign-in.
    #[arg(long, env = "NIMBUS_OAUTH2_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub oauth2_allow_private: bool,

    /// Per-project usage counters (`usage` query): `on` or `off`. Off, nothing is
    /// counted on the request path and nothing is flushed.
    #[arg(long, env = "NIMBUS_USAGE", default_value = "on", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub usage: bool,

    /// Seconds between two flushes of this replica's usage counts to the database
    /// (counted in memory meanwhile); also how late `usage` may be.
    #[arg(long, env = "NIMBUS_USAGE_FLUSH_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub usage_flush_secs: u64,

    /// Seconds between two snapshots of how many documents, files, storage bytes,
    /// users and sessions each project has (on replicas running background work).
    #[arg(long, env = "NIMBUS_USAGE_SNAPSHOT_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub usage_snapshot_secs: u64,

    /// Distinct keys (root fields of operations, error codes) one project's usage
    /// counts take per flush; further ones count as `other`.
    #[arg(long, env = "NIMBUS_USAGE_MAX_KEYS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub usage_max_keys: u64,

    /// Days hourly usage buckets are kept.
    #[arg(long, env = "NIMBUS_USAGE_HOURLY_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub usage_hourly_retention_days: u32,

    /// Days daily usage buckets are kept.
    #[arg(long, env = "NIMBUS_USAGE_DAILY_RETENTION_DAYS", default_value_t = 730, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub usage_daily_retention_days: u32,

    /// Days users' activity log entries (sign-ins, changes, sign-outs) are kept;
    /// Appwrite's audit retention.
    #[arg(long, env = "NIMBUS_ACTIVITY_LOG_RETENTION_DAYS", default_value_t = 14, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub activity_log_retention_days: u32,

    /// A MaxMind DB file (e.g. GeoLite2-Country) that maps client addresses to
    /// countries for `locale`. Unset: the bundled database (CC0, by ip-location-db).
    #[arg(long, env = "NIMBUS_GEOIP_DB")]
    pub geoip_db: Option<PathBuf>,

    /// Most avatars (flags, icons, QR codes, initials) a replica keeps drawn in
    /// memory.
    #[arg(long, env = "NIMBUS_AVATAR_CACHE_ENTRIES", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub avatar_cache_entries: u64,

    /// Most bytes of drawn avatars a replica keeps in memory; one avatar over an
    /// eighth of it is not kept.
    #[arg(long, env = "NIMBUS_AVATAR_CACHE_BYTES", default_value_t = 32 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub avatar_cache_bytes: u64,

    /// Largest body the image proxy and favicons read from a remote server, in bytes.
    #[arg(long, env = "NIMBUS_AVATAR_PROXY_MAX_BYTES", default_value_t = 10 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..=1024 * 1024 * 1024))]
    pub avatar_proxy_max_bytes: u64,

    /// Seconds a remote fetch of the image proxy or favicons may take, redirects
    /// included.
    #[arg(long = "avatar-proxy-timeout", env = "NIMBUS_AVATAR_PROXY_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub avatar_proxy_timeout_secs: u64,

    /// Redirects a remote fetch follows, each checked like the first URL.
    #[arg(long, env = "NIMBUS_AVATAR_PROXY_MAX_REDIRECTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub avatar_proxy_max_redirects: u32,

    /// Remote fetches (image proxy and favicons) one client address may start per
    /// minute.
    #[arg(long, env = "NIMBUS_AVATAR_PROXY_PER_MINUTE", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub avatar_proxy_per_minute: u32,

    /// Let the image proxy and favicons fetch from loopback, private, link-local and
    /// other reserved addresses (images on the operator's own network). Off: such
    /// URLs are refused, also when a name or a redirect leads to one.
    #[arg(long, env = "NIMBUS_AVATAR_PROXY_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub avatar_proxy_allow_private: bool,
}

/// A list of addresses (networks of one) and CIDR networks, written
/// comma-separated; empty entries are skipped, so an empty variable lists none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(pub Vec<ipnet::IpNet>);

/// The reverse proxies whose `X-Forwarded-For` counts.
pub type TrustedProxies = Networks;

impl Networks {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }
}

impl std::str::FromStr for Networks {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("`{entry}` is neither an IP address nor a CIDR network"))
            })
            .collect::<Result<_, _>>()
            .map(Networks)
    }
}

impl Config {
    /// A configuration with every default, rooted at `data_dir`; tests and embedders
    /// change fields from here.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: Config,
        }
        // Parse an empty command line so the defaults stay in one place: the
        // attributes above. Every field has a default, so this cannot fail.
        let mut config = Defaults::try_parse_from(["nimbus"])
            .expect("every setting has a default")
            .config;
        config.data_dir = data_dir.into();
        config
    }

    /// Whether cookies are `Secure`: asked for, or browsers reach the server over https.
    pub fn secure_cookies(&self) -> bool {
        self.cookie_secure
            || self
                .public_url
                .as_deref()
                .is_some_and(|url| url.starts_with("https://"))
    }

    /// The most bytes one multipart GraphQL request may have.
    pub fn multipart_limit(&self) -> u64 {
        self.max_multipart_bytes
            .unwrap_or((self.max_upload_bytes as u64).saturating_add(self.max_body_bytes as u64))
    }

    /// Previews rendered at once.
    pub fn preview_slots(&self) -> usize {
        match self.preview_concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        }
    }

    /// How many sandbox threads run executions: `NIMBUS_FUNCTIONS_WORKERS`, or twice
    /// the cores.
    pub fn functions_workers(&self) -> usize {
        match self.functions_workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
            n => n,
        }
    }

    /// What one project may hold of the sandbox threads and their queue.
    pub fn functions_shares(&self) -> crate::sandbox::Shares {
        let workers = self.functions_workers();
        let mut shares = crate::sandbox::Shares::default_for(workers, self.functions_queue);
        if self.functions_per_project > 0 {
            shares.running = self.functions_per_project.min(workers);
        }
        shares
    }

    /// Where the files of multipart uploads wait while their request runs.
    pub fn upload_spool_dir(&self) -> PathBuf {
        self.data_dir.join("tmp").join("uploads")
    }

    /// The directory of cached image previews.
    pub fn preview_cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache").join("previews")
    }

    /// The database URL in effect: the configured one or the SQLite file in the data dir.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("nimbus.db").display()
            ),
        }
    }
}
