//! Leased connections for document reads and writes: a small pool of our own
//! beside sqlx's, handing a connection back without a round trip.
//!
//! sqlx's pool pings every connection it takes back (to flush what a cancelled
//! statement left behind), which doubles the round trips of a request that runs
//! one statement. A lease goes back to the idle list as it is, unless it is still
//! inside a transaction (then it is closed: the server rolls back). What a
//! cancelled statement left unread is drained by the driver before the next
//! statement on that connection, as it does anyway. Two checks replace the ping:
//! a connection idle for a while is pinged when it is taken, and after any error
//! that may mean broken connections ([`note_error`]), the connections in use at
//! that moment are closed when they come back rather than reused. See ADR 6.
//!
//! Clients share the leases: a lease asked for on behalf of a client address
//! ([`LEASE_CLIENT`], set around each GraphQL operation) past the client's share
//! (a quarter of the leases) takes a place beyond the shares, of which there are
//! the leases less two shares, in turns: a client alone may use three quarters,
//! and a share stays free of any one client, whose long queries wait for places
//! of their own, not for everyone's. See ADR 48.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::any::{AnyConnectOptions, AnyTransactionManager};
use sqlx::{AnyConnection, Connection as _, Executor as _, TransactionManager as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument as _;

use crate::error::broken_epoch;
pub use crate::error::note_error;

/// Idle longer than this, a connection is pinged before it is handed out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(30);
/// Idle longer than this, a connection is closed (MariaDB's `wait_timeout` is 8 h).
const CLOSE_AFTER_IDLE: Duration = Duration::from_secs(600);

tokio::task_local! {
    /// The client address (as rate limits key it) a lease taken in this task is
    /// for (`http::client::lease_client`); none for the server's own work.
    pub static LEASE_CLIENT: Option<Arc<str>>;
}

/// How clients share the leases: the leases each holds of its own share, and the
/// places beyond their shares, which all clients take in turns.
struct Shares {
    own: std::sync::Mutex<std::collections::HashMap<Arc<str>, usize>>,
    /// A client's leases past its share: at most the leases less two shares, so a
    /// share stays free of any one client (ADR 48). First come, first served.
    beyond: Arc<Semaphore>,
}

/// One lease counted for its client until dropped: of its own share, or a place
/// beyond it.
enum Share {
    Own {
        leases: Arc<Leases>,
        client: Arc<str>,
    },
    Beyond(#[allow(dead_code)] OwnedSemaphorePermit),
}

impl Drop for Share {
    fn drop(&mut self) {
        if let Share::Own { leases, client } = self {
            let mut own = leases.shares.own.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = own.get_mut(client) {
                *count -= 1;
                if *count == 0 {
                    own.remove(client);
                }
            }
        }
    }
}

/// What a connection is leased for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Reads, and transactions begun with `BEGIN`.
    Reads,
    /// Transactions on MariaDB with autocommit off, so that the first statement
    /// begins one and `BEGIN` costs no round trip; ended with [`Lease::end`].
    /// On SQLite, the transactions of its one writer (`BEGIN IMMEDIATE`, taken
    /// in turns): kept apart from the readers' connections, the writer's
    /// connection is the one that wrote last, and its page cache stays valid
    /// (SQLite empties a connection's cache when another one wrote since its
    /// last transaction, and every page then comes back through a `pread`).
    Writes,
}

/// The pool of leasable connections.
pub struct Leases {
    options: AnyConnectOptions,
    setup: Option<super::deadline::Setup>,
    permits: Arc<Semaphore>,
    max: usize,
    /// Per purpose, most recently returned last: taken from the end, so the
    /// least used ones grow idle and are closed.
    idle: std::sync::Mutex<[Vec<Idle>; 2]>,
    acquire_timeout: Duration,
    /// Connections for writes run with autocommit off (MariaDB); on SQLite they
    /// are ordinary connections whose transactions sqlx begins and ends.
    autocommit_off: bool,
    shares: Shares,
}

struct Idle {
    conn: AnyConnection,
    since: Instant,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

/// A client's share of `max` leases: a quarter, at least one.
fn share_of(max: usize) -> usize {
    (max / 4).max(1)
}

impl Leases {
    /// A pool of at most `max` connections to `url`, each set up by `setup`.
    pub fn new(
        url: &str,
        max: u32,
        acquire_timeout: Duration,
        setup: Option<super::deadline::Setup>,
    ) -> Result<Arc<Self>, sqlx::Error> {
        Ok(Arc::new(Leases {
            options: AnyConnectOptions::from_str(url)?,
            setup,
            permits: Arc::new(Semaphore::new(max.max(1) as usize)),
            max: max.max(1) as usize,
            idle: std::sync::Mutex::new([Vec::new(), Vec::new()]),
            acquire_timeout,
            autocommit_off: !url.starts_with("sqlite:"),
            shares: Shares {
                own: Default::default(),
                beyond: Arc::new(Semaphore::new(
                    (max.max(1) as usize).saturating_sub(2 * share_of(max.max(1) as usize)),
                )),
            },
        }))
    }

    /// A connection, waiting up to the acquire timeout for one to be free.
    pub async fn lease(self: &Arc<Self>) -> Result<Lease, sqlx::Error> {
        self.lease_for(Purpose::Reads).await
    }

    /// Counts one more lease for `client`: of its own share while it holds less
    /// than a share, else a place beyond it, waiting (up to `deadline`) for one.
    async fn admit(
        self: &Arc<Self>,
        client: Arc<str>,
        deadline: tokio::time::Instant,
    ) -> Result<Share, sqlx::Error> {
        {
            let mut own = self.shares.own.lock().unwrap_or_else(|e| e.into_inner());
            let mine = own.entry(client.clone()).or_default();
            if *mine < share_of(self.max) {
                *mine += 1;
                return Ok(Share::Own {
                    leases: self.clone(),
                    client,
                });
            }
        }
        let place = tokio::time::timeout_at(deadline, self.shares.beyond.clone().acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        Ok(Share::Beyond(place))
    }

    /// A connection for `purpose`.
    pub async fn lease_for(self: &Arc<Self>, purpose: Purpose) -> Result<Lease, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + self.acquire_timeout;
        let share = match LEASE_CLIENT.try_with(Clone::clone).ok().flatten() {
            Some(client) => Some(self.admit(client, deadline).await?),
            None => None,
        };
        let permit = tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;

        let epoch = broken_epoch();
        let other = match purpose {
            Purpose::Reads => Purpose::Writes,
            Purpose::Writes => Purpose::Reads,
        };
        // On SQLite a connection serves either purpose: one kept for the other
        // is taken before a new one is opened (a read leaves the writer's cache
        // valid; only another connection's write empties it).
        let sources: &[Purpose] = if self.autocommit_off {
            &[purpose]
        } else {
            &[purpose, other]
        };
        for &from in sources {
            while let Some(idle) = self.take_idle(from) {
                let waited = idle.since.elapsed();
                if waited > CLOSE_AFTER_IDLE {
                    continue;
                }
                let mut conn = idle.conn;
                if waited > PING_AFTER_IDLE && conn.ping().await.is_err() {
                    continue;
                }
                return Ok(self.leased(conn, purpose, permit, share, epoch));
            }
        }
        // Idle connections hold no permit: when those kept for the other purpose
        // would take the total over the bound, one of them makes way.
        let (open, _) = self.usage();
        if open as usize > self.max {
            drop(self.take_idle(other));
        }
        let connecting = async {
            let mut conn = AnyConnection::connect_with(&self.options).await?;
            if let Some(setup) = self.setup {
                setup.run(&mut conn).await?;
            }
            if purpose == Purpose::Writes && self.autocommit_off {
                conn.execute("SET autocommit = 0").await?;
            }
            Ok::<_, sqlx::Error>(conn)
        };
        // A connection's set-up is its own work, not the operation's that
        // happened to need it: its statements are not traced as the operation's.
        let connecting = connecting.instrument(tracing::debug_span!(parent: None, "db_connect"));
        let conn = tokio::time::timeout(self.acquire_timeout, connecting)
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        Ok(self.leased(conn, purpose, permit, share, epoch))
    }

    fn take_idle(&self, purpose: Purpose) -> Option<Idle> {
        self.idle.lock().ok()?[purpose as usize].pop()
    }

    fn leased(
        self: &Arc<Self>,
        conn: AnyConnection,
        purpose: Purpose,
        permit: OwnedSemaphorePermit,
        share: Option<Share>,
        epoch: u64,
    ) -> Lease {
        Lease {
            conn: Some(conn),
            leases: self.clone(),
            purpose,
            // A connection for writes on MariaDB is always inside a transaction,
            // from its first statement to `Lease::end`.
            open: purpose == Purpose::Writes && self.autocommit_off,
            epoch,
            _permit: permit,
            _share: share,
        }
    }

    /// Connections open and idle now, for `/metrics`.
    pub fn usage(&self) -> (u32, usize) {
        let idle = self
            .idle
            .lock()
            .map_or(0, |idle| idle.iter().map(Vec::len).sum());
        let leased = self.max - self.permits.available_permits();
        (u32::try_from(leased + idle).unwrap_or(u32::MAX), idle)
    }

    /// Closes the idle connections; leased ones close as they come back.
    pub async fn close(&self) {
        self.permits.close();
        let idle = self.idle.lock().map(|mut idle| std::mem::take(&mut *idle));
        for idle in idle.unwrap_or_default().into_iter().flatten() {
            let _ = idle.conn.close().await;
        }
    }
}

/// A connection on lease; back to the pool when dropped.
pub struct Lease {
    conn: Option<AnyConnection>,
    leases: Arc<Leases>,
    purpose: Purpose,
    /// Inside a transaction sqlx does not know of ([`Purpose::Writes`]).
    open: bool,
    epoch: u64,
    _permit: OwnedSemaphorePermit,
    /// Dropped after the permit: the client's count goes down once the place is
    /// free.
    _share: Option<Share>,
}

impl Lease {
    /// Ends the transaction of a connection for writes ([`Purpose::Writes`])
    /// with `COMMIT` or `ROLLBACK`, and returns the connection: the next
    /// statement on it would begin another transaction. A transaction begun
    /// through sqlx's transaction manager (SQLite's `BEGIN IMMEDIATE`) is ended
    /// through it, so that the connection is known to be out of it.
    pub async fn end(mut self, commit: bool) -> Result<(), sqlx::Error> {
        if !self.open {
            return match commit {
                true => AnyTransactionManager::commit(&mut self).await,
                false => AnyTransactionManager::rollback(&mut self).await,
            };
        }
        let sql = if commit { "COMMIT" } else { "ROLLBACK" };
        self.execute(sql).await?;
        self.open = false;
        Ok(())
    }
}

impl std::ops::Deref for Lease {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        self.conn
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let reusable = !self.open
                && !conn.is_in_transaction()
                && broken_epoch() == self.epoch
                && !self.leases.permits.is_closed();
            if reusable && let Ok(mut idle) = self.leases.idle.lock() {
                idle[self.purpose as usize].push(Idle {
                    conn,
                    since: Instant::now(),
                });
            }
            // Otherwise dropped: the socket closes and MariaDB rolls back
            // whatever it left open; SQLite's worker ends with its connection.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each connection to `sqlite::memory:` has a database of its own: a table
    /// made on one shows which connection a later lease got.
    fn leases(max: u32) -> Arc<Leases> {
        sqlx::any::install_default_drivers();
        Leases::new("sqlite::memory:", max, Duration::from_millis(200), None).unwrap()
    }

    async fn same_connection(lease: &mut Lease) -> bool {
        lease
            .fetch_optional("SELECT 1 FROM marker")
            .await
            .is_ok_and(|row| row.is_some())
    }

    async fn mark(lease: &mut Lease) {
        lease
            .execute("CREATE TABLE marker (x INTEGER); INSERT INTO marker VALUES (1)")
            .await
            .unwrap();
    }

    /// Held by the tests that note a broken connection (which moves the
    /// process-wide epoch) and by those that count on connections being reused.
    static EPOCH: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    // Every assertion that depends on the broken-connection epoch sits in this one
    // test: the epoch is process-wide, and tests run in parallel.
    #[tokio::test]
    async fn a_returned_connection_is_reused_unless_in_a_transaction_or_after_a_broken_one() {
        let _epoch = EPOCH.lock().await;
        let pool = leases(2);
        let mut first = pool.lease().await.unwrap();
        mark(&mut first).await;
        drop(first);
        assert_eq!(pool.usage(), (1, 1));
        let mut again = pool.lease().await.unwrap();
        assert!(
            same_connection(&mut again).await,
            "the idle connection is handed out again"
        );

        AnyTransactionManager::begin(&mut again, None)
            .await
            .unwrap();
        drop(again);
        assert_eq!(
            pool.usage(),
            (0, 0),
            "a connection left in a transaction is closed"
        );
        let mut fresh = pool.lease().await.unwrap();
        assert!(!same_connection(&mut fresh).await);

        mark(&mut fresh).await;
        note_error(&sqlx::Error::Io(std::io::Error::other("connection reset")));
        drop(fresh);
        assert_eq!(
            pool.usage(),
            (0, 0),
            "leased before a broken connection: closed"
        );

        let mut later = pool.lease().await.unwrap();
        mark(&mut later).await;
        note_error(&sqlx::Error::RowNotFound);
        drop(later);
        assert_eq!(
            pool.usage(),
            (1, 1),
            "an error of the data leaves connections alone"
        );
    }

    #[tokio::test]
    async fn on_sqlite_the_writer_gets_back_the_connection_that_wrote_last() {
        let _epoch = EPOCH.lock().await;
        let pool = leases(3);
        let reading = pool.lease().await.unwrap();
        let mut writer = pool.lease_for(Purpose::Writes).await.unwrap();
        mark(&mut writer).await;
        AnyTransactionManager::begin(&mut writer, Some("BEGIN IMMEDIATE".into()))
            .await
            .unwrap();
        writer.end(true).await.unwrap();
        drop(reading);
        assert_eq!(pool.usage(), (2, 2), "kept once out of its transaction");
        let mut reader = pool.lease().await.unwrap();
        assert!(
            !same_connection(&mut reader).await,
            "a reader does not take the writer's connection"
        );
        drop(reader);
        let mut again = pool.lease_for(Purpose::Writes).await.unwrap();
        assert!(same_connection(&mut again).await, "the writer's connection");
        drop(again);

        // With no other connection idle, a reader takes the writer's rather
        // than opening one.
        let first = pool.lease().await.unwrap();
        let mut second = pool.lease().await.unwrap();
        assert!(same_connection(&mut second).await);
        drop((first, second));
        assert_eq!(pool.usage(), (2, 2));
    }

    #[tokio::test]
    async fn a_full_pool_makes_the_next_lease_wait_then_time_out() {
        let pool = leases(1);
        let held = pool.lease().await.unwrap();
        let waiting = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.lease().await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        drop(held);
        waiting
            .await
            .unwrap()
            .expect("the lease comes once the held one is back");

        let _held = pool.lease().await.unwrap();
        let err = pool
            .lease()
            .await
            .err()
            .expect("no connection within the timeout");
        assert!(matches!(err, sqlx::Error::PoolTimedOut), "{err}");
    }

    #[tokio::test]
    async fn a_closed_pool_refuses_leases() {
        let pool = leases(1);
        pool.close().await;
        let err = pool.lease().await.err().expect("closed");
        assert!(matches!(err, sqlx::Error::PoolClosed), "{err}");
    }

    /// A fresh MariaDB database when `NIMBUS_TEST_DATABASE_URL` names a server
    /// (the suite's MariaDB pass); `None` otherwise.
    async fn mariadb_url() -> Option<String> {
        let server = crate::db::test_mariadb_server()?;
        let name = format!(
            "lease_{}_{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        );
        let mut admin = AnyConnection::connect(&server)
            .await
            .expect("the test MariaDB server");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        let url = format!("{}/{name}", server.trim_end_matches('/'));
        let mut conn = AnyConnection::connect(&url).await.unwrap();
        conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
            .await
            .unwrap();
        Some(url)
    }

    async fn committed(pool: &Arc<Leases>) -> Vec<i64> {
        let mut reader = pool.lease().await.unwrap();
        sqlx::query_scalar::<_, i64>("SELECT x FROM t ORDER BY x")
            .fetch_all(&mut *reader)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_connection_for_writes_keeps_nothing_unless_committed() {
        let _epoch = EPOCH.lock().await;
        let Some(url) = mariadb_url().await else {
            return;
        };
        let pool = Leases::new(&url, 3, Duration::from_secs(5), None).unwrap();

        let mut abandoned = pool.lease_for(Purpose::Writes).await.unwrap();
        abandoned.execute("INSERT INTO t VALUES (1)").await.unwrap();
        drop(abandoned);
        assert_eq!(
            committed(&pool).await,
            Vec::<i64>::new(),
            "dropped uncommitted: rolled back"
        );

        let mut kept = pool.lease_for(Purpose::Writes).await.unwrap();
        kept.execute("INSERT INTO t VALUES (2)").await.unwrap();
        assert_eq!(
            committed(&pool).await,
            Vec::<i64>::new(),
            "not visible before the commit"
        );
        kept.end(true).await.unwrap();
        assert_eq!(committed(&pool).await, [2]);

        let mut undone = pool.lease_for(Purpose::Writes).await.unwrap();
        undone.execute("INSERT INTO t VALUES (3)").await.unwrap();
        undone.end(false).await.unwrap();
        assert_eq!(committed(&pool).await, [2]);

        // A reused connection for writes starts from what is committed now.
        let mut elsewhere = pool.lease_for(Purpose::Writes).await.unwrap();
        let mut again = pool.lease_for(Purpose::Writes).await.unwrap();
        elsewhere.execute("INSERT INTO t VALUES (4)").await.unwrap();
        elsewhere.end(true).await.unwrap();
        let seen = sqlx::query_scalar::<_, i64>("SELECT x FROM t ORDER BY x")
            .fetch_all(&mut *again)
            .await
            .unwrap();
        assert_eq!(seen, [2, 4]);
        again.end(true).await.unwrap();

        // Connections kept for one purpose make way for the other's: never more
        // than the bound open.
        let readers = [
            pool.lease().await.unwrap(),
            pool.lease().await.unwrap(),
            pool.lease().await.unwrap(),
        ];
        drop(readers);
        let writers = [
            pool.lease_for(Purpose::Writes).await.unwrap(),
            pool.lease_for(Purpose::Writes).await.unwrap(),
            pool.lease_for(Purpose::Writes).await.unwrap(),
        ];
        assert_eq!(pool.usage(), (3, 0));
        for writer in writers {
            writer.end(true).await.unwrap();
        }
        assert!(pool.usage().0 <= 3, "{:?}", pool.usage());
        pool.close().await;
        let mut admin = AnyConnection::connect(&url).await.unwrap();
        let name = url.rsplit('/').next().unwrap().to_string();
        admin
            .execute(format!("DROP DATABASE {name}").as_str())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_client_beyond_its_share_leaves_a_share_free_for_the_others() {
        // Four leases: a share is one.
        let pool = leases(4);
        let (a, b): (Arc<str>, Arc<str>) = ("192.0.2.1".into(), "192.0.2.2".into());
        let mut held = LEASE_CLIENT
            .scope(Some(a.clone()), async {
                let mut held = Vec::new();
                for _ in 0..3 {
                    held.push(pool.lease().await.unwrap());
                }
                held
            })
            .await;
        assert!(
            matches!(
                LEASE_CLIENT.scope(Some(a.clone()), pool.lease()).await,
                Err(sqlx::Error::PoolTimedOut)
            ),
            "a fourth would leave no place for another client"
        );
        let other = LEASE_CLIENT.scope(Some(b.clone()), pool.lease()).await;
        assert!(other.is_ok(), "the place kept free is another client's");
        drop(other);
        // The server's own work counts for no one.
        let own = LEASE_CLIENT.scope(None, pool.lease()).await;
        assert!(own.is_ok(), "the place kept free is not a client's");
        drop(own);

        let waiting = tokio::spawn(LEASE_CLIENT.scope(Some(a.clone()), {
            let pool = pool.clone();
            async move { pool.lease().await.map(drop) }
        }));
        drop(held.pop());
        assert!(
            waiting.await.unwrap().is_ok(),
            "one of its own returned, the client's waiting lease is given"
        );
    }
}
