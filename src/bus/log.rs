//! The event log seen from the bus: what a message looks like as a log entry, the
//! one way services commit a change together with its messages ([`commit`]), the
//! relay that hands this replica's subscribers every logged message in position
//! order, and the pruning of entries past the retention.
//!
//! The relay keeps the position up to which it has delivered. A notification (from
//! this replica's own writes, or from Redis) at the next position is delivered at
//! once; one further ahead waits a moment for those before it, then the relay reads
//! the missing positions from the log. It also reads the log when the Redis listener
//! comes back and, whatever happens, every [`POLL`]: a replica that heard nothing
//! still delivers (and refreshes its caches from) every change within that time.
//!
//! Positions are taken at insert, not at commit ([`crate::db::event_log`]): a
//! missing position is a transaction between its last statement and its commit
//! (it will come), or a rollback (it never will). The relay waits on a gap for
//! [`GAP_BOUND`] at most, reading the log again meanwhile, then passes it; a
//! passed position that turns up within [`LATE_WATCH`] is still delivered, late
//! rather than never.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Any, Transaction};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{BusMessage, Local};
use crate::db::event_log::{self, Carried, Entry, Logged};
use crate::db::{Db, now_millis};

/// How often the relay reads the log even when no notification came.
pub const POLL: Duration = Duration::from_secs(1);
/// How long a gap waits for its positions before the relay reads the log, the
/// first time; then twice as long each time, up to [`POLL`].
const GAP_WAIT: Duration = Duration::from_millis(50);
/// How long a gap may hold back the positions after it: a transaction takes no
/// longer from its last statement to its commit, unless it failed.
pub const GAP_BOUND: Duration = Duration::from_secs(5);
/// How long a passed position is still looked for in the log.
const LATE_WATCH: Duration = Duration::from_secs(60);
/// Most passed positions looked for at once (a larger gap is the pruned past).
const MAX_LATE: usize = 10_000;
/// Most entries one read of the log returns.
const READ_BATCH: i64 = 1000;
/// Notifications queued for the relay; past this they are dropped (the relay reads
/// them from the log instead).
const INBOX: usize = 8192;
/// Most entries one pruning statement deletes.
const PRUNE_BATCH: i64 = 5000;

/// The log entry of a message, when it is one that is logged (presence is not).
/// The message travels with it ([`Carried`]) to [`super::Bus::announce`].
pub fn entry(mut message: BusMessage) -> Option<Entry> {
    let project_id = match &message {
        BusMessage::Event(event) => event.project_id.clone(),
        BusMessage::ProjectChanged { project_id } | BusMessage::UserChanged { project_id, .. } => {
            project_id.clone()
        }
        // No project id is empty: the log's server-wide entries.
        BusMessage::AdminChanged { .. } => String::new(),
        BusMessage::Presence(_) | BusMessage::Resumed => return None,
    };
    // A change made on behalf of a function's execution names it, so that event
    // triggers can tell (and not loop).
    if let BusMessage::Event(event) = &mut message
        && event.cause.is_none()
    {
        event.cause = super::CAUSE.try_with(Clone::clone).ok();
    }
    let body = serde_json::to_string(&message)
        .inspect_err(|err| tracing::error!(error = %err, "an event could not be encoded"))
        .ok()?;
    Some(Entry {
        project_id,
        body,
        carried: Some(Carried(Box::new(message))),
    })
}

/// The message of a logged entry: the one its writer carried along, else its
/// body decoded.
pub fn message_of(logged: Logged) -> Option<(i64, BusMessage)> {
    let carried = logged
        .carried
        .and_then(|carried| carried.0.downcast::<BusMessage>().ok());
    let message = match carried {
        Some(message) => *message,
        None => decode(&logged.body)?,
    };
    Some((logged.position, message))
}

/// The message of a logged entry's body, at its position.
pub fn decode_at(logged: &Logged) -> Option<BusMessage> {
    let mut message = decode(&logged.body)?;
    if let BusMessage::Event(event) = &mut message {
        event.position = logged.position;
    }
    Some(message)
}

/// The message of a log entry's body.
pub(super) fn decode(body: &str) -> Option<BusMessage> {
    serde_json::from_str(body)
        .inspect_err(|err| tracing::warn!(error = %err, "skipping an undecodable log entry"))
        .ok()
}

/// The log entries of `messages`.
pub fn entries(messages: impl IntoIterator<Item = BusMessage>) -> Vec<Entry> {
    messages.into_iter().filter_map(entry).collect()
}

/// Logs `messages` in `tx`, commits it, and notifies every replica: the one way a
/// change is committed together with what it announces, so that neither can
/// exist without the other.
pub async fn commit(
    bus: &super::Bus,
    mut tx: Transaction<'static, Any>,
    messages: Vec<BusMessage>,
) -> Result<(), sqlx::Error> {
    let logged = event_log::append(&mut tx, entries(messages)).await?;
    tx.commit().await?;
    bus.announce(logged).await;
    Ok(())
}

enum Inbound {
    /// A notification of the message logged at this position.
    Logged(i64, Box<BusMessage>),
    /// Read the log now.
    CatchUp,
}

/// A handle on this replica's relay: cheap to clone.
#[derive(Clone)]
pub struct RelayHandle {
    inbox: mpsc::Sender<Inbound>,
    task: Arc<JoinHandle<()>>,
}

impl RelayHandle {
    /// Starts the relay of `db`'s log into `local`, from the current head: what was
    /// logged before this replica started is not delivered.
    pub(super) async fn start(db: Db, local: Local) -> anyhow::Result<RelayHandle> {
        let head = event_log::head(db.pool()).await?;
        let late = uncommitted_below(&db, head).await?;
        let (inbox, received) = mpsc::channel(INBOX);
        let relay = Relay {
            db,
            local,
            delivered: head,
            waiting: BTreeMap::new(),
            gap: None,
            late,
        };
        let task = Arc::new(tokio::spawn(relay.run(received)));
        Ok(RelayHandle { inbox, task })
    }

    /// A notification of the message logged at `position`. Dropped when the relay
    /// is that far behind: it will read it from the log.
    pub(super) fn offer(&self, position: i64, message: BusMessage) {
        if self
            .inbox
            .try_send(Inbound::Logged(position, Box::new(message)))
            .is_err()
        {
            metrics::counter!("nimbus_relay_notifications_dropped_total").increment(1);
        }
    }

    /// Asks the relay to read the log now (notifications may have been lost).
    pub(super) fn catch_up(&self) {
        let _ = self.inbox.try_send(Inbound::CatchUp);
    }

    pub(super) fn shutdown(&self) {
        self.task.abort();
    }
}

/// The positions among the last [`READ_BATCH`] up to `head` that had not
/// committed when the relay started, watched like passed ones: a transaction that
/// took one before the start may still commit, and its events are then delivered
/// late rather than never. (Most are gaps that stay gaps: rolled back, or skipped
/// by MariaDB's auto-increment.)
async fn uncommitted_below(db: &Db, head: i64) -> Result<BTreeMap<i64, Instant>, sqlx::Error> {
    let from = (head - READ_BATCH).max(0);
    let committed: std::collections::HashSet<i64> = event_log::after(db.pool(), from, READ_BATCH)
        .await?
        .iter()
        .map(|logged| logged.position)
        .collect();
    let now = Instant::now();
    Ok(((from + 1)..=head)
        .filter(|position| !committed.contains(position))
        .map(|position| (position, now))
        .collect())
}

/// A position missing before others that arrived.
struct Gap {
    since: Instant,
    /// When to read the log for it next.
    read_at: Instant,
    /// The wait before the read after that.
    backoff: Duration,
}

struct Relay {
    db: Db,
    local: Local,
    /// Every position up to this one was delivered or passed.
    delivered: i64,
    /// Messages after a gap, by position (none: an entry that cannot be read,
    /// passed without a word).
    waiting: BTreeMap<i64, Option<BusMessage>>,
    gap: Option<Gap>,
    /// Positions passed as gaps, by when: delivered late should they turn up.
    late: BTreeMap<i64, Instant>,
}

impl Relay {
    async fn run(mut self, mut inbox: mpsc::Receiver<Inbound>) {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let gap_read = self.gap.as_ref().map(|gap| gap.read_at);
            let read_log = tokio::select! {
                received = inbox.recv() => match received {
                    None => return,
                    Some(Inbound::CatchUp) => true,
                    Some(Inbound::Logged(position, message)) => {
                        self.offered(position, *message);
                        false
                    }
                },
                _ = poll.tick() => true,
                _ = sleep_until(gap_read) => true,
            };
            if read_log {
                self.read_log().await;
            }
            self.track_gap();
        }
    }

    fn offered(&mut self, position: i64, message: BusMessage) {
        if position > self.delivered {
            self.waiting.insert(position, Some(message));
            self.deliver_waiting();
        } else if self.late.remove(&position).is_some() {
            self.deliver_late(position, message);
        }
    }

    /// Starts timing a gap when messages wait, and forgets it when none do.
    fn track_gap(&mut self) {
        if self.waiting.is_empty() {
            self.gap = None;
        } else if self.gap.is_none() {
            let now = Instant::now();
            self.gap = Some(Gap {
                since: now,
                read_at: now + GAP_WAIT,
                backoff: GAP_WAIT * 2,
            });
        }
    }

    /// Delivers the waiting messages that follow the delivered positions.
    fn deliver_waiting(&mut self) {
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() != self.delivered + 1 {
                break;
            }
            let (position, message) = entry.remove_entry();
            match message {
                Some(message) => self.deliver(position, message),
                None => self.delivered = position,
            }
            // Whatever gap there was is closed; the next one is timed afresh.
            self.gap = None;
        }
    }

    fn deliver(&mut self, position: i64, mut message: BusMessage) {
        if let BusMessage::Event(event) = &mut message {
            event.position = position;
        }
        self.delivered = self.delivered.max(position);
        self.local.send(message);
    }

    fn deliver_late(&mut self, position: i64, message: BusMessage) {
        metrics::counter!("nimbus_relay_late_total").increment(1);
        tracing::warn!(
            position,
            "an event committed after the relay passed its position"
        );
        let mut message = message;
        if let BusMessage::Event(event) = &mut message {
            event.position = position;
        }
        self.local.send(message);
    }

    /// Reads what the log holds past the delivered positions, passes a gap that
    /// outlived [`GAP_BOUND`], and looks for the positions passed earlier.
    async fn read_log(&mut self) {
        loop {
            let before = self.delivered;
            let read = event_log::after(self.db.pool(), self.delivered, READ_BATCH).await;
            let entries = match read {
                Ok(entries) => entries,
                Err(err) => {
                    tracing::warn!(error = %err, "reading the event log failed; retrying");
                    return;
                }
            };
            let full = entries.len() as i64 == READ_BATCH;
            for logged in entries {
                self.waiting
                    .entry(logged.position)
                    .or_insert_with(|| decode(&logged.body));
            }
            self.deliver_waiting();
            self.pass_old_gap();
            if !full || self.delivered == before {
                break;
            }
        }
        if let Some(gap) = &mut self.gap {
            gap.read_at = Instant::now() + gap.backoff;
            gap.backoff = (gap.backoff * 2).min(POLL);
        }
        self.read_late().await;
    }

    /// Passes the gap before the first waiting message once it is older than
    /// [`GAP_BOUND`], watching its positions for [`LATE_WATCH`].
    fn pass_old_gap(&mut self) {
        let Some(gap) = &self.gap else { return };
        if gap.since.elapsed() < GAP_BOUND {
            return;
        }
        let Some(&first) = self.waiting.keys().next() else {
            return;
        };
        tracing::warn!(
            from = self.delivered + 1,
            to = first - 1,
            "passing event log positions that did not commit in time"
        );
        let now = Instant::now();
        for position in (self.delivered + 1)..first {
            if self.late.len() >= MAX_LATE {
                break;
            }
            self.late.insert(position, now);
        }
        self.delivered = first - 1;
        self.gap = None;
        self.deliver_waiting();
    }

    /// Delivers the passed positions that committed since, and forgets those
    /// passed too long ago.
    async fn read_late(&mut self) {
        let now = Instant::now();
        self.late
            .retain(|_, passed| now.duration_since(*passed) < LATE_WATCH);
        if self.late.is_empty() {
            return;
        }
        let positions: Vec<i64> = self
            .late
            .keys()
            .take(READ_BATCH as usize)
            .copied()
            .collect();
        match event_log::at(self.db.pool(), &positions).await {
            Ok(found) => {
                for logged in found {
                    self.late.remove(&logged.position);
                    if let Some(message) = decode(&logged.body) {
                        self.deliver_late(logged.position, message);
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "reading passed event log positions failed"),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Deletes log entries older than `retention`, in bounded statements, for as long
/// as the server runs. Every replica prunes; deleting what another replica deleted
/// deletes nothing.
///
/// What a consumer of the log ([`super::consumer`]) has not handled yet stays, for
/// up to [`CONSUMER_HOLD`] times the retention: a consumer that stopped for good
/// (or fails at every try) must not fill the disk. Entries pruned past a
/// consumer's position are lost to it: that is logged as an error and counted.
pub async fn prune_forever(db: Db, retention: Duration) {
    let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let floor = match crate::db::log_consumers::floor(db.pool()).await {
            Ok(floor) => floor.unwrap_or(i64::MAX),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the event log consumers' positions; not pruning");
                continue;
            }
        };
        let now = now_millis();
        let before = now - retention.as_millis() as i64;
        let overdue = now - (retention * CONSUMER_HOLD).as_millis() as i64;
        let handled = prune_below(&db, before, floor).await;
        let unhandled = prune_below(&db, overdue, i64::MAX).await;
        metrics::counter!("nimbus_event_log_pruned_total").increment(handled + unhandled);
        if unhandled > 0 {
            metrics::counter!("nimbus_event_log_pruned_unhandled_total").increment(unhandled);
            tracing::error!(
                events = unhandled,
                consumer_position = floor,
                "pruned event log entries an event log consumer had not handled: it was \
                 stopped or failing for longer than the retention allows"
            );
        }
    }
}

/// How many retention periods the log keeps entries its consumers have not handled.
pub const CONSUMER_HOLD: u32 = 2;

/// Deletes the entries logged before `before` at or below `kept_above`, in bounded
/// statements; answers how many went.
async fn prune_below(db: &Db, before: i64, kept_above: i64) -> u64 {
    let mut pruned = 0;
    loop {
        match event_log::prune(db.pool(), db.dialect(), before, kept_above, PRUNE_BATCH).await {
            Ok(deleted) => {
                pruned += deleted;
                if (deleted as i64) < PRUNE_BATCH {
                    return pruned;
                }
                tokio::task::yield_now().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "pruning the event log failed");
                return pruned;
            }
        }
    }
}
