//! The caller of a request: the project it addresses and the credential it presents.
//! Checks return grants (`Grant<UsersWrite>`, `AdminGrant`, an [`Actor`]) that only
//! this module can make, typed by the scope they checked and naming the project they
//! were checked in, so a privileged service function cannot be reached without its
//! check, nor with the check of another scope, nor on another project.

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::auth::permissions::{RoleNames, RoleSet, TeamMembership};
use crate::auth::principal::Project;
use crate::auth::scopes::{Admin, Scope, ScopeMarker};
use crate::auth::session_cache::{Holder, ResolvedSession};
use crate::bus::Event;
use crate::error::{AppError, AppResult};

/// An API key that has been verified for the addressed project.
#[derive(Debug, Clone)]
pub struct ApiKeyGrant {
    pub key_id: String,
    pub project_id: String,
    pub scopes: BTreeSet<Scope>,
    /// When the key stops working (milliseconds since the epoch); `None`: never.
    pub expires_at: Option<i64>,
    /// For a function's own access: the key whose scopes the function was given
    /// (its `reach`), so that what the function configures in turn ends when that
    /// key is revoked. `None` for keys and the console.
    pub handed_on_by: Option<String>,
}

/// The key id a console administrator's session acts under: `admin:EMAIL`. Real key
/// ids never hold a `:`, so it names no key.
pub fn console_key_id(email: &str) -> String {
    format!("admin:{email}")
}

impl ApiKeyGrant {
    /// A console administrator's session, in `project_id`: the server-wide `admin`
    /// scope, as an admin API key would hold it.
    pub fn console(project_id: &str, email: &str, expires_at: Option<i64>) -> Self {
        ApiKeyGrant {
            key_id: console_key_id(email),
            project_id: project_id.to_string(),
            scopes: BTreeSet::from([Scope::Admin]),
            expires_at,
            handed_on_by: None,
        }
    }

    /// Who acts, as activity logs name it: `key:ID`, or `admin:EMAIL` for a console
    /// administrator (and `function:ID` for a function's own access).
    pub fn actor(&self) -> String {
        if self.key_id.contains(':') {
            self.key_id.clone()
        } else {
            format!("key:{}", self.key_id)
        }
    }

    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }

    /// Whether the key may read what a write with `scope` leaves: it holds the
    /// read scope of the same service (`documents.read` beside
    /// `documents.write`), or `scope` reads already.
    pub fn reads_what_it_writes(&self, scope: Scope) -> bool {
        match scope.name().strip_suffix(".write") {
            Some(service) => self.holds_named(&format!("{service}.read")),
            None => self.holds(scope),
        }
    }

    /// Whether this is a console administrator's session: the operator, whose
    /// session ends when they sign out but whose configuration does not.
    pub fn is_console(&self) -> bool {
        self.key_id.starts_with("admin:")
    }

    /// Whether the key holds `scope`: `admin` holds every one.
    pub fn holds(&self, scope: Scope) -> bool {
        self.is_admin() || self.scopes.contains(&scope)
    }

    /// Whether the key holds the scope named `name`, as events carry it: `admin`
    /// holds every one; no other key holds a name no scope has.
    pub fn holds_named(&self, name: &str) -> bool {
        self.is_admin() || Scope::from_name(name).is_some_and(|scope| self.holds(scope))
    }
}

/// What the caller proved about itself.
#[derive(Debug, Clone)]
pub enum Credential {
    /// No credential: a guest.
    Anonymous,
    /// A valid API key (boxed: a caller is copied into every long-lived
    /// subscription, and most callers hold a session).
    Key(Box<ApiKeyGrant>),
    /// A signed-in user's session.
    Session(Arc<ResolvedSession>),
}

impl Credential {
    /// The roles permissions are checked against: a guest's, a signed-in user's
    /// (none of a user's until a session owing its second factor passes it), none
    /// for a key (which bypasses permissions instead).
    pub fn roles(&self) -> RoleSet {
        match self {
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
}

/// The caller of one request or one WebSocket connection.
#[derive(Debug, Clone)]
pub struct Caller {
    pub project: Arc<Project>,
    pub credential: Credential,
    /// Where changes to credentials stood just before this one was checked
    /// (`SessionCache::credential_changes`): what watches the credential from
    /// later on checks it again if they have moved since.
    pub checked_at: u64,
}

/// Proof that the caller's key holds the scope `S` in one project, which the grant
/// names; only [`Caller::require`] and its siblings make one. A function
/// that needs `users.write` takes a `Grant<UsersWrite>`, and a grant of another
/// scope does not fit:
///
/// ```compile_fail,E0308
/// use nimbus::auth::Grant;
/// use nimbus::auth::scopes::{UsersRead, UsersWrite};
///
/// fn delete_everyone(_: &Grant<UsersWrite>) {}
/// fn with_a_read_grant(read: &Grant<UsersRead>) {
///     delete_everyone(read);
/// }
/// ```
///
/// ```
/// use nimbus::auth::Grant;
/// use nimbus::auth::scopes::UsersWrite;
///
/// fn delete_everyone(_: &Grant<UsersWrite>) {}
/// fn with_a_write_grant(write: &Grant<UsersWrite>) {
///     delete_everyone(write);
/// }
/// ```
///
/// The project travels with the grant: a service function reads it from there,
/// and takes no project id of its own that could name another one. Nothing
/// outside this module can make a grant, or point one at another project:
///
/// ```
/// use nimbus::auth::Grant;
/// use nimbus::auth::scopes::UsersWrite;
///
/// fn the_project_deleted_in(grant: &Grant<UsersWrite>) -> &str {
///     grant.project()
/// }
/// ```
///
/// ```compile_fail,E0451
/// use std::marker::PhantomData;
/// use nimbus::auth::Grant;
/// use nimbus::auth::scopes::UsersWrite;
///
/// fn into_another_project(_: &Grant<UsersWrite>) -> Grant<UsersWrite> {
///     Grant { project: "another".to_string(), scope: PhantomData }
/// }
/// ```
pub struct Grant<S: ScopeMarker> {
    project: String,
    scope: PhantomData<S>,
}

impl<S: ScopeMarker> Grant<S> {
    fn new(project: &str) -> Self {
        Grant {
            project: project.to_string(),
            scope: PhantomData,
        }
    }

    /// The scope that was checked.
    pub fn scope(&self) -> Scope {
        S::SCOPE
    }

    /// The project the scope was checked in: the one the function acts on.
    pub fn project(&self) -> &str {
        &self.project
    }
}

impl<S: ScopeMarker> Clone for Grant<S> {
    fn clone(&self) -> Self {
        Grant::new(&self.project)
    }
}

impl<S: ScopeMarker> std::fmt::Debug for Grant<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Grant({} in {})", S::NAME, self.project)
    }
}

/// Proof that the caller holds the server-wide `admin` scope.
pub type AdminGrant = Grant<Admin>;

/// Who acts on what servers and signed-in users both manage (teams): a server
/// whose key holds the scope `S`, or a user's session, whose rights the service
/// works out. Only [`Caller::actor`] makes one.
#[derive(Debug)]
pub enum Actor<'a, S: ScopeMarker> {
    Server(Grant<S>),
    User(&'a ResolvedSession),
}

impl<S: ScopeMarker> Actor<'_, S> {
    /// The project the actor acts in.
    pub fn project(&self) -> &str {
        match self {
            Actor::Server(grant) => grant.project(),
            Actor::User(me) => &me.user.project_id,
        }
    }
}

impl Caller {
    pub fn key(&self) -> Option<&ApiKeyGrant> {
        match &self.credential {
            Credential::Key(key) => Some(key.as_ref()),
            _ => None,
        }
    }

    /// Whether a write this caller makes with `scope` may answer with what it
    /// left: a client's answers are checked against its roles item by item; a
    /// key, which bypasses permissions, must hold the service's read scope too.
    pub fn may_see_what_it_writes(&self, scope: Scope) -> bool {
        self.key().is_none_or(|key| key.reads_what_it_writes(scope))
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

    /// The signed-in user's session, if the caller is one: None for a guest or a
    /// key, `MFA_REQUIRED` while the session owes its second factor. Whatever acts
    /// as, names or shows the user reads them through here (or
    /// [`Caller::require_session`]), never from the credential itself: a password
    /// alone does not make its holder the user.
    pub fn signed_in(&self) -> AppResult<Option<&Arc<ResolvedSession>>> {
        match &self.credential {
            Credential::Session(session) if session.mfa_pending() => Err(AppError::MfaRequired),
            Credential::Session(session) => Ok(Some(session)),
            Credential::Anonymous | Credential::Key(_) => Ok(None),
        }
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

    /// The caller's key must hold the scope `S` in the addressed project.
    pub fn require<S: ScopeMarker>(&self) -> AppResult<Grant<S>> {
        match self.key() {
            None if matches!(self.credential, Credential::Session(_)) => {
                Err(AppError::PermissionDenied {
                    reason: format!("this needs an API key with the `{}` scope", S::NAME),
                })
            }
            None => Err(AppError::Unauthenticated),
            Some(key) if key.holds(S::SCOPE) => Ok(Grant::new(&self.project.id)),
            Some(_) => Err(AppError::ScopeMissing {
                scope: S::NAME.to_string(),
            }),
        }
    }

    /// The caller's key must hold the scope `S` in `project` (the addressed one when
    /// none): another project needs `admin` as well, which holds every scope in
    /// every project. Whether that project exists is the service's to check.
    pub fn require_in<S: ScopeMarker>(&self, project: Option<&str>) -> AppResult<Grant<S>> {
        let grant = self.require::<S>()?;
        self.extend_to(grant, project)
    }

    /// `grant`, checked in the addressed project, for `project` instead (the
    /// addressed one when none): as [`Caller::require_in`], for a resolver that
    /// checks the scope before it reads which project its input names.
    pub fn extend_to<S: ScopeMarker>(
        &self,
        grant: Grant<S>,
        project: Option<&str>,
    ) -> AppResult<Grant<S>> {
        match project {
            Some(other) if other != grant.project => {
                self.require_admin()?;
                Ok(Grant::new(other))
            }
            _ => Ok(grant),
        }
    }

    /// The caller's key must be an `admin` key.
    pub fn require_admin(&self) -> AppResult<AdminGrant> {
        self.require::<Admin>()
    }

    /// A server whose key holds `S`, or a signed-in user (`UNAUTHENTICATED` for a
    /// guest, `MFA_REQUIRED` while the session owes its second factor).
    pub fn actor<S: ScopeMarker>(&self) -> AppResult<Actor<'_, S>> {
        if self.key().is_some() {
            return self.require::<S>().map(Actor::Server);
        }
        self.require_session().map(Actor::User)
    }

    /// The roles of the caller, in the permission model's terms. A key holds only
    /// `any`: keys bypass permissions through their scopes instead.
    pub fn roles(&self) -> RoleSet {
        self.credential.roles()
    }

    /// Whether this caller may receive `event`: keys need the event's scope; anyone
    /// else needs one of the roles allowed to read the resource. `roles` are
    /// [`Caller::roles`] as strings, worked out once per subscriber rather than for
    /// every event.
    pub fn may_receive(&self, event: &Event, roles: &RoleNames) -> bool {
        if event.project_id != self.project.id {
            return false;
        }
        match &self.credential {
            Credential::Key(key) => key.holds_named(&event.key_scope),
            Credential::Anonymous | Credential::Session(_) => {
                event.read_roles.iter().any(|r| roles.contains(r))
            }
        }
    }
}
