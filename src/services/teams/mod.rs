//! Teams and memberships. A confirmed membership gives its user the roles
//! `team:T`, `team:T/ROLE` per role and `member:M`; members with the `owner` role
//! manage the team. Servers (keys with `teams.*` scopes) manage every team. An
//! owner's invitation by email to an address without an account names the address
//! only: no user exists until the invitation is accepted.

pub mod schema;
pub mod service;
pub mod store;

pub use crate::auth::principal::Membership;
pub use schema::register;

/// The team role that may rename and delete a team and manage its memberships.
pub const OWNER: &str = "owner";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub project_id: String,
    pub id: String,
    pub name: String,
    /// The team's preferences as JSON text; none set: `None` (read as `{}`).
    pub prefs: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}
