//! Users and their sessions: the people who sign in to a project's apps. The
//! `users` API is the server side (API keys with `users.*` scopes); the `account`
//! service is the same data seen by the signed-in user.

pub mod schema;
pub mod service;
pub mod store;

pub use schema::register;

/// A user of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub project_id: String,
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Stored form of the password hash; `None` for anonymous users.
    pub password_hash: Option<String>,
    pub password_updated_at: Option<i64>,
    pub blocked: bool,
    pub email_verified: bool,
    pub phone_verified: bool,
    pub labels: Vec<String>,
    pub prefs: serde_json::Map<String, serde_json::Value>,
    pub accessed_at: Option<i64>,
    /// Whether signing in needs a second factor.
    pub mfa: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl User {
    /// Verified as Appwrite counts it: by email or by phone.
    pub fn verified(&self) -> bool {
        self.email_verified || self.phone_verified
    }

    /// An anonymous user has neither email nor password.
    pub fn anonymous(&self) -> bool {
        self.email.is_none() && self.password_hash.is_none()
    }
}

/// A signed-in device of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub project_id: String,
    pub id: String,
    pub user_id: String,
    /// How the session was created: `email`, `anonymous`, `server`.
    pub provider: String,
    pub ip: String,
    pub user_agent: String,
    pub expires_at: i64,
    /// Whether the session passed the second factor.
    pub mfa_verified: bool,
    pub created_at: i64,
    pub updated_at: i64,
}
