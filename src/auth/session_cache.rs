//! Resolved sessions by secret digest, so an authenticated request costs no database
//! round trip. Entries live at most `TTL`, and every change to a user (blocked,
//! deleted, signed out, password changed) evicts that user's entries on every
//! replica through the bus, so such changes take effect at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::services::teams::Membership;
use crate::services::users::{Session, User};

const TTL: Duration = Duration::from_secs(60);
/// Past this many entries the cache is cleared: a bound on memory, not a policy.
const MAX_ENTRIES: usize = 100_000;

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

#[derive(Default)]
pub struct SessionCache {
    entries: RwLock<HashMap<String, (Instant, Arc<ResolvedSession>)>>,
}

impl SessionCache {
    /// The cached session for this secret digest, if fresh.
    pub fn get(&self, digest: &str) -> Option<Arc<ResolvedSession>> {
        let entries = self.entries.read().ok()?;
        let (loaded_at, resolved) = entries.get(digest)?;
        (loaded_at.elapsed() < TTL).then(|| resolved.clone())
    }

    pub fn insert(&self, digest: String, resolved: Arc<ResolvedSession>) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(digest, (Instant::now(), resolved));
        }
    }

    /// Forgets every session of one user.
    pub fn evict_user(&self, project_id: &str, user_id: &str) {
        if let Ok(mut entries) = self.entries.write() {
            entries.retain(|_, (_, r)| !(r.user.project_id == project_id && r.user.id == user_id));
        }
    }

    /// Forgets every session of a project (deleted or changed).
    pub fn evict_project(&self, project_id: &str) {
        if let Ok(mut entries) = self.entries.write() {
            entries.retain(|_, (_, r)| r.user.project_id != project_id);
        }
    }

    /// Forgets everything (after missed invalidations).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }
}
