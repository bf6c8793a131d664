//! Account flows that go through the user's mailbox: email verification, password
//! recovery, sign-in by magic link and by emailed code. Each sends a one-time secret
//! (stored only as a digest, deleted when used, expiring) in a link to a host the
//! project allows, or as a 6-digit code.

use rand::Rng as _;

use crate::AppState;
use crate::auth::rate_limit::{Limit, client_key};
use crate::auth::secrets;
use crate::auth::session_cache::ResolvedSession;
use crate::bus::BusMessage;
use crate::db::{ids, now_millis};
use crate::error::{AppError, AppResult, codes};
use crate::mail::templates;
use crate::services::projects::AuthSettings;
use crate::services::users::service::{
    ClientInfo, NewUser, TokenIssued, UserChanges, apply_changes, create_session, insert_new_user,
    normalize_email, policy, require_method, token_event,
};
use crate::services::users::store::{EMAIL_OTP, MAGIC_URL, RECOVERY, VERIFICATION};
use crate::services::users::{Session, User, store};

const MINUTE_MS: i64 = 60 * 1000;
const VERIFICATION_TTL: i64 = 7 * 24 * 60 * MINUTE_MS;
const RECOVERY_TTL: i64 = 60 * MINUTE_MS;
const MAGIC_URL_TTL: i64 = 60 * MINUTE_MS;
const EMAIL_OTP_TTL: i64 = 15 * MINUTE_MS;
/// Appwrite's limits for these routes.
const MAIL_LIMIT: Limit = Limit::per_hour(10);
/// Attempts at a user's secrets from one client address. Counted per address, not
/// per user alone, so someone guessing cannot lock the user out of their own link.
const TOKEN_ATTEMPTS_LIMIT: Limit = Limit::per_hour(10);
/// Attempts at a user's 6-digit codes from all addresses together: the bound on
/// guessing a code from many addresses (100 of a million per hour). Links carry 256
/// random bits and need no such bound.
const CODE_ATTEMPTS_LIMIT: Limit = Limit::per_hour(100);

/// A secret that was sent: whose, and until when it works.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub user_id: String,
    pub expires_at: i64,
}

/// A URL the server may send a browser to, or mail a secret in: absolute http(s),
/// to a host the project allows (`redirectHosts`), so nobody can have the server
/// hand a user's secret to another site.
pub fn check_redirect_url(policy: &AuthSettings, field: &str, url: &str) -> AppResult<url::Url> {
    let invalid = |reason: String| AppError::Invalid {
        code: codes::INVALID_REDIRECT_URL,
        field: field.into(),
        reason,
    };
    if url.len() > 2048 {
        return Err(invalid("longer than 2048 characters".into()));
    }
    let parsed = url::Url::parse(url).map_err(|_| invalid("not an absolute URL".into()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("use an http or https URL".into()));
    }
    let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
    if !policy.redirect_hosts.contains(&host) {
        return Err(invalid(format!(
            "`{host}` is not among the project's redirect hosts (updateProjectAuth redirectHosts)"
        )));
    }
    Ok(parsed)
}

/// `url`, checked by [`check_redirect_url`], with `params` added to its query.
pub fn link_with(policy: &AuthSettings, url: &str, params: &[(&str, &str)]) -> AppResult<String> {
    let mut parsed = check_redirect_url(policy, "url", url)?;
    parsed.query_pairs_mut().extend_pairs(params);
    Ok(parsed.into())
}

/// `url` with `userId` and `secret` added, if its host is one the project allows.
fn link(policy: &AuthSettings, url: &str, user_id: &str, secret: &str) -> AppResult<String> {
    link_with(policy, url, &[("userId", user_id), ("secret", secret)])
}

/// Writes a token of `kind` for `user` with the digest of `secret` and queues the
/// mail that carries the secret to `to`, in one transaction: a token nobody was
/// sent, or a mail whose secret matches nothing, never exists. The message is
/// checked before anything is written.
async fn issue_and_mail(
    state: &AppState,
    user: &User,
    kind: &str,
    secret: &str,
    ttl: i64,
    to: &str,
    content: templates::MailContent,
) -> AppResult<IssuedToken> {
    let now = now_millis();
    let expires_at = now + ttl;
    let id = ids::generate();
    let mut tx = state.db.pool().begin().await?;
    store::insert_token(
        &mut *tx,
        &user.project_id,
        &id,
        &user.id,
        kind,
        &secrets::digest(secret),
        expires_at,
        now,
    )
    .await?;
    queue_mail(state, &mut *tx, &user.project_id, to, content).await?;
    let issued = TokenIssued {
        project_id: &user.project_id,
        user_id: &user.id,
        id: &id,
        kind,
        created_at: now,
        expires_at,
    };
    crate::bus::log::commit(&state.bus, tx, vec![token_event(&issued, "create")]).await?;
    state.jobs.wake();
    Ok(IssuedToken {
        user_id: user.id.clone(),
        expires_at,
    })
}

fn invalid_token() -> AppError {
    AppError::Invalid {
        code: codes::INVALID_TOKEN,
        field: "secret".into(),
        reason: "the secret is wrong, was already used, or belongs to another user".into(),
    }
}

/// Whether a presented secret has the shape of an emailed code rather than a link's.
fn is_code(secret: &str) -> bool {
    secret.len() == 6 && secret.bytes().all(|b| b.is_ascii_digit())
}

/// Uses up a token of one of `kinds`; returns it.
async fn consume(
    state: &AppState,
    project_id: &str,
    user_id: &str,
    kinds: &[&str],
    secret: &str,
    client: &ClientInfo,
) -> AppResult<store::TokenRow> {
    let invalid = invalid_token;
    ids::validate("userId", user_id).map_err(|_| invalid())?;
    state
        .rate_limiter
        .hit(
            &format!("token:{project_id}:{user_id}:{}", client_key(&client.ip)),
            TOKEN_ATTEMPTS_LIMIT,
        )
        .await?;
    if is_code(secret) && kinds.contains(&EMAIL_OTP) {
        state
            .rate_limiter
            .hit(&format!("code:{project_id}:{user_id}"), CODE_ATTEMPTS_LIMIT)
            .await?;
    }
    let tokens = store::tokens_of(state.db.pool(), project_id, user_id, kinds).await?;
    let token = tokens
        .into_iter()
        .find(|t| secrets::matches(secret, &t.secret_hash))
        .ok_or_else(invalid)?;
    // Deleting first makes a token single-use even when two requests race.
    if !store::delete_token(state.db.pool(), project_id, &token.id).await? {
        return Err(invalid());
    }
    if token.expires_at <= now_millis() {
        return Err(AppError::Invalid {
            code: codes::TOKEN_EXPIRED,
            field: "secret".into(),
            reason: "the link or code has expired; ask for a new one".into(),
        });
    }
    Ok(token)
}

/// The `update` event of a recovery or verification token used up by a change
/// of `user_id`'s, to log with that change (Appwrite's `users.U.recovery.T.update`).
fn token_used(project_id: &str, user_id: &str, token: &store::TokenRow) -> BusMessage {
    let used = TokenIssued {
        project_id,
        user_id,
        id: &token.id,
        kind: &token.kind,
        created_at: token.created_at,
        expires_at: token.expires_at,
    };
    token_event(&used, "update")
}

/// Queues an email of `project_id`'s to `to` through `db` (the transaction that
/// writes what it carries): the request does not wait for the relay, and a relay
/// that is down gets the message later (see `mail::queue`). A message the relay
/// would refuse (the recipient) is refused here, before anything is written.
pub(crate) async fn queue_mail<'e>(
    state: &AppState,
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    to: &str,
    content: templates::MailContent,
) -> AppResult<()> {
    crate::mail::queue::enqueue(state, db, project_id, content.to(to))
        .await
        .map_err(|err| match err {
            crate::mail::queue::QueueError::Refused(
                err @ crate::mail::MailError::InvalidAddress { .. },
            ) => unmailable(err),
            crate::mail::queue::QueueError::Refused(err) => {
                AppError::invalid("email", err.to_string())
            }
            crate::mail::queue::QueueError::Db(err) => AppError::from(err),
        })
}

fn unmailable(err: crate::mail::MailError) -> AppError {
    AppError::Invalid {
        code: codes::INVALID_EMAIL,
        field: "email".into(),
        reason: err.to_string(),
    }
}

/// Refuses an address mail cannot be sent to, before a user, token or invitation
/// is written for it.
pub(crate) fn check_recipient(state: &AppState, email: &str) -> AppResult<()> {
    state.mailer.check_recipient(email).map_err(unmailable)
}

/// Counts an email `caller` asks for, from `client`, against the bounds per sender
/// and per client address (`NIMBUS_MAIL_MAX_PER_SENDER`, `…_PER_CLIENT`), before
/// anything is looked up or written for it.
pub(crate) async fn count_outgoing_mail(
    state: &AppState,
    caller: &crate::auth::Caller,
    client: &ClientInfo,
) -> AppResult<()> {
    let sender = crate::auth::rate_limit::mail_sender(caller);
    count_mail_from(state, sender.as_deref(), client).await
}

/// Counts an email asked for by `sender` (as [`crate::auth::rate_limit::mail_sender`]
/// names it; none for a guest) as [`count_outgoing_mail`] does.
pub(crate) async fn count_mail_from(
    state: &AppState,
    sender: Option<&str>,
    client: &ClientInfo,
) -> AppResult<()> {
    let limits = crate::auth::rate_limit::MailLimits {
        per_sender: state.config.mail_max_per_sender,
        per_client: state.config.mail_max_per_client,
    };
    state
        .rate_limiter
        .hit_outgoing_mail(sender, &client.ip, limits)
        .await
}

pub(crate) async fn project_name(state: &AppState, project_id: &str) -> AppResult<String> {
    Ok(state
        .schemas
        .get(state, project_id)
        .await?
        .project
        .name
        .clone())
}

/// Mails the signed-in user a link that verifies their email.
pub async fn create_verification(
    state: &AppState,
    me: &ResolvedSession,
    url: &str,
) -> AppResult<IssuedToken> {
    let user = &me.user;
    let email = user
        .email
        .clone()
        .ok_or_else(|| AppError::NotAllowed("the account has no email to verify".into()))?;
    state
        .rate_limiter
        .hit(
            &format!("verification:{}:{}", user.project_id, user.id),
            MAIL_LIMIT,
        )
        .await?;
    let policy = policy(state, &user.project_id).await?;
    let secret = secrets::random_token();
    let link = link(&policy, url, &user.id, &secret)?;
    let content = templates::verification(&project_name(state, &user.project_id).await?, &link);
    issue_and_mail(
        state,
        user,
        VERIFICATION,
        &secret,
        VERIFICATION_TTL,
        &email,
        content,
    )
    .await
}

/// Marks the email verified, with the secret from the link.
pub async fn confirm_verification(
    state: &AppState,
    project_id: &str,
    user_id: &str,
    secret: &str,
    client: &ClientInfo,
) -> AppResult<User> {
    let token = consume(state, project_id, user_id, &[VERIFICATION], secret, client).await?;
    apply_changes(
        state,
        project_id,
        user_id,
        UserChanges {
            email_verified: Some(true),
            also: vec![token_used(project_id, user_id, &token)],
            ..Default::default()
        },
    )
    .await
}

/// Mails a password-reset link. Answers the same whether or not the email has an
/// account, so the answer does not reveal who has one.
pub async fn create_recovery(
    state: &AppState,
    project_id: &str,
    email: &str,
    url: &str,
) -> AppResult<()> {
    let email = normalize_email("email", email)?;
    state
        .rate_limiter
        .hit(&format!("recovery:{project_id}:{email}"), MAIL_LIMIT)
        .await?;
    let policy = policy(state, project_id).await?;
    // Checked before the lookup, so a bad URL is refused for every email alike.
    link(&policy, url, "check", "check")?;
    // The rest happens after the answer: how long it takes, and whether mail
    // delivery fails, would otherwise tell who has an account.
    let (state, project_id, url) = (state.clone(), project_id.to_string(), url.to_string());
    tokio::spawn(async move {
        if let Err(err) = send_recovery(&state, &project_id, &email, &url, &policy).await {
            let _ = err.to_graphql();
            tracing::warn!(code = %err.code(), "password recovery not sent");
        }
    });
    Ok(())
}

async fn send_recovery(
    state: &AppState,
    project_id: &str,
    email: &str,
    url: &str,
    policy: &AuthSettings,
) -> AppResult<()> {
    let Some(row) = store::find_user_by_email(state.db.pool(), project_id, email).await? else {
        return Ok(());
    };
    let user = row.to_user();
    if user.blocked {
        return Ok(());
    }
    let secret = secrets::random_token();
    let link = link(policy, url, &user.id, &secret)?;
    let content = templates::password_recovery(&project_name(state, project_id).await?, &link);
    issue_and_mail(
        state,
        &user,
        RECOVERY,
        &secret,
        RECOVERY_TTL,
        email,
        content,
    )
    .await?;
    Ok(())
}

/// Sets a new password with the secret from the recovery link, and signs the user
/// out everywhere (in the same transaction as the new password). The link proves
/// the mailbox: an account whose email was never verified is claimed
/// ([`UserChanges::claim`]).
pub async fn complete_recovery(
    state: &AppState,
    project_id: &str,
    user_id: &str,
    secret: &str,
    password: String,
    client: &ClientInfo,
) -> AppResult<()> {
    let token = consume(state, project_id, user_id, &[RECOVERY], secret, client).await?;
    apply_changes(
        state,
        project_id,
        user_id,
        UserChanges {
            password: Some(password),
            claim: true,
            also: vec![token_used(project_id, user_id, &token)],
            ..Default::default()
        },
    )
    .await?;
    Ok(())
}

/// The user with this email, created (without a password) when there is none.
async fn user_for_email(state: &AppState, project_id: &str, email: &str) -> AppResult<User> {
    if let Some(row) = store::find_user_by_email(state.db.pool(), project_id, email).await? {
        return Ok(row.to_user());
    }
    match insert_new_user(
        state,
        project_id,
        NewUser {
            email: Some(email.to_string()),
            ..Default::default()
        },
    )
    .await
    {
        // Created concurrently by another request: take that one.
        Err(AppError::Conflict { .. }) => {
            store::find_user_by_email(state.db.pool(), project_id, email)
                .await?
                .map(|row| row.to_user())
                .ok_or(AppError::InvalidCredentials)
        }
        other => other,
    }
}

/// The user an emailed sign-in (`flow`) goes to, created on first use, once the
/// abuse limit allows; with the normalized email.
async fn email_sign_in_user(
    state: &AppState,
    project_id: &str,
    email: &str,
    flow: &str,
) -> AppResult<(String, User)> {
    let email = normalize_email("email", email)?;
    check_recipient(state, &email)?;
    state
        .rate_limiter
        .hit(&format!("{flow}:{project_id}:{email}"), MAIL_LIMIT)
        .await?;
    let user = user_for_email(state, project_id, &email).await?;
    if user.blocked {
        return Err(AppError::UserBlocked);
    }
    Ok((email, user))
}

/// Mails a sign-in link (creating the user on first use).
pub async fn create_magic_url(
    state: &AppState,
    project_id: &str,
    email: &str,
    url: &str,
) -> AppResult<IssuedToken> {
    require_method(state, project_id, |p| p.magic_url, "magic-url").await?;
    let policy = policy(state, project_id).await?;
    link(&policy, url, "check", "check")?;
    let (email, user) = email_sign_in_user(state, project_id, email, MAGIC_URL).await?;
    let secret = secrets::random_token();
    let link = link(&policy, url, &user.id, &secret)?;
    let content = templates::magic_url(&project_name(state, project_id).await?, &link);
    issue_and_mail(
        state,
        &user,
        MAGIC_URL,
        &secret,
        MAGIC_URL_TTL,
        &email,
        content,
    )
    .await
}

/// Mails a 6-digit sign-in code (creating the user on first use).
pub async fn create_email_code(
    state: &AppState,
    project_id: &str,
    email: &str,
) -> AppResult<IssuedToken> {
    require_method(state, project_id, |p| p.email_otp, "email-otp").await?;
    let (email, user) = email_sign_in_user(state, project_id, email, EMAIL_OTP).await?;
    let code = format!("{:06}", rand::rng().random_range(0..1_000_000u32));
    let content = templates::email_otp(&project_name(state, project_id).await?, &code, None);
    issue_and_mail(
        state,
        &user,
        EMAIL_OTP,
        &code,
        EMAIL_OTP_TTL,
        &email,
        content,
    )
    .await
}

/// Who a `createSession` is for: the `userId` from a link, or the email a code was
/// sent to (guests are not told user ids).
pub enum TokenOwner<'a> {
    UserId(&'a str),
    Email(&'a str),
}

/// `createSession`: finishes a magic-link, emailed-code or OAuth2 (token mode)
/// sign-in. A link or code also verifies the email, claiming an account whose email
/// was never verified ([`UserChanges::claim`]).
pub async fn create_session_from_token(
    state: &AppState,
    project_id: &str,
    owner: TokenOwner<'_>,
    secret: &str,
    client: ClientInfo,
) -> AppResult<(Session, String)> {
    let user_id = match owner {
        TokenOwner::UserId(id) => id.to_string(),
        TokenOwner::Email(email) => {
            let email = normalize_email("email", email)?;
            match store::find_user_by_email(state.db.pool(), project_id, &email).await? {
                Some(row) => row.id,
                None => {
                    // Counted like any wrong secret, so unknown emails look the same.
                    state
                        .rate_limiter
                        .hit(
                            &format!("token:{project_id}:{email}:{}", client_key(&client.ip)),
                            TOKEN_ATTEMPTS_LIMIT,
                        )
                        .await?;
                    return Err(invalid_token());
                }
            }
        }
    };
    let user_id = user_id.as_str();
    let kind = consume(
        state,
        project_id,
        user_id,
        &[MAGIC_URL, EMAIL_OTP, super::oauth2::OAUTH2_TOKEN],
        secret,
        &client,
    )
    .await?
    .kind;
    // A link or code that reached the mailbox proves the email; an OAuth2 hand-over
    // says nothing about it.
    let user = apply_changes(
        state,
        project_id,
        user_id,
        UserChanges {
            claim: kind != super::oauth2::OAUTH2_TOKEN,
            ..Default::default()
        },
    )
    .await?;
    if user.blocked {
        return Err(AppError::UserBlocked);
    }
    create_session(state, &user, &kind, client).await
}
