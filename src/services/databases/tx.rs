//! One database transaction per GraphQL request for document writes: every
//! document mutation field of a request runs in it, so the request is all or
//! nothing, and reads later in the same request see its writes. The HTTP and
//! WebSocket handlers finish it after execution — commit when the response has
//! no errors, roll back otherwise. The writes' realtime events are written to the
//! event log in that same transaction, as its last statements, and announced on
//! the bus once it committed, so nobody hears of a write that did not happen and
//! no committed write goes unheard. On SQLite, requests
//! with a single mutation field share group-committed batches instead
//! ([`crate::db::group_commit`]), and run again alone should their batch roll back.
//! On both, such a request whose write is one create shares an insert with
//! others ([`super::create_batch`]), and runs again alone should it be undone.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use async_graphql::dataloader::DataLoader;
use futures_util::future::BoxFuture;
use sqlx::any::AnyTransactionManager;
use sqlx::{Any, AnyConnection, Transaction, TransactionManager as _};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use tracing::Instrument as _;

use crate::AppState;
use crate::bus::{BusMessage, Event, log};
use crate::db::event_log::{self, Entry};
use crate::db::group_commit::{self, Batch, Outcome};
use crate::db::lease::Lease;
use crate::error::{AppError, AppResult, codes};

use super::create_batch::Membership;
use super::documents::PreparedCreate;
use super::loader::{ListLoader, RelatedLoader};
use super::model::SqlDialect;
use super::{Collection, sql_dialect};

/// How a request's document writes share the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A transaction of the request's own, holding SQLite's write lock from the
    /// first write to the end of the request.
    Exclusive,
    /// A place in a group-committed batch ([`crate::db::group_commit`]) on
    /// SQLite, or in a shared insert ([`super::create_batch`]) for a create:
    /// for requests that can run again from the start should it be
    /// undone.
    Shared,
}

/// Whether a create is the only write of its mutation field: only then may it
/// share an insert with other requests' ([`RequestTx::create`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// The field writes this one document (`createPost`, `createDocument`).
    Sole,
    /// One of the field's writes (`createPosts`).
    Among,
}

/// How a request's writes ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Committed, or there was nothing to commit: the response stands.
    Kept,
    /// Undone: the response must show none of the writes.
    RolledBack,
    /// Undone with the rest of its batch: run the request again, exclusively.
    Retry,
}

/// The transaction of one request, begun by its first write.
pub struct RequestTx {
    state: AppState,
    /// The database's dialect, which every connection of the request carries.
    dialect: SqlDialect,
    mode: Mode,
    /// The request's own transaction ([`Mode::Exclusive`]), on a leased connection.
    open: Mutex<Option<Lease>>,
    /// The batch joined by the first write ([`Mode::Shared`], SQLite).
    batch: OnceLock<Arc<Batch>>,
    /// The shared insert of the request's create ([`Mode::Shared`]).
    flight: OnceLock<Membership>,
    joining: Mutex<()>,
    /// An operation of this request has completed in its batch.
    wrote: AtomicBool,
    /// This request has left its batch.
    left: AtomicBool,
    /// The running operation without a savepoint has begun writing.
    first_write: AtomicBool,
    events: std::sync::Mutex<Vec<Event>>,
    /// The event of a shared create, encoded before its insert
    /// ([`RequestTx::shared_create`]): the request's only write, so no other
    /// event comes before or after it.
    encoded: std::sync::Mutex<Option<Entry>>,
    /// The writer's turn (SQLite), held from the first write to the end.
    turn: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
    /// Batches the reads of referenced documents; made on first use.
    related: OnceLock<DataLoader<RelatedLoader>>,
    /// Batches the first pages of lists across relationships; made on first use.
    lists: OnceLock<DataLoader<ListLoader>>,
    /// Links the request's writes have set so far ([`Conn::spend_links`]).
    links: Arc<AtomicUsize>,
    /// Documents the request's deletes have removed or changed so far
    /// ([`Conn::spend_deletions`]).
    deletions: Arc<AtomicUsize>,
    /// Related documents the request's writes have written inline so far
    /// ([`RequestTx::spend_nested`]).
    nested: AtomicUsize,
    /// A transaction of document writes was run by this request
    /// ([`RequestTx::take_transaction_turn`]).
    ran_transaction: AtomicBool,
}

/// The most related documents one request writes inline with its documents
/// (Appwrite's nested writes), whatever the number of its writes.
pub const MAX_NESTED_PER_REQUEST: usize = 100;

/// The most documents one request's deletes may remove or change, those their
/// relationships' on-delete rules reach included: a cascade's size is the data's
/// (a note with fifty thousand boards pointing at it), while its transaction
/// holds SQLite's one writer, and its events are as many.
pub const MAX_DELETIONS_PER_REQUEST: usize = 10_000;

/// The most links (rows of many-to-many junctions) one request may set in all:
/// each field of each document may set up to a thousand, and a request's
/// documents are many, while its transaction holds SQLite's one writer.
pub const MAX_LINKS_PER_REQUEST: usize = 10_000;

/// A connection to run statements on, with the SQL dialect it speaks: the code
/// that builds statements asks the connection, rather than looking the database
/// up at each call.
pub struct Conn<'a> {
    dialect: SqlDialect,
    held: Held<'a>,
    links: Arc<AtomicUsize>,
    deletions: Arc<AtomicUsize>,
}

/// What a [`Conn`] runs on: the request's transaction (its own, or its batch's),
/// or a leased connection for reads when the request has written nothing.
enum Held<'a> {
    Batch(MappedMutexGuard<'a, Transaction<'static, Any>>),
    Own(MappedMutexGuard<'a, Lease>),
    Lease(Lease),
}

impl Conn<'_> {
    /// The SQL dialect of the connection.
    pub fn dialect(&self) -> SqlDialect {
        self.dialect
    }

    /// Counts `count` links about to be set against the request's
    /// [`MAX_LINKS_PER_REQUEST`]; refused past it (nothing of the request is kept).
    pub fn spend_links(&self, count: usize) -> AppResult<()> {
        spend_links(&self.links, count)
    }

    /// How many more documents the request's deletes may remove or change.
    pub fn deletions_left(&self) -> usize {
        MAX_DELETIONS_PER_REQUEST.saturating_sub(self.deletions.load(Ordering::Relaxed))
    }

    /// Counts `count` documents about to be removed or changed by a delete
    /// against the request's [`MAX_DELETIONS_PER_REQUEST`]; refused past it
    /// (nothing of the request is kept).
    pub fn spend_deletions(&self, count: usize) -> AppResult<()> {
        let before = self.deletions.fetch_add(count, Ordering::Relaxed);
        if before.saturating_add(count) > MAX_DELETIONS_PER_REQUEST {
            return Err(too_many_deletions());
        }
        Ok(())
    }
}

/// Counts `count` links against the request's `links` so far.
fn spend_links(links: &AtomicUsize, count: usize) -> AppResult<()> {
    let before = links.fetch_add(count, Ordering::Relaxed);
    if before.saturating_add(count) > MAX_LINKS_PER_REQUEST {
        return Err(AppError::Invalid {
            code: codes::TOO_MANY_LINKS,
            field: "input".into(),
            reason: format!(
                "a request sets at most {MAX_LINKS_PER_REQUEST} links in all: many-to-many \
                 links, and references set from the other side of a relationship"
            ),
        });
    }
    Ok(())
}

/// A request whose deletes would reach more than [`MAX_DELETIONS_PER_REQUEST`]
/// documents.
pub fn too_many_deletions() -> AppError {
    AppError::Invalid {
        code: codes::TOO_MANY_DOCUMENTS,
        field: "id".into(),
        reason: format!(
            "a request's deletes and updates by queries remove or change at most {MAX_DELETIONS_PER_REQUEST} documents, those relationships' on-delete rules reach included; write in smaller steps"
        ),
    }
}

impl Deref for Conn<'_> {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match &self.held {
            Held::Batch(tx) => tx,
            Held::Own(conn) => conn,
            Held::Lease(conn) => conn,
        }
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.held {
            Held::Batch(tx) => &mut *tx,
            Held::Own(conn) => &mut *conn,
            Held::Lease(conn) => &mut *conn,
        }
    }
}

/// One write operation on the request's transaction. End it with
/// [`WriteOp::end`], passing the operation's result: in a batch, a failed
/// operation is undone, leaving the other members' work alone.
pub struct WriteOp<'a> {
    conn: Conn<'a>,
    /// The batch this operation runs in.
    batch: Option<&'a Batch>,
    /// Whether the operation runs within a savepoint of its own; otherwise it
    /// reports its first write on `tx.first_write`.
    savepoint: bool,
    tx: &'a RequestTx,
}

impl<'a> Deref for WriteOp<'a> {
    type Target = Conn<'a>;
    fn deref(&self) -> &Conn<'a> {
        &self.conn
    }
}

impl<'a> DerefMut for WriteOp<'a> {
    fn deref_mut(&mut self) -> &mut Conn<'a> {
        &mut self.conn
    }
}

impl<'a> WriteOp<'a> {
    /// Where an operation from [`RequestTx::tracked_writer`] records that it is
    /// about to write (and clears it when that write failed whole, leaving nothing).
    pub fn first_write(&self) -> &'a AtomicBool {
        &self.tx.first_write
    }

    /// Ends the operation with its result, which it passes on.
    pub fn end<T>(mut self, result: AppResult<T>) -> AppResult<T> {
        if let Some(batch) = self.batch.take() {
            self.ended(batch, result.is_ok());
            if result.is_ok() {
                self.tx.wrote.store(true, Ordering::SeqCst);
            }
        }
        result
    }

    fn ended(&self, batch: &Batch, succeeded: bool) {
        if self.savepoint {
            batch.end_operation(succeeded);
        } else if !succeeded && self.tx.first_write.swap(false, Ordering::SeqCst) {
            // Written in part, with no savepoint to undo it: the batch cannot
            // keep it, and rolls back for everyone to run again.
            batch.poison();
        }
    }
}

impl Drop for WriteOp<'_> {
    fn drop(&mut self) {
        // Dropped before `end`: the request went away mid-operation.
        if let Some(batch) = self.batch {
            self.ended(batch, false);
        }
    }
}

impl RequestTx {
    /// The transaction of a request; `mode` is taken only where the database has
    /// group commit or shared inserts.
    pub fn new(state: &AppState, mode: Mode) -> Arc<RequestTx> {
        let shares = state.db.group_commit().is_some() || state.creates.is_some();
        let mode = if shares { mode } else { Mode::Exclusive };
        Arc::new(RequestTx {
            state: state.clone(),
            dialect: sql_dialect(state.db.dialect()),
            mode,
            open: Mutex::new(None),
            batch: OnceLock::new(),
            flight: OnceLock::new(),
            joining: Mutex::new(()),
            wrote: AtomicBool::new(false),
            left: AtomicBool::new(false),
            first_write: AtomicBool::new(false),
            links: Arc::default(),
            deletions: Arc::default(),
            nested: AtomicUsize::new(0),
            ran_transaction: AtomicBool::new(false),
            events: std::sync::Mutex::new(Vec::new()),
            encoded: std::sync::Mutex::new(None),
            turn: std::sync::Mutex::new(None),
            related: OnceLock::new(),
            lists: OnceLock::new(),
        })
    }

    /// A write operation on the request's transaction, begun now if this is its
    /// first write. On SQLite the write lock is taken at once (`BEGIN
    /// IMMEDIATE`), so a request never fails half-way for want of it.
    pub(super) fn writer(&self) -> BoxFuture<'_, AppResult<WriteOp<'_>>> {
        Box::pin(self.writer_impl(true))
    }

    /// [`RequestTx::writer`] without a savepoint, for an operation whose first
    /// write is one statement (which SQLite undoes whole when it fails) and that
    /// records it on [`WriteOp::first_write`]: a round trip less. Should it fail
    /// after that write, its batch rolls back and every member runs again.
    pub(super) fn tracked_writer(&self) -> BoxFuture<'_, AppResult<WriteOp<'_>>> {
        Box::pin(self.writer_impl(false))
    }

    async fn writer_impl(&self, savepoint: bool) -> AppResult<WriteOp<'_>> {
        if self.flight.get().is_some() {
            // Its shared insert is its only write, and commits apart from this.
            return Err(AppError::Internal(anyhow::anyhow!(
                "a request wrote again after its create shared an insert"
            )));
        }
        self.first_write.store(false, Ordering::SeqCst);
        match self.mode {
            Mode::Shared if self.state.db.group_commit().is_some() => {
                let batch = self.joined().await?;
                let mut conn = self.batch_connection(batch).await?;
                if savepoint {
                    batch.begin_operation(&mut conn).await?;
                }
                Ok(WriteOp {
                    conn,
                    batch: Some(batch),
                    savepoint,
                    tx: self,
                })
            }
            _ => Ok(WriteOp {
                conn: self.exclusive().await?,
                batch: None,
                savepoint,
                tx: self,
            }),
        }
    }

    /// Whether a create may share an insert with other requests': only in a
    /// request of one mutation field ([`Mode::Shared`]) whose only write it is
    /// ([`Sharing::Sole`]), and unless it sets relationships (which read and
    /// write more than its rows).
    pub(super) fn may_share(
        &self,
        collection: &Collection,
        prepared: &PreparedCreate,
        sharing: Sharing,
    ) -> bool {
        self.state.creates.is_some()
            && self.mode == Mode::Shared
            && sharing == Sharing::Sole
            && !self.has_writes()
            && !prepared.sets_relationships(collection)
    }

    /// Counts `count` references about to be set from the other side of their
    /// relationships against the request's [`MAX_LINKS_PER_REQUEST`], with its
    /// many-to-many links ([`Conn::spend_links`]).
    pub fn spend_links(&self, count: usize) -> AppResult<()> {
        spend_links(&self.links, count)
    }

    /// Whether the request may run a transaction of document writes
    /// ([`super::transactions`]) now: once per request, since each run counts
    /// its writes apart from the request's.
    pub fn take_transaction_turn(&self) -> bool {
        !self.ran_transaction.swap(true, Ordering::SeqCst)
    }

    /// Counts one related document about to be written inline against the
    /// request's [`MAX_NESTED_PER_REQUEST`]; refused past it (nothing of the
    /// request is kept).
    pub fn spend_nested(&self, field: &str) -> AppResult<()> {
        if self.nested.fetch_add(1, Ordering::Relaxed) >= MAX_NESTED_PER_REQUEST {
            return Err(AppError::Invalid {
                code: codes::TOO_MANY_DOCUMENTS,
                field: field.to_string(),
                reason: format!(
                    "a request writes at most {MAX_NESTED_PER_REQUEST} related documents inline"
                ),
            });
        }
        Ok(())
    }

    /// Offers a prepared create to a shared insert with other requests'
    /// ([`RequestTx::may_share`]), with `event`, its event. The sequence the
    /// insert gave the document when the shared insert wrote it and the
    /// request joined its flight, its event queued; none when the create is to
    /// be inserted in the request's own transaction (its row given back into
    /// `prepared`, its event dropped).
    ///
    /// The event is encoded here, before the row is queued: a flight holds
    /// SQLite's writer from its insert until every member has answered, so
    /// what a member does after its insert delays every write, and what it
    /// does before runs while another flight writes.
    pub(super) fn shared_create<'a>(
        &'a self,
        collection: &'a Collection,
        prepared: &'a mut PreparedCreate,
        sharing: Sharing,
        event: Event,
    ) -> BoxFuture<'a, AppResult<Option<i64>>> {
        Box::pin(async move {
            let Some(batches) = self
                .state
                .creates
                .as_ref()
                .filter(|_| self.may_share(collection, prepared, sharing))
            else {
                return Ok(None);
            };
            let entry = log::entry(BusMessage::Event(event));
            let (row, flight) = batches
                .insert(collection, std::mem::take(&mut prepared.row))
                .await?;
            prepared.row = row;
            let Some(flight) = flight else {
                // The shared insert failed: this create alone gets its own answer.
                return Ok(None);
            };
            let sequence = flight.sequence;
            let entry = entry.map(|entry| with_sequence(entry, sequence));
            // The created document is answered from what was written; nothing
            // else of this request reads the flight's uncommitted rows, as
            // nothing could refer to the document before it was created.
            let _ = self.flight.set(flight);
            if let Ok(mut encoded) = self.encoded.lock() {
                *encoded = entry;
            }
            Ok(Some(sequence))
        })
    }

    async fn exclusive(&self) -> AppResult<Conn<'_>> {
        let mut open = self.open.lock().await;
        if open.is_none() {
            let turn = self.state.db.writer_turn().await;
            if let Ok(mut held) = self.turn.lock() {
                *held = turn;
            }
            let lease = match self.state.db.lease_for_writes().await {
                // Its first statement begins the transaction: nothing to send yet.
                Some(lease) => lease?,
                None => {
                    // Begun in a task of its own: a client that goes away
                    // mid-`BEGIN` must not leave a connection inside a transaction
                    // nobody owns (the task's lease, unclaimed, is closed when
                    // dropped, and the server rolls back).
                    let state = self.state.clone();
                    tokio::spawn(async move {
                        let mut lease = state.db.lease_writer().await?;
                        AnyTransactionManager::begin(&mut lease, Some("BEGIN IMMEDIATE".into()))
                            .await?;
                        Ok::<_, sqlx::Error>(lease)
                    })
                    .await
                    .map_err(|err| {
                        AppError::Internal(anyhow::anyhow!("beginning a transaction: {err}"))
                    })??
                }
            };
            *open = Some(lease);
        }
        self.own(open)
    }

    /// The request's own transaction, held.
    fn own<'a>(&'a self, open: MutexGuard<'a, Option<Lease>>) -> AppResult<Conn<'a>> {
        MutexGuard::try_map(open, Option::as_mut)
            .map(|lease| self.conn(Held::Own(lease)))
            .map_err(|_| vanished())
    }

    fn conn<'a>(&self, held: Held<'a>) -> Conn<'a> {
        Conn {
            dialect: self.dialect,
            held,
            links: self.links.clone(),
            deletions: self.deletions.clone(),
        }
    }

    /// The batch's transaction, undoing first what an abandoned operation left.
    async fn batch_connection<'a>(&'a self, batch: &'a Batch) -> AppResult<Conn<'a>> {
        let guard = batch.connection().await?;
        MutexGuard::try_map(guard, Option::as_mut)
            .map(|tx| self.conn(Held::Batch(tx)))
            .map_err(|_| vanished())
    }

    /// The batch this request is in, joined now if it is not yet.
    async fn joined(&self) -> AppResult<&Batch> {
        if let Some(batch) = self.batch.get() {
            return Ok(batch);
        }
        let _joining = self.joining.lock().await;
        if let Some(batch) = self.batch.get() {
            return Ok(batch);
        }
        let group = self.state.db.group_commit().ok_or_else(vanished)?;
        let batch = group.join().await?;
        Ok(self.batch.get_or_init(|| batch))
    }

    /// A connection for reads: the transaction when the request has written (so it
    /// reads its own writes), a pooled connection otherwise.
    pub fn reader(&self) -> BoxFuture<'_, AppResult<Conn<'_>>> {
        Box::pin(async move {
            if let Some(batch) = self.batch.get() {
                return self.batch_connection(batch).await;
            }
            {
                let open = self.open.lock().await;
                if open.is_some() {
                    return self.own(open);
                }
            }
            Ok(self.conn(Held::Lease(self.state.db.lease().await?)))
        })
    }

    /// The request's loader of referenced documents, made by `make` on first use.
    pub fn related_loader(
        &self,
        make: impl FnOnce() -> RelatedLoader,
    ) -> &DataLoader<RelatedLoader> {
        // Batches run in tasks of their own, within the span of the request
        // that started them.
        self.related
            .get_or_init(|| DataLoader::new(make(), |batch| tokio::spawn(batch.in_current_span())))
    }

    /// Whether the request has begun writing documents.
    pub fn has_writes(&self) -> bool {
        if self.batch.get().is_some() || self.flight.get().is_some() {
            return true;
        }
        // Locked means a document operation is running right now.
        self.open.try_lock().map_or(true, |open| open.is_some())
    }

    /// The request's loader of lists across relationships, made on first use.
    pub fn list_loader(&self, make: impl FnOnce() -> ListLoader) -> &DataLoader<ListLoader> {
        self.lists
            .get_or_init(|| DataLoader::new(make(), |batch| tokio::spawn(batch.in_current_span())))
    }

    /// Queues an event to publish once the transaction commits.
    pub(super) fn publish_after_commit(&self, event: Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
    }

    fn take_events(&self) -> Vec<Event> {
        if let Ok(mut encoded) = self.encoded.lock() {
            encoded.take();
        }
        self.events
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }

    /// The queued events as log entries.
    fn take_entries(&self) -> Vec<Entry> {
        let encoded = self.encoded.lock().ok().and_then(|mut e| e.take());
        encoded
            .into_iter()
            .chain(
                self.take_events()
                    .into_iter()
                    .filter_map(|event| log::entry(BusMessage::Event(event))),
            )
            .collect()
    }

    /// Announces what the committed batch or flight logged, once for all of its
    /// members (the first to ask takes it).
    async fn announce_shared(&self) {
        let logged = match (self.batch.get(), self.flight.get()) {
            (Some(batch), _) => batch.take_logged(),
            (None, Some(flight)) => flight.take_logged(),
            (None, None) => Vec::new(),
        };
        self.state.bus.announce(logged).await;
    }

    /// Ends the request: commits and publishes its events when `success`, rolls
    /// back otherwise. In a batch, waits for the batch to end. A failed commit is
    /// an error for the whole request.
    pub async fn finish(&self, success: bool) -> AppResult<Finished> {
        if self.batch.get().is_some() || self.flight.get().is_some() {
            // Logged by the batch or flight, in its transaction, with the others'.
            let entries = if success {
                self.take_entries()
            } else {
                self.take_events();
                Vec::new()
            };
            let left = if let Some(batch) = self.batch.get() {
                let wrote = self.wrote.load(Ordering::SeqCst);
                batch.leave(!success && wrote, entries)
            } else {
                let flight = self.flight.get().ok_or_else(vanished)?;
                flight.leave(!success, entries)
            };
            self.left.store(true, Ordering::SeqCst);
            return match group_commit::outcome(left).await {
                Outcome::Committed if success => {
                    self.announce_shared().await;
                    Ok(Finished::Kept)
                }
                Outcome::Committed => Ok(Finished::RolledBack),
                Outcome::RolledBack => Ok(Finished::Retry),
                Outcome::Failed => Err(AppError::Internal(anyhow::anyhow!(
                    "the shared transaction holding this request's writes could not be committed"
                ))),
            };
        }
        let open = self.open.lock().await.take();
        let entries = if success {
            self.take_entries()
        } else {
            self.take_events();
            Vec::new()
        };
        let Some(mut lease) = open else {
            return Ok(Finished::Kept);
        };
        let dialect = self.dialect;
        // The next writer's turn comes once this transaction has ended.
        let turn = self.turn.lock().ok().and_then(|mut held| held.take());
        // Ended in a task of its own, so that a client going away cannot cut a
        // COMMIT or ROLLBACK in half.
        // The lease goes back to the pool once out of the transaction, and is
        // closed (the server rolling back) if it could not get out.
        let ended = tokio::spawn(async move {
            // The log's entries last: the positions they take stand as a gap
            // for readers only until the commit that follows.
            let logged = match success {
                true => event_log::append(&mut lease, entries).await,
                false => Ok(Vec::new()),
            };
            let keep = success && logged.is_ok();
            let ended = match dialect {
                SqlDialect::MySql => lease.end(keep).await,
                SqlDialect::Sqlite if keep => AnyTransactionManager::commit(&mut lease).await,
                SqlDialect::Sqlite => AnyTransactionManager::rollback(&mut lease).await,
            };
            let logged = logged?;
            ended.map(|()| logged)
        })
        .await
        .map_err(|err| AppError::Internal(anyhow::anyhow!("ending a transaction: {err}")))?;
        drop(turn);
        let logged = ended?;
        if !success {
            return Ok(Finished::RolledBack);
        }
        self.state.bus.announce(logged).await;
        Ok(Finished::Kept)
    }
}

impl Drop for RequestTx {
    fn drop(&mut self) {
        // A request that went away without finishing leaves its batch or flight;
        // the writes it completed stand, and are announced once they are committed.
        if self.batch.get().is_none() && self.flight.get().is_none() {
            return;
        }
        if self.left.swap(true, Ordering::SeqCst) {
            return;
        }
        if self.flight.get().is_some() {
            self.wrote.store(true, Ordering::SeqCst);
        }
        let entries = if self.wrote.load(Ordering::SeqCst) {
            self.take_entries()
        } else {
            Vec::new()
        };
        let logs = !entries.is_empty();
        let receiver = match (self.batch.get(), self.flight.get()) {
            (Some(batch), _) => batch.leave(false, entries),
            (None, Some(flight)) => flight.leave(false, entries),
            (None, None) => return,
        };
        if !logs {
            return;
        }
        let state = self.state.clone();
        let batch = self.batch.get().cloned();
        let flight = self.flight.get().map(Membership::flight_handle);
        tokio::spawn(async move {
            if group_commit::outcome(receiver).await == Outcome::Committed {
                let logged = match (batch, flight) {
                    (Some(batch), _) => batch.take_logged(),
                    (None, Some(flight)) => flight.take_logged(),
                    (None, None) => Vec::new(),
                };
                state.bus.announce(logged).await;
            }
        });
    }
}

fn vanished() -> AppError {
    AppError::Internal(anyhow::anyhow!("the request transaction vanished"))
}

/// A shared create's event, encoded before its insert with the sequence 0
/// ([`super::documents::Document::to_json`]), given the one the insert gave the
/// document: in its body, the first `"$sequence":"0"` (the document's own: the
/// body holds no other document, and a string value holding those characters
/// has its quotes escaped), and in the message it carries, the payload's. A
/// few hundred bytes searched, where encoding the event again would take
/// longer while the flight holds SQLite's writer.
fn with_sequence(mut entry: Entry, sequence: i64) -> Entry {
    const UNSET: &str = "\"$sequence\":\"0\"";
    if let Some(at) = entry.body.find(UNSET) {
        entry.body.replace_range(
            at..at + UNSET.len(),
            &format!("\"$sequence\":\"{sequence}\""),
        );
    }
    if let Some(carried) = &mut entry.carried
        && let Some(BusMessage::Event(event)) = carried.0.downcast_mut::<BusMessage>()
        && let Some(payload) = event.payload.as_object_mut()
    {
        payload.insert("$sequence".into(), sequence.to_string().into());
    }
    entry
}
