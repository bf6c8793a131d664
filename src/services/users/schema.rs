//! GraphQL of users for servers (API keys with `users.read` / `users.write`):
//! `user`, `users`, `userSessions`, `createUser`, `updateUser`, `deleteUser`,
//! `deleteUserSessions`, `deleteUserMfaAuthenticator`, `createUserJWT`. The `User` and `Session` types are shared
//! with `account`.

use async_graphql::Value;
use async_graphql::dynamic::{
    Enum, EnumItem, Field, FieldFuture, FieldValue, InputValue, Object, TypeRef,
};

use crate::auth::scopes::{UsersRead, UsersWrite};
use crate::graphql::SchemaParts;
use crate::graphql::types::{
    DATETIME, JSON, MAX_PAGE_SIZE, app, caller, connection, connection_types, count_arg, datetime,
    deleted_payload_type, input, object, opt_string, page_request, prop, wants_total_count,
    with_connection_args,
};

use super::service::{self, ImportedHash, NewUser, UserChanges};
use super::{Session, User};

fn strings(items: &[String]) -> Value {
    Value::List(items.iter().map(|s| Value::from(s.as_str())).collect())
}

fn optional(value: Option<&str>) -> Value {
    value.map_or(Value::Null, Value::from)
}

/// The GraphQL value of a user (never the password hash).
pub fn user_value(user: &User) -> Value {
    user_value_where(user, |_| true)
}

/// The GraphQL value of a user with only the fields `wanted` says yes to: formatting
/// dates and converting prefs costs more than a small selection is worth.
pub fn user_value_where(user: &User, wanted: impl Fn(&str) -> bool) -> Value {
    let mut map = async_graphql::indexmap::IndexMap::new();
    let mut put = |name: &'static str, make: &dyn Fn() -> Value| {
        if wanted(name) {
            map.insert(async_graphql::Name::new(name), make());
        }
    };
    put("id", &|| Value::from(user.id.as_str()));
    put("name", &|| Value::from(user.name.as_str()));
    put("email", &|| optional(user.email.as_deref()));
    put("phone", &|| optional(user.phone.as_deref()));
    put("emailVerified", &|| Value::from(user.email_verified));
    put("phoneVerified", &|| Value::from(user.phone_verified));
    put("blocked", &|| Value::from(user.blocked));
    put("anonymous", &|| Value::from(user.anonymous()));
    put("mfa", &|| Value::from(user.mfa));
    put("labels", &|| strings(&user.labels));
    put("prefs", &|| {
        Value::from_json(serde_json::Value::Object(user.prefs.clone())).unwrap_or(Value::Null)
    });
    put("passwordUpdatedAt", &|| {
        user.password_updated_at.map_or(Value::Null, datetime)
    });
    put("accessedAt", &|| {
        user.accessed_at.map_or(Value::Null, datetime)
    });
    put("createdAt", &|| datetime(user.created_at));
    put("updatedAt", &|| datetime(user.updated_at));
    Value::Object(map)
}

/// The GraphQL value of a session; `current` marks the caller's own.
pub fn session_value(session: &Session, current_id: Option<&str>) -> Value {
    object([
        ("id", Value::from(session.id.as_str())),
        ("userId", Value::from(session.user_id.as_str())),
        ("provider", Value::from(session.provider.as_str())),
        ("ip", Value::from(session.ip.as_str())),
        ("userAgent", Value::from(session.user_agent.as_str())),
        (
            "current",
            Value::from(current_id == Some(session.id.as_str())),
        ),
        ("mfaVerified", Value::from(session.mfa_verified)),
        ("expiresAt", datetime(session.expires_at)),
        ("createdAt", datetime(session.created_at)),
        ("updatedAt", datetime(session.updated_at)),
    ])
}

/// The GraphQL value of an activity log entry.
pub fn log_value(log: &super::store::LogRow) -> Value {
    object([
        ("id", Value::from(log.id.as_str())),
        ("event", Value::from(log.event.as_str())),
        (
            "actor",
            if log.actor.is_empty() {
                Value::Null
            } else {
                Value::from(log.actor.as_str())
            },
        ),
        ("ip", Value::from(log.ip.as_str())),
        ("userAgent", Value::from(log.user_agent.as_str())),
        ("createdAt", datetime(log.created_at)),
    ])
}

crate::graphql_input! {
    "A new user, created by a server."
    struct CreateUserInput {
        "Id to give the user; omitted or `unique()` generates one."
        id: Option<String> as "ID",
        "Email address, unique in the project."
        email: Option<String>,
        "Phone number in E.164 form, unique in the project."
        phone: Option<String>,
        "Display name, at most 128 characters."
        name: Option<String>,
        "Password, at least 8 characters; stored as an argon2id hash."
        password: Option<String>,
        "Or a password hash imported from another system."
        password_hash: Option<PasswordHashInput>,
    }
}

crate::graphql_input! {
    "A password hash from another system, verified at sign-in and replaced by an argon2id hash then."
    struct PasswordHashInput {
        "How the hash was made."
        algorithm: String as "PasswordHashAlgorithm",
        "The hash, in the form the algorithm describes."
        hash: String,
        "Salt (SCRYPT: text; SCRYPT_MODIFIED: base64)."
        salt: Option<String>,
        "SCRYPT_MODIFIED: base64 salt separator."
        salt_separator: Option<String>,
        "SCRYPT_MODIFIED: base64 signer key."
        signer_key: Option<String>,
        "SCRYPT: N."
        cost_cpu: Option<i64>,
        "SCRYPT: r."
        cost_memory: Option<i64>,
        "SCRYPT: p."
        cost_parallel: Option<i64>,
        "SCRYPT: output length in bytes."
        length: Option<i64>,
        "SHA: sha1, sha224, sha256, sha384, sha512/224, sha512/256, sha512, sha3-224, sha3-256, sha3-384 or sha3-512."
        sha_version: Option<String>,
    }
}

/// GraphQL enum values of the algorithms, and the names the service knows them by.
const ALGORITHMS: &[(&str, &str, &str)] = &[
    (
        "ARGON2",
        "argon2",
        "An Argon2 PHC string (`$argon2id$v=19$...`).",
    ),
    (
        "BCRYPT",
        "bcrypt",
        "A bcrypt string (`$2a$`, `$2b$`, `$2y$`).",
    ),
    (
        "SCRYPT",
        "scrypt",
        "Hex scrypt output, with `salt`, `costCpu`, `costMemory`, `costParallel`, `length`.",
    ),
    (
        "SCRYPT_MODIFIED",
        "scryptModified",
        "Firebase's modified scrypt (base64), with `salt`, `saltSeparator`, `signerKey`.",
    ),
    (
        "SHA",
        "sha",
        "A hex SHA digest of the password; `shaVersion` picks the variant (default sha3-512).",
    ),
    ("MD5", "md5", "A hex MD5 digest of the password."),
    (
        "PHPASS",
        "phpass",
        "A phpass string (`$P$`, `$H$`), as WordPress stores them.",
    ),
];

crate::graphql_input! {
    "Changes to a user; omitted fields stay as they are."
    struct UpdateUserInput {
        "The user to change."
        id: String as "ID",
        "New display name."
        name: Option<String>,
        "New email; clears `emailVerified` when it changes. `\"\"` removes the email."
        email: Option<String>,
        "New phone number; clears `phoneVerified` when it changes. `\"\"` removes the number."
        phone: Option<String>,
        "New password; every session of the user ends. `\"\"` takes the password away: no password signs the user in."
        password: Option<String>,
        "Block (true) or unblock (false); a block ends the user's sessions at once."
        blocked: Option<bool>,
        "Mark the email verified or not."
        email_verified: Option<bool>,
        "Mark the phone verified or not."
        phone_verified: Option<bool>,
        "Replace the labels: up to 100, each 1-36 letters and digits; a repeated label is kept once, where it first appears."
        labels: Option<Vec<String>>,
        "Replace the preferences: a JSON object of at most 64 KiB."
        prefs: Option<serde_json::Map<String, serde_json::Value>>,
        "Require a second factor, or not (e.g. for a user who lost theirs)."
        mfa: Option<bool>,
    }
}

crate::graphql_input! {
    "The user to sign out everywhere."
    struct DeleteUserSessionsInput {
        "The user."
        user_id: String as "ID",
    }
}

crate::graphql_input! {
    "One session of a user to end."
    struct DeleteUserSessionInput {
        "The user."
        user_id: String as "ID",
        "The session."
        session_id: String as "ID",
    }
}

crate::graphql_input! {
    "The user whose second factor is removed."
    struct DeleteUserMfaAuthenticatorInput {
        "The user."
        user_id: String as "ID",
    }
}

crate::graphql_input! {
    "The user a server mints a JWT for, and for how long."
    struct CreateUserJWTInput {
        "The user the JWT acts as."
        user_id: String as "ID",
        "Seconds the JWT works: 900 (15 minutes) when omitted, at most 3600."
        duration: Option<i64>,
    }
}

fn create_user_jwt() -> Field {
    Field::new("createUserJWT", TypeRef::named_nn("JwtPayload"), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            let grant = caller.require::<UsersWrite>()?;
            let input: CreateUserJWTInput = input(&ctx)?;
            let actor = caller.key().map(|key| key.actor()).unwrap_or_default();
            let client = ctx
                .data::<super::service::ClientInfo>()
                .cloned()
                .unwrap_or_default();
            let (jwt, expires_at) = service::issue_user_jwt(
                app(&ctx)?,
                &grant,
                &input.user_id,
                input.duration,
                &actor,
                &client,
            )
            .await?;
            Ok(Some(FieldValue::value(object([
                ("jwt", Value::from(jwt)),
                ("expiresAt", datetime(expires_at)),
            ]))))
        })
    })
    .description("A short-lived JWT (HS256) acting as the user, for a server or the console's \"view as user\" (scope `users.write`): 15 minutes unless `duration` says otherwise, an hour at most. It works as `Authorization: Bearer` like `createJWT`'s, sees only what the user may see, ends with the user's sessions, and is recorded in the user's activity log (`jwt.create`, with the key or administrator that minted it).")
    .argument(CreateUserJWTInput::argument())
}

fn user_type() -> Object {
    Object::new("User")
        .description("A user of the project: someone who signs in to its apps.")
        .field(prop(
            "id",
            TypeRef::named_nn(TypeRef::ID),
            "Unique id within the project.",
        ))
        .field(prop(
            "name",
            TypeRef::named_nn(TypeRef::STRING),
            "Display name; may be empty.",
        ))
        .field(prop(
            "email",
            TypeRef::named(TypeRef::STRING),
            "Email address, lowercased; null for anonymous and phone-only users.",
        ))
        .field(prop(
            "phone",
            TypeRef::named(TypeRef::STRING),
            "Phone number in E.164 form.",
        ))
        .field(prop(
            "emailVerified",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            "Whether the email address was verified.",
        ))
        .field(prop(
            "phoneVerified",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            "Whether the phone number was verified.",
        ))
        .field(prop(
            "blocked",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            "A blocked user cannot sign in, and their sessions stop working.",
        ))
        .field(prop(
            "anonymous",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            "Signed in anonymously and not yet given an email and password.",
        ))
        .field(prop(
            "mfa",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            "Whether signing in needs a second factor.",
        ))
        .field(prop(
            "labels",
            TypeRef::named_nn_list_nn(TypeRef::STRING),
            "Labels set by the server; each gives the role `label:NAME`.",
        ))
        .field(prop(
            "prefs",
            TypeRef::named_nn(JSON),
            "The user's preferences: a JSON object of at most 64 KiB.",
        ))
        .field(prop(
            "passwordUpdatedAt",
            TypeRef::named(DATETIME),
            "When the password last changed; null without a password.",
        ))
        .field(prop(
            "accessedAt",
            TypeRef::named(DATETIME),
            "When the user last signed in.",
        ))
        .field(prop(
            "createdAt",
            TypeRef::named_nn(DATETIME),
            "When the user was created.",
        ))
        .field(prop(
            "updatedAt",
            TypeRef::named_nn(DATETIME),
            "When the user last changed.",
        ))
}

fn session_type() -> Object {
    Object::new("Session")
        .description("A signed-in device of a user. Its secret is shown once, when it is created.")
        .field(prop(
            "id",
            TypeRef::named_nn(TypeRef::ID),
            "Unique id within the project.",
        ))
        .field(prop(
            "userId",
            TypeRef::named_nn(TypeRef::ID),
            "The user signed in.",
        ))
        .field(prop(
            "provider",
            TypeRef::named_nn(TypeRef::STRING),
            "How the session was created: `email` or `anonymous`.",
        ))
        .field(prop(
            "ip",
            TypeRef::named_nn(TypeRef::STRING),
            "The IP address that created the session.",
        ))
        .field(prop(
            "userAgent",
            TypeRef::named_nn(TypeRef::STRING),
            "The user agent that created the session.",
        ))
        .field(prop(
            "current",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            "Whether this is the session of the request.",
        ))
        .field(prop(
            "mfaVerified",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            "Whether the session passed the second factor.",
        ))
        .field(prop(
            "expiresAt",
            TypeRef::named_nn(DATETIME),
            "When the session stops working.",
        ))
        .field(prop(
            "createdAt",
            TypeRef::named_nn(DATETIME),
            "When the user signed in.",
        ))
        .field(prop(
            "updatedAt",
            TypeRef::named_nn(DATETIME),
            "When the session last changed.",
        ))
}

crate::graphql_input! {
    "The user to delete, with their sessions."
    struct DeleteUserInput {
        "The user."
        id: String as "ID",
    }
}

pub fn register(parts: &mut SchemaParts, _project: &crate::services::projects::Project) {
    parts.add_type(log_type());
    parts.add_types(connection_types("Log", "log entries"));
    parts.query(user_logs());
    parts.query(user_memberships());
    parts.add_type(user_type());
    parts.add_type(session_type());
    parts.add_types(connection_types("User", "users"));
    parts.add_input::<CreateUserInput>();
    parts.add_type(
        ALGORITHMS.iter().fold(
            Enum::new("PasswordHashAlgorithm")
                .description("Algorithms of password hashes that can be imported."),
            |e, (name, _, about)| e.item(EnumItem::new(*name).description(*about)),
        ),
    );
    parts.add_input::<PasswordHashInput>();
    parts.add_input::<UpdateUserInput>();
    parts.add_input::<DeleteUserInput>();
    parts.add_input::<DeleteUserSessionsInput>();
    parts.add_input::<DeleteUserSessionInput>();
    parts.add_input::<DeleteUserMfaAuthenticatorInput>();
    parts.add_input::<CreateUserJWTInput>();
    parts.add_type(delete_user_payload_type());
    parts.add_type(delete_sessions_payload_type());

    parts.query(user());
    parts.query(users());
    parts.query(user_sessions());
    parts.mutation(create_user());
    parts.mutation(update_user());
    parts.mutation(delete_user());
    parts.mutation(delete_user_sessions());
    parts.mutation(delete_user_session());
    parts.mutation(delete_user_mfa_authenticator());
    parts.mutation(create_user_jwt());
}

fn log_type() -> Object {
    Object::new("Log")
        .description("An entry of a user's activity log.")
        .field(prop("id", TypeRef::named_nn(TypeRef::ID), "Unique id; ids grow with time."))
        .field(prop("event", TypeRef::named_nn(TypeRef::STRING), "What happened: `user.create`, `session.create.email`, `session.delete`, `user.update.password`, ..."))
        .field(prop("actor", TypeRef::named(TypeRef::STRING), "Who did it when it was not the user: `key:ID` for an API key, `admin:EMAIL` for a console administrator (in the user's own `accountLogs`: `server`, with no address or user agent); null for the user themself."))
        .field(prop("ip", TypeRef::named_nn(TypeRef::STRING), "The IP address of the device."))
        .field(prop("userAgent", TypeRef::named_nn(TypeRef::STRING), "The user agent of the device."))
        .field(prop("createdAt", TypeRef::named_nn(DATETIME), "When it happened."))
}

fn user_logs() -> Field {
    with_connection_args(Field::new(
        "userLogs",
        TypeRef::named_nn("LogConnection"),
        |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                let grant = caller.require::<UsersRead>()?;
                let page = page_request(&ctx)?;
                let user_id = opt_string(&ctx, "userId")?.unwrap_or_default();
                let (logs, total) = service::user_logs(
                    app(&ctx)?,
                    &grant,
                    &user_id,
                    &page,
                    wants_total_count(&ctx),
                )
                .await?;
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
    .description(
        "A user's activity log, oldest first; `last: n` gives the newest (scope `users.read`).",
    )
    .argument(InputValue::new("userId", TypeRef::named_nn(TypeRef::ID)).description("The user."))
}

fn user_memberships() -> Field {
    Field::new(
        "userMemberships",
        TypeRef::named_nn_list_nn("Membership"),
        |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                let grant = caller.require::<UsersRead>()?;
                let user_id = opt_string(&ctx, "userId")?.unwrap_or_default();
                let first = count_arg(&ctx, "first", MAX_PAGE_SIZE)?.unwrap_or(MEMBERSHIPS_PAGE);
                let after = opt_string(&ctx, "after")?;
                let state = app(&ctx)?;
                let memberships =
                    service::user_memberships(state, &grant, &user_id, first, after.as_deref())
                        .await?;
                Ok(Some(FieldValue::list(
                    memberships
                        .iter()
                        .map(|m| FieldValue::value(state.memberships.value(m))),
                )))
            })
        },
    )
    .description("A user's team memberships, confirmed or invited, oldest first, a page at a time (scope `users.read`).")
    .argument(InputValue::new("userId", TypeRef::named_nn(TypeRef::ID)).description("The user."))
    .argument(
        InputValue::new("first", TypeRef::named(TypeRef::INT))
            .default_value(MEMBERSHIPS_PAGE as i32)
            .description("How many memberships, at most 100."),
    )
    .argument(
        InputValue::new("after", TypeRef::named(TypeRef::ID))
            .description("The id of the last membership of the page before: the page goes on after it."),
    )
}

/// Memberships a page of `userMemberships` holds when the request does not say.
const MEMBERSHIPS_PAGE: usize = 100;

fn delete_user_payload_type() -> Object {
    deleted_payload_type(
        "DeleteUserPayload",
        "The result of `deleteUser`.",
        "Id of the deleted user.",
    )
}

fn delete_sessions_payload_type() -> Object {
    Object::new("DeleteSessionsPayload")
        .description("The result of deleting several sessions.")
        .field(prop(
            "deletedCount",
            TypeRef::named_nn(TypeRef::INT),
            "How many sessions were deleted.",
        ))
}

fn user() -> Field {
    Field::new("user", TypeRef::named("User"), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            let grant = caller.require::<UsersRead>()?;
            let id = opt_string(&ctx, "id")?.unwrap_or_default();
            let user = service::get_user(app(&ctx)?, &grant, &id).await?;
            Ok(Some(FieldValue::value(user_value(&user))))
        })
    })
    .description("A user of the addressed project (scope `users.read`).")
    .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID)).description("The user."))
}

fn users() -> Field {
    with_connection_args(Field::new(
        "users",
        TypeRef::named_nn("UserConnection"),
        |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                let grant = caller.require::<UsersRead>()?;
                let page = page_request(&ctx)?;
                let search = opt_string(&ctx, "search")?;
                let (users, total) = service::list_users(
                    app(&ctx)?,
                    &grant,
                    search.as_deref(),
                    &page,
                    wants_total_count(&ctx),
                )
                .await?;
                Ok(Some(FieldValue::value(connection(
                    &page,
                    users,
                    total,
                    |u| &u.id,
                    user_value,
                ))))
            })
        },
    ))
    .description("The users of the addressed project, by id (scope `users.read`).")
    .argument(
        InputValue::new("search", TypeRef::named(TypeRef::STRING)).description(
            "Only users whose name, email, phone or id starts with this text (any case).",
        ),
    )
}

fn user_sessions() -> Field {
    Field::new(
        "userSessions",
        TypeRef::named_nn_list_nn("Session"),
        |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                let grant = caller.require::<UsersRead>()?;
                let user_id = opt_string(&ctx, "userId")?.unwrap_or_default();
                let sessions = service::list_user_sessions(app(&ctx)?, &grant, &user_id).await?;
                Ok(Some(FieldValue::list(
                    sessions
                        .iter()
                        .map(|s| FieldValue::value(session_value(s, None))),
                )))
            })
        },
    )
    .description("A user's sessions, newest first (scope `users.read`).")
    .argument(InputValue::new("userId", TypeRef::named_nn(TypeRef::ID)).description("The user."))
}

fn create_user() -> Field {
    Field::new("createUser", TypeRef::named_nn("User"), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            let grant = caller.require::<UsersWrite>()?;
            let input: CreateUserInput = input(&ctx)?;
            let password_hash = input
                .password_hash
                .map(|h| {
                    let algorithm = ALGORITHMS
                        .iter()
                        .find(|(graphql, _, _)| *graphql == h.algorithm)
                        .map(|(_, name, _)| name.to_string())
                        .unwrap_or(h.algorithm);
                    ImportedHash {
                        algorithm,
                        hash: h.hash,
                        salt: h.salt,
                        salt_separator: h.salt_separator,
                        signer_key: h.signer_key,
                        cost_cpu: h.cost_cpu,
                        cost_memory: h.cost_memory,
                        cost_parallel: h.cost_parallel,
                        length: h.length,
                        sha_version: h.sha_version,
                    }
                    .into_stored()
                })
                .transpose()?;
            let new = NewUser {
                id: input.id,
                email: input.email,
                phone: input.phone,
                name: input.name,
                password: input.password,
                password_hash,
            };
            let user = service::create_user(app(&ctx)?, &grant, new).await?;
            Ok(Some(FieldValue::value(user_value(&user))))
        })
    })
    .description("Creates a user (scope `users.write`).")
    .argument(CreateUserInput::argument())
}

fn update_user() -> Field {
    Field::new("updateUser", TypeRef::named_nn("User"), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            let grant = caller.require::<UsersWrite>()?;
            let input: UpdateUserInput = input(&ctx)?;
            let changes = UserChanges {
                name: input.name,
                email: input.email,
                phone: input.phone,
                password: input.password,
                blocked: input.blocked,
                email_verified: input.email_verified,
                phone_verified: input.phone_verified,
                labels: input.labels,
                prefs: input.prefs,
                mfa: input.mfa,
                ..Default::default()
            };
            let user = service::update_user(app(&ctx)?, &grant, &input.id, changes).await?;
            Ok(Some(FieldValue::value(user_value(&user))))
        })
    })
    .description("Changes a user: profile, password, block, verification, labels, prefs (scope `users.write`).")
    .argument(UpdateUserInput::argument())
}

fn delete_user() -> Field {
    Field::new(
        "deleteUser",
        TypeRef::named_nn("DeleteUserPayload"),
        |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                let grant = caller.require::<UsersWrite>()?;
                let input: DeleteUserInput = input(&ctx)?;
                service::delete_user(app(&ctx)?, &grant, &input.id).await?;
                Ok(Some(FieldValue::value(object([(
                    "deletedId",
                    Value::from(input.id),
                )]))))
            })
        },
    )
    .description(
        "Deletes a user and their sessions; they are signed out at once (scope `users.write`).",
    )
    .argument(DeleteUserInput::argument())
}

fn delete_user_mfa_authenticator() -> Field {
    Field::new(
        "deleteUserMfaAuthenticator",
        TypeRef::named_nn("User"),
        |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                let grant = caller.require::<UsersWrite>()?;
                let input: DeleteUserMfaAuthenticatorInput = input(&ctx)?;
                let changes = UserChanges {
                    reset_mfa: true,
                    ..Default::default()
                };
                let user = service::update_user(app(&ctx)?, &grant, &input.user_id, changes).await?;
                Ok(Some(FieldValue::value(user_value(&user))))
            })
        },
    )
    .description(
        "Removes a user's authenticator app and recovery codes and turns MFA off, for a user who lost their device; they set it up again from their account (scope `users.write`).",
    )
    .argument(DeleteUserMfaAuthenticatorInput::argument())
}

fn delete_user_session() -> Field {
    Field::new(
        "deleteUserSession",
        TypeRef::named_nn("DeleteSessionPayload"),
        |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                let grant = caller.require::<UsersWrite>()?;
                let input: DeleteUserSessionInput = input(&ctx)?;
                let deleted = service::delete_user_session(
                    app(&ctx)?,
                    &grant,
                    &input.user_id,
                    &input.session_id,
                )
                .await?;
                Ok(Some(FieldValue::value(object([(
                    "deletedId",
                    Value::from(deleted),
                )]))))
            })
        },
    )
    .description("Signs a user out of one device: the session stops working at once, everywhere (scope `users.write`).")
    .argument(DeleteUserSessionInput::argument())
}

fn delete_user_sessions() -> Field {
    Field::new(
        "deleteUserSessions",
        TypeRef::named_nn("DeleteSessionsPayload"),
        |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                let grant = caller.require::<UsersWrite>()?;
                let input: DeleteUserSessionsInput = input(&ctx)?;
                let count =
                    service::delete_user_sessions(app(&ctx)?, &grant, &input.user_id).await?;
                Ok(Some(FieldValue::value(object([(
                    "deletedCount",
                    Value::from(count),
                )]))))
            })
        },
    )
    .description("Signs a user out of every device (scope `users.write`).")
    .argument(DeleteUserSessionsInput::argument())
}
