//! Resolved sessions by secret digest, so an authenticated request costs no database
//! round trip, and the credentials long-lived connections hold, so a change to one
//! reaches them at once. Entries live at most `TTL`, and every change to a user
//! (blocked, deleted, signed out, password changed, new team roles or labels) evicts
//! that user's entries and wakes the connections holding that user's sessions, on
//! every replica through the bus (the event log's relay, so a Redis outage loses
//! none); when this replica's broadcast dropped messages (a lagging reader),
//! everything is forgotten and every connection re-checks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::auth::principal::{Membership, Session, User};

const TTL: Duration = Duration::from_secs(60);
/// Past this many entries the cache is cleared: a bound on memory, not a policy.
const MAX_ENTRIES: usize = 100_000;
/// Holders no connection listens to any more are swept once the table has grown
/// to this many (and then to twice what the last sweep kept).
const SWEEP_FLOOR: usize = 1024;

/// A session with its user and the user's confirmed memberships (their team roles),
/// as of when it was loaded.
#[derive(Debug)]
pub struct ResolvedSession {
    pub session: Session,
    pub user: User,
    pub memberships: Vec<Membership>,
    /// Presented as a JWT from `createJWT` rather than as the session's own secret:
    /// a 15-minute delegation that may act on the user's data but not on their
    /// credentials, sessions or JWTs.
    pub by_jwt: bool,
}

impl ResolvedSession {
    /// Signed in, but still owing the second factor: only MFA operations work.
    pub fn mfa_pending(&self) -> bool {
        self.user.mfa && !self.session.mfa_verified
    }
}

/// Whose credential a long-lived connection holds: what it must hear about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Holder {
    /// A session (or a JWT of one) of this user.
    User { project_id: String, user_id: String },
    /// An API key, addressing this project.
    Key { project_id: String, key_id: String },
    /// No credential, addressing this project.
    Guest { project_id: String },
}

impl Holder {
    fn project_id(&self) -> &str {
        match self {
            Holder::User { project_id, .. }
            | Holder::Key { project_id, .. }
            | Holder::Guest { project_id } => project_id,
        }
    }
}

/// What a connection is woken for: counters of changes to its credential (re-check
/// it against the database) and to its project alone (reload the project, e.g. its
/// schema and collection permissions after DDL, at the price of a cache lookup).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Wake {
    pub credential: u64,
    pub project: u64,
}

/// One wake-up channel per holder, shared by every connection of that holder: a
/// connection costs one receiver, not a task or a timer.
#[derive(Default)]
struct Holders {
    senders: HashMap<Holder, watch::Sender<Wake>>,
    sweep_at: usize,
}

#[derive(Default)]
pub struct SessionCache {
    entries: RwLock<HashMap<String, (Instant, Arc<ResolvedSession>)>>,
    /// Counts evictions, so a session loaded before one is not cached after it.
    generation: AtomicU64,
    holders: Mutex<Holders>,
}

impl SessionCache {
    /// The cached session for this secret digest, if fresh.
    pub fn get(&self, digest: &str) -> Option<Arc<ResolvedSession>> {
        let entries = self.entries.read().ok()?;
        let (loaded_at, resolved) = entries.get(digest)?;
        (loaded_at.elapsed() < TTL).then(|| resolved.clone())
    }

    /// Where evictions stand: take it before loading a session from the database,
    /// and hand it to [`SessionCache::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Caches a session loaded when evictions stood at `generation`; one loaded
    /// before a later eviction may be stale and is not kept.
    pub fn insert(&self, digest: String, resolved: Arc<ResolvedSession>, generation: u64) {
        if let Ok(mut entries) = self.entries.write() {
            if self.generation() != generation {
                return;
            }
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(digest, (Instant::now(), resolved));
        }
    }

    /// Forgets every session of one user, and wakes the connections holding one.
    pub fn evict_user(&self, project_id: &str, user_id: &str) {
        if let Ok(mut entries) = self.entries.write() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            entries.retain(|_, (_, r)| !(r.user.project_id == project_id && r.user.id == user_id));
        }
        let holder = Holder::User {
            project_id: project_id.to_string(),
            user_id: user_id.to_string(),
        };
        if let Some(sender) = self.holders().senders.get(&holder) {
            sender.send_modify(|wake| wake.credential += 1);
        }
    }

    /// Forgets every session of a project (deleted or changed), and wakes every
    /// connection addressing it to reload the project.
    pub fn evict_project(&self, project_id: &str) {
        if let Ok(mut entries) = self.entries.write() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            entries.retain(|_, (_, r)| r.user.project_id != project_id);
        }
        self.wake(
            |holder| holder.project_id() == project_id,
            |wake| wake.project += 1,
        );
    }

    /// Wakes the connections holding API key `key_id` (deleted or changed).
    pub fn key_changed(&self, key_id: &str) {
        self.wake(
            |holder| matches!(holder, Holder::Key { key_id: id, .. } if id == key_id),
            |wake| wake.credential += 1,
        );
    }

    /// Forgets everything and wakes every connection to re-check its credential
    /// (after missed invalidations).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            entries.clear();
        }
        self.wake(|_| true, |wake| wake.credential += 1);
    }

    /// A receiver that changes whenever `holder`'s credential or project may have
    /// changed.
    pub fn watch(&self, holder: Holder) -> watch::Receiver<Wake> {
        let mut holders = self.holders();
        if holders.senders.len() >= holders.sweep_at {
            holders.senders.retain(|_, s| s.receiver_count() > 0);
            holders.sweep_at = (holders.senders.len() * 2).max(SWEEP_FLOOR);
        }
        holders
            .senders
            .entry(holder)
            .or_insert_with(|| watch::channel(Wake::default()).0)
            .subscribe()
    }

    fn wake(&self, which: impl Fn(&Holder) -> bool, change: impl Fn(&mut Wake)) {
        for (_, sender) in self.holders().senders.iter().filter(|(h, _)| which(h)) {
            sender.send_modify(&change);
        }
    }

    fn holders(&self) -> std::sync::MutexGuard<'_, Holders> {
        self.holders.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> Holder {
        Holder::User {
            project_id: "p".into(),
            user_id: id.into(),
        }
    }

    #[test]
    fn wakes_only_the_connections_a_change_concerns() {
        let cache = SessionCache::default();
        let mut ann = cache.watch(user("ann"));
        let mut bob = cache.watch(user("bob"));
        let key = cache.watch(Holder::Key {
            project_id: "p".into(),
            key_id: "k".into(),
        });
        cache.evict_user("p", "ann");
        assert_eq!(ann.borrow_and_update().credential, 1);
        assert!(!bob.has_changed().unwrap());
        cache.key_changed("k");
        assert!(key.has_changed().unwrap());
        assert!(!ann.has_changed().unwrap());
        cache.evict_project("p");
        let wake = *ann.borrow_and_update();
        assert_eq!((wake.credential, wake.project), (1, 1));
        assert!(bob.has_changed().unwrap());
        cache.clear();
        assert_eq!(
            *bob.borrow_and_update(),
            Wake {
                credential: 1,
                project: 1
            }
        );
    }

    #[test]
    fn holders_nobody_listens_to_are_swept() {
        let cache = SessionCache::default();
        let kept = cache.watch(user("kept"));
        for n in 0..SWEEP_FLOOR * 3 {
            drop(cache.watch(user(&n.to_string())));
        }
        assert!(cache.holders().senders.len() <= SWEEP_FLOOR);
        cache.evict_user("p", "kept");
        assert!(kept.has_changed().unwrap());
    }
}
