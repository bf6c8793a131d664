//! GraphQL of the email flows: `createVerification`, `updateVerification`,
//! `createRecovery`, `updateRecovery`, `createMagicUrlToken`, `createEmailToken` and
//! `createSession`, which finishes a magic link, an emailed code or an OAuth2
//! hand-over. One function per root field; the rules live in `service`.

use async_graphql::Value;
use async_graphql::dynamic::{Field, FieldFuture, FieldValue, Object, TypeRef};

use crate::auth::{Caller, Credential};
use crate::error::AppError;
use crate::graphql::SchemaParts;
use crate::graphql::types::{DATETIME, app, caller, datetime, input, object, prop};
use crate::services::account::schema::{client, not_signed_in, signed_in};
use crate::services::account::service::{self as account, IssuedToken, TokenOwner};
use crate::services::users::schema::user_value;

crate::graphql_input! {
    "Where the verification link leads."
    struct CreateVerificationInput {
        "Page of your app the link opens; `userId` and `secret` are added to it. Its host must be one of the project's redirect hosts."
        url: String,
    }
}

crate::graphql_input! {
    "The values from the verification link."
    struct UpdateVerificationInput {
        "`userId` from the link."
        user_id: String as "ID",
        "`secret` from the link."
        secret: String,
    }
}

crate::graphql_input! {
    "Who forgot their password, and where the link leads."
    struct CreateRecoveryInput {
        "The account's email."
        email: String,
        "Page of your app the link opens; `userId` and `secret` are added to it. Its host must be one of the project's redirect hosts."
        url: String,
    }
}

crate::graphql_input! {
    "The values from the recovery link, and the new password."
    struct UpdateRecoveryInput {
        "`userId` from the link."
        user_id: String as "ID",
        "`secret` from the link."
        secret: String,
        "The new password."
        password: String,
    }
}

crate::graphql_input! {
    "Who signs in, and where the link leads."
    struct CreateMagicUrlTokenInput {
        "The email; a new user is created for an unknown one."
        email: String,
        "Page of your app the link opens; `userId` and `secret` are added to it. Its host must be one of the project's redirect hosts."
        url: String,
    }
}

crate::graphql_input! {
    "Who signs in."
    struct CreateEmailTokenInput {
        "The email; a new user is created for an unknown one."
        email: String,
    }
}

crate::graphql_input! {
    "The values from a magic link or an OAuth2 hand-over (`userId` and `secret`), or an emailed code (`email` and the code)."
    struct CreateSessionInput {
        "`userId` from the link; give it or `email`."
        user_id: Option<String> as "ID",
        "The email the code was sent to; give it or `userId`."
        email: Option<String>,
        "`secret` from the link, or the 6-digit code."
        secret: String,
    }
}

/// The email flows: verification, recovery, magic link, emailed code.
pub(super) fn register(parts: &mut SchemaParts) {
    parts.add_type(token_type());
    parts.add_input::<CreateVerificationInput>();
    parts.add_input::<UpdateVerificationInput>();
    parts.add_input::<CreateRecoveryInput>();
    parts.add_input::<UpdateRecoveryInput>();
    parts.add_input::<CreateMagicUrlTokenInput>();
    parts.add_input::<CreateEmailTokenInput>();
    parts.add_input::<CreateSessionInput>();
    parts.mutation(create_verification());
    parts.mutation(update_verification());
    parts.mutation(create_recovery());
    parts.mutation(update_recovery());
    parts.mutation(create_magic_url_token());
    parts.mutation(create_email_token());
    parts.mutation(create_session());
}

fn token_type() -> Object {
    Object::new("Token")
        .description("A one-time secret sent by email: to whom, and until when it works.")
        .field(prop(
            "userId",
            TypeRef::named(TypeRef::ID),
            "The user it was sent to, for that user signed in; null for anyone else (the emailed link carries it; finish a code with the email).",
        ))
        .field(prop(
            "expiresAt",
            TypeRef::named_nn(DATETIME),
            "When it stops working.",
        ))
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
        ("expiresAt", datetime(token.expires_at)),
    ]))
}

fn create_verification() -> Field {
    Field::new("createVerification", TypeRef::named_nn("Token"), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            let me = caller.require_session()?;
            let input: CreateVerificationInput = input(&ctx)?;
            account::count_outgoing_mail(app(&ctx)?, caller, &client(&ctx)).await?;
            let token = account::create_verification(app(&ctx)?, me, &input.url).await?;
            Ok(Some(token_value(caller, &token)))
        })
    })
    .description("Emails the signed-in user a link that verifies their email (valid 7 days); `EMAIL_ALREADY_VERIFIED` once it is verified.")
    .argument(CreateVerificationInput::argument())
}

fn update_verification() -> Field {
    Field::new("updateVerification", TypeRef::named_nn("User"), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            let input: UpdateVerificationInput = input(&ctx)?;
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
    .description("Marks the email verified with the values from the link. Each link works once.")
    .argument(UpdateVerificationInput::argument())
}

fn create_recovery() -> Field {
    Field::new("createRecovery", TypeRef::named_nn(TypeRef::BOOLEAN), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            let input: CreateRecoveryInput = input(&ctx)?;
            account::count_outgoing_mail(app(&ctx)?, caller, &client(&ctx)).await?;
            account::create_recovery(app(&ctx)?, &caller.project.id, &input.email, &input.url)
                .await?;
            Ok(Some(FieldValue::value(true)))
        })
    })
    .description("Emails a password-reset link (valid 1 hour). Answers `true` whether or not the email has an account.")
    .argument(CreateRecoveryInput::argument())
}

fn update_recovery() -> Field {
    Field::new("updateRecovery", TypeRef::named_nn(TypeRef::BOOLEAN), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            let input: UpdateRecoveryInput = input(&ctx)?;
            account::complete_recovery(
                app(&ctx)?,
                &caller.project.id,
                &input.user_id,
                &input.secret,
                input.password,
                &client(&ctx),
            )
            .await?;
            Ok(Some(FieldValue::value(true)))
        })
    })
    .description("Sets a new password with the values from the recovery link, and signs the user out everywhere.")
    .argument(UpdateRecoveryInput::argument())
}

fn create_magic_url_token() -> Field {
    Field::new("createMagicUrlToken", TypeRef::named_nn("Token"), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            let input: CreateMagicUrlTokenInput = input(&ctx)?;
            account::count_outgoing_mail(app(&ctx)?, caller, &client(&ctx)).await?;
            let token =
                account::create_magic_url(app(&ctx)?, &caller.project.id, &input.email, &input.url)
                    .await?;
            Ok(Some(token_value(caller, &token)))
        })
    })
    .description("Emails a sign-in link (valid 1 hour); finish with `createSession`.")
    .argument(CreateMagicUrlTokenInput::argument())
}

fn create_email_token() -> Field {
    Field::new("createEmailToken", TypeRef::named_nn("Token"), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            let input: CreateEmailTokenInput = input(&ctx)?;
            account::count_outgoing_mail(app(&ctx)?, caller, &client(&ctx)).await?;
            let token =
                account::create_email_code(app(&ctx)?, &caller.project.id, &input.email).await?;
            Ok(Some(token_value(caller, &token)))
        })
    })
    .description(
        "Emails a 6-digit sign-in code (valid 15 minutes); finish with `createSession` and the email.",
    )
    .argument(CreateEmailTokenInput::argument())
}

fn create_session() -> Field {
    Field::new("createSession", TypeRef::named_nn("SessionPayload"), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            not_signed_in(caller)?;
            let input: CreateSessionInput = input(&ctx)?;
            let owner = match (&input.user_id, &input.email) {
                (Some(id), None) => TokenOwner::UserId(id),
                (None, Some(email)) => TokenOwner::Email(email),
                _ => {
                    return Err(
                        AppError::invalid("userId", "give `userId` or `email`, not both").into(),
                    );
                }
            };
            let (session, secret) = account::create_session_from_token(
                app(&ctx)?,
                &caller.project.id,
                owner,
                &input.secret,
                client(&ctx),
            )
            .await?;
            signed_in(&ctx, &session, secret)
        })
    })
    .description("Signs in with a magic link's values or an emailed code. Each works once; the email becomes verified, and an account whose email was not verified before loses its password, second factor, other sessions and linked providers to the owner of the mailbox. Refused to a caller that is signed in (`SESSION_ALREADY_EXISTS`).")
    .argument(CreateSessionInput::argument())
}
