//! The presence messages replicas exchange on the bus. The registry that keeps
//! them and the subscriptions that announce them belong to the realtime service;
//! the bus only carries them.

use serde::{Deserialize, Serialize};

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

/// Where a replica keeps who is present. Every presence message this replica
/// hears passes through it before its subscribers see it, so the book and the
/// watchers agree on what happened: a presence first heard of through a
/// heartbeat or an update is a JOIN to them, a heartbeat of one already known
/// is nothing to them.
pub trait PresenceBook: Send + Sync {
    /// Records `presence` and returns what watchers are told of it, if anything.
    fn heard(&self, presence: Presence) -> Option<Presence>;
}
