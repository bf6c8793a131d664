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
//!
//! An entry's body is JSON: a document event (any change whose channels, names
//! and key scope follow from its resource) without those and without its
//! project, which is the row's ([`ChangeOut`]), its document without the ids and
//! time the resource and its creation imply ([`Trimmed`]); any other message
//! whole, as the bus carries it. Bodies of both forms, and the whole messages
//! earlier versions wrote for every event, decode alike ([`decode`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Any, Transaction};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use super::{BusMessage, Cause, Event, Local};
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
    let body = encode(&message)
        .inspect_err(|err| tracing::error!(error = %err, "an event could not be encoded"))
        .ok()?;
    Some(Entry {
        project_id,
        body,
        carried: Some(Carried(Box::new(message))),
    })
}

/// Room reserved for a body before it is written: most events (a document and
/// its readers) fit, so that the text is not grown and copied as it is written.
const BODY_CAPACITY: usize = 512;

/// The body a message is logged with: a change whose channels, names and key
/// scope follow from its resource ([`Change`]) without them, any other message
/// whole, as the bus carries it.
fn encode(message: &BusMessage) -> serde_json::Result<String> {
    let mut body = Vec::with_capacity(BODY_CAPACITY);
    let change = match message {
        BusMessage::Event(event) => change_of(event).map(|change| (event, change)),
        _ => None,
    };
    match change {
        Some((event, (resource, action))) => {
            let payload = Trimmed::of(resource, &event.payload);
            let previous =
                (event.previous.as_ref()).map(|previous| Trimmed::of(resource, previous));
            serde_json::to_writer(
                &mut body,
                &ChangeOut {
                    kind: CHANGE_KIND,
                    resource,
                    action,
                    id: &event.id,
                    timestamp: event.timestamp,
                    implied: payload.implied,
                    previous_implied: previous.as_ref().map_or(0, |previous| previous.implied),
                    payload,
                    previous,
                    read_roles: &event.read_roles,
                    previous_read_roles: &event.previous_read_roles,
                    cause: event.cause.as_ref(),
                },
            )?;
        }
        None => serde_json::to_writer(&mut body, message)?,
    }
    // serde_json writes UTF-8 only.
    Ok(String::from_utf8(body).unwrap_or_default())
}

/// The `kind` of a body holding a change without what follows from its resource;
/// every other body is a whole [`BusMessage`], whose kinds are others.
const CHANGE_KIND: &str = "change";
/// How such a body begins (serde writes a struct's fields in their order).
const CHANGE_START: &str = "{\"kind\":\"change\",";

/// A change to a resource as the log stores it, written by [`encode`]. Its
/// channels are the resource's kind, its parent and itself; its names are
/// `<resource>.<action>` and then the same with the resource's ids replaced by
/// `*` one more at a time from the right; its key scope is `<kind>.read`; its
/// project is the log row's. Document events are such changes
/// (`databases.D.collections.C.documents.I`: channels `documents`,
/// `databases.D.collections.C.documents` and the resource, four names), and
/// leaving out what follows halves their rows. A change only goes in this form
/// when decoding it gives back exactly what was written ([`change_of`]).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChangeOut<'a> {
    kind: &'static str,
    resource: &'a str,
    action: &'a str,
    id: &'a str,
    timestamp: i64,
    payload: Trimmed<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous: Option<Trimmed<'a>>,
    /// The fields of `payload` left out because the resource implies them
    /// ([`Implied`]), and of `previous`.
    #[serde(skip_serializing_if = "is_zero")]
    implied: u8,
    #[serde(skip_serializing_if = "is_zero")]
    previous_implied: u8,
    read_roles: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    previous_read_roles: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'a Cause>,
}

/// A [`ChangeOut`] read back.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangeIn {
    resource: String,
    action: String,
    id: String,
    timestamp: i64,
    payload: serde_json::Value,
    #[serde(default)]
    previous: Option<serde_json::Value>,
    #[serde(default)]
    implied: u8,
    #[serde(default)]
    previous_implied: u8,
    read_roles: Vec<String>,
    #[serde(default)]
    previous_read_roles: Vec<String>,
    #[serde(default)]
    cause: Option<Cause>,
}

impl ChangeIn {
    fn into_event(mut self, project_id: &str) -> Event {
        restore(&self.resource, &mut self.payload, self.implied);
        if let Some(previous) = &mut self.previous {
            restore(&self.resource, previous, self.previous_implied);
        }
        let kind = kind_of(&self.resource);
        let ids = ids_in(&self.resource);
        let events = (0..=ids)
            .map(|wildcards| {
                let mut name = String::with_capacity(self.resource.len() + self.action.len() + 1);
                // Writing to a String cannot fail.
                let _ = write_name(&mut name, &self.resource, wildcards, &self.action);
                name
            })
            .collect();
        let channels = vec![
            kind.to_string(),
            parent_of(&self.resource).to_string(),
            self.resource.clone(),
        ];
        Event {
            id: self.id,
            project_id: project_id.to_string(),
            events,
            channels,
            timestamp: self.timestamp,
            payload: self.payload,
            previous: self.previous,
            position: 0,
            read_roles: self.read_roles,
            previous_read_roles: self.previous_read_roles,
            key_scope: format!("{kind}.read"),
            cause: self.cause,
        }
    }
}

fn is_zero(bits: &u8) -> bool {
    *bits == 0
}

/// The fields of a document (`payload`, `previous`) that its resource implies,
/// one bit each in a body's `implied`: its id, its database's and collection's
/// ids (the resource names all three), and an `$updatedAt` equal to its
/// `$createdAt` (a create's). A field goes only when its value is exactly what
/// [`restore`] puts back; an earlier body has no `implied`, and has them all.
/// They are a fifth of a create's body, which MariaDB's work on the log row
/// grows with.
struct Implied;

impl Implied {
    const ID: u8 = 1;
    const DATABASE: u8 = 2;
    const COLLECTION: u8 = 4;
    const UPDATED_AS_CREATED: u8 = 8;
}

/// The id in `resource` after the segment `kind` (`databases.D…`: `D`).
fn id_after<'r>(resource: &'r str, kind: &str) -> Option<&'r str> {
    let mut segments = resource.split('.');
    while let Some(segment) = segments.next() {
        let id = segments.next()?;
        if segment == kind {
            return Some(id);
        }
    }
    None
}

/// The fields of `value` that `resource` implies, as [`Implied`] bits, and the
/// text of each: what [`restore`] gives back for them.
fn implied_fields(resource: &str) -> [(u8, &'static str, Option<&str>); 3] {
    [
        (Implied::ID, "$id", resource.rsplit('.').next()),
        (
            Implied::DATABASE,
            "$databaseId",
            id_after(resource, "databases"),
        ),
        (
            Implied::COLLECTION,
            "$collectionId",
            id_after(resource, "collections"),
        ),
    ]
}

/// A document as a body holds it: without the fields its resource implies.
struct Trimmed<'a> {
    value: &'a serde_json::Value,
    implied: u8,
}

impl<'a> Trimmed<'a> {
    /// Checks, without allocating, which of [`Implied`]'s fields `value` holds
    /// exactly as `resource` implies them.
    fn of(resource: &str, value: &'a serde_json::Value) -> Trimmed<'a> {
        let mut implied = 0;
        if let serde_json::Value::Object(fields) = value {
            for (bit, key, expected) in implied_fields(resource) {
                if expected.is_some()
                    && fields.get(key).and_then(serde_json::Value::as_str) == expected
                {
                    implied |= bit;
                }
            }
            let created = fields.get("$createdAt").and_then(serde_json::Value::as_str);
            if created.is_some()
                && fields.get("$updatedAt").and_then(serde_json::Value::as_str) == created
            {
                implied |= Implied::UPDATED_AS_CREATED;
            }
        }
        Trimmed { value, implied }
    }

    fn left_out(&self, key: &str) -> bool {
        let bit = match key {
            "$id" => Implied::ID,
            "$databaseId" => Implied::DATABASE,
            "$collectionId" => Implied::COLLECTION,
            "$updatedAt" => Implied::UPDATED_AS_CREATED,
            _ => return false,
        };
        self.implied & bit != 0
    }
}

impl Serialize for Trimmed<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let serde_json::Value::Object(fields) = self.value else {
            return self.value.serialize(serializer);
        };
        let mut map =
            serializer.serialize_map(Some(fields.len() - self.implied.count_ones() as usize))?;
        for (key, value) in fields {
            if !self.left_out(key) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// Puts back into `value` the fields `implied` says its body left out.
fn restore(resource: &str, value: &mut serde_json::Value, implied: u8) {
    let serde_json::Value::Object(fields) = value else {
        return;
    };
    if implied == 0 {
        return;
    }
    for (bit, key, text) in implied_fields(resource) {
        if implied & bit != 0
            && let Some(text) = text
        {
            fields.insert(key.to_string(), serde_json::Value::from(text));
        }
    }
    if implied & Implied::UPDATED_AS_CREATED != 0
        && let Some(created) = fields.get("$createdAt").cloned()
    {
        fields.insert("$updatedAt".to_string(), created);
    }
}

/// The resource and action of `event` when it is a change that [`ChangeIn`]
/// gives back exactly (its channels, names and key scope those its resource
/// implies); none otherwise, and it is logged whole. Compares without
/// allocating: it runs for every logged event.
fn change_of(event: &Event) -> Option<(&str, &str)> {
    let [kind, parent, resource] = event.channels.as_slice() else {
        return None;
    };
    let segments = resource.split('.').count();
    if segments < 2 || segments % 2 == 1 {
        return None;
    }
    let action = event
        .events
        .first()?
        .strip_prefix(resource.as_str())?
        .strip_prefix('.')?;
    let ids = ids_in(resource);
    let same = event.events.len() == ids + 1
        && kind == kind_of(resource)
        && parent == parent_of(resource)
        && event
            .key_scope
            .strip_prefix(kind.as_str())
            .is_some_and(|rest| rest == ".read")
        && event.events.iter().enumerate().all(|(wildcards, name)| {
            writes(name, |out| write_name(out, resource, wildcards, action))
        });
    same.then_some((resource.as_str(), action))
}

/// How many ids a resource names: one per pair of segments (`teams.T`: one).
fn ids_in(resource: &str) -> usize {
    resource.split('.').count() / 2
}

/// The kind of a resource: the segment before its id (`documents`).
fn kind_of(resource: &str) -> &str {
    resource.rsplit('.').nth(1).unwrap_or_default()
}

/// The resource without its id: the channel of its kind's collection.
fn parent_of(resource: &str) -> &str {
    resource.rsplit_once('.').map_or("", |(parent, _)| parent)
}

/// Writes the name of `action` on `resource` with its last `wildcards` ids
/// written `*` (`databases.D.collections.*.documents.*.create` for two).
fn write_name(
    out: &mut impl std::fmt::Write,
    resource: &str,
    wildcards: usize,
    action: &str,
) -> std::fmt::Result {
    let kept = ids_in(resource).saturating_sub(wildcards);
    for (n, segment) in resource.split('.').enumerate() {
        if n > 0 {
            out.write_char('.')?;
        }
        let wild = n % 2 == 1 && n / 2 >= kept;
        out.write_str(if wild { "*" } else { segment })?;
    }
    out.write_char('.')?;
    out.write_str(action)
}

/// Whether `write` writes exactly `expected`.
fn writes(expected: &str, write: impl FnOnce(&mut Same<'_>) -> std::fmt::Result) -> bool {
    let mut same = Same {
        rest: expected,
        same: true,
    };
    write(&mut same).is_ok() && same.same && same.rest.is_empty()
}

/// A writer that compares what it is given with a text, and keeps nothing.
struct Same<'a> {
    rest: &'a str,
    same: bool,
}

impl std::fmt::Write for Same<'_> {
    fn write_str(&mut self, piece: &str) -> std::fmt::Result {
        match self.rest.strip_prefix(piece) {
            Some(rest) if self.same => self.rest = rest,
            _ => self.same = false,
        }
        Ok(())
    }
}

/// The message of a logged entry: the one its writer carried along, else its
/// body decoded.
pub fn message_of(logged: Logged) -> Option<(i64, BusMessage)> {
    let carried = logged
        .carried
        .and_then(|carried| carried.0.downcast::<BusMessage>().ok());
    let message = match carried {
        Some(message) => *message,
        None => decode(&logged.project_id, &logged.body)?,
    };
    Some((logged.position, message))
}

/// The message of a logged entry's body, at its position.
pub fn decode_at(logged: &Logged) -> Option<BusMessage> {
    let mut message = decode(&logged.project_id, &logged.body)?;
    if let BusMessage::Event(event) = &mut message {
        event.position = logged.position;
    }
    Some(message)
}

/// The message of a log entry's body, logged under `project_id`: either form
/// [`encode`] writes, and the whole messages every earlier version wrote.
pub(super) fn decode(project_id: &str, body: &str) -> Option<BusMessage> {
    let decoded = match body.starts_with(CHANGE_START) {
        true => serde_json::from_str::<ChangeIn>(body)
            .map(|change| BusMessage::Event(change.into_event(project_id))),
        false => serde_json::from_str(body),
    };
    decoded
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

/// How far this replica's relay has delivered, as a subscription joining the live
/// stream sees it: what it must read from the log (at most `delivered`, leaving out
/// `late`), and what the live stream will still bring (positions past `delivered`,
/// and those of `late` that commit).
#[derive(Debug, Clone, PartialEq)]
pub struct RelayMark {
    /// Every position up to this one was delivered or passed.
    pub delivered: i64,
    /// The passed positions still watched, in order: delivered late, live, should
    /// they commit.
    pub late: Arc<[i64]>,
}

/// A handle on this replica's relay: cheap to clone.
#[derive(Clone)]
pub struct RelayHandle {
    inbox: mpsc::Sender<Inbound>,
    task: Arc<JoinHandle<()>>,
    mark: Arc<std::sync::Mutex<RelayMark>>,
}

impl RelayHandle {
    /// Starts the relay of `db`'s log into `local`, from the current head: what was
    /// logged before this replica started is not delivered.
    pub(super) async fn start(db: Db, local: Local) -> anyhow::Result<RelayHandle> {
        let head = event_log::head(db.pool()).await?;
        let late = uncommitted_below(&db, head).await?;
        let (inbox, received) = mpsc::channel(INBOX);
        let mark = Arc::new(std::sync::Mutex::new(RelayMark {
            delivered: head,
            late: late.keys().copied().collect(),
        }));
        let relay = Relay {
            db,
            local,
            delivered: head,
            waiting: BTreeMap::new(),
            gap: None,
            late,
            mark: mark.clone(),
        };
        let task = Arc::new(tokio::spawn(relay.run(received)));
        Ok(RelayHandle { inbox, task, mark })
    }

    /// How far the relay has delivered now. A receiver of the bus subscribed
    /// before this is asked gets every message delivered after it.
    pub(super) fn mark(&self) -> RelayMark {
        self.mark.lock().unwrap_or_else(|e| e.into_inner()).clone()
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
    /// `delivered` and the keys of `late`, as [`RelayHandle::mark`] tells them.
    mark: Arc<std::sync::Mutex<RelayMark>>,
}

impl Relay {
    /// Moves the delivered mark to `position`, where resumptions see it too.
    fn set_delivered(&mut self, position: i64) {
        self.delivered = position;
        self.mark
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .delivered = position;
    }

    /// Tells resumptions the passed positions watched now. Called before the
    /// delivered mark moves past new ones: a resumption that sees the mark past a
    /// position sees it among these if it was passed.
    fn publish_late(&mut self) {
        let late: Arc<[i64]> = self.late.keys().copied().collect();
        self.mark.lock().unwrap_or_else(|e| e.into_inner()).late = late;
    }

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
            self.publish_late();
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
                None => self.set_delivered(position),
            }
            // Whatever gap there was is closed; the next one is timed afresh.
            self.gap = None;
        }
    }

    fn deliver(&mut self, position: i64, mut message: BusMessage) {
        if let BusMessage::Event(event) = &mut message {
            event.position = position;
        }
        self.local.send(message);
        self.set_delivered(self.delivered.max(position));
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
                    .or_insert_with(|| decode(&logged.project_id, &logged.body));
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
        self.publish_late();
        self.set_delivered(first - 1);
        self.gap = None;
        self.deliver_waiting();
    }

    /// Delivers the passed positions that committed since, and forgets those
    /// passed too long ago.
    async fn read_late(&mut self) {
        let now = Instant::now();
        let before = self.late.len();
        self.late
            .retain(|_, passed| now.duration_since(*passed) < LATE_WATCH);
        if self.late.len() != before {
            self.publish_late();
        }
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
                let mut delivered = false;
                for logged in found {
                    self.late.remove(&logged.position);
                    delivered = true;
                    if let Some(message) = decode(&logged.project_id, &logged.body) {
                        self.deliver_late(logged.position, message);
                    }
                }
                if delivered {
                    self.publish_late();
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
        match event_log::prune(db.pool(), before, kept_above, PRUNE_BATCH).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A document event as the databases service makes one.
    fn document_event(id: &str, action: &str) -> Event {
        let resource = format!("databases.db1.collections.posts.documents.{id}");
        Event {
            id: "evt1".into(),
            project_id: "p1".into(),
            events: vec![
                format!("{resource}.{action}"),
                format!("databases.db1.collections.posts.documents.*.{action}"),
                format!("databases.db1.collections.*.documents.*.{action}"),
                format!("databases.*.collections.*.documents.*.{action}"),
            ],
            channels: vec![
                "documents".into(),
                "databases.db1.collections.posts.documents".into(),
                resource,
            ],
            timestamp: 1_700_000_000_123,
            payload: serde_json::json!({"$id": id, "title": "hello", "views": 3}),
            previous: None,
            position: 0,
            read_roles: vec!["any".into(), "user:u1".into()],
            previous_read_roles: Vec::new(),
            key_scope: "documents.read".into(),
            cause: None,
        }
    }

    fn logged(project_id: &str, body: String) -> Logged {
        Logged {
            position: 42,
            project_id: project_id.into(),
            body,
            carried: None,
        }
    }

    /// Every field of an event, for comparing one read back with the one written.
    fn fields(message: &BusMessage) -> serde_json::Value {
        serde_json::to_value(message).unwrap()
    }

    fn round_trip(message: BusMessage) -> (String, BusMessage) {
        let project_id = match &message {
            BusMessage::Event(event) => event.project_id.clone(),
            _ => "p1".into(),
        };
        let body = encode(&message).unwrap();
        let back = decode_at(&logged(&project_id, body.clone())).expect("decodes");
        let mut expected = message;
        if let BusMessage::Event(event) = &mut expected {
            event.position = 42;
        }
        assert_eq!(fields(&back), fields(&expected), "read back from {body}");
        (body, back)
    }

    #[test]
    fn a_document_event_is_stored_without_what_its_resource_implies_and_reads_back_whole() {
        let event = document_event("d1", "create");
        let whole = serde_json::to_string(&BusMessage::Event(event.clone())).unwrap();
        let (body, _) = round_trip(BusMessage::Event(event));
        assert!(body.starts_with(CHANGE_START), "{body}");
        for implied in ["events", "channels", "keyScope", "projectId", "previous"] {
            assert!(
                !body.contains(&format!("\"{implied}\"")),
                "{implied} in {body}"
            );
        }
        assert!(
            body.len() * 3 < whole.len() * 2,
            "{} bytes stored for {} whole",
            body.len(),
            whole.len()
        );
    }

    #[test]
    fn an_update_keeps_what_it_was_and_who_could_read_it_and_its_cause() {
        let mut event = document_event("d1", "update");
        event.previous = Some(serde_json::json!({"$id": "d1", "title": "before"}));
        event.previous_read_roles = vec!["user:u2".into()];
        event.cause = Some(Cause {
            function_id: "f1".into(),
            depth: 2,
        });
        let (body, _) = round_trip(BusMessage::Event(event));
        assert!(body.starts_with(CHANGE_START), "{body}");
    }

    #[test]
    fn events_whose_names_do_not_follow_their_resource_are_stored_whole() {
        let mut membership = Event::change(
            "p1",
            "teams.t1.memberships.m1",
            "teams.*.memberships.*",
            "create",
            serde_json::json!({"$id": "m1"}),
        );
        membership.channels = vec!["memberships".into(), "memberships.m1".into()];
        membership.key_scope = "teams.read".into();
        let mut detailed = document_event("d1", "update").detailed("title");
        detailed.previous = Some(serde_json::json!({}));
        // Ids with dots do not split into a resource's pairs.
        let dotted = document_event("a.b", "create");
        let mut other_scope = document_event("d1", "delete");
        other_scope.key_scope = "documents.write".into();
        let mut extra_channel = document_event("d1", "create");
        extra_channel.channels.push("elsewhere".into());
        for event in [membership, detailed, dotted, other_scope, extra_channel] {
            let (body, _) = round_trip(BusMessage::Event(event));
            assert!(body.starts_with(r#"{"kind":"event","#), "{body}");
        }
        for message in [
            BusMessage::ProjectChanged {
                project_id: "p1".into(),
            },
            BusMessage::UserChanged {
                project_id: "p1".into(),
                user_id: "u1".into(),
            },
        ] {
            round_trip(message);
        }
    }

    /// A document as `Document::to_json` shapes it.
    fn document(id: &str, created: &str, updated: &str) -> serde_json::Value {
        serde_json::json!({
            "$id": id,
            "$collectionId": "posts",
            "$databaseId": "db1",
            "$createdAt": created,
            "$updatedAt": updated,
            "$permissions": ["read(\"any\")"],
            "title": "hello",
        })
    }

    #[test]
    fn a_created_document_is_stored_without_the_ids_and_time_its_resource_and_creation_imply() {
        let mut event = document_event("d1", "create");
        let at = "2026-12-05T16:01:14.602Z";
        event.payload = document("d1", at, at);
        let (body, _) = round_trip(BusMessage::Event(event));
        for implied in ["$id", "$collectionId", "$databaseId", "$updatedAt"] {
            assert!(
                !body.contains(&format!("\"{implied}\"")),
                "{implied} in {body}"
            );
        }
        assert!(
            body.contains(r#""$createdAt":"2026-12-05T16:01:14.602Z""#),
            "{body}"
        );
        assert!(body.contains(r#""implied":15"#), "{body}");
    }

    #[test]
    fn an_updated_document_keeps_its_update_time_and_what_its_resource_does_not_imply() {
        let mut event = document_event("d1", "update");
        event.payload = document("d1", "2026-12-05T16:01:14.602Z", "2026-12-05T16:01:15.000Z");
        let mut previous = document("d1", "2026-12-05T16:01:14.602Z", "2026-12-05T16:01:14.602Z");
        // Not what the resource says: kept as it is.
        previous["$collectionId"] = "other".into();
        event.previous = Some(previous);
        let (body, _) = round_trip(BusMessage::Event(event));
        assert!(
            body.contains(r#""$updatedAt":"2026-12-05T16:01:15.000Z""#),
            "{body}"
        );
        assert!(body.contains(r#""$collectionId":"other""#), "{body}");
        assert!(body.contains(r#""implied":7"#), "{body}");
        assert!(body.contains(r#""previousImplied":11"#), "{body}");
        // A payload that is no object, or lacks the fields, is stored as it is.
        for payload in [serde_json::json!("text"), serde_json::json!({"title": "t"})] {
            let mut event = document_event("d1", "delete");
            event.payload = payload;
            let (body, _) = round_trip(BusMessage::Event(event));
            assert!(!body.contains("implied"), "{body}");
        }
    }

    #[test]
    fn a_change_stored_before_fields_were_implied_reads_back_as_stored() {
        let body = r#"{"kind":"change","resource":"databases.db1.collections.posts.documents.d1","action":"create","id":"evt0","timestamp":1700000000123,"payload":{"$id":"d1","$databaseId":"db1","title":"hello"},"readRoles":["any"]}"#;
        let Some(BusMessage::Event(event)) = decode_at(&logged("p1", body.into())) else {
            panic!("not decoded");
        };
        assert_eq!(
            event.payload,
            serde_json::json!({"$id": "d1", "$databaseId": "db1", "title": "hello"}),
            "nothing added"
        );
    }

    #[test]
    fn a_name_matches_what_is_written_for_it_and_nothing_else() {
        let is_name = |name: &str, resource: &str, wildcards: usize, action: &str| {
            writes(name, |out| write_name(out, resource, wildcards, action))
        };
        let resource = "databases.db1.collections.posts.documents.d1";
        for wildcards in 0..=3 {
            let mut written = String::new();
            write_name(&mut written, resource, wildcards, "create").unwrap();
            assert!(
                is_name(&written, resource, wildcards, "create"),
                "{written}"
            );
            for other in [
                format!("{written}x"),
                format!("x{written}"),
                written.replace("create", "update"),
                written.replacen('.', "..", 1),
                written.replace(".create", ".x.create"),
            ] {
                assert!(!is_name(&other, resource, wildcards, "create"), "{other}");
            }
            assert!(!is_name(&written, resource, (wildcards + 1) % 4, "create"));
        }
        assert!(!is_name("create", resource, 0, "create"));
        assert!(!is_name(".create", resource, 0, "create"));
    }

    #[test]
    fn a_change_of_one_resource_level_derives_its_two_names() {
        let mut file = Event::change(
            "p1",
            "buckets.b1",
            "buckets.*",
            "create",
            serde_json::json!({"$id": "b1"}),
        );
        file.channels = vec!["buckets".into(), "buckets".into(), "buckets.b1".into()];
        file.key_scope = "buckets.read".into();
        let (body, _) = round_trip(BusMessage::Event(file));
        assert!(body.starts_with(CHANGE_START), "{body}");
    }

    #[test]
    fn a_body_stored_whole_by_an_earlier_version_still_decodes() {
        let body = r#"{"kind":"event","id":"evt0","projectId":"p1","events":["databases.db1.collections.posts.documents.d1.create","databases.db1.collections.posts.documents.*.create","databases.db1.collections.*.documents.*.create","databases.*.collections.*.documents.*.create"],"channels":["documents","databases.db1.collections.posts.documents","databases.db1.collections.posts.documents.d1"],"timestamp":1700000000123,"payload":{"$id":"d1","title":"hello"},"readRoles":["any"],"keyScope":"documents.read"}"#;
        let Some(BusMessage::Event(event)) = decode_at(&logged("p1", body.into())) else {
            panic!("not decoded");
        };
        assert_eq!(event.position, 42);
        assert_eq!(event.id, "evt0");
        assert_eq!(
            event.events,
            document_event("d1", "create").events,
            "its names as stored"
        );
        assert_eq!(event.channels, document_event("d1", "create").channels);
        assert_eq!(event.payload["title"], "hello");
        // The project in its body, as it was written.
        assert!(decode("elsewhere", body).is_some_and(|message| matches!(
            message,
            BusMessage::Event(event) if event.project_id == "p1"
        )));
    }

    #[test]
    fn no_message_of_the_bus_is_stored_under_the_kind_of_a_change() {
        for message in [
            BusMessage::Event(document_event("d1", "create")),
            BusMessage::ProjectChanged {
                project_id: "p1".into(),
            },
            BusMessage::AdminChanged {
                email: "a@example.com".into(),
            },
        ] {
            let whole = serde_json::to_string(&message).unwrap();
            assert!(!whole.starts_with(CHANGE_START), "{whole}");
        }
        assert!(decode("p1", r#"{"kind":"change","resource":"x"}"#).is_none());
    }
}
