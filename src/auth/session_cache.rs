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

use tokio::sync::Notify;

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
    /// When the JWT it was presented as stops working (milliseconds since the
    /// epoch): what it lends (a signed file URL, a function's execution) ends no
    /// later. `None` for the session's own secret, and for a delegation a function
    /// holds from a session's own secret.
    pub jwt_expires_at: Option<i64>,
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

/// One wake-up bell per holder, shared by every connection of that holder: a
/// connection costs a reference to it, not a task, a timer or a channel. (A tokio
/// `watch` channel per holder took 350 bytes, most of it eight `Notify`s spread
/// for contention that a holder's few connections never cause.)
#[derive(Default)]
struct Holders {
    bells: HashMap<Holder, Arc<Bell>>,
    sweep_at: usize,
}

/// The counters of a holder's changes, and the connections waiting for one.
#[derive(Default)]
struct Bell {
    credential: AtomicU64,
    project: AtomicU64,
    notify: Notify,
}

impl Bell {
    fn ring(&self, change: impl Fn(&Bell)) {
        change(self);
        self.notify.notify_waiters();
    }
}

/// A connection's end of its holder's bell: what changed so far, and a wait for
/// the next change.
pub struct Wakes(Arc<Bell>);

impl Wakes {
    /// The changes so far.
    pub fn now(&self) -> Wake {
        Wake {
            credential: self.0.credential.load(Ordering::SeqCst),
            project: self.0.project.load(Ordering::SeqCst),
        }
    }

    /// Resolves once the changes differ from `seen` (at once if they already do).
    /// Cancel safe.
    pub async fn changed_from(&self, seen: Wake) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a ring between the look and the
            // wait is not slept through.
            notified.as_mut().enable();
            if self.now() != seen {
                return;
            }
            notified.await;
        }
    }

    /// [`Wakes::changed_from`] as a future that holds its own reference to the
    /// bell, so a connection can keep one wait armed across its loop's turns
    /// rather than register and unregister a waiter for every message it handles.
    pub fn changed_from_owned(&self, seen: Wake) -> impl Future<Output = ()> + Send + 'static {
        let wakes = Wakes(self.0.clone());
        async move { wakes.changed_from(seen).await }
    }
}

/// The SHA-256 of a session secret.
pub type SecretDigest = [u8; 32];

#[derive(Default)]
pub struct SessionCache {
    /// Keyed by the raw SHA-256 of the secret: a 64-character hex string would cost
    /// about 90 bytes more per signed-in user, which counts with one user per socket.
    entries: RwLock<HashMap<SecretDigest, (Instant, Arc<ResolvedSession>)>>,
    /// Counts evictions, so a session loaded before one is not cached after it.
    generation: AtomicU64,
    /// Counts every change to any credential heard (a user's, a key's, all of
    /// them): a credential checked before one may be stale, and a watch begun after
    /// the check would not hear it ([`SessionCache::credential_changes`]).
    credential_changes: AtomicU64,
    holders: Mutex<Holders>,
}

impl SessionCache {
    /// The cached session for this secret digest, if fresh.
    pub fn get(&self, digest: &SecretDigest) -> Option<Arc<ResolvedSession>> {
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
    pub fn insert(&self, digest: SecretDigest, resolved: Arc<ResolvedSession>, generation: u64) {
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

    /// Where changes to credentials stand: take it before checking a credential,
    /// and compare once a watch of its holder is begun; if it moved, check again
    /// (the change may have rung before the watch began).
    pub fn credential_changes(&self) -> u64 {
        self.credential_changes.load(Ordering::SeqCst)
    }

    /// Forgets every session of one user, and wakes the connections holding one.
    pub fn evict_user(&self, project_id: &str, user_id: &str) {
        self.credential_changes.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut entries) = self.entries.write() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            entries.retain(|_, (_, r)| !(r.user.project_id == project_id && r.user.id == user_id));
        }
        let holder = Holder::User {
            project_id: project_id.to_string(),
            user_id: user_id.to_string(),
        };
        if let Some(bell) = self.holders().bells.get(&holder) {
            bell.ring(|bell| {
                bell.credential.fetch_add(1, Ordering::SeqCst);
            });
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
            |bell| {
                bell.project.fetch_add(1, Ordering::SeqCst);
            },
        );
    }

    /// Wakes the connections holding API key `key_id` (deleted or changed).
    pub fn key_changed(&self, key_id: &str) {
        self.credential_changes.fetch_add(1, Ordering::SeqCst);
        self.wake(
            |holder| matches!(holder, Holder::Key { key_id: id, .. } if id == key_id),
            |bell| {
                bell.credential.fetch_add(1, Ordering::SeqCst);
            },
        );
    }

    /// Forgets everything and wakes every connection to re-check its credential
    /// (after missed invalidations).
    pub fn clear(&self) {
        self.credential_changes.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut entries) = self.entries.write() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            entries.clear();
        }
        self.wake(
            |_| true,
            |bell| {
                bell.credential.fetch_add(1, Ordering::SeqCst);
            },
        );
    }

    /// What tells whenever `holder`'s credential or project may have changed.
    pub fn watch(&self, holder: Holder) -> Wakes {
        let mut holders = self.holders();
        if holders.bells.len() >= holders.sweep_at {
            holders.bells.retain(|_, bell| Arc::strong_count(bell) > 1);
            holders.sweep_at = (holders.bells.len() * 2).max(SWEEP_FLOOR);
        }
        Wakes(holders.bells.entry(holder).or_default().clone())
    }

    fn wake(&self, which: impl Fn(&Holder) -> bool, change: impl Fn(&Bell)) {
        for (_, bell) in self.holders().bells.iter().filter(|(h, _)| which(h)) {
            bell.ring(&change);
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
        let ann = cache.watch(user("ann"));
        let bob = cache.watch(user("bob"));
        let key = cache.watch(Holder::Key {
            project_id: "p".into(),
            key_id: "k".into(),
        });
        cache.evict_user("p", "ann");
        assert_eq!(ann.now().credential, 1);
        assert_eq!(bob.now(), Wake::default());
        cache.key_changed("k");
        assert_eq!(key.now().credential, 1);
        assert_eq!(ann.now().credential, 1);
        cache.evict_project("p");
        let wake = ann.now();
        assert_eq!((wake.credential, wake.project), (1, 1));
        assert_eq!(bob.now().project, 1);
        cache.clear();
        assert_eq!(
            bob.now(),
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
        assert!(cache.holders().bells.len() <= SWEEP_FLOOR);
        cache.evict_user("p", "kept");
        assert_eq!(kept.now().credential, 1);
    }

    #[tokio::test]
    async fn a_waiting_connection_wakes_on_its_holders_change_only() {
        let cache = Arc::new(SessionCache::default());
        let ann = cache.watch(user("ann"));
        let seen = ann.now();
        let waiting = tokio::spawn(async move { ann.changed_from(seen).await });
        tokio::task::yield_now().await;
        cache.evict_user("p", "bob");
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        cache.evict_user("p", "ann");
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .unwrap();
        // A change made before the wait starts is not slept through.
        let ann = cache.watch(user("ann"));
        let seen = ann.now();
        cache.evict_project("p");
        tokio::time::timeout(Duration::from_secs(5), ann.changed_from(seen))
            .await
            .expect("already changed");
    }

    #[test]
    fn a_wait_kept_armed_hears_a_change_made_while_nobody_polls_it() {
        use futures_util::FutureExt as _;
        let cache = SessionCache::default();
        let ann = cache.watch(user("ann"));
        let mut wait = Box::pin(ann.changed_from_owned(ann.now()));
        // Polled once, then left alone, as a connection leaves it while it
        // delivers what the bus brought.
        assert!(wait.as_mut().now_or_never().is_none());
        cache.evict_user("p", "bob");
        assert!(wait.as_mut().now_or_never().is_none());
        cache.evict_user("p", "ann");
        assert!(wait.as_mut().now_or_never().is_some());
    }
}
