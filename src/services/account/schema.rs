//! GraphQL of the account: `account`, `accountLogs`, `accountSessions`, `createJWT`,
//! `createAccount`, `createEmailPasswordSession`, `createAnonymousSession`,
//! `deleteAccount`, `deleteSession`, `deleteSessions`, `updateName`,
//! `updateEmail`, `updatePassword`, `updatePhone`, `updatePrefs`; its `register` also adds the email flows
//! (`email_schema`), MFA (`mfa_schema`) and OAuth2 (`oauth2_schema`). One function
//! per root field, each only parsing, calling the service and mapping its answer.

use async_graphql::Value;
use async_graphql::dynamic::{
    Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext, TypeRef,
};

use crate::auth::session_cache::ResolvedSession;
use crate::auth::{Caller, Credential};
use crate::error::{AppError, AppResult};
use crate::graphql::SchemaParts;
use crate::graphql::input::GraphQLInput;
use crate::graphql::types::{
    DATETIME, app, caller, connection, datetime, deleted_payload_type, input, object, opt_string,
    page_request, prop, wants_total_count, with_connection_args,
};
use crate::services::account::cookies::{cleared_session_cookie, session_cookie};
use crate::services::users::Session;
use crate::services::users::schema::{log_value, session_value, user_value, user_value_where};
use crate::services::users::service::{self, ClientInfo, UserChanges};

crate::graphql_input! {
    "A new account."
    struct CreateAccountInput {
        "Id to give the user; omitted or `unique()` generates one."
        id: Option<String> as "ID",
        "Email address, unique in the project."
        email: String,
        "Password, at least 8 characters."
        password: String,
        "Display name, at most 128 characters."
        name: Option<String>,
    }
}

crate::graphql_input! {
    "Credentials to sign in with."
    struct CreateEmailPasswordSessionInput {
        "The account's email."
        email: String,
        "The account's password."
        password: String,
    }
}

crate::graphql_input! {
    "A session of the caller to extend."
    struct UpdateSessionInput {
        "The session; `current` for the one in use."
        id: String as "ID",
    }
}

crate::graphql_input! {
    "A session of the caller."
    struct DeleteSessionInput {
        "The session; `current` for the one in use."
        id: String as "ID",
    }
}

crate::graphql_input! {
    "A new name."
    struct UpdateNameInput {
        "Display name, at most 128 characters."
        name: String,
    }
}

crate::graphql_input! {
    "A new email, confirmed with the password (an anonymous account sets its password with `updatePassword` first)."
    struct UpdateEmailInput {
        "The new email."
        email: String,
        "The current password."
        password: String,
    }
}

crate::graphql_input! {
    "A new password."
    struct UpdatePasswordInput {
        "The new password, at least 8 characters."
        password: String,
        "The current password; not needed when the account has none yet."
        old_password: Option<String>,
    }
}

crate::graphql_input! {
    "A new phone number, confirmed with the password."
    struct UpdatePhoneInput {
        "E.164 phone number."
        phone: String,
        "The current password."
        password: String,
    }
}

crate::graphql_input! {
    "New preferences."
    struct UpdatePrefsInput {
        "A JSON object of at most 64 KiB; replaces the old one."
        prefs: serde_json::Map<String, serde_json::Value>,
    }
}

pub(super) fn client(ctx: &ResolverContext<'_>) -> ClientInfo {
    ctx.data::<ClientInfo>().cloned().unwrap_or_default()
}

/// The caller's session, presented by its own secret: what a JWT may not do
/// ([`service::require_session_secret`]) goes through here.
pub(super) fn session_by_secret<'a>(
    ctx: &ResolverContext<'a>,
    what: &str,
) -> AppResult<&'a ResolvedSession> {
    let me = caller(ctx)?.require_session()?;
    service::require_session_secret(me, what)?;
    Ok(me)
}

/// Refuses a sign-in to a caller that is signed in already, as Appwrite does: a
/// new session's cookie would replace the one the caller holds and strand it,
/// still valid, in no client. A JWT opens no sessions at all.
pub(super) fn not_signed_in(caller: &Caller) -> AppResult<()> {
    match &caller.credential {
        Credential::Session(me) => {
            service::require_session_secret(me, "open sessions")?;
            Err(AppError::Conflict {
                what: "session",
                id: me.session.id.clone(),
            })
        }
        _ => Ok(()),
    }
}

/// A `SessionPayload` for a new session; sets its cookie for browsers on the way.
pub(crate) fn session_payload(
    ctx: &ResolverContext<'_>,
    session: &Session,
    secret: String,
) -> async_graphql::Result<Value> {
    let secure = app(ctx)?.config.secure_cookies();
    ctx.append_http_header("set-cookie", session_cookie(session, &secret, secure));
    Ok(object([
        ("session", session_value(session, Some(&session.id))),
        ("secret", Value::from(secret)),
    ]))
}

/// Answers a sign-in: sets the session cookie for browsers, returns the secret for apps.
pub(super) fn signed_in(
    ctx: &ResolverContext<'_>,
    session: &Session,
    secret: String,
) -> async_graphql::Result<Option<FieldValue<'static>>> {
    session_payload(ctx, session, secret).map(|value| Some(FieldValue::value(value)))
}

/// Registers the account, its email flows, MFA and OAuth2: its types, then its
/// root fields in the order the schema lists them.
pub fn register(parts: &mut SchemaParts, _project: &crate::services::projects::Project) {
    super::email_schema::register(parts);
    super::mfa_schema::register(parts);
    super::oauth2_schema::register(parts);
    parts.add_type(session_payload_type());
    parts.add_type(jwt_payload_type());
    parts.add_type(delete_session_payload_type());
    parts.add_input::<CreateAccountInput>();
    parts.add_input::<CreateEmailPasswordSessionInput>();
    parts.add_input::<UpdateSessionInput>();
    parts.add_input::<DeleteSessionInput>();
    parts.add_input::<UpdateNameInput>();
    parts.add_input::<UpdateEmailInput>();
    parts.add_input::<UpdatePasswordInput>();
    parts.add_input::<UpdatePhoneInput>();
    parts.add_input::<UpdatePrefsInput>();
    parts.query(account());
    parts.query(account_logs());
    parts.query(account_sessions());
    parts.query(account_session());
    parts.mutation(create_jwt());
    parts.mutation(create_account());
    parts.mutation(create_email_password_session());
    parts.mutation(create_anonymous_session());
    parts.mutation(update_session());
    parts.mutation(delete_session());
    parts.mutation(delete_sessions());
    parts.mutation(update_name());
    parts.mutation(update_email());
    parts.mutation(update_password());
    parts.mutation(update_phone());
    parts.mutation(update_prefs());
    parts.mutation(update_status());
    parts.mutation(delete_account());
}

fn session_payload_type() -> Object {
    Object::new("SessionPayload")
        .description("A new session and its secret.")
        .field(prop("session", TypeRef::named_nn("Session"), "The session."))
        .field(prop("secret", TypeRef::named_nn(TypeRef::STRING), "Send as `Authorization: Bearer <secret>` (apps); browsers also get it as an HttpOnly cookie. Shown only now."))
}

fn jwt_payload_type() -> Object {
    Object::new("JwtPayload")
        .description("A JWT acting as the signed-in user.")
        .field(prop("jwt", TypeRef::named_nn(TypeRef::STRING), "Send as `Authorization: Bearer <jwt>`; works until `expiresAt` or until its session is signed out."))
        .field(prop("expiresAt", TypeRef::named_nn(DATETIME), "When the JWT stops working (15 minutes)."))
}

fn delete_session_payload_type() -> Object {
    deleted_payload_type(
        "DeleteSessionPayload",
        "The result of `deleteSession`.",
        "Id of the deleted session.",
    )
}

fn account() -> Field {
    Field::new("account", TypeRef::named("User"), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            match caller.require_session() {
                // Served from the session cache: no database round trip.
                // Only the selected fields are built.
                Ok(me) => {
                    let selection = ctx.look_ahead();
                    let user = user_value_where(&me.user, |field| selection.field(field).exists());
                    Ok(Some(FieldValue::value(user)))
                }
                Err(AppError::MfaRequired) => Err(AppError::MfaRequired.into()),
                Err(_) => Ok(None),
            }
        })
    })
    .description("The signed-in user; null for guests.")
}

fn account_logs() -> Field {
    with_connection_args(Field::new(
        "accountLogs",
        TypeRef::named_nn("LogConnection"),
        |ctx| {
            FieldFuture::new(async move {
                let me = caller(&ctx)?.require_session()?;
                let page = page_request(&ctx)?;
                let with_total = wants_total_count(&ctx);
                let (logs, total) = service::own_logs(app(&ctx)?, me, &page, with_total).await?;
                Ok(Some(FieldValue::value(connection(
                    &page,
                    logs,
                    total,
                    |l| &l.id,
                    log_value,
                ))))
            })
        },
    ))
    .description("The signed-in user's activity log, oldest first; `last: n` gives the newest.")
}

fn account_sessions() -> Field {
    Field::new(
        "accountSessions",
        TypeRef::named_nn_list_nn("Session"),
        |ctx| {
            FieldFuture::new(async move {
                let me = caller(&ctx)?.require_session()?;
                let sessions = service::own_sessions(app(&ctx)?, me).await?;
                let current = me.session.id.as_str();
                Ok(Some(FieldValue::list(sessions.iter().map(|s| {
                    FieldValue::value(session_value(s, Some(current)))
                }))))
            })
        },
    )
    .description("The signed-in user's sessions, newest first.")
}

fn account_session() -> Field {
    Field::new("accountSession", TypeRef::named("Session"), |ctx| {
        FieldFuture::new(async move {
            let me = caller(&ctx)?.require_session()?;
            let id = opt_string(&ctx, "id")?.unwrap_or_default();
            let current = me.session.id.as_str();
            let id = if id == "current" {
                current
            } else {
                id.as_str()
            };
            let sessions = service::own_sessions(app(&ctx)?, me).await?;
            let session =
                sessions
                    .iter()
                    .find(|s| s.id == id)
                    .ok_or_else(|| AppError::NotFound {
                        what: "session",
                        id: id.chars().take(64).collect(),
                    })?;
            Ok(Some(FieldValue::value(session_value(
                session,
                Some(current),
            ))))
        })
    })
    .description("One of the signed-in user's sessions (`current`: this one).")
    .argument(
        InputValue::new("id", TypeRef::named_nn(TypeRef::ID))
            .description("The session, or `current`."),
    )
}

fn create_jwt() -> Field {
    Field::new("createJWT", TypeRef::named_nn("JwtPayload"), |ctx| {
        FieldFuture::new(async move {
            let me = caller(&ctx)?.require_session()?;
            let duration = match ctx.args.get("duration") {
                Some(value) if !value.is_null() => Some(value.i64()?),
                _ => None,
            };
            let (jwt, expires_at) = service::issue_jwt(app(&ctx)?, me, duration)?;
            Ok(Some(FieldValue::value(object([
                ("jwt", Value::from(jwt)),
                ("expiresAt", datetime(expires_at)),
            ]))))
        })
    })
    .description("A short-lived JWT (HS256, 15 minutes unless `duration` says otherwise) for the caller's session, so a backend can act as this user. Only the session's own secret creates one: a JWT cannot create another (`PERMISSION_DENIED`), nor open sessions, manage MFA, or set credentials without the password.")
    .argument(InputValue::new("duration", TypeRef::named(TypeRef::INT)).description("Seconds the JWT works: 900 (15 minutes) when omitted, at most 3600 (Appwrite's `duration`)."))
}

fn create_account() -> Field {
    Field::new("createAccount", TypeRef::named_nn("User"), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            let input: CreateAccountInput = input(&ctx)?;
            let user = service::sign_up(
                app(&ctx)?,
                &caller.project.id,
                input.id,
                &input.email,
                input.password,
                input.name,
                &client(&ctx),
            )
            .await?;
            Ok(Some(FieldValue::value(user_value(&user))))
        })
    })
    .description(
        "Signs up with email and password. Sign in next with `createEmailPasswordSession`.",
    )
    .argument(CreateAccountInput::argument())
}

fn create_email_password_session() -> Field {
    Field::new("createEmailPasswordSession", TypeRef::named_nn("SessionPayload"), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            not_signed_in(caller)?;
            let input: CreateEmailPasswordSessionInput = input(&ctx)?;
            let (session, secret) = service::sign_in_with_password(
                app(&ctx)?,
                &caller.project.id,
                &input.email,
                input.password,
                client(&ctx),
            )
            .await?;
            signed_in(&ctx, &session, secret)
        })
    })
    .description("Signs in with email and password. Wrong email and wrong password give the same `INVALID_CREDENTIALS`. Refused to a caller that is signed in (`SESSION_ALREADY_EXISTS`).")
    .argument(CreateEmailPasswordSessionInput::argument())
}

fn create_anonymous_session() -> Field {
    Field::new("createAnonymousSession", TypeRef::named_nn("SessionPayload"), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            not_signed_in(caller)?;
            let (session, secret) =
                service::sign_in_anonymously(app(&ctx)?, &caller.project.id, client(&ctx)).await?;
            signed_in(&ctx, &session, secret)
        })
    })
    .description("Creates an anonymous user and signs it in; it becomes a full account by setting a password, then an email. Refused to a caller that is signed in (`SESSION_ALREADY_EXISTS`).")
}

fn update_session() -> Field {
    Field::new("updateSession", TypeRef::named_nn("Session"), |ctx| {
        FieldFuture::new(async move {
            let me = caller(&ctx)?.require_session()?;
            let input: UpdateSessionInput = input(&ctx)?;
            let session = service::extend_own_session(app(&ctx)?, me, &input.id).await?;
            Ok(Some(FieldValue::value(session_value(&session, Some(&me.session.id)))))
        })
    })
    .description("Extends one session of the caller (`current`: this one) to the project's session length from now, as Appwrite's `updateSession` does. Not with a JWT (`PERMISSION_DENIED`), nor a server's JWT session (`OPERATION_NOT_ALLOWED`).")
    .argument(UpdateSessionInput::argument())
}

fn delete_session() -> Field {
    Field::new("deleteSession", TypeRef::named_nn("DeleteSessionPayload"), |ctx| {
        FieldFuture::new(async move {
            // A session still owing its second factor may end itself, as in
            // Appwrite: else a half-finished sign-in could not be cleared from
            // the device it was made on (its cookie is HTTP-only). A password
            // alone signs no other device out.
            let me = caller(&ctx)?.require_session_owing_mfa()?;
            service::require_session_secret(me, "sign sessions out")?;
            let input: DeleteSessionInput = input(&ctx)?;
            if me.mfa_pending() && input.id != "current" && input.id != me.session.id {
                return Err(AppError::MfaRequired.into());
            }
            let deleted = service::delete_own_session(app(&ctx)?, me, &input.id).await?;
            if deleted == me.session.id {
                ctx.append_http_header("set-cookie", cleared_session_cookie(&me.session.project_id));
            }
            Ok(Some(FieldValue::value(object([("deletedId", Value::from(deleted))]))))
        })
    })
    .description("Signs out one session of the caller (`current`: this one). It stops working at once, everywhere. A session still owing its second factor may sign itself out, no other (`MFA_REQUIRED`). Not with a JWT (`PERMISSION_DENIED`): a backend or function acting as the user does not sign them out.")
    .argument(DeleteSessionInput::argument())
}

fn delete_sessions() -> Field {
    Field::new(
        "deleteSessions",
        TypeRef::named_nn("DeleteSessionsPayload"),
        |ctx| {
            FieldFuture::new(async move {
                let me = session_by_secret(&ctx, "sign sessions out")?;
                let count = service::delete_own_sessions(app(&ctx)?, me).await?;
                ctx.append_http_header(
                    "set-cookie",
                    cleared_session_cookie(&me.session.project_id),
                );
                Ok(Some(FieldValue::value(object([(
                    "deletedCount",
                    Value::from(count),
                )]))))
            })
        },
    )
    .description("Signs the caller out of every device. Not with a JWT (`PERMISSION_DENIED`).")
}

/// A mutation on the signed-in user that returns the changed `User`: `changes`
/// turns its input into the changes and the current password confirming them.
fn self_update<T>(
    name: &'static str,
    description: &str,
    changes: fn(T) -> (UserChanges, Option<String>),
) -> Field
where
    T: GraphQLInput + serde::de::DeserializeOwned + Send + 'static,
{
    Field::new(name, TypeRef::named_nn("User"), move |ctx| {
        FieldFuture::new(async move {
            let me = caller(&ctx)?.require_session()?;
            let (changes, password) = changes(input(&ctx)?);
            let user = service::update_own(app(&ctx)?, me, changes, password).await?;
            Ok(Some(FieldValue::value(user_value(&user))))
        })
    })
    .description(description)
    .argument(InputValue::new("input", TypeRef::named_nn(T::NAME)))
}

fn delete_account() -> Field {
    Field::new("deleteAccount", TypeRef::named_nn("DeleteUserPayload"), |ctx| {
        FieldFuture::new(async move {
            let me = caller(&ctx)?.require_session()?;
            let deleted = service::delete_own_account(app(&ctx)?, me).await?;
            ctx.append_http_header("set-cookie", cleared_session_cookie(&me.session.project_id));
            Ok(Some(FieldValue::value(object([(
                "deletedId",
                Value::from(deleted),
            )]))))
        })
    })
    .description("Deletes the caller's own account (Appwrite's `DELETE /account`): the user, their sessions, identities and memberships, at once; a team they alone owned stays, without them. Not with a JWT (`PERMISSION_DENIED`).")
}

fn update_status() -> Field {
    Field::new("updateStatus", TypeRef::named_nn("User"), |ctx| {
        FieldFuture::new(async move {
            let me = caller(&ctx)?.require_session()?;
            let user = service::block_own(app(&ctx)?, me).await?;
            ctx.append_http_header("set-cookie", cleared_session_cookie(&me.session.project_id));
            Ok(Some(FieldValue::value(user_value(&user))))
        })
    })
    .description("Blocks the caller's own account: every session stops working at once and signing in is refused until a server unblocks it (`updateUser(input: {id, blocked: false})`).")
}

fn update_name() -> Field {
    self_update(
        "updateName",
        "Changes the caller's name.",
        |input: UpdateNameInput| {
            let name = Some(input.name);
            (
                UserChanges {
                    name,
                    ..Default::default()
                },
                None,
            )
        },
    )
}

fn update_email() -> Field {
    self_update(
        "updateEmail",
        "Changes the caller's email (needs the password); the new email is unverified.",
        |input: UpdateEmailInput| {
            let email = Some(input.email);
            (
                UserChanges {
                    email,
                    ..Default::default()
                },
                Some(input.password),
            )
        },
    )
}

fn update_password() -> Field {
    self_update(
        "updatePassword",
        "Changes the caller's password (needs the old one, if any); every other session of the caller ends.",
        |input: UpdatePasswordInput| {
            let password = Some(input.password);
            (
                UserChanges {
                    password,
                    ..Default::default()
                },
                input.old_password,
            )
        },
    )
}

fn update_phone() -> Field {
    self_update(
        "updatePhone",
        "Changes the caller's phone number (needs the password); the new number is unverified.",
        |input: UpdatePhoneInput| {
            let phone = Some(input.phone);
            (
                UserChanges {
                    phone,
                    ..Default::default()
                },
                Some(input.password),
            )
        },
    )
}

fn update_prefs() -> Field {
    self_update(
        "updatePrefs",
        "Replaces the caller's preferences.",
        |input: UpdatePrefsInput| {
            let prefs = Some(input.prefs);
            (
                UserChanges {
                    prefs,
                    ..Default::default()
                },
                None,
            )
        },
    )
}
