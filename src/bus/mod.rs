//! The event bus: every write publishes here, every subscription listens here, and
//! replicas tell each other about changes (e.g. a project's schema) here. Backed by
//! Redis pub/sub when `NIMBUS_REDIS_URL` is set, by a tokio broadcast otherwise.
//!
//! Every change's message is written to the event log ([`log`]) in the transaction
//! that makes the change; the bus then carries a notification of it (the message and
//! its position) for latency, and each replica's relay hands its subscribers the
//! messages in position order, reading from the log what the notifications missed
//! (a gap, a Redis outage, a quiet second). Only presence travels on the bus alone.
//!
//! Subscribers always listen to the local broadcast channel. With Redis, a listener
//! task forwards the Redis channel to the relay and reconnects by itself, so
//! subscribers survive a Redis restart without noticing more than the gap; when the
//! listener is back, it hands its subscribers [`BusMessage::Resumed`] (presence
//! announced meanwhile is lost and gets reconciled), and the relay catches up from
//! the log, so caches are refreshed by the changes it replays rather than dropped
//! wholesale.

pub mod consumer;
pub mod log;
mod paced;
pub mod patterns;
pub mod presence;
mod redis_bus;

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use paced::PacedReceiver;
pub use redis_bus::RedisBus;

/// Messages kept for subscribers that fall behind; one that falls further is dropped.
const LOCAL_CAPACITY: usize = 4096;

/// Only the newest messages hold work for their subscribers to share: a subscriber
/// further behind does its own, so shared work cannot pile up in the backlog.
const SHARING_MESSAGES: usize = 32;

/// Distinct pieces of shared work one message holds; past this, subscribers that
/// ask for another do their own.
const SHARED_PER_MESSAGE: usize = 1024;

/// Bytes of shared renders one message may keep ([`Published::keep_bytes`]): the
/// newest messages hold at most this many each, however many shapes of answer
/// their subscribers ask for; past it, subscribers render for themselves.
const SHARED_BYTES_PER_MESSAGE: usize = 4 * 1024 * 1024;

/// What travels on the bus.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum BusMessage {
    /// A resource changed; subscriptions deliver it to the callers allowed to read it.
    Event(Event),
    /// A project was updated or deleted: replicas drop what they cached about it
    /// (its schema included).
    ProjectChanged {
        #[serde(rename = "projectId")]
        project_id: String,
    },
    /// A user changed (blocked, deleted, signed out, new password): replicas drop
    /// their cached sessions of that user, so the change takes effect at once.
    UserChanged {
        #[serde(rename = "projectId")]
        project_id: String,
        #[serde(rename = "userId")]
        user_id: String,
    },
    /// A console administrator signed out, changed their second factor or was
    /// deleted: replicas wake the connections acting with that administrator's
    /// console sessions, which re-check them. Server-wide: logged under no project.
    AdminChanged { email: String },
    /// Someone joined, changed, left or is still on a presence channel.
    Presence(presence::Presence),
    /// This replica's bus came back after a gap (Redis restarted or was
    /// unreachable): presence announced meanwhile is lost; logged changes are not
    /// (the relay reads them from the log). Local only: never sent to or read from
    /// Redis, so no one can announce it.
    #[serde(skip)]
    Resumed,
}

/// A change to a resource, as realtime subscribers see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Unique id of the event, the same on every replica that sees it: webhooks
    /// deliver an event at most once per webhook by it (their `webhook-id`).
    #[serde(default = "new_event_id")]
    pub id: String,
    pub project_id: String,
    /// Appwrite-style event names, most specific first, e.g. `keys.K.create`, `keys.*.create`.
    pub events: Vec<String>,
    /// Channels the event is published on, e.g. `keys`, `keys.K`.
    pub channels: Vec<String>,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The resource after the change (before it, for a delete).
    pub payload: serde_json::Value,
    /// The resource before an update, for subscribers that watch a filtered set
    /// (is it leaving or entering?).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<serde_json::Value>,
    /// Where the event stands in the event log: positions grow in commit order.
    /// Zero until logged (it is the log row's key, not part of its body).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub position: i64,
    /// Roles that may read the resource (`any`, `user:ID`, `team:ID/owner`, ...).
    pub read_roles: Vec<String>,
    /// Roles that could read `previous`, which goes only to them (and to keys
    /// holding `key_scope`); none: to no client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_read_roles: Vec<String>,
    /// The scope an API key needs to receive it.
    pub key_scope: String,
    /// The function execution whose work caused the change, if one did: event
    /// triggers skip that function and stop past a depth ([`Cause`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
}

/// The function execution a change came from, and how deep in a chain of event
/// triggers that execution ran (1: started by a call, a schedule or a change no
/// function made; n + 1: triggered by an event whose cause had depth n).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cause {
    pub function_id: String,
    pub depth: u32,
}

tokio::task_local! {
    /// The execution on whose behalf the current task writes: events logged inside
    /// its scope carry it ([`log::entry`]).
    pub static CAUSE: Cause;
}

impl Event {
    /// A change to the resource `name` (`teams.T`, `users.U`, …): the event
    /// names `<name>.<action>` and `<pattern>.<action>` (the name with its ids as
    /// `*`), stamped now. Channels, readers and the key scope are the caller's to
    /// fill in.
    pub fn change(
        project_id: &str,
        name: &str,
        pattern: &str,
        action: &str,
        payload: serde_json::Value,
    ) -> Event {
        Event {
            id: new_event_id(),
            project_id: project_id.to_string(),
            events: vec![format!("{name}.{action}"), format!("{pattern}.{action}")],
            channels: Vec::new(),
            timestamp: chrono::Utc::now().timestamp_millis(),
            payload,
            previous: None,
            position: 0,
            read_roles: Vec::new(),
            previous_read_roles: Vec::new(),
            key_scope: String::new(),
            cause: None,
        }
    }

    /// The same change named more narrowly, as Appwrite names a change to one part
    /// of a resource (`users.U.update.email`, `teams.T.memberships.M.update.status`):
    /// the `<name>.<detail>` names come first (webhooks and functions match the
    /// first), the broader ones stay for subscribers that look for them.
    pub fn detailed(mut self, detail: &str) -> Event {
        let narrow: Vec<String> = self
            .events
            .iter()
            .map(|e| format!("{e}.{detail}"))
            .collect();
        self.events.splice(0..0, narrow);
        self
    }

    /// The action Appwrite suffixes the event's channels with (`files.create`,
    /// `teams.T.update`): the last segment of its most specific name, or the one
    /// before it when a detail follows (`users.U.update.email`); none for a change
    /// below a user (`users.U.sessions.S.create`), which is not the account's.
    pub fn channel_action(&self) -> Option<&str> {
        let name = self.events.first()?;
        let mut parts = name.rsplit('.');
        let last = parts.next()?;
        let action = if CHANNEL_ACTIONS.contains(&last) {
            last
        } else {
            parts.next().filter(|part| CHANNEL_ACTIONS.contains(part))?
        };
        let mut from_start = name.split('.');
        if from_start.next() == Some("users") && from_start.nth(1) != Some(action) {
            return None;
        }
        Some(action)
    }

    /// The event's channels as Appwrite lists them: each, then each channel of a
    /// resource (`files`, `buckets.B.files.F`, `teams.T`) with the action after it.
    pub fn channels_with_action(&self) -> Vec<String> {
        let mut channels = self.channels.clone();
        if let Some(action) = self.channel_action() {
            for channel in self.channels.iter().filter(|c| takes_action(c)) {
                let suffixed = format!("{channel}.{action}");
                if !channels.contains(&suffixed) {
                    channels.push(suffixed);
                }
            }
        }
        channels
    }

    /// The action of the most specific event name (`create`, `update`, `delete`, …)
    /// when the event is on `channel`.
    pub fn action_on(&self, channel: &str) -> Option<&str> {
        if !self.channels.iter().any(|c| c == channel) {
            return None;
        }
        // The broadest of the names: a detailed event (`….update.email`) ends in
        // its detail, not its action.
        Some(self.events.last()?.rsplit('.').next().unwrap_or_default())
    }
}

/// The actions a channel may be suffixed with, as in Appwrite.
pub const CHANNEL_ACTIONS: [&str; 4] = ["create", "update", "upsert", "delete"];

/// Whether `channel` names a resource, or a kind of them, that Appwrite gives an
/// action sibling (`documents.create`, `buckets.B.files.F.delete`).
pub fn takes_action(channel: &str) -> bool {
    const RESOURCES: [&str; 9] = [
        "documents",
        "rows",
        "files",
        "executions",
        "functions",
        "account",
        "teams",
        "memberships",
        "presences",
    ];
    let mut segments = channel.rsplit('.');
    let last = segments.next().unwrap_or_default();
    RESOURCES.contains(&last) || segments.next().is_some_and(|s| RESOURCES.contains(&s))
}

fn is_zero(position: &i64) -> bool {
    *position == 0
}

/// A fresh event id (time-ordered, like every generated id).
pub fn new_event_id() -> String {
    crate::db::ids::generate()
}

/// A message as this replica's subscribers receive it: the message, and room for
/// work its subscribers share (a response rendered once for all who asked alike).
pub struct Published {
    pub message: BusMessage,
    /// `None` once the message is no longer among the newest.
    shared: Mutex<Option<SharedWork>>,
    /// Bytes the shared work holds, as its makers declared them.
    shared_bytes: std::sync::atomic::AtomicUsize,
}

/// Shared work by key. The keys are hashes already (see their makers), and one
/// is looked up for every delivery of a fan-out: they are used as they are
/// rather than hashed again.
type SharedWork = HashMap<u64, Arc<dyn Any + Send + Sync>, BuildHasherDefault<KeyAsHash>>;

/// The hasher of keys that are hashes.
#[derive(Default)]
struct KeyAsHash(u64);

impl Hasher for KeyAsHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; anything else is folded in whole.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

impl Published {
    pub fn new(message: BusMessage) -> Arc<Published> {
        Arc::new(Published {
            message,
            shared: Mutex::new(Some(SharedWork::default())),
            shared_bytes: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The shared `T` under `key`, made by the first subscriber that asks. A key
    /// held by another type, a message past sharing or one holding as much shared
    /// work as it may yields a fresh, unshared `T`.
    pub fn shared<T: Default + Send + Sync + 'static>(&self, key: u64) -> Arc<T> {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let Some(shared) = shared.as_mut() else {
            return Arc::default();
        };
        if shared.len() >= SHARED_PER_MESSAGE && !shared.contains_key(&key) {
            return Arc::default();
        }
        let entry = shared
            .entry(key)
            .or_insert_with(|| Arc::new(T::default()) as Arc<dyn Any + Send + Sync>);
        entry.clone().downcast::<T>().unwrap_or_default()
    }

    /// Whether shared work of `bytes` more may be kept with this message: false
    /// past [`SHARED_BYTES_PER_MESSAGE`], and the maker keeps it to itself.
    pub fn keep_bytes(&self, bytes: usize) -> bool {
        use std::sync::atomic::Ordering;
        let before = self.shared_bytes.fetch_add(bytes, Ordering::AcqRel);
        if before.saturating_add(bytes) <= SHARED_BYTES_PER_MESSAGE {
            return true;
        }
        self.shared_bytes.fetch_sub(bytes, Ordering::AcqRel);
        false
    }

    /// Drops the shared work and shares no more.
    fn stop_sharing(&self) {
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// The broadcast to this replica's subscribers, and the newest messages sent on it
/// (the ones that still share work).
#[derive(Clone)]
pub(crate) struct Local {
    sender: broadcast::Sender<Arc<Published>>,
    sharing: Arc<Mutex<VecDeque<Arc<Published>>>>,
    pacer: Arc<paced::Pacer>,
    /// Where presence heard from any replica is recorded before it is passed on.
    book: Arc<std::sync::OnceLock<Arc<dyn presence::PresenceBook>>>,
}

impl Local {
    fn new() -> Self {
        let (sender, _) = broadcast::channel(LOCAL_CAPACITY);
        Local {
            sender,
            sharing: Arc::default(),
            pacer: Arc::default(),
            book: Arc::default(),
        }
    }

    /// Hands a presence message heard from any replica to the book, then what it
    /// makes of it to this replica's subscribers.
    pub(crate) fn send_presence(&self, presence: presence::Presence) {
        let told = match self.book.get() {
            Some(book) => book.heard(presence),
            None => Some(presence),
        };
        if let Some(presence) = told {
            self.send(BusMessage::Presence(presence));
        }
    }

    pub(crate) fn send(&self, message: BusMessage) {
        let published = Published::new(message);
        {
            let mut sharing = self.sharing.lock().unwrap_or_else(|e| e.into_inner());
            sharing.push_back(published.clone());
            while sharing.len() > SHARING_MESSAGES {
                if let Some(oldest) = sharing.pop_front() {
                    oldest.stop_sharing();
                }
            }
        }
        // No receiver is not an error: nobody is listening right now.
        self.pacer.send(&self.sender, published);
    }
}

/// Health of the bus for `/health`.
#[derive(Debug, Clone, Serialize)]
pub struct BusHealth {
    pub kind: &'static str,
    pub up: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What travels between replicas: notifications of logged messages, and presence
/// (which is not logged).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum Wire {
    /// The message logged at `position`, whole: what earlier versions send, still
    /// heard from them while replicas are upgraded one at a time.
    #[allow(dead_code)]
    Logged { position: i64, message: BusMessage },
    /// The entry logged at `position`, its body as the log holds it: the writer
    /// sends the text it already encoded for the log (no second encoding, and a
    /// document event without what its resource implies), and a replica reads
    /// it as it would read the log ([`log::decode`]).
    Entry {
        position: i64,
        #[serde(rename = "projectId")]
        project_id: String,
        body: String,
    },
    /// A presence change, and the replica that sent it: a replica has told its
    /// own subscribers already and skips its own.
    Presence {
        #[serde(default)]
        origin: String,
        #[serde(flatten)]
        presence: presence::Presence,
    },
}

/// What learns of each message its replica committed to the log, once, on the
/// replica that wrote it (usage counts created and deleted resources this way,
/// without reading the log back).
pub trait CommitWatch: Send + Sync {
    fn committed(&self, message: &BusMessage);
}

/// A handle on the bus: cheap to clone.
#[derive(Clone)]
pub struct Bus {
    local: Local,
    redis: Option<Arc<RedisBus>>,
    relay: log::RelayHandle,
    db: crate::db::Db,
    watch: Arc<std::sync::OnceLock<Arc<dyn CommitWatch>>>,
}

impl Bus {
    /// The in-process bus of a single replica, relaying the log of `db`.
    pub async fn in_process(db: &crate::db::Db) -> anyhow::Result<Self> {
        let local = Local::new();
        let relay = log::RelayHandle::start(db.clone(), local.clone()).await?;
        Ok(Bus {
            local,
            redis: None,
            relay,
            db: db.clone(),
            watch: Arc::default(),
        })
    }

    /// The Redis-backed bus shared by replicas, relaying the log of `db`; fails when
    /// Redis cannot be reached now.
    pub async fn redis(url: &str, prefix: &str, db: &crate::db::Db) -> anyhow::Result<Self> {
        let local = Local::new();
        let relay = log::RelayHandle::start(db.clone(), local.clone()).await?;
        let redis = RedisBus::connect(url, prefix, local.clone(), relay.clone()).await?;
        Ok(Bus {
            local,
            redis: Some(Arc::new(redis)),
            relay,
            db: db.clone(),
            watch: Arc::default(),
        })
    }

    /// Hands a message to this replica's subscribers only.
    pub fn publish_local(&self, message: BusMessage) {
        self.local.send(message);
    }

    /// Sets where the presence heard on the bus is recorded; once, at start.
    pub fn set_presence_book(&self, book: Arc<dyn presence::PresenceBook>) {
        if self.local.book.set(book).is_err() {
            tracing::warn!("the bus's presence book was set twice; the first stays");
        }
    }

    /// Sets what learns of the messages this replica commits; once, at start.
    pub fn set_commit_watch(&self, watch: Arc<dyn CommitWatch>) {
        if self.watch.set(watch).is_err() {
            tracing::warn!("the bus's commit watch was set twice; the first stays");
        }
    }

    /// Tells every replica about a presence change: this one at once, whether
    /// Redis is up or not (its own subscribers never wait on Redis to hear of
    /// their own replica's presences), the others through Redis. Presence is not
    /// logged: a failure is logged and returned, and the re-announcement after the
    /// bus is back repairs it.
    pub async fn publish_presence(&self, presence: presence::Presence) -> anyhow::Result<()> {
        let Some(redis) = &self.redis else {
            self.local.send_presence(presence);
            return Ok(());
        };
        self.local.send_presence(presence.clone());
        redis
            .publish(&Wire::Presence {
                origin: redis.origin().to_string(),
                presence,
            })
            .await
            .inspect_err(|err| {
                metrics::counter!("nimbus_bus_publish_failures_total").increment(1);
                tracing::debug!(error = %err, "bus publish of a presence failed");
            })
    }

    /// Notifies every replica (this one at once) of messages logged by a committed
    /// transaction. A failed notification is only late: replicas read the log.
    pub async fn announce(&self, logged: Vec<crate::db::event_log::Logged>) {
        if logged.is_empty() {
            return;
        }
        // The other replicas are told with the bodies as logged.
        let mut wires = Vec::new();
        let messages: Vec<(i64, BusMessage)> = logged
            .into_iter()
            .filter_map(|mut logged| {
                if self.redis.is_some() {
                    // The body is only decoded when no message was carried along.
                    let body = match logged.carried.is_some() {
                        true => std::mem::take(&mut logged.body),
                        false => logged.body.clone(),
                    };
                    wires.push(Wire::Entry {
                        position: logged.position,
                        project_id: logged.project_id.clone(),
                        body,
                    });
                }
                log::message_of(logged)
            })
            .collect();
        if let Some(watch) = self.watch.get() {
            for (_, message) in &messages {
                watch.committed(message);
            }
        }
        for (position, message) in messages {
            self.relay.offer(position, message);
        }
        let Some(redis) = &self.redis else {
            return;
        };
        for wire in wires {
            if let Err(err) = redis.publish(&wire).await {
                metrics::counter!("nimbus_bus_publish_failures_total").increment(1);
                tracing::warn!(error = %err, "bus notification failed; replicas read it from the event log");
                return;
            }
        }
    }

    /// How far this replica's relay has delivered: a subscription that joined the
    /// live stream before asking reads the rest from the log (see
    /// `services::realtime::resume`).
    pub fn relay_mark(&self) -> log::RelayMark {
        self.relay.mark()
    }

    /// The database whose log this bus relays.
    pub fn db(&self) -> &crate::db::Db {
        &self.db
    }

    /// A receiver of every message published from now on, on any replica.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.local.sender.subscribe()
    }

    /// The same, for subscribers that come by the thousand (connections,
    /// subscriptions): they are woken a chunk at a time, so that a message to all
    /// of them does not hold up the replica's other work (see [`paced`]).
    pub fn subscribe_paced(&self) -> PacedReceiver {
        self.local.pacer.subscribe(&self.local.sender)
    }

    pub async fn health(&self) -> BusHealth {
        match &self.redis {
            None => BusHealth {
                kind: "in-process",
                up: true,
                error: None,
            },
            Some(redis) => {
                let error = redis.check().await.err().map(|e| e.to_string());
                BusHealth {
                    kind: "redis",
                    up: error.is_none(),
                    error,
                }
            }
        }
    }

    /// The Redis command connection, when the bus runs on Redis.
    pub fn redis_connection(&self) -> Option<redis::aio::ConnectionManager> {
        self.redis.as_ref().map(|redis| redis.connection())
    }

    /// Stops background tasks (the relay, the Redis listener) of this bus.
    pub fn shutdown(&self) {
        self.relay.shutdown();
        if let Some(redis) = &self.redis {
            redis.shutdown();
        }
    }
}

/// Whether a subscriber's channel pattern matches an event channel: segments are
/// separated by `.` and a `*` segment matches any one segment.
pub fn channel_matches(pattern: &str, channel: &str) -> bool {
    let mut pattern_parts = pattern.split('.');
    let mut channel_parts = channel.split('.');
    loop {
        match (pattern_parts.next(), channel_parts.next()) {
            (None, None) => return true,
            (Some(p), Some(c)) if p == "*" || p == c => continue,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_of_resources_get_their_actions_as_in_appwrite() {
        let mut file = Event::change(
            "p",
            "buckets.b.files.f",
            "buckets.*.files.*",
            "create",
            serde_json::Value::Null,
        );
        file.channels = vec![
            "files".into(),
            "buckets.b.files".into(),
            "buckets.b.files.f".into(),
        ];
        assert_eq!(file.channel_action(), Some("create"));
        assert_eq!(
            file.channels_with_action(),
            [
                "files",
                "buckets.b.files",
                "buckets.b.files.f",
                "files.create",
                "buckets.b.files.create",
                "buckets.b.files.f.create"
            ]
        );
        let email = Event::change("p", "users.u", "users.*", "update", serde_json::Value::Null)
            .detailed("email");
        assert_eq!(email.channel_action(), Some("update"));
        let session = Event::change(
            "p",
            "users.u.sessions.s",
            "users.*.sessions.*",
            "create",
            serde_json::Value::Null,
        );
        assert_eq!(
            session.channel_action(),
            None,
            "not the account's own change"
        );
        let mut key = Event::change("p", "keys.k", "keys.*", "delete", serde_json::Value::Null);
        key.channels = vec!["keys".into(), "keys.k".into()];
        assert_eq!(key.channels_with_action(), ["keys", "keys.k"]);
    }

    #[test]
    fn wildcard_segments_match_exactly_one_segment() {
        assert!(channel_matches("keys", "keys"));
        assert!(channel_matches("keys.*", "keys.abc"));
        assert!(!channel_matches("keys.*", "keys"));
        assert!(!channel_matches("keys", "keys.abc"));
        assert!(channel_matches(
            "databases.*.collections.c1.documents",
            "databases.d.collections.c1.documents"
        ));
    }

    #[test]
    fn subscribers_share_work_by_key() {
        let published = Published::new(BusMessage::ProjectChanged {
            project_id: "p".into(),
        });
        let first = published.shared::<std::sync::atomic::AtomicU32>(7);
        first.store(5, std::sync::atomic::Ordering::SeqCst);
        let again = published.shared::<std::sync::atomic::AtomicU32>(7);
        assert_eq!(again.load(std::sync::atomic::Ordering::SeqCst), 5);
        // Another type under a taken key is not shared.
        let other = published.shared::<std::sync::atomic::AtomicU64>(7);
        assert_eq!(other.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn only_the_newest_messages_share_and_each_shares_a_bounded_amount() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let local = Local::new();
        let mut rx = local.sender.subscribe();
        for _ in 0..=SHARING_MESSAGES {
            local.send(BusMessage::ProjectChanged {
                project_id: "p".into(),
            });
        }
        let oldest = rx.try_recv().unwrap();
        oldest.shared::<AtomicU32>(1).store(9, Ordering::SeqCst);
        assert_eq!(oldest.shared::<AtomicU32>(1).load(Ordering::SeqCst), 0);
        assert_eq!(local.sharing.lock().unwrap().len(), SHARING_MESSAGES);

        let newest = Published::new(BusMessage::ProjectChanged {
            project_id: "p".into(),
        });
        for key in 0..SHARED_PER_MESSAGE as u64 {
            newest.shared::<AtomicU32>(key).store(1, Ordering::SeqCst);
        }
        let beyond = SHARED_PER_MESSAGE as u64;
        newest
            .shared::<AtomicU32>(beyond)
            .store(1, Ordering::SeqCst);
        assert_eq!(newest.shared::<AtomicU32>(beyond).load(Ordering::SeqCst), 0);
        assert_eq!(newest.shared::<AtomicU32>(0).load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_resumed_notice_never_travels_between_replicas() {
        assert!(serde_json::to_string(&BusMessage::Resumed).is_err());
        assert!(serde_json::from_str::<BusMessage>(r#"{"kind":"resumed"}"#).is_err());
    }

    #[test]
    fn a_presence_notice_names_the_replica_that_sent_it() {
        let wire = Wire::Presence {
            origin: "replica-a".into(),
            presence: presence::Presence {
                project_id: "p".into(),
                channel: "room".into(),
                id: "x".into(),
                user_id: None,
                state: serde_json::json!({"name": "ann"}),
                kind: presence::PresenceKind::Join,
                at: 5,
            },
        };
        let text = serde_json::to_string(&wire).unwrap();
        let Wire::Presence { origin, presence } = serde_json::from_str(&text).unwrap() else {
            panic!("not a presence: {text}");
        };
        assert_eq!(origin, "replica-a");
        assert_eq!(presence.kind, presence::PresenceKind::Join);
        assert_eq!(presence.state, serde_json::json!({"name": "ann"}));
        // One from a replica that names none is heard as another's.
        let unnamed = text.replace(r#""origin":"replica-a","#, "");
        assert_ne!(unnamed, text);
        let Wire::Presence { origin, .. } = serde_json::from_str(&unnamed).unwrap() else {
            panic!("not a presence: {unnamed}");
        };
        assert_eq!(origin, "");
    }

    #[test]
    fn an_entry_notice_is_read_as_the_log_reads_its_body() {
        let entry = log::entry(BusMessage::ProjectChanged {
            project_id: "p".into(),
        })
        .unwrap();
        let wire = Wire::Entry {
            position: 9,
            project_id: entry.project_id,
            body: entry.body,
        };
        let text = serde_json::to_string(&wire).unwrap();
        let Wire::Entry {
            position,
            project_id,
            body,
        } = serde_json::from_str(&text).unwrap()
        else {
            panic!("not an entry notice: {text}");
        };
        assert_eq!(position, 9);
        let message = log::decode(&project_id, &body);
        assert!(
            matches!(message, Some(BusMessage::ProjectChanged { project_id }) if project_id == "p")
        );
    }

    #[test]
    fn a_logged_notice_carries_its_message_and_position() {
        let wire = Wire::Logged {
            position: 7,
            message: BusMessage::ProjectChanged {
                project_id: "p".into(),
            },
        };
        let text = serde_json::to_string(&wire).unwrap();
        let Wire::Logged { position, message } = serde_json::from_str(&text).unwrap() else {
            panic!("not a logged notice: {text}");
        };
        assert_eq!(position, 7);
        assert!(matches!(message, BusMessage::ProjectChanged { project_id } if project_id == "p"));
    }
}
