//! The caller of a request: the project it addresses and the credential it presents.
//! Checks return grants (`Grant<UsersWrite>`, `AdminGrant`) that only this module can
//! make, typed by the scope they checked, so a privileged service function cannot be
//! reached without its check, nor with the check of another scope.

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::auth::permissions::{RoleSet, TeamMembership};
use crate::auth::principal::Project;
use crate::auth::scopes::{ADMIN, Admin, Scope};
use crate::auth::session_cache::{Holder, ResolvedSession};
use crate::bus::Event;
use crate::error::{AppError, AppResult};

/// An API key that has been verified for the addressed project.
#[derive(Debug, Clone)]
pub struct ApiKeyGrant {
    pub key_id: String,
    pub project_id: String,
    pub scopes: BTreeSet<String>,
    /// When the key stops working (milliseconds since the epoch); `None`: never.
    pub expires_at: Option<i64>,
}

impl ApiKeyGrant {
    pub fn is_admin(&self) -> bool {
        self.scopes.contains(ADMIN)
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.is_admin() || self.scopes.contains(scope)
    }
}

/// What the caller proved about itself.
#[derive(Debug, Clone)]
pub enum Credential {
    /// No credential: a guest.
    Anonymous,
    /// A valid API key.
    Key(ApiKeyGrant),
    /// A signed-in user's session.
    Session(Arc<ResolvedSession>),
}

/// The caller of one request or one WebSocket connection.
#[derive(Debug, Clone)]
pub struct Caller {
    pub project: Arc<Project>,
    pub credential: Credential,
}

/// Proof that the caller's key holds the scope `S` in the addressed project; only
/// [`Caller::require`] makes one. A function that needs `users.write` takes a
/// `Grant<UsersWrite>`, and a grant of another scope does not fit:
///
/// ```compile_fail
/// use nimbus::auth::Grant;
/// use nimbus::auth::scopes::{UsersRead, UsersWrite};
///
/// fn delete_everyone(_: Grant<UsersWrite>) {}
/// fn with_a_read_grant(read: Grant<UsersRead>) {
///     delete_everyone(read);
/// }
/// ```
///
/// ```
/// use nimbus::auth::Grant;
/// use nimbus::auth::scopes::UsersWrite;
///
/// fn delete_everyone(_: Grant<UsersWrite>) {}
/// fn with_a_write_grant(write: Grant<UsersWrite>) {
///     delete_everyone(write);
/// }
/// ```
pub struct Grant<S: Scope> {
    scope: PhantomData<S>,
}

impl<S: Scope> Grant<S> {
    /// The scope that was checked.
    pub fn scope(&self) -> &'static str {
        S::NAME
    }
}

impl<S: Scope> Clone for Grant<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S: Scope> Copy for Grant<S> {}

impl<S: Scope> std::fmt::Debug for Grant<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Grant({})", S::NAME)
    }
}

/// Proof that the caller holds the server-wide `admin` scope.
pub type AdminGrant = Grant<Admin>;

impl Caller {
    pub fn key(&self) -> Option<&ApiKeyGrant> {
        match &self.credential {
            Credential::Key(key) => Some(key),
            _ => None,
        }
    }

    /// The signed-in user's session, or `UNAUTHENTICATED` (`MFA_REQUIRED` while the
    /// session owes its second factor).
    pub fn require_session(&self) -> AppResult<&ResolvedSession> {
        let session = self.require_session_owing_mfa()?;
        if session.mfa_pending() {
            return Err(AppError::MfaRequired);
        }
        Ok(session)
    }

    /// The session even while it owes its second factor: for the MFA challenge.
    pub fn require_session_owing_mfa(&self) -> AppResult<&ResolvedSession> {
        match &self.credential {
            Credential::Session(session) => Ok(session),
            _ => Err(AppError::Unauthenticated),
        }
    }

    /// Whose credential this is, for a connection that must hear of changes to it.
    pub fn holder(&self) -> Holder {
        let project_id = self.project.id.clone();
        match &self.credential {
            Credential::Anonymous => Holder::Guest { project_id },
            Credential::Key(key) => Holder::Key {
                project_id,
                key_id: key.key_id.clone(),
            },
            Credential::Session(session) => Holder::User {
                project_id,
                user_id: session.user.id.clone(),
            },
        }
    }

    /// The caller's key must hold the scope `S`.
    pub fn require<S: Scope>(&self) -> AppResult<Grant<S>> {
        match self.key() {
            None if matches!(self.credential, Credential::Session(_)) => {
                Err(AppError::PermissionDenied {
                    reason: format!("this needs an API key with the `{}` scope", S::NAME),
                })
            }
            None => Err(AppError::Unauthenticated),
            Some(key) if key.has_scope(S::NAME) => Ok(Grant { scope: PhantomData }),
            Some(_) => Err(AppError::ScopeMissing {
                scope: S::NAME.to_string(),
            }),
        }
    }

    /// The caller's key must be an `admin` key.
    pub fn require_admin(&self) -> AppResult<AdminGrant> {
        self.require::<Admin>()
    }

    /// The roles of the caller, in the permission model's terms. A key holds only
    /// `any`: keys bypass permissions through their scopes instead.
    pub fn roles(&self) -> RoleSet {
        match &self.credential {
            Credential::Anonymous => RoleSet::guest(),
            Credential::Key(_) => RoleSet::from_iter([]),
            // Until the second factor, a session holds no user roles.
            Credential::Session(session) if session.mfa_pending() => RoleSet::guest(),
            Credential::Session(session) => {
                let user = &session.user;
                let memberships: Vec<TeamMembership<'_>> = session
                    .memberships
                    .iter()
                    .map(|m| TeamMembership {
                        team_id: &m.team_id,
                        membership_id: &m.id,
                        roles: &m.roles,
                    })
                    .collect();
                RoleSet::for_user(&user.id, user.verified(), &memberships, &user.labels)
            }
        }
    }

    /// Whether this caller may receive `event`: keys need the event's scope; anyone
    /// else needs one of the roles allowed to read the resource. `roles` are
    /// [`Caller::roles`] as strings, worked out once per subscriber rather than for
    /// every event.
    pub fn may_receive(&self, event: &Event, roles: &[String]) -> bool {
        if event.project_id != self.project.id {
            return false;
        }
        match &self.credential {
            Credential::Key(key) => key.has_scope(&event.key_scope),
            Credential::Anonymous | Credential::Session(_) => {
                event.read_roles.iter().any(|r| roles.contains(r))
            }
        }
    }
}
