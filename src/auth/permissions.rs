//! The permission engine every service uses: Appwrite's roles and permissions,
//! parsed strictly and printed canonically, the roles a caller holds
//! ([`RoleSet`]), the one decision function ([`allows`]), the rule for which
//! permissions a caller may attach to a resource ([`check_grantable`]), and the
//! SQL building blocks over a side table of `(resource_id, role, actions)` rows: a
//! permission check as an indexed `EXISTS` ([`push_permission_filter`]), the
//! resources a caller may act on as a table to drive a list from
//! ([`push_permitted_resources`]), and the capped count of a caller's rows that
//! chooses between the two ([`push_grant_count`]).
//!
//! It knows nothing about callers, sessions, API keys or collections: services
//! build the [`RoleSet`], decide whether an API key skips the checks, and combine
//! collection-level and document-level permissions (Appwrite's `documentSecurity`
//! rule: collection permissions, *or* the document's own when the collection enables
//! document security). It never reads or writes the database itself.
//!
//! Strings follow Appwrite (`utopia-php/database`, `Helpers/Role.php`,
//! `Helpers/Permission.php`, `Validator/Roles.php`) so that its SDKs' permission
//! helpers work unchanged: `read("user:abc")`, exactly, with double quotes and no
//! spaces. A string this module accepts always prints back identically.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sqlx::{Any, QueryBuilder};

use crate::error::{codes, shown};

/// Most permissions one resource may carry, before `write` is expanded (Appwrite's
/// `APP_LIMIT_ARRAY_PARAMS_SIZE`).
pub const MAX_PERMISSIONS: usize = 100;

/// Longest permission string worth parsing: the longest valid one,
/// `delete("team:<36>/<36>")`, has 88 characters.
const MAX_PERMISSION_LEN: usize = 128;

/// Longest id, team role name or label.
const MAX_NAME_LEN: usize = 36;

/// Longest SQL identifier MariaDB accepts.
const MAX_SQL_IDENT_LEN: usize = 64;

/// Alias of the side table inside the `EXISTS` subquery; a resource column may not
/// be qualified with it, or the comparison would silently compare the side table
/// with itself.
const SIDE_ALIAS: &str = "nimbus_perm";

const ROLE_FORMS: &str = concat!(
    "any, guests, users, users/verified, users/unverified, user:ID, ",
    "user:ID/verified, user:ID/unverified, team:ID, team:ID/ROLE, member:ID or label:NAME"
);

/// Why a role, a permission or a grant was refused. Messages are meant for the
/// client: they quote (a bounded, escaped excerpt of) the input and name the part
/// that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    /// `INVALID_ROLE`: a role string is malformed.
    #[error("invalid role {role}: {reason}")]
    InvalidRole { role: String, reason: String },
    /// `INVALID_PERMISSION`: a permission string is malformed; `index` is its
    /// position in the list it came from.
    #[error("invalid permission {}{permission}: {reason}", at(*.index))]
    InvalidPermission {
        index: Option<usize>,
        permission: String,
        reason: String,
    },
    /// `INVALID_PERMISSION`: more than [`MAX_PERMISSIONS`] were given.
    #[error("too many permissions: {count} given, at most {max} are allowed")]
    TooManyPermissions { count: usize, max: usize },
    /// `PERMISSION_DENIED`: the granter does not hold the role it tried to grant.
    #[error("you cannot grant {permission}: you can only grant roles you hold yourself ({held})")]
    NotGrantable { permission: String, held: String },
    /// `INTERNAL`: a table or column name handed to the SQL builder is not a plain
    /// identifier. A bug in the caller, never caused by client input.
    #[error("invalid SQL identifier {name}: {reason}")]
    InvalidIdentifier { name: String, reason: String },
}

impl PermissionError {
    /// The stable `extensions.code` this error reaches a client with.
    pub fn code(&self) -> &'static str {
        match self {
            PermissionError::InvalidRole { .. } => codes::INVALID_ROLE,
            PermissionError::InvalidPermission { .. }
            | PermissionError::TooManyPermissions { .. } => codes::INVALID_PERMISSION,
            PermissionError::NotGrantable { .. } => codes::PERMISSION_DENIED,
            PermissionError::InvalidIdentifier { .. } => codes::INTERNAL,
        }
    }
}

fn at(index: Option<usize>) -> String {
    index.map_or_else(String::new, |i| format!("#{i} "))
}

/// An id or a team role name: 1 to 36 characters of `a-zA-Z0-9._-`, not starting
/// with `.`, `_` or `-` (Nimbus id rules; Appwrite's `Key` validator, which it also
/// applies to team role names).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    /// Checks `value`; `what` names it in the error (e.g. "the team id").
    fn new(value: &str, what: &str) -> Result<Self, String> {
        if value.is_empty() {
            return Err(format!("{what} is empty"));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(format!(
                "{what} {} may contain only a-z, A-Z, 0-9, '.', '_' and '-'",
                shown(value)
            ));
        }
        if value.len() > MAX_NAME_LEN {
            return Err(format!("{what} is longer than {MAX_NAME_LEN} characters"));
        }
        if value.starts_with(['.', '_', '-']) {
            return Err(format!("{what} may not start with '.', '_' or '-'"));
        }
        Ok(Ident(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user label: 1 to 36 characters of `a-zA-Z0-9` (Appwrite's `Label` validator).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelName(String);

impl LabelName {
    fn new(value: &str) -> Result<Self, String> {
        if value.is_empty() {
            return Err("the label is empty".into());
        }
        if !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "the label {} may contain only a-z, A-Z and 0-9",
                shown(value)
            ));
        }
        if value.len() > MAX_NAME_LEN {
            return Err(format!(
                "the label is longer than {MAX_NAME_LEN} characters"
            ));
        }
        Ok(LabelName(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The verification dimension of `users` and `user:ID`: a user is verified when
/// its email or its phone is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verification {
    Verified,
    Unverified,
}

impl Verification {
    pub fn as_str(self) -> &'static str {
        match self {
            Verification::Verified => "verified",
            Verification::Unverified => "unverified",
        }
    }

    fn of(verified: bool) -> Self {
        if verified {
            Verification::Verified
        } else {
            Verification::Unverified
        }
    }

    fn parse(value: &str, of: &str) -> Result<Self, String> {
        match value {
            "verified" => Ok(Verification::Verified),
            "unverified" => Ok(Verification::Unverified),
            _ => Err(format!(
                "the dimension {} of `{of}` must be `verified` or `unverified`",
                shown(value)
            )),
        }
    }
}

/// One of Appwrite's roles. Every value is valid by construction (its ids went
/// through the same checks as [`FromStr`]), so [`Display`](fmt::Display) always
/// prints a string that parses back to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// `any`: everyone, signed in or not.
    Any,
    /// `guests`: callers that are not signed in.
    Guests,
    /// `users`, `users/verified`, `users/unverified`: signed-in users.
    Users { status: Option<Verification> },
    /// `user:ID`, `user:ID/verified`, `user:ID/unverified`: one user.
    User {
        id: Ident,
        status: Option<Verification>,
    },
    /// `team:ID`: any member of a team; `team:ID/ROLE`: its members with that role.
    Team { id: Ident, role: Option<Ident> },
    /// `member:ID`: the holder of one membership.
    Member { id: Ident },
    /// `label:NAME`: users carrying a label.
    Label { name: LabelName },
}

impl Role {
    /// `user:ID`.
    pub fn user(id: &str) -> Result<Role, PermissionError> {
        let role = Ident::new(id, "the user id").map(|id| Role::User { id, status: None });
        Self::checked(&format!("user:{id}"), role)
    }

    /// `team:ID` or, with a role name, `team:ID/ROLE`.
    pub fn team(id: &str, role: Option<&str>) -> Result<Role, PermissionError> {
        let built = Ident::new(id, "the team id").and_then(|id| {
            let role = role.map(|r| Ident::new(r, "the team role")).transpose()?;
            Ok(Role::Team { id, role })
        });
        let shown = match role {
            Some(role) => format!("team:{id}/{role}"),
            None => format!("team:{id}"),
        };
        Self::checked(&shown, built)
    }

    /// `member:ID`.
    pub fn member(id: &str) -> Result<Role, PermissionError> {
        let role = Ident::new(id, "the membership id").map(|id| Role::Member { id });
        Self::checked(&format!("member:{id}"), role)
    }

    /// `label:NAME`.
    pub fn label(name: &str) -> Result<Role, PermissionError> {
        let role = LabelName::new(name).map(|name| Role::Label { name });
        Self::checked(&format!("label:{name}"), role)
    }

    fn checked(input: &str, role: Result<Role, String>) -> Result<Role, PermissionError> {
        role.map_err(|reason| PermissionError::InvalidRole {
            role: shown(input),
            reason,
        })
    }

    /// The parser behind [`FromStr`]; the error is the reason alone.
    fn parse(s: &str) -> Result<Role, String> {
        if s.is_empty() {
            return Err(format!("the role is empty; expected {ROLE_FORMS}"));
        }
        if s == "*" {
            return Err("the wildcard role `*` was replaced by `any`".into());
        }
        if s.starts_with("role:") {
            return Err(
                "roles with the `role:` prefix were removed; use `any`, `users` or `guests`".into(),
            );
        }
        if s.contains(char::is_whitespace) {
            return Err("a role contains no whitespace".into());
        }
        if let Some((kind, rest)) = s.split_once(':') {
            return match kind {
                "user" => {
                    let (id, status) = split_dimension(rest, "user:ID")?;
                    Ok(Role::User {
                        id: Ident::new(id, "the user id")?,
                        status: status
                            .map(|d| Verification::parse(d, "user:ID"))
                            .transpose()?,
                    })
                }
                "team" => {
                    let (id, role) = split_dimension(rest, "team:ID")?;
                    Ok(Role::Team {
                        id: Ident::new(id, "the team id")?,
                        role: role.map(|r| Ident::new(r, "the team role")).transpose()?,
                    })
                }
                "member" => {
                    if rest.contains('/') {
                        return Err("`member:ID` takes no `/` dimension".into());
                    }
                    Ok(Role::Member {
                        id: Ident::new(rest, "the membership id")?,
                    })
                }
                "label" => {
                    if rest.contains('/') {
                        return Err("`label:NAME` takes no `/` dimension".into());
                    }
                    Ok(Role::Label {
                        name: LabelName::new(rest)?,
                    })
                }
                "any" | "guests" | "users" => Err(format!(
                    "`{kind}` takes no id; write just `{kind}` (or `users/verified`)"
                )),
                _ => Err(unknown_kind(kind)),
            };
        }
        if let Some((kind, dimension)) = s.split_once('/') {
            return match kind {
                "users" => {
                    if dimension.contains('/') {
                        return Err("a role has at most one `/` dimension".into());
                    }
                    Ok(Role::Users {
                        status: Some(Verification::parse(dimension, "users")?),
                    })
                }
                "any" | "guests" => Err(format!("`{kind}` takes no `/` dimension")),
                "user" | "team" | "member" | "label" => Err(needs_id(kind)),
                _ => Err(unknown_kind(kind)),
            };
        }
        match s {
            "any" => Ok(Role::Any),
            "guests" => Ok(Role::Guests),
            "users" => Ok(Role::Users { status: None }),
            "user" | "team" | "member" | "label" => Err(needs_id(s)),
            _ => Err(unknown_kind(s)),
        }
    }
}

/// Splits `ID/DIMENSION`, refusing an empty dimension or a second `/`.
fn split_dimension<'a>(rest: &'a str, form: &str) -> Result<(&'a str, Option<&'a str>), String> {
    match rest.split_once('/') {
        None => Ok((rest, None)),
        Some((_, "")) => Err(format!("the dimension after `{form}/` is empty")),
        Some((_, dimension)) if dimension.contains('/') => {
            Err("a role has at most one `/` dimension".into())
        }
        Some((id, dimension)) => Ok((id, Some(dimension))),
    }
}

fn needs_id(kind: &str) -> String {
    let example = if kind == "label" { "NAME" } else { "ID" };
    format!("`{kind}` needs an id: `{kind}:{example}`")
}

fn unknown_kind(kind: &str) -> String {
    format!("unknown role kind {}; expected {ROLE_FORMS}", shown(kind))
}

impl FromStr for Role {
    type Err = PermissionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::parse(s).map_err(|reason| PermissionError::InvalidRole {
            role: shown(s),
            reason,
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Any => f.write_str("any"),
            Role::Guests => f.write_str("guests"),
            Role::Users { status: None } => f.write_str("users"),
            Role::Users { status: Some(s) } => write!(f, "users/{}", s.as_str()),
            Role::User { id, status: None } => write!(f, "user:{}", id.as_str()),
            Role::User {
                id,
                status: Some(s),
            } => write!(f, "user:{}/{}", id.as_str(), s.as_str()),
            Role::Team { id, role: None } => write!(f, "team:{}", id.as_str()),
            Role::Team { id, role: Some(r) } => write!(f, "team:{}/{}", id.as_str(), r.as_str()),
            Role::Member { id } => write!(f, "member:{}", id.as_str()),
            Role::Label { name } => write!(f, "label:{}", name.as_str()),
        }
    }
}

/// What a permission allows. Appwrite's `write` is not an action but shorthand for
/// create, update and delete; [`parse_permissions`] expands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Read,
    Create,
    Update,
    Delete,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Read, Action::Create, Action::Update, Action::Delete];

    /// The action's bit in a side table's `actions` column ([`permission_grants`]).
    /// Stored: never renumber.
    pub fn bit(self) -> i64 {
        match self {
            Action::Read => 1,
            Action::Create => 2,
            Action::Update => 4,
            Action::Delete => 8,
        }
    }

    /// The name used in permission strings and in the side table's `action` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = PermissionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| PermissionError::InvalidPermission {
                index: None,
                permission: shown(s),
                reason: "the action must be read, create, update or delete".into(),
            })
    }
}

/// One permission: `action` is allowed to holders of `role`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission {
    pub action: Action,
    pub role: Role,
}

impl Permission {
    pub fn new(action: Action, role: Role) -> Self {
        Permission { action, role }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(\"{}\")", self.action, self.role)
    }
}

/// Parses one permission that is not `write` (which stands for three; use
/// [`parse_permissions`] for client input).
impl FromStr for Permission {
    type Err = PermissionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, role) = split_permission(s).map_err(|reason| invalid(None, s, reason))?;
        match kind {
            Kind::One(action) => Ok(Permission { action, role }),
            Kind::Write => Err(invalid(
                None,
                s,
                "`write` stands for create, update and delete: it is accepted in a list \
                 of permissions, not as a single one"
                    .into(),
            )),
        }
    }
}

fn invalid(index: Option<usize>, input: &str, reason: String) -> PermissionError {
    PermissionError::InvalidPermission {
        index,
        permission: shown(input),
        reason,
    }
}

enum Kind {
    One(Action),
    Write,
}

/// Splits `action("role")`, exactly as Appwrite writes it: no whitespace, double
/// quotes. The hints name what is off, since SDKs and hand-written clients differ.
fn split_permission(s: &str) -> Result<(Kind, Role), String> {
    if s.len() > MAX_PERMISSION_LEN {
        return Err(format!(
            "it is longer than any valid permission ({MAX_PERMISSION_LEN} bytes)"
        ));
    }
    let Some((name, rest)) = s.split_once('(') else {
        return Err("expected the form action(\"role\"), e.g. read(\"any\")".into());
    };
    let kind = match name {
        "write" => Kind::Write,
        _ => match Action::ALL.into_iter().find(|a| a.as_str() == name) {
            Some(action) => Kind::One(action),
            None if name.trim() != name => {
                return Err("remove the whitespace around the action".into());
            }
            None => {
                return Err(format!(
                    "unknown action {}; expected read, create, update, delete or write",
                    shown(name)
                ));
            }
        },
    };
    let Some(inner) = rest.strip_suffix(')') else {
        return Err("expected `)` at the end, e.g. read(\"any\")".into());
    };
    if inner.trim() != inner {
        return Err("remove the whitespace inside the parentheses".into());
    }
    if inner.starts_with('\'') {
        return Err("use double quotes around the role, e.g. read(\"any\")".into());
    }
    let role = match inner.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(role) if !role.contains('"') => role,
        Some(_) => return Err("the role may not contain `\"`".into()),
        None => {
            return Err("the role must be in double quotes, e.g. read(\"any\")".into());
        }
    };
    let role =
        Role::parse(role).map_err(|reason| format!("in the role {}: {reason}", shown(role)))?;
    Ok((kind, role))
}

/// Parses a client's list of permissions with every action allowed; see
/// [`parse_permissions_allowing`].
/// The permissions a logged item's JSON holds under `field` (`$permissions` of a
/// document, `permissions` of a file); one that does not parse grants nothing.
pub fn logged_permissions(logged: &serde_json::Value, field: &str) -> Vec<Permission> {
    logged
        .get(field)
        .and_then(serde_json::Value::as_array)
        .map(|permissions| {
            permissions
                .iter()
                .filter_map(|p| p.as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub fn parse_permissions<S: AsRef<str>>(inputs: &[S]) -> Result<Vec<Permission>, PermissionError> {
    parse_permissions_allowing(inputs, &Action::ALL)
}

/// Parses a client's list of permissions: at most [`MAX_PERMISSIONS`] strings,
/// `write` expanded to those of create, update and delete that are in `allowed`,
/// an explicit action outside `allowed` refused, duplicates dropped (first
/// occurrence kept, so the order is the client's). Documents and files allow read,
/// update and delete only: "create" means nothing on a resource that exists, so
/// there `write` is update + delete, as in Appwrite.
pub fn parse_permissions_allowing<S: AsRef<str>>(
    inputs: &[S],
    allowed: &[Action],
) -> Result<Vec<Permission>, PermissionError> {
    if inputs.len() > MAX_PERMISSIONS {
        return Err(PermissionError::TooManyPermissions {
            count: inputs.len(),
            max: MAX_PERMISSIONS,
        });
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (index, input) in inputs.iter().enumerate() {
        let input = input.as_ref();
        let (kind, role) = split_permission(input).map_err(|r| invalid(Some(index), input, r))?;
        let actions = match kind {
            Kind::One(action) if allowed.contains(&action) => vec![action],
            Kind::One(action) => {
                let names: Vec<&str> = allowed.iter().map(|a| a.as_str()).collect();
                return Err(invalid(
                    Some(index),
                    input,
                    format!(
                        "`{action}` permissions do not apply here; allowed: {}",
                        names.join(", ")
                    ),
                ));
            }
            Kind::Write => [Action::Create, Action::Update, Action::Delete]
                .into_iter()
                .filter(|a| allowed.contains(a))
                .collect(),
        };
        for action in actions {
            let permission = Permission::new(action, role.clone());
            if seen.insert(permission.clone()) {
                out.push(permission);
            }
        }
    }
    Ok(out)
}

/// A membership that counts for roles: the caller passes confirmed ones only (an
/// invitation that was not accepted grants nothing).
#[derive(Debug, Clone, Copy)]
pub struct TeamMembership<'a> {
    pub team_id: &'a str,
    pub membership_id: &'a str,
    /// The member's role names in the team (`owner`, `editor`, ...).
    pub roles: &'a [String],
}

/// The roles a caller holds. It always contains [`Role::Any`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSet {
    roles: BTreeSet<Role>,
}

impl RoleSet {
    /// A caller that is not signed in: `any`, `guests`.
    pub fn guest() -> Self {
        [Role::Guests].into_iter().collect()
    }

    /// A signed-in user, as Appwrite's `User::getRoles`: `any`, `users`, `user:ID`,
    /// `users/verified` and `user:ID/verified` (or both `unverified`), and for each
    /// membership `team:T`, `team:T/R` per role, `member:M`; `label:L` per label.
    ///
    /// Ids come from storage, where they were validated; one that is not a valid id
    /// anyway is skipped rather than failing the request, which changes no decision:
    /// no stored permission can name it, since every permission went through the
    /// parser.
    pub fn for_user(
        user_id: &str,
        verified: bool,
        memberships: &[TeamMembership<'_>],
        labels: &[String],
    ) -> Self {
        let status = Verification::of(verified);
        let mut roles = vec![
            Role::Users { status: None },
            Role::Users {
                status: Some(status),
            },
        ];
        if let Ok(id) = Ident::new(user_id, "id") {
            roles.push(Role::User {
                id: id.clone(),
                status: None,
            });
            roles.push(Role::User {
                id,
                status: Some(status),
            });
        }
        for membership in memberships {
            let Ok(team) = Ident::new(membership.team_id, "id") else {
                continue;
            };
            roles.push(Role::Team {
                id: team.clone(),
                role: None,
            });
            roles.extend(membership.roles.iter().filter_map(|r| {
                Ident::new(r, "id").ok().map(|role| Role::Team {
                    id: team.clone(),
                    role: Some(role),
                })
            }));
            if let Ok(id) = Ident::new(membership.membership_id, "id") {
                roles.push(Role::Member { id });
            }
        }
        roles.extend(
            labels
                .iter()
                .filter_map(|l| LabelName::new(l).ok().map(|name| Role::Label { name })),
        );
        roles.into_iter().collect()
    }

    pub fn contains(&self, role: &Role) -> bool {
        self.roles.contains(role)
    }

    /// How many roles the set holds (`any` included).
    pub fn len(&self) -> usize {
        self.roles.len()
    }

    /// Never: every set holds `any`.
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }

    /// The roles in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = &Role> {
        self.roles.iter()
    }

    /// The roles as canonical strings, in a stable order (for the bus, logs, and
    /// the realtime filter).
    pub fn as_strings(&self) -> Vec<String> {
        self.roles.iter().map(Role::to_string).collect()
    }

    /// The roles as canonical strings in one allocation, for what holds them as
    /// long as a connection lives (the realtime filter).
    pub fn names(&self) -> RoleNames {
        let mut joined = String::new();
        for role in &self.roles {
            if !joined.is_empty() {
                joined.push('\n');
            }
            joined.push_str(&role.to_string());
        }
        RoleNames(joined.into_boxed_str())
    }
}

/// A caller's roles as canonical strings, one allocation for all of them (a
/// vector of strings costs one per role and the vector's own): joined by
/// newlines, which no role contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleNames(Box<str>);

impl RoleNames {
    /// Whether `role` (a canonical role string) is one of these.
    pub fn contains(&self, role: &str) -> bool {
        self.0.split('\n').any(|held| held == role)
    }
}

/// Builds a set from any roles; `any` is added.
impl FromIterator<Role> for RoleSet {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Self {
        let mut roles: BTreeSet<Role> = iter.into_iter().collect();
        roles.insert(Role::Any);
        RoleSet { roles }
    }
}

impl<'a> IntoIterator for &'a RoleSet {
    type Item = &'a Role;
    type IntoIter = std::collections::btree_set::Iter<'a, Role>;

    fn into_iter(self) -> Self::IntoIter {
        self.roles.iter()
    }
}

/// Whether a caller holding `roles` may do `action` on a resource carrying
/// `permissions`: yes when some permission for that action names a role the caller
/// holds. No permissions, no access. API keys bypass this; the caller decides.
pub fn allows(roles: &RoleSet, action: Action, permissions: &[Permission]) -> bool {
    permissions
        .iter()
        .any(|p| p.action == action && roles.contains(&p.role))
}

/// The grant rule: a caller that is not an API key may only attach permissions
/// whose role it holds itself: the role must be exactly one of `granter`'s roles
/// (after `write` was expanded). Holding `team:T` does not let one grant
/// `team:T/owner`, nor does `users` grant `users/verified`. So a verified user `u`
/// that owns team `t` can grant `any`, `users`, `users/verified`, `user:u`,
/// `user:u/verified`, `team:t`, `team:t/owner`, `member:<its membership>` and
/// `label:<its labels>`, and nothing else (not `guests`, not `user:someone-else`);
/// a guest can grant `any` and `guests`.
///
/// This is Appwrite's rule for documents and files ("SDK clients can only grant
/// roles they themselves hold"; its create/update handlers refuse any role for
/// which `Authorization::isRole` is false, with "Permissions must be one of: (…)").
/// API keys skip it; the caller decides when to call it.
pub fn check_grantable(
    granter: &RoleSet,
    permissions: &[Permission],
) -> Result<(), PermissionError> {
    match permissions.iter().find(|p| !granter.contains(&p.role)) {
        None => Ok(()),
        Some(p) => {
            const SHOWN: usize = 20;
            let roles = granter.as_strings();
            let mut held = roles
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if roles.len() > SHOWN {
                held.push_str(&format!(", and {} more", roles.len() - SHOWN));
            }
            Err(PermissionError::NotGrantable {
                permission: format!("`{p}`"),
                held: format!("yours: {held}"),
            })
        }
    }
}

/// The rows of the side table for one resource: `(resource_id, action, role)`,
/// one per distinct permission.
pub fn permission_rows(
    resource_id: &str,
    permissions: &[Permission],
) -> Vec<(String, &'static str, String)> {
    let mut seen = HashSet::new();
    permissions
        .iter()
        .filter(|p| seen.insert(*p))
        .map(|p| {
            (
                resource_id.to_string(),
                p.action.as_str(),
                p.role.to_string(),
            )
        })
        .collect()
}

/// The rows of a document side table for one resource: `(resource_id, role,
/// actions)`, one per role in order of first appearance, `actions` the sum of the
/// bits ([`Action::bit`]) of what the role may do. One row per role rather than
/// per permission: a document owned by one user is one row, not three.
pub fn permission_grants(
    resource_id: &str,
    permissions: &[Permission],
) -> Vec<(String, String, i64)> {
    let mut grants: Vec<(String, String, i64)> = Vec::new();
    for permission in permissions {
        let role = permission.role.to_string();
        match grants.iter_mut().find(|(_, r, _)| *r == role) {
            Some((_, _, actions)) => *actions |= permission.action.bit(),
            None => grants.push((resource_id.to_string(), role, permission.action.bit())),
        }
    }
    grants
}

/// The sole reader of a resource with `permissions`: the role of its `read`
/// permissions when, once duplicates are removed, they name exactly one role;
/// `None` when they name none or several (`write` does not read). A document
/// keeps it beside its row so that a reader's list is an index range of its
/// table (ADR 0022); the grant of that role in the side table is marked `sole`.
pub fn sole_reader(permissions: &[Permission]) -> Option<String> {
    let mut reader: Option<&Role> = None;
    for permission in permissions {
        if permission.action != Action::Read {
            continue;
        }
        match reader {
            None => reader = Some(&permission.role),
            Some(role) if *role == permission.role => {}
            Some(_) => return None,
        }
    }
    reader.map(Role::to_string)
}

/// The permissions one side-table row grants (the inverse of
/// [`permission_grants`]); bits of no action are ignored.
pub fn granted(role: &str, actions: i64) -> Result<Vec<Permission>, PermissionError> {
    let role: Role = role.parse()?;
    Ok(Action::ALL
        .into_iter()
        .filter(|action| actions & action.bit() != 0)
        .map(|action| Permission::new(action, role.clone()))
        .collect())
}

/// Appends a condition that holds for the resources `roles` may `action`:
///
/// ```sql
/// EXISTS (SELECT 1 FROM <side_table> nimbus_perm
///         WHERE nimbus_perm.resource_id = <resource_column>
///           AND nimbus_perm.role IN (?, ?, …) AND (nimbus_perm.actions & ?) <> 0)
/// ```
///
/// with every role and the action's bit bound, never spliced into the SQL. The
/// side table has the columns `resource_id`, `role`, `actions` (the rows of
/// [`permission_grants`]); with its key on `(resource_id, role)` the correlated
/// lookup is an index probe per candidate row and role, and an index on `(role,
/// resource_id)` serves a planner that drives from the side table.
///
/// Role strings compare byte for byte, as in [`allows`]: on MariaDB the side table
/// needs a binary collation (`utf8mb4_bin`), or `user:Bob` would match `user:bob`.
///
/// `side_table` must be a plain identifier and `resource_column` a qualified one
/// (`d.id`), so that it cannot resolve to a column of the side table. Nothing is
/// appended when either is refused.
pub fn push_permission_filter(
    builder: &mut QueryBuilder<'_, Any>,
    resource_column: &str,
    side_table: &str,
    action: Action,
    roles: &RoleSet,
) -> Result<(), PermissionError> {
    check_sql_ident(side_table)?;
    let Some((qualifier, column)) = resource_column.split_once('.') else {
        return Err(PermissionError::InvalidIdentifier {
            name: shown(resource_column),
            reason: "the resource column must be qualified, like `d.id`".into(),
        });
    };
    check_sql_ident(qualifier)?;
    check_sql_ident(column)?;
    if qualifier.eq_ignore_ascii_case(SIDE_ALIAS) {
        return Err(PermissionError::InvalidIdentifier {
            name: shown(qualifier),
            reason: format!("`{SIDE_ALIAS}` is the side table's alias in the filter"),
        });
    }

    builder
        .push("EXISTS (SELECT 1 FROM ")
        .push(side_table)
        .push(format_args!(
            " {SIDE_ALIAS} WHERE {SIDE_ALIAS}.resource_id = "
        ))
        .push(resource_column)
        .push(format_args!(" AND {SIDE_ALIAS}.role IN ("));
    let mut list = builder.separated(", ");
    for role in roles {
        list.push_bind(role.to_string());
    }
    list.push_unseparated(format_args!(") AND ({SIDE_ALIAS}.actions & "));
    builder.push_bind(action.bit()).push(") <> 0)");
    Ok(())
}

/// Which rows of a side table a query over a caller's grants reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SideRows {
    /// Every row naming one of the caller's roles.
    All,
    /// Only the rows not marked `sole`: the grants of resources that several
    /// roles, or none, may read. A side table whose resources keep their sole
    /// reader beside them (ADR 0022: collection tables) has the `sole` column
    /// and leads its `(role, sole, …)` index with it, so these rows are an index
    /// range of their own; a list reads the resources with a sole reader
    /// through that column instead.
    Shared,
}

impl SideRows {
    /// ` AND <alias>sole = 0` for [`SideRows::Shared`]; `alias` is empty or ends
    /// with a dot.
    fn condition(self, alias: &str) -> String {
        match self {
            SideRows::All => String::new(),
            SideRows::Shared => format!(" AND {alias}sole = 0"),
        }
    }
}

/// Appends a derived table of the resources `roles` may `action`, each once:
///
/// ```sql
/// (SELECT DISTINCT nimbus_perm.resource_id FROM <side_table> nimbus_perm
///  WHERE nimbus_perm.role IN (?, ?, …) [AND nimbus_perm.sole = 0]
///    AND (nimbus_perm.actions & ?) <> 0)
/// ```
///
/// the other side of [`push_permission_filter`]: a list that joins its table to
/// this one, in this order, reads the caller's grants through the `(role,
/// resource_id)` index and looks up each resource by its key, so that it costs
/// what the caller may read rather than what the table holds. `DISTINCT` keeps a
/// resource granted through two of the roles from being listed twice.
pub fn push_permitted_resources(
    builder: &mut QueryBuilder<'_, Any>,
    side_table: &str,
    action: Action,
    roles: &RoleSet,
    rows: SideRows,
) -> Result<(), PermissionError> {
    check_sql_ident(side_table)?;
    builder.push(format_args!(
        "(SELECT DISTINCT {SIDE_ALIAS}.resource_id FROM {side_table} {SIDE_ALIAS} \
             WHERE {SIDE_ALIAS}.role IN ("
    ));
    let mut list = builder.separated(", ");
    for role in roles {
        list.push_bind(role.to_string());
    }
    list.push_unseparated(format_args!(
        "){} AND ({SIDE_ALIAS}.actions & ",
        rows.condition(&format!("{SIDE_ALIAS}."))
    ));
    builder.push_bind(action.bit()).push(") <> 0)");
    Ok(())
}

/// Appends a query answering how many side-table rows name one of `roles`,
/// counting no further than `cap`:
///
/// ```sql
/// SELECT COUNT(*) FROM (SELECT 1 FROM <side_table> WHERE role IN (?, ?, …) [AND sole = 0]
///   LIMIT ?) nimbus_grants
/// ```
///
/// It reads the `(role, resource_id)` index alone, whatever the actions, so it is
/// an upper bound of what [`push_permitted_resources`] yields, cheap to ask
/// before choosing which side a list drives from.
pub fn push_grant_count(
    builder: &mut QueryBuilder<'_, Any>,
    side_table: &str,
    roles: &RoleSet,
    rows: SideRows,
    cap: i64,
) -> Result<(), PermissionError> {
    check_sql_ident(side_table)?;
    builder.push(format_args!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM {side_table} WHERE role IN ("
    ));
    let mut list = builder.separated(", ");
    for role in roles {
        list.push_bind(role.to_string());
    }
    list.push_unseparated(format_args!("){} LIMIT ", rows.condition("")));
    builder.push_bind(cap).push(") nimbus_grants");
    Ok(())
}

/// Appends a query answering, in one row, whether `roles` hold a grant not
/// marked `sole` and, for each role in the set's order, whether it is the sole
/// reader of some resource:
///
/// ```sql
/// SELECT EXISTS (SELECT 1 FROM <side_table> WHERE role IN (?, …) AND sole = 0),
///        EXISTS (SELECT 1 FROM <side_table> WHERE role = ? AND sole = 1), …
/// ```
///
/// Each is the first entry of a range of the `(role, sole, …)` index, whatever
/// the number of grants. (`GROUP BY role, sole` over that index costs a third
/// of this when MariaDB skips from group to group, but it chooses to by its
/// statistics: with them stale, after a large load, it read every grant of the
/// reader.)
pub fn push_role_marks(
    builder: &mut QueryBuilder<'_, Any>,
    side_table: &str,
    roles: &RoleSet,
) -> Result<(), PermissionError> {
    check_sql_ident(side_table)?;
    builder.push(format_args!(
        "SELECT EXISTS (SELECT 1 FROM {side_table} WHERE role IN ("
    ));
    let mut list = builder.separated(", ");
    for role in roles {
        list.push_bind(role.to_string());
    }
    list.push_unseparated(") AND sole = 0)");
    for role in roles {
        builder.push(format_args!(
            ", EXISTS (SELECT 1 FROM {side_table} WHERE role = "
        ));
        builder.push_bind(role.to_string()).push(" AND sole = 1)");
    }
    Ok(())
}

/// A plain SQL identifier: an ASCII letter or `_`, then letters, digits and `_`.
fn check_sql_ident(name: &str) -> Result<(), PermissionError> {
    let fail = |reason: &str| {
        Err(PermissionError::InvalidIdentifier {
            name: shown(name),
            reason: reason.into(),
        })
    };
    let mut bytes = name.bytes();
    match bytes.next() {
        None => return fail("it is empty"),
        Some(b) if !(b.is_ascii_alphabetic() || b == b'_') => {
            return fail("it must start with a letter or `_`");
        }
        Some(_) => {}
    }
    if !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return fail("it may contain only letters, digits and `_`");
    }
    if name.len() > MAX_SQL_IDENT_LEN {
        return fail("it is longer than 64 characters");
    }
    Ok(())
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Permission {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(s: &str) -> Role {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn perms(list: &[&str]) -> Vec<Permission> {
        parse_permissions(list).unwrap_or_else(|e| panic!("{list:?}: {e}"))
    }

    fn set(roles: &[&str]) -> RoleSet {
        roles.iter().map(|r| role(r)).collect()
    }

    fn verified_owner() -> RoleSet {
        let owner = ["owner".to_string()];
        RoleSet::for_user(
            "u1",
            true,
            &[TeamMembership {
                team_id: "t1",
                membership_id: "m1",
                roles: &owner,
            }],
            &["vip".to_string()],
        )
    }

    #[test]
    fn parses_every_role_kind_and_prints_it_back_unchanged() {
        for s in [
            "any",
            "guests",
            "users",
            "users/verified",
            "users/unverified",
            "user:abc",
            "user:abc/verified",
            "user:abc/unverified",
            "team:t1",
            "team:t1/owner",
            "team:t.1/co-owner_2",
            "member:m-1",
            "label:vip",
            "user:ABCdef0123456789.ABCdef0123456789-_",
        ] {
            assert_eq!(role(s).to_string(), s);
        }
        assert_eq!(
            role("team:t1/owner"),
            Role::team("t1", Some("owner")).unwrap()
        );
        assert_eq!(role("user:a"), Role::user("a").unwrap());
        assert_eq!(role("member:m"), Role::member("m").unwrap());
        assert_eq!(role("label:x"), Role::label("x").unwrap());
    }

    #[test]
    fn rejects_malformed_roles_naming_the_wrong_part() {
        let long = "a".repeat(37);
        for (input, part) in [
            ("", "the role is empty"),
            ("all", "unknown role kind `all`"),
            ("Any", "unknown role kind `Any`"),
            ("user", "`user` needs an id: `user:ID`"),
            ("label", "`label` needs an id: `label:NAME`"),
            ("user/verified", "`user` needs an id"),
            ("user:", "the user id is empty"),
            ("user:a/", "the dimension after `user:ID/` is empty"),
            ("user:a/admin", "the dimension `admin` of `user:ID`"),
            ("user:a/verified/x", "at most one `/`"),
            ("users/admin", "the dimension `admin` of `users`"),
            ("users:abc", "`users` takes no id"),
            ("any/verified", "`any` takes no `/` dimension"),
            ("guests:x", "`guests` takes no id"),
            ("team:", "the team id is empty"),
            ("team:t1/", "the dimension after `team:ID/` is empty"),
            ("team:t1/-x", "the team role may not start with"),
            ("team:t1/own er", "no whitespace"),
            ("team:_t", "the team id may not start with '.', '_' or '-'"),
            ("member:m/x", "`member:ID` takes no `/` dimension"),
            (
                "label:v.i.p",
                "the label `v.i.p` may contain only a-z, A-Z and 0-9",
            ),
            ("label:", "the label is empty"),
            ("user:a:b", "the user id `a:b` may contain only"),
            ("user:é", "the user id `\\u{e9}` may contain only"),
            (&format!("user:{long}"), "the user id is longer than 36"),
            (&format!("label:{long}"), "the label is longer than 36"),
        ] {
            let err = input.parse::<Role>().unwrap_err();
            assert_eq!(err.code(), "INVALID_ROLE");
            assert!(err.to_string().contains(part), "{input:?}: {err}");
        }
    }

    #[test]
    fn role_constructors_check_their_parts_like_the_parser() {
        let err = Role::team("t1", Some("")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid role `team:t1/`: the team role is empty"
        );
        let err = Role::user("a b").unwrap_err().to_string();
        assert!(err.contains("the user id `a b` may contain only"), "{err}");
        assert!(Role::member("_m").is_err());
        assert!(Role::label("v-ip").is_err());
    }

    #[test]
    fn rejects_the_wildcard_and_the_removed_role_prefix_with_a_hint() {
        let err = "*".parse::<Role>().unwrap_err().to_string();
        assert!(err.contains("replaced by `any`"), "{err}");
        let err = "role:all".parse::<Role>().unwrap_err().to_string();
        assert!(err.contains("use `any`, `users` or `guests`"), "{err}");
    }

    #[test]
    fn parses_permissions_in_appwrites_double_quoted_form() {
        let p: Permission = "read(\"user:abc\")".parse().unwrap();
        assert_eq!(p, Permission::new(Action::Read, role("user:abc")));
        assert_eq!(p.to_string(), "read(\"user:abc\")");
        let p: Permission = "delete(\"team:t1/owner\")".parse().unwrap();
        assert_eq!(p.action, Action::Delete);
        assert_eq!(p.to_string(), "delete(\"team:t1/owner\")");
    }

    #[test]
    fn expands_write_into_create_update_and_delete() {
        assert_eq!(
            perms(&["write(\"team:t1/owner\")"]),
            vec![
                Permission::new(Action::Create, role("team:t1/owner")),
                Permission::new(Action::Update, role("team:t1/owner")),
                Permission::new(Action::Delete, role("team:t1/owner")),
            ]
        );
    }

    #[test]
    fn drops_duplicates_and_keeps_the_clients_order() {
        let got = perms(&[
            "update(\"any\")",
            "read(\"users\")",
            "write(\"any\")",
            "read(\"users\")",
        ]);
        let got: Vec<String> = got.iter().map(Permission::to_string).collect();
        assert_eq!(
            got,
            [
                "update(\"any\")",
                "read(\"users\")",
                "create(\"any\")",
                "delete(\"any\")"
            ]
        );
    }

    #[test]
    fn write_leaves_out_actions_that_do_not_apply_and_explicit_ones_are_refused() {
        let document = [Action::Read, Action::Update, Action::Delete];
        let got = parse_permissions_allowing(&["write(\"user:a\")"], &document).unwrap();
        let got: Vec<Action> = got.iter().map(|p| p.action).collect();
        assert_eq!(got, [Action::Update, Action::Delete]);

        let err = parse_permissions_allowing(&["read(\"any\")", "create(\"any\")"], &document)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid permission #1 `create(\"any\")`: `create` permissions do not apply here; \
             allowed: read, update, delete"
        );
    }

    #[test]
    fn a_single_write_is_refused_where_one_permission_is_expected() {
        let err = "write(\"any\")".parse::<Permission>().unwrap_err();
        assert!(
            err.to_string()
                .contains("stands for create, update and delete")
        );
    }

    #[test]
    fn refuses_other_spellings_with_a_hint_at_what_to_change() {
        for (input, hint) in [
            ("read('any')", "use double quotes"),
            ("read(any)", "must be in double quotes"),
            ("read( \"any\")", "remove the whitespace inside"),
            ("read(\"any\" )", "remove the whitespace inside"),
            (" read(\"any\")", "remove the whitespace around the action"),
            ("read (\"any\")", "remove the whitespace around the action"),
            ("read(\" any\")", "no whitespace"),
            ("READ(\"any\")", "unknown action `READ`"),
            ("execute(\"any\")", "unknown action `execute`"),
            ("read(\"any\"", "expected `)` at the end"),
            ("read", "expected the form action(\"role\")"),
            ("read(\"a\"ny\")", "may not contain `\"`"),
            ("read(\"\")", "the role is empty"),
            (
                "read(\"user:\")",
                "in the role `user:`: the user id is empty",
            ),
            ("read(\"team:t/x/y\")", "at most one `/`"),
        ] {
            let err = parse_permissions(&[input]).unwrap_err();
            assert_eq!(err.code(), "INVALID_PERMISSION");
            assert!(err.to_string().contains(hint), "{input:?}: {err}");
        }
    }

    #[test]
    fn reports_the_position_of_the_bad_entry() {
        let err = parse_permissions(&["read(\"any\")", "read(\"any\") OR 1=1"]).unwrap_err();
        assert_eq!(
            err,
            PermissionError::InvalidPermission {
                index: Some(1),
                permission: "`read(\"any\") OR 1=1`".into(),
                reason: "expected `)` at the end, e.g. read(\"any\")".into(),
            }
        );
    }

    #[test]
    fn refuses_more_than_the_limit_of_permissions() {
        let many = vec!["read(\"any\")"; MAX_PERMISSIONS + 1];
        assert_eq!(
            parse_permissions(&many).unwrap_err(),
            PermissionError::TooManyPermissions {
                count: 101,
                max: 100
            }
        );
        assert_eq!(parse_permissions(&many[1..]).unwrap().len(), 1);
    }

    #[test]
    fn error_messages_quote_a_bounded_escaped_excerpt_of_the_input() {
        let huge = format!("read(\"user:{}\")", "x".repeat(10_000));
        let message = parse_permissions(&[huge]).unwrap_err().to_string();
        assert!(message.len() < 300, "{message}");
        assert!(message.contains("longer than any valid permission"));

        let sneaky = "label:a\u{202e}\n\0💥";
        let message = sneaky.parse::<Role>().unwrap_err().to_string();
        assert!(message.is_ascii(), "{message}");
        assert!(message.contains(r"\u{202e}\n\u{0}\u{1f4a5}"), "{message}");
    }

    /// A small deterministic generator, so the odd-input test needs no crate.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % 1_000_003) as usize
        }
    }

    #[test]
    fn never_panics_and_whatever_it_accepts_prints_back_identically() {
        let pieces = [
            "read",
            "write",
            "create",
            "(",
            ")",
            "\"",
            "'",
            ":",
            "/",
            "user",
            "users",
            "team",
            "member",
            "label",
            "any",
            "guests",
            "verified",
            "unverified",
            "abc",
            "t1",
            "owner",
            " ",
            "\t",
            "",
            "é",
            "💥",
            "\0",
            "\\",
            ",",
            ";",
            "=",
            "-",
            "_",
            ".",
            "OR 1=1",
            "*",
            "role:",
            "\u{202e}",
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for _ in 0..50_000 {
            let n = rng.next() % 9;
            let s: String = (0..n).map(|_| pieces[rng.next() % pieces.len()]).collect();
            if let Ok(r) = s.parse::<Role>() {
                assert_eq!(r.to_string(), s);
                accepted += 1;
            }
            if let Ok(p) = s.parse::<Permission>() {
                assert_eq!(p.to_string(), s);
                accepted += 1;
            }
            let _ = parse_permissions(&[s.as_str()]);
        }
        assert!(accepted > 100, "the generator should hit valid strings too");

        for s in [
            "",
            "(",
            ")",
            "(\"",
            "\")",
            "read(\"",
            "read(\")",
            "read(\"\"\")",
            ":",
            "/",
            ":/",
            "user:/",
            "team:/x",
        ] {
            let _ = s.parse::<Role>();
            let _ = s.parse::<Permission>();
        }
    }

    #[test]
    fn a_guest_holds_any_and_guests() {
        assert_eq!(RoleSet::guest().as_strings(), ["any", "guests"]);
        let names = RoleSet::guest().names();
        assert!(names.contains("any") && names.contains("guests"));
        assert!(!names.contains("any\nguests") && !names.contains("") && !names.contains("users"));
    }

    #[test]
    fn a_user_holds_appwrites_roles() {
        let editor = ["editor".to_string(), "bad role".to_string()];
        let roles = RoleSet::for_user(
            "u1",
            false,
            &[
                TeamMembership {
                    team_id: "t1",
                    membership_id: "m1",
                    roles: &editor,
                },
                TeamMembership {
                    team_id: "t2",
                    membership_id: "m2",
                    roles: &[],
                },
            ],
            &["vip".to_string(), "not-a-label".to_string()],
        );
        assert_eq!(
            roles.as_strings(),
            [
                "any",
                "users",
                "users/unverified",
                "user:u1",
                "user:u1/unverified",
                "team:t1",
                "team:t1/editor",
                "team:t2",
                "member:m1",
                "member:m2",
                "label:vip",
            ]
        );
        assert!(roles.contains(&role("team:t1/editor")));
        assert!(!roles.contains(&role("team:t1/owner")));
        assert!(!roles.contains(&role("guests")));
        assert_eq!(roles.iter().count(), 11);

        let verified = verified_owner();
        assert!(verified.contains(&role("users/verified")));
        assert!(verified.contains(&role("user:u1/verified")));
        assert!(!verified.contains(&role("users/unverified")));
    }

    #[test]
    fn a_malformed_user_id_from_storage_grants_no_user_roles() {
        let roles = RoleSet::for_user("../x", true, &[], &[]);
        assert_eq!(roles.as_strings(), ["any", "users", "users/verified"]);
    }

    #[test]
    fn allows_only_when_a_permission_for_that_action_names_a_held_role() {
        let list = perms(&[
            "read(\"team:t1\")",
            "update(\"user:u1\")",
            "delete(\"team:t1/admin\")",
        ]);
        let owner = verified_owner();
        assert!(allows(&owner, Action::Read, &list));
        assert!(allows(&owner, Action::Update, &list));
        assert!(!allows(&owner, Action::Delete, &list));
        assert!(!allows(&owner, Action::Create, &list));
        assert!(!allows(&RoleSet::guest(), Action::Read, &list));
    }

    #[test]
    fn any_allows_everyone_and_no_permissions_allow_no_one() {
        let public = perms(&["read(\"any\")"]);
        assert!(allows(&RoleSet::guest(), Action::Read, &public));
        assert!(allows(&verified_owner(), Action::Read, &public));
        assert!(allows(&set(&[]), Action::Read, &public));
        assert!(!allows(&verified_owner(), Action::Read, &[]));
    }

    #[test]
    fn users_permissions_do_not_reach_guests_and_guests_permissions_do_not_reach_users() {
        let list = perms(&["read(\"users\")", "create(\"guests\")"]);
        assert!(!allows(&RoleSet::guest(), Action::Read, &list));
        assert!(allows(&RoleSet::guest(), Action::Create, &list));
        assert!(allows(&verified_owner(), Action::Read, &list));
        assert!(!allows(&verified_owner(), Action::Create, &list));
    }

    #[test]
    fn a_user_can_grant_exactly_the_roles_it_holds() {
        let owner = verified_owner();
        for granted in [
            "any",
            "users",
            "users/verified",
            "user:u1",
            "user:u1/verified",
            "team:t1",
            "team:t1/owner",
            "member:m1",
            "label:vip",
        ] {
            let list = perms(&[&format!("write(\"{granted}\")")]);
            assert_eq!(check_grantable(&owner, &list), Ok(()), "{granted}");
        }
        for refused in [
            "guests",
            "users/unverified",
            "user:u2",
            "user:u1/unverified",
            "team:t2",
            "team:t1/admin",
            "member:m2",
            "label:staff",
        ] {
            let list = perms(&["read(\"any\")", &format!("read(\"{refused}\")")]);
            let err = check_grantable(&owner, &list).unwrap_err();
            assert_eq!(err.code(), "PERMISSION_DENIED");
            assert!(err.to_string().contains(refused), "{refused}: {err}");
        }
    }

    #[test]
    fn a_guest_can_grant_any_and_guests_only() {
        let guest = RoleSet::guest();
        assert!(check_grantable(&guest, &perms(&["read(\"any\")", "read(\"guests\")"])).is_ok());
        assert!(check_grantable(&guest, &perms(&["read(\"users\")"])).is_err());
    }

    #[test]
    fn a_refused_grant_says_which_permission_and_what_could_be_granted() {
        let err = check_grantable(&RoleSet::guest(), &perms(&["update(\"user:x\")"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "you cannot grant `update(\"user:x\")`: you can only grant roles you hold \
             yourself (yours: any, guests)"
        );
        let many: RoleSet = (0..30)
            .map(|i| Role::label(&format!("l{i}")).unwrap())
            .collect();
        let err = check_grantable(&many, &perms(&["read(\"users\")"])).unwrap_err();
        assert!(err.to_string().ends_with(", and 11 more)"), "{err}");
    }

    #[test]
    fn roles_and_permissions_serialize_as_their_canonical_strings() {
        let list = perms(&["read(\"user:abc\")", "update(\"team:t/owner\")"]);
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(json, r#"["read(\"user:abc\")","update(\"team:t/owner\")"]"#);
        assert_eq!(
            serde_json::from_str::<Vec<Permission>>(&json).unwrap(),
            list
        );

        let roles = vec![role("users/verified"), role("label:vip")];
        let json = serde_json::to_string(&roles).unwrap();
        assert_eq!(json, r#"["users/verified","label:vip"]"#);
        assert_eq!(serde_json::from_str::<Vec<Role>>(&json).unwrap(), roles);

        let err = serde_json::from_str::<Role>(r#""user:""#).unwrap_err();
        assert!(err.to_string().contains("the user id is empty"), "{err}");
        assert!(serde_json::from_str::<Permission>("42").is_err());
        assert_eq!(
            serde_json::to_string(&Action::Delete).unwrap(),
            r#""delete""#
        );
    }

    #[test]
    fn permission_rows_are_one_per_distinct_action_and_role() {
        let mut list = perms(&["read(\"any\")", "write(\"user:u1\")"]);
        list.push(list[0].clone());
        assert_eq!(
            permission_rows("doc1", &list),
            [
                ("doc1".to_string(), "read", "any".to_string()),
                ("doc1".to_string(), "create", "user:u1".to_string()),
                ("doc1".to_string(), "update", "user:u1".to_string()),
                ("doc1".to_string(), "delete", "user:u1".to_string()),
            ]
        );
    }

    #[test]
    fn a_sole_reader_is_the_one_role_that_may_read() {
        let sole = |list: &[&str]| sole_reader(&perms(list));
        assert_eq!(sole(&[]), None);
        assert_eq!(sole(&["write(\"user:u1\")"]), None, "write does not read");
        assert_eq!(
            sole(&[
                "read(\"user:u1\")",
                "write(\"user:u1\")",
                "read(\"user:u1\")"
            ]),
            Some("user:u1".into())
        );
        assert_eq!(
            sole(&["update(\"team:t1\")", "read(\"user:u2\")"]),
            Some("user:u2".into()),
            "other roles' other actions do not count"
        );
        assert_eq!(sole(&["read(\"any\")"]), Some("any".into()));
        assert_eq!(sole(&["read(\"users\")"]), Some("users".into()));
        assert_eq!(sole(&["read(\"label:vip\")"]), Some("label:vip".into()));
        assert_eq!(
            sole(&["read(\"team:t1/owner\")"]),
            Some("team:t1/owner".into())
        );
        assert_eq!(sole(&["read(\"user:u1\")", "read(\"user:u2\")"]), None);
        assert_eq!(
            sole(&["read(\"team:t1\")", "read(\"team:t1/owner\")"]),
            None
        );
        assert_eq!(
            sole(&["read(\"user:u1\")", "read(\"user:u1/verified\")"]),
            None
        );
    }

    #[test]
    fn permission_grants_are_one_row_per_role_and_read_back_whole() {
        let mut list = perms(&["read(\"any\")", "write(\"user:u1\")", "read(\"user:u1\")"]);
        list.push(list[0].clone());
        let grants = permission_grants("doc1", &list);
        assert_eq!(
            grants,
            [
                ("doc1".to_string(), "any".to_string(), 1),
                ("doc1".to_string(), "user:u1".to_string(), 1 | 2 | 4 | 8),
            ]
        );
        let mut back: Vec<Permission> = grants
            .iter()
            .flat_map(|(_, role, actions)| granted(role, *actions).unwrap())
            .collect();
        let mut expected = list.clone();
        for list in [&mut back, &mut expected] {
            list.sort_by_key(|p| (p.action.as_str(), p.role.to_string()));
            list.dedup();
        }
        assert_eq!(back, expected);
        assert!(granted("any", 16).unwrap().is_empty());
        assert!(granted("nobody:x", 1).is_err());
    }

    #[test]
    fn the_filter_binds_every_value_instead_of_splicing_it() {
        let mut builder = QueryBuilder::<Any>::new("SELECT d.id FROM docs d WHERE ");
        let roles = set(&["team:t1/owner", "label:vip"]);
        push_permission_filter(&mut builder, "d.id", "docs_perms", Action::Read, &roles).unwrap();
        assert_eq!(
            builder.sql(),
            "SELECT d.id FROM docs d WHERE EXISTS (SELECT 1 FROM docs_perms nimbus_perm \
             WHERE nimbus_perm.resource_id = d.id AND nimbus_perm.role IN (?, ?, ?) \
             AND (nimbus_perm.actions & ?) <> 0)"
        );
    }

    #[test]
    fn the_grants_side_binds_every_value_and_lists_each_resource_once() {
        let roles = set(&["team:t1/owner", "label:vip"]);
        let mut builder = QueryBuilder::<Any>::new("SELECT r.resource_id FROM ");
        push_permitted_resources(
            &mut builder,
            "docs_perms",
            Action::Read,
            &roles,
            SideRows::All,
        )
        .unwrap();
        assert_eq!(
            builder.sql(),
            "SELECT r.resource_id FROM (SELECT DISTINCT nimbus_perm.resource_id FROM docs_perms \
             nimbus_perm WHERE nimbus_perm.role IN (?, ?, ?) AND (nimbus_perm.actions & ?) <> 0)"
        );
        let mut builder = QueryBuilder::<Any>::new("");
        push_permitted_resources(
            &mut builder,
            "docs_perms",
            Action::Read,
            &roles,
            SideRows::Shared,
        )
        .unwrap();
        assert_eq!(
            builder.sql(),
            "(SELECT DISTINCT nimbus_perm.resource_id FROM docs_perms nimbus_perm \
             WHERE nimbus_perm.role IN (?, ?, ?) AND nimbus_perm.sole = 0 \
             AND (nimbus_perm.actions & ?) <> 0)"
        );
        let mut builder = QueryBuilder::<Any>::new("");
        push_grant_count(&mut builder, "docs_perms", &roles, SideRows::All, 1000).unwrap();
        assert_eq!(
            builder.sql(),
            "SELECT COUNT(*) FROM (SELECT 1 FROM docs_perms WHERE role IN (?, ?, ?) LIMIT ?) \
             nimbus_grants"
        );
        let mut builder = QueryBuilder::<Any>::new("");
        push_grant_count(&mut builder, "docs_perms", &roles, SideRows::Shared, 1000).unwrap();
        assert_eq!(
            builder.sql(),
            "SELECT COUNT(*) FROM (SELECT 1 FROM docs_perms WHERE role IN (?, ?, ?) \
             AND sole = 0 LIMIT ?) nimbus_grants"
        );
        for table in ["docs; DROP TABLE x", "", "docs.perms"] {
            let mut builder = QueryBuilder::<Any>::new("");
            assert!(
                push_permitted_resources(&mut builder, table, Action::Read, &roles, SideRows::All)
                    .is_err()
            );
            assert!(push_grant_count(&mut builder, table, &roles, SideRows::All, 1).is_err());
            assert_eq!(builder.sql(), "");
        }
    }

    #[tokio::test]
    async fn the_grants_side_yields_the_ids_the_filter_accepts_each_once() {
        let pool = sqlite_with_documents().await;
        let u1 = RoleSet::for_user("u1", false, &[], &[]);
        for (action, roles) in [
            (Action::Read, RoleSet::guest()),
            (Action::Read, u1.clone()),
            (Action::Update, u1),
        ] {
            let mut builder = QueryBuilder::<Any>::new("SELECT r.resource_id FROM ");
            push_permitted_resources(&mut builder, "docs_perms", action, &roles, SideRows::All)
                .unwrap();
            builder.push(" r ORDER BY r.resource_id");
            let ids: Vec<String> = builder.build_query_scalar().fetch_all(&pool).await.unwrap();
            assert_eq!(ids, visible(&pool, action, &roles).await, "{action:?}");
        }
    }

    #[test]
    fn the_filter_refuses_identifiers_that_are_not_plain_and_appends_nothing() {
        let roles = RoleSet::guest();
        for (column, table) in [
            ("d.id", "docs; DROP TABLE x"),
            ("d.id", ""),
            ("d.id", "1docs"),
            ("d.id", "docs.perms"),
            ("d.id", "dócs"),
            ("id", "docs_perms"),
            ("d.id OR 1=1", "docs_perms"),
            ("d.i\"d", "docs_perms"),
            ("d.", "docs_perms"),
            ("d.x.y", "docs_perms"),
            ("nimbus_perm.id", "docs_perms"),
        ] {
            let mut builder = QueryBuilder::<Any>::new("SELECT 1 WHERE ");
            let err = push_permission_filter(&mut builder, column, table, Action::Read, &roles)
                .unwrap_err();
            assert_eq!(err.code(), "INTERNAL", "{column} {table}");
            assert_eq!(builder.sql(), "SELECT 1 WHERE ", "{column} {table}");
        }
        let mut builder = QueryBuilder::<Any>::new("");
        let long = "t".repeat(65);
        assert!(push_permission_filter(&mut builder, "d.id", &long, Action::Read, &roles).is_err());
    }

    async fn sqlite_with_documents() -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        // One connection: each connection to `sqlite::memory:` is its own database.
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        for statement in [
            "CREATE TABLE docs (id TEXT PRIMARY KEY)",
            "CREATE TABLE docs_perms (resource_id TEXT NOT NULL, role TEXT NOT NULL, \
             actions INTEGER NOT NULL, PRIMARY KEY (resource_id, role)) WITHOUT ROWID",
            "CREATE INDEX docs_perms_by_role ON docs_perms (role, resource_id)",
        ] {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        let documents: [(&str, &[&str]); 6] = [
            ("public", &["read(\"any\")"]),
            ("members", &["read(\"users\")", "write(\"user:u1\")"]),
            ("u1-only", &["read(\"user:u1\")"]),
            ("u2-only", &["read(\"user:u2\")", "update(\"user:u1\")"]),
            (
                "owners",
                &["read(\"team:t1/owner\")", "delete(\"team:t1\")"],
            ),
            ("nobody", &[]),
        ];
        for (id, list) in documents {
            sqlx::query("INSERT INTO docs (id) VALUES (?)")
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
            for (resource, role, actions) in permission_grants(id, &perms(list)) {
                sqlx::query("INSERT INTO docs_perms (resource_id, role, actions) VALUES (?, ?, ?)")
                    .bind(resource)
                    .bind(role)
                    .bind(actions)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        }
        pool
    }

    async fn visible(pool: &sqlx::AnyPool, action: Action, roles: &RoleSet) -> Vec<String> {
        let mut builder = QueryBuilder::<Any>::new("SELECT d.id FROM docs d WHERE ");
        push_permission_filter(&mut builder, "d.id", "docs_perms", action, roles).unwrap();
        builder.push(" ORDER BY d.id");
        builder
            .build_query_scalar::<String>()
            .fetch_all(pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_filter_returns_exactly_the_ids_each_role_set_may_read() {
        let pool = sqlite_with_documents().await;
        let u1 = RoleSet::for_user("u1", false, &[], &[]);
        let u2 = RoleSet::for_user("u2", true, &[], &[]);
        let injected = set(&["label:x"]);
        assert_eq!(
            visible(&pool, Action::Read, &RoleSet::guest()).await,
            ["public"]
        );
        assert_eq!(
            visible(&pool, Action::Read, &u1).await,
            ["members", "public", "u1-only"]
        );
        assert_eq!(
            visible(&pool, Action::Read, &u2).await,
            ["members", "public", "u2-only"]
        );
        assert_eq!(
            visible(&pool, Action::Read, &verified_owner()).await,
            ["members", "owners", "public", "u1-only"]
        );
        assert_eq!(visible(&pool, Action::Read, &injected).await, ["public"]);
    }

    #[tokio::test]
    async fn the_filter_checks_the_action_it_was_asked_for() {
        let pool = sqlite_with_documents().await;
        let u1 = RoleSet::for_user("u1", false, &[], &[]);
        assert_eq!(
            visible(&pool, Action::Update, &u1).await,
            ["members", "u2-only"]
        );
        assert_eq!(visible(&pool, Action::Delete, &u1).await, ["members"]);
        assert_eq!(
            visible(&pool, Action::Delete, &verified_owner()).await,
            ["members", "owners"]
        );
        assert!(
            visible(&pool, Action::Create, &RoleSet::guest())
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn the_filter_agrees_with_allows_for_every_document() {
        let pool = sqlite_with_documents().await;
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT resource_id, role, actions FROM docs_perms")
                .fetch_all(&pool)
                .await
                .unwrap();
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM docs ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
        let role_sets = [
            RoleSet::guest(),
            RoleSet::for_user("u1", true, &[], &[]),
            RoleSet::for_user("u2", false, &[], &["vip".into()]),
            verified_owner(),
        ];
        for roles in &role_sets {
            for action in Action::ALL {
                let expected: Vec<String> = ids
                    .iter()
                    .filter(|id| {
                        let stored: Vec<Permission> = rows
                            .iter()
                            .filter(|(r, _, _)| r == *id)
                            .flat_map(|(_, r, a)| granted(r, *a).unwrap())
                            .collect();
                        allows(roles, action, &stored)
                    })
                    .cloned()
                    .collect();
                assert_eq!(visible(&pool, action, roles).await, expected, "{action}");
            }
        }
    }
}
