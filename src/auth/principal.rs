//! The records a caller is made of: the project it addresses, the signed-in user,
//! that user's session and team memberships (which give it roles). `auth` builds
//! the caller and checks permissions from them; the `projects`, `users` and `teams`
//! services own their tables and logic and re-export these types.

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
    /// Whether anyone may fetch the project's avatars (the default); when off, only
    /// signed-in users and API keys may.
    pub avatars_public: bool,
    /// Host names that links in emails (verification, recovery, magic URL) may point
    /// to, so nobody can have the server mail a user a link to another site.
    pub redirect_hosts: Vec<String>,
    /// Whether a new password ends the user's other sessions (all of them when a
    /// server or a recovery link set it). A project stored before the setting
    /// existed reads it as on: that was its behaviour.
    pub invalidate_sessions: bool,
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
            avatars_public: true,
            redirect_hosts: vec!["localhost".to_string()],
            invalidate_sessions: true,
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

/// A user's place in a team (or an invitation to one): its roles are the user's
/// roles in that team once confirmed.
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
    /// When the invitation was last sent (for a member added by a server: when it
    /// was added); its link expires a week after.
    pub invited_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}
