//! GraphQL of multi-factor sign-in: `accountMfaFactors`, `createMfaAuthenticator`,
//! `verifyMfaAuthenticator`, `deleteMfaAuthenticator`, `createMfaRecoveryCodes`,
//! `updateMfa`, `updateMfaChallenge`. One function per root field; the rules live in
//! `mfa`.

use async_graphql::Value;
use async_graphql::dynamic::{
    Enum, EnumItem, Field, FieldFuture, FieldValue, InputValue, Object, TypeRef,
};

use crate::graphql::SchemaParts;
use crate::graphql::input::GraphQLInput as _;
use crate::graphql::types::{app, caller, input, object, prop};
use crate::services::account::mfa;
use crate::services::account::schema::session_by_secret;
use crate::services::users::schema::user_value;
use crate::services::users::service;

crate::graphql_input! {
    "A code from the authenticator app."
    struct MfaCodeInput {
        "The 6-digit code."
        code: String,
    }
}

crate::graphql_input! {
    "MFA on or off."
    struct UpdateMfaInput {
        "Require a second factor at sign-in."
        enabled: bool,
    }
}

crate::graphql_input! {
    "The second factor of this session."
    struct UpdateMfaChallengeInput {
        "Which factor."
        factor: String as "MfaFactor",
        "The authenticator code or a recovery code."
        code: String,
    }
}

/// Multi-factor sign-in: authenticator, recovery codes, on/off, the challenge.
pub(super) fn register(parts: &mut SchemaParts) {
    parts.add_type(mfa_authenticator_type());
    parts.add_type(mfa_factors_type());
    parts.add_type(mfa_factor_enum());
    parts.add_input::<MfaCodeInput>();
    parts.add_input::<UpdateMfaInput>();
    parts.add_input::<UpdateMfaChallengeInput>();
    parts.query(account_mfa_factors());
    parts.mutation(create_mfa_authenticator());
    parts.mutation(verify_mfa_authenticator());
    parts.mutation(delete_mfa_authenticator());
    parts.mutation(create_mfa_recovery_codes());
    parts.mutation(update_mfa());
    parts.mutation(update_mfa_challenge());
}

fn mfa_authenticator_type() -> Object {
    Object::new("MfaAuthenticator")
        .description("A new TOTP authenticator: enter the secret in an authenticator app (or scan the URI as a QR code), then confirm with `verifyMfaAuthenticator`.")
        .field(prop("secret", TypeRef::named_nn(TypeRef::STRING), "The shared secret, base32."))
        .field(prop("uri", TypeRef::named_nn(TypeRef::STRING), "`otpauth://` URI for a QR code."))
}

fn mfa_factors_type() -> Object {
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
        ))
}

fn mfa_factor_enum() -> Enum {
    Enum::new("MfaFactor")
        .description("A second factor for `updateMfaChallenge`.")
        .item(EnumItem::new("TOTP").description("A code from the authenticator app."))
        .item(
            EnumItem::new("RECOVERY_CODE")
                .description("One of the recovery codes; each works once."),
        )
}

fn account_mfa_factors() -> Field {
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
    .description("The signed-in user's second factors (also while the session owes one).")
}

fn create_mfa_authenticator() -> Field {
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
    .description("Starts adding a TOTP authenticator app.")
}

fn verify_mfa_authenticator() -> Field {
    Field::new(
        "verifyMfaAuthenticator",
        TypeRef::named_nn(TypeRef::BOOLEAN),
        |ctx| {
            FieldFuture::new(async move {
                let me = session_by_secret(&ctx, "confirm an authenticator")?;
                let input: MfaCodeInput = input(&ctx)?;
                mfa::verify_authenticator(app(&ctx)?, me, &input.code).await?;
                Ok(Some(FieldValue::value(true)))
            })
        },
    )
    .description("Confirms the authenticator with a code from the app.")
    .argument(MfaCodeInput::argument())
}

fn delete_mfa_authenticator() -> Field {
    Field::new(
        "deleteMfaAuthenticator",
        TypeRef::named_nn(TypeRef::BOOLEAN),
        |ctx| {
            FieldFuture::new(async move {
                let me = session_by_secret(&ctx, "remove an authenticator")?;
                let input: MfaCodeInput = input(&ctx)?;
                mfa::delete_authenticator(app(&ctx)?, me, &input.code).await?;
                Ok(Some(FieldValue::value(true)))
            })
        },
    )
    .description("Removes the authenticator (with a current code); MFA turns off.")
    .argument(MfaCodeInput::argument())
}

fn create_mfa_recovery_codes() -> Field {
    Field::new(
        "createMfaRecoveryCodes",
        TypeRef::named_nn_list_nn(TypeRef::STRING),
        |ctx| {
            FieldFuture::new(async move {
                let me = session_by_secret(&ctx, "create recovery codes")?;
                let proof: Option<MfaCodeInput> = input(&ctx)?;
                let codes = mfa::create_recovery_codes(
                    app(&ctx)?,
                    me,
                    proof.as_ref().map(|p| p.code.as_str()),
                )
                .await?;
                Ok(Some(FieldValue::list(
                    codes.into_iter().map(FieldValue::value),
                )))
            })
        },
    )
    .description("Ten new recovery codes, replacing any old ones. Shown only now; each works once. Replacing codes that are left takes `input.code`: a current code from the authenticator app, or one of the recovery codes left.")
    .argument(InputValue::new("input", TypeRef::named(MfaCodeInput::NAME)))
}

fn update_mfa() -> Field {
    Field::new("updateMfa", TypeRef::named_nn("User"), |ctx| {
        FieldFuture::new(async move {
            let me = session_by_secret(&ctx, "turn MFA on or off")?;
            let input: UpdateMfaInput = input(&ctx)?;
            let state = app(&ctx)?;
            mfa::set_enabled(state, me, input.enabled).await?;
            Ok(Some(FieldValue::value(user_value(
                &service::own_user(state, me).await?,
            ))))
        })
    })
    .description("Turns the second factor on (needs a confirmed authenticator) or off.")
    .argument(UpdateMfaInput::argument())
}

fn update_mfa_challenge() -> Field {
    Field::new("updateMfaChallenge", TypeRef::named_nn(TypeRef::BOOLEAN), |ctx| {
        FieldFuture::new(async move {
            let me = caller(&ctx)?.require_session_owing_mfa()?;
            let input: UpdateMfaChallengeInput = input(&ctx)?;
            mfa::complete_challenge(app(&ctx)?, me, &input.factor, &input.code).await?;
            Ok(Some(FieldValue::value(true)))
        })
    })
    .description("Passes this session's second factor; until then only MFA operations work and `MFA_REQUIRED` answers the rest.")
    .argument(UpdateMfaChallengeInput::argument())
}
