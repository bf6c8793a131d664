//! The statement deadline: how long one database statement may run before the
//! database stops it (`NIMBUS_DATABASE_STATEMENT_TIMEOUT_MS`, ADR 45).
//!
//! A client chooses much of what a read costs (a filter of a hundred queries of
//! a hundred `contains` values each is ten thousand substring scans per row), so
//! without a bound one small request could keep a connection and a core busy for
//! minutes. The database enforces the bound, so that the work itself stops, not
//! only the wait for it:
//!
//! - MariaDB: the session's `max_statement_time`, set on every connection. It
//!   stops any statement; structure changes and migrations, which may rightly
//!   run long, lift it for themselves ([`Dialect::unbounded`]).
//! - SQLite: a progress handler on every connection, installed for all of them
//!   by an auto-extension, that interrupts a statement which only reads
//!   (`sqlite3_stmt_readonly`) once it has run past the connection's limit. The
//!   limit is set per connection by [`Setup`] with the SQL function
//!   `nimbus_statement_limit(ms)`, so that servers in one process can differ.
//!   Writes are left alone: SQLite runs them one at a time and Nimbus's writes
//!   touch the rows they name.
//!
//! A statement stopped this way fails with an error [`is_timeout`] recognises; the
//! request answers `DATABASE_TIMEOUT`, and a transaction it was part of is rolled
//! back like any failed one.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Once};
use std::time::{Duration, Instant};

use sqlx::{AnyConnection, Executor as _};

use super::Dialect;

/// The name of the SQL function that sets a SQLite connection's limit.
const LIMIT_FUNCTION: &std::ffi::CStr = c"nimbus_statement_limit";

/// How many virtual machine steps SQLite runs between two looks at the clock:
/// a point lookup finishes before the first look.
const STEPS_BETWEEN_CHECKS: c_int = 1000;

/// How a new connection is set up: SQLite's pragmas and each backend's deadline.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub dialect: Dialect,
    /// Zero: no deadline.
    pub statement_limit: Duration,
}

impl Setup {
    /// Runs the set-up statements on a new connection.
    pub async fn run(self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => {
                super::prepare_sqlite(conn).await?;
                conn.execute(self.limit_statement().as_str()).await?;
            }
            Dialect::MySql => {
                conn.execute(self.limit_statement().as_str()).await?;
            }
        }
        Ok(())
    }

    /// The statement that sets this limit on a connection.
    pub fn limit_statement(self) -> String {
        limit_statement(self.dialect, self.statement_limit)
    }
}

/// The statement that sets a connection's limit to `limit` (zero: none).
pub fn limit_statement(dialect: Dialect, limit: Duration) -> String {
    match dialect {
        Dialect::Sqlite => format!(
            "SELECT {}({})",
            LIMIT_FUNCTION.to_str().unwrap_or_default(),
            limit.as_millis()
        ),
        Dialect::MySql => format!("SET SESSION max_statement_time = {}", limit.as_secs_f64()),
    }
}

impl Dialect {
    /// `statement` with the deadline lifted, for the structure changes that may
    /// rightly run long (an index built over a large collection). Only MariaDB
    /// needs it: SQLite's deadline stops only statements that read.
    pub fn unbounded(self, statement: &str) -> std::borrow::Cow<'_, str> {
        match self {
            Dialect::Sqlite => statement.into(),
            Dialect::MySql => {
                format!("SET STATEMENT max_statement_time = 0 FOR {statement}").into()
            }
        }
    }
}

pub use crate::error::is_statement_timeout as is_timeout;

/// Installs the deadline's hooks on every SQLite connection this process opens
/// from now on; each starts with no limit until [`Setup`] gives it one.
pub fn install_sqlite_hooks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| install_sqlite_extension(attach, "the statement deadline"));
}

/// The signature SQLite calls an auto-extension with.
pub type SqliteExtension = unsafe extern "C" fn(
    *mut libsqlite3_sys::sqlite3,
    *mut *mut c_char,
    *const libsqlite3_sys::sqlite3_api_routines,
) -> c_int;

/// Has SQLite run `attach` on every connection this process opens from now on
/// (call it once: SQLite keeps each entry it is given); logs, naming `what`,
/// when it cannot.
pub fn install_sqlite_extension(attach: SqliteExtension, what: &str) {
    // SAFETY: `attach` has the signature SQLite calls an auto-extension with;
    // each one given touches nothing but the connection it is called for.
    let rc = unsafe { libsqlite3_sys::sqlite3_auto_extension(Some(attach)) };
    if rc != libsqlite3_sys::SQLITE_OK {
        tracing::error!(code = rc, "SQLite could not install {what}");
    }
}

/// A connection's deadline: its limit and when its current reading statement
/// began. Atomics, though SQLite calls every hook on the thread running the
/// connection, so that nothing relies on which thread that is.
struct Watch {
    limit_ms: AtomicU64,
    /// Nanoseconds after [`EPOCH`] plus one; zero while no reading statement runs.
    started: AtomicU64,
}

impl Watch {
    /// Whether the reading statement running has passed the limit.
    fn overdue(&self) -> bool {
        let started = self.started.load(Ordering::Relaxed);
        if started == 0 {
            return false;
        }
        let limit_ns = self
            .limit_ms
            .load(Ordering::Relaxed)
            .saturating_mul(1_000_000);
        limit_ns > 0 && since_epoch().saturating_sub(started - 1) > limit_ns
    }
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

thread_local! {
    /// The watch of the connection whose statement last began on this thread:
    /// SQLite runs a statement's functions on the thread stepping it, so a
    /// function that works long per row can look at its own deadline
    /// ([`sqlite_statement_overdue`]). A counted reference, so that a connection
    /// closed elsewhere leaves nothing dangling here.
    static RUNNING: std::cell::RefCell<Option<Arc<Watch>>> = const { std::cell::RefCell::new(None) };
}

/// Whether the reading statement running on this thread (an SQLite
/// connection's) has passed its connection's limit: for a function whose one
/// call may work long, which SQLite's progress handler looks past (it runs
/// between virtual machine steps). The caller then stops the statement with
/// `sqlite3_interrupt`, which fails it as the deadline does.
pub fn sqlite_statement_overdue() -> bool {
    RUNNING.with(|running| running.borrow().as_deref().is_some_and(Watch::overdue))
}

fn since_epoch() -> u64 {
    u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The auto-extension: gives a new connection its [`Watch`], the statement and
/// close hooks, the progress handler and the function that sets its limit.
unsafe extern "C" fn attach(
    db: *mut libsqlite3_sys::sqlite3,
    _error: *mut *mut c_char,
    _api: *const libsqlite3_sys::sqlite3_api_routines,
) -> c_int {
    let watch = Arc::into_raw(Arc::new(Watch {
        limit_ms: AtomicU64::new(0),
        started: AtomicU64::new(0),
    }))
    .cast_mut()
    .cast::<c_void>();
    // SAFETY: `db` is the connection being opened; `watch` lives until the close
    // hook frees it, after which SQLite calls none of these.
    unsafe {
        let rc = libsqlite3_sys::sqlite3_create_function_v2(
            db,
            LIMIT_FUNCTION.as_ptr(),
            1,
            libsqlite3_sys::SQLITE_UTF8 | libsqlite3_sys::SQLITE_DIRECTONLY,
            watch,
            Some(set_limit),
            None,
            None,
            None,
        );
        if rc != libsqlite3_sys::SQLITE_OK {
            drop(Arc::from_raw(watch.cast::<Watch>()));
            return rc;
        }
        libsqlite3_sys::sqlite3_progress_handler(db, STEPS_BETWEEN_CHECKS, Some(progress), watch);
        libsqlite3_sys::sqlite3_trace_v2(
            db,
            (libsqlite3_sys::SQLITE_TRACE_STMT | libsqlite3_sys::SQLITE_TRACE_CLOSE) as c_uint,
            Some(trace),
            watch,
        )
    }
}

/// `nimbus_statement_limit(ms)`: sets the connection's limit (zero: none).
unsafe extern "C" fn set_limit(
    context: *mut libsqlite3_sys::sqlite3_context,
    argc: c_int,
    argv: *mut *mut libsqlite3_sys::sqlite3_value,
) {
    // SAFETY: SQLite passes the function's user data and `argc` arguments.
    unsafe {
        let watch = &*libsqlite3_sys::sqlite3_user_data(context).cast::<Watch>();
        let limit = if argc == 1 {
            libsqlite3_sys::sqlite3_value_int64(*argv)
        } else {
            0
        };
        watch
            .limit_ms
            .store(u64::try_from(limit).unwrap_or(0), Ordering::Relaxed);
        libsqlite3_sys::sqlite3_result_int64(context, limit);
    }
}

/// Marks the start of a statement that only reads; forgets the watch when the
/// connection closes.
unsafe extern "C" fn trace(
    event: c_uint,
    context: *mut c_void,
    statement: *mut c_void,
    text: *mut c_void,
) -> c_int {
    if event == libsqlite3_sys::SQLITE_TRACE_CLOSE as c_uint {
        // SAFETY: the watch was made by `attach` for this connection, and the
        // connection calls no hook after closing.
        let watch = unsafe { Arc::from_raw(context.cast::<Watch>()) };
        RUNNING.with(|running| {
            let mut running = running.borrow_mut();
            if running
                .as_ref()
                .is_some_and(|held| Arc::ptr_eq(held, &watch))
            {
                *running = None;
            }
        });
        return 0;
    }
    // SAFETY: for a statement event SQLite passes the connection's watch, the
    // statement and its text (a trigger's begins with "--").
    unsafe {
        let watch = &*context.cast::<Watch>();
        let trigger = !text.is_null() && *text.cast::<u8>() == b'-';
        if trigger {
            return 0;
        }
        let reads_only = watch.limit_ms.load(Ordering::Relaxed) > 0
            && libsqlite3_sys::sqlite3_stmt_readonly(statement.cast()) != 0;
        let started = if reads_only { since_epoch() + 1 } else { 0 };
        watch.started.store(started, Ordering::Relaxed);
        if reads_only {
            let this = context.cast::<Watch>().cast_const();
            RUNNING.with(|running| {
                let mut running = running.borrow_mut();
                if !running
                    .as_ref()
                    .is_some_and(|held| std::ptr::eq(Arc::as_ptr(held), this))
                {
                    // SAFETY: `this` is the connection's counted watch, alive
                    // while the connection is; the count taken here is this
                    // thread's own.
                    Arc::increment_strong_count(this);
                    *running = Some(Arc::from_raw(this));
                }
            });
        }
    }
    0
}

/// Interrupts a reading statement that has run past the limit (non-zero
/// stops it, and it fails with `SQLITE_INTERRUPT`).
unsafe extern "C" fn progress(context: *mut c_void) -> c_int {
    // SAFETY: SQLite passes the connection's watch, alive until it closes.
    let watch = unsafe { &*context.cast::<Watch>() };
    c_int::from(watch.overdue())
}

#[cfg(test)]
mod tests {
    use sqlx::Connection as _;

    use super::*;

    /// A read that would run for ever.
    const ENDLESS_READ: &str = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n \
                            WHERE x < 1000000000000) SELECT COUNT(*) FROM n";

    async fn sqlite(limit: Duration) -> (tempfile::TempDir, AnyConnection) {
        sqlx::any::install_default_drivers();
        install_sqlite_hooks();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("d.db").display());
        let mut conn = AnyConnection::connect(&url).await.unwrap();
        let setup = Setup {
            dialect: Dialect::Sqlite,
            statement_limit: limit,
        };
        setup.run(&mut conn).await.unwrap();
        (dir, conn)
    }

    #[tokio::test]
    async fn sqlite_stops_a_read_past_its_limit_and_the_connection_goes_on() {
        let (_dir, mut conn) = sqlite(Duration::from_millis(100)).await;
        let started = Instant::now();
        let err = sqlx::query(ENDLESS_READ)
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert!(is_timeout(&err), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let one: i64 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(one, 1);
    }

    #[tokio::test]
    async fn sqlite_leaves_writes_and_unlimited_connections_alone() {
        let (_dir, mut conn) = sqlite(Duration::from_millis(1)).await;
        conn.execute("CREATE TABLE t (x INTEGER)").await.unwrap();
        // A write that reads 200,000 rows runs well past 1 ms, and is not stopped.
        conn.execute(
            "INSERT INTO t WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n \
             WHERE x < 200000) SELECT x FROM n",
        )
        .await
        .unwrap();
        conn.execute(limit_statement(Dialect::Sqlite, Duration::ZERO).as_str())
            .await
            .unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t WHERE x % 7 <> 8")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(rows, 200_000);
    }

    #[tokio::test]
    async fn another_connection_keeps_its_own_limit() {
        let (_dir, mut limited) = sqlite(Duration::from_millis(50)).await;
        let (_other, mut unlimited) = sqlite(Duration::ZERO).await;
        let bounded = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n \
                       WHERE x < 3000000) SELECT COUNT(*) FROM n";
        let count: i64 = sqlx::query_scalar(bounded)
            .fetch_one(&mut unlimited)
            .await
            .unwrap();
        assert_eq!(count, 3_000_000);
        let err = sqlx::query(ENDLESS_READ)
            .execute(&mut limited)
            .await
            .unwrap_err();
        assert!(is_timeout(&err), "{err:?}");
    }

    #[tokio::test]
    async fn mariadb_stops_a_statement_past_its_limit_unless_lifted() {
        let Some(url) = crate::db::test_mariadb_server() else {
            return;
        };
        let mut conn = AnyConnection::connect(&url).await.unwrap();
        let setup = Setup {
            dialect: Dialect::MySql,
            statement_limit: Duration::from_millis(200),
        };
        setup.run(&mut conn).await.unwrap();
        // Five hundred collations to the fourth power: hours of counting.
        let endless = "SELECT COUNT(*) FROM information_schema.COLLATIONS a, \
                       information_schema.COLLATIONS b, information_schema.COLLATIONS c, \
                       information_schema.COLLATIONS d WHERE a.ID + b.ID + c.ID + d.ID = 7";
        let started = Instant::now();
        let err = sqlx::query(endless).execute(&mut conn).await.unwrap_err();
        assert!(is_timeout(&err), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let lifted = Dialect::MySql.unbounded("SELECT SLEEP(0.3)");
        let slept: i64 = sqlx::query_scalar(lifted.as_ref())
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(slept, 0, "SLEEP answers 1 when it is interrupted");
        let _ = conn.close().await;
    }
}
