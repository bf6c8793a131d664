//! Rules for console administrators: creation under the accounts' password policy
//! (argon2id, with the common-password and personal-data checks on), sign-in with
//! the same answer and time for an unknown email and a wrong password, abuse limits
//! per client address and per email, an optional TOTP factor, and console sessions
//! whose secrets are stored as digests, that end when idle, at an absolute lifetime,
//! at sign-out or with their administrator. Ending or changing them is announced
//! on the bus, so the connections acting with them re-check at once.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use super::store::{self, AdminRow, SessionRow};
use super::{Admin, ConsoleSession};
use crate::AppState;
use crate::auth::passwords;
use crate::auth::rate_limit::{Limit, client_key};
use crate::auth::sealing::Sealer;
use crate::auth::secrets::{self, SecretKind};
use crate::auth::totp;
use crate::bus::BusMessage;
use crate::db::{DbErrorExt as _, ids, now_millis};
use crate::error::{AppError, AppResult, codes};
use crate::services::projects::AuthSettings;
use crate::services::users::service::{
    ClientInfo, check_password, hash, normalize_email, verify, verify_dummy,
};

/// Sign-in attempts per email, and per client address, in an hour: as accounts
/// count theirs, with room for an office behind one address.
const SIGN_IN_PER_EMAIL: Limit = Limit::per_hour(10);
const SIGN_IN_PER_CLIENT: Limit = Limit::per_hour(30);
/// Code attempts when enrolling or removing the second factor, per administrator.
const TOTP_ATTEMPTS: Limit = Limit::per_hour(10);
/// A session's last use is written at most this often: an idle end a minute late
/// costs nothing, a write on every console request would. (At most a quarter of
/// the idle time, so that a session in use never idles out between two writes.)
const TOUCH_EVERY_MS: i64 = 60_000;
/// The issuer authenticator apps show for the console's factor.
const TOTP_ISSUER: &str = "Nimbus console";

/// The accounts' default policy, with the checks a project may turn on turned on:
/// an administrator's password opens every project.
fn password_policy() -> AuthSettings {
    AuthSettings {
        password_dictionary: true,
        personal_data_check: true,
        ..AuthSettings::default()
    }
}

fn admin_not_found(email: &str) -> AppError {
    AppError::NotFound {
        what: "admin",
        id: email.to_string(),
    }
}

fn now_unix() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)
}

/// Creates an administrator (`nimbus admin create`).
pub async fn create_admin(state: &AppState, email: &str, password: String) -> AppResult<Admin> {
    let email = normalize_email("email", email)?;
    check_password(&password, &password_policy(), &[&email])?;
    let now = now_millis();
    let row = AdminRow {
        id: ids::generate(),
        email: email.clone(),
        password_hash: hash(password).await?,
        totp_secret: None,
        totp_pending: None,
        totp_last_step: None,
        created_at: now,
        updated_at: now,
    };
    store::insert_admin(state.db.pool(), &row)
        .await
        .conflict_as("admin", &email)?;
    Ok(row.to_admin())
}

/// Every administrator, by email.
pub async fn list_admins(state: &AppState) -> AppResult<Vec<Admin>> {
    let rows = store::list_admins(state.db.pool()).await?;
    Ok(rows.iter().map(AdminRow::to_admin).collect())
}

/// Whether any administrator exists (the serve banner says how to create one).
pub async fn any_admin(state: &AppState) -> AppResult<bool> {
    Ok(store::any_admin(state.db.pool()).await?)
}

/// Sets an administrator's password (`nimbus admin password`), under the policy
/// of [`create_admin`], and ends their sessions, on every replica at once: a
/// password changed because it leaked must not leave a session opened with it.
pub async fn set_password(state: &AppState, email: &str, password: String) -> AppResult<()> {
    let email = normalize_email("email", email)?;
    let row = store::find_by_email(state.db.pool(), &email)
        .await?
        .ok_or_else(|| admin_not_found(&email))?;
    check_password(&password, &password_policy(), &[&email])?;
    let password_hash = hash(password).await?;
    let mut tx = state.db.begin_write().await?;
    if !store::set_password(&mut *tx, &row.id, &password_hash, now_millis()).await? {
        return Err(admin_not_found(&email));
    }
    store::delete_sessions_of(&mut *tx, &row.id).await?;
    announce(state, tx, &email).await
}

/// Deletes an administrator and ends their sessions, on every replica at once.
pub async fn delete_admin(state: &AppState, email: &str) -> AppResult<()> {
    let email = normalize_email("email", email)?;
    let row = store::find_by_email(state.db.pool(), &email)
        .await?
        .ok_or_else(|| admin_not_found(&email))?;
    let mut tx = state.db.begin_write().await?;
    if !store::delete_admin(&mut *tx, &row.id).await? {
        return Err(admin_not_found(&email));
    }
    announce(state, tx, &email).await
}

/// Commits `tx` with the word that the administrator's sessions changed.
async fn announce(
    state: &AppState,
    tx: sqlx::Transaction<'static, sqlx::Any>,
    email: &str,
) -> AppResult<()> {
    let changed = BusMessage::AdminChanged {
        email: email.to_string(),
    };
    crate::bus::log::commit(&state.bus, tx, vec![changed]).await?;
    Ok(())
}

/// Signs an administrator in: a new console session and the secret of its cookie.
/// An unknown email and a wrong password get the same answer, after the same
/// argon2 work; with a second factor, a missing code is `MFA_REQUIRED` and a wrong
/// one `INVALID_MFA_CODE`, both only after the password was right.
pub async fn sign_in(
    state: &AppState,
    email: &str,
    password: String,
    otp: Option<&str>,
    client: &ClientInfo,
) -> AppResult<(ConsoleSession, String)> {
    let email = normalize_email("email", email)?;
    // Counted before any work: the limits bound the argon2 work too.
    let limiter = &state.rate_limiter;
    let from = format!("console-signin:client:{}", client_key(&client.ip));
    limiter.hit(&from, SIGN_IN_PER_CLIENT).await?;
    limiter
        .hit(&format!("console-signin:email:{email}"), SIGN_IN_PER_EMAIL)
        .await?;
    if password.len() > passwords::MAX_PASSWORD_BYTES {
        return Err(AppError::InvalidCredentials);
    }
    let Some(row) = store::find_by_email(state.db.pool(), &email).await? else {
        verify_dummy(password).await;
        return Err(AppError::InvalidCredentials);
    };
    if !verify(password, row.password_hash.clone()).await? {
        return Err(AppError::InvalidCredentials);
    }
    // The code spent and the session it opens are one write: a crash between
    // cannot use up a code that signed nobody in.
    let mut tx = state.db.begin_write().await?;
    if let Some(sealed) = &row.totp_secret {
        let code = otp.map(str::trim).filter(|c| !c.is_empty());
        let Some(code) = code else {
            return Err(AppError::MfaRequired);
        };
        check_code(state, &row, sealed, code, &mut tx).await?;
    }
    let opened = open_session(state, &row, client, &mut tx).await?;
    tx.commit().await?;
    Ok(opened)
}

async fn open_session(
    state: &AppState,
    row: &AdminRow,
    client: &ClientInfo,
    tx: &mut sqlx::AnyConnection,
) -> AppResult<(ConsoleSession, String)> {
    let now = now_millis();
    let lifetime = millis(state.config.console_session_lifetime_secs);
    let session = SessionRow {
        id: ids::generate(),
        admin_id: row.id.clone(),
        secret_hash: String::new(),
        ip: client.ip.chars().take(64).collect(),
        user_agent: client.user_agent.chars().take(512).collect(),
        last_used_at: now,
        expires_at: now.saturating_add(lifetime),
        created_at: now,
    };
    let (secret, digest) = secrets::new_secret(SecretKind::Console, &session.id);
    let session = SessionRow {
        secret_hash: digest,
        ..session
    };
    // Ended sessions are swept here: the table holds what administrators signed in.
    store::delete_expired_sessions(&mut *tx, now, idle_ms(state)).await?;
    store::insert_session(&mut *tx, &session).await?;
    let console = console_session(state, &session, row, &secret);
    Ok((console, secret))
}

fn millis(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn idle_ms(state: &AppState) -> i64 {
    millis(state.config.console_session_idle_secs)
}

/// How often a session in use has its last use written (and a connection acting
/// with it checks it again to renew its idle end).
pub fn touch_every_ms(state: &AppState) -> i64 {
    TOUCH_EVERY_MS.min(idle_ms(state) / 4).max(1)
}

fn console_session(
    state: &AppState,
    session: &SessionRow,
    admin: &AdminRow,
    secret: &str,
) -> ConsoleSession {
    ConsoleSession {
        id: session.id.clone(),
        admin: admin.to_admin(),
        csrf: csrf_token(state, secret),
        expires_at: session
            .expires_at
            .min(session.last_used_at.saturating_add(idle_ms(state))),
    }
}

/// The CSRF token of the session whose cookie holds `secret`: an HMAC of it under
/// the server secret, so it is bound to that one session, needs no storage, and
/// tells nothing of the secret.
fn csrf_token(state: &AppState, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(state.secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(b"nimbus console csrf\0");
    mac.update(secret.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The live session a cookie's secret opens, as now stored; `None` for a
/// malformed, unknown, signed-out or expired one. Marks it used.
pub async fn current(state: &AppState, secret: &str) -> AppResult<Option<ConsoleSession>> {
    let Some(id) = secrets::id_of(SecretKind::Console, secret) else {
        return Ok(None);
    };
    if ids::validate("session", id).is_err() {
        return Ok(None);
    }
    let pool = state.db.pool();
    let Some(session) = store::find_session(pool, id).await? else {
        return Ok(None);
    };
    let now = now_millis();
    if !secrets::matches(secret, &session.secret_hash)
        || session.expires_at <= now
        || session.last_used_at.saturating_add(idle_ms(state)) <= now
    {
        return Ok(None);
    }
    let Some(admin) = store::find_by_id(pool, &session.admin_id).await? else {
        return Ok(None);
    };
    let session = if now - session.last_used_at >= touch_every_ms(state) {
        store::touch_session(pool, &session.id, now).await?;
        SessionRow {
            last_used_at: now,
            ..session
        }
    } else {
        session
    };
    Ok(Some(console_session(state, &session, &admin, secret)))
}

/// The live session a cookie's secret opens when `csrf` is its token (compared in
/// constant time); `None` otherwise: the cookie alone proves nothing, since the
/// browser sends it whichever page asks.
pub async fn with_csrf(
    state: &AppState,
    secret: &str,
    csrf: &str,
) -> AppResult<Option<ConsoleSession>> {
    let expected = csrf_token(state, secret);
    if !bool::from(expected.as_bytes().ct_eq(csrf.as_bytes())) {
        return Ok(None);
    }
    current(state, secret).await
}

/// Ends the session, on every replica at once (connections acting with it
/// re-check and lose it).
pub async fn sign_out(state: &AppState, session: &ConsoleSession) -> AppResult<()> {
    let mut tx = state.db.begin_write().await?;
    store::delete_session(&mut *tx, &session.id).await?;
    announce(state, tx, &session.admin.email).await
}

/// Ends the session whose cookie holds `secret`, if it is one (live or not): a
/// browser that signs in again leaves no session of its old cookie behind.
pub async fn end_replaced(state: &AppState, secret: &str) -> AppResult<()> {
    let Some(id) = secrets::id_of(SecretKind::Console, secret) else {
        return Ok(());
    };
    if ids::validate("session", id).is_err() {
        return Ok(());
    }
    let Some(session) = store::find_session(state.db.pool(), id).await? else {
        return Ok(());
    };
    if !secrets::matches(secret, &session.secret_hash) {
        return Ok(());
    }
    let Some(admin) = store::find_by_id(state.db.pool(), &session.admin_id).await? else {
        return Ok(());
    };
    let mut tx = state.db.begin_write().await?;
    store::delete_session(&mut *tx, &session.id).await?;
    announce(state, tx, &admin.email).await
}

/// TOTP seeds must be readable to check codes, so they are sealed, not hashed.
fn totp_sealer(state: &AppState) -> Sealer {
    Sealer::new(&state.secret, "console-totp-secret")
}

fn invalid_code() -> AppError {
    AppError::Invalid {
        code: codes::INVALID_MFA_CODE,
        field: "otp".into(),
        reason: "the code is wrong, expired, or was already used".into(),
    }
}

/// Checks a code against the sealed secret and uses its time step up.
/// Checks a code of the administrator's authenticator and spends it in `tx`, the
/// change it allows.
async fn check_code(
    state: &AppState,
    row: &AdminRow,
    sealed: &str,
    code: &str,
    tx: &mut sqlx::AnyConnection,
) -> AppResult<()> {
    let secret = totp_sealer(state)
        .open(sealed)
        .ok()
        .and_then(|encoded| totp::TotpSecret::from_base32(&encoded))
        .ok_or_else(invalid_code)?;
    let last = row.totp_last_step.and_then(|s| u64::try_from(s).ok());
    let step = totp::verify(&secret, code, now_unix(), last).ok_or_else(invalid_code)?;
    let step = i64::try_from(step).map_err(|_| invalid_code())?;
    if !store::use_totp_step(&mut *tx, &row.id, step).await? {
        return Err(invalid_code());
    }
    Ok(())
}

async fn admin_row(state: &AppState, session: &ConsoleSession) -> AppResult<AdminRow> {
    store::find_by_id(state.db.pool(), &session.admin.id)
        .await?
        .ok_or(AppError::Unauthenticated)
}

/// A new TOTP secret for the signed-in administrator, active once confirmed with
/// [`confirm_totp`]: its base32 form and the `otpauth://` URI apps scan.
pub async fn enrol_totp(state: &AppState, session: &ConsoleSession) -> AppResult<(String, String)> {
    let row = admin_row(state, session).await?;
    if row.totp_secret.is_some() {
        return Err(AppError::Conflict {
            what: "authenticator",
            id: "totp".into(),
        });
    }
    let secret = totp::new_secret();
    let encoded = secret.to_base32();
    let sealed = totp_sealer(state).seal(&encoded);
    store::set_totp_pending(state.db.pool(), &row.id, Some(&sealed), now_millis()).await?;
    let uri = totp::otpauth_uri(&secret, TOTP_ISSUER, &row.email);
    Ok((encoded, uri))
}

/// Activates the pending TOTP secret with a code from it.
pub async fn confirm_totp(state: &AppState, session: &ConsoleSession, otp: &str) -> AppResult<()> {
    let row = admin_row(state, session).await?;
    state
        .rate_limiter
        .hit(&format!("console-totp:{}", row.id), TOTP_ATTEMPTS)
        .await?;
    let Some(pending) = row.totp_pending.clone() else {
        return Err(AppError::NotAllowed(
            "no authenticator is waiting to be confirmed; create one first".into(),
        ));
    };
    let secret = totp_sealer(state)
        .open(&pending)
        .ok()
        .and_then(|encoded| totp::TotpSecret::from_base32(&encoded))
        .ok_or_else(invalid_code)?;
    let step = totp::verify(&secret, otp.trim(), now_unix(), None).ok_or_else(invalid_code)?;
    let step = i64::try_from(step).map_err(|_| invalid_code())?;
    let mut tx = state.db.begin_write().await?;
    store::set_totp(&mut *tx, &row.id, Some(&pending), Some(step), now_millis()).await?;
    announce(state, tx, &row.email).await
}

/// Removes the second factor, given a current code from it.
pub async fn remove_totp(state: &AppState, session: &ConsoleSession, otp: &str) -> AppResult<()> {
    let row = admin_row(state, session).await?;
    state
        .rate_limiter
        .hit(&format!("console-totp:{}", row.id), TOTP_ATTEMPTS)
        .await?;
    let Some(sealed) = row.totp_secret.clone() else {
        return Err(AppError::NotFound {
            what: "authenticator",
            id: "totp".into(),
        });
    };
    let mut tx = state.db.begin_write().await?;
    check_code(state, &row, &sealed, otp.trim(), &mut tx).await?;
    store::set_totp(&mut *tx, &row.id, None, None, now_millis()).await?;
    announce(state, tx, &row.email).await
}
