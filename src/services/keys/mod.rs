//! API keys: server-side credentials of a project, with scopes and an optional
//! expiry. Secrets are shown once, at creation, and stored only as digests. The
//! first start of a server creates one `admin` key and prints it.

pub mod schema;
pub mod service;
pub mod store;

use crate::auth::scopes::Scope;

pub use schema::register;

/// An API key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub project_id: String,
    pub name: String,
    /// In the order they were stored: by name.
    pub scopes: Vec<Scope>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}
