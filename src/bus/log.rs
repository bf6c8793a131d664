//! The event log seen from the bus: what a message looks like as a log entry, the
//! one way services commit a change together with its messages ([`commit`]), the
//! relay that hands this replica's subscribers every logged message in position
//! order, and the pruning of entries past the retention.
//!
//! The relay keeps the last position it delivered. A notification (from this
//! replica's own writes, or from Redis) at the next position is delivered at once;
//! one further ahead waits a moment for those before it, then the relay reads the
//! missing positions from the log. It also reads the log when the Redis listener
//! comes back and, whatever happens, every [`POLL`]: a replica that heard nothing
//! still delivers (and refreshes its caches from) every change within that time.
//! Positions are given out in commit order without gaps (see
//! [`crate::db::event_log`]), so a missing position is either on its way or pruned.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Any, Transaction};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{BusMessage, Local};
use crate::db::event_log::{self, Entry, Logged};
use crate::db::{Db, now_millis};

/// How often the relay reads the log even when no notification came.
pub const POLL: Duration = Duration::from_secs(1);
/// How long a notification ahead of the next position waits for those before it
/// before the relay reads them from the log.
const GAP_WAIT: Duration = Duration::from_millis(50);
/// Most entries one read of the log returns.
const READ_BATCH: i64 = 1000;
/// Notifications queued for the relay; past this they are dropped (the relay reads
/// them from the log instead).
const INBOX: usize = 8192;
/// Most entries one pruning statement deletes.
const PRUNE_BATCH: i64 = 5000;

/// The log entry of a message, when it is one that is logged (presence is not).
pub fn entry(message: &BusMessage) -> Option<Entry> {
    let project_id = match message {
        BusMessage::Event(event) => &event.project_id,
        BusMessage::ProjectChanged { project_id } | BusMessage::UserChanged { project_id, .. } => {
            project_id
        }
        BusMessage::Presence(_) | BusMessage::Resumed => return None,
    };
    let body = serde_json::to_string(message)
        .inspect_err(|err| tracing::error!(error = %err, "an event could not be encoded"))
        .ok()?;
    Some(Entry {
        project_id: project_id.clone(),
        body,
    })
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
pub fn entries<'a>(messages: impl IntoIterator<Item = &'a BusMessage>) -> Vec<Entry> {
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
    let logged = event_log::append(&mut tx, bus.db().dialect(), entries(&messages)).await?;
    tx.commit().await?;
    bus.announce(logged).await;
    Ok(())
}

/// [`commit`] with a transaction of its own: for a message about a change whose
/// own transaction is out of reach (DDL on MariaDB commits by itself).
pub async fn log_alone(bus: &super::Bus, messages: Vec<BusMessage>) -> Result<(), sqlx::Error> {
    let tx = bus.db().pool().begin().await?;
    commit(bus, tx, messages).await
}

enum Inbound {
    /// A notification of the message logged at this position.
    Logged(i64, BusMessage),
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
        let (inbox, received) = mpsc::channel(INBOX);
        let relay = Relay {
            db,
            local,
            delivered: head,
            waiting: BTreeMap::new(),
        };
        let task = Arc::new(tokio::spawn(relay.run(received)));
        Ok(RelayHandle { inbox, task })
    }

    /// A notification of the message logged at `position`. Dropped when the relay
    /// is that far behind: it will read it from the log.
    pub(super) fn offer(&self, position: i64, message: BusMessage) {
        if self
            .inbox
            .try_send(Inbound::Logged(position, message))
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

struct Relay {
    db: Db,
    local: Local,
    /// The last position handed to subscribers.
    delivered: i64,
    /// Notifications ahead of the next position.
    waiting: BTreeMap<i64, BusMessage>,
}

impl Relay {
    async fn run(mut self, mut inbox: mpsc::Receiver<Inbound>) {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut gap_since: Option<tokio::time::Instant> = None;
        loop {
            let gap_deadline = gap_since.map(|since| since + GAP_WAIT);
            let read_log = tokio::select! {
                received = inbox.recv() => match received {
                    None => return,
                    Some(Inbound::CatchUp) => true,
                    Some(Inbound::Logged(position, message)) => {
                        if position > self.delivered {
                            self.waiting.insert(position, message);
                        }
                        self.deliver_waiting();
                        false
                    }
                },
                _ = poll.tick() => true,
                _ = sleep_until(gap_deadline) => true,
            };
            if read_log {
                self.read_log().await;
            }
            gap_since = match (self.waiting.is_empty(), gap_since) {
                (true, _) => None,
                (false, None) => Some(tokio::time::Instant::now()),
                (false, since) => since,
            };
        }
    }

    /// Delivers the notifications that follow the last delivered position.
    fn deliver_waiting(&mut self) {
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() != self.delivered + 1 {
                break;
            }
            let (position, message) = entry.remove_entry();
            self.deliver(position, message);
        }
    }

    fn deliver(&mut self, position: i64, mut message: BusMessage) {
        if let BusMessage::Event(event) = &mut message {
            event.position = position;
        }
        self.delivered = position;
        self.local.send(message);
    }

    /// Delivers what the log holds past the last delivered position.
    async fn read_log(&mut self) {
        loop {
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
                if logged.position != self.delivered + 1 {
                    // Pruned before this replica read it: what subscribers
                    // missed cannot be told, so everything cached is dropped.
                    tracing::warn!(
                        from = self.delivered + 1,
                        to = logged.position - 1,
                        "event log entries were pruned before this replica relayed them"
                    );
                    self.local.send(BusMessage::Resumed);
                }
                let message = self
                    .waiting
                    .remove(&logged.position)
                    .or_else(|| decode(&logged.body));
                match message {
                    Some(message) => self.deliver(logged.position, message),
                    None => self.delivered = logged.position,
                }
            }
            self.waiting = self.waiting.split_off(&(self.delivered + 1));
            self.deliver_waiting();
            if !full {
                return;
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Deletes log entries older than `retention`, in bounded statements, for as long
/// as the server runs. Every replica prunes; deleting what another replica deleted
/// deletes nothing.
pub async fn prune_forever(db: Db, retention: Duration) {
    let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let before = now_millis() - retention.as_millis() as i64;
        loop {
            match event_log::prune(db.pool(), db.dialect(), before, PRUNE_BATCH).await {
                Ok(deleted) => {
                    metrics::counter!("nimbus_event_log_pruned_total").increment(deleted);
                    if (deleted as i64) < PRUNE_BATCH {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "pruning the event log failed");
                    break;
                }
            }
        }
    }
}
