//! One database transaction per GraphQL request for document writes: every
//! document mutation field of a request runs in it, so the request is all or
//! nothing, and reads later in the same request see its writes. The HTTP and
//! WebSocket handlers finish it after execution — commit when the response has
//! no errors, roll back otherwise — and only then are the writes' realtime events
//! published, so nobody hears of a write that did not happen.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use futures_util::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Transaction};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use tracing::Instrument as _;

use crate::AppState;
use crate::bus::{BusMessage, Event};
use crate::db::{Db, Dialect};
use crate::error::{AppError, AppResult};

use super::loader::{ListLoader, RelatedLoader};

/// The transaction of one request, begun by its first write.
pub struct RequestTx {
    db: Db,
    open: Mutex<Option<Transaction<'static, Any>>>,
    events: std::sync::Mutex<Vec<Event>>,
    /// The writer's turn (SQLite), held from the first write to the end.
    turn: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
    /// Batches the reads of referenced documents; made on first use.
    related: std::sync::OnceLock<DataLoader<RelatedLoader>>,
    /// Batches the first pages of lists across relationships; made on first use.
    lists: std::sync::OnceLock<DataLoader<ListLoader>>,
}

/// A connection to run statements on: the request's transaction, or a pooled
/// connection for reads when the request has written nothing.
pub enum Conn<'a> {
    Tx(MappedMutexGuard<'a, Transaction<'static, Any>>),
    Pool(PoolConnection<Any>),
}

impl Deref for Conn<'_> {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            Conn::Tx(tx) => tx,
            Conn::Pool(conn) => conn,
        }
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Conn::Tx(tx) => &mut *tx,
            Conn::Pool(conn) => &mut *conn,
        }
    }
}

impl RequestTx {
    pub fn new(db: &Db) -> Arc<RequestTx> {
        Arc::new(RequestTx {
            db: db.clone(),
            open: Mutex::new(None),
            events: std::sync::Mutex::new(Vec::new()),
            turn: std::sync::Mutex::new(None),
            related: std::sync::OnceLock::new(),
            lists: std::sync::OnceLock::new(),
        })
    }

    /// The request's transaction, begun now if this is its first write. On SQLite
    /// it takes the write lock at once (`BEGIN IMMEDIATE`), so a request never
    /// fails half-way for want of it.
    pub fn writer(&self) -> BoxFuture<'_, AppResult<Conn<'_>>> {
        Box::pin(self.writer_impl())
    }

    async fn writer_impl(&self) -> AppResult<Conn<'_>> {
        let mut open = self.open.lock().await;
        if open.is_none() {
            let turn = self.db.writer_turn().await;
            if let Ok(mut held) = self.turn.lock() {
                *held = turn;
            }
            // Begun in a task of its own: a client that goes away mid-`BEGIN` must
            // not leave a pooled connection inside a transaction nobody owns (the
            // task's transaction, unclaimed, rolls back when dropped).
            let (pool, dialect) = (self.db.pool().clone(), self.db.dialect());
            let tx = tokio::spawn(async move {
                match dialect {
                    Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
                    Dialect::MySql => pool.begin().await,
                }
            })
            .await
            .map_err(|err| {
                AppError::Internal(anyhow::anyhow!("beginning a transaction: {err}"))
            })??;
            *open = Some(tx);
        }
        MutexGuard::try_map(open, Option::as_mut)
            .map(Conn::Tx)
            .map_err(|_| AppError::Internal(anyhow::anyhow!("the request transaction vanished")))
    }

    /// A connection for reads: the transaction when the request has written (so it
    /// reads its own writes), a pooled connection otherwise.
    pub fn reader(&self) -> BoxFuture<'_, AppResult<Conn<'_>>> {
        Box::pin(self.reader_impl())
    }

    async fn reader_impl(&self) -> AppResult<Conn<'_>> {
        {
            let open = self.open.lock().await;
            if open.is_some() {
                return MutexGuard::try_map(open, Option::as_mut)
                    .map(Conn::Tx)
                    .map_err(|_| {
                        AppError::Internal(anyhow::anyhow!("the request transaction vanished"))
                    });
            }
        }
        Ok(Conn::Pool(acquire(self.db.pool().clone()).await?))
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
        // Locked means a document operation is running right now.
        self.open.try_lock().map_or(true, |open| open.is_some())
    }

    /// The request's loader of lists across relationships, made on first use.
    pub fn list_loader(&self, make: impl FnOnce() -> ListLoader) -> &DataLoader<ListLoader> {
        self.lists
            .get_or_init(|| DataLoader::new(make(), |batch| tokio::spawn(batch.in_current_span())))
    }

    /// Queues an event to publish once the transaction commits.
    pub fn publish_after_commit(&self, event: Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
    }

    /// Ends the request: commits and publishes its events when `success`, rolls
    /// back otherwise. A failed commit is an error for the whole request.
    /// Returns whether writes were rolled back: the response must then show none
    /// of them.
    pub async fn finish(&self, state: &AppState, success: bool) -> AppResult<bool> {
        let open = self.open.lock().await.take();
        let events = self
            .events
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default();
        let Some(tx) = open else {
            return Ok(false);
        };
        // The next writer's turn comes once this transaction has ended.
        let turn = self.turn.lock().ok().and_then(|mut held| held.take());
        // Ended in a task of its own, so that a client going away cannot cut a
        // COMMIT or ROLLBACK in half.
        let ended = tokio::spawn(async move {
            if success {
                tx.commit().await
            } else {
                tx.rollback().await
            }
        })
        .await
        .map_err(|err| AppError::Internal(anyhow::anyhow!("ending a transaction: {err}")))?;
        drop(turn);
        ended?;
        if !success {
            return Ok(true);
        }
        for event in events {
            // A lost event is logged by the bus; the write itself stands.
            let _ = state.bus.publish(BusMessage::Event(event)).await;
        }
        Ok(false)
    }
}

/// A pooled connection, from an owned pool handle: the future borrows nothing.
fn acquire(pool: sqlx::AnyPool) -> BoxFuture<'static, Result<PoolConnection<Any>, sqlx::Error>> {
    Box::pin(async move { pool.acquire().await })
}
