//! Users and their sessions: the people who sign in to a project's apps. The
//! `users` API is the server side (API keys with `users.*` scopes); the `account`
//! service is the same data seen by the signed-in user.

pub mod schema;
pub mod service;
pub mod store;

use crate::AppState;
use crate::auth::principal::Membership;
use crate::error::AppResult;

pub use crate::auth::principal::{Session, User};
pub use schema::register;

/// What users needs of the teams service, which owns memberships: a session's roles
/// come from its user's confirmed memberships, and `userMemberships` shows all of
/// them. The registry implements it with the teams service and hands it to every
/// request as `AppState::memberships`, so users does not name teams.
#[async_trait::async_trait]
pub trait TeamMemberships: Send + Sync + 'static {
    /// The memberships of a user: only the confirmed ones, or invitations too.
    async fn of_user(
        &self,
        state: &AppState,
        project_id: &str,
        user_id: &str,
        confirmed_only: bool,
    ) -> AppResult<Vec<Membership>>;

    /// A membership as the schema's `Membership` type shows it.
    fn value(&self, membership: &Membership) -> async_graphql::Value;

    /// The `delete` events of every membership of a user, read (and held) on
    /// `conn`, the transaction that deletes the user and with them, by foreign
    /// key, their memberships: each team hears of it as of any membership
    /// deleted.
    async fn gone_with_user(
        &self,
        conn: &mut sqlx::AnyConnection,
        dialect: crate::db::Dialect,
        project_id: &str,
        user_id: &str,
    ) -> AppResult<Vec<crate::bus::BusMessage>>;
}
