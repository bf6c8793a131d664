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
    ClientInfo, NewUser, TokenIssued, UserChanges, apply_changes, commit_logged, insert_session_in,
    insert_user_in, normalize_email, policy, prepare_changes, prepare_user, require_method,
    session_opened, token_event, user_created,
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
/// Whom a mailed token is for: a user that exists, or a new one (an emailed
/// sign-in's first use) written with the token.
enum Holder<'a> {
    Existing(&'a User),
    New(&'a User),
}

async fn issue_and_mail(
    state: &AppState,
    holder: Holder<'_>,
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
    let mut messages = Vec::new();
    let user = match holder {
        Holder::Existing(user) => user,
        Holder::New(user) => {
            insert_user_in(&mut tx, user).await?;
            messages.push(user_created(user));
            user
        }
    };
    if kind == EMAIL_OTP {
        // One six-digit code at a time: a guess is checked against every live
        // code, so codes piling up (one per request) would multiply its odds.
        store::delete_tokens_of(&mut *tx, &user.project_id, &user.id, &[EMAIL_OTP]).await?;
    }
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
    messages.push(token_event(&issued, "create"));
    commit_logged(state, tx, messages).await?;
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

/// The unexpired token of one of `kinds` that `secret` opens. It is used up by
/// the change it allows, in that change's transaction ([`UserChanges::token`]),
/// so a refused change leaves it usable and a token works once.
async fn find_token(
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
        .hit_secret_guess(project_id, &client.ip)
        .await?;
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
    if token.expires_at <= now_millis() {
        store::delete_token(state.db.pool(), project_id, &token.id).await?;
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
    // As Appwrite answers it: a verified address is not mailed again.
    if user.email_verified {
        return Err(AppError::Invalid {
            code: codes::EMAIL_ALREADY_VERIFIED,
            field: "email".into(),
            reason: "the account's email is verified already".into(),
        });
    }
    let content = templates::verification(&project_name(state, &user.project_id).await?, &link);
    issue_and_mail(
        state,
        Holder::Existing(user),
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
    let token = find_token(state, project_id, user_id, &[VERIFICATION], secret, client).await?;
    apply_changes(
        state,
        project_id,
        user_id,
        UserChanges {
            email_verified: Some(true),
            also: vec![token_used(project_id, user_id, &token)],
            token: Some(token.id),
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
        Holder::Existing(&user),
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
    let token = find_token(state, project_id, user_id, &[RECOVERY], secret, client).await?;
    apply_changes(
        state,
        project_id,
        user_id,
        UserChanges {
            password: Some(password),
            claim: true,
            also: vec![token_used(project_id, user_id, &token)],
            token: Some(token.id),
            ..Default::default()
        },
    )
    .await?;
    Ok(())
}

/// Mails an emailed sign-in (`flow`, valid for `ttl`) to `email`, once the abuse
/// limit allows: `make` gives the secret and the message for the user it goes to.
/// An address without an account gets a new user, written in the transaction
/// that writes the token and queues the mail, so a crash leaves neither; if
/// another request created it meanwhile, the mail goes to that one.
async fn mail_sign_in(
    state: &AppState,
    project_id: &str,
    email: &str,
    flow: &str,
    ttl: i64,
    make: impl Fn(&User) -> AppResult<(String, templates::MailContent)>,
) -> AppResult<IssuedToken> {
    let email = normalize_email("email", email)?;
    check_recipient(state, &email)?;
    state
        .rate_limiter
        .hit(&format!("{flow}:{project_id}:{email}"), MAIL_LIMIT)
        .await?;
    for _ in 0..2 {
        let (user, new) =
            match store::find_user_by_email(state.db.pool(), project_id, &email).await? {
                Some(row) => (row.to_user(), false),
                None => {
                    let new = NewUser {
                        email: Some(email.clone()),
                        ..Default::default()
                    };
                    (prepare_user(state, project_id, new).await?, true)
                }
            };
        if user.blocked {
            // Answered as for any other address, and nothing is sent: a distinct
            // answer would tell anyone which addresses have blocked accounts, and
            // a sign-in of a blocked user is refused when it completes anyway.
            return Ok(IssuedToken {
                user_id: user.id,
                expires_at: now_millis() + ttl,
            });
        }
        let (secret, content) = make(&user)?;
        let holder = if new {
            Holder::New(&user)
        } else {
            Holder::Existing(&user)
        };
        match issue_and_mail(state, holder, flow, &secret, ttl, &email, content).await {
            Err(AppError::Conflict { .. }) if new => continue,
            other => return other,
        }
    }
    Err(AppError::InvalidCredentials)
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
    let name = project_name(state, project_id).await?;
    mail_sign_in(state, project_id, email, MAGIC_URL, MAGIC_URL_TTL, |user| {
        let secret = secrets::random_token();
        let link = link(&policy, url, &user.id, &secret)?;
        Ok((secret, templates::magic_url(&name, &link)))
    })
    .await
}

/// Mails a 6-digit sign-in code (creating the user on first use).
pub async fn create_email_code(
    state: &AppState,
    project_id: &str,
    email: &str,
) -> AppResult<IssuedToken> {
    require_method(state, project_id, |p| p.email_otp, "email-otp").await?;
    let name = project_name(state, project_id).await?;
    mail_sign_in(state, project_id, email, EMAIL_OTP, EMAIL_OTP_TTL, |_| {
        let code = format!("{:06}", rand::rng().random_range(0..1_000_000u32));
        let content = templates::email_otp(&name, &code, None);
        Ok((code, content))
    })
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
                        .hit_secret_guess(project_id, &client.ip)
                        .await?;
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
    let token = find_token(
        state,
        project_id,
        user_id,
        &[MAGIC_URL, EMAIL_OTP, super::oauth2::OAUTH2_TOKEN],
        secret,
        &client,
    )
    .await?;
    // A link or code that reached the mailbox proves the email; an OAuth2 hand-over
    // says nothing about it.
    let change = prepare_changes(
        state,
        project_id,
        user_id,
        UserChanges {
            claim: token.kind != super::oauth2::OAUTH2_TOKEN,
            token: Some(token.id.clone()),
            ..Default::default()
        },
    )
    .await?;
    let policy = policy(state, project_id).await?;
    // The token used up, the claim and the session are one write: a crash or a
    // refusal between them cannot leave a used link that signed nobody in.
    let mut tx = state.db.begin_write().await?;
    let (user, mut messages) = change.write(&mut tx).await?;
    if user.blocked {
        return Err(AppError::UserBlocked);
    }
    let (session, secret, opened) =
        insert_session_in(&mut tx, &policy, &user, &token.kind, &client).await?;
    messages.extend(opened);
    commit_logged(state, tx, messages).await?;
    session_opened(state, &user, &session).await;
    Ok((session, secret))
}
