//! SQL of console administrators and their sessions.

use sqlx::{Any, AnyPool, Executor, FromRow};

use super::Admin;

#[derive(Debug, FromRow)]
pub struct AdminRow {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub totp_secret: Option<String>,
    pub totp_pending: Option<String>,
    pub totp_last_step: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl AdminRow {
    pub fn to_admin(&self) -> Admin {
        Admin {
            id: self.id.clone(),
            email: self.email.clone(),
            totp: self.totp_secret.is_some(),
            created_at: self.created_at,
        }
    }
}

const ADMIN_COLUMNS: &str = "id, email, password_hash, totp_secret, totp_pending, totp_last_step, \
     created_at, updated_at";

pub async fn insert_admin(
    conn: impl Executor<'_, Database = Any>,
    row: &AdminRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO console_admins (id, email, password_hash, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&row.id)
    .bind(&row.email)
    .bind(&row.password_hash)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn find_by_email(pool: &AnyPool, email: &str) -> Result<Option<AdminRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ADMIN_COLUMNS} FROM console_admins WHERE email = ?"
    ))
    .bind(email)
    .fetch_optional(pool)
    .await
}

pub async fn find_by_id(pool: &AnyPool, id: &str) -> Result<Option<AdminRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ADMIN_COLUMNS} FROM console_admins WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub async fn list_admins(pool: &AnyPool) -> Result<Vec<AdminRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ADMIN_COLUMNS} FROM console_admins ORDER BY email"
    ))
    .fetch_all(pool)
    .await
}

pub async fn any_admin(pool: &AnyPool) -> Result<bool, sqlx::Error> {
    let found: Option<String> = sqlx::query_scalar("SELECT id FROM console_admins LIMIT 1")
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

/// Deletes the administrator (their sessions go with them); whether one was.
pub async fn delete_admin(
    conn: impl Executor<'_, Database = Any>,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM console_admins WHERE id = ?")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Sets the administrator's password hash; whether they exist.
pub async fn set_password(
    conn: impl Executor<'_, Database = Any>,
    id: &str,
    password_hash: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE console_admins SET password_hash = ?, updated_at = ? WHERE id = ?")
            .bind(password_hash)
            .bind(now)
            .bind(id)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// Ends every session of the administrator.
pub async fn delete_sessions_of(
    conn: impl Executor<'_, Database = Any>,
    admin_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM console_sessions WHERE admin_id = ?")
        .bind(admin_id)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Sets the enrolment waiting for its first code (none: drops it).
pub async fn set_totp_pending(
    pool: &AnyPool,
    id: &str,
    sealed: Option<&str>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE console_admins SET totp_pending = ?, updated_at = ? WHERE id = ?")
        .bind(sealed)
        .bind(now)
        .bind(id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Makes `sealed` (the pending enrolment, `None` to remove the factor) the
/// administrator's TOTP secret, once `step` is used.
pub async fn set_totp(
    conn: impl Executor<'_, Database = Any>,
    id: &str,
    sealed: Option<&str>,
    step: Option<i64>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE console_admins SET totp_secret = ?, totp_pending = NULL, totp_last_step = ?, \
         updated_at = ? WHERE id = ?",
    )
    .bind(sealed)
    .bind(step)
    .bind(now)
    .bind(id)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Records `step` as used, unless it (or a later one) already was: whether it was not.
pub async fn use_totp_step(
    conn: impl Executor<'_, Database = Any>,
    id: &str,
    step: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE console_admins SET totp_last_step = ? \
         WHERE id = ? AND (totp_last_step IS NULL OR totp_last_step < ?)",
    )
    .bind(step)
    .bind(id)
    .bind(step)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

#[derive(Debug, FromRow)]
pub struct SessionRow {
    pub id: String,
    pub admin_id: String,
    pub secret_hash: String,
    pub ip: String,
    pub user_agent: String,
    pub last_used_at: i64,
    pub expires_at: i64,
    pub created_at: i64,
}

pub async fn insert_session(
    conn: impl Executor<'_, Database = Any>,
    row: &SessionRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO console_sessions \
         (id, admin_id, secret_hash, ip, user_agent, last_used_at, expires_at, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&row.id)
    .bind(&row.admin_id)
    .bind(&row.secret_hash)
    .bind(&row.ip)
    .bind(&row.user_agent)
    .bind(row.last_used_at)
    .bind(row.expires_at)
    .bind(row.created_at)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn find_session(pool: &AnyPool, id: &str) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, admin_id, secret_hash, ip, user_agent, last_used_at, expires_at, created_at \
         FROM console_sessions WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Marks the session used at `now`.
pub async fn touch_session(pool: &AnyPool, id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE console_sessions SET last_used_at = ? WHERE id = ?")
        .bind(now)
        .bind(id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Ends one session; whether it existed.
pub async fn delete_session(
    conn: impl Executor<'_, Database = Any>,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM console_sessions WHERE id = ?")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Ends the sessions that are past their end, idle or absolute.
pub async fn delete_expired_sessions(
    conn: impl Executor<'_, Database = Any>,
    now: i64,
    idle_ms: i64,
) -> Result<u64, sqlx::Error> {
    let done =
        sqlx::query("DELETE FROM console_sessions WHERE expires_at <= ? OR last_used_at <= ?")
            .bind(now)
            .bind(now.saturating_sub(idle_ms))
            .execute(conn)
            .await?;
    Ok(done.rows_affected())
}
