//! The database: one sqlx `Any` pool over SQLite or MariaDB, the migrations of each
//! dialect, and [`Dialect`], the one place where SQL differs between the two.
//! Timestamps are stored as `BIGINT` milliseconds since the Unix epoch in both.

pub mod claimed_ids;
pub mod columns;
pub mod deadline;
pub mod event_log;
pub mod group_commit;
pub mod ids;
pub mod lease;
pub mod log_consumers;
pub mod page;

pub use page::Page;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor as _};

use crate::config::Config;

/// Which SQL dialect the pool speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    MySql,
}

impl Dialect {
    /// ` AND (…)`: one of `columns` starts with `search`, letters compared ignoring
    /// case on both dialects, with the binds it takes. SQLite's `LIKE` ignores
    /// ASCII case; MariaDB's tables compare bytes, so there both sides are lowered
    /// (which also folds letters beyond ASCII).
    pub fn starts_with_any(self, columns: &[&str], search: &str) -> (String, Vec<String>) {
        let escaped = search
            .replace('!', "!!")
            .replace('%', "!%")
            .replace('_', "!_");
        let pattern = match self {
            Dialect::Sqlite => format!("{escaped}%"),
            Dialect::MySql => format!("{}%", escaped.to_lowercase()),
        };
        let conditions: Vec<String> = columns
            .iter()
            .map(|column| match self {
                Dialect::Sqlite => format!("{column} LIKE ? ESCAPE '!'"),
                Dialect::MySql => format!("LOWER({column}) LIKE ? ESCAPE '!'"),
            })
            .collect();
        (
            format!(" AND ({})", conditions.join(" OR ")),
            vec![pattern; columns.len()],
        )
    }

    /// The dialect of a database URL, or an error naming the accepted schemes.
    pub fn of_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Dialect::Sqlite)
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Ok(Dialect::MySql)
        } else {
            anyhow::bail!("unsupported database URL: expected sqlite://… or mysql://…")
        }
    }

    /// `INSERT` that silently skips rows whose key already exists.
    pub fn insert_ignore(self) -> &'static str {
        match self {
            Dialect::Sqlite => "INSERT OR IGNORE",
            Dialect::MySql => "INSERT IGNORE",
        }
    }

    /// The join that reads its left side first, whatever the planner would
    /// estimate: SQLite keeps the order of a `CROSS JOIN`, MariaDB that of a
    /// `STRAIGHT_JOIN`. For a list that must drive from a small side (ADR 0017).
    pub fn ordered_join(self) -> &'static str {
        match self {
            Dialect::Sqlite => "CROSS JOIN",
            Dialect::MySql => "STRAIGHT_JOIN",
        }
    }

    /// What goes before a `SELECT` whose correlated `EXISTS` must run as a probe
    /// per row, in the order the query walks: MariaDB otherwise turns it into a
    /// semi-join that materialises the whole subquery first (3× the time of a
    /// page of a list whose reader may read one document in ten, ADR 0017).
    /// SQLite always probes.
    pub fn probe_each_row(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::MySql => {
                "SET STATEMENT optimizer_switch='semijoin=off,materialization=off' FOR "
            }
        }
    }

    /// A query answering about how many rows the table `quoted` holds, from
    /// what the database already keeps rather than by reading them, and whether
    /// it takes the table's unquoted name as its one bound value. SQLite: the
    /// highest rowid, one step down the table's B-tree (never fewer than the
    /// rows; more after deletes). MariaDB: InnoDB's row count, which it keeps
    /// up to date in memory on every insert and delete. For a plan that
    /// depends on a table's size (ADR 0017), not for an answer.
    pub fn row_estimate(self, quoted: &str) -> (String, bool) {
        match self {
            Dialect::Sqlite => (format!("SELECT COALESCE(MAX(rowid), 0) FROM {quoted}"), false),
            Dialect::MySql => (
                "SELECT CAST(COALESCE(MAX(TABLE_ROWS), 0) AS SIGNED) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?"
                    .into(),
                true,
            ),
        }
    }

    /// Short name for logs and health output.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::MySql => "mariadb",
        }
    }
}

/// The shared database handle: cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    /// Connections for everything but documents.
    pool: AnyPool,
    /// Connections for document reads and writes, returned without a round trip.
    leases: std::sync::Arc<lease::Leases>,
    dialect: Dialect,
    /// One document-writing transaction at a time on SQLite (which has one writer
    /// anyway): waiting here is a fair queue, where waiting on SQLite's lock is
    /// sleeping and retrying.
    writer: std::sync::Arc<tokio::sync::Semaphore>,
    /// Batches of single-operation requests sharing one transaction (SQLite).
    group_commit: Option<std::sync::Arc<group_commit::GroupCommit>>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static MYSQL_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/mysql");

impl Db {
    /// Opens the pool for the configured URL. Fails within `connect_timeout` with a
    /// message that names the database (never its password) when it is unreachable.
    pub async fn connect(config: &Config, connect_timeout: Duration) -> anyhow::Result<Self> {
        install_default_drivers();
        let url = config.effective_database_url();
        let dialect = Dialect::of_url(&url)?;
        let shown = redact_url(&url);
        if dialect == Dialect::Sqlite {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!("cannot create data directory {}", config.data_dir.display())
            })?;
        }
        // No ping before each use: a request's reads would pay a round trip each.
        // A broken connection fails its statement and is dropped; idle ones are
        // closed well before MariaDB's `wait_timeout` (8 h) could cut them.
        let mut options = AnyPoolOptions::new()
            .max_connections(pool_count(config))
            .acquire_timeout(connect_timeout)
            .test_before_acquire(false)
            .idle_timeout(Duration::from_secs(600));
        if dialect == Dialect::Sqlite {
            deadline::install_sqlite_hooks();
        }
        let setup = deadline::Setup {
            dialect,
            statement_limit: Duration::from_millis(config.database_statement_timeout_ms),
        };
        options = options.after_connect(move |conn, _meta| Box::pin(setup.run(conn)));
        let pool = tokio::time::timeout(connect_timeout, options.connect(&url))
            .await
            .map_err(|_| anyhow::anyhow!("timed out after {connect_timeout:?}"))
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| format!("cannot connect to the database at {shown}"))?;
        let leases = lease::Leases::new(&url, lease_count(config), connect_timeout, Some(setup))
            .with_context(|| format!("invalid database URL {shown}"))?;
        if dialect == Dialect::Sqlite {
            tokio::spawn(checkpoints(std::sync::Arc::downgrade(&leases)));
        }
        let writer = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        let group_commit = (dialect == Dialect::Sqlite).then(|| {
            std::sync::Arc::new(group_commit::GroupCommit::new(pool.clone(), writer.clone()))
        });
        Ok(Db {
            pool,
            leases,
            dialect,
            writer,
            group_commit,
        })
    }

    /// Applies the pending migrations of this dialect.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::MySql => &MYSQL_MIGRATIONS,
        };
        // A migration may rightly run past the statement deadline (it rewrites
        // tables however large they grew); it runs on a connection without it.
        let mut conn = self.pool.acquire().await?.detach();
        conn.execute(deadline::limit_statement(self.dialect, Duration::ZERO).as_str())
            .await?;
        let result = migrator
            .run(&mut conn)
            .await
            .context("applying database migrations failed");
        let _ = sqlx::Connection::close(conn).await;
        result
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction that reads what it then writes: on SQLite it holds the write
    /// lock from its start (`BEGIN IMMEDIATE`), since a deferred one that read
    /// first fails at its first write when another writer committed meanwhile
    /// (busy waiting does not help it).
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::MySql => self.pool.begin().await,
        }
    }

    /// A connection for document reads and writes ([`lease`]).
    pub async fn lease(&self) -> Result<lease::Lease, sqlx::Error> {
        self.leases.lease().await
    }

    /// A connection for a transaction of document writes: on MariaDB one with
    /// autocommit off ([`lease::Purpose::Writes`]), already inside its
    /// transaction; `None` on SQLite, where transactions begin with `BEGIN
    /// IMMEDIATE` on a connection from [`Db::lease`].
    pub async fn lease_for_writes(&self) -> Option<Result<lease::Lease, sqlx::Error>> {
        match self.dialect {
            Dialect::Sqlite => None,
            Dialect::MySql => Some(self.leases.lease_for(lease::Purpose::Writes).await),
        }
    }

    /// A connection for a transaction of SQLite's one writer, to begin with
    /// `BEGIN IMMEDIATE` while holding [`Db::writer_turn`]: the connection that
    /// wrote last, whose page cache no other writer has made stale
    /// ([`lease::Purpose::Writes`]). On MariaDB a connection from [`Db::lease`].
    pub async fn lease_writer(&self) -> Result<lease::Lease, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.leases.lease_for(lease::Purpose::Writes).await,
            Dialect::MySql => self.leases.lease().await,
        }
    }

    /// The turn of a document-writing transaction: on SQLite one at a time, on
    /// MariaDB (row locks) none needed.
    pub async fn writer_turn(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        match self.dialect {
            Dialect::Sqlite => self.writer.clone().acquire_owned().await.ok(),
            Dialect::MySql => None,
        }
    }

    /// Group commit of document writes, where the database has one writer.
    pub fn group_commit(&self) -> Option<&group_commit::GroupCommit> {
        self.group_commit.as_deref()
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Round-trip time of a trivial query, for `/health`.
    pub async fn ping(&self) -> Result<Duration, sqlx::Error> {
        let started = Instant::now();
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(started.elapsed())
    }

    /// Connections in use and idle, for `/metrics`.
    pub fn pool_usage(&self) -> (u32, usize) {
        let idle = self.pool.num_idle();
        let (leased_open, leased_idle) = self.leases.usage();
        (self.pool.size() + leased_open, idle + leased_idle)
    }

    pub async fn close(&self) {
        self.leases.close().await;
        self.pool.close().await;
    }
}

/// How many of the configured connections (at least two) are sqlx's pool: a
/// quarter, at least one. The rest are for documents ([`lease`]).
fn pool_count(config: &Config) -> u32 {
    (config.database_max_connections.max(2) / 4).max(1)
}

fn lease_count(config: &Config) -> u32 {
    config.database_max_connections.max(2) - pool_count(config)
}

/// How often the WAL is checkpointed beside the writer ([`checkpoints`]).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// WAL pages after which a committing writer checkpoints itself: a backstop
/// for when [`checkpoints`] falls behind (SQLite's default is 1,000), which
/// bounds the WAL at about 40 MiB.
const WRITER_CHECKPOINT_PAGES: u32 = 10_000;

/// Checkpoints SQLite's WAL (copies committed pages into the database file)
/// on a connection of its own, every [`CHECKPOINT_EVERY`], until the
/// database is closed or dropped. Left to SQLite, a checkpoint runs inside the
/// `COMMIT` that filled the WAL to 1,000 pages, with its reads, writes and two
/// `fsync`s, while the writer's turn is held and every write waits; here it
/// runs beside the writer (a passive checkpoint takes no lock a writer needs).
/// Durability is the WAL's either way: a commit is in the WAL when it returns.
async fn checkpoints(leases: std::sync::Weak<lease::Leases>) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(leases) = leases.upgrade() else {
            return;
        };
        let mut conn = match leases.lease().await {
            Ok(conn) => conn,
            // The database is closing.
            Err(sqlx::Error::PoolClosed) => return,
            // Every connection busy for the acquire timeout: next time.
            Err(_) => continue,
        };
        drop(leases);
        if let Err(err) = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").await {
            tracing::debug!(error = %err, "checkpointing the WAL failed; the writer's backstop remains");
        }
    }
}

/// Sets a new SQLite connection up (its deadline aside, [`deadline::Setup`]).
fn prepare_sqlite(
    conn: &mut sqlx::AnyConnection,
) -> futures_util::future::BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        // WAL lets readers proceed during a write; busy_timeout makes concurrent
        // writers wait instead of failing with SQLITE_BUSY, and comes first so
        // that setting the journal mode beside a busy writer waits too. Each connection keeps
        // its own page cache, so the same pages sit in many of them: 512 KiB each
        // (SQLite's default is 2 MiB) bounds that at 8 MiB for 16 connections, and
        // a page that is not cached comes from the OS's page cache. The WAL is
        // checkpointed beside the writer ([`checkpoints`]); a writer does it
        // itself only past the backstop.
        conn.execute(
            format!(
                "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
                 PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; \
                 PRAGMA cache_size = -512; PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES};"
            )
            .as_str(),
        )
        .await?;
        Ok(())
    })
}

/// Milliseconds since the Unix epoch: the stored form of every timestamp.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The URL with any password replaced, safe for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// Turns a unique-constraint failure into the `Conflict` error of a resource.
pub trait DbErrorExt<T> {
    fn conflict_as(self, what: &'static str, id: &str) -> Result<T, crate::error::AppError>;
}

impl<T> DbErrorExt<T> for Result<T, sqlx::Error> {
    fn conflict_as(self, what: &'static str, id: &str) -> Result<T, crate::error::AppError> {
        self.map_err(|err| match crate::error::DbError::from(err) {
            crate::error::DbError::UniqueViolation => crate::error::AppError::Conflict {
                what,
                id: id.to_string(),
            },
            other => crate::error::AppError::from(other),
        })
    }
}

/// The MariaDB server of the suite's MariaDB pass (`NIMBUS_TEST_DATABASE_URL`,
/// see `scripts/test`), with the `Any` drivers installed; `None` otherwise.
#[cfg(test)]
pub fn test_mariadb_server() -> Option<String> {
    let url = std::env::var("NIMBUS_TEST_DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("mysql:") || url.starts_with("mariadb:"))?;
    install_default_drivers();
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password_of_a_database_url() {
        assert_eq!(
            redact_url("mysql://nimbus:hunter2@db:3306/nimbus"),
            "mysql://nimbus:***@db:3306/nimbus"
        );
    }

    #[tokio::test]
    async fn sqlite_connections_leave_checkpoints_to_the_checkpointer_up_to_a_backstop() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::with_data_dir(dir.path().to_path_buf());
        let db = Db::connect(&config, Duration::from_secs(10)).await.unwrap();
        let mut writer = db.lease_writer().await.unwrap();
        let pages: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut *writer)
            .await
            .unwrap();
        assert_eq!(pages, i64::from(WRITER_CHECKPOINT_PAGES));
        drop(writer);
        let pages: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(pages, i64::from(WRITER_CHECKPOINT_PAGES));
        db.close().await;
    }

    #[test]
    fn refuses_unknown_database_schemes() {
        assert!(Dialect::of_url("postgres://x").is_err());
        assert_eq!(Dialect::of_url("mysql://x").unwrap(), Dialect::MySql);
    }
}
