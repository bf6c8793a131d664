//! Presence: who is on a channel right now. A `presence(channel, state)`
//! subscription announces its caller (JOIN) for as long as it stays open and
//! watches the others; `presenceChanged(channel)` only watches;
//! `updatePresence` changes the caller's state (UPDATE). Every replica keeps the
//! whole list, learned from the bus. Each replica re-announces its own presences
//! every quarter of `NIMBUS_PRESENCE_TIMEOUT`; one not heard of for that long is
//! gone (LEAVE) — so a replica that dies takes its presences with it, on every
//! other replica.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::bus::BusMessage;

/// The largest state a presence may carry, as JSON.
pub const MAX_STATE_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PresenceKind {
    Join,
    Update,
    Leave,
    /// Still here: refreshes the entry, tells watchers nothing.
    Heartbeat,
}

impl PresenceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceKind::Join => "JOIN",
            PresenceKind::Update => "UPDATE",
            PresenceKind::Leave => "LEAVE",
            PresenceKind::Heartbeat => "HEARTBEAT",
        }
    }
}

/// A change to one presence, as it travels on the bus.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    pub project_id: String,
    pub channel: String,
    /// One open `presence` subscription.
    pub id: String,
    /// The signed-in user behind it; none for guests and keys.
    pub user_id: Option<String>,
    pub state: serde_json::Value,
    /// `change` on the wire: the bus message itself is tagged by `kind`.
    #[serde(rename = "change")]
    pub kind: PresenceKind,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
}

#[derive(Debug, Clone)]
struct Entry {
    presence: Presence,
    seen: Instant,
    /// Opened on this replica: this replica heartbeats it.
    local: bool,
}

/// Every replica's view of who is present where.
#[derive(Default)]
pub struct PresenceRegistry {
    entries: Mutex<HashMap<(String, String), HashMap<String, Entry>>>,
}

impl PresenceRegistry {
    /// Applies a presence message from the bus.
    pub fn apply(&self, presence: &Presence) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let key = (presence.project_id.clone(), presence.channel.clone());
        match presence.kind {
            PresenceKind::Leave => {
                if let Some(channel) = entries.get_mut(&key) {
                    channel.remove(&presence.id);
                    if channel.is_empty() {
                        entries.remove(&key);
                    }
                }
            }
            PresenceKind::Join | PresenceKind::Update | PresenceKind::Heartbeat => {
                let channel = entries.entry(key).or_default();
                let local = channel.get(&presence.id).is_some_and(|e| e.local);
                let mut stored = presence.clone();
                if presence.kind == PresenceKind::Heartbeat
                    && let Some(existing) = channel.get(&presence.id)
                {
                    stored.state = existing.presence.state.clone();
                    stored.kind = existing.presence.kind;
                }
                channel.insert(
                    presence.id.clone(),
                    Entry {
                        presence: stored,
                        seen: Instant::now(),
                        local,
                    },
                );
            }
        }
    }

    /// Records a presence opened on this replica.
    pub fn open_local(&self, presence: &Presence) {
        self.apply(presence);
        if let Ok(mut entries) = self.entries.lock()
            && let Some(entry) = entries
                .get_mut(&(presence.project_id.clone(), presence.channel.clone()))
                .and_then(|c| c.get_mut(&presence.id))
        {
            entry.local = true;
        }
    }

    /// Who is on a channel now.
    pub fn members(&self, project_id: &str, channel: &str) -> Vec<Presence> {
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        let mut members: Vec<Presence> = entries
            .get(&(project_id.to_string(), channel.to_string()))
            .map(|c| c.values().map(|e| e.presence.clone()).collect())
            .unwrap_or_default();
        members.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
        members
    }

    /// This replica's presences, to re-announce.
    fn local(&self) -> Vec<Presence> {
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        entries
            .values()
            .flat_map(|c| c.values())
            .filter(|e| e.local)
            .map(|e| e.presence.clone())
            .collect()
    }

    /// Removes other replicas' presences not heard of within `expiry`.
    fn expire(&self, expiry: Duration) -> Vec<Presence> {
        let Ok(mut entries) = self.entries.lock() else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        for channel in entries.values_mut() {
            channel.retain(|_, entry| {
                let alive = entry.local || entry.seen.elapsed() < expiry;
                if !alive {
                    let mut leave = entry.presence.clone();
                    leave.kind = PresenceKind::Leave;
                    gone.push(leave);
                }
                alive
            });
        }
        entries.retain(|_, channel| !channel.is_empty());
        gone
    }
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
        for mut presence in state.presence.local() {
            presence.kind = PresenceKind::Heartbeat;
            presence.at = chrono::Utc::now().timestamp_millis();
            let _ = state.bus.publish(BusMessage::Presence(presence)).await;
        }
        // Each replica decides for its own watchers: the LEAVE stays local.
        for gone in state.presence.expire(expiry) {
            state.bus.publish_local(BusMessage::Presence(gone));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        registry.open_local(&presence("b", PresenceKind::Join, serde_json::json!(null)));
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
        let members = registry.members("p", "room");
        assert_eq!(members.len(), 2);
        let a = members.iter().find(|m| m.id == "a").unwrap();
        assert_eq!(
            a.state,
            serde_json::json!({"typing": true}),
            "a heartbeat keeps the state"
        );
        assert_eq!(registry.local().len(), 1);
        registry.apply(&presence("a", PresenceKind::Leave, serde_json::json!(null)));
        assert_eq!(registry.members("p", "room").len(), 1);
        assert!(
            registry.expire(Duration::ZERO).is_empty(),
            "local presences never expire here"
        );
        assert!(registry.members("p", "other").is_empty());
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
        assert!(registry.members("p", "room").is_empty());
    }
}
