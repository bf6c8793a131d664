//! GraphQL of the account: `account`, `accountSessions`, `createAccount`,
//! `createEmailPasswordSession`, `createAnonymousSession`, `deleteSession`,
//! `deleteSessions`, `updateName`, `updateEmail`, `updatePassword`, `updatePhone`,
//! `updatePrefs`.

use async_graphql::Value;
use async_graphql::dynamic::{
    Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext, TypeRef,
};
use serde::Deserialize;

use crate::auth::session_cache::ResolvedSession;
use crate::auth::{Caller, Credential};
use crate::error::AppResult;
use crate::graphql::SchemaParts;
use crate::graphql::types::{IdInput, JSON, app, caller, input, input_object, object, prop};
use crate::services::account::cookies::{cleared_session_cookie, session_cookie};
use crate::services::account::mfa;
use crate::services::account::service::{self as account, IssuedToken, TokenOwner};
use crate::services::users::Session;
use crate::services::users::schema::{session_value, user_value};
use crate::services::users::service::{self, ClientInfo, UserChanges};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateAccountInput {
    id: Option<String>,
    email: String,
    password: String,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EmailPasswordInput {
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UrlInput {
    url: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SecretInput {
    user_id: String,
    secret: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateSessionInput {
    user_id: Option<String>,
    email: Option<String>,
    secret: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EmailUrlInput {
    email: String,
    url: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EmailOnlyInput {
    email: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RecoveryInput {
    user_id: String,
    secret: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NameInput {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EmailInput {
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PasswordInput {
    password: String,
    old_password: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PhoneInput {
    phone: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PrefsInput {
    prefs: serde_json::Map<String, serde_json::Value>,
}

fn client(ctx: &ResolverContext<'_>) -> ClientInfo {
    ctx.data::<ClientInfo>().cloned().unwrap_or_default()
}

/// The caller's session, presented by its own secret: what a JWT may not do
/// ([`service::require_session_secret`]) goes through here.
fn session_by_secret<'a>(ctx: &ResolverContext<'a>, what: &str) -> AppResult<&'a ResolvedSession> {
    let me = caller(ctx)?.require_session()?;
    service::require_session_secret(me, what)?;
    Ok(me)
}

/// Refuses a sign-in to a caller holding a JWT: a JWT opens no sessions.
fn not_by_jwt(caller: &Caller) -> AppResult<()> {
    match &caller.credential {
        Credential::Session(me) => service::require_session_secret(me, "open sessions"),
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
fn signed_in(
    ctx: &ResolverContext<'_>,
    session: &Session,
    secret: String,
) -> async_graphql::Result<Option<FieldValue<'static>>> {
    session_payload(ctx, session, secret).map(|value| Some(FieldValue::value(value)))
}

/// Reads a self-update's input: the changes, and the current password confirming them.
type ReadChanges =
    fn(&ResolverContext<'_>) -> crate::error::AppResult<(UserChanges, Option<String>)>;

/// Registers a mutation on the signed-in user that returns the changed `User`.
fn self_update(
    parts: &mut SchemaParts,
    name: &'static str,
    input_type: &'static str,
    description: &str,
    changes: ReadChanges,
) {
    parts.mutation(
        Field::new(name, TypeRef::named_nn("User"), move |ctx| {
            FieldFuture::new(async move {
                let me = caller(&ctx)?.require_session()?;
                let (changes, password) = changes(&ctx)?;
                let user = service::update_own(app(&ctx)?, me, changes, password).await?;
                Ok(Some(FieldValue::value(user_value(&user))))
            })
        })
        .description(description)
        .argument(InputValue::new("input", TypeRef::named_nn(input_type))),
    );
}

/// A `Token`; its `userId` only for the signed-in owner. Guests are not told whose
/// id an email has: a link carries it, and a code is finished with the email.
fn token_value(caller: &Caller, token: &IssuedToken) -> FieldValue<'static> {
    let own = matches!(&caller.credential, Credential::Session(me) if me.user.id == token.user_id);
    FieldValue::value(object([
        (
            "userId",
            if own {
                Value::from(token.user_id.as_str())
            } else {
                Value::Null
            },
        ),
        (
            "expiresAt",
            crate::graphql::types::datetime(token.expires_at),
        ),
    ]))
}

/// The email flows: verification, recovery, magic link, emailed code.
fn register_email_flows(parts: &mut SchemaParts) {
    let string = || TypeRef::named_nn(TypeRef::STRING);
    let id = || TypeRef::named_nn(TypeRef::ID);
    parts.add_type(
        Object::new("Token")
            .description("A one-time secret sent by email: to whom, and until when it works.")
            .field(prop(
                "userId",
                TypeRef::named(TypeRef::ID),
                "The user it was sent to, for that user signed in; null for anyone else (the emailed link carries it; finish a code with the email).",
            ))
            .field(prop(
                "expiresAt",
                TypeRef::named_nn(crate::graphql::types::DATETIME),
                "When it stops working.",
            )),
    );
    let url_about = "Page of your app the link opens; `userId` and `secret` are added to it. Its host must be one of the project's redirect hosts.";
    parts.add_type(input_object(
        "CreateVerificationInput",
        "Where the verification link leads.",
        &[("url", string(), url_about)],
    ));
    parts.add_type(input_object(
        "UpdateVerificationInput",
        "The values from the verification link.",
        &[
            ("userId", id(), "`userId` from the link."),
            ("secret", string(), "`secret` from the link."),
        ],
    ));
    parts.add_type(input_object(
        "CreateRecoveryInput",
        "Who forgot their password, and where the link leads.",
        &[
            ("email", string(), "The account's email."),
            ("url", string(), url_about),
        ],
    ));
    parts.add_type(input_object(
        "UpdateRecoveryInput",
        "The values from the recovery link, and the new password.",
        &[
            ("userId", id(), "`userId` from the link."),
            ("secret", string(), "`secret` from the link."),
            ("password", string(), "The new password."),
        ],
    ));
    parts.add_type(input_object(
        "CreateMagicUrlTokenInput",
        "Who signs in, and where the link leads.",
        &[
            (
                "email",
                string(),
                "The email; a new user is created for an unknown one.",
            ),
            ("url", string(), url_about),
        ],
    ));
    parts.add_type(input_object(
        "CreateEmailTokenInput",
        "Who signs in.",
        &[(
            "email",
            string(),
            "The email; a new user is created for an unknown one.",
        )],
    ));
    parts.add_type(input_object(
        "CreateSessionInput",
        "The values from a magic link or an OAuth2 hand-over (`userId` and `secret`), or an emailed code (`email` and the code).",
        &[
            (
                "userId",
                TypeRef::named(TypeRef::ID),
                "`userId` from the link; give it or `email`.",
            ),
            (
                "email",
                TypeRef::named(TypeRef::STRING),
                "The email the code was sent to; give it or `userId`.",
            ),
            (
                "secret",
                string(),
                "`secret` from the link, or the 6-digit code.",
            ),
        ],
    ));

    parts.mutation(
        Field::new("createVerification", TypeRef::named_nn("Token"), |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                let me = caller.require_session()?;
                let input: UrlInput = input(&ctx)?;
                account::count_outgoing_mail(app(&ctx)?, caller, &client(&ctx)).await?;
                let token = account::create_verification(app(&ctx)?, me, &input.url).await?;
                Ok(Some(token_value(caller, &token)))
            })
        })
        .description("Emails the signed-in user a link that verifies their email (valid 7 days).")
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn("CreateVerificationInput"),
        )),
    );
    parts.mutation(
        Field::new("updateVerification", TypeRef::named_nn("User"), |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                let input: SecretInput = input(&ctx)?;
                let user = account::confirm_verification(
                    app(&ctx)?,
                    &caller.project.id,
                    &input.user_id,
                    &input.secret,
                    &client(&ctx),
                )
                .await?;
                Ok(Some(FieldValue::value(user_value(&user))))
            })
        })
        .description(
            "Marks the email verified with the values from the link. Each link works once.",
        )
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn("UpdateVerificationInput"),
        )),
    );
    parts.mutation(
        Field::new("createRecovery", TypeRef::named_nn(TypeRef::BOOLEAN), |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                let input: EmailUrlInput = input(&ctx)?;
                account::count_outgoing_mail(app(&ctx)?, caller, &client(&ctx)).await?;
                account::create_recovery(app(&ctx)?, &caller.project.id, &input.email, &input.url).await?;
                Ok(Some(FieldValue::value(true)))
            })
        })
        .description("Emails a password-reset link (valid 1 hour). Answers `true` whether or not the email has an account.")
        .argument(InputValue::new("input", TypeRef::named_nn("CreateRecoveryInput"))),
    );
    parts.mutation(
        Field::new("updateRecovery", TypeRef::named_nn(TypeRef::BOOLEAN), |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                let input: RecoveryInput = input(&ctx)?;
                account::complete_recovery(app(&ctx)?, &caller.project.id, &input.user_id, &input.secret, input.password, &client(&ctx)).await?;
                Ok(Some(FieldValue::value(true)))
            })
        })
        .description("Sets a new password with the values from the recovery link, and signs the user out everywhere.")
        .argument(InputValue::new("input", TypeRef::named_nn("UpdateRecoveryInput"))),
    );
    parts.mutation(
        Field::new("createMagicUrlToken", TypeRef::named_nn("Token"), |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                let input: EmailUrlInput = input(&ctx)?;
                account::count_outgoing_mail(app(&ctx)?, caller, &client(&ctx)).await?;
                let token = account::create_magic_url(
                    app(&ctx)?,
                    &caller.project.id,
                    &input.email,
                    &input.url,
                )
                .await?;
                Ok(Some(token_value(caller, &token)))
            })
        })
        .description("Emails a sign-in link (valid 1 hour); finish with `createSession`.")
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn("CreateMagicUrlTokenInput"),
        )),
    );
    parts.mutation(
        Field::new("createEmailToken", TypeRef::named_nn("Token"), |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                let input: EmailOnlyInput = input(&ctx)?;
                account::count_outgoing_mail(app(&ctx)?, caller, &client(&ctx)).await?;
                let token =
                    account::create_email_code(app(&ctx)?, &caller.project.id, &input.email)
                        .await?;
                Ok(Some(token_value(caller, &token)))
            })
        })
        .description(
            "Emails a 6-digit sign-in code (valid 15 minutes); finish with `createSession` and the email.",
        )
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn("CreateEmailTokenInput"),
        )),
    );
    parts.mutation(
        Field::new("createSession", TypeRef::named_nn("SessionPayload"), |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                not_by_jwt(caller)?;
                let input: CreateSessionInput = input(&ctx)?;
                let owner = match (&input.user_id, &input.email) {
                    (Some(id), None) => TokenOwner::UserId(id),
                    (None, Some(email)) => TokenOwner::Email(email),
                    _ => return Err(crate::error::AppError::invalid("userId", "give `userId` or `email`, not both").into()),
                };
                let (session, secret) =
                    account::create_session_from_token(app(&ctx)?, &caller.project.id, owner, &input.secret, client(&ctx))
                        .await?;
                signed_in(&ctx, &session, secret)
            })
        })
        .description("Signs in with a magic link's values or an emailed code. Each works once; the email becomes verified, and an account whose email was not verified before loses its password, second factor, other sessions and linked providers to the owner of the mailbox.")
        .argument(InputValue::new("input", TypeRef::named_nn("CreateSessionInput"))),
    );
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CodeInput {
    code: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MfaInput {
    enabled: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ChallengeInput {
    factor: String,
    code: String,
}

/// Multi-factor sign-in: authenticator, recovery codes, on/off, the challenge.
fn register_mfa(parts: &mut SchemaParts) {
    let string = || TypeRef::named_nn(TypeRef::STRING);
    parts.add_type(
        Object::new("MfaAuthenticator")
            .description("A new TOTP authenticator: enter the secret in an authenticator app (or scan the URI as a QR code), then confirm with `verifyMfaAuthenticator`.")
            .field(prop("secret", TypeRef::named_nn(TypeRef::STRING), "The shared secret, base32."))
            .field(prop("uri", TypeRef::named_nn(TypeRef::STRING), "`otpauth://` URI for a QR code.")),
    );
    parts.add_type(
        Object::new("MfaFactors")
            .description("The second factors the signed-in user has.")
            .field(prop(
                "totp",
                TypeRef::named_nn(TypeRef::BOOLEAN),
                "A confirmed authenticator app.",
            ))
            .field(prop(
                "recoveryCode",
                TypeRef::named_nn(TypeRef::BOOLEAN),
                "Unused recovery codes.",
            )),
    );
    parts.add_type(
        async_graphql::dynamic::Enum::new("MfaFactor")
            .description("A second factor for `updateMfaChallenge`.")
            .item(
                async_graphql::dynamic::EnumItem::new("TOTP")
                    .description("A code from the authenticator app."),
            )
            .item(
                async_graphql::dynamic::EnumItem::new("RECOVERY_CODE")
                    .description("One of the recovery codes; each works once."),
            ),
    );
    parts.add_type(input_object(
        "MfaCodeInput",
        "A code from the authenticator app.",
        &[("code", string(), "The 6-digit code.")],
    ));
    parts.add_type(input_object(
        "UpdateMfaInput",
        "MFA on or off.",
        &[(
            "enabled",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            "Require a second factor at sign-in.",
        )],
    ));
    parts.add_type(input_object(
        "UpdateMfaChallengeInput",
        "The second factor of this session.",
        &[
            ("factor", TypeRef::named_nn("MfaFactor"), "Which factor."),
            (
                "code",
                string(),
                "The authenticator code or a recovery code.",
            ),
        ],
    ));

    parts.query(
        Field::new(
            "accountMfaFactors",
            TypeRef::named_nn("MfaFactors"),
            |ctx| {
                FieldFuture::new(async move {
                    let me = caller(&ctx)?.require_session_owing_mfa()?;
                    let factors = mfa::factors(app(&ctx)?, me).await?;
                    Ok(Some(FieldValue::value(object([
                        ("totp", Value::from(factors.totp)),
                        ("recoveryCode", Value::from(factors.recovery_code)),
                    ]))))
                })
            },
        )
        .description("The signed-in user's second factors (also while the session owes one)."),
    );
    parts.mutation(
        Field::new(
            "createMfaAuthenticator",
            TypeRef::named_nn("MfaAuthenticator"),
            |ctx| {
                FieldFuture::new(async move {
                    let me = session_by_secret(&ctx, "add an authenticator")?;
                    let added = mfa::create_authenticator(app(&ctx)?, me).await?;
                    Ok(Some(FieldValue::value(object([
                        ("secret", Value::from(added.secret)),
                        ("uri", Value::from(added.uri)),
                    ]))))
                })
            },
        )
        .description("Starts adding a TOTP authenticator app."),
    );
    parts.mutation(
        Field::new(
            "verifyMfaAuthenticator",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            |ctx| {
                FieldFuture::new(async move {
                    let me = session_by_secret(&ctx, "confirm an authenticator")?;
                    let input: CodeInput = input(&ctx)?;
                    mfa::verify_authenticator(app(&ctx)?, me, &input.code).await?;
                    Ok(Some(FieldValue::value(true)))
                })
            },
        )
        .description("Confirms the authenticator with a code from the app.")
        .argument(InputValue::new("input", TypeRef::named_nn("MfaCodeInput"))),
    );
    parts.mutation(
        Field::new(
            "deleteMfaAuthenticator",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            |ctx| {
                FieldFuture::new(async move {
                    let me = session_by_secret(&ctx, "remove an authenticator")?;
                    let input: CodeInput = input(&ctx)?;
                    mfa::delete_authenticator(app(&ctx)?, me, &input.code).await?;
                    Ok(Some(FieldValue::value(true)))
                })
            },
        )
        .description("Removes the authenticator (with a current code); MFA turns off.")
        .argument(InputValue::new("input", TypeRef::named_nn("MfaCodeInput"))),
    );
    parts.mutation(
        Field::new(
            "createMfaRecoveryCodes",
            TypeRef::named_nn_list_nn(TypeRef::STRING),
            |ctx| {
                FieldFuture::new(async move {
                    let me = session_by_secret(&ctx, "create recovery codes")?;
                    let codes = mfa::create_recovery_codes(app(&ctx)?, me).await?;
                    Ok(Some(FieldValue::list(
                        codes.into_iter().map(FieldValue::value),
                    )))
                })
            },
        )
        .description(
            "Ten new recovery codes, replacing any old ones. Shown only now; each works once.",
        ),
    );
    parts.mutation(
        Field::new("updateMfa", TypeRef::named_nn("User"), |ctx| {
            FieldFuture::new(async move {
                let me = session_by_secret(&ctx, "turn MFA on or off")?;
                let input: MfaInput = input(&ctx)?;
                let state = app(&ctx)?;
                mfa::set_enabled(state, me, input.enabled).await?;
                Ok(Some(FieldValue::value(user_value(
                    &service::own_user(state, me).await?,
                ))))
            })
        })
        .description("Turns the second factor on (needs a confirmed authenticator) or off.")
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn("UpdateMfaInput"),
        )),
    );
    parts.mutation(
        Field::new("updateMfaChallenge", TypeRef::named_nn(TypeRef::BOOLEAN), |ctx| {
            FieldFuture::new(async move {
                let me = caller(&ctx)?.require_session_owing_mfa()?;
                let input: ChallengeInput = input(&ctx)?;
                mfa::complete_challenge(app(&ctx)?, me, &input.factor, &input.code).await?;
                Ok(Some(FieldValue::value(true)))
            })
        })
        .description("Passes this session's second factor; until then only MFA operations work and `MFA_REQUIRED` answers the rest.")
        .argument(InputValue::new("input", TypeRef::named_nn("UpdateMfaChallengeInput"))),
    );
}

pub fn register(parts: &mut SchemaParts, _project: &crate::services::projects::Project) {
    register_email_flows(parts);
    register_mfa(parts);
    super::oauth2_schema::register(parts);
    let string = || TypeRef::named_nn(TypeRef::STRING);
    parts.add_type(
        Object::new("SessionPayload")
            .description("A new session and its secret.")
            .field(prop("session", TypeRef::named_nn("Session"), "The session."))
            .field(prop("secret", TypeRef::named_nn(TypeRef::STRING), "Send as `Authorization: Bearer <secret>` (apps); browsers also get it as an HttpOnly cookie. Shown only now.")),
    );
    parts.add_type(
        Object::new("JwtPayload")
            .description("A JWT acting as the signed-in user.")
            .field(prop("jwt", TypeRef::named_nn(TypeRef::STRING), "Send as `Authorization: Bearer <jwt>`; works until `expiresAt` or until its session is signed out."))
            .field(prop("expiresAt", TypeRef::named_nn(crate::graphql::types::DATETIME), "When the JWT stops working (15 minutes).")),
    );
    parts.mutation(
        Field::new("createJWT", TypeRef::named_nn("JwtPayload"), |ctx| {
            FieldFuture::new(async move {
                let me = caller(&ctx)?.require_session()?;
                let (jwt, expires_at) = service::issue_jwt(app(&ctx)?, me)?;
                Ok(Some(FieldValue::value(object([
                    ("jwt", Value::from(jwt)),
                    ("expiresAt", crate::graphql::types::datetime(expires_at)),
                ]))))
            })
        })
        .description("A short-lived JWT (HS256, 15 minutes) for the caller's session, so a backend can act as this user. Only the session's own secret creates one: a JWT cannot create another (`PERMISSION_DENIED`), nor open sessions, manage MFA, or set credentials without the password."),
    );
    parts.add_type(
        Object::new("DeleteSessionPayload")
            .description("The result of `deleteSession`.")
            .field(prop(
                "deletedId",
                TypeRef::named_nn(TypeRef::ID),
                "Id of the deleted session.",
            )),
    );
    parts.add_type(input_object(
        "CreateAccountInput",
        "A new account.",
        &[
            (
                "id",
                TypeRef::named(TypeRef::ID),
                "Id to give the user; omitted or `unique()` generates one.",
            ),
            ("email", string(), "Email address, unique in the project."),
            ("password", string(), "Password, at least 8 characters."),
            (
                "name",
                TypeRef::named(TypeRef::STRING),
                "Display name, at most 128 characters.",
            ),
        ],
    ));
    parts.add_type(input_object(
        "CreateEmailPasswordSessionInput",
        "Credentials to sign in with.",
        &[
            ("email", string(), "The account's email."),
            ("password", string(), "The account's password."),
        ],
    ));
    parts.add_type(input_object(
        "DeleteSessionInput",
        "A session of the caller.",
        &[(
            "id",
            TypeRef::named_nn(TypeRef::ID),
            "The session; `current` for the one in use.",
        )],
    ));
    parts.add_type(input_object(
        "UpdateNameInput",
        "A new name.",
        &[("name", string(), "Display name, at most 128 characters.")],
    ));
    parts.add_type(input_object(
        "UpdateEmailInput",
        "A new email, confirmed with the password (an anonymous account sets its password with `updatePassword` first).",
        &[("email", string(), "The new email."), ("password", string(), "The current password.")],
    ));
    parts.add_type(input_object(
        "UpdatePasswordInput",
        "A new password.",
        &[
            (
                "password",
                string(),
                "The new password, at least 8 characters.",
            ),
            (
                "oldPassword",
                TypeRef::named(TypeRef::STRING),
                "The current password; not needed when the account has none yet.",
            ),
        ],
    ));
    parts.add_type(input_object(
        "UpdatePhoneInput",
        "A new phone number, confirmed with the password.",
        &[
            ("phone", string(), "E.164 phone number."),
            ("password", string(), "The current password."),
        ],
    ));
    parts.add_type(input_object(
        "UpdatePrefsInput",
        "New preferences.",
        &[(
            "prefs",
            TypeRef::named_nn(JSON),
            "A JSON object of at most 64 KiB; replaces the old one.",
        )],
    ));

    parts.query(
        Field::new("account", TypeRef::named("User"), |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                match caller.require_session() {
                    // Served from the session cache: no database round trip.
                    // Only the selected fields are built.
                    Ok(me) => {
                        let selection = ctx.look_ahead();
                        let user =
                            crate::services::users::schema::user_value_where(&me.user, |field| {
                                selection.field(field).exists()
                            });
                        Ok(Some(FieldValue::value(user)))
                    }
                    Err(crate::error::AppError::MfaRequired) => {
                        Err(crate::error::AppError::MfaRequired.into())
                    }
                    Err(_) => Ok(None),
                }
            })
        })
        .description("The signed-in user; null for guests."),
    );
    parts.query(
        crate::graphql::types::with_connection_args(Field::new(
            "accountLogs",
            TypeRef::named_nn("LogConnection"),
            |ctx| {
                FieldFuture::new(async move {
                    let me = caller(&ctx)?.require_session()?;
                    let page = crate::graphql::types::page_request(&ctx)?;
                    let with_total = crate::graphql::types::wants_total_count(&ctx);
                    let (logs, total) =
                        service::own_logs(app(&ctx)?, me, &page, with_total).await?;
                    Ok(Some(FieldValue::value(crate::graphql::types::connection(
                        &page,
                        logs,
                        total,
                        |l| &l.id,
                        crate::services::users::schema::log_value,
                    ))))
                })
            },
        ))
        .description(
            "The signed-in user's activity log, oldest first; `last: n` gives the newest.",
        ),
    );
    parts.query(
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
        .description("The signed-in user's sessions, newest first."),
    );
    parts.mutation(
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
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn("CreateAccountInput"),
        )),
    );
    parts.mutation(
        Field::new("createEmailPasswordSession", TypeRef::named_nn("SessionPayload"), |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                not_by_jwt(caller)?;
                let input: EmailPasswordInput = input(&ctx)?;
                let (session, secret) =
                    service::sign_in_with_password(app(&ctx)?, &caller.project.id, &input.email, input.password, client(&ctx)).await?;
                signed_in(&ctx, &session, secret)
            })
        })
        .description("Signs in with email and password. Wrong email and wrong password give the same `INVALID_CREDENTIALS`.")
        .argument(InputValue::new("input", TypeRef::named_nn("CreateEmailPasswordSessionInput"))),
    );
    parts.mutation(
        Field::new("createAnonymousSession", TypeRef::named_nn("SessionPayload"), |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                not_by_jwt(caller)?;
                let (session, secret) = service::sign_in_anonymously(app(&ctx)?, &caller.project.id, client(&ctx)).await?;
                signed_in(&ctx, &session, secret)
            })
        })
        .description("Creates an anonymous user and signs it in; it becomes a full account by setting a password, then an email."),
    );
    parts.mutation(
        Field::new("deleteSession", TypeRef::named_nn("DeleteSessionPayload"), |ctx| {
            FieldFuture::new(async move {
                let me = caller(&ctx)?.require_session()?;
                let input: IdInput = input(&ctx)?;
                let deleted = service::delete_own_session(app(&ctx)?, me, &input.id).await?;
                if deleted == me.session.id {
                    ctx.append_http_header(
                        "set-cookie",
                        cleared_session_cookie(&me.session.project_id),
                    );
                }
                Ok(Some(FieldValue::value(object([("deletedId", Value::from(deleted))]))))
            })
        })
        .description("Signs out one session of the caller (`current`: this one). It stops working at once, everywhere.")
        .argument(InputValue::new("input", TypeRef::named_nn("DeleteSessionInput"))),
    );
    parts.mutation(
        Field::new(
            "deleteSessions",
            TypeRef::named_nn("DeleteSessionsPayload"),
            |ctx| {
                FieldFuture::new(async move {
                    let me = caller(&ctx)?.require_session()?;
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
        .description("Signs the caller out of every device."),
    );
    self_update(
        parts,
        "updateName",
        "UpdateNameInput",
        "Changes the caller's name.",
        |ctx| {
            let input: NameInput = input(ctx)?;
            Ok((
                UserChanges {
                    name: Some(input.name),
                    ..Default::default()
                },
                None,
            ))
        },
    );
    self_update(
        parts,
        "updateEmail",
        "UpdateEmailInput",
        "Changes the caller's email (needs the password); the new email is unverified.",
        |ctx| {
            let input: EmailInput = input(ctx)?;
            Ok((
                UserChanges {
                    email: Some(input.email),
                    ..Default::default()
                },
                Some(input.password),
            ))
        },
    );
    self_update(
        parts,
        "updatePassword",
        "UpdatePasswordInput",
        "Changes the caller's password (needs the old one, if any); every other session of the caller ends.",
        |ctx| {
            let input: PasswordInput = input(ctx)?;
            Ok((
                UserChanges {
                    password: Some(input.password),
                    ..Default::default()
                },
                input.old_password,
            ))
        },
    );
    self_update(
        parts,
        "updatePhone",
        "UpdatePhoneInput",
        "Changes the caller's phone number (needs the password); the new number is unverified.",
        |ctx| {
            let input: PhoneInput = input(ctx)?;
            Ok((
                UserChanges {
                    phone: Some(input.phone),
                    ..Default::default()
                },
                Some(input.password),
            ))
        },
    );
    self_update(
        parts,
        "updatePrefs",
        "UpdatePrefsInput",
        "Replaces the caller's preferences.",
        |ctx| {
            let input: PrefsInput = input(ctx)?;
            Ok((
                UserChanges {
                    prefs: Some(input.prefs),
                    ..Default::default()
                },
                None,
            ))
        },
    );
}
