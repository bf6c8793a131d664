//! Rules for users and sessions: validation of emails, names, passwords and prefs;
//! password hashing off the async runtime; sign-up and sign-in; resolving a session
//! secret to its user (cached, and evicted everywhere when the user changes); and the
//! server-side management that API keys with `users.*` scopes may do.

use std::sync::Arc;

use crate::AppState;
use crate::auth::Grant;
use crate::auth::passwords::{self, StoredHash};
use crate::auth::rate_limit::{Limit, client_key};
use crate::auth::scopes::{ScopeMarker as _, UsersRead, UsersWrite};
use crate::auth::secrets::{self, SecretKind};
use crate::auth::session_cache::ResolvedSession;
use crate::bus::BusMessage;
use crate::db::{DbErrorExt as _, Page, claimed_ids, ids, now_millis};
use crate::error::{AppError, AppResult, codes};

use super::{Session, User, store};
use crate::services::projects::AuthSettings;

const MAX_NAME: usize = 128;
const MAX_EMAIL: usize = 320;
const MAX_PREFS_BYTES: usize = 64 * 1024;
/// Deepest the preferences may nest. They travel inside events (the user's, in the
/// event log, to webhooks and functions), which JSON readers refuse past 128
/// levels: kept far from that.
const MAX_PREFS_DEPTH: usize = 32;
const MAX_LABELS: usize = 100;
/// Abuse limits, as Appwrite sets them.
const SIGN_IN_LIMIT: Limit = Limit::per_hour(10);
/// Password sign-ins one client address may try in an hour, whatever the email:
/// each costs an argon2 check on the shared pool, an unknown email too.
const SIGN_IN_PER_CLIENT: Limit = Limit::per_hour(100);
/// Password sign-ins to one account in an hour, from every address together:
/// guesses spread over many addresses (an IPv6 network holds billions) add up.
const SIGN_IN_PER_ACCOUNT: Limit = Limit::per_hour(100);
const SIGN_UP_LIMIT: Limit = Limit::per_hour(10);
const ANONYMOUS_LIMIT: Limit = Limit::per_hour(50);
const PASSWORD_CHANGE_LIMIT: Limit = Limit::per_hour(10);
/// Session extensions one user may make in an hour (Appwrite's limit): each is a
/// write and drops the user's cached sessions on every replica.
const SESSION_EXTEND_LIMIT: Limit = Limit::per_hour(10);

/// Where a request came from, recorded on its session.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The client address (`http::client`: behind a trusted proxy, the forwarded one).
    pub ip: String,
    pub user_agent: String,
    /// The languages it asks for: `X-Nimbus-Locale`, else `Accept-Language`, as sent.
    pub locale: String,
}

/// A request to create a user.
#[derive(Debug, Default)]
pub struct NewUser {
    pub id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub name: Option<String>,
    /// A plain password, hashed with argon2id.
    pub password: Option<String>,
    /// Or a hash imported from another system.
    pub password_hash: Option<StoredHash>,
}

/// A password hash imported from another system, with its parameters, as Appwrite's
/// `create*User` endpoints take them.
#[derive(Debug, Default)]
pub struct ImportedHash {
    /// `argon2`, `bcrypt`, `scrypt`, `scryptModified`, `sha`, `md5` or `phpass`.
    pub algorithm: String,
    pub hash: String,
    pub salt: Option<String>,
    pub salt_separator: Option<String>,
    pub signer_key: Option<String>,
    pub cost_cpu: Option<i64>,
    pub cost_memory: Option<i64>,
    pub cost_parallel: Option<i64>,
    pub length: Option<i64>,
    pub sha_version: Option<String>,
}

impl ImportedHash {
    /// Checks the hash and its parameters.
    pub fn into_stored(self) -> AppResult<StoredHash> {
        let invalid = |reason: String| AppError::Invalid {
            code: codes::INVALID_PASSWORD_HASH,
            field: "passwordHash".into(),
            reason,
        };
        let need = |value: Option<String>, name: &str| {
            value.ok_or_else(|| invalid(format!("`{name}` is required for this algorithm")))
        };
        let need_number = |value: Option<i64>, name: &str| {
            value.ok_or_else(|| invalid(format!("`{name}` is required for this algorithm")))
        };
        let hash = &self.hash;
        let imported = match self.algorithm.as_str() {
            "argon2" => StoredHash::import_argon2(hash),
            "bcrypt" => StoredHash::import_bcrypt(hash),
            "md5" => StoredHash::import_md5(hash),
            "phpass" => StoredHash::import_phpass(hash),
            "sha" => {
                let variant = match self.sha_version.as_deref() {
                    None => passwords::ShaVariant::default(),
                    Some(name) => passwords::ShaVariant::from_name(name)
                        .ok_or_else(|| invalid(format!("unknown shaVersion `{name}`")))?,
                };
                StoredHash::import_sha(hash, variant)
            }
            "scrypt" => StoredHash::import_scrypt(
                hash,
                &need(self.salt, "salt")?,
                need_number(self.cost_cpu, "costCpu")?,
                need_number(self.cost_memory, "costMemory")?,
                need_number(self.cost_parallel, "costParallel")?,
                need_number(self.length, "length")?,
            ),
            "scryptModified" => StoredHash::import_scrypt_modified(
                hash,
                &need(self.salt, "salt")?,
                &need(self.salt_separator, "saltSeparator")?,
                &need(self.signer_key, "signerKey")?,
                StoredHash::FIREBASE_DEFAULT_ROUNDS,
                StoredHash::FIREBASE_DEFAULT_MEMORY_COST,
            ),
            other => return Err(invalid(format!("unknown algorithm `{other}`"))),
        };
        imported.map_err(|err| invalid(err.to_string()))
    }
}

/// Changes to a user; absent fields stay as they are.
#[derive(Debug, Default, Clone)]
pub struct UserChanges {
    pub name: Option<String>,
    /// A new email; `""` removes it (servers only), and its verification with it.
    pub email: Option<String>,
    /// A new phone number; `""` removes it (servers only), and its verification with it.
    pub phone: Option<String>,
    /// A new password. Unless the project's `invalidate_sessions` is off, it ends
    /// every session of the user but `keep_session`, in the same transaction:
    /// whoever held the old password is signed out.
    pub password: Option<String>,
    /// The session that survives a password change: the one that made it.
    pub keep_session: Option<String>,
    pub blocked: Option<bool>,
    pub email_verified: Option<bool>,
    pub phone_verified: Option<bool>,
    pub labels: Option<Vec<String>>,
    pub prefs: Option<serde_json::Map<String, serde_json::Value>>,
    /// Takes the password away (servers only): no password signs the user in,
    /// and, as for a new one, their sessions end unless the project keeps them.
    pub clear_password: bool,
    /// Require a second factor (servers only; users go through `updateMfa`).
    pub mfa: Option<bool>,
    /// Removes the authenticator app and the recovery codes and turns MFA off
    /// (servers only): the way back in for a user who lost their device.
    pub reset_mfa: bool,
    /// The change comes with proof that the user holds the mailbox (an emailed link
    /// or code, a provider that verified the email): the email becomes verified, and
    /// an account whose email was not verified yet is claimed first, in the same
    /// transaction. Claiming takes everything that signs in without the mailbox —
    /// password, second factor, sessions, linked provider accounts — so whoever
    /// registered the address before its owner (pre-account takeover) keeps nothing.
    /// Removing rather than refusing the sign-in: a refusal would leave the owner
    /// locked out of an account in their name, and the squatter in it.
    pub claim: bool,
    /// What else the change does, logged with it (the recovery or verification
    /// token it used up).
    pub also: Vec<BusMessage>,
    /// The id of a mailed token the change uses up, deleted in its transaction:
    /// a change refused (a weak password, a clash) leaves the token usable, and
    /// of two requests with one token the second writes nothing (`INVALID_TOKEN`).
    pub token: Option<String>,
}

pub fn normalize_email(field: &str, email: &str) -> AppResult<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= MAX_EMAIL
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(AppError::Invalid {
            code: codes::INVALID_EMAIL,
            field: field.into(),
            reason: "not an email address".into(),
        });
    }
    Ok(email)
}

fn check_phone(phone: &str) -> AppResult<()> {
    let digits = phone.strip_prefix('+').unwrap_or("");
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AppError::Invalid {
            code: codes::INVALID_PHONE,
            field: "phone".into(),
            reason: "use E.164: + and up to 15 digits".into(),
        });
    }
    Ok(())
}

pub(crate) fn check_name(name: &str) -> AppResult<()> {
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "name",
            format!("at most {MAX_NAME} printable characters"),
        ));
    }
    Ok(())
}

/// A password refused by the project's policy, with the code that says why.
fn weak_password(code: &'static str, reason: impl Into<String>) -> AppError {
    AppError::Invalid {
        code,
        field: "password".into(),
        reason: reason.into(),
    }
}

/// Checks a new password against the project's policy. `personal` holds the user's
/// id, name, email and phone, for the personal-data rule.
pub(crate) fn check_password(
    password: &str,
    policy: &AuthSettings,
    personal: &[&str],
) -> AppResult<()> {
    let min = policy.password_min_length as usize;
    if password.chars().count() < min {
        return Err(weak_password(
            codes::PASSWORD_TOO_SHORT,
            format!("at least {min} characters"),
        ));
    }
    if password.len() > passwords::MAX_PASSWORD_BYTES {
        return Err(weak_password(
            codes::PASSWORD_TOO_LONG,
            format!("at most {} bytes", passwords::MAX_PASSWORD_BYTES),
        ));
    }
    if policy.personal_data_check {
        let lowered = password.to_lowercase();
        let email_name = personal
            .iter()
            .filter_map(|p| p.split_once('@').map(|(local, _)| local));
        if personal
            .iter()
            .copied()
            .chain(email_name)
            .map(str::to_lowercase)
            .any(|part| part.chars().count() >= 3 && lowered.contains(&part))
        {
            return Err(weak_password(
                codes::PASSWORD_PERSONAL_DATA,
                "must not contain your name, email, phone or id",
            ));
        }
    }
    if policy.password_dictionary && is_common_password(password) {
        return Err(weak_password(
            codes::PASSWORD_TOO_COMMON,
            "is among the most commonly used passwords",
        ));
    }
    Ok(())
}

/// Whether the whole password is one of the commonly used passwords zxcvbn knows
/// (its frequency list of about 30,000 leaked passwords), ignoring case and l33t
/// spellings.
fn is_common_password(password: &str) -> bool {
    use zxcvbn::matching::patterns::MatchPattern;
    let length = password.chars().count();
    zxcvbn::zxcvbn(password, &[]).sequence().iter().any(|m| {
        // zxcvbn does not export its dictionary enum; the password list is its default.
        m.i == 0
            && m.j + 1 == length
            && matches!(&m.pattern, MatchPattern::Dictionary(d) if d.dictionary_name == Default::default())
    })
}

/// Refuses a sign-in method the project turned off.
pub(crate) async fn require_method(
    state: &AppState,
    project_id: &str,
    enabled: fn(&AuthSettings) -> bool,
    method: &'static str,
) -> AppResult<()> {
    if enabled(&policy(state, project_id).await?) {
        Ok(())
    } else {
        Err(AppError::MethodDisabled { method })
    }
}

/// The project's sign-in policy, from the cached project.
pub(crate) async fn policy(state: &AppState, project_id: &str) -> AppResult<AuthSettings> {
    Ok(state
        .schemas
        .get(state, project_id)
        .await?
        .project
        .auth
        .clone())
}

/// Refuses preferences (a user's or a team's) past 64 KiB of JSON or 32 levels deep.
pub(crate) fn check_prefs(prefs: &serde_json::Map<String, serde_json::Value>) -> AppResult<()> {
    let size = serde_json::to_vec(prefs)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_PREFS_BYTES {
        return Err(AppError::Invalid {
            code: codes::PREFS_TOO_LARGE,
            field: "prefs".into(),
            reason: format!("{size} bytes of JSON; the limit is {MAX_PREFS_BYTES}"),
        });
    }
    let depth = prefs.values().map(nesting).max().unwrap_or(0) + 1;
    if depth > MAX_PREFS_DEPTH {
        return Err(AppError::Invalid {
            code: codes::PREFS_TOO_LARGE,
            field: "prefs".into(),
            reason: format!("nested {depth} deep; the limit is {MAX_PREFS_DEPTH}"),
        });
    }
    Ok(())
}

/// How deep a JSON value nests: 0 for a scalar.
fn nesting(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => items.iter().map(nesting).max().unwrap_or(0) + 1,
        serde_json::Value::Object(entries) => entries.values().map(nesting).max().unwrap_or(0) + 1,
        _ => 0,
    }
}

fn check_labels(labels: &[String]) -> AppResult<()> {
    if labels.len() > MAX_LABELS {
        return Err(AppError::invalid(
            "labels",
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    if let Some(bad) = labels
        .iter()
        .find(|l| l.is_empty() || l.len() > 36 || !l.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err(AppError::invalid(
            "labels",
            format!("`{bad}`: a label is 1 to 36 letters and digits"),
        ));
    }
    Ok(())
}

/// Hashes on the blocking pool: argon2id takes tens of milliseconds of CPU.
/// Runs password hashing on a few long-lived threads, one per core. Each argon2id
/// computation takes 19 MiB; spread over the runtime's blocking pool it would run on
/// hundreds of threads at once, and the allocator keeps memory per thread, so a burst
/// of sign-ins could hold gigabytes. Here at most one computation per core runs, and
/// only those threads' memory is kept.
async fn on_password_threads<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> AppResult<T> {
    type Job = Box<dyn FnOnce() + Send>;
    static QUEUE: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel::<Job>();
        let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        for index in 0..threads {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("nimbus-passwords-{index}"))
                .spawn(move || {
                    loop {
                        let job = match receiver.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(err) = spawned {
                tracing::error!(error = %err, "cannot start a password hashing thread");
            }
        }
        std::sync::Mutex::new(sender)
    });
    // Bounded: each waiting check is a request waiting (about 13 ms of a core
    // each), and past this many a client waits seconds; it is told to come back.
    static WAITING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let most = 64 * std::thread::available_parallelism().map_or(2, |n| n.get());
    if WAITING.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= most {
        WAITING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        return Err(AppError::Busy { retry_after: 1 });
    }
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        // The request that asked is gone (its client left, or its deadline
        // passed): its hash would be thrown away.
        if !done.is_closed() {
            let _ = done.send(work());
        }
        WAITING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    });
    let sent = queue.lock().is_ok_and(|sender| sender.send(job).is_ok());
    if !sent {
        // Never to run, so it never counts itself out.
        WAITING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        return Err(AppError::Internal(anyhow::anyhow!(
            "the password threads are gone"
        )));
    }
    result
        .await
        .map_err(|_| AppError::Internal(anyhow::anyhow!("password work was dropped")))
}

pub(crate) async fn hash(password: String) -> AppResult<String> {
    on_password_threads(move || passwords::hash_password(&password))
        .await?
        .map_err(|e| AppError::Internal(anyhow::anyhow!("password hashing failed: {e}")))
}

pub(crate) async fn verify(password: String, stored: String) -> AppResult<bool> {
    on_password_threads(move || {
        StoredHash::from_stored(&stored)
            .and_then(|hash| passwords::verify_password(&password, &hash))
    })
    .await?
    .map_err(|e| AppError::Internal(anyhow::anyhow!("stored password hash unreadable: {e}")))
}

/// Verifies `password` against a fixed hash of the current parameters, for the
/// time it takes; the answer is thrown away.
pub(crate) async fn verify_dummy(password: String) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let _ = on_password_threads(move || {
        let stored = DUMMY
            .get_or_init(|| passwords::hash_password("nimbus dummy password").unwrap_or_default());
        StoredHash::from_stored(stored)
            .and_then(|hash| passwords::verify_password(&password, &hash))
    })
    .await;
}

/// Appends to the user's activity log. A failure is logged, never fails the action
/// it records.
pub(crate) async fn record(
    state: &AppState,
    project_id: &str,
    user_id: &str,
    event: &str,
    ip: &str,
    user_agent: &str,
) {
    record_by(state, project_id, user_id, event, "", ip, user_agent).await;
}

/// Appends to the user's activity log what `actor` (`key:ID`, `admin:EMAIL`; empty
/// for the user themself) did to the account.
pub(crate) async fn record_by(
    state: &AppState,
    project_id: &str,
    user_id: &str,
    event: &str,
    actor: &str,
    ip: &str,
    user_agent: &str,
) {
    let log = store::LogRow {
        id: ids::generate(),
        user_id: user_id.to_string(),
        event: event.to_string(),
        actor: actor.chars().take(400).collect(),
        ip: ip.chars().take(64).collect(),
        user_agent: user_agent.chars().take(512).collect(),
        created_at: now_millis(),
    };
    if let Err(err) = store::insert_log(state.db.pool(), project_id, &log).await {
        tracing::warn!(error = %err, event, "activity log entry not written");
    }
}

/// Records an action of the signed-in user, from the device of their session.
async fn record_own(state: &AppState, me: &ResolvedSession, event: &str) {
    let session = &me.session;
    record(
        state,
        &session.project_id,
        &session.user_id,
        event,
        &session.ip,
        &session.user_agent,
    )
    .await;
}

/// The messages that tell every replica a user changed, to log with the change:
/// drop the user's cached sessions (their roles with them), then the event
/// subscribers see, on `account` for the user and on `users` for servers. The user
/// is read through `conn`, inside the change's transaction, as the change left them.
pub(crate) async fn user_changed(
    conn: &mut sqlx::AnyConnection,
    project_id: &str,
    user_id: &str,
) -> AppResult<Vec<BusMessage>> {
    user_updated(conn, project_id, user_id, &[], true).await
}

/// [`user_changed`] named by what changed, as Appwrite names it: one
/// `users.U.update.<field>` event per field of `fields` (`name`, `email`,
/// `password`, `status`, …), and a plain `users.U.update` when nothing more narrow
/// says it (`broad`, or no field). A user gone is `users.U.delete`.
pub(crate) async fn user_updated(
    conn: &mut sqlx::AnyConnection,
    project_id: &str,
    user_id: &str,
    fields: &[&str],
    broad: bool,
) -> AppResult<Vec<BusMessage>> {
    let user = store::find_user(&mut *conn, project_id, user_id).await?;
    let mut messages = vec![user_cache_dropped(project_id, user_id)];
    match &user {
        Some(row) => {
            let payload = crate::services::users::schema::user_value(&row.to_user())
                .into_json()
                .unwrap_or_default();
            for field in fields {
                let event = user_event(project_id, user_id, "update", payload.clone());
                messages.push(BusMessage::Event(event.detailed(field)));
            }
            if broad || fields.is_empty() {
                let event = user_event(project_id, user_id, "update", payload);
                messages.push(BusMessage::Event(event));
            }
        }
        None => {
            let payload = serde_json::json!({ "id": user_id });
            let event = user_event(project_id, user_id, "delete", payload);
            messages.push(BusMessage::Event(event));
        }
    }
    Ok(messages)
}

/// Tells every replica to drop its cached sessions of the user (their roles with
/// them), so a change to the user takes effect at once.
fn user_cache_dropped(project_id: &str, user_id: &str) -> BusMessage {
    BusMessage::UserChanged {
        project_id: project_id.to_string(),
        user_id: user_id.to_string(),
    }
}

/// An event about the user `user_id` or something of theirs (`name` below
/// `users.U`, `pattern` below `users.*`): on `account` for the user, on `users` and
/// `users.U` for keys holding `users.read`.
fn user_event_of(
    project_id: &str,
    user_id: &str,
    name: &str,
    pattern: &str,
    action: &str,
    payload: serde_json::Value,
) -> crate::bus::Event {
    crate::bus::Event {
        channels: vec!["account".into(), "users".into(), format!("users.{user_id}")],
        read_roles: vec![format!("user:{user_id}")],
        key_scope: UsersRead::NAME.into(),
        ..crate::bus::Event::change(
            project_id,
            &format!("users.{user_id}{name}"),
            &format!("users.*{pattern}"),
            action,
            payload,
        )
    }
}

/// `users.U.<action>`.
fn user_event(
    project_id: &str,
    user_id: &str,
    action: &str,
    payload: serde_json::Value,
) -> crate::bus::Event {
    user_event_of(project_id, user_id, "", "", action, payload)
}

/// The `users.U.create` event of a user just written.
pub(crate) fn user_created(user: &User) -> BusMessage {
    let payload = crate::services::users::schema::user_value(user)
        .into_json()
        .unwrap_or_default();
    BusMessage::Event(user_event(&user.project_id, &user.id, "create", payload))
}

/// `users.U.sessions.S.<action>`, with the session as `sessions` shows it: its
/// secret is not part of a session (only its digest is stored, and never shown).
pub(crate) fn session_event(session: &Session, action: &str) -> BusMessage {
    let payload = crate::services::users::schema::session_value(session, None)
        .into_json()
        .unwrap_or_default();
    BusMessage::Event(user_event_of(
        &session.project_id,
        &session.user_id,
        &format!(".sessions.{}", session.id),
        ".sessions.*",
        action,
        payload,
    ))
}

/// `users.U.identities.I.<action>`: a provider account linked to the user
/// (`create`, on an OAuth2 sign-in that linked it) or unlinked (`delete`), with the
/// identity as `accountIdentities` shows it (`payload`).
pub(crate) fn identity_event(
    project_id: &str,
    user_id: &str,
    identity_id: &str,
    action: &str,
    payload: serde_json::Value,
) -> BusMessage {
    BusMessage::Event(user_event_of(
        project_id,
        user_id,
        &format!(".identities.{identity_id}"),
        ".identities.*",
        action,
        payload,
    ))
}

/// A one-time secret sent to a user, as its events show it: without the secret.
pub(crate) struct TokenIssued<'a> {
    pub project_id: &'a str,
    pub user_id: &'a str,
    pub id: &'a str,
    /// `store::RECOVERY`, `store::VERIFICATION`, or a sign-in token's kind.
    pub kind: &'a str,
    pub created_at: i64,
    pub expires_at: i64,
}

/// `users.U.recovery.T.<action>`, `users.U.verification.T.<action>`, or
/// `users.U.tokens.T.<action>` for a sign-in token (magic link, emailed code,
/// OAuth2 hand-over): Appwrite's names. The payload has no secret: events reach
/// webhooks, functions and the user's other devices, and the secret is for the
/// mailbox (or the browser) it was sent to alone.
pub(crate) fn token_event(token: &TokenIssued<'_>, action: &str) -> BusMessage {
    let resource = match token.kind {
        store::RECOVERY => "recovery",
        store::VERIFICATION => "verification",
        _ => "tokens",
    };
    let payload = serde_json::json!({
        "id": token.id,
        "userId": token.user_id,
        "createdAt": crate::graphql::types::datetime(token.created_at).into_json().unwrap_or_default(),
        "expiresAt": crate::graphql::types::datetime(token.expires_at).into_json().unwrap_or_default(),
    });
    BusMessage::Event(user_event_of(
        token.project_id,
        token.user_id,
        &format!(".{resource}.{}", token.id),
        &format!(".{resource}.*"),
        action,
        payload,
    ))
}

/// Which of a user's sessions [`end_sessions`] ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ending<'a> {
    All,
    /// Every one but this (the session that changed the password).
    AllBut(&'a str),
    One(&'a str),
}

/// Ends sessions of a user in `conn` (the change's transaction, begun by
/// [`crate::db::Db::begin_write`] when this is its first statement), answering the
/// `users.U.sessions.S.delete` events of those it ended, read and deleted in that
/// transaction: a session ended meanwhile by another request is announced once.
/// A user has at most the project's session limit (100) of them.
pub(crate) async fn end_sessions(
    conn: &mut sqlx::AnyConnection,
    project_id: &str,
    user_id: &str,
    ending: Ending<'_>,
) -> AppResult<Vec<BusMessage>> {
    let rows = store::list_sessions(&mut *conn, project_id, user_id).await?;
    let mut messages = Vec::new();
    for row in rows {
        let ends = match ending {
            Ending::All => true,
            Ending::AllBut(keep) => row.id != keep,
            Ending::One(id) => row.id == id,
        };
        if ends && store::delete_session(&mut *conn, project_id, user_id, &row.id).await? {
            messages.push(session_event(&row.to_session(), "delete"));
        }
    }
    Ok(messages)
}

/// Commits `tx`, which made, changed or ended sessions of the user, with their
/// events (`ended`, from [`end_sessions`], or [`session_event`]) and the word to
/// drop the user's cached sessions.
pub(crate) async fn commit_session_events(
    state: &AppState,
    tx: sqlx::Transaction<'static, sqlx::Any>,
    project_id: &str,
    user_id: &str,
    mut ended: Vec<BusMessage>,
) -> AppResult<()> {
    ended.push(user_cache_dropped(project_id, user_id));
    commit_logged(state, tx, ended).await
}

/// Commits `tx` with `messages` logged, then drops this replica's cached sessions
/// of every user they name at once (the other replicas as their relays deliver).
pub(crate) async fn commit_logged(
    state: &AppState,
    tx: sqlx::Transaction<'static, sqlx::Any>,
    messages: Vec<BusMessage>,
) -> AppResult<()> {
    let changed: Vec<(String, String)> = messages
        .iter()
        .filter_map(|message| match message {
            BusMessage::UserChanged {
                project_id,
                user_id,
            } => Some((project_id.clone(), user_id.clone())),
            _ => None,
        })
        .collect();
    crate::bus::log::commit(&state.bus, tx, messages).await?;
    for (project_id, user_id) in changed {
        state.sessions.evict_user(&project_id, &user_id);
    }
    Ok(())
}

/// Commits `tx`, which changed `fields` of the user, with the user's change
/// logged ([`user_updated`]) and `also`, what else the change did.
pub(crate) async fn commit_user_update(
    state: &AppState,
    mut tx: sqlx::Transaction<'static, sqlx::Any>,
    project_id: &str,
    user_id: &str,
    fields: &[&str],
    mut also: Vec<BusMessage>,
) -> AppResult<()> {
    let mut messages = user_updated(&mut tx, project_id, user_id, fields, false).await?;
    messages.append(&mut also);
    commit_logged(state, tx, messages).await
}

/// Writes a new user in a transaction of its own, with its `create` event.
pub(crate) async fn insert_new_user(
    state: &AppState,
    project_id: &str,
    new: NewUser,
) -> AppResult<User> {
    let user = prepare_user(state, project_id, new).await?;
    let mut tx = state.db.pool().begin().await?;
    insert_user_in(&mut tx, &user).await?;
    commit_logged(state, tx, vec![user_created(&user)]).await?;
    Ok(user)
}

/// A new user, checked and with its password hashed, not yet written
/// ([`insert_user_in`]): hashing takes its time before any transaction begins.
pub(crate) async fn prepare_user(
    state: &AppState,
    project_id: &str,
    new: NewUser,
) -> AppResult<User> {
    let id = ids::resolve("id", new.id.as_deref())?;
    let email = new
        .email
        .as_deref()
        .map(|e| normalize_email("email", e))
        .transpose()?;
    if let Some(phone) = &new.phone {
        check_phone(phone)?;
    }
    let name = new.name.unwrap_or_default();
    check_name(&name)?;
    let password_hash: Option<String> = match (new.password, new.password_hash) {
        (Some(_), Some(_)) => {
            return Err(AppError::invalid(
                "password",
                "give a password or a hash, not both",
            ));
        }
        (Some(password), None) => {
            let personal = [
                id.as_str(),
                name.as_str(),
                email.as_deref().unwrap_or(""),
                new.phone.as_deref().unwrap_or(""),
            ];
            check_password(&password, &policy(state, project_id).await?, &personal)?;
            Some(hash(password).await?)
        }
        (None, Some(imported)) => Some(imported.to_stored()),
        (None, None) => None,
    };
    let now = now_millis();
    let user = User {
        project_id: project_id.to_string(),
        id,
        name,
        email,
        phone: new.phone,
        password_updated_at: password_hash.as_ref().map(|_| now),
        password_hash,
        blocked: false,
        email_verified: false,
        phone_verified: false,
        labels: Vec::new(),
        prefs: Default::default(),
        accessed_at: None,
        mfa: false,
        created_at: now,
        updated_at: now,
    };
    Ok(user)
}

/// Creates, inside the caller's transaction, the user of an invitation accepted
/// through its emailed link: no password, and the email verified, since the link
/// reached it. `email` is normalized and `name` checked by the caller.
pub(crate) async fn insert_invited_user(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    project_id: &str,
    email: &str,
    name: &str,
) -> AppResult<User> {
    insert_passwordless_user(tx, project_id, Some(email), name, true).await
}

/// Creates, inside the caller's transaction, a user without a password: one an
/// invitation or a provider account brings, created in the transaction that links
/// it, so a failure or a concurrent sign-up leaves neither half. `email` is
/// normalized and `name` checked by the caller; the caller logs [`user_created`].
/// A clash (someone signed up with the email meanwhile) is a `Conflict`.
pub(crate) async fn insert_passwordless_user(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    project_id: &str,
    email: Option<&str>,
    name: &str,
    email_verified: bool,
) -> AppResult<User> {
    let user = passwordless_user(project_id, email, name, email_verified);
    insert_user_in(tx, &user).await?;
    Ok(user)
}

/// A new user without a password, not yet written ([`insert_user_in`]): for a
/// change that must know the user's id before its transaction begins.
pub(crate) fn passwordless_user(
    project_id: &str,
    email: Option<&str>,
    name: &str,
    email_verified: bool,
) -> User {
    let now = now_millis();
    User {
        project_id: project_id.to_string(),
        id: ids::generate(),
        name: name.to_string(),
        email: email.map(str::to_string),
        phone: None,
        password_updated_at: None,
        password_hash: None,
        blocked: false,
        email_verified: email_verified && email.is_some(),
        phone_verified: false,
        labels: Vec::new(),
        prefs: Default::default(),
        accessed_at: None,
        mfa: false,
        created_at: now,
        updated_at: now,
    }
}

/// Writes `user` (from [`prepare_user`] or [`passwordless_user`]) inside the
/// caller's transaction; the caller logs [`user_created`]. A clash on its id, email
/// or phone is a `Conflict` on the user naming what can clash.
pub(crate) async fn insert_user_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user: &User,
) -> AppResult<()> {
    // A user id is never given out twice: grants to `user:ID` outlive the user.
    claimed_ids::claim(
        &mut **tx,
        &user.project_id,
        claimed_ids::Kind::User,
        &user.id,
    )
    .await
    .conflict_as("user", &user.id)?;
    let clash = user
        .email
        .as_deref()
        .or(user.phone.as_deref())
        .unwrap_or(&user.id);
    store::insert_user(&mut **tx, user)
        .await
        .conflict_as("user", clash)
}

// ---- server side (API keys with users.* scopes) ----

pub async fn create_user(
    state: &AppState,
    grant: &Grant<UsersWrite>,
    new: NewUser,
) -> AppResult<User> {
    let project_id = grant.project();
    insert_new_user(state, project_id, new).await
}

pub async fn get_user(state: &AppState, grant: &Grant<UsersRead>, id: &str) -> AppResult<User> {
    let project_id = grant.project();
    load_user(state, project_id, id).await
}

async fn load_user(state: &AppState, project_id: &str, id: &str) -> AppResult<User> {
    ids::validate("id", id)?;
    store::find_user(state.db.pool(), project_id, id)
        .await?
        .map(|row| row.to_user())
        .ok_or_else(|| AppError::NotFound {
            what: "user",
            id: id.into(),
        })
}

pub async fn list_users(
    state: &AppState,
    grant: &Grant<UsersRead>,
    search: Option<&str>,
    page: &Page,
    with_total: bool,
) -> AppResult<(Vec<User>, i64)> {
    let project_id = grant.project();
    let search = search.map(str::trim).filter(|s| !s.is_empty());
    if search.is_some_and(|s| s.len() > 256) {
        return Err(AppError::invalid("search", "at most 256 characters"));
    }
    let rows = store::list_users(
        state.db.pool(),
        state.db.dialect(),
        project_id,
        search,
        page,
    )
    .await?;
    let total = if with_total {
        store::count_users(state.db.pool(), state.db.dialect(), project_id, search).await?
    } else {
        0
    };
    Ok((rows.iter().map(|r| r.to_user()).collect(), total))
}

/// Applies changes as a key with `users.write`: anything, including blocking.
pub async fn update_user(
    state: &AppState,
    grant: &Grant<UsersWrite>,
    id: &str,
    changes: UserChanges,
) -> AppResult<User> {
    let project_id = grant.project();
    let mut changes = changes;
    // A server may take a user's password away (Appwrite's `password: ""`): the
    // user then signs in only by other means.
    if changes.password.as_deref() == Some("") {
        changes.password = None;
        changes.clear_password = true;
    }
    apply_changes(state, project_id, id, changes).await
}

/// The user whose mailbox a sign-in just proved (a provider's verified email, an
/// accepted invitation link): an account whose email was never verified is claimed
/// first ([`UserChanges::claim`]).
pub(crate) async fn with_proven_mailbox(
    state: &AppState,
    project_id: &str,
    user: User,
) -> AppResult<User> {
    if user.email_verified {
        return Ok(user);
    }
    let claim = UserChanges {
        claim: true,
        ..Default::default()
    };
    apply_changes(state, project_id, &user.id, claim).await
}

/// Checks and makes `changes` to the user `id` in one transaction of its own;
/// prepared again from the row as it is then when another write changed it
/// between the reading and the writing (a few times at most).
pub(crate) async fn apply_changes(
    state: &AppState,
    project_id: &str,
    id: &str,
    changes: UserChanges,
) -> AppResult<User> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let change = prepare_changes(state, project_id, id, changes.clone()).await?;
        let mut tx = state.db.begin_write().await?;
        match change.write(&mut tx).await {
            Ok((user, messages)) => {
                commit_logged(state, tx, messages).await?;
                return Ok(user);
            }
            Err(err) if attempts < 3 && is_changed_meanwhile(&err) => continue,
            Err(err) => return Err(err),
        }
    }
}

/// A user changed between the reading and the writing of a change to it.
fn changed_meanwhile() -> AppError {
    AppError::Busy { retry_after: 1 }
}

fn is_changed_meanwhile(err: &AppError) -> bool {
    matches!(err, AppError::Busy { retry_after: 1 })
}

/// A change to a user, checked and with its password hashed, to write in a
/// transaction ([`PreparedChange::write`]) with whatever else must go with it.
pub(crate) struct PreparedChange {
    project_id: String,
    id: String,
    user: User,
    /// The row's `updated_at` as it was read: the write applies only over it.
    read_at: i64,
    history: Vec<String>,
    fields: Vec<&'static str>,
    broad: bool,
    claimed: bool,
    email_changed: bool,
    ends_sessions: bool,
    keep_session: Option<String>,
    reset_mfa: bool,
    token: Option<String>,
    also: Vec<BusMessage>,
}

/// Checks `changes` to the user `id` against the user as it is; writes nothing.
pub(crate) async fn prepare_changes(
    state: &AppState,
    project_id: &str,
    id: &str,
    changes: UserChanges,
) -> AppResult<PreparedChange> {
    ids::validate("id", id)?;
    // What the change is named by (`users.U.update.<field>`); a change of
    // verification alone is a plain `users.U.update`.
    let fields: Vec<&'static str> = [
        ("name", changes.name.is_some()),
        ("email", changes.email.is_some()),
        ("phone", changes.phone.is_some()),
        (
            "password",
            changes.password.is_some() || changes.clear_password,
        ),
        ("status", changes.blocked.is_some()),
        ("labels", changes.labels.is_some()),
        ("prefs", changes.prefs.is_some()),
        ("mfa", changes.mfa.is_some() || changes.reset_mfa),
    ]
    .into_iter()
    .filter_map(|(field, changed)| changed.then_some(field))
    .collect();
    let broad =
        changes.claim || changes.email_verified.is_some() || changes.phone_verified.is_some();
    let also = changes.also;
    let row = store::find_user(state.db.pool(), project_id, id)
        .await?
        .ok_or_else(|| AppError::NotFound {
            what: "user",
            id: id.into(),
        })?;
    let mut user = row.to_user();
    let read_at = user.updated_at;
    let mut history = row.password_history();
    // Later than the version read, whatever the clock says: every write changes it.
    let now = now_millis().max(read_at.saturating_add(1));
    let claimed = changes.claim && !user.email_verified && user.email.is_some();
    if claimed {
        user.password_hash = None;
        user.password_updated_at = None;
        history.clear();
        user.mfa = false;
    }
    if changes.claim {
        user.email_verified = true;
    }
    if let Some(name) = changes.name {
        check_name(&name)?;
        user.name = name;
    }
    let email_changed = change_contact(&mut user, changes.email, changes.phone)?;
    let password_changed = changes.password.is_some() || changes.clear_password;
    if let Some(password) = changes.password {
        change_password(state, project_id, &mut user, &mut history, password, now).await?;
    } else if changes.clear_password {
        user.password_hash = None;
        user.password_updated_at = None;
    }
    if let Some(blocked) = changes.blocked {
        user.blocked = blocked;
    }
    if let Some(verified) = changes.email_verified {
        user.email_verified = verified;
    }
    if let Some(verified) = changes.phone_verified {
        user.phone_verified = verified;
    }
    if let Some(labels) = changes.labels {
        check_labels(&labels)?;
        // Each label once, in the order first given: a repeated label would show
        // twice and still grant its role only once.
        let mut unique: Vec<String> = Vec::with_capacity(labels.len());
        for label in labels {
            if !unique.contains(&label) {
                unique.push(label);
            }
        }
        user.labels = unique;
    }
    if let Some(prefs) = changes.prefs {
        check_prefs(&prefs)?;
        user.prefs = prefs;
    }
    if let Some(mfa) = changes.mfa {
        user.mfa = mfa;
    }
    if changes.reset_mfa {
        user.mfa = false;
    }
    user.updated_at = now;
    // Whoever held the old password is signed out, unless the project lets
    // sessions outlive a new password (read before the write lock is taken).
    let ends_sessions = password_changed && policy(state, project_id).await?.invalidate_sessions;
    Ok(PreparedChange {
        project_id: project_id.to_string(),
        id: id.to_string(),
        user,
        read_at,
        history,
        fields,
        broad,
        claimed,
        email_changed,
        ends_sessions,
        keep_session: changes.keep_session,
        reset_mfa: changes.reset_mfa,
        token: changes.token,
        also,
    })
}

impl PreparedChange {
    /// Writes the change in `tx`, which must be a write transaction
    /// ([`crate::db::Db::begin_write`]: sessions are read, then ended, in it).
    /// Answers the user as changed and the events to log with the commit.
    pub(crate) async fn write(
        self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    ) -> AppResult<(User, Vec<BusMessage>)> {
        let PreparedChange {
            project_id,
            id,
            user,
            read_at,
            history,
            fields,
            broad,
            claimed,
            email_changed,
            ends_sessions,
            keep_session,
            reset_mfa,
            token,
            mut also,
        } = self;
        let (project_id, id) = (project_id.as_str(), id.as_str());
        if let Some(token) = &token
            && !store::delete_token(&mut **tx, project_id, token).await?
        {
            // Used up by another request since it was read.
            return Err(AppError::Invalid {
                code: codes::INVALID_TOKEN,
                field: "secret".into(),
                reason: "the secret is wrong, was already used, or belongs to another user".into(),
            });
        }
        let mut messages = Vec::new();
        if claimed {
            // Ended one by one first, so each is announced.
            messages.extend(end_sessions(tx, project_id, id, Ending::All).await?);
            store::claim_unverified_account(tx, project_id, id).await?;
        }
        if email_changed {
            // What was mailed to the old address is not for the new one: a
            // verification link would verify an address nobody proved, a magic link
            // or recovery would let the old mailbox in.
            store::delete_tokens_of(&mut **tx, project_id, id, &store::MAILED_TOKENS).await?;
        }
        if email_changed || claimed || fields.contains(&"password") {
            store::void_invitation_links(&mut **tx, project_id, id).await?;
        }
        let written = store::update_user(&mut **tx, &user, &history, read_at)
            .await
            .conflict_as("user", user.email.as_deref().unwrap_or(&user.id))?;
        if !written {
            return Err(match store::find_user(&mut **tx, project_id, id).await? {
                // Changed by another write since it was read: prepared again
                // from the row as it is now ([`apply_changes`]), or retried by
                // the client.
                Some(_) => changed_meanwhile(),
                None => AppError::NotFound {
                    what: "user",
                    id: id.into(),
                },
            });
        }
        if reset_mfa {
            store::remove_second_factor(&mut **tx, project_id, id).await?;
        }
        if ends_sessions {
            let ending = match keep_session.as_deref() {
                Some(keep) => Ending::AllBut(keep),
                None => Ending::All,
            };
            messages.extend(end_sessions(tx, project_id, id, ending).await?);
        }
        messages.extend(user_updated(tx, project_id, id, &fields, broad).await?);
        messages.append(&mut also);
        Ok((user, messages))
    }
}

/// Applies new contact details (an empty value removes one); a changed address or
/// number is no longer verified. Answers whether the email changed.
fn change_contact(
    user: &mut User,
    email: Option<String>,
    phone: Option<String>,
) -> AppResult<bool> {
    let mut email_changed = false;
    if let Some(email) = email {
        if email.is_empty() {
            user.email = None;
            user.email_verified = false;
            email_changed = true;
        } else {
            let email = normalize_email("email", &email)?;
            if user.email.as_deref() != Some(email.as_str()) {
                user.email_verified = false;
                email_changed = true;
            }
            user.email = Some(email);
        }
    }
    if let Some(phone) = phone {
        if phone.is_empty() {
            user.phone = None;
            user.phone_verified = false;
        } else {
            check_phone(&phone)?;
            if user.phone.as_deref() != Some(phone.as_str()) {
                user.phone_verified = false;
            }
            user.phone = Some(phone);
        }
    }
    Ok(email_changed)
}

/// Sets a new password that passes the project's policy and repeats none of the
/// recent ones; the old hash joins the history.
async fn change_password(
    state: &AppState,
    project_id: &str,
    user: &mut User,
    history: &mut Vec<String>,
    password: String,
    now: i64,
) -> AppResult<()> {
    let policy = policy(state, project_id).await?;
    let personal = [
        user.id.as_str(),
        user.name.as_str(),
        user.email.as_deref().unwrap_or(""),
        user.phone.as_deref().unwrap_or(""),
    ];
    check_password(&password, &policy, &personal)?;
    let recent = user
        .password_hash
        .iter()
        .chain(history.iter())
        .take(policy.password_history as usize);
    for stored in recent {
        if verify(password.clone(), stored.clone())
            .await
            .unwrap_or(false)
        {
            return Err(weak_password(
                codes::PASSWORD_RECENTLY_USED,
                format!(
                    "must differ from your last {} passwords",
                    policy.password_history
                ),
            ));
        }
    }
    if let Some(old) = user.password_hash.take() {
        history.insert(0, old);
        history.truncate(20);
    }
    user.password_hash = Some(hash(password).await?);
    user.password_updated_at = Some(now);
    Ok(())
}

/// Deletes a user with their sessions; their open sessions stop working at once.
/// Their memberships go with them, each announced to its team as a deleted
/// membership is.
pub async fn delete_user(state: &AppState, grant: &Grant<UsersWrite>, id: &str) -> AppResult<()> {
    ids::validate("id", id)?;
    remove_user(state, grant.project(), id).await
}

/// `deleteAccount`: the signed-in user deletes their own account, as a server's
/// `deleteUser` would (sessions, memberships and identities go with it). Not
/// with a JWT: a token handed to another service does not end its account.
pub async fn delete_own_account(state: &AppState, me: &ResolvedSession) -> AppResult<String> {
    require_session_secret(me, "delete the account")?;
    remove_user(state, &me.user.project_id, &me.user.id).await?;
    Ok(me.user.id.clone())
}

/// Deletes a user with what hangs on it, in one transaction, and tells every
/// replica (its sessions stop working at once).
async fn remove_user(state: &AppState, project_id: &str, id: &str) -> AppResult<()> {
    let mut tx = state.db.pool().begin().await?;
    let gone = state
        .memberships
        .gone_with_user(&mut tx, state.db.dialect(), project_id, id)
        .await?;
    if !store::delete_user(&mut *tx, project_id, id).await? {
        return Err(AppError::NotFound {
            what: "user",
            id: id.into(),
        });
    }
    commit_user_update(state, tx, project_id, id, &[], gone).await?;
    Ok(())
}

pub async fn list_user_sessions(
    state: &AppState,
    grant: &Grant<UsersRead>,
    user_id: &str,
) -> AppResult<Vec<Session>> {
    let project_id = grant.project();
    load_user(state, project_id, user_id).await?;
    sessions_of(state, project_id, user_id).await
}

async fn sessions_of(state: &AppState, project_id: &str, user_id: &str) -> AppResult<Vec<Session>> {
    let rows = store::list_sessions(state.db.pool(), project_id, user_id).await?;
    Ok(rows.iter().map(|r| r.to_session()).collect())
}

/// Deletes every session of a user (signs them out everywhere).
pub async fn delete_user_sessions(
    state: &AppState,
    grant: &Grant<UsersWrite>,
    user_id: &str,
) -> AppResult<u64> {
    let project_id = grant.project();
    load_user(state, project_id, user_id).await?;
    let mut tx = state.db.begin_write().await?;
    let ended = end_sessions(&mut tx, project_id, user_id, Ending::All).await?;
    let deleted = ended.len() as u64;
    commit_session_events(state, tx, project_id, user_id, ended).await?;
    Ok(deleted)
}

/// `deleteUserSession`: ends one session of a user (a server signing out one
/// device); answers its id.
pub async fn delete_user_session(
    state: &AppState,
    grant: &Grant<UsersWrite>,
    user_id: &str,
    session_id: &str,
) -> AppResult<String> {
    let project_id = grant.project();
    ids::validate("sessionId", session_id)?;
    load_user(state, project_id, user_id).await?;
    let mut tx = state.db.begin_write().await?;
    let ended = end_sessions(&mut tx, project_id, user_id, Ending::One(session_id)).await?;
    if ended.is_empty() {
        return Err(AppError::NotFound {
            what: "session",
            id: session_id.to_string(),
        });
    }
    commit_session_events(state, tx, project_id, user_id, ended).await?;
    Ok(session_id.to_string())
}

// ---- the account side: the caller acting on itself ----

/// `createAccount`: a new user with email and password.
pub async fn sign_up(
    state: &AppState,
    project_id: &str,
    id: Option<String>,
    email: &str,
    password: String,
    name: Option<String>,
    client: &ClientInfo,
) -> AppResult<User> {
    require_method(state, project_id, |p| p.email_password, "email-password").await?;
    state
        .rate_limiter
        .hit(
            &format!("signup:{project_id}:{}", client_key(&client.ip)),
            SIGN_UP_LIMIT,
        )
        .await?;
    let user = insert_new_user(
        state,
        project_id,
        NewUser {
            id,
            email: Some(email.to_string()),
            name,
            password: Some(password),
            ..Default::default()
        },
    )
    .await?;
    record(
        state,
        project_id,
        &user.id,
        "user.create",
        &client.ip,
        &client.user_agent,
    )
    .await;
    Ok(user)
}

/// `createEmailPasswordSession`: the same error for an unknown email and a wrong
/// password, so the answer does not tell which emails have accounts.
pub async fn sign_in_with_password(
    state: &AppState,
    project_id: &str,
    email: &str,
    password: String,
    client: ClientInfo,
) -> AppResult<(Session, String)> {
    let invalid = || AppError::InvalidCredentials;
    require_method(state, project_id, |p| p.email_password, "email-password").await?;
    let email = normalize_email("email", email)?;
    // Each limit keys the client by its address (its /64 for IPv6); all are
    // counted before any argon2 work.
    let from = client_key(&client.ip);
    let limiter = &state.rate_limiter;
    // The client's own limit first: past it, a client's guesses at new addresses
    // leave no window behind each.
    limiter
        .hit(
            &format!("signin-client:{project_id}:{from}"),
            SIGN_IN_PER_CLIENT,
        )
        .await?;
    let attempts_here = format!("signin:{project_id}:{email}:{from}");
    limiter.hit(&attempts_here, SIGN_IN_LIMIT).await?;
    let account_limit = limiter
        .hit(
            &format!("signin-account:{project_id}:{email}"),
            SIGN_IN_PER_ACCOUNT,
        )
        .await;
    if let Err(refused) = account_limit {
        // Guesses spread over many addresses close the account to strangers, not
        // to where its owner signs in: an address one of the user's sessions was
        // opened from keeps its own limits (the two above), so a crowd guessing a
        // user's password does not lock the user out at home.
        if !owner_signs_in_from(state, project_id, &email, &from).await? {
            return Err(refused);
        }
    }
    if password.len() > passwords::MAX_PASSWORD_BYTES {
        return Err(invalid());
    }
    let row = store::find_user_by_email(state.db.pool(), project_id, &email).await?;
    // Without an account or a password, the same argon2 check runs against a dummy
    // hash, so the time taken reveals neither.
    let Some(row) = row else {
        verify_dummy(password).await;
        return Err(invalid());
    };
    let user = row.to_user();
    let Some(stored) = user.password_hash.clone() else {
        verify_dummy(password).await;
        return Err(invalid());
    };
    if !verify(password.clone(), stored.clone()).await? {
        return Err(invalid());
    }
    // The right password: the attempts from here were the owner's, and their
    // count starts again (as Appwrite's), so signing in often never locks a user
    // out; guesses still stop at the tenth wrong one in a row.
    limiter.forget(&attempts_here).await;
    if user.blocked {
        return Err(AppError::UserBlocked);
    }
    // Imported hashes (and old argon2 parameters) are replaced on the first sign-in.
    if StoredHash::from_stored(&stored).is_ok_and(|h| h.needs_rehash()) {
        let rehashed = hash(password).await?;
        store::rehash_password(state.db.pool(), project_id, &user.id, &stored, &rehashed).await?;
    }
    create_session(state, &user, "email", client).await
}

/// Whether a session of the user with `email` was opened from the client `from`
/// (as [`client_key`] names it): their own device's network.
async fn owner_signs_in_from(
    state: &AppState,
    project_id: &str,
    email: &str,
    from: &str,
) -> AppResult<bool> {
    let Some(row) = store::find_user_by_email(state.db.pool(), project_id, email).await? else {
        return Ok(false);
    };
    let sessions = sessions_of(state, project_id, &row.to_user().id).await?;
    Ok(sessions
        .iter()
        .any(|session| client_key(&session.ip) == from))
}

/// `createAnonymousSession`: a user with no email or password, signed in.
pub async fn sign_in_anonymously(
    state: &AppState,
    project_id: &str,
    client: ClientInfo,
) -> AppResult<(Session, String)> {
    require_method(state, project_id, |p| p.anonymous, "anonymous").await?;
    let key = format!("anonymous:{project_id}:{}", client_key(&client.ip));
    state.rate_limiter.hit(&key, ANONYMOUS_LIMIT).await?;
    // The user and its session are one write: a user nobody holds a session of
    // could never be signed in as again.
    let user = prepare_user(state, project_id, NewUser::default()).await?;
    let policy = policy(state, project_id).await?;
    let mut tx = state.db.pool().begin().await?;
    insert_user_in(&mut tx, &user).await?;
    let (session, secret, mut messages) =
        insert_session_in(&mut tx, &policy, &user, "anonymous", &client).await?;
    messages.insert(0, user_created(&user));
    commit_logged(state, tx, messages).await?;
    session_opened(state, &user, &session).await;
    Ok((session, secret))
}

/// Signs `user` in with a session of its own transaction.
pub(crate) async fn create_session(
    state: &AppState,
    user: &User,
    provider: &str,
    client: ClientInfo,
) -> AppResult<(Session, String)> {
    let policy = policy(state, &user.project_id).await?;
    let mut tx = state.db.pool().begin().await?;
    let (session, secret, messages) =
        insert_session_in(&mut tx, &policy, user, provider, &client).await?;
    commit_logged(state, tx, messages).await?;
    session_opened(state, user, &session).await;
    Ok((session, secret))
}

/// Writes a new session of `user` in `tx`, the change that signs them in (with
/// the user it creates, the token it uses up, the claim it makes), so that a
/// crash or a refusal leaves neither half. Past the project's maximum, the oldest
/// sessions end in it. Answers the session, its secret and the events to log.
pub(crate) async fn insert_session_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    policy: &AuthSettings,
    user: &User,
    provider: &str,
    client: &ClientInfo,
) -> AppResult<(Session, String, Vec<BusMessage>)> {
    let now = now_millis();
    let lifetime_ms =
        i64::try_from(policy.session_length_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let session = Session {
        project_id: user.project_id.clone(),
        id: ids::generate(),
        user_id: user.id.clone(),
        provider: provider.to_string(),
        ip: client.ip.chars().take(64).collect(),
        user_agent: client.user_agent.chars().take(512).collect(),
        expires_at: now.saturating_add(lifetime_ms),
        mfa_verified: false,
        created_at: now,
        updated_at: now,
    };
    let (secret, digest) = secrets::new_secret(SecretKind::Session, &session.id);
    store::insert_session(&mut **tx, &session, &digest).await?;
    let mut messages = vec![session_event(&session, "create")];
    let sessions = store::list_sessions(&mut **tx, &user.project_id, &user.id).await?;
    // A server's JWT rides on a session of provider `server` that does not count
    // towards the limit: a backend minting JWTs must not sign its users out.
    let counted = sessions
        .iter()
        .filter(|s| s.provider != SERVER_JWT_PROVIDER);
    for old in counted.skip(policy.max_sessions.max(1) as usize) {
        if store::delete_session(&mut **tx, &user.project_id, &user.id, &old.id).await? {
            messages.push(session_event(&old.to_session(), "delete"));
        }
    }
    if messages.len() > 1 {
        messages.push(user_cache_dropped(&user.project_id, &user.id));
    }
    Ok((session, secret, messages))
}

/// What follows a committed sign-in, best effort: the user's last access and the
/// activity log's `session.create.<provider>`.
pub(crate) async fn session_opened(state: &AppState, user: &User, session: &Session) {
    let _ = store::touch_user(
        state.db.pool(),
        &user.project_id,
        &user.id,
        session.created_at,
    )
    .await;
    record(
        state,
        &user.project_id,
        &user.id,
        &format!("session.create.{}", session.provider),
        &session.ip,
        &session.user_agent,
    )
    .await;
}

/// The session a secret opens in `project_id`, with its user; cached.
pub async fn resolve_session(
    state: &AppState,
    project_id: &str,
    secret: &str,
) -> AppResult<Arc<ResolvedSession>> {
    let digest = secrets::digest_bytes(secret);
    let resolved = match state.sessions.get(&digest) {
        Some(resolved) => resolved,
        None => {
            // Taken before the load: a change that lands meanwhile keeps the
            // loaded (maybe stale) session out of the cache.
            let generation = state.sessions.generation();
            let resolved = load_by_secret(state, project_id, secret).await?;
            state.sessions.insert(digest, resolved.clone(), generation);
            resolved
        }
    };
    if resolved.session.project_id != project_id {
        return Err(AppError::InvalidSession);
    }
    check_usable(&resolved)?;
    Ok(resolved)
}

/// The session a secret opens, as now stored (past the cache): for a long-lived
/// connection re-checking the credential it holds.
pub async fn verify_session(
    state: &AppState,
    project_id: &str,
    secret: &str,
) -> AppResult<Arc<ResolvedSession>> {
    let resolved = load_by_secret(state, project_id, secret).await?;
    check_usable(&resolved)?;
    Ok(resolved)
}

async fn load_by_secret(
    state: &AppState,
    project_id: &str,
    secret: &str,
) -> AppResult<Arc<ResolvedSession>> {
    let session_id = secrets::id_of(SecretKind::Session, secret).ok_or(AppError::InvalidSession)?;
    if ids::validate("session", session_id).is_err() {
        return Err(AppError::InvalidSession);
    }
    let row = store::find_session(state.db.pool(), project_id, session_id)
        .await?
        .ok_or(AppError::InvalidSession)?;
    if !secrets::matches(secret, &row.secret_hash) {
        return Err(AppError::InvalidSession);
    }
    Ok(Arc::new(load_resolved(state, row.to_session()).await?))
}

/// The session's user and confirmed memberships, loaded now.
async fn load_resolved(state: &AppState, session: Session) -> AppResult<ResolvedSession> {
    let pool = state.db.pool();
    let user = store::find_user(pool, &session.project_id, &session.user_id)
        .await?
        .ok_or(AppError::InvalidSession)?
        .to_user();
    let memberships = state
        .memberships
        .of_user(state, &session.project_id, &user.id, true)
        .await?;
    Ok(ResolvedSession {
        session,
        user,
        memberships,
        by_jwt: false,
        jwt_expires_at: None,
    })
}

fn check_usable(resolved: &ResolvedSession) -> AppResult<()> {
    if resolved.session.expires_at <= now_millis() {
        return Err(AppError::SessionExpired);
    }
    if resolved.user.blocked {
        return Err(AppError::UserBlocked);
    }
    Ok(())
}

/// Refuses what a JWT may not do. A JWT is a 15-minute delegation to a backend: it
/// acts on the user's data, but it does not mint JWTs (one would renew itself for
/// the life of its session), open sessions, or change what guards the account
/// without the password. Appwrite refuses the same: its JWTs carry no session secret.
pub fn require_session_secret(me: &ResolvedSession, what: &str) -> AppResult<()> {
    if me.by_jwt {
        return Err(AppError::PermissionDenied {
            reason: format!("a JWT cannot {what}; use the session's own secret"),
        });
    }
    Ok(())
}

/// A JWT for the caller's session: 15 minutes of acting as this user, for a backend.
/// Only the session's own secret mints one.
pub fn issue_jwt(
    state: &AppState,
    me: &ResolvedSession,
    duration_secs: Option<i64>,
) -> AppResult<(String, i64)> {
    require_session_secret(me, "create a JWT")?;
    let ttl = jwt_ttl(duration_secs)?;
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    let token = state.jwt.issue(
        &me.session.project_id,
        &me.user.id,
        &me.session.id,
        now,
        ttl,
    );
    Ok((token, i64::try_from((now + ttl) * 1000).unwrap_or(i64::MAX)))
}

/// How long a JWT lasts: `duration_secs` (1 to [`USER_JWT_MAX_SECS`]), or 15
/// minutes when none is given.
fn jwt_ttl(duration_secs: Option<i64>) -> AppResult<u64> {
    match duration_secs {
        None => Ok(crate::auth::jwt::DEFAULT_TTL_SECS),
        Some(secs) if (1..=USER_JWT_MAX_SECS).contains(&secs) => Ok(secs.unsigned_abs()),
        Some(_) => Err(AppError::invalid(
            "duration",
            format!("between 1 and {USER_JWT_MAX_SECS} seconds"),
        )),
    }
}

/// The provider of the session a server's JWT for a user rides on.
const SERVER_JWT_PROVIDER: &str = "server";

/// Longest a JWT a server mints for a user lasts.
pub const USER_JWT_MAX_SECS: i64 = 3600;

/// `createUserJWT`: a JWT acting as the user for `duration_secs` (15 minutes when
/// none, an hour at most), minted by a server (`actor` names it in the user's
/// activity log). It rides on a session of its own (provider `server`, past the
/// second factor, ending with the JWT), so signing the user out, blocking or
/// deleting them ends it too, and the user sees it among their sessions; its
/// secret is never handed out, and it does not count towards the session limit.
pub async fn issue_user_jwt(
    state: &AppState,
    grant: &Grant<UsersWrite>,
    user_id: &str,
    duration_secs: Option<i64>,
    actor: &str,
    client: &ClientInfo,
) -> AppResult<(String, i64)> {
    let ttl = jwt_ttl(duration_secs)?;
    let project_id = grant.project();
    let user = load_user(state, project_id, user_id).await?;
    if user.blocked {
        return Err(AppError::UserBlocked);
    }
    let now_unix = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    let now = now_millis();
    let expires_at =
        i64::try_from(now_unix.saturating_add(ttl).saturating_mul(1000)).unwrap_or(i64::MAX);
    let session = Session {
        project_id: project_id.to_string(),
        id: ids::generate(),
        user_id: user.id.clone(),
        provider: SERVER_JWT_PROVIDER.into(),
        ip: client.ip.chars().take(64).collect(),
        user_agent: client.user_agent.chars().take(512).collect(),
        expires_at,
        mfa_verified: true,
        created_at: now,
        updated_at: now,
    };
    // The session's own secret is thrown away: only the JWT opens it.
    let (_, digest) = secrets::new_secret(SecretKind::Session, &session.id);
    let mut tx = state.db.begin_write().await?;
    // They count towards no limit, so a backend minting a JWT per request would
    // keep every one: the expired ones go as the next is made.
    store::delete_expired_sessions(&mut *tx, project_id, &user.id, SERVER_JWT_PROVIDER, now)
        .await?;
    store::insert_session(&mut *tx, &session, &digest).await?;
    store::mark_session_mfa_verified(&mut *tx, project_id, &session.id).await?;
    commit_logged(state, tx, vec![session_event(&session, "create")]).await?;
    let token = state
        .jwt
        .issue(project_id, &user.id, &session.id, now_unix, ttl);
    record_by(
        state,
        project_id,
        &user.id,
        "jwt.create",
        actor,
        &client.ip,
        &client.user_agent,
    )
    .await;
    Ok((token, expires_at))
}

/// The session a JWT was issued for, if the JWT is valid and the session still is,
/// and when the JWT expires (milliseconds since the epoch).
pub async fn resolve_jwt(
    state: &AppState,
    project_id: &str,
    token: &str,
) -> AppResult<(Arc<ResolvedSession>, i64)> {
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    let claims = state
        .jwt
        .verify(project_id, token, now)
        .map_err(|err| match err {
            crate::auth::jwt::JwtError::Expired => AppError::JwtExpired,
            crate::auth::jwt::JwtError::Invalid => AppError::InvalidJwt,
        })?;
    let row = store::find_session(state.db.pool(), project_id, &claims.session_id)
        .await?
        .filter(|row| row.user_id == claims.user_id)
        .ok_or(AppError::InvalidJwt)?;
    let mut resolved = load_resolved(state, row.to_session()).await?;
    resolved.by_jwt = true;
    check_usable(&resolved)?;
    let expires_at = i64::try_from(claims.expires_at.saturating_mul(1000)).unwrap_or(i64::MAX);
    resolved.jwt_expires_at = Some(expires_at);
    Ok((Arc::new(resolved), expires_at))
}

/// A user's session as a delegation, for work that runs on their behalf after the
/// request that asked for it (an asynchronous function execution): loaded now, so
/// it fails when the session ended or expired or the user was blocked or deleted,
/// and held as a JWT of it would be, acting on the user's data but not on their
/// credentials or sessions.
pub async fn delegated_session(
    state: &AppState,
    project_id: &str,
    user_id: &str,
    session_id: &str,
) -> AppResult<Arc<ResolvedSession>> {
    let row = store::find_session(state.db.pool(), project_id, session_id)
        .await?
        .filter(|row| row.user_id == user_id)
        .ok_or(AppError::InvalidSession)?;
    let mut resolved = load_resolved(state, row.to_session()).await?;
    resolved.by_jwt = true;
    check_usable(&resolved)?;
    Ok(Arc::new(resolved))
}

/// The same session as now stored: for long-lived connections (subscriptions) when
/// their user changed. Fails when it was signed out, or the user blocked or deleted.
pub async fn reload_session(
    state: &AppState,
    current: &ResolvedSession,
) -> AppResult<Arc<ResolvedSession>> {
    let session = &current.session;
    let row = store::find_session(state.db.pool(), &session.project_id, &session.id)
        .await?
        .ok_or(AppError::InvalidSession)?;
    let mut resolved = load_resolved(state, row.to_session()).await?;
    // A JWT's limits outlive a reload of the session it was minted from.
    resolved.by_jwt = current.by_jwt;
    resolved.jwt_expires_at = current.jwt_expires_at;
    check_usable(&resolved)?;
    Ok(Arc::new(resolved))
}

/// The signed-in user's own record, fresh from the database.
pub async fn own_user(state: &AppState, me: &ResolvedSession) -> AppResult<User> {
    load_user(state, &me.user.project_id, &me.user.id).await
}

pub async fn own_sessions(state: &AppState, me: &ResolvedSession) -> AppResult<Vec<Session>> {
    sessions_of(state, &me.user.project_id, &me.user.id).await
}

/// Deletes one of the caller's sessions (`current` names the one in use).
pub async fn delete_own_session(
    state: &AppState,
    me: &ResolvedSession,
    id: &str,
) -> AppResult<String> {
    let id = if id == "current" {
        me.session.id.clone()
    } else {
        id.to_string()
    };
    ids::validate("id", &id)?;
    let (project_id, user_id) = (&me.user.project_id, &me.user.id);
    let mut tx = state.db.begin_write().await?;
    let ended = end_sessions(&mut tx, project_id, user_id, Ending::One(&id)).await?;
    if ended.is_empty() {
        return Err(AppError::NotFound {
            what: "session",
            id,
        });
    }
    commit_session_events(state, tx, project_id, user_id, ended).await?;
    record_own(state, me, "session.delete").await;
    Ok(id)
}

/// `updateSession`: one of the caller's sessions (`current`: this one) lasts the
/// project's session length again from now, as Appwrite's `updateSession`
/// extends it. Not through a JWT (it would renew the session it rides on past
/// its minutes), and not a server's JWT session, which ends with its JWT.
pub async fn extend_own_session(
    state: &AppState,
    me: &ResolvedSession,
    id: &str,
) -> AppResult<Session> {
    require_session_secret(me, "extend a session")?;
    let id = if id == "current" {
        me.session.id.clone()
    } else {
        id.to_string()
    };
    ids::validate("id", &id)?;
    let (project_id, user_id) = (&me.user.project_id, &me.user.id);
    state
        .rate_limiter
        .hit(
            &format!("session-extend:{project_id}:{user_id}"),
            SESSION_EXTEND_LIMIT,
        )
        .await?;
    let not_found = || AppError::NotFound {
        what: "session",
        id: id.clone(),
    };
    let mut session = store::find_session(state.db.pool(), project_id, &id)
        .await?
        .filter(|row| &row.user_id == user_id)
        .map(|row| row.to_session())
        .filter(|session| session.expires_at > now_millis())
        .ok_or_else(not_found)?;
    if session.provider == SERVER_JWT_PROVIDER {
        return Err(AppError::NotAllowed(
            "a server's JWT session ends with its JWT".into(),
        ));
    }
    let policy = policy(state, project_id).await?;
    let lifetime_ms =
        i64::try_from(policy.session_length_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let now = now_millis();
    session.expires_at = now.saturating_add(lifetime_ms);
    session.updated_at = now;
    let mut tx = state.db.begin_write().await?;
    if !store::extend_session(&mut *tx, &session).await? {
        return Err(not_found());
    }
    commit_logged(
        state,
        tx,
        vec![
            session_event(&session, "update"),
            user_cache_dropped(project_id, user_id),
        ],
    )
    .await?;
    record_own(state, me, "session.update").await;
    Ok(session)
}

/// `updateStatus`: the caller blocks their own account, as Appwrite's account
/// status does: every session stops working at once (open sockets too), signing in
/// is refused, and only a server unblocks it. Not through a JWT: a delegation to a
/// backend does not close the account.
pub async fn block_own(state: &AppState, me: &ResolvedSession) -> AppResult<User> {
    require_session_secret(me, "block the account")?;
    let changes = UserChanges {
        blocked: Some(true),
        ..Default::default()
    };
    let user = apply_changes(state, &me.user.project_id, &me.user.id, changes).await?;
    record_own(state, me, "user.update.status").await;
    Ok(user)
}

pub async fn delete_own_sessions(state: &AppState, me: &ResolvedSession) -> AppResult<u64> {
    let (project_id, user_id) = (&me.user.project_id, &me.user.id);
    let mut tx = state.db.begin_write().await?;
    let ended = end_sessions(&mut tx, project_id, user_id, Ending::All).await?;
    let deleted = ended.len() as u64;
    commit_session_events(state, tx, project_id, user_id, ended).await?;
    record_own(state, me, "sessions.delete").await;
    Ok(deleted)
}

/// Changes the caller may make to themselves: name, prefs; email and password only
/// with the current password.
pub async fn update_own(
    state: &AppState,
    me: &ResolvedSession,
    mut changes: UserChanges,
    current_password: Option<String>,
) -> AppResult<User> {
    // Users cannot clear their email or phone (servers can): check before the password.
    if let Some(email) = &changes.email {
        normalize_email("email", email)?;
    }
    if let Some(phone) = &changes.phone {
        check_phone(phone)?;
    }
    let sensitive =
        changes.email.is_some() || changes.phone.is_some() || changes.password.is_some();
    if sensitive {
        let key = format!("credentials:{}:{}", me.user.project_id, me.user.id);
        state.rate_limiter.hit(&key, PASSWORD_CHANGE_LIMIT).await?;
        let user = own_user(state, me).await?;
        match user.password_hash {
            Some(stored) => {
                let given = current_password.ok_or_else(|| {
                    AppError::invalid("oldPassword", "the current password is required")
                })?;
                if !verify(given, stored).await? {
                    return Err(AppError::InvalidCredentials);
                }
            }
            // Without a password to confirm it, only the session itself may set
            // the account's credentials.
            None if me.by_jwt => {
                require_session_secret(me, "set the credentials of an account without a password")?;
            }
            // An account without a password (anonymous) gets one here: the password
            // that confirms a new email or phone becomes the account's password.
            None if changes.password.is_none() => {
                changes.password = Some(current_password.ok_or_else(|| {
                    AppError::invalid("password", "choose a password for the account")
                })?);
            }
            None => {}
        }
    }
    // What only a server may change.
    changes.mfa = None;
    changes.reset_mfa = false;
    changes.blocked = None;
    changes.email_verified = None;
    changes.phone_verified = None;
    changes.labels = None;
    changes.claim = false;
    // A new password signs out every other device; this one stays signed in.
    changes.keep_session = Some(me.session.id.clone());
    let fields: Vec<&str> = [
        ("name", changes.name.is_some()),
        ("email", changes.email.is_some()),
        ("phone", changes.phone.is_some()),
        ("password", changes.password.is_some()),
        ("prefs", changes.prefs.is_some()),
    ]
    .into_iter()
    .filter_map(|(field, changed)| changed.then_some(field))
    .collect();
    let user = apply_changes(state, &me.user.project_id, &me.user.id, changes).await?;
    for field in fields {
        record_own(state, me, &format!("user.update.{field}")).await;
    }
    Ok(user)
}

/// The caller's activity log.
pub async fn own_logs(
    state: &AppState,
    me: &ResolvedSession,
    page: &Page,
    with_total: bool,
) -> AppResult<(Vec<store::LogRow>, i64)> {
    let (mut rows, total) =
        logs_of(state, &me.user.project_id, &me.user.id, page, with_total).await?;
    // What a server did to the user shows as a server's, without the operator's
    // email, key or address: the user's log is theirs, the operator's is not.
    for row in rows.iter_mut().filter(|row| !row.actor.is_empty()) {
        row.actor = "server".into();
        row.ip.clear();
        row.user_agent.clear();
    }
    Ok((rows, total))
}

/// The kind of the hourly job that prunes activity logs.
pub const PRUNE_LOGS_KIND: &str = "users.prune-logs";

/// Deletes activity log entries past `NIMBUS_ACTIVITY_LOG_RETENTION_DAYS`: a
/// user's log would otherwise grow with every sign-in and change, for ever.
pub async fn prune_activity_logs(state: &AppState) -> Result<u64, sqlx::Error> {
    let days = i64::from(state.config.activity_log_retention_days);
    store::prune_logs(state.db.pool(), now_millis() - days * 86_400_000).await
}

/// How long a link or code is kept past its end: used in that time, it is
/// answered `TOKEN_EXPIRED` rather than unknown.
const EXPIRED_TOKENS_KEPT_MS: i64 = 86_400_000;

/// Deletes the links and codes that ended more than a day ago: anyone may ask
/// for a user's recovery or sign-in link to be mailed, and each one asked for
/// was kept for ever.
pub async fn prune_expired_tokens(state: &AppState) -> Result<u64, sqlx::Error> {
    store::prune_tokens(state.db.pool(), now_millis() - EXPIRED_TOKENS_KEPT_MS).await
}

/// The job that runs [`prune_activity_logs`] and [`prune_expired_tokens`].
pub struct PruneActivityLogs;

#[async_trait::async_trait]
impl crate::jobs::Handler for PruneActivityLogs {
    async fn run(
        &self,
        state: &AppState,
        _job: &crate::jobs::Job,
    ) -> Result<(), crate::jobs::Failure> {
        prune_activity_logs(state).await.map_err(|err| {
            crate::jobs::Failure::Retry(format!("cannot prune activity logs: {err}"))
        })?;
        prune_expired_tokens(state)
            .await
            .map(|_| ())
            .map_err(|err| {
                crate::jobs::Failure::Retry(format!("cannot prune expired tokens: {err}"))
            })
    }
}

/// A user's activity log, for a server.
pub async fn user_logs(
    state: &AppState,
    grant: &Grant<UsersRead>,
    user_id: &str,
    page: &Page,
    with_total: bool,
) -> AppResult<(Vec<store::LogRow>, i64)> {
    let project_id = grant.project();
    load_user(state, project_id, user_id).await?;
    logs_of(state, project_id, user_id, page, with_total).await
}

async fn logs_of(
    state: &AppState,
    project_id: &str,
    user_id: &str,
    page: &Page,
    with_total: bool,
) -> AppResult<(Vec<store::LogRow>, i64)> {
    let pool = state.db.pool();
    let rows = store::list_logs(pool, project_id, user_id, page).await?;
    let total = if with_total {
        store::count_logs(pool, project_id, user_id).await?
    } else {
        0
    };
    Ok((rows, total))
}

/// A page of a user's memberships (confirmed or invited), oldest first, for a
/// server: `first` of them, after the membership `after` when given.
pub async fn user_memberships(
    state: &AppState,
    grant: &Grant<UsersRead>,
    user_id: &str,
    first: usize,
    after: Option<&str>,
) -> AppResult<Vec<crate::auth::principal::Membership>> {
    let project_id = grant.project();
    load_user(state, project_id, user_id).await?;
    let memberships = state
        .memberships
        .of_user(state, project_id, user_id, false)
        .await?;
    let start = match after {
        Some(id) => {
            memberships
                .iter()
                .position(|m| m.id == id)
                .ok_or_else(|| AppError::Invalid {
                    code: codes::INVALID_CURSOR,
                    field: "after".into(),
                    reason: "not a membership of this user".into(),
                })?
                + 1
        }
        None => 0,
    };
    Ok(memberships.into_iter().skip(start).take(first).collect())
}
