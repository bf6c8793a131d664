//! Multi-factor sign-in with a TOTP authenticator app and recovery codes. With MFA on,
//! a new session is limited (only these operations work, and it holds no user roles)
//! until it passes a challenge with the authenticator's code or a recovery code. Each
//! code works once; attempts are rate limited.

use crate::AppState;
use crate::auth::rate_limit::{Limit, client_key};
use crate::auth::sealing::Sealer;
use crate::auth::session_cache::ResolvedSession;
use crate::auth::totp;
use crate::error::{AppError, AppResult, codes};
use crate::services::users::Session;
use crate::services::users::service::{commit_session_events, commit_user_update, session_event};
use crate::services::users::store;

/// Appwrite's limit on MFA challenges, per user and client address: someone who
/// has the password and guesses codes from elsewhere does not lock the user out.
const ATTEMPTS_LIMIT: Limit = Limit::per_hour(10);
/// Code attempts per user from all addresses together: the bound on guessing a
/// 6-digit code from many addresses.
const USER_ATTEMPTS_LIMIT: Limit = Limit::per_hour(100);

/// A new authenticator: the secret to enter in an app, as text and as a QR-code URI.
pub struct NewAuthenticator {
    pub secret: String,
    pub uri: String,
}

/// The second factors a user has.
pub struct Factors {
    pub totp: bool,
    pub recovery_code: bool,
}

fn invalid_code() -> AppError {
    AppError::Invalid {
        code: codes::INVALID_MFA_CODE,
        field: "code".into(),
        reason: "the code is wrong, expired, or was already used".into(),
    }
}

async fn mfa_row(state: &AppState, me: &ResolvedSession) -> AppResult<store::MfaRow> {
    store::find_mfa(state.db.pool(), &me.user.project_id, &me.user.id)
        .await?
        .ok_or(AppError::InvalidSession)
}

fn unix_now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)
}

pub async fn factors(state: &AppState, me: &ResolvedSession) -> AppResult<Factors> {
    let row = mfa_row(state, me).await?;
    Ok(Factors {
        totp: row.totp_verified != 0,
        recovery_code: row
            .recovery_codes
            .as_deref()
            .is_some_and(|codes| codes != "[]"),
    })
}

/// Starts adding an authenticator; it counts once confirmed with a code.
pub async fn create_authenticator(
    state: &AppState,
    me: &ResolvedSession,
) -> AppResult<NewAuthenticator> {
    if mfa_row(state, me).await?.totp_verified != 0 {
        return Err(AppError::Conflict {
            what: "authenticator",
            id: "totp".into(),
        });
    }
    let secret = totp::new_secret();
    let encoded = secret.to_base32();
    store::set_totp(
        state.db.pool(),
        &me.user.project_id,
        &me.user.id,
        Some(&totp_sealer(state).seal(&encoded)),
        false,
    )
    .await?;
    let project = state
        .schemas
        .get(state, &me.user.project_id)
        .await?
        .project
        .name
        .clone();
    let account = me.user.email.clone().unwrap_or_else(|| me.user.id.clone());
    Ok(NewAuthenticator {
        uri: totp::otpauth_uri(&secret, &project, &account),
        secret: encoded,
    })
}

/// TOTP seeds must be readable to check codes, so they are sealed, not hashed.
fn totp_sealer(state: &AppState) -> Sealer {
    Sealer::new(&state.secret, "totp-secret")
}

/// The stored seed: sealed, or plain base32 as stored before seeds were sealed.
fn open_totp_secret(state: &AppState, stored: &str) -> Option<totp::TotpSecret> {
    if stored.starts_with("v1.") {
        let opened = totp_sealer(state).open(stored).ok()?;
        totp::TotpSecret::from_base32(&opened)
    } else {
        totp::TotpSecret::from_base32(stored)
    }
}

/// Counts one code attempt against the hourly limits: of the user from the address
/// the session signed in from, and of the user overall.
async fn count_attempt(state: &AppState, me: &ResolvedSession) -> AppResult<()> {
    let user = format!("mfa:{}:{}", me.user.project_id, me.user.id);
    let from = format!("{user}:{}", client_key(&me.session.ip));
    state.rate_limiter.hit(&from, ATTEMPTS_LIMIT).await?;
    state.rate_limiter.hit(&user, USER_ATTEMPTS_LIMIT).await
}

/// Marks this session as having passed the second factor, on every replica, in
/// `tx` with what else passing changed (the factor confirmed, MFA turned on).
async fn session_passed(
    state: &AppState,
    me: &ResolvedSession,
    mut tx: sqlx::Transaction<'static, sqlx::Any>,
    mfa_changed: bool,
) -> AppResult<()> {
    let (project_id, user_id) = (&me.user.project_id, &me.user.id);
    store::mark_session_mfa_verified(&mut *tx, project_id, &me.session.id).await?;
    let session = Session {
        mfa_verified: true,
        ..me.session.clone()
    };
    let passed = vec![session_event(&session, "update")];
    if mfa_changed {
        commit_user_update(state, tx, project_id, user_id, &["mfa"], passed).await
    } else {
        commit_session_events(state, tx, project_id, user_id, passed).await
    }
}

/// Checks an authenticator code and uses it up in `tx`, the change it allows: a
/// change that fails leaves the code unused.
async fn check_totp(
    state: &AppState,
    me: &ResolvedSession,
    code: &str,
    tx: &mut sqlx::AnyConnection,
) -> AppResult<()> {
    count_attempt(state, me).await?;
    let row = mfa_row(state, me).await?;
    use_totp(state, me, &row, code, tx).await
}

/// Uses up an authenticator code of `row`'s secret in `tx` (the attempt counted
/// already).
async fn use_totp(
    state: &AppState,
    me: &ResolvedSession,
    row: &store::MfaRow,
    code: &str,
    tx: &mut sqlx::AnyConnection,
) -> AppResult<()> {
    let secret = row
        .totp_secret
        .as_deref()
        .and_then(|stored| open_totp_secret(state, stored))
        .ok_or_else(invalid_code)?;
    let last = row.totp_last_step.and_then(|s| u64::try_from(s).ok());
    let step = totp::verify(&secret, code.trim(), unix_now(), last).ok_or_else(invalid_code)?;
    let step = i64::try_from(step).map_err(|_| invalid_code())?;
    if !store::use_totp_step(&mut *tx, &me.user.project_id, &me.user.id, step).await? {
        return Err(invalid_code());
    }
    Ok(())
}

/// Confirms the authenticator with a code from the app; this session counts as
/// having passed the second factor.
pub async fn verify_authenticator(
    state: &AppState,
    me: &ResolvedSession,
    code: &str,
) -> AppResult<()> {
    let mut tx = state.db.pool().begin().await?;
    check_totp(state, me, code, &mut tx).await?;
    store::confirm_totp(&mut *tx, &me.user.project_id, &me.user.id).await?;
    session_passed(state, me, tx, true).await
}

/// Removes the authenticator (a current code proves possession). Without any factor
/// left, MFA turns off.
pub async fn delete_authenticator(
    state: &AppState,
    me: &ResolvedSession,
    code: &str,
) -> AppResult<()> {
    let mut tx = state.db.pool().begin().await?;
    check_totp(state, me, code, &mut tx).await?;
    store::set_totp(&mut *tx, &me.user.project_id, &me.user.id, None, false).await?;
    store::set_mfa(&mut *tx, &me.user.project_id, &me.user.id, false).await?;
    commit_user_update(
        state,
        tx,
        &me.user.project_id,
        &me.user.id,
        &["mfa"],
        Vec::new(),
    )
    .await
}

/// New recovery codes, replacing any old ones; shown only now. Once MFA is on, or
/// while codes are left, they take a second factor now, as Appwrite asks a
/// challenge to regenerate them: `proof`, a code of the confirmed authenticator or
/// one of the codes replaced. Else whoever holds a session (a stolen cookie) could
/// give themselves codes, and sign in with the password and them for good. Codes
/// made while MFA is being set up (before `updateMfa` turns it on) need none.
pub async fn create_recovery_codes(
    state: &AppState,
    me: &ResolvedSession,
    proof: Option<&str>,
) -> AppResult<Vec<String>> {
    let row = mfa_row(state, me).await?;
    let left = row.recovery_codes.as_deref().filter(|codes| *codes != "[]");
    let mut tx = state.db.pool().begin().await?;
    if left.is_some() || row.mfa != 0 {
        let proof = proof.ok_or_else(|| AppError::Invalid {
            code: codes::INVALID_MFA_CODE,
            field: "code".into(),
            reason: "new recovery codes take a code from the authenticator app or one of the recovery codes left".into(),
        })?;
        count_attempt(state, me).await?;
        let mut digests: Vec<String> = left
            .map(|stored| serde_json::from_str(stored).unwrap_or_default())
            .unwrap_or_default();
        if !totp::consume_recovery_code(proof, &mut digests) {
            // Only a confirmed authenticator proves anything: one just added by
            // whoever holds the session is theirs.
            if row.totp_verified == 0 {
                return Err(invalid_code());
            }
            use_totp(state, me, &row, proof, &mut tx).await?;
        }
    }
    let codes = totp::new_recovery_codes();
    let digests: Vec<String> = codes.iter().map(|c| totp::digest_code(c)).collect();
    let json = serde_json::to_string(&digests).map_err(anyhow::Error::from)?;
    // Replaces the codes the proof was checked against, not others written since.
    let swapped = store::swap_recovery_codes(
        &mut *tx,
        &me.user.project_id,
        &me.user.id,
        row.recovery_codes.as_deref(),
        Some(&json),
    )
    .await?;
    if row.recovery_codes.is_some() && !swapped {
        return Err(invalid_code());
    }
    tx.commit().await?;
    Ok(codes)
}

/// Turns the second factor on or off for the caller; on needs a confirmed authenticator.
pub async fn set_enabled(state: &AppState, me: &ResolvedSession, enabled: bool) -> AppResult<()> {
    if enabled && mfa_row(state, me).await?.totp_verified == 0 {
        return Err(AppError::NotAllowed(
            "add and confirm an authenticator before turning MFA on".into(),
        ));
    }
    let mut tx = state.db.pool().begin().await?;
    store::set_mfa(&mut *tx, &me.user.project_id, &me.user.id, enabled).await?;
    // The session that turns MFA on has just proven the factor.
    session_passed(state, me, tx, true).await
}

/// The second factor of a signed-in session: `TOTP` (an authenticator code) or
/// `RECOVERY_CODE` (used up).
pub async fn complete_challenge(
    state: &AppState,
    me: &ResolvedSession,
    factor: &str,
    code: &str,
) -> AppResult<()> {
    // The factor used up and the session marked as past it are one write: a
    // crash between cannot spend a recovery code for nothing.
    let mut tx = state.db.pool().begin().await?;
    match factor {
        "TOTP" => check_totp(state, me, code, &mut tx).await?,
        "RECOVERY_CODE" => {
            count_attempt(state, me).await?;
            let row = mfa_row(state, me).await?;
            let stored = row.recovery_codes.ok_or_else(invalid_code)?;
            let mut digests: Vec<String> = serde_json::from_str(&stored).unwrap_or_default();
            if !totp::consume_recovery_code(code, &mut digests) {
                return Err(invalid_code());
            }
            let remaining = serde_json::to_string(&digests).map_err(anyhow::Error::from)?;
            let swapped = store::swap_recovery_codes(
                &mut *tx,
                &me.user.project_id,
                &me.user.id,
                Some(&stored),
                Some(&remaining),
            )
            .await?;
            if !swapped {
                return Err(invalid_code());
            }
        }
        other => {
            return Err(AppError::invalid(
                "factor",
                format!("unknown factor `{other}`"),
            ));
        }
    }
    session_passed(state, me, tx, false).await
}
