//! Durable consumers of the event log: named readers (`webhooks`, and next the
//! functions triggered by events) that act on every logged event exactly as if
//! they had been told of it in the writing transaction, whichever replica wrote it
//! and whichever replicas die meanwhile.
//!
//! A consumer's position is stored (`log_consumers`, [`crate::db::log_consumers`]);
//! one replica at a time holds its lease and works on it. The holder reads the log
//! after what it has read, hands the events of the projects the [`Consumer`] acts
//! on to it in a transaction, and moves the stored position in that same
//! transaction, so what a consumer enqueues (delivery jobs) exists exactly when
//! the position says so. The events of other projects are passed over unread;
//! the position past them is stored with the next transaction, or alone once
//! [`STORE_EVERY`] has passed. A replica
//! that dies stops renewing its lease; another takes it once it lapses and goes on
//! from the stored position.
//!
//! Positions are taken at insert, not at commit ([`crate::db::event_log`]), so
//! the log may miss a position that a still-open transaction will fill. The holder
//! never skips one: it handles what comes after the gap, but keeps the stored
//! position below the gap until the gap fills (the late rows are handled then) or
//! [`LATE_WINDOW`] passes (a rollback: given up, logged, counted). A new holder
//! therefore handles again what the old one handled past a gap: consumers must be
//! idempotent (a webhook delivery is keyed by webhook and event id).
//!
//! The holder wakes on the bus's notifications; a slow poll covers a quiet bus.
//! This module knows no consumer: the crate root starts one task per consumer.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Any, AnyConnection, Transaction};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::{BusMessage, Event};
use crate::AppState;
use crate::db::event_log::{self, Logged};
use crate::db::{Dialect, ids, log_consumers, now_millis};
use crate::error::{AppError, AppResult};

/// Most log entries one transaction of a consumer handles.
const BATCH: i64 = 500;
/// How often the holder reads the log when the bus says nothing.
const POLL: Duration = Duration::from_secs(2);
/// How long the holder lets notifications gather before it reads the log: under a
/// stream of writes, one read, one lookup and one position update then serve many
/// events instead of one each (each step is a write transaction of its own).
const GATHER: Duration = Duration::from_millis(20);
/// How long a holder may keep the stored position behind what it has passed
/// over (events of no project it acts on): storing it is a write transaction of
/// its own, which a stream of such events would otherwise cost once per step. A
/// new holder reads those events again, and passes over them again.
const STORE_EVERY: Duration = Duration::from_secs(1);
/// How long a missing position holds the stored position back before it is given
/// up as one that never committed (the relay watches passed positions as long).
pub const LATE_WINDOW: Duration = Duration::from_secs(60);
/// The first wait before a missing position is looked for again; then twice as
/// long each time, up to [`GAP_CHECK_MAX`].
const GAP_CHECK_FIRST: Duration = Duration::from_millis(50);
const GAP_CHECK_MAX: Duration = Duration::from_secs(1);
/// Most runs of missing positions waited for at once; past this, the oldest are
/// given up early.
const MAX_GAPS: usize = 10_000;
/// Most runs of missing positions looked for in one statement.
const GAPS_PER_READ: usize = 100;
/// The first wait after a failed step, doubled each time up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// What acts on the events of the log.
#[async_trait::async_trait]
pub trait Consumer: Send + Sync {
    /// The stored name: one position and one lease per name, across replicas.
    fn name(&self) -> &'static str;

    /// Those of `projects` (each named once) whose events this consumer may act
    /// on (they have webhooks, or functions subscribed to events). The events of
    /// the others are passed over without being read or decoded, and a step that
    /// leaves none needs no transaction. Asked after the events were read, so
    /// whatever was committed before them is seen.
    async fn wanted(&self, state: &AppState, projects: &[&str]) -> AppResult<HashSet<String>>;

    /// Acts on `batch` (events in position order, possibly some handled before:
    /// be idempotent) inside the transaction open on `conn`, which commits with the
    /// consumer's new position. An error rolls both back; the batch comes again.
    async fn handle(
        &self,
        state: &AppState,
        conn: &mut AnyConnection,
        batch: &[(i64, Event)],
    ) -> AppResult<()>;

    /// Called after a transaction that handled events committed (to wake the job
    /// worker, say).
    fn committed(&self, _state: &AppState) {}
}

/// A run of positions `from..=to` missing from the log, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gap {
    to: i64,
    since: Instant,
}

/// How far a holder got: in memory, the stored position being its floor.
#[derive(Debug, Clone)]
struct Progress {
    /// Stored: every position up to it is handled or given up.
    stored: i64,
    /// Every position up to it is handled, or in `gaps`.
    seen: i64,
    /// Missing positions at or below `seen`, by the first of each run.
    gaps: BTreeMap<i64, Gap>,
}

impl Progress {
    fn new(stored: i64) -> Progress {
        Progress {
            stored,
            seen: stored,
            gaps: BTreeMap::new(),
        }
    }

    /// Takes positions read after `seen`, in order: those skipped become gaps.
    /// Answers whether a new gap opened.
    fn read(&mut self, positions: impl IntoIterator<Item = i64>, now: Instant) -> bool {
        let mut opened = false;
        for position in positions {
            if position <= self.seen {
                continue;
            }
            if position > self.seen + 1 {
                self.gaps.insert(
                    self.seen + 1,
                    Gap {
                        to: position - 1,
                        since: now,
                    },
                );
                opened = true;
            }
            self.seen = position;
        }
        opened
    }

    /// A missing position turned up: it leaves its gap (which may split in two).
    fn filled(&mut self, position: i64) {
        let Some((&from, &gap)) = self.gaps.range(..=position).next_back() else {
            return;
        };
        if position > gap.to {
            return;
        }
        self.gaps.remove(&from);
        if from < position {
            self.gaps.insert(
                from,
                Gap {
                    to: position - 1,
                    since: gap.since,
                },
            );
        }
        if position < gap.to {
            self.gaps.insert(
                position + 1,
                Gap {
                    to: gap.to,
                    since: gap.since,
                },
            );
        }
    }

    /// Gives up the gaps older than `window` at `now`, and the oldest beyond
    /// [`MAX_GAPS`]; answers them as `(from, to)`.
    fn give_up(&mut self, now: Instant, window: Duration) -> Vec<(i64, i64)> {
        let mut given_up = Vec::new();
        let overflow = self.gaps.len().saturating_sub(MAX_GAPS);
        let old: Vec<i64> = self
            .gaps
            .iter()
            .enumerate()
            .filter(|(n, (_, gap))| *n < overflow || now.duration_since(gap.since) >= window)
            .map(|(_, (&from, _))| from)
            .collect();
        for from in old {
            if let Some(gap) = self.gaps.remove(&from) {
                given_up.push((from, gap.to));
            }
        }
        given_up
    }

    /// The position to store: below the first gap, or all that was read.
    fn floor(&self) -> i64 {
        self.gaps.keys().next().map_or(self.seen, |first| first - 1)
    }

    /// The oldest runs of missing positions, to look for.
    fn gap_ranges(&self) -> Vec<(i64, i64)> {
        self.gaps
            .iter()
            .take(GAPS_PER_READ)
            .map(|(&from, gap)| (from, gap.to))
            .collect()
    }

    fn missing(&self) -> i64 {
        self.gaps.iter().map(|(from, gap)| gap.to - from + 1).sum()
    }
}

/// What one step of a holder came to.
enum Step {
    /// A full batch: read again at once.
    More,
    /// Caught up.
    Idle,
    /// Another replica holds the lease now.
    Lost,
}

/// A holder's state between steps.
struct Holder {
    progress: Progress,
    /// When to look for the missing positions next, and the wait after that.
    gap_check: Option<(Instant, Duration)>,
    /// When the position was last stored.
    stored_at: Instant,
}

/// Works on `consumer` on this replica for as long as the server runs: holds its
/// lease when no other replica does, and gives it up when `stop` turns true.
pub async fn run(
    state: AppState,
    consumer: Arc<dyn Consumer>,
    lease: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let name = consumer.name();
    let owner = ids::generate();
    let renew_every = (lease / 3).max(Duration::from_millis(100));
    let mut messages = state.bus.subscribe();
    let mut holder: Option<Holder> = None;
    let mut next_renew = Instant::now();
    let mut retry = RETRY_FIRST;
    let mut ensured = false;
    loop {
        if *stop.borrow() {
            break;
        }
        let mut wait = renew_every;
        if !ensured {
            match log_consumers::ensure(state.db.pool(), state.db.dialect(), name, now_millis())
                .await
            {
                Ok(()) => ensured = true,
                Err(err) => {
                    tracing::warn!(consumer = name, error = %err, "cannot register an event log consumer; retrying")
                }
            }
        }
        if ensured && Instant::now() >= next_renew {
            let now = now_millis();
            let until = now + lease.as_millis() as i64;
            match log_consumers::take_lease(state.db.pool(), name, &owner, now, until).await {
                Ok(Some(stored)) => {
                    next_renew = Instant::now() + renew_every;
                    let stale = holder.as_ref().is_none_or(|h| h.progress.stored != stored);
                    if stale {
                        if holder.is_none() {
                            tracing::info!(
                                consumer = name,
                                position = stored,
                                "this replica consumes the event log"
                            );
                        }
                        holder = Some(Holder {
                            progress: Progress::new(stored),
                            gap_check: None,
                            stored_at: Instant::now(),
                        });
                        metrics::gauge!("nimbus_consumer_leader", "consumer" => name).set(1.0);
                    }
                }
                Ok(None) => {
                    next_renew = Instant::now() + renew_every;
                    if holder.take().is_some() {
                        tracing::warn!(
                            consumer = name,
                            "another replica took over this event log consumer"
                        );
                    }
                    metrics::gauge!("nimbus_consumer_leader", "consumer" => name).set(0.0);
                }
                Err(err) => {
                    tracing::warn!(consumer = name, error = %err, "cannot renew an event log consumer's lease");
                }
            }
        }
        if let Some(held) = &mut holder {
            match step(&state, consumer.as_ref(), &owner, lease, held).await {
                Ok(Step::More) => {
                    retry = RETRY_FIRST;
                    continue;
                }
                Ok(Step::Idle) => {
                    retry = RETRY_FIRST;
                    wait = POLL.min(next_renew.saturating_duration_since(Instant::now()));
                }
                Ok(Step::Lost) => {
                    tracing::warn!(
                        consumer = name,
                        "this replica lost an event log consumer's lease"
                    );
                    holder = None;
                    metrics::gauge!("nimbus_consumer_leader", "consumer" => name).set(0.0);
                }
                Err(err) => {
                    metrics::counter!("nimbus_consumer_failures_total", "consumer" => name)
                        .increment(1);
                    tracing::warn!(consumer = name, error = ?err, "an event log consumer failed; retrying");
                    wait = retry;
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
            if let Some(held) = &holder
                && let Some((at, _)) = held.gap_check
            {
                wait = wait.min(at.saturating_duration_since(Instant::now()));
            }
        }
        let listening = holder.is_some();
        tokio::select! {
            changed = stop.changed() => {
                // The server is gone without a word: so is this consumer.
                if changed.is_err() {
                    break;
                }
            }
            woke = messages.recv(), if listening => {
                if matches!(woke, Err(broadcast::error::RecvError::Closed)) {
                    break;
                }
                // One read of the log serves every notification of the moment.
                tokio::time::sleep(GATHER).await;
                while messages.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if holder.is_some() {
        metrics::gauge!("nimbus_consumer_leader", "consumer" => name).set(0.0);
        if let Err(err) = log_consumers::release(state.db.pool(), name, &owner).await {
            tracing::warn!(consumer = name, error = %err, "cannot release an event log consumer's lease; it lapses");
        }
    }
}

async fn begin(state: &AppState) -> Result<Transaction<'static, Any>, sqlx::Error> {
    match state.db.dialect() {
        // The transaction reads before it writes: on SQLite it takes the write
        // lock first, so that it never has to upgrade (and fail) later.
        Dialect::Sqlite => state.db.pool().begin_with("BEGIN IMMEDIATE").await,
        Dialect::MySql => state.db.pool().begin().await,
    }
}

/// Reads what the log holds past the holder's progress (and in its gaps, when it
/// is time to look), hands it to the consumer and stores the new position, in one
/// transaction.
async fn step(
    state: &AppState,
    consumer: &dyn Consumer,
    owner: &str,
    lease: Duration,
    held: &mut Holder,
) -> AppResult<Step> {
    let name = consumer.name();
    let now = Instant::now();
    let pool = state.db.pool();
    let mut next = held.progress.clone();
    let mut gap_check = held.gap_check;
    let mut late: Vec<Logged> = Vec::new();
    if gap_check.is_some_and(|(at, _)| at <= now) {
        late = event_log::in_ranges(pool, &next.gap_ranges(), BATCH).await?;
        for logged in &late {
            next.filled(logged.position);
        }
        if !late.is_empty() {
            metrics::counter!("nimbus_consumer_late_total", "consumer" => name)
                .increment(late.len() as u64);
            tracing::info!(
                consumer = name,
                count = late.len(),
                "events committed after later positions were handled"
            );
        }
    }
    let fresh = event_log::listed_after(pool, next.seen, BATCH).await?;
    let full = fresh.len() as i64 == BATCH;
    let opened = next.read(fresh.iter().map(|(position, _)| *position), now);
    for (from, to) in next.give_up(now, LATE_WINDOW) {
        metrics::counter!("nimbus_consumer_gaps_given_up_total", "consumer" => name)
            .increment((to - from + 1) as u64);
        tracing::warn!(
            consumer = name,
            from,
            to,
            "giving up event log positions that did not commit in time"
        );
    }
    gap_check = match (next.gaps.is_empty(), opened, gap_check) {
        (true, _, _) => None,
        (false, true, _) | (false, false, None) => Some((now + GAP_CHECK_FIRST, GAP_CHECK_FIRST)),
        (false, false, Some((at, backoff))) if at <= now => {
            let backoff = (backoff * 2).min(GAP_CHECK_MAX);
            Some((now + backoff, backoff))
        }
        (false, false, kept) => kept,
    };
    // Only the entries of projects the consumer acts on are read whole and decoded.
    let mut projects: Vec<&str> = late
        .iter()
        .map(|logged| logged.project_id.as_str())
        .chain(fresh.iter().map(|(_, project)| project.as_str()))
        .collect();
    projects.sort_unstable();
    projects.dedup();
    let wanted = match projects.is_empty() {
        true => HashSet::new(),
        false => consumer.wanted(state, &projects).await?,
    };
    let positions: Vec<i64> = fresh
        .iter()
        .filter(|(_, project)| wanted.contains(project))
        .map(|(position, _)| *position)
        .collect();
    let read = event_log::at(pool, &positions).await?;
    let batch: Vec<(i64, Event)> = late
        .iter()
        .filter(|logged| wanted.contains(&logged.project_id))
        .chain(read.iter())
        .filter_map(|logged| match super::log::decode_at(logged)? {
            BusMessage::Event(event) => Some((logged.position, event)),
            _ => None,
        })
        .collect();
    let floor = next.floor();
    let store = floor != held.progress.stored && held.stored_at.elapsed() >= STORE_EVERY;
    if batch.is_empty() && !store {
        // Nothing to act on: the position is stored later, with other work or
        // once `STORE_EVERY` has passed.
        next.stored = held.progress.stored;
        held.progress = next;
        held.gap_check = gap_check;
        return Ok(if full { Step::More } else { Step::Idle });
    }
    let mut tx = begin(state).await?;
    if !batch.is_empty() {
        consumer.handle(state, &mut tx, &batch).await?;
    }
    let now_ms = now_millis();
    let until = now_ms + lease.as_millis() as i64;
    if !log_consumers::advance(&mut *tx, name, owner, floor, now_ms, until).await? {
        return Ok(Step::Lost);
    }
    tx.commit().await.map_err(AppError::from)?;
    next.stored = floor;
    held.stored_at = Instant::now();
    if !batch.is_empty() {
        consumer.committed(state);
        metrics::counter!("nimbus_consumer_events_total", "consumer" => name)
            .increment(batch.len() as u64);
    }
    let head = if full {
        event_log::head(pool).await.unwrap_or(next.seen)
    } else {
        next.seen
    };
    metrics::gauge!("nimbus_consumer_position", "consumer" => name).set(floor as f64);
    metrics::gauge!("nimbus_consumer_lag", "consumer" => name)
        .set(head.saturating_sub(next.seen) as f64);
    metrics::gauge!("nimbus_consumer_waiting_positions", "consumer" => name)
        .set(next.missing() as f64);
    held.progress = next;
    held.gap_check = gap_check;
    Ok(if full { Step::More } else { Step::Idle })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_position_stays_below_a_missing_position_until_it_fills() {
        let start = Instant::now();
        let mut progress = Progress::new(10);
        // 11 and 12 handled; 13 is a transaction still open; 14..16 handled.
        assert!(progress.read([11, 12, 14, 15, 16], start));
        assert_eq!(progress.seen, 16);
        assert_eq!(progress.floor(), 12);
        assert_eq!(progress.gap_ranges(), [(13, 13)]);
        // Later rows move `seen` on, never the floor past the gap.
        assert!(!progress.read([17], start));
        assert_eq!(progress.floor(), 12);
        // Within the window nothing is given up.
        assert!(
            progress
                .give_up(start + LATE_WINDOW / 2, LATE_WINDOW)
                .is_empty()
        );
        // The late commit fills it: everything read is handled.
        progress.filled(13);
        assert_eq!(progress.floor(), 17);
        assert!(progress.gaps.is_empty());
    }

    #[test]
    fn a_run_of_missing_positions_splits_as_they_fill_and_is_given_up_after_the_window() {
        let start = Instant::now();
        let mut progress = Progress::new(0);
        progress.read([1, 6], start);
        assert_eq!(progress.gap_ranges(), [(2, 5)]);
        progress.filled(4);
        assert_eq!(progress.gap_ranges(), [(2, 3), (5, 5)]);
        progress.filled(2);
        progress.filled(5);
        assert_eq!(progress.gap_ranges(), [(3, 3)]);
        assert_eq!(progress.floor(), 2);
        assert_eq!(progress.missing(), 1);
        // A rollback never fills: past the window it is given up, and the floor
        // moves to all that was read.
        let later = start + Duration::from_secs(1);
        progress.read([8], later);
        assert_eq!(progress.give_up(start + LATE_WINDOW, LATE_WINDOW), [(3, 3)]);
        assert_eq!(progress.floor(), 6);
        assert_eq!(progress.give_up(later + LATE_WINDOW, LATE_WINDOW), [(7, 7)]);
        assert_eq!(progress.floor(), 8);
    }

    #[test]
    fn filling_a_position_outside_every_gap_changes_nothing() {
        let start = Instant::now();
        let mut progress = Progress::new(0);
        progress.read([1, 3], start);
        progress.filled(1);
        progress.filled(9);
        assert_eq!(progress.gap_ranges(), [(2, 2)]);
        // Positions read again (a late row also in a fresh read) count once.
        assert!(!progress.read([2, 3], start));
        assert_eq!(progress.seen, 3);
    }

    #[test]
    fn too_many_gaps_give_up_the_oldest_first() {
        let start = Instant::now();
        let mut progress = Progress::new(0);
        let positions: Vec<i64> = (1..=(MAX_GAPS as i64 + 2)).map(|n| n * 2).collect();
        progress.read(positions, start);
        assert_eq!(progress.gaps.len(), MAX_GAPS + 2);
        let given_up = progress.give_up(start, LATE_WINDOW);
        assert_eq!(given_up, [(1, 1), (3, 3)]);
        assert_eq!(progress.floor(), 4);
    }
}
