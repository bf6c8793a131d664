//! How a caller reaches resources that carry permissions (documents, files): as a
//! server, an API key holding the service's scope, which bypasses permissions; or as
//! a client, with the roles its permissions are checked against. [`ScopedAccess`]
//! is that access as a grant: checked for one scope in one project, by the resolver,
//! and taken by the service functions that serve servers and clients alike.

use std::marker::PhantomData;
use std::ops::Deref;

use crate::auth::permissions::{
    Action, MAX_PERMISSIONS, Permission, PermissionError, Role, RoleSet, allows, check_grantable,
    parse_permissions_allowing,
};
use crate::auth::scopes::ScopeMarker;
use crate::auth::{Caller, Grant};
use crate::error::{AppError, AppResult};

/// Who reads or writes: a server bypassing permissions, or a client with roles.
#[derive(Debug, Clone)]
pub enum Access {
    Server,
    Client {
        roles: RoleSet,
        /// The signed-in user, who gets the default permissions of what they create.
        user_id: Option<String>,
    },
}

impl Access {
    /// A caller that is not signed in.
    pub fn guest() -> Access {
        Access::Client {
            roles: RoleSet::guest(),
            user_id: None,
        }
    }

    /// The access of a caller; a key must hold the scope `S` (e.g. `DocumentsWrite`).
    pub fn of<S: ScopeMarker>(caller: &Caller, _key_scope: S) -> AppResult<Access> {
        Access::checked::<S>(caller)
    }

    fn checked<S: ScopeMarker>(caller: &Caller) -> AppResult<Access> {
        if caller.key().is_some() {
            let _: Grant<S> = caller.require()?;
            return Ok(Access::Server);
        }
        Ok(Access::Client {
            roles: caller.roles(),
            user_id: caller.require_session().ok().map(|s| s.user.id.clone()),
        })
    }
}

/// The access of a caller checked for the scope `S` in the addressed project: a
/// server's [`Grant<S>`], or a client's roles. Only [`ScopedAccess::of`] makes one,
/// so a function that changes files takes a `ScopedAccess<FilesWrite>`, and an
/// access checked for reading does not fit. It reads as the [`Access`] it holds.
///
/// ```compile_fail,E0308
/// use nimbus::auth::ScopedAccess;
/// use nimbus::auth::scopes::{FilesRead, FilesWrite};
///
/// fn delete_a_file(_: &ScopedAccess<FilesWrite>) {}
/// fn with_read_access(read: &ScopedAccess<FilesRead>) {
///     delete_a_file(read);
/// }
/// ```
#[derive(Debug, Clone)]
pub struct ScopedAccess<S: ScopeMarker> {
    access: Access,
    project: String,
    /// The server's key or the signed-in user, as `key:ID` or `user:ID`.
    actor: Option<String>,
    /// Whether what a write leaves may be shown in its answer (see
    /// [`ScopedAccess::answers`]).
    answers: bool,
    scope: PhantomData<S>,
}

impl<S: ScopeMarker> ScopedAccess<S> {
    /// The access of `caller`; a key must hold the scope `S`.
    pub fn of(caller: &Caller) -> AppResult<Self> {
        let access = Access::checked::<S>(caller)?;
        let actor = match caller.key() {
            Some(key) => Some(key.actor()),
            None => caller
                .require_session()
                .ok()
                .map(|s| format!("user:{}", s.user.id)),
        };
        Ok(ScopedAccess {
            access,
            project: caller.project.id.clone(),
            actor,
            answers: caller.may_see_what_it_writes(S::SCOPE),
            scope: PhantomData,
        })
    }

    /// The access a write's answer is shown by: the caller's own, except for a
    /// key without the service's read scope (`files.write` alone), which bypasses
    /// permissions in what it changes but sees of it only what a guest may.
    pub fn answered_as(&self) -> std::borrow::Cow<'_, Access> {
        if self.answers {
            std::borrow::Cow::Borrowed(&self.access)
        } else {
            std::borrow::Cow::Owned(Access::guest())
        }
    }

    /// The project the access was checked in.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// Who acts, as `key:ID` for a server (`admin:EMAIL` for a console
    /// administrator) or `user:ID` for a signed-in user; none for a guest.
    pub fn actor(&self) -> Option<&str> {
        self.actor.as_deref()
    }
}

impl<S: ScopeMarker> Deref for ScopedAccess<S> {
    type Target = Access;

    fn deref(&self) -> &Access {
        &self.access
    }
}

/// How far a container's (a collection's, a bucket's) own permissions let a caller
/// `action` what it holds: everything, only the items whose own permissions allow
/// it, or nothing.
#[derive(Debug, Clone)]
pub enum Reach {
    All,
    PerItem(RoleSet),
    None,
}

/// A container of permissioned items, as [`Access::reach`] sees it.
pub struct Container<'a> {
    pub enabled: bool,
    pub permissions: &'a [Permission],
    /// Whether each item's own permissions count (`documentSecurity`, `fileSecurity`).
    pub item_security: bool,
}

impl Access {
    /// The reach of this caller into `container` for `action`. Servers reach
    /// everything; clients nothing of a disabled container.
    pub fn reach(&self, container: Container<'_>, action: Action) -> Reach {
        match self {
            Access::Server => Reach::All,
            Access::Client { .. } if !container.enabled => Reach::None,
            Access::Client { roles, .. } if allows(roles, action, container.permissions) => {
                Reach::All
            }
            Access::Client { roles, .. } if container.item_security => {
                Reach::PerItem(roles.clone())
            }
            Access::Client { .. } => Reach::None,
        }
    }
}

fn invalid_permissions(err: PermissionError) -> AppError {
    AppError::Invalid {
        code: err.code(),
        field: "permissions".into(),
        reason: err.to_string(),
    }
}

/// The actions an item (a document, a file) carries permissions for. Creating
/// happens in its container, so `create` on an item would mean nothing (and look
/// like a grant it is not); there `write` is update + delete, as in Appwrite.
const ITEM_ACTIONS: [Action; 3] = [Action::Read, Action::Update, Action::Delete];

impl Access {
    /// The permissions a write sets on an item from `given`: parsed, at most
    /// [`MAX_PERMISSIONS`], only [`ITEM_ACTIONS`], and for a client only roles it
    /// holds itself.
    pub fn permissions_to_set(&self, given: &[String]) -> AppResult<Vec<Permission>> {
        self.parse_allowing(given, &ITEM_ACTIONS)
    }

    /// The permissions a write replaces an item's `current` ones with, as
    /// [`Access::permissions_to_set`] reads `given`; a client grants nothing new
    /// that it may not do itself (`may` answers for an action on the item as it is
    /// now): a right to update is not a way to a right to delete, nor to read.
    pub fn permissions_replacing(
        &self,
        given: &[String],
        current: &[Permission],
        may: impl Fn(Action) -> bool,
    ) -> AppResult<Vec<Permission>> {
        let permissions = self.permissions_to_set(given)?;
        if let Access::Client { .. } = self
            && let Some(new) = permissions
                .iter()
                .find(|permission| !current.contains(permission) && !may(permission.action))
        {
            return Err(AppError::PermissionDenied {
                reason: format!(
                    "you may not grant `{new}`: you are not allowed to {} it yourself",
                    new.action
                ),
            });
        }
        Ok(permissions)
    }

    /// The permissions of a container (a collection, a bucket), set by a server:
    /// every action, `create` included.
    pub fn container_permissions(given: &[String]) -> AppResult<Vec<Permission>> {
        Access::Server.parse_allowing(given, &Action::ALL)
    }

    fn parse_allowing(&self, given: &[String], allowed: &[Action]) -> AppResult<Vec<Permission>> {
        if given.len() > MAX_PERMISSIONS {
            return Err(AppError::invalid(
                "permissions",
                format!("at most {MAX_PERMISSIONS} permissions"),
            ));
        }
        let permissions =
            parse_permissions_allowing(given, allowed).map_err(invalid_permissions)?;
        if let Access::Client { roles, .. } = self {
            check_grantable(roles, &permissions).map_err(invalid_permissions)?;
        }
        Ok(permissions)
    }

    /// The permissions of a new item: `given` as in [`Access::permissions_to_set`];
    /// when none are given, a signed-in client's own read, update and delete (and
    /// none for anyone else).
    pub fn permissions_of_new(&self, given: Option<&[String]>) -> AppResult<Vec<Permission>> {
        match (given, self) {
            (Some(given), _) => self.permissions_to_set(given),
            (
                None,
                Access::Client {
                    user_id: Some(user),
                    ..
                },
            ) => {
                let role =
                    Role::user(user).map_err(|e| AppError::Internal(anyhow::anyhow!("{e}")))?;
                Ok([Action::Read, Action::Update, Action::Delete]
                    .into_iter()
                    .map(|action| Permission::new(action, role.clone()))
                    .collect())
            }
            (None, _) => Ok(Vec::new()),
        }
    }
}

/// Whether `caller`, who receives `event` (it may read the resource as the
/// change left it), may also see the version before the change the event
/// carries: only if it could read that version, by the roles it had then.
pub fn may_see_previous(caller: &Caller, event: &crate::bus::Event) -> bool {
    if event.previous.is_none() {
        return true;
    }
    if let Some(key) = caller.key() {
        return key.holds_named(&event.key_scope);
    }
    // Readers unchanged by the change: a receiver, holding one of them, could
    // read before too. Worked out without the caller's roles, the common case.
    if !event.read_roles.is_empty()
        && event
            .read_roles
            .iter()
            .all(|role| event.previous_read_roles.contains(role))
    {
        return true;
    }
    let roles = caller.roles().as_strings();
    event
        .previous_read_roles
        .iter()
        .any(|role| roles.contains(role))
}
