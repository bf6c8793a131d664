//! Projects: the isolated tenants of a server. A `default` project always exists;
//! admin keys create, change and delete the others. Every other service keys its
//! rows by project id, with `ON DELETE CASCADE` to `projects`, so deleting a project
//! deletes everything in it.

pub mod schema;
pub mod service;
pub mod store;

pub use schema::register;

/// The project every server has, addressed when a request names none.
pub const DEFAULT_PROJECT: &str = "default";

/// A project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub description: String,
    pub auth: AuthSettings,
    pub created_at: i64,
    pub updated_at: i64,
}

/// How the project's users sign in: password rules, sessions, enabled methods.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthSettings {
    /// Fewest characters a password may have.
    pub password_min_length: u32,
    /// How many earlier passwords a new one may not repeat (0: no check).
    pub password_history: u32,
    /// Refuse passwords found in a list of commonly used passwords.
    pub password_dictionary: bool,
    /// Refuse passwords containing the user's name, email, phone or id.
    pub personal_data_check: bool,
    /// Most sessions a user may hold; signing in past it ends the oldest.
    pub max_sessions: u32,
    /// How long a session lasts, in seconds.
    pub session_length_secs: u64,
    /// Whether sign-up and sign-in with email and password are enabled.
    pub email_password: bool,
    /// Whether anonymous sessions are enabled.
    pub anonymous: bool,
    /// Whether sign-in by a link sent by email is enabled.
    pub magic_url: bool,
    /// Whether sign-in by a code sent by email is enabled.
    pub email_otp: bool,
    /// Whether callers without a user (guests) may announce themselves on presence
    /// channels; watching needs no user either way.
    pub presence_guests: bool,
    /// Host names that links in emails (verification, recovery, magic URL) may point
    /// to, so nobody can have the server mail a user a link to another site.
    pub redirect_hosts: Vec<String>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            password_min_length: 8,
            password_history: 0,
            password_dictionary: false,
            personal_data_check: false,
            max_sessions: 10,
            session_length_secs: 365 * 24 * 3600,
            email_password: true,
            anonymous: true,
            magic_url: true,
            email_otp: true,
            presence_guests: false,
            redirect_hosts: vec!["localhost".to_string()],
        }
    }
}

impl Project {
    /// A project that exists only in memory, for printing a schema without a database.
    pub fn placeholder(id: &str) -> Self {
        Project {
            id: id.to_string(),
            name: id.to_string(),
            description: String::new(),
            auth: AuthSettings::default(),
            created_at: 0,
            updated_at: 0,
        }
    }
}
