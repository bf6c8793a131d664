//! GraphQL of OAuth2 sign-in: a project's providers (`oauth2Providers`,
//! `updateProjectOAuth2Provider`, `deleteProjectOAuth2Provider`, scope `admin`) and
//! the caller's linked provider accounts (`accountIdentities`, `deleteIdentity`),
//! and every user's, for servers (`identities`, scope `users.read`;
//! `deleteUserIdentity`, scope `users.write`).
//! The sign-in itself is a browser redirect, served by `http::oauth2`.

use async_graphql::Value;
use async_graphql::dynamic::{Field, FieldFuture, FieldValue, InputValue, Object, TypeRef};

use crate::auth::scopes::{UsersRead, UsersWrite};
use crate::graphql::SchemaParts;
use crate::graphql::types::{
    DATETIME, app, caller, connection, connection_types, datetime, deleted_payload_type, input,
    object, opt_string, page_request, prop, wants_total_count, with_connection_args,
};
use crate::services::projects::service::get_project;

use super::oauth2::{self, Identity, IdentityFilter, ProviderChanges, ProviderConfig};

crate::graphql_input! {
    "Creates or changes a project's OAuth2 provider; omitted fields stay as they are, an empty URL removes it."
    struct UpdateProjectOAuth2ProviderInput {
        "The project."
        project_id: String as "ID",
        "`github`, `google`, `gitlab`, or a name of your choice (2-32 of `a-z0-9-`) for any OpenID Connect issuer."
        provider: String,
        "Let users sign in with it (needs a client id and secret)."
        enabled: Option<bool>,
        "OAuth2 client id."
        client_id: Option<String>,
        "OAuth2 client secret; stored encrypted with a key derived from the server secret."
        client_secret: Option<String>,
        "OpenID Connect issuer URL (Google and gitlab.com have defaults)."
        issuer: Option<String>,
        "Authorization endpoint override."
        authorization_url: Option<String>,
        "Token endpoint override."
        token_url: Option<String>,
        "Userinfo endpoint override."
        user_info_url: Option<String>,
        "Scopes to ask for (default: `openid email profile`; GitHub `read:user user:email`)."
        scopes: Option<Vec<String>>,
    }
}

crate::graphql_input! {
    "The provider to remove; its users keep their accounts."
    struct DeleteProjectOAuth2ProviderInput {
        "The project."
        project_id: String as "ID",
        "The provider's name."
        provider: String,
    }
}

crate::graphql_input! {
    "The linked provider account to remove."
    struct DeleteIdentityInput {
        "The identity's id."
        id: String as "ID",
    }
}

crate::graphql_input! {
    "The provider account to unlink from its user."
    struct DeleteUserIdentityInput {
        "The identity's id."
        id: String as "ID",
    }
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

/// Registers the provider settings and the caller's identities.
pub fn register(parts: &mut SchemaParts) {
    parts.add_type(oauth2_provider_type());
    parts.add_input::<UpdateProjectOAuth2ProviderInput>();
    parts.add_input::<DeleteProjectOAuth2ProviderInput>();
    parts.add_type(delete_provider_payload_type());
    parts.add_type(identity_type());
    parts.add_input::<DeleteIdentityInput>();
    parts.add_type(delete_identity_payload_type());
    parts.query(oauth2_providers());
    parts.mutation(update_project_oauth2_provider());
    parts.mutation(delete_project_oauth2_provider());
    parts.query(account_identities());
    parts.mutation(delete_identity());
    parts.add_types(connection_types("Identity", "identities"));
    parts.add_input::<DeleteUserIdentityInput>();
    parts.query(identities());
    parts.mutation(delete_user_identity());
}

fn oauth2_provider_type() -> Object {
    let string = || TypeRef::named_nn(TypeRef::STRING);
    let optional = || TypeRef::named(TypeRef::STRING);
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
        .field(prop("updatedAt", TypeRef::named_nn(DATETIME), "When it last changed."))
}

fn delete_provider_payload_type() -> Object {
    Object::new("DeleteProjectOAuth2ProviderPayload")
        .description("The result of `deleteProjectOAuth2Provider`.")
        .field(prop(
            "provider",
            TypeRef::named_nn(TypeRef::STRING),
            "The removed provider's name.",
        ))
}

fn identity_type() -> Object {
    let string = || TypeRef::named_nn(TypeRef::STRING);
    Object::new("Identity")
        .description("An account at an OAuth2 provider, linked to a user: signing in with it signs in as that user.")
        .field(prop("id", TypeRef::named_nn(TypeRef::ID), "Unique id."))
        .field(prop("userId", TypeRef::named_nn(TypeRef::ID), "The user it signs in as."))
        .field(prop("provider", string(), "The provider's name."))
        .field(prop("providerUid", string(), "The account's id at the provider."))
        .field(prop("providerEmail", TypeRef::named(TypeRef::STRING), "The email the provider gave."))
        .field(prop("createdAt", TypeRef::named_nn(DATETIME), "When it was linked."))
        .field(prop("updatedAt", TypeRef::named_nn(DATETIME), "When it last changed."))
}

fn delete_identity_payload_type() -> Object {
    deleted_payload_type(
        "DeleteIdentityPayload",
        "The result of `deleteIdentity`.",
        "Id of the unlinked identity.",
    )
}

fn oauth2_providers() -> Field {
    Field::new(
        "oauth2Providers",
        TypeRef::named_nn_list_nn("OAuth2Provider"),
        |ctx| {
            FieldFuture::new(async move {
                let admin = caller(&ctx)?.require_admin()?;
                let project_id = ctx.args.try_get("projectId")?.string()?.to_string();
                let state = app(&ctx)?;
                let admin = caller(&ctx)?.extend_to(admin, Some(&project_id))?;
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
    .argument(InputValue::new("projectId", TypeRef::named_nn(TypeRef::ID)))
}

fn update_project_oauth2_provider() -> Field {
    Field::new(
        "updateProjectOAuth2Provider",
        TypeRef::named_nn("OAuth2Provider"),
        |ctx| {
            FieldFuture::new(async move {
                let admin = caller(&ctx)?.require_admin()?;
                let input: UpdateProjectOAuth2ProviderInput = input(&ctx)?;
                let state = app(&ctx)?;
                let admin = caller(&ctx)?.extend_to(admin, Some(&input.project_id))?;
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
    .description("Creates or changes a project's OAuth2 / OpenID Connect provider (scope `admin`).")
    .argument(UpdateProjectOAuth2ProviderInput::argument())
}

fn delete_project_oauth2_provider() -> Field {
    Field::new(
        "deleteProjectOAuth2Provider",
        TypeRef::named_nn("DeleteProjectOAuth2ProviderPayload"),
        |ctx| {
            FieldFuture::new(async move {
                let admin = caller(&ctx)?.require_admin()?;
                let input: DeleteProjectOAuth2ProviderInput = input(&ctx)?;
                let state = app(&ctx)?;
                let admin = caller(&ctx)?.extend_to(admin, Some(&input.project_id))?;
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
    .argument(DeleteProjectOAuth2ProviderInput::argument())
}

fn account_identities() -> Field {
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
    .description("The provider accounts linked to the signed-in user.")
}

fn delete_identity() -> Field {
    Field::new(
        "deleteIdentity",
        TypeRef::named_nn("DeleteIdentityPayload"),
        |ctx| {
            FieldFuture::new(async move {
                let me = super::schema::session_by_secret(&ctx, "unlink sign-in methods")?;
                let input: DeleteIdentityInput = input(&ctx)?;
                oauth2::delete_identity(app(&ctx)?, &me.user.project_id, &me.user.id, &input.id)
                    .await?;
                Ok(Some(FieldValue::value(object([(
                    "deletedId",
                    Value::from(input.id),
                )]))))
            })
        },
    )
    .description("Unlinks a provider account from the signed-in user. Not with a JWT (`PERMISSION_DENIED`): a backend or function acting as the user does not change how they sign in.")
    .argument(DeleteIdentityInput::argument())
}

fn identities() -> Field {
    with_connection_args(Field::new(
        "identities",
        TypeRef::named_nn("IdentityConnection"),
        |ctx| {
            FieldFuture::new(async move {
                let grant = caller(&ctx)?.require::<UsersRead>()?;
                let page = page_request(&ctx)?;
                let filter = IdentityFilter {
                    user_id: opt_string(&ctx, "userId")?,
                    provider: opt_string(&ctx, "provider")?,
                    search: opt_string(&ctx, "search")?,
                };
                let (identities, total) = oauth2::list_identities(
                    app(&ctx)?,
                    &grant,
                    filter,
                    &page,
                    wants_total_count(&ctx),
                )
                .await?;
                Ok(Some(FieldValue::value(connection(
                    &page,
                    identities,
                    total,
                    |i| &i.id,
                    identity_value,
                ))))
            })
        },
    ))
    .description("The provider accounts linked to the addressed project's users, by id (scope `users.read`). The provider's tokens are never kept, so never shown.")
    .argument(
        InputValue::new("userId", TypeRef::named(TypeRef::ID))
            .description("Only this user's."),
    )
    .argument(
        InputValue::new("provider", TypeRef::named(TypeRef::STRING))
            .description("Only this provider's."),
    )
    .argument(
        InputValue::new("search", TypeRef::named(TypeRef::STRING))
            .description("Only those whose account id at the provider, or the email it gave, starts with this text."),
    )
}

fn delete_user_identity() -> Field {
    Field::new(
        "deleteUserIdentity",
        TypeRef::named_nn("DeleteIdentityPayload"),
        |ctx| {
            FieldFuture::new(async move {
                let grant = caller(&ctx)?.require::<UsersWrite>()?;
                let input: DeleteUserIdentityInput = input(&ctx)?;
                let identity = oauth2::delete_user_identity(app(&ctx)?, &grant, &input.id).await?;
                Ok(Some(FieldValue::value(object([(
                    "deletedId",
                    Value::from(identity.id),
                )]))))
            })
        },
    )
    .description("Unlinks any user's provider account (scope `users.write`); the user keeps their account and other sign-in methods.")
    .argument(DeleteUserIdentityInput::argument())
}
