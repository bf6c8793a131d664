//! Shared inserts of creates. A request whose only write is one create
//! (no relationships set) queues its rows; one task per collection takes every
//! row waiting and writes them with a multi-row `INSERT` for the documents and
//! one for their permissions, in a transaction of its own, a few round trips for
//! the lot instead of three per create on MariaDB. On SQLite a flight holds the
//! writer's turn ([`Db::writer_turn`]) from its insert to its commit, as a
//! group-committed batch does ([`crate::db::group_commit`]), and takes the turn
//! before the rows: every create that waited meanwhile goes into one statement,
//! rather than each taking the batch's connection for a round trip to SQLite's
//! thread of its own (ADR 34). Each request then builds its answer, and
//! the transaction commits once all have: a request whose answer fails undoes the
//! whole flight, and every member runs again alone, in a transaction of its own
//! (as with SQLite's group commit, [`crate::db::group_commit`]). A flight whose
//! insert fails (an id taken, a unique index) gives its rows back, and each
//! request inserts its own, getting its own error. Members hand their events over
//! as they leave; the flight logs them as its last statements before COMMIT.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use sqlx::any::AnyTransactionManager;
use sqlx::{Any, QueryBuilder, TransactionManager as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};

use crate::db::Db;
use crate::db::event_log::{self, Entry, Logged};
use crate::db::group_commit::Outcome;
use crate::db::lease::Lease;
use crate::error::{AppError, AppResult};

use super::ddl::perms_table;
use super::documents::{GRANT_COLUMNS, NewRow, insert_columns, returning_sequence};
use super::model::SqlDialect;
use super::{Collection, sql_dialect};

/// Most rows one flight inserts.
const MAX_ROWS: usize = 64;
/// Most bytes of values one flight sends (a single row may send more).
const MAX_BYTES: usize = 1 << 20;
/// Most placeholders in one statement (MariaDB's protocol allows 65,535).
const MAX_PLACEHOLDERS: usize = 60_000;
/// Most placeholders in one statement on SQLite (its limit is 32,766).
const MAX_PLACEHOLDERS_SQLITE: usize = 32_000;
/// Flights of one collection that may be open at once: while one waits for its
/// members' answers and its commit, the next is written.
const FLIGHTS_PER_COLLECTION: usize = 2;

/// The create queues of the collections, by table and structure version (every
/// change of a collection's columns bumps its version).
pub struct CreateBatches {
    db: Db,
    dialect: SqlDialect,
    queues: StdMutex<HashMap<(String, i64), Arc<Queue>>>,
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
    /// ` RETURNING rowid, id`: the sequences the rows were given, by id.
    returning: String,
    insert_grants: String,
    columns: usize,
    max_placeholders: usize,
    /// Flights of a power of two rows only ([`Queue::fly`]).
    fixed_shapes: bool,
    state: StdMutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    waiting: Vec<Waiting>,
    flying: usize,
}

struct Waiting {
    row: NewRow,
    reply: oneshot::Sender<(NewRow, Option<Membership>)>,
}

impl CreateBatches {
    /// Queues over `db`, with at most `max_flights` flights open at once.
    pub fn new(db: Db, max_flights: usize) -> CreateBatches {
        CreateBatches {
            dialect: sql_dialect(db.dialect()),
            db,
            queues: StdMutex::new(HashMap::new()),
            flights: Arc::new(Semaphore::new(max_flights.max(1))),
        }
    }

    /// Inserts `row` into `collection` with others'. Gives the row back, with a
    /// place in the flight that holds it uncommitted (for the request to leave
    /// once answered), or with none when the flight's insert failed: then the row
    /// is to be inserted alone.
    pub async fn insert(
        &self,
        collection: &Collection,
        row: NewRow,
    ) -> AppResult<(NewRow, Option<Membership>)> {
        let queue = {
            let Ok(mut queues) = self.queues.lock() else {
                return Ok((row, None));
            };
            // Found by the collection's table and structure version: the
            // statements are made once per shape, not per create.
            queues
                .entry((collection.table.clone(), collection.version))
                .or_insert_with(|| {
                    let dialect = self.dialect;
                    let mut insert = String::from("INSERT INTO ");
                    dialect.push_quoted(&mut insert, "", &collection.table);
                    insert.push_str(" (");
                    insert.push_str(&insert_columns(dialect, collection));
                    insert.push_str(") ");
                    let mut returning = returning_sequence(dialect);
                    returning.push_str(", ");
                    dialect.push_quoted(&mut returning, "", "id");
                    let mut insert_grants = String::from("INSERT INTO ");
                    dialect.push_quoted(&mut insert_grants, "", &perms_table(&collection.table));
                    insert_grants.push(' ');
                    insert_grants.push_str(GRANT_COLUMNS);
                    insert_grants.push(' ');
                    Arc::new(Queue {
                        insert,
                        returning,
                        insert_grants,
                        columns: collection.columns().len() + 4,
                        max_placeholders: match dialect {
                            SqlDialect::Sqlite => MAX_PLACEHOLDERS_SQLITE,
                            SqlDialect::MySql => MAX_PLACEHOLDERS,
                        },
                        fixed_shapes: dialect == SqlDialect::MySql,
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
            // SQLite's writer first (none on MariaDB): the rows are taken once
            // it is this flight's turn to write, so that every create that came
            // while another write held it flies now, in one statement.
            let writer = db.writer_turn().await;
            let taken = {
                let Ok(mut state) = self.state.lock() else {
                    return;
                };
                // Requests that went away while waiting are not written.
                state.waiting.retain(|waiting| !waiting.reply.is_closed());
                if state.waiting.is_empty() {
                    // Given up under the lock that a newcomer checks.
                    state.flying -= 1;
                    flying.0 = None;
                    return;
                }
                let (mut bytes, mut grants, mut count) = (0, 0, 0);
                for waiting in &state.waiting {
                    bytes += waiting.row.size();
                    grants += waiting.row.grants.len();
                    let full = count == MAX_ROWS
                        || (count + 1) * self.columns > self.max_placeholders
                        || grants * 4 > self.max_placeholders
                        || bytes > MAX_BYTES;
                    if count > 0 && full {
                        break;
                    }
                    count += 1;
                }
                if self.fixed_shapes {
                    // MariaDB prepares each statement on the server, once per
                    // connection and per number of rows (ADR 38): flights of 1,
                    // 2, 4, … 64 rows keep that to seven shapes of each of a
                    // flight's statements, prepared once and then cached. The
                    // rows left fly next, in a flight of the collection's
                    // running beside this one.
                    count = 1 << count.ilog2();
                }
                state.waiting.drain(..count).collect::<Vec<_>>()
            };
            self.flight(&db, taken, writer).await;
        }
    }

    /// Inserts `taken` in one transaction and waits for it to end; `writer`
    /// is SQLite's turn, held until then.
    async fn flight(&self, db: &Db, taken: Vec<Waiting>, writer: Option<OwnedSemaphorePermit>) {
        let rows: Vec<&NewRow> = taken.iter().map(|waiting| &waiting.row).collect();
        let written = self.write(db, &rows, writer).await;
        drop(rows);
        let (lease, writer, sequences) = match written {
            Ok(written) => written,
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
            writer: StdMutex::new(writer),
            members: StdMutex::new(Members {
                active: taken.len(),
                joined: taken.len(),
                poisoned: false,
            }),
            outcome: watch::channel(None).0,
            entries: StdMutex::new(Vec::new()),
            logged: StdMutex::new(Vec::new()),
        });
        let ended = flight.outcome.subscribe();
        for waiting in taken {
            // Should its request have gone away, the place is dropped unclaimed,
            // and undoes the flight (see `Membership`).
            let place = Membership {
                flight: flight.clone(),
                left: AtomicBool::new(false),
                sequence: sequences.get(&waiting.row.id).copied().unwrap_or(0),
            };
            let _ = waiting.reply.send((waiting.row, Some(place)));
        }
        drop(flight);
        crate::db::group_commit::outcome(ended).await;
    }

    /// Writes the rows on a connection of their own, inside its transaction;
    /// gives SQLite's `writer` turn back with it, to hold until the commit.
    async fn write(
        &self,
        db: &Db,
        rows: &[&NewRow],
        writer: Option<OwnedSemaphorePermit>,
    ) -> Result<(Lease, Option<OwnedSemaphorePermit>, HashMap<String, i64>), sqlx::Error> {
        let mut lease = match db.lease_for_writes().await {
            Some(lease) => lease?,
            None => {
                // SQLite, with the writer's turn held: the write lock at once.
                let mut lease = db.lease_writer().await?;
                AnyTransactionManager::begin(&mut lease, Some("BEGIN IMMEDIATE".into())).await?;
                lease
            }
        };
        let mut documents = QueryBuilder::<Any>::new(self.insert.as_str());
        documents.push_values(rows.iter().copied(), |values, row| row.push_values(values));
        documents.push(self.returning.as_str());
        // Matched by id: the order of a `RETURNING`'s rows is not promised.
        let written = documents
            .build_query_as::<(Option<i64>, String)>()
            .fetch_all(&mut *lease)
            .await
            .map(|rows| {
                rows.into_iter()
                    .map(|(sequence, id)| (id, sequence.unwrap_or(0)))
                    .collect::<HashMap<_, _>>()
            })
            .and_then(|sequences| match sequences.len() == rows.len() {
                true => Ok(sequences),
                // Not expected; the flight is undone and each row written alone.
                false => Err(sqlx::Error::RowNotFound),
            });
        let written = match written {
            Ok(sequences) if rows.iter().any(|row| !row.grants.is_empty()) => {
                let mut grants = QueryBuilder::<Any>::new(self.insert_grants.as_str());
                NewRow::push_all_grants(&mut grants, rows);
                grants.build().execute(&mut *lease).await.map(|_| sequences)
            }
            other => other,
        };
        match written {
            Ok(sequences) => Ok((lease, writer, sequences)),
            Err(err) => {
                // Rolled back in a task of its own, the writer's turn held until
                // then; a connection that cannot is closed, and the database
                // rolls back.
                tokio::spawn(async move {
                    let _ = lease.end(false).await;
                    drop(writer);
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
pub(super) struct Flight {
    lease: StdMutex<Option<Lease>>,
    /// SQLite's writer turn, given back once the flight has ended.
    writer: StdMutex<Option<OwnedSemaphorePermit>>,
    members: StdMutex<Members>,
    outcome: watch::Sender<Option<Outcome>>,
    /// The events of members that left, to log before the commit.
    entries: StdMutex<Vec<Entry>>,
    /// The events as logged by the commit, until a member announces them.
    logged: StdMutex<Vec<Logged>>,
}

impl std::fmt::Debug for Flight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flight").finish_non_exhaustive()
    }
}

/// A request's place in a flight. Dropped without [`Membership::leave`] (its
/// request went away before hearing of its write, and so would not announce it),
/// it undoes the flight, and the others run again.
pub struct Membership {
    flight: Arc<Flight>,
    left: AtomicBool,
    /// The sequence the flight's insert gave the row.
    pub sequence: i64,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").finish_non_exhaustive()
    }
}

impl Membership {
    /// The request has answered: `failed` (its answer has errors) undoes the
    /// flight; `entries` are its events, logged with the flight. The last member
    /// out ends it. Returns a receiver of the flight's outcome; only the first
    /// call counts.
    pub fn leave(&self, failed: bool, entries: Vec<Entry>) -> watch::Receiver<Option<Outcome>> {
        if self.left.swap(true, Ordering::SeqCst) {
            return self.flight.outcome.subscribe();
        }
        if let Ok(mut pending) = self.flight.entries.lock() {
            pending.extend(entries);
        }
        self.flight.leave(failed)
    }

    /// What the committed flight logged, for the first member that asks.
    pub fn take_logged(&self) -> Vec<Logged> {
        self.flight.take_logged()
    }

    /// The flight, to take what it logged once it has ended.
    pub(super) fn flight_handle(&self) -> Arc<Flight> {
        self.flight.clone()
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if !self.left.swap(true, Ordering::SeqCst) {
            self.flight.leave(true);
        }
    }
}

impl Flight {
    fn leave(self: &Arc<Self>, failed: bool) -> watch::Receiver<Option<Outcome>> {
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

    /// What the committed flight logged, for the first member that asks.
    pub(super) fn take_logged(&self) -> Vec<Logged> {
        self.logged
            .lock()
            .map(|mut logged| std::mem::take(&mut *logged))
            .unwrap_or_default()
    }

    async fn end(&self, poisoned: bool, joined: usize) {
        let mut lease = self.lease.lock().ok().and_then(|mut lease| lease.take());
        let entries = self
            .entries
            .lock()
            .map(|mut entries| std::mem::take(&mut *entries))
            .unwrap_or_default();
        if !poisoned && let Some(conn) = lease.as_mut() {
            match event_log::append(conn, entries).await {
                Ok(logged) => {
                    if let Ok(mut kept) = self.logged.lock() {
                        *kept = logged;
                    }
                }
                Err(err) => {
                    // Without its events the flight may not commit.
                    tracing::error!(error = %err, "logging a shared insert's events failed");
                    if let Some(lease) = lease.take()
                        && let Err(err) = lease.end(false).await
                    {
                        tracing::warn!(error = %err, "rolling back a shared insert failed; its connection is closed");
                    }
                }
            }
        }
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
        if let Ok(mut writer) = self.writer.lock() {
            writer.take();
        }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::Row as _;

    use super::super::model::test_support;
    use super::super::model::{Attribute, AttributeKind, SqlValue};
    use super::*;
    use crate::config::Config;

    fn collection() -> Collection {
        super::super::test_collection(vec![Attribute {
            key: "title".into(),
            kind: AttributeKind::String { size: 100 },
            required: false,
            array: false,
            default: None,
        }])
    }

    fn row(id: &str) -> NewRow {
        NewRow {
            id: id.into(),
            created_at: 1,
            updated_at: 1,
            values: vec![SqlValue::Text(format!("title of {id}"))],
            grants: vec![(id.into(), "user:u1".into(), 13)],
            reader: Some("user:u1".into()),
        }
    }

    /// The stored documents and their grants' actions; each is its owner's
    /// alone, which its row and grant say.
    async fn stored(pool: &sqlx::AnyPool) -> Vec<(String, i64)> {
        let rows = sqlx::query(
            "SELECT d.id, p.actions, d.nimbus_reader, p.sole FROM c_1 d \
             JOIN c_1_perms p ON p.resource_id = d.id ORDER BY d.id",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        for row in &rows {
            assert_eq!(row.get::<Option<String>, _>(2).as_deref(), Some("user:u1"));
            assert_eq!(row.get::<i64, _>(3), 1);
        }
        rows.iter().map(|row| (row.get(0), row.get(1))).collect()
    }

    async fn ended(place: &Membership, failed: bool) -> Outcome {
        let left = place.leave(failed, Vec::new());
        tokio::time::timeout(
            Duration::from_secs(10),
            crate::db::group_commit::outcome(left),
        )
        .await
        .expect("the flight ends")
    }

    /// Starts `ids` together: the one flight turn is held until all of them wait
    /// in the queue, so that one flight takes them all.
    async fn together(
        batches: &Arc<CreateBatches>,
        collection: &Arc<Collection>,
        ids: &[&str],
    ) -> Vec<(NewRow, Option<Membership>)> {
        let turn = batches.flights.clone().acquire_owned().await.unwrap();
        let tasks: Vec<_> = ids
            .iter()
            .map(|id| {
                let (batches, collection, row) = (batches.clone(), collection.clone(), row(id));
                tokio::spawn(async move { batches.insert(&collection, row).await.unwrap() })
            })
            .collect();
        let waiting = || {
            let queues = batches.queues.lock().unwrap();
            queues
                .values()
                .map(|queue| queue.state.lock().unwrap().waiting.len())
                .sum::<usize>()
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            while waiting() < ids.len() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("every create waits in the queue");
        drop(turn);
        let mut placed = Vec::new();
        for task in tasks {
            placed.push(task.await.unwrap());
        }
        placed
    }

    #[tokio::test]
    async fn creates_in_one_flight_commit_together_once_all_answered_or_not_at_all() {
        let Some(test) = test_support::mariadb().await else {
            return;
        };
        let mut config = Config::with_data_dir(std::env::temp_dir());
        config.database_url = Some(test.url.clone());
        flights_commit_together_or_not_at_all(&config, &test.pool).await;
        test.close().await;
    }

    #[tokio::test]
    async fn on_sqlite_creates_in_one_flight_commit_together_holding_the_writers_turn() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::with_data_dir(dir.path().to_path_buf());
        let db = Db::connect(&config, Duration::from_secs(10)).await.unwrap();
        flights_commit_together_or_not_at_all(&config, db.pool()).await;

        // The flight holds the writer's turn until it has ended, and takes it
        // before its rows: a create queued while another write holds the turn
        // waits for it, then flies.
        let batches = Arc::new(CreateBatches::new(db.clone(), 1));
        let collection = Arc::new(collection());
        let placed = together(&batches, &collection, &["f"]).await;
        let place = placed.into_iter().next().unwrap().1.expect("written");
        let busy = tokio::time::timeout(Duration::from_millis(200), db.writer_turn()).await;
        assert!(busy.is_err(), "the turn is the flight's until it ends");
        assert_eq!(ended(&place, false).await, Outcome::Committed);
        let turn = db.writer_turn().await;
        let queued = {
            let (batches, collection) = (batches.clone(), collection.clone());
            tokio::spawn(async move { batches.insert(&collection, row("g")).await.unwrap() })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!queued.is_finished(), "no flight without the writer's turn");
        drop(turn);
        let (_, place) = tokio::time::timeout(Duration::from_secs(10), queued)
            .await
            .expect("the flight goes once the turn is free")
            .unwrap();
        assert_eq!(
            ended(&place.expect("written"), false).await,
            Outcome::Committed
        );
        assert_eq!(stored(db.pool()).await.len(), 4);
        db.close().await;
    }

    /// Flights over the database of `config`, read back through `pool`.
    async fn flights_commit_together_or_not_at_all(config: &Config, pool: &sqlx::AnyPool) {
        let db = Db::connect(config, Duration::from_secs(10)).await.unwrap();
        // SQLite's row id is the sequence; MariaDB needs its column.
        let sequence = match db.dialect() {
            crate::db::Dialect::Sqlite => String::new(),
            crate::db::Dialect::MySql => format!(
                ", {}, {}",
                super::super::ddl::sequence_column_def(),
                super::super::ddl::sequence_key_def()
            ),
        };
        for statement in [
            &format!(
                "CREATE TABLE c_1 (id VARCHAR(36) NOT NULL PRIMARY KEY, created_at BIGINT NOT NULL, \
                 updated_at BIGINT NOT NULL, nimbus_reader VARCHAR(128), a_title VARCHAR(100){sequence})"
            ),
            "CREATE TABLE c_1_perms (resource_id VARCHAR(36) NOT NULL, role VARCHAR(128) NOT NULL, \
             actions SMALLINT NOT NULL, sole SMALLINT NOT NULL DEFAULT 0, \
             PRIMARY KEY (resource_id, role))",
        ] {
            sqlx::query(statement).execute(pool).await.unwrap();
        }
        let batches = Arc::new(CreateBatches::new(db.clone(), 1));
        let collection = Arc::new(collection());

        // A member whose answer failed undoes the whole flight (of four: on
        // MariaDB flights hold a power of two rows).
        let placed = together(&batches, &collection, &["a", "b", "c", "d"]).await;
        let places: Vec<Membership> = placed
            .into_iter()
            .map(|(_, place)| place.expect("written"))
            .collect();
        assert_eq!(places[0].flight.members.lock().unwrap().joined, 4);
        places[0].leave(false, Vec::new());
        places[2].leave(false, Vec::new());
        places[3].leave(false, Vec::new());
        assert_eq!(ended(&places[1], true).await, Outcome::RolledBack);
        assert_eq!(stored(pool).await, Vec::<(String, i64)>::new());

        // Uncommitted until the last member has answered; then all of it.
        let placed = together(&batches, &collection, &["a", "b"]).await;
        let places: Vec<Membership> = placed.into_iter().map(|(_, p)| p.unwrap()).collect();
        places[0].leave(false, Vec::new());
        assert!(stored(pool).await.is_empty(), "not yet committed");
        assert_eq!(ended(&places[1], false).await, Outcome::Committed);
        assert_eq!(
            stored(pool).await,
            [("a".to_string(), 13), ("b".to_string(), 13)]
        );

        // A place dropped unclaimed (its request went away) undoes the flight.
        let placed = together(&batches, &collection, &["c", "d"]).await;
        let mut places: Vec<Membership> = placed.into_iter().map(|(_, p)| p.unwrap()).collect();
        let kept = places.remove(0);
        drop(places);
        assert_eq!(ended(&kept, false).await, Outcome::RolledBack);
        assert_eq!(stored(pool).await.len(), 2);

        // A flight whose insert fails (an id taken) gives every row back, unwritten.
        let placed = together(&batches, &collection, &["e", "a"]).await;
        for (row, place) in placed {
            assert!(place.is_none(), "{} was not written", row.id);
            assert_eq!(row.values, [SqlValue::Text(format!("title of {}", row.id))]);
        }
        assert_eq!(stored(pool).await.len(), 2);

        db.close().await;
    }
}
