//! Teams and memberships. A confirmed membership gives its user the roles
//! `team:T`, `team:T/ROLE` per role and `member:M`; members with the `owner` role
//! manage the team. Servers (keys with `teams.*` scopes) manage every team. An
//! owner's invitation by email to an address without an account names the address
//! only: no user exists until the invitation is accepted.

pub mod schema;
pub mod service;
pub mod store;

pub use schema::register;

/// The team role that may rename and delete a team and manage its memberships.
pub const OWNER: &str = "owner";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub project_id: String,
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub project_id: String,
    pub id: String,
    pub team_id: String,
    /// The member; none while an invitation by email waits for an address that has
    /// no user yet (the user is created when it is accepted).
    pub user_id: Option<String>,
    /// The invited address, while `user_id` is none.
    pub email: Option<String>,
    /// The name the invitee's user gets, while `user_id` is none.
    pub invite_name: Option<String>,
    pub roles: Vec<String>,
    pub confirmed: bool,
    pub joined_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}
