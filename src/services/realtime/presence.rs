//! Presence: who is on a channel right now. A `presence(channel, state)`
//! subscription announces its caller (JOIN) for as long as it stays open and
//! watches the others; `presenceChanged(channel)` only watches;
//! `updatePresence` changes the caller's state (UPDATE). Every replica keeps the
//! whole list, learned from the bus. Each replica re-announces its own presences
//! every quarter of `NIMBUS_PRESENCE_TIMEOUT`; one not heard of for that long is
//! gone (LEAVE) — so a replica that dies takes its presences with it, on every
//! other replica. The registry is the bus's presence book: watchers see a
//! presence as their replica first heard of it (a JOIN, even when that was a
//! heartbeat), a replica's own presences reach its own watchers without waiting
//! on Redis, and after a bus gap presences are reconciled ([`reconcile`]): an
//! outage longer than the timeout expires the others' presences, and those still
//! alive JOIN again when their replica re-announces them.
//!
//! The registry is memory every client can add to, so announcing is capped per
//! channel, per user and per client address (counts kept as entries come and go,
//! so a check costs the same however many there are), and a new watcher is sent
//! a bounded number of those already present. Every JOIN and LEAVE goes to every
//! watcher of its channel, so one client address may also open only so many
//! presences a second: without it, a client replacing its presences in a loop
//! has the server deliver (caps) × (its churn) events a second.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::AppState;
use crate::bus::BusMessage;
pub use crate::bus::presence::{Presence, PresenceKind};
use crate::error::{AppError, AppResult, codes};

#[derive(Debug, Clone)]
struct Entry {
    presence: Presence,
    seen: Instant,
    /// Opened on this replica: this replica heartbeats it.
    local: bool,
    /// The client address it was announced from, when opened here.
    client: Option<String>,
}

/// How many presences there may be; 0 for no cap.
#[derive(Debug, Clone, Copy)]
pub struct PresenceLimits {
    pub per_channel: usize,
    pub per_user: usize,
    pub per_client: usize,
    /// Presences one client address may open per second.
    pub joins_per_second: usize,
}

/// Counts of what each client address did in its current window of
/// [`JOIN_WINDOW`]: when the window began, and how many.
#[derive(Default)]
struct Windows {
    counts: HashMap<String, (Instant, usize)>,
    /// The size `counts` may reach before expired windows are swept.
    sweep_at: usize,
}

impl Windows {
    /// Counts `n` more for `client`; `RATE_LIMITED` (counting none) when that
    /// would take it past `per_second` in the current window. Expired windows are
    /// swept once the map has doubled since the last sweep, so the map stays within
    /// twice the clients active in the last second, at a constant cost per count.
    fn charge(&mut self, client: &str, n: usize, per_second: usize) -> AppResult<()> {
        if per_second == 0 {
            return Ok(());
        }
        let now = Instant::now();
        if self.counts.len() >= self.sweep_at.max(MIN_JOIN_SWEEP) {
            self.counts
                .retain(|_, (start, _)| now.duration_since(*start) < JOIN_WINDOW);
            self.sweep_at = self.counts.len() * 2;
        }
        let window = match self.counts.get_mut(client) {
            Some(window) => window,
            None => self.counts.entry(client.to_string()).or_insert((now, 0)),
        };
        if now.duration_since(window.0) >= JOIN_WINDOW {
            *window = (now, 0);
        }
        if window.1.saturating_add(n) > per_second {
            return Err(AppError::RateLimited {
                retry_after: JOIN_WINDOW.as_secs(),
            });
        }
        window.1 += n;
        Ok(())
    }
}

/// How long a client's count of presences opened lasts.
const JOIN_WINDOW: Duration = Duration::from_secs(1);
/// The fewest clients' join counts kept before expired ones are swept.
const MIN_JOIN_SWEEP: usize = 1024;

/// The entries with the counts the caps are checked against, kept as entries come
/// and go so that announcing costs the same however many presences there are.
#[derive(Default)]
struct Entries {
    channels: HashMap<(String, String), HashMap<String, Entry>>,
    /// Presences per (project, user), on every replica.
    per_user: HashMap<(String, String), usize>,
    /// Presences opened here per client address.
    per_client: HashMap<String, usize>,
    /// Presences opened here per client address in its current window.
    joins: Windows,
    /// Presence updates sent from here per client address in its current window.
    updates: Windows,
    /// Presences that left lately, by (project, id), and when: a heartbeat or an
    /// update sent before a LEAVE but heard after it does not bring one back.
    /// Kept for one expiry (ids are never reused).
    left: HashMap<(String, String), Instant>,
}

fn count_down<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(key);
        }
    }
}

impl Entries {
    fn forget(&mut self, entry: &Entry) {
        if let Some(user) = &entry.presence.user_id {
            count_down(
                &mut self.per_user,
                &(entry.presence.project_id.clone(), user.clone()),
            );
        }
        if let Some(client) = &entry.client {
            count_down(&mut self.per_client, client);
        }
    }

    fn remove(&mut self, key: &(String, String), id: &str) {
        let Some(channel) = self.channels.get_mut(key) else {
            return;
        };
        let removed = channel.remove(id);
        if channel.is_empty() {
            self.channels.remove(key);
        }
        if let Some(entry) = removed {
            self.forget(&entry);
        }
    }

    fn upsert(&mut self, presence: &Presence, client: Option<String>) {
        let key = (presence.project_id.clone(), presence.channel.clone());
        let channel = self.channels.entry(key).or_default();
        let mut stored = presence.clone();
        match channel.get_mut(&presence.id) {
            Some(existing) => {
                if presence.kind == PresenceKind::Heartbeat {
                    stored.state = existing.presence.state.clone();
                    stored.kind = existing.presence.kind;
                }
                // The user and the client stay those it was announced with.
                stored.user_id = existing.presence.user_id.clone();
                existing.presence = stored;
                existing.seen = Instant::now();
            }
            None => {
                if let Some(user) = &presence.user_id {
                    *self
                        .per_user
                        .entry((presence.project_id.clone(), user.clone()))
                        .or_default() += 1;
                }
                if let Some(client) = &client {
                    *self.per_client.entry(client.clone()).or_default() += 1;
                }
                channel.insert(
                    presence.id.clone(),
                    Entry {
                        presence: stored,
                        seen: Instant::now(),
                        local: client.is_some(),
                        client,
                    },
                );
            }
        }
    }
}

/// Every replica's view of who is present where.
#[derive(Default)]
pub struct PresenceRegistry {
    entries: Mutex<Entries>,
}

fn too_many(reason: String) -> AppError {
    AppError::Invalid {
        code: codes::TOO_MANY_PRESENCES,
        field: "channel".into(),
        reason,
    }
}

impl PresenceRegistry {
    /// Applies a presence message heard on the bus (or a LEAVE decided here) and
    /// returns what watchers are told of it: a presence first heard of through a
    /// heartbeat or an update JOINs (with the state heard), a heartbeat of one
    /// already known refreshes it silently, and one for a presence that has left
    /// (a heartbeat sent just before its LEAVE, arriving after it) is ignored.
    pub fn apply(&self, presence: &Presence) -> Option<Presence> {
        let mut entries = self.entries.lock().ok()?;
        let key = (presence.project_id.clone(), presence.channel.clone());
        let gone = (presence.project_id.clone(), presence.id.clone());
        match presence.kind {
            PresenceKind::Leave => {
                entries.remove(&key, &presence.id);
                entries.left.insert(gone, Instant::now());
                Some(presence.clone())
            }
            _ if entries.left.contains_key(&gone) => None,
            PresenceKind::Join => {
                entries.upsert(presence, None);
                Some(presence.clone())
            }
            PresenceKind::Update | PresenceKind::Heartbeat => {
                let known = entries
                    .channels
                    .get(&key)
                    .is_some_and(|channel| channel.contains_key(&presence.id));
                entries.upsert(presence, None);
                match (known, presence.kind) {
                    (true, PresenceKind::Heartbeat) => None,
                    (true, _) => Some(presence.clone()),
                    (false, _) => {
                        let mut join = presence.clone();
                        join.kind = PresenceKind::Join;
                        Some(join)
                    }
                }
            }
        }
    }

    /// After a bus gap: what other replicas announced meanwhile is lost, so each
    /// of their presences gets a full expiry from now to be heard of again (their
    /// heartbeats, or the re-announcement they make on their own resumption)
    /// before it leaves.
    fn regrace(&self) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let now = Instant::now();
        for entry in entries.channels.values_mut().flat_map(|c| c.values_mut()) {
            if !entry.local {
                entry.seen = now;
            }
        }
    }

    /// Records a presence opened on this replica from `client` (an address key), if
    /// the caps leave room for it: `TOO_MANY_PRESENCES` otherwise, with nothing
    /// recorded; `RATE_LIMITED` when `client` opened too many this second. The caps
    /// count what this replica knows of every replica.
    pub fn open_local(
        &self,
        presence: &Presence,
        client: &str,
        limits: PresenceLimits,
    ) -> AppResult<()> {
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| AppError::Internal(anyhow::anyhow!("presence registry poisoned")))?;
        let key = (presence.project_id.clone(), presence.channel.clone());
        let on_channel = entries.channels.get(&key).map_or(0, HashMap::len);
        if limits.per_channel > 0 && on_channel >= limits.per_channel {
            return Err(too_many(format!(
                "a channel holds at most {} presences",
                limits.per_channel
            )));
        }
        if let Some(user) = &presence.user_id {
            let held = entries
                .per_user
                .get(&(presence.project_id.clone(), user.clone()))
                .copied()
                .unwrap_or(0);
            if limits.per_user > 0 && held >= limits.per_user {
                return Err(too_many(format!(
                    "a user holds at most {} presences at once",
                    limits.per_user
                )));
            }
        }
        let from_client = entries.per_client.get(client).copied().unwrap_or(0);
        if limits.per_client > 0 && from_client >= limits.per_client {
            return Err(too_many(format!(
                "a client address holds at most {} presences at once",
                limits.per_client
            )));
        }
        entries.joins.charge(client, 1, limits.joins_per_second)?;
        entries.upsert(presence, Some(client.to_string()));
        Ok(())
    }

    /// Counts `count` presence updates sent by `client`; `RATE_LIMITED` (and
    /// none counted) past `per_second`: each reaches every watcher of its channel,
    /// on every replica.
    pub fn charge_updates(&self, client: &str, count: usize, per_second: usize) -> AppResult<()> {
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| AppError::Internal(anyhow::anyhow!("presence registry poisoned")))?;
        entries.updates.charge(client, count, per_second)
    }

    /// Who is on a channel now: the `limit` who came first (all for `None`).
    pub fn members(&self, project_id: &str, channel: &str, limit: Option<usize>) -> Vec<Presence> {
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        let Some(on_channel) = entries
            .channels
            .get(&(project_id.to_string(), channel.to_string()))
        else {
            return Vec::new();
        };
        let order = |a: &&Entry, b: &&Entry| {
            (a.presence.at, &a.presence.id).cmp(&(b.presence.at, &b.presence.id))
        };
        let mut members: Vec<&Entry> = on_channel.values().collect();
        if let Some(limit) = limit
            && limit < members.len()
        {
            // Only the first `limit` are cloned and sorted.
            members.select_nth_unstable_by(limit, order);
            members.truncate(limit);
        }
        members.sort_by(order);
        members.into_iter().map(|e| e.presence.clone()).collect()
    }

    /// The presences a user holds on a channel.
    pub fn held_by(&self, project_id: &str, channel: &str, user_id: &str) -> Vec<Presence> {
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        entries
            .channels
            .get(&(project_id.to_string(), channel.to_string()))
            .map(|c| {
                c.values()
                    .filter(|e| e.presence.user_id.as_deref() == Some(user_id))
                    .map(|e| e.presence.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// This replica's presences, to re-announce.
    fn local(&self) -> Vec<Presence> {
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        entries
            .channels
            .values()
            .flat_map(|c| c.values())
            .filter(|e| e.local)
            .map(|e| e.presence.clone())
            .collect()
    }

    /// Removes other replicas' presences not heard of within `expiry`. Unlike a
    /// LEAVE, an expiry leaves no mark: a replica cut off from the bus for longer
    /// than the expiry (its own outage, or the other's) cannot tell a live
    /// presence from a dead one, so it reports what it can vouch for, and a
    /// presence heard of again once the bus is back JOINs again at once.
    fn expire(&self, expiry: Duration) -> Vec<Presence> {
        let Ok(mut entries) = self.entries.lock() else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        for channel in entries.channels.values() {
            for entry in channel.values() {
                if !entry.local && entry.seen.elapsed() >= expiry {
                    let mut leave = entry.presence.clone();
                    leave.kind = PresenceKind::Leave;
                    gone.push(leave);
                }
            }
        }
        for leave in &gone {
            let key = (leave.project_id.clone(), leave.channel.clone());
            entries.remove(&key, &leave.id);
        }
        entries.left.retain(|_, at| at.elapsed() < expiry);
        gone
    }
}

impl crate::bus::presence::PresenceBook for PresenceRegistry {
    fn heard(&self, presence: Presence) -> Option<Presence> {
        self.apply(&presence)
    }
}

/// Announces this replica's presences to every replica as heartbeats: a replica
/// that knows one only refreshes it, one that does not yet (it missed the JOIN)
/// tells its watchers it JOINed.
async fn announce_local(state: &AppState) {
    for mut presence in state.presence.local() {
        presence.kind = PresenceKind::Heartbeat;
        presence.at = chrono::Utc::now().timestamp_millis();
        let _ = state.bus.publish_presence(presence).await;
    }
}

/// Reconciles presence after a bus gap: JOINs, UPDATEs and LEAVEs sent
/// meanwhile are lost. This replica re-announces its own presences at once;
/// others' presences that are not heard of again within the presence timeout
/// leave (a LEAVE to watchers, as for a replica that died), and those heard of
/// again stay, with no second JOIN.
pub async fn reconcile(state: &AppState) {
    state.presence.regrace();
    announce_local(state).await;
}

/// Re-announces this replica's presences every quarter of the presence timeout
/// and expires the silent ones, until stopped. A live replica's presence is then
/// refreshed about four times per timeout, so one lost heartbeat does not end it.
pub async fn keep_alive(state: AppState) {
    let expiry = Duration::from_secs(state.config.presence_timeout_secs);
    let mut ticks = tokio::time::interval(expiry / 4);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        announce_local(&state).await;
        // Each replica decides for its own watchers: the LEAVE stays local.
        for gone in state.presence.expire(expiry) {
            state.bus.publish_local(BusMessage::Presence(gone));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_LIMITS: PresenceLimits = PresenceLimits {
        per_channel: 0,
        per_user: 0,
        per_client: 0,
        joins_per_second: 0,
    };

    fn presence(id: &str, kind: PresenceKind, state: serde_json::Value) -> Presence {
        Presence {
            project_id: "p".into(),
            channel: "room".into(),
            id: id.into(),
            user_id: Some("u".into()),
            state,
            kind,
            at: 1,
        }
    }

    #[test]
    fn a_presence_travels_on_the_bus() {
        let message = BusMessage::Presence(presence(
            "a",
            PresenceKind::Update,
            serde_json::json!({"x": 1}),
        ));
        let text = serde_json::to_string(&message).unwrap();
        let BusMessage::Presence(back) = serde_json::from_str(&text).unwrap() else {
            panic!("not a presence: {text}");
        };
        assert_eq!(back.kind, PresenceKind::Update);
        assert_eq!(back.state, serde_json::json!({"x": 1}));
    }

    #[test]
    fn the_registry_follows_joins_updates_heartbeats_and_leaves() {
        let registry = PresenceRegistry::default();
        registry.apply(&presence(
            "a",
            PresenceKind::Join,
            serde_json::json!({"typing": false}),
        ));
        registry
            .open_local(
                &presence("b", PresenceKind::Join, serde_json::json!(null)),
                "192.0.2.1",
                NO_LIMITS,
            )
            .unwrap();
        registry.apply(&presence(
            "a",
            PresenceKind::Update,
            serde_json::json!({"typing": true}),
        ));
        registry.apply(&presence(
            "a",
            PresenceKind::Heartbeat,
            serde_json::json!(null),
        ));
        let members = registry.members("p", "room", None);
        assert_eq!(members.len(), 2);
        let a = members.iter().find(|m| m.id == "a").unwrap();
        assert_eq!(
            a.state,
            serde_json::json!({"typing": true}),
            "a heartbeat keeps the state"
        );
        assert_eq!(registry.local().len(), 1);
        registry.apply(&presence("a", PresenceKind::Leave, serde_json::json!(null)));
        assert_eq!(registry.members("p", "room", None).len(), 1);
        assert!(
            registry.expire(Duration::ZERO).is_empty(),
            "local presences never expire here"
        );
        assert!(registry.members("p", "other", None).is_empty());
    }

    #[test]
    fn another_replicas_silent_presence_expires_as_a_leave() {
        let registry = PresenceRegistry::default();
        registry.apply(&presence(
            "remote",
            PresenceKind::Join,
            serde_json::json!(null),
        ));
        assert!(registry.expire(Duration::from_secs(60)).is_empty());
        let gone = registry.expire(Duration::ZERO);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].id, "remote");
        assert_eq!(gone[0].kind, PresenceKind::Leave);
        assert!(registry.members("p", "room", None).is_empty());
    }

    #[test]
    fn a_presence_that_expired_and_is_heard_again_joins_again_at_once() {
        let registry = PresenceRegistry::default();
        let _ = registry.apply(&presence(
            "remote",
            PresenceKind::Join,
            serde_json::json!({"x": 1}),
        ));
        assert_eq!(registry.expire(Duration::ZERO).len(), 1);
        let told = registry
            .apply(&presence(
                "remote",
                PresenceKind::Heartbeat,
                serde_json::json!({"x": 1}),
            ))
            .expect("heard again after its expiry");
        assert_eq!(told.kind, PresenceKind::Join);
        assert_eq!(registry.members("p", "room", None).len(), 1);
        // A LEAVE, unlike an expiry, is final.
        let _ = registry.apply(&presence(
            "remote",
            PresenceKind::Leave,
            serde_json::json!(null),
        ));
        assert!(
            registry
                .apply(&presence(
                    "remote",
                    PresenceKind::Heartbeat,
                    serde_json::json!(null)
                ))
                .is_none()
        );
    }

    #[test]
    fn watchers_learn_of_a_presence_however_it_was_first_heard() {
        let registry = PresenceRegistry::default();
        let told = registry
            .apply(&presence(
                "a",
                PresenceKind::Heartbeat,
                serde_json::json!({"x": 1}),
            ))
            .expect("a presence first heard in a heartbeat");
        assert_eq!(told.kind, PresenceKind::Join);
        assert_eq!(told.state, serde_json::json!({"x": 1}));
        assert!(
            registry
                .apply(&presence(
                    "a",
                    PresenceKind::Heartbeat,
                    serde_json::json!(null)
                ))
                .is_none(),
            "a heartbeat of a known presence tells watchers nothing"
        );
        let told = registry
            .apply(&presence("b", PresenceKind::Update, serde_json::json!(2)))
            .unwrap();
        assert_eq!(told.kind, PresenceKind::Join, "first heard in an update");
        let told = registry
            .apply(&presence("b", PresenceKind::Update, serde_json::json!(3)))
            .unwrap();
        assert_eq!(told.kind, PresenceKind::Update);
        let told = registry
            .apply(&presence("a", PresenceKind::Leave, serde_json::json!(null)))
            .unwrap();
        assert_eq!(told.kind, PresenceKind::Leave);
        assert!(
            registry
                .apply(&presence(
                    "a",
                    PresenceKind::Heartbeat,
                    serde_json::json!(null)
                ))
                .is_none(),
            "a heartbeat heard after the LEAVE does not bring it back"
        );
        assert_eq!(registry.members("p", "room", None).len(), 1);
    }

    #[test]
    fn after_a_gap_others_presences_get_a_full_expiry_to_be_heard_again() {
        let registry = PresenceRegistry::default();
        let _ = registry.apply(&presence(
            "remote",
            PresenceKind::Join,
            serde_json::json!(null),
        ));
        registry
            .entries
            .lock()
            .unwrap()
            .channels
            .values_mut()
            .flat_map(|c| c.values_mut())
            .for_each(|e| e.seen -= Duration::from_secs(10));
        registry.regrace();
        assert!(registry.expire(Duration::from_secs(5)).is_empty());
        assert_eq!(registry.expire(Duration::ZERO).len(), 1);
    }

    #[test]
    fn caps_count_presences_as_they_come_and_go() {
        let registry = PresenceRegistry::default();
        let limits = PresenceLimits {
            per_user: 2,
            ..NO_LIMITS
        };
        let open = |id: &str| {
            registry.open_local(
                &presence(id, PresenceKind::Join, serde_json::json!(null)),
                "c",
                limits,
            )
        };
        open("a").unwrap();
        open("b").unwrap();
        assert!(open("c").is_err(), "a third presence of the same user");
        registry.apply(&presence("a", PresenceKind::Leave, serde_json::json!(null)));
        open("c").unwrap();
        assert_eq!(registry.members("p", "room", Some(1)).len(), 1);
    }

    #[test]
    fn a_client_opens_a_bounded_number_of_presences_a_second() {
        let registry = PresenceRegistry::default();
        let limits = PresenceLimits {
            joins_per_second: 3,
            ..NO_LIMITS
        };
        let open = |id: &str, client: &str| {
            registry.open_local(
                &presence(id, PresenceKind::Join, serde_json::json!(null)),
                client,
                limits,
            )
        };
        for id in ["a", "b", "c"] {
            open(id, "c1").unwrap();
            registry.apply(&presence(id, PresenceKind::Leave, serde_json::json!(null)));
        }
        let refused = open("d", "c1").unwrap_err();
        assert_eq!(refused.code(), "RATE_LIMITED");
        assert!(
            registry.members("p", "room", None).is_empty(),
            "nothing recorded"
        );
        open("d", "c2").unwrap();
        // The window passes.
        registry
            .entries
            .lock()
            .unwrap()
            .joins
            .counts
            .get_mut("c1")
            .unwrap()
            .0 -= JOIN_WINDOW;
        open("e", "c1").unwrap();
    }

    #[test]
    fn a_client_sends_a_bounded_number_of_updates_a_second_counted_all_or_none() {
        let registry = PresenceRegistry::default();
        registry.charge_updates("c1", 3, 5).unwrap();
        // Two more fit, three do not: none of them is counted.
        assert_eq!(
            registry.charge_updates("c1", 3, 5).unwrap_err().code(),
            "RATE_LIMITED"
        );
        registry.charge_updates("c1", 2, 5).unwrap();
        assert!(registry.charge_updates("c1", 1, 5).is_err());
        registry.charge_updates("c2", 5, 5).unwrap();
        registry.charge_updates("c1", 1_000, 0).unwrap();
        registry
            .entries
            .lock()
            .unwrap()
            .updates
            .counts
            .get_mut("c1")
            .unwrap()
            .0 -= JOIN_WINDOW;
        registry.charge_updates("c1", 5, 5).unwrap();
    }
}
