//! SQL of users and sessions. Every statement is scoped by project id.

use sqlx::{Any, AnyPool, Executor, FromRow};

use crate::db::{Dialect, Page};

use super::{Session, User};

// Kinds of rows in `tokens`, the ones `account` mails. Kept with the table, since
// `users` voids them too when it changes an address.
pub(crate) const VERIFICATION: &str = "verification";
pub(crate) const RECOVERY: &str = "recovery";
pub(crate) const MAGIC_URL: &str = "magic-url";
pub(crate) const EMAIL_OTP: &str = "email-otp";
/// The tokens mailed to the account's address: a change of address voids them.
pub(crate) const MAILED_TOKENS: [&str; 4] = [VERIFICATION, RECOVERY, MAGIC_URL, EMAIL_OTP];

#[derive(Debug, FromRow)]
pub struct UserRow {
    pub project_id: String,
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub password_hash: Option<String>,
    pub password_history: Option<Vec<u8>>,
    pub password_updated_at: Option<i64>,
    pub status: i16,
    pub email_verified: i16,
    pub phone_verified: i16,
    pub labels: String,
    pub prefs: Option<Vec<u8>>,
    pub accessed_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub mfa: i16,
}

impl UserRow {
    pub fn to_user(&self) -> User {
        User {
            project_id: self.project_id.clone(),
            id: self.id.clone(),
            name: self.name.clone(),
            email: self.email.clone(),
            phone: self.phone.clone(),
            password_hash: self.password_hash.clone(),
            password_updated_at: self.password_updated_at,
            blocked: self.status == 0,
            email_verified: self.email_verified != 0,
            phone_verified: self.phone_verified != 0,
            // Both are written only by this module from valid JSON; a hand-edited row
            // that no longer parses reads as empty rather than failing every request.
            labels: serde_json::from_str(&self.labels).unwrap_or_default(),
            prefs: self
                .prefs
                .as_deref()
                .and_then(|bytes| serde_json::from_slice(bytes).ok())
                .unwrap_or_default(),
            accessed_at: self.accessed_at,
            mfa: self.mfa != 0,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// Stored hashes of earlier passwords, most recent first.
    pub fn password_history(&self) -> Vec<String> {
        self.password_history
            .as_deref()
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
            .unwrap_or_default()
    }
}

const USER_COLUMNS: &str = "project_id, id, name, email, phone, password_hash, password_history, \
     password_updated_at, status, email_verified, phone_verified, labels, prefs, accessed_at, \
     created_at, updated_at";

/// What `SELECT`s read: the inserted columns and those managed by their own statements.
const USER_SELECT: &str = "project_id, id, name, email, phone, password_hash, password_history, \
     password_updated_at, status, email_verified, phone_verified, labels, prefs, accessed_at, \
     created_at, updated_at, mfa";

fn json_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec())
}

pub async fn insert_user<'e>(
    db: impl Executor<'e, Database = Any>,
    user: &User,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO users ({USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&user.project_id)
    .bind(&user.id)
    .bind(&user.name)
    .bind(&user.email)
    .bind(&user.phone)
    .bind(&user.password_hash)
    .bind(None::<Vec<u8>>)
    .bind(user.password_updated_at)
    .bind(i16::from(!user.blocked))
    .bind(i16::from(user.email_verified))
    .bind(i16::from(user.phone_verified))
    .bind(serde_json::to_string(&user.labels).unwrap_or_else(|_| "[]".into()))
    .bind(json_bytes(&user.prefs))
    .bind(user.accessed_at)
    .bind(user.created_at)
    .bind(user.updated_at)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn find_user<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    id: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {USER_SELECT} FROM users WHERE project_id = ? AND id = ?"
    ))
    .bind(project_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub async fn find_user_by_email<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    email: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {USER_SELECT} FROM users WHERE project_id = ? AND email = ?"
    ))
    .bind(project_id)
    .bind(email)
    .fetch_optional(pool)
    .await
}

/// Users by id, optionally those whose name, email, phone or id starts with
/// `search` (Appwrite's search finds users by their id too).
pub async fn list_users(
    pool: &AnyPool,
    dialect: Dialect,
    project_id: &str,
    search: Option<&str>,
    page: &Page,
) -> Result<Vec<UserRow>, sqlx::Error> {
    let (keyset, page_binds) = page.keyset_sql("id");
    let (filter, binds) = searched(dialect, search);
    let sql = format!("SELECT {USER_SELECT} FROM users WHERE project_id = ?{filter}{keyset}");
    let query = sqlx::query_as(&sql).bind(project_id);
    binds
        .iter()
        .chain(page_binds.iter())
        .fold(query, |q, b| q.bind(b))
        .fetch_all(pool)
        .await
}

/// The condition of a search of users by the start of their name, email, phone
/// or id.
fn searched(dialect: Dialect, search: Option<&str>) -> (String, Vec<String>) {
    search.map_or_else(Default::default, |search| {
        dialect.starts_with_any(&["name", "email", "phone", "id"], search)
    })
}

pub async fn count_users(
    pool: &AnyPool,
    dialect: Dialect,
    project_id: &str,
    search: Option<&str>,
) -> Result<i64, sqlx::Error> {
    let (filter, binds) = searched(dialect, search);
    let sql = format!("SELECT COUNT(*) FROM users WHERE project_id = ?{filter}");
    let query = sqlx::query_scalar(&sql).bind(project_id);
    binds
        .iter()
        .fold(query, |q, b| q.bind(b))
        .fetch_one(pool)
        .await
}

/// Writes every mutable field of the user; false when it does not exist.
/// Writes `user` over the row as it was read (`read_at`, its `updated_at` then):
/// false when the row changed since (or is gone), so that a change prepared from an
/// older copy never puts back what another write changed meanwhile (a block, a
/// label removed).
pub async fn update_user<'e>(
    db: impl Executor<'e, Database = Any>,
    user: &User,
    password_history: &[String],
    read_at: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE users SET name = ?, email = ?, phone = ?, password_hash = ?, password_history = ?, \
         password_updated_at = ?, status = ?, email_verified = ?, phone_verified = ?, labels = ?, \
         prefs = ?, mfa = ?, updated_at = ? WHERE project_id = ? AND id = ? AND updated_at = ?",
    )
    .bind(&user.name)
    .bind(&user.email)
    .bind(&user.phone)
    .bind(&user.password_hash)
    .bind(json_bytes(&password_history))
    .bind(user.password_updated_at)
    .bind(i16::from(!user.blocked))
    .bind(i16::from(user.email_verified))
    .bind(i16::from(user.phone_verified))
    .bind(serde_json::to_string(&user.labels).unwrap_or_else(|_| "[]".into()))
    .bind(json_bytes(&user.prefs))
    .bind(i16::from(user.mfa))
    .bind(user.updated_at)
    .bind(&user.project_id)
    .bind(&user.id)
    .bind(read_at)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// Voids the links of a user's pending team invitations (the team's owners can
/// send new ones): an invitation link signs its holder in as the user, so one
/// mailed to an address the user has left, or read by whoever knew the old
/// password, must not outlive the change. The table is teams'; the change that
/// calls for it is the user's, in its transaction.
pub async fn void_invitation_links<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    user_id: &str,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE memberships SET invite_secret_hash = NULL \
         WHERE project_id = ? AND user_id = ? AND confirmed = 0",
    )
    .bind(project_id)
    .bind(user_id)
    .execute(db)
    .await
    .map(|r| r.rows_affected())
}

/// Replaces a password's hash with a stronger one of the same password, unless the
/// password changed since `old` was read.
pub async fn rehash_password(
    pool: &AnyPool,
    project_id: &str,
    id: &str,
    old: &str,
    new: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE users SET password_hash = ? WHERE project_id = ? AND id = ? AND password_hash = ?",
    )
    .bind(new)
    .bind(project_id)
    .bind(id)
    .bind(old)
    .execute(pool)
    .await
    .map(|r| r.rows_affected() == 1)
}

pub async fn touch_user(
    pool: &AnyPool,
    project_id: &str,
    id: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET accessed_at = ? WHERE project_id = ? AND id = ?")
        .bind(at)
        .bind(project_id)
        .bind(id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Deletes the user and, by cascade, their sessions; false when it did not exist.
pub async fn delete_user<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM users WHERE project_id = ? AND id = ?")
        .bind(project_id)
        .bind(id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() == 1)
}

#[derive(Debug, FromRow)]
pub struct SessionRow {
    pub project_id: String,
    pub id: String,
    pub user_id: String,
    pub secret_hash: String,
    pub provider: String,
    pub ip: String,
    pub user_agent: String,
    pub expires_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub mfa_verified: i16,
}

impl SessionRow {
    pub fn to_session(&self) -> Session {
        Session {
            project_id: self.project_id.clone(),
            id: self.id.clone(),
            user_id: self.user_id.clone(),
            provider: self.provider.clone(),
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
            expires_at: self.expires_at,
            mfa_verified: self.mfa_verified != 0,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

const SESSION_SELECT: &str = "project_id, id, user_id, secret_hash, provider, ip, user_agent, \
     expires_at, created_at, updated_at, mfa_verified";

const SESSION_COLUMNS: &str = "project_id, id, user_id, secret_hash, provider, ip, user_agent, expires_at, created_at, updated_at";

pub async fn insert_session<'e>(
    db: impl Executor<'e, Database = Any>,
    session: &Session,
    secret_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&session.project_id)
    .bind(&session.id)
    .bind(&session.user_id)
    .bind(secret_hash)
    .bind(&session.provider)
    .bind(&session.ip)
    .bind(&session.user_agent)
    .bind(session.expires_at)
    .bind(session.created_at)
    .bind(session.updated_at)
    .execute(db)
    .await
    .map(|_| ())
}

/// Sets a session's end and update time; false when it is gone.
pub async fn extend_session<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    session: &Session,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE sessions SET expires_at = ?, updated_at = ? WHERE project_id = ? AND id = ?",
    )
    .bind(session.expires_at)
    .bind(session.updated_at)
    .bind(&session.project_id)
    .bind(&session.id)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

pub async fn find_session(
    pool: &AnyPool,
    project_id: &str,
    id: &str,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {SESSION_SELECT} FROM sessions WHERE project_id = ? AND id = ?"
    ))
    .bind(project_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// A user's sessions, newest first.
pub async fn list_sessions<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    user_id: &str,
) -> Result<Vec<SessionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {SESSION_SELECT} FROM sessions WHERE project_id = ? AND user_id = ? \
         ORDER BY created_at DESC, id DESC"
    ))
    .bind(project_id)
    .bind(user_id)
    .fetch_all(db)
    .await
}

/// Deletes one session of a user; false when there was none.
pub async fn delete_session<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    user_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE project_id = ? AND user_id = ? AND id = ?")
        .bind(project_id)
        .bind(user_id)
        .bind(id)
        .execute(db)
        .await
        .map(|r| r.rows_affected() == 1)
}

/// Deletes the user's sessions of `provider` that expired by `now`: those nothing
/// else ends (no sign-in trims them), such as the sessions of a server's JWTs.
pub async fn delete_expired_sessions<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    user_id: &str,
    provider: &str,
    now: i64,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "DELETE FROM sessions WHERE project_id = ? AND user_id = ? AND provider = ? AND expires_at <= ?",
    )
    .bind(project_id)
    .bind(user_id)
    .bind(provider)
    .bind(now)
    .execute(db)
    .await
    .map(|r| r.rows_affected())
}

/// Takes from an account whose email was never verified everything that signs in
/// without that email: its password (and their history), second factor, sessions
/// and linked provider accounts, and marks the email verified. For when the owner of
/// the mailbox proves it: whoever registered the address before them keeps nothing.
/// Callers end the sessions one by one first, to announce each; the sessions are
/// deleted here all the same, so none is ever left behind. Its `updated_at` is
/// the change's to write (over the version it read), in the same transaction.
pub async fn claim_unverified_account(
    tx: &mut sqlx::Transaction<'_, Any>,
    project_id: &str,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET password_hash = NULL, password_history = NULL, password_updated_at = NULL, \
         mfa = 0, totp_secret = NULL, totp_verified = 0, totp_last_step = NULL, recovery_codes = NULL, \
         email_verified = 1 WHERE project_id = ? AND id = ?",
    )
    .bind(project_id)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM sessions WHERE project_id = ? AND user_id = ?")
        .bind(project_id)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM identities WHERE project_id = ? AND user_id = ?")
        .bind(project_id)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[derive(Debug, FromRow)]
pub struct TokenRow {
    pub id: String,
    pub secret_hash: String,
    pub kind: String,
    pub expires_at: i64,
    pub created_at: i64,
}

#[allow(clippy::too_many_arguments)]
pub async fn insert_token<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    id: &str,
    user_id: &str,
    kind: &str,
    secret_hash: &str,
    expires_at: i64,
    created_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tokens (project_id, id, user_id, kind, secret_hash, expires_at, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(project_id)
    .bind(id)
    .bind(user_id)
    .bind(kind)
    .bind(secret_hash)
    .bind(expires_at)
    .bind(created_at)
    .execute(db)
    .await
    .map(|_| ())
}

/// A user's tokens of the given kinds, newest first.
pub async fn tokens_of(
    pool: &AnyPool,
    project_id: &str,
    user_id: &str,
    kinds: &[&str],
) -> Result<Vec<TokenRow>, sqlx::Error> {
    let placeholders = vec!["?"; kinds.len().max(1)].join(", ");
    let sql = format!(
        "SELECT id, secret_hash, kind, expires_at, created_at FROM tokens WHERE project_id = ? AND user_id = ? \
         AND kind IN ({placeholders}) ORDER BY created_at DESC LIMIT 50"
    );
    kinds
        .iter()
        .fold(
            sqlx::query_as(&sql).bind(project_id).bind(user_id),
            |q, k| q.bind(*k),
        )
        .fetch_all(pool)
        .await
}

/// Deletes one token; false when another request used it first.
/// Deletes a user's outstanding tokens of the given kinds.
pub async fn delete_tokens_of<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    user_id: &str,
    kinds: &[&str],
) -> Result<u64, sqlx::Error> {
    let placeholders = vec!["?"; kinds.len().max(1)].join(", ");
    let sql = format!(
        "DELETE FROM tokens WHERE project_id = ? AND user_id = ? AND kind IN ({placeholders})"
    );
    kinds
        .iter()
        .fold(sqlx::query(&sql).bind(project_id).bind(user_id), |q, k| {
            q.bind(*k)
        })
        .execute(db)
        .await
        .map(|r| r.rows_affected())
}

pub async fn delete_token<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM tokens WHERE project_id = ? AND id = ?")
        .bind(project_id)
        .bind(id)
        .execute(db)
        .await
        .map(|r| r.rows_affected() == 1)
}

/// A user's second-factor state.
#[derive(Debug, FromRow)]
pub struct MfaRow {
    pub mfa: i16,
    pub totp_secret: Option<String>,
    pub totp_verified: i16,
    pub totp_last_step: Option<i64>,
    /// JSON array of recovery-code digests.
    pub recovery_codes: Option<String>,
}

pub async fn find_mfa(
    pool: &AnyPool,
    project_id: &str,
    user_id: &str,
) -> Result<Option<MfaRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT mfa, totp_secret, totp_verified, totp_last_step, recovery_codes FROM users \
         WHERE project_id = ? AND id = ?",
    )
    .bind(project_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await
}

/// Sets (or with `None`, removes) the TOTP secret; a new one starts unconfirmed.
pub async fn set_totp<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    user_id: &str,
    secret: Option<&str>,
    verified: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET totp_secret = ?, totp_verified = ?, totp_last_step = NULL WHERE project_id = ? AND id = ?",
    )
    .bind(secret)
    .bind(i16::from(verified))
    .bind(project_id)
    .bind(user_id)
    .execute(pool)
    .await
    .map(|_| ())
}

/// Forgets the authenticator app and the recovery codes (the `mfa` flag is the
/// user row's, written with it).
pub async fn remove_second_factor<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET totp_secret = NULL, totp_verified = 0, totp_last_step = NULL, \
         recovery_codes = NULL WHERE project_id = ? AND id = ?",
    )
    .bind(project_id)
    .bind(user_id)
    .execute(pool)
    .await
    .map(|_| ())
}

pub async fn confirm_totp<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET totp_verified = 1 WHERE project_id = ? AND id = ?")
        .bind(project_id)
        .bind(user_id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Records that TOTP time step `step` was used; false when it (or a later one)
/// already was, so each code works once even under concurrent requests.
pub async fn use_totp_step<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    user_id: &str,
    step: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE users SET totp_last_step = ? WHERE project_id = ? AND id = ? \
         AND (totp_last_step IS NULL OR totp_last_step < ?)",
    )
    .bind(step)
    .bind(project_id)
    .bind(user_id)
    .bind(step)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// Replaces the recovery-code digests if they are still `expected` (compare and swap,
/// so a code is consumed once under concurrent requests).
pub async fn swap_recovery_codes<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    user_id: &str,
    expected: Option<&str>,
    new: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let result = match expected {
        Some(expected) => {
            sqlx::query("UPDATE users SET recovery_codes = ? WHERE project_id = ? AND id = ? AND recovery_codes = ?")
                .bind(new)
                .bind(project_id)
                .bind(user_id)
                .bind(expected)
                .execute(db)
                .await?
        }
        None => {
            sqlx::query("UPDATE users SET recovery_codes = ? WHERE project_id = ? AND id = ?")
                .bind(new)
                .bind(project_id)
                .bind(user_id)
                .execute(db)
                .await?
        }
    };
    Ok(result.rows_affected() == 1)
}

pub async fn set_mfa<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    user_id: &str,
    enabled: bool,
) -> Result<(), sqlx::Error> {
    // A new version, as every change of a column `update_user` writes: a change
    // prepared from the row before this one must not put the old value back.
    let now = crate::db::now_millis();
    sqlx::query(
        "UPDATE users SET mfa = ?, updated_at = CASE WHEN updated_at >= ? THEN updated_at + 1 \
         ELSE ? END WHERE project_id = ? AND id = ?",
    )
    .bind(i16::from(enabled))
    .bind(now)
    .bind(now)
    .bind(project_id)
    .bind(user_id)
    .execute(pool)
    .await
    .map(|_| ())
}

pub async fn mark_session_mfa_verified<'e>(
    pool: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    session_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET mfa_verified = 1 WHERE project_id = ? AND id = ?")
        .bind(project_id)
        .bind(session_id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// One entry of a user's activity log.
#[derive(Debug, FromRow)]
pub struct LogRow {
    pub id: String,
    pub user_id: String,
    pub event: String,
    /// Who did it, when not the user: `key:ID`, `admin:EMAIL`; empty otherwise.
    pub actor: String,
    pub ip: String,
    pub user_agent: String,
    pub created_at: i64,
}

pub async fn insert_log(pool: &AnyPool, project_id: &str, log: &LogRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO activity_logs \
         (project_id, id, user_id, event, actor, ip, user_agent, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(project_id)
    .bind(&log.id)
    .bind(&log.user_id)
    .bind(&log.event)
    .bind(&log.actor)
    .bind(&log.ip)
    .bind(&log.user_agent)
    .bind(log.created_at)
    .execute(pool)
    .await
    .map(|_| ())
}

/// A user's log entries by id (ids are time-ordered: `first` is oldest, `last` newest).
pub async fn list_logs(
    pool: &AnyPool,
    project_id: &str,
    user_id: &str,
    page: &Page,
) -> Result<Vec<LogRow>, sqlx::Error> {
    let (keyset, binds) = page.keyset_sql("id");
    let sql = format!(
        "SELECT id, user_id, event, actor, ip, user_agent, created_at FROM activity_logs \
         WHERE project_id = ? AND user_id = ?{keyset}"
    );
    binds
        .iter()
        .fold(
            sqlx::query_as(&sql).bind(project_id).bind(user_id),
            |q, b| q.bind(b),
        )
        .fetch_all(pool)
        .await
}

/// Deletes the tokens (links and codes) that ended before `before`
/// (milliseconds), every user's.
pub async fn prune_tokens(pool: &AnyPool, before: i64) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM tokens WHERE expires_at < ?")
        .bind(before)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
}

/// Deletes the log entries made before `before` (milliseconds), every user's.
pub async fn prune_logs(pool: &AnyPool, before: i64) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM activity_logs WHERE created_at < ?")
        .bind(before)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
}

pub async fn count_logs(
    pool: &AnyPool,
    project_id: &str,
    user_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM activity_logs WHERE project_id = ? AND user_id = ?")
        .bind(project_id)
        .bind(user_id)
        .fetch_one(pool)
        .await
}
