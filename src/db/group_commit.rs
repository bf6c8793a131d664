//! Group commit of document writes on SQLite, which has one writer. Rather than
//! each request holding the write lock from its first write until its response is
//! built, requests with a single mutation field join a shared transaction (a
//! batch) and hold its connection only while one operation runs, inside a
//! savepoint of its own: an operation that fails leaves nothing, and the others'
//! work goes on (a create needs none: its single insert statement is undone whole
//! by SQLite when it fails). The batch commits when its last member has finished, and every
//! member is answered only then. A member that fails after its writes were made
//! cannot be taken out alone: the batch rolls back and every member runs again,
//! alone in a transaction of its own ([`Outcome::RolledBack`]). Members hand
//! their events over as they leave; the batch logs them all as its last
//! statements ([`super::event_log`]) and keeps them, as logged, for its members to
//! announce once committed.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sqlx::{Any, AnyConnection, AnyPool, Executor as _, Transaction};
use tokio::sync::{Mutex, MutexGuard, OwnedSemaphorePermit, Semaphore, watch};

use super::event_log::{self, Entry, Logged};
use crate::error::{AppError, AppResult};

/// Most requests one batch takes: bounds how long its first member waits.
const MAX_MEMBERS: usize = 128;
/// How long a batch takes new members after it began.
const MAX_OPEN: Duration = Duration::from_millis(20);

/// How a batch ended, as its members learn it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every member's writes are committed.
    Committed,
    /// Undone because a member failed after writing: every member runs again.
    RolledBack,
    /// The commit itself failed: every member's writes are lost.
    Failed,
}

/// The batches of one database, taking turns with exclusive writers on `writer`.
pub struct GroupCommit {
    pool: AnyPool,
    writer: Arc<Semaphore>,
    current: StdMutex<Option<Arc<Batch>>>,
    /// One request at a time opens a batch; the others then join it.
    opening: Mutex<()>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

struct Members {
    /// Joined and not yet finished.
    active: usize,
    joined: usize,
    accepting: bool,
    poisoned: bool,
}

/// The batch's transaction, locked for one operation or read.
pub type BatchGuard<'a> = MutexGuard<'a, Option<Transaction<'static, Any>>>;

/// One shared transaction and the requests in it.
pub struct Batch {
    tx: Mutex<Option<Transaction<'static, Any>>>,
    members: StdMutex<Members>,
    outcome: watch::Sender<Option<Outcome>>,
    /// The writer's turn, held until the batch has ended.
    turn: StdMutex<Option<OwnedSemaphorePermit>>,
    began: Instant,
    /// Where the savepoint of the last operation stands. Changed only by the holder
    /// of `tx`.
    savepoint: StdMutex<Savepoint>,
    /// The events of members that left, to log before the commit.
    entries: StdMutex<Vec<Entry>>,
    /// The events as logged by the commit, until a member announces them.
    logged: StdMutex<Vec<Logged>>,
}

/// The savepoint of the last operation in a batch: operations take turns, so only
/// one is ever open. Ending an operation costs no statement: its savepoint is
/// released together with the next one's beginning (or by the commit), and
/// undone before anyone uses the connection again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Savepoint {
    None,
    /// The operation succeeded: release it.
    Kept,
    /// The operation failed or was abandoned half-way: roll back to it.
    Undo,
}

const SAVEPOINT: &str = "nimbus_op";

impl GroupCommit {
    pub fn new(pool: AnyPool, writer: Arc<Semaphore>) -> GroupCommit {
        GroupCommit {
            pool,
            writer,
            current: StdMutex::new(None),
            opening: Mutex::new(()),
        }
    }

    /// Joins the open batch, or begins one when there is none taking members.
    pub async fn join(&self) -> AppResult<Arc<Batch>> {
        if let Some(batch) = self.joinable() {
            return Ok(batch);
        }
        let _opening = self.opening.lock().await;
        // Whoever opened a batch while this request waited has room for it.
        if let Some(batch) = self.joinable() {
            return Ok(batch);
        }
        let turn = self
            .writer
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AppError::Internal(anyhow::anyhow!("the database is closing")))?;
        // Begun in a task of its own: a request that goes away mid-`BEGIN` must
        // not leave a connection inside a transaction nobody owns.
        let pool = self.pool.clone();
        let tx = tokio::spawn(async move { pool.begin_with("BEGIN IMMEDIATE").await })
            .await
            .map_err(|err| AppError::Internal(anyhow::anyhow!("beginning a batch: {err}")))??;
        let batch = Arc::new(Batch {
            tx: Mutex::new(Some(tx)),
            members: StdMutex::new(Members {
                active: 1,
                joined: 1,
                accepting: true,
                poisoned: false,
            }),
            outcome: watch::channel(None).0,
            turn: StdMutex::new(Some(turn)),
            began: Instant::now(),
            savepoint: StdMutex::new(Savepoint::None),
            entries: StdMutex::new(Vec::new()),
            logged: StdMutex::new(Vec::new()),
        });
        if let Ok(mut current) = self.current.lock() {
            *current = Some(batch.clone());
        }
        Ok(batch)
    }

    fn joinable(&self) -> Option<Arc<Batch>> {
        let current = self.current.lock().ok()?;
        let batch = current.as_ref()?;
        let mut members = batch.members.lock().ok()?;
        if !members.accepting {
            return None;
        }
        if members.joined >= MAX_MEMBERS || batch.began.elapsed() > MAX_OPEN {
            members.accepting = false;
            return None;
        }
        members.active += 1;
        members.joined += 1;
        Some(batch.clone())
    }
}

impl Batch {
    /// The batch's transaction, for one operation or read at a time.
    pub fn connection(&self) -> BoxFuture<'_, AppResult<BatchGuard<'_>>> {
        Box::pin(self.connection_impl())
    }

    async fn connection_impl(&self) -> AppResult<BatchGuard<'_>> {
        let mut tx = self.tx.lock().await;
        let Some(conn) = tx.as_mut() else {
            return Err(AppError::Internal(anyhow::anyhow!("the batch has ended")));
        };
        if self.savepoint() == Savepoint::Undo {
            // Marked first: once sent, the statements run even if this future is
            // dropped, and must not run twice.
            self.set_savepoint(Savepoint::None);
            let undone = run(
                conn,
                format!("ROLLBACK TO {SAVEPOINT}; RELEASE {SAVEPOINT}"),
            )
            .await;
            if let Err(err) = undone {
                tracing::warn!(error = %err, "undoing a failed operation failed; the batch will roll back");
                self.poison();
            }
        }
        Ok(tx)
    }

    /// Begins an operation on `conn` (got from [`Batch::connection`]) with a
    /// savepoint, releasing the last operation's in the same round trip.
    pub fn begin_operation<'c>(
        &'c self,
        conn: &'c mut AnyConnection,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
        let sql = match self.savepoint() {
            Savepoint::Kept => format!("RELEASE {SAVEPOINT}; SAVEPOINT {SAVEPOINT}"),
            _ => format!("SAVEPOINT {SAVEPOINT}"),
        };
        Box::pin(async move {
            let begun = run(conn, sql).await;
            match &begun {
                // Undone should the operation never end.
                Ok(()) => self.set_savepoint(Savepoint::Undo),
                Err(_) => {
                    // The connection's savepoints are unknown (a beginning cut
                    // short may have released the last one): only a rollback of
                    // the whole batch is safe.
                    self.set_savepoint(Savepoint::None);
                    self.poison();
                }
            }
            begun
        })
    }

    /// Ends an operation begun with [`Batch::begin_operation`]: kept, or undone
    /// before the connection's next use.
    pub fn end_operation(&self, succeeded: bool) {
        self.set_savepoint(if succeeded {
            Savepoint::Kept
        } else {
            Savepoint::Undo
        });
    }

    fn savepoint(&self) -> Savepoint {
        self.savepoint.lock().map_or(Savepoint::None, |s| *s)
    }

    fn set_savepoint(&self, state: Savepoint) {
        if let Ok(mut savepoint) = self.savepoint.lock() {
            *savepoint = state;
        }
    }

    /// Marks the batch to be rolled back at its end, and closes it to newcomers.
    pub fn poison(&self) {
        if let Ok(mut members) = self.members.lock() {
            members.poisoned = true;
            members.accepting = false;
        }
    }

    /// A member is done: `failed_after_writing` poisons the batch; `entries` are
    /// its events, logged with the batch. The last member out ends the batch.
    /// Returns a receiver of the batch's outcome.
    pub fn leave(
        self: &Arc<Self>,
        failed_after_writing: bool,
        entries: Vec<Entry>,
    ) -> watch::Receiver<Option<Outcome>> {
        let outcome = self.outcome.subscribe();
        if let Ok(mut pending) = self.entries.lock() {
            pending.extend(entries);
        }
        let last = match self.members.lock() {
            Ok(mut members) => {
                if failed_after_writing {
                    members.poisoned = true;
                }
                members.active = members.active.saturating_sub(1);
                if members.active == 0 {
                    members.accepting = false;
                    Some(members.poisoned)
                } else {
                    None
                }
            }
            Err(_) => Some(true),
        };
        if let Some(poisoned) = last {
            let batch = self.clone();
            // Ended in a task of its own: a request going away cannot cut a
            // COMMIT or ROLLBACK in half.
            tokio::spawn(async move { batch.end(poisoned).await });
        }
        outcome
    }

    /// What the committed batch logged, for the first member that asks.
    pub fn take_logged(&self) -> Vec<Logged> {
        self.logged
            .lock()
            .map(|mut logged| std::mem::take(&mut *logged))
            .unwrap_or_default()
    }

    async fn end(&self, poisoned: bool) {
        let tx = match self.connection().await {
            Ok(mut guard) => guard.take(),
            Err(_) => None,
        };
        // A failed undo of an abandoned operation poisons late.
        let poisoned = poisoned || self.members.lock().map_or(true, |m| m.poisoned);
        let entries = self
            .entries
            .lock()
            .map(|mut entries| std::mem::take(&mut *entries))
            .unwrap_or_default();
        let mut tx = tx;
        if !poisoned && let Some(conn) = tx.as_mut() {
            match event_log::append(conn, entries).await {
                Ok(logged) => {
                    if let Ok(mut kept) = self.logged.lock() {
                        *kept = logged;
                    }
                }
                Err(err) => {
                    // Without its events the batch may not commit.
                    tracing::error!(error = %err, "logging a batch's events failed");
                    if let Some(tx) = tx.take() {
                        let _ = tx.rollback().await;
                    }
                }
            }
        }
        let outcome = match tx {
            None => Outcome::Failed,
            Some(tx) if poisoned => match tx.rollback().await {
                Ok(()) => Outcome::RolledBack,
                Err(err) => {
                    tracing::error!(error = %err, "rolling back a batch failed");
                    Outcome::RolledBack
                }
            },
            Some(tx) => match tx.commit().await {
                Ok(()) => Outcome::Committed,
                Err(err) => {
                    tracing::error!(error = %err, "committing a batch failed");
                    Outcome::Failed
                }
            },
        };
        if let Ok(mut turn) = self.turn.lock() {
            turn.take();
        }
        let label = match outcome {
            Outcome::Committed => "committed",
            Outcome::RolledBack => "rolled_back",
            Outcome::Failed => "failed",
        };
        metrics::counter!("nimbus_write_batches_total", "outcome" => label).increment(1);
        let members = self.members.lock().map_or(0, |m| m.joined);
        metrics::counter!("nimbus_write_batch_members_total").increment(members as u64);
        self.outcome.send_replace(Some(outcome));
    }
}

/// Runs statements without preparing them (savepoint bookkeeping); boxed so that
/// callers' futures stay `Send` for any connection lifetime.
fn run(conn: &mut AnyConnection, sql: String) -> BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(run_impl(conn, sql))
}

async fn run_impl(conn: &mut AnyConnection, sql: String) -> Result<(), sqlx::Error> {
    conn.execute(sql.as_str()).await?;
    Ok(())
}

/// Waits for the outcome of a batch left with [`Batch::leave`].
pub async fn outcome(mut receiver: watch::Receiver<Option<Outcome>>) -> Outcome {
    match receiver.wait_for(Option::is_some).await {
        Ok(seen) => seen.unwrap_or(Outcome::Failed),
        Err(_) => Outcome::Failed,
    }
}
