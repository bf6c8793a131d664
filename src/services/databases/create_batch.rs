//! Shared inserts of creates on MariaDB. A request whose only write is one create
//! (no relationships set) queues its rows; one task per collection takes every
//! row waiting and writes them with a multi-row `INSERT` for the documents and
//! one for their permissions, in a transaction of its own, a few round trips for
//! the lot instead of three per create. Each request then builds its answer, and
//! the transaction commits once all have: a request whose answer fails undoes the
//! whole flight, and every member runs again alone, in a transaction of its own
//! (as with SQLite's group commit, [`crate::db::group_commit`]). A flight whose
//! insert fails (an id taken, a unique index) gives its rows back, and each
//! request inserts its own, getting its own error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};

use sqlx::{Any, QueryBuilder};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::db::Db;
use crate::db::group_commit::Outcome;
use crate::db::lease::Lease;
use crate::error::{AppError, AppResult};

use super::Collection;
use super::ddl::perms_table;
use super::documents::{NewRow, insert_columns};
use super::model::SqlDialect;

/// Most rows one flight inserts.
const MAX_ROWS: usize = 64;
/// Most bytes of values one flight sends.
const MAX_BYTES: usize = 1 << 20;
/// Most placeholders in one statement (MariaDB's protocol allows 65,535).
const MAX_PLACEHOLDERS: usize = 60_000;
/// Flights of one collection that may be open at once: while one waits for its
/// members' answers and its commit, the next is written.
const FLIGHTS_PER_COLLECTION: usize = 2;

/// The create queues of the collections, by the shape of their rows.
pub struct CreateBatches {
    db: Db,
    queues: StdMutex<HashMap<String, Arc<Queue>>>,
    /// Turns of flights across collections: each holds a connection until its
    /// members have answered, and answers may need connections too.
    flights: Arc<Semaphore>,
}

impl std::fmt::Debug for CreateBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateBatches").finish_non_exhaustive()
    }
}

/// The creates waiting for one table with one set of columns.
struct Queue {
    insert: String,
    insert_grants: String,
    columns: usize,
    state: StdMutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    waiting: Vec<Waiting>,
    flying: usize,
}

struct Waiting {
    row: NewRow,
    reply: oneshot::Sender<(NewRow, Option<Arc<Flight>>)>,
}

impl CreateBatches {
    /// Queues over `db`, with at most `max_flights` flights open at once.
    pub fn new(db: Db, max_flights: usize) -> CreateBatches {
        CreateBatches {
            db,
            queues: StdMutex::new(HashMap::new()),
            flights: Arc::new(Semaphore::new(max_flights.max(1))),
        }
    }

    /// Inserts `row` into `collection` with others'. Gives the row back, with the
    /// flight that holds it uncommitted (for the request to leave once answered),
    /// or with none when the flight's insert failed: then the row is to be
    /// inserted alone.
    pub async fn insert(
        &self,
        collection: &Collection,
        row: NewRow,
    ) -> AppResult<(NewRow, Option<Arc<Flight>>)> {
        let columns = insert_columns(SqlDialect::MySql, collection);
        let insert = format!("INSERT INTO `{}` ({columns}) ", collection.table);
        let queue = {
            let Ok(mut queues) = self.queues.lock() else {
                return Ok((row, None));
            };
            queues
                .entry(insert)
                .or_insert_with_key(|insert| {
                    Arc::new(Queue {
                        insert: insert.clone(),
                        insert_grants: format!(
                            "INSERT INTO `{}` (resource_id, role, actions) ",
                            perms_table(&collection.table)
                        ),
                        columns: collection.columns().len() + 3,
                        state: StdMutex::new(QueueState::default()),
                    })
                })
                .clone()
        };
        let (reply, answer) = oneshot::channel();
        let start = {
            let Ok(mut state) = queue.state.lock() else {
                return Ok((row, None));
            };
            state.waiting.push(Waiting { row, reply });
            let start = state.flying < FLIGHTS_PER_COLLECTION;
            if start {
                state.flying += 1;
            }
            start
        };
        if start {
            // A task of its own: a request going away must not stop the others'.
            tokio::spawn(queue.fly(self.db.clone(), self.flights.clone()));
        }
        // Without an answer, the flying task ended early (it panicked): its
        // connection was closed with the transaction open, so nothing was written.
        answer.await.map_err(|_| {
            AppError::Internal(anyhow::anyhow!("a shared insert ended without an answer"))
        })
    }
}

impl Queue {
    /// Flies the waiting rows, flight after flight, until none are left.
    async fn fly(self: Arc<Queue>, db: Db, flights: Arc<Semaphore>) {
        let mut flying = Flying(Some(&self));
        loop {
            let Ok(_turn) = flights.acquire().await else {
                return;
            };
            let taken = {
                let Ok(mut state) = self.state.lock() else {
                    return;
                };
                if state.waiting.is_empty() {
                    // Given up under the lock that a newcomer checks.
                    state.flying -= 1;
                    flying.0 = None;
                    return;
                }
                let most = MAX_ROWS.min(MAX_PLACEHOLDERS / self.columns.max(1)).max(1);
                let mut bytes = 0;
                let mut count = 0;
                for waiting in &state.waiting {
                    bytes += waiting.row.size();
                    if count == most || (count > 0 && bytes > MAX_BYTES) {
                        break;
                    }
                    count += 1;
                }
                state.waiting.drain(..count).collect::<Vec<_>>()
            };
            self.flight(&db, taken).await;
        }
    }

    /// Inserts `taken` in one transaction and waits for it to end.
    async fn flight(&self, db: &Db, taken: Vec<Waiting>) {
        let rows: Vec<&NewRow> = taken.iter().map(|waiting| &waiting.row).collect();
        let written = self.write(db, &rows).await;
        drop(rows);
        let lease = match written {
            Ok(lease) => lease,
            Err(err) => {
                tracing::debug!(error = %err, rows = taken.len(), "a shared insert failed; its creates run alone");
                metrics::counter!("nimbus_write_batches_total", "outcome" => "not_written")
                    .increment(1);
                for waiting in taken {
                    let _ = waiting.reply.send((waiting.row, None));
                }
                return;
            }
        };
        let flight = Arc::new(Flight {
            lease: StdMutex::new(Some(lease)),
            members: StdMutex::new(Members {
                active: taken.len(),
                joined: taken.len(),
                poisoned: false,
            }),
            outcome: watch::channel(None).0,
        });
        let ended = flight.outcome.subscribe();
        for waiting in taken {
            if waiting
                .reply
                .send((waiting.row, Some(flight.clone())))
                .is_err()
            {
                // Its request went away before hearing of its write, and would not
                // announce it: the flight is undone, and the others run again.
                flight.leave(true);
            }
        }
        drop(flight);
        crate::db::group_commit::outcome(ended).await;
    }

    /// Writes the rows on a connection of their own, inside its transaction.
    async fn write(&self, db: &Db, rows: &[&NewRow]) -> Result<Lease, sqlx::Error> {
        let mut lease = match db.lease_for_writes().await {
            Some(lease) => lease?,
            None => return Err(sqlx::Error::PoolClosed),
        };
        let mut documents = QueryBuilder::<Any>::new(self.insert.as_str());
        documents.push_values(rows.iter().copied(), |values, row| row.push_values(values));
        let written = documents.build().execute(&mut *lease).await;
        let written = match written {
            Ok(_) if rows.iter().any(|row| !row.grants.is_empty()) => {
                let mut grants = QueryBuilder::<Any>::new(self.insert_grants.as_str());
                grants.push_values(
                    rows.iter().flat_map(|row| &row.grants),
                    |mut b, (resource, role, actions)| {
                        b.push_bind(resource.as_str())
                            .push_bind(role.as_str())
                            .push_bind(*actions);
                    },
                );
                grants.build().execute(&mut *lease).await.map(drop)
            }
            other => other.map(drop),
        };
        match written {
            Ok(()) => Ok(lease),
            Err(err) => {
                // Rolled back in a task of its own; a connection that cannot is
                // closed, and MariaDB rolls back.
                tokio::spawn(async move {
                    let _ = lease.end(false).await;
                });
                Err(err)
            }
        }
    }
}

/// Gives up a queue's flying task when it ends, however it ends; should it end
/// with rows waiting (it panicked), their requests hear nothing and fail.
struct Flying<'a>(Option<&'a Queue>);

impl Drop for Flying<'_> {
    fn drop(&mut self) {
        if let Some(Ok(mut state)) = self.0.map(|queue| queue.state.lock()) {
            state.flying -= 1;
            if state.flying == 0 {
                state.waiting.clear();
            }
        }
    }
}

struct Members {
    /// Not yet answered.
    active: usize,
    joined: usize,
    poisoned: bool,
}

/// One shared insert, uncommitted until every member has answered.
pub struct Flight {
    lease: StdMutex<Option<Lease>>,
    members: StdMutex<Members>,
    outcome: watch::Sender<Option<Outcome>>,
}

impl std::fmt::Debug for Flight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flight").finish_non_exhaustive()
    }
}

impl Flight {
    /// A member has answered: `failed` (its answer has errors, or it went away
    /// unannounced) undoes the flight. The last member out ends it. Returns a
    /// receiver of the flight's outcome.
    pub fn leave(self: &Arc<Self>, failed: bool) -> watch::Receiver<Option<Outcome>> {
        let outcome = self.outcome.subscribe();
        let last = match self.members.lock() {
            Ok(mut members) => {
                members.poisoned |= failed;
                members.active = members.active.saturating_sub(1);
                (members.active == 0).then_some((members.poisoned, members.joined))
            }
            Err(_) => Some((true, 0)),
        };
        if let Some((poisoned, joined)) = last {
            let flight = self.clone();
            // Ended in a task of its own: a request going away cannot cut a
            // COMMIT or ROLLBACK in half.
            tokio::spawn(async move { flight.end(poisoned, joined).await });
        }
        outcome
    }

    async fn end(&self, poisoned: bool, joined: usize) {
        let lease = self.lease.lock().ok().and_then(|mut lease| lease.take());
        let outcome = match lease {
            None => Outcome::Failed,
            Some(lease) if poisoned => {
                if let Err(err) = lease.end(false).await {
                    tracing::warn!(error = %err, "rolling back a shared insert failed; its connection is closed");
                }
                Outcome::RolledBack
            }
            Some(lease) => match lease.end(true).await {
                Ok(()) => Outcome::Committed,
                Err(err) => {
                    tracing::error!(error = %err, "committing a shared insert failed");
                    Outcome::Failed
                }
            },
        };
        let label = match outcome {
            Outcome::Committed => "committed",
            Outcome::RolledBack => "rolled_back",
            Outcome::Failed => "failed",
        };
        metrics::counter!("nimbus_write_batches_total", "outcome" => label).increment(1);
        metrics::counter!("nimbus_write_batch_members_total").increment(joined as u64);
        self.outcome.send_replace(Some(outcome));
    }
}
