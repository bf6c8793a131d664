//! GraphQL of OAuth2 sign-in: a project's providers (`oauth2Providers`,
//! `updateProjectOAuth2Provider`, `deleteProjectOAuth2Provider`, scope `admin`) and
//! the caller's linked provider accounts (`accountIdentities`, `deleteIdentity`).
//! The sign-in itself is a browser redirect, served by `http::oauth2`.

use async_graphql::Value;
use async_graphql::dynamic::{
    Field, FieldFuture, FieldValue, InputObject, InputValue, Object, TypeRef,
};
use serde::Deserialize;

use crate::graphql::SchemaParts;
use crate::graphql::types::{
    DATETIME, IdInput, app, caller, datetime, input, input_object, object, prop,
};
use crate::services::projects::service::get_project;

use super::oauth2::{self, Identity, ProviderChanges, ProviderConfig};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateProviderInput {
    project_id: String,
    provider: String,
    enabled: Option<bool>,
    client_id: Option<String>,
    client_secret: Option<String>,
    issuer: Option<String>,
    authorization_url: Option<String>,
    token_url: Option<String>,
    user_info_url: Option<String>,
    scopes: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProviderRefInput {
    project_id: String,
    provider: String,
}

fn optional_string(value: &Option<String>) -> Value {
    value.as_deref().map(Value::from).unwrap_or(Value::Null)
}

fn provider_value(config: &ProviderConfig) -> Value {
    object([
        ("provider", Value::from(config.provider.as_str())),
        ("enabled", Value::from(config.enabled)),
        ("clientId", Value::from(config.client_id.as_str())),
        ("issuer", optional_string(&config.issuer)),
        (
            "authorizationUrl",
            optional_string(&config.authorization_url),
        ),
        ("tokenUrl", optional_string(&config.token_url)),
        ("userInfoUrl", optional_string(&config.userinfo_url)),
        (
            "scopes",
            Value::List(
                config
                    .scopes
                    .iter()
                    .map(|s| Value::from(s.as_str()))
                    .collect(),
            ),
        ),
        (
            "signInPath",
            Value::from(format!(
                "/v1/account/oauth2/{}?project={}",
                config.provider, config.project_id
            )),
        ),
        (
            "callbackPath",
            Value::from(format!(
                "/v1/account/oauth2/callback/{}/{}",
                config.provider, config.project_id
            )),
        ),
        ("createdAt", datetime(config.created_at)),
        ("updatedAt", datetime(config.updated_at)),
    ])
}

fn identity_value(identity: &Identity) -> Value {
    object([
        ("id", Value::from(identity.id.as_str())),
        ("userId", Value::from(identity.user_id.as_str())),
        ("provider", Value::from(identity.provider.as_str())),
        ("providerUid", Value::from(identity.subject.as_str())),
        ("providerEmail", optional_string(&identity.email)),
        ("createdAt", datetime(identity.created_at)),
        ("updatedAt", datetime(identity.updated_at)),
    ])
}

pub fn register(parts: &mut SchemaParts) {
    let string = || TypeRef::named_nn(TypeRef::STRING);
    let optional = || TypeRef::named(TypeRef::STRING);
    parts.add_type(
        Object::new("OAuth2Provider")
            .description("A provider a project's users sign in with. The client secret is stored encrypted and never shown.")
            .field(prop("provider", string(), "Its name: `github`, `google`, `gitlab`, or any other name for an OpenID Connect issuer."))
            .field(prop("enabled", TypeRef::named_nn(TypeRef::BOOLEAN), "Whether users may sign in with it."))
            .field(prop("clientId", string(), "The OAuth2 client id registered with the provider."))
            .field(prop("issuer", optional(), "OpenID Connect issuer whose discovery document gives the endpoints."))
            .field(prop("authorizationUrl", optional(), "Authorization endpoint, overriding discovery (or GitHub's)."))
            .field(prop("tokenUrl", optional(), "Token endpoint, overriding discovery (or GitHub's)."))
            .field(prop("userInfoUrl", optional(), "Userinfo endpoint (GitHub: the `/user` API), overriding discovery."))
            .field(prop("scopes", TypeRef::named_nn_list_nn(TypeRef::STRING), "Scopes asked for."))
            .field(prop("signInPath", string(), "Where to send a browser to sign in; add `&success=URL&failure=URL` (and `&mode=token` for apps)."))
            .field(prop("callbackPath", string(), "The redirect URI to register with the provider, after this server's public URL."))
            .field(prop("createdAt", TypeRef::named_nn(DATETIME), "When it was configured."))
            .field(prop("updatedAt", TypeRef::named_nn(DATETIME), "When it last changed.")),
    );
    parts.add_type(
        InputObject::new("UpdateProjectOAuth2ProviderInput")
            .description("Creates or changes a project's OAuth2 provider; omitted fields stay as they are, an empty URL removes it.")
            .field(InputValue::new("projectId", TypeRef::named_nn(TypeRef::ID)).description("The project."))
            .field(InputValue::new("provider", TypeRef::named_nn(TypeRef::STRING)).description("`github`, `google`, `gitlab`, or a name of your choice (2-32 of `a-z0-9-`) for any OpenID Connect issuer."))
            .field(InputValue::new("enabled", TypeRef::named(TypeRef::BOOLEAN)).description("Let users sign in with it (needs a client id and secret)."))
            .field(InputValue::new("clientId", optional()).description("OAuth2 client id."))
            .field(InputValue::new("clientSecret", optional()).description("OAuth2 client secret; stored encrypted with a key derived from the server secret."))
            .field(InputValue::new("issuer", optional()).description("OpenID Connect issuer URL (Google and gitlab.com have defaults)."))
            .field(InputValue::new("authorizationUrl", optional()).description("Authorization endpoint override."))
            .field(InputValue::new("tokenUrl", optional()).description("Token endpoint override."))
            .field(InputValue::new("userInfoUrl", optional()).description("Userinfo endpoint override."))
            .field(InputValue::new("scopes", TypeRef::named_nn_list(TypeRef::STRING)).description("Scopes to ask for (default: `openid email profile`; GitHub `read:user user:email`).")),
    );
    parts.add_type(
        InputObject::new("DeleteProjectOAuth2ProviderInput")
            .description("The provider to remove; its users keep their accounts.")
            .field(
                InputValue::new("projectId", TypeRef::named_nn(TypeRef::ID))
                    .description("The project."),
            )
            .field(
                InputValue::new("provider", TypeRef::named_nn(TypeRef::STRING))
                    .description("The provider's name."),
            ),
    );
    parts.add_type(
        Object::new("DeleteProjectOAuth2ProviderPayload")
            .description("The result of `deleteProjectOAuth2Provider`.")
            .field(prop("provider", string(), "The removed provider's name.")),
    );
    parts.add_type(
        Object::new("Identity")
            .description("An account at an OAuth2 provider, linked to a user: signing in with it signs in as that user.")
            .field(prop("id", TypeRef::named_nn(TypeRef::ID), "Unique id."))
            .field(prop("userId", TypeRef::named_nn(TypeRef::ID), "The user it signs in as."))
            .field(prop("provider", string(), "The provider's name."))
            .field(prop("providerUid", string(), "The account's id at the provider."))
            .field(prop("providerEmail", optional(), "The email the provider gave."))
            .field(prop("createdAt", TypeRef::named_nn(DATETIME), "When it was linked."))
            .field(prop("updatedAt", TypeRef::named_nn(DATETIME), "When it last changed.")),
    );
    parts.add_type(input_object(
        "DeleteIdentityInput",
        "The linked provider account to remove.",
        &[("id", TypeRef::named_nn(TypeRef::ID), "The identity's id.")],
    ));
    parts.add_type(
        Object::new("DeleteIdentityPayload")
            .description("The result of `deleteIdentity`.")
            .field(prop(
                "deletedId",
                TypeRef::named_nn(TypeRef::ID),
                "Id of the unlinked identity.",
            )),
    );

    parts.query(
        Field::new(
            "oauth2Providers",
            TypeRef::named_nn_list_nn("OAuth2Provider"),
            |ctx| {
                FieldFuture::new(async move {
                    let admin = caller(&ctx)?.require_admin()?;
                    let project_id = ctx.args.try_get("projectId")?.string()?.to_string();
                    let admin = caller(&ctx)?.extend_to(admin, Some(&project_id))?;
                    let state = app(&ctx)?;
                    get_project(state, &admin).await?;
                    let providers = oauth2::list_providers(state, &admin).await?;
                    Ok(Some(FieldValue::list(
                        providers
                            .iter()
                            .map(|p| FieldValue::value(provider_value(p))),
                    )))
                })
            },
        )
        .description("The OAuth2 providers of a project (scope `admin`).")
        .argument(InputValue::new("projectId", TypeRef::named_nn(TypeRef::ID))),
    );
    parts.mutation(
        Field::new(
            "updateProjectOAuth2Provider",
            TypeRef::named_nn("OAuth2Provider"),
            |ctx| {
                FieldFuture::new(async move {
                    let admin = caller(&ctx)?.require_admin()?;
                    let input: UpdateProviderInput = input(&ctx)?;
                    let admin = caller(&ctx)?.extend_to(admin, Some(&input.project_id))?;
                    let state = app(&ctx)?;
                    get_project(state, &admin).await?;
                    let config = oauth2::configure_provider(
                        state,
                        &admin,
                        &input.provider,
                        ProviderChanges {
                            enabled: input.enabled,
                            client_id: input.client_id,
                            client_secret: input.client_secret,
                            issuer: input.issuer,
                            authorization_url: input.authorization_url,
                            token_url: input.token_url,
                            userinfo_url: input.user_info_url,
                            scopes: input.scopes,
                        },
                    )
                    .await?;
                    Ok(Some(FieldValue::value(provider_value(&config))))
                })
            },
        )
        .description(
            "Creates or changes a project's OAuth2 / OpenID Connect provider (scope `admin`).",
        )
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn("UpdateProjectOAuth2ProviderInput"),
        )),
    );
    parts.mutation(
        Field::new(
            "deleteProjectOAuth2Provider",
            TypeRef::named_nn("DeleteProjectOAuth2ProviderPayload"),
            |ctx| {
                FieldFuture::new(async move {
                    let admin = caller(&ctx)?.require_admin()?;
                    let input: ProviderRefInput = input(&ctx)?;
                    let admin = caller(&ctx)?.extend_to(admin, Some(&input.project_id))?;
                    let state = app(&ctx)?;
                    get_project(state, &admin).await?;
                    oauth2::delete_provider(state, &admin, &input.provider).await?;
                    Ok(Some(FieldValue::value(object([(
                        "provider",
                        Value::from(input.provider),
                    )]))))
                })
            },
        )
        .description("Removes a project's OAuth2 provider (scope `admin`). Linked users keep their accounts and other sign-in methods.")
        .argument(InputValue::new("input", TypeRef::named_nn("DeleteProjectOAuth2ProviderInput"))),
    );
    parts.query(
        Field::new(
            "accountIdentities",
            TypeRef::named_nn_list_nn("Identity"),
            |ctx| {
                FieldFuture::new(async move {
                    let me = caller(&ctx)?.require_session()?;
                    let identities =
                        oauth2::identities_of(app(&ctx)?, &me.user.project_id, &me.user.id).await?;
                    Ok(Some(FieldValue::list(
                        identities
                            .iter()
                            .map(|i| FieldValue::value(identity_value(i))),
                    )))
                })
            },
        )
        .description("The provider accounts linked to the signed-in user."),
    );
    parts.mutation(
        Field::new(
            "deleteIdentity",
            TypeRef::named_nn("DeleteIdentityPayload"),
            |ctx| {
                FieldFuture::new(async move {
                    let me = caller(&ctx)?.require_session()?;
                    let input: IdInput = input(&ctx)?;
                    oauth2::delete_identity(
                        app(&ctx)?,
                        &me.user.project_id,
                        &me.user.id,
                        &input.id,
                    )
                    .await?;
                    Ok(Some(FieldValue::value(object([(
                        "deletedId",
                        Value::from(input.id),
                    )]))))
                })
            },
        )
        .description("Unlinks a provider account from the signed-in user.")
        .argument(InputValue::new(
            "input",
            TypeRef::named_nn("DeleteIdentityInput"),
        )),
    );
}
