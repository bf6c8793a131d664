//! GraphQL of API keys: `apiKeys`, `apiKeyScopes`, `createApiKey`, `deleteApiKey`.

use async_graphql::Value;
use async_graphql::dynamic::{Field, FieldFuture, FieldValue, InputValue, Object, TypeRef};

use crate::auth::scopes::{KeysWrite, Scope};
use crate::graphql::SchemaParts;
use crate::graphql::types::{
    DATETIME, app, caller, connection, connection_types, datetime, deleted_payload_type, input,
    object, opt_string, page_request, parse_datetime, prop, wants_total_count,
    with_connection_args,
};

use super::ApiKey;
use super::service::{self, NewApiKey};

/// The GraphQL value of a key.
pub fn key_value(key: &ApiKey) -> Value {
    object([
        ("id", Value::from(key.id.as_str())),
        ("projectId", Value::from(key.project_id.as_str())),
        ("name", Value::from(key.name.as_str())),
        (
            "scopes",
            Value::List(key.scopes.iter().map(|s| Value::from(s.name())).collect()),
        ),
        ("expiresAt", key.expires_at.map_or(Value::Null, datetime)),
        (
            "expired",
            Value::from(
                key.expires_at
                    .is_some_and(|at| at <= crate::db::now_millis()),
            ),
        ),
        ("createdAt", datetime(key.created_at)),
        ("updatedAt", datetime(key.updated_at)),
    ])
}

crate::graphql_input! {
    "A new API key."
    struct CreateApiKeyInput {
        "The project of the key; omitted: the addressed project. Another project needs scope `admin`."
        project_id: Option<String> as "ID",
        "What the key is for, 1-128 characters."
        name: String,
        "Scopes to grant: at least one, and none the calling key lacks."
        scopes: Vec<String>,
        "When the key stops working; omitted: never."
        expires_at: Option<String> as "DateTime",
    }
}

crate::graphql_input! {
    "The key to revoke."
    struct DeleteApiKeyInput {
        "The key's id."
        id: String as "ID",
    }
}

pub fn register(parts: &mut SchemaParts, _project: &crate::services::projects::Project) {
    parts.add_type(api_key_type());
    parts.add_types(connection_types("ApiKey", "API keys"));
    parts.add_type(api_key_scope_type());
    parts.add_input::<CreateApiKeyInput>();
    parts.add_type(create_api_key_payload_type());
    parts.add_input::<DeleteApiKeyInput>();
    parts.add_type(delete_api_key_payload_type());

    parts.query(api_key_scopes());
    parts.query(api_keys());
    parts.mutation(create_api_key());
    parts.mutation(delete_api_key());
}

fn api_key_type() -> Object {
    Object::new("ApiKey")
        .description("A server-side credential of a project, sent as the `X-Nimbus-Key` header. Its secret is shown only once, by `createApiKey`.")
        .field(prop("id", TypeRef::named_nn(TypeRef::ID), "Unique id; also the middle part of the secret."))
        .field(prop("projectId", TypeRef::named_nn(TypeRef::ID), "The project the key belongs to."))
        .field(prop("name", TypeRef::named_nn(TypeRef::STRING), "What the key is for."))
        .field(prop("scopes", TypeRef::named_nn_list_nn(TypeRef::STRING), "What the key may do; `apiKeyScopes` lists every scope."))
        .field(prop("expiresAt", TypeRef::named(DATETIME), "When the key stops working; null: never."))
        .field(prop("expired", TypeRef::named_nn(TypeRef::BOOLEAN), "Whether `expiresAt` has passed."))
        .field(prop("createdAt", TypeRef::named_nn(DATETIME), "When the key was created."))
        .field(prop("updatedAt", TypeRef::named_nn(DATETIME), "When the key last changed."))
}

fn api_key_scope_type() -> Object {
    Object::new("ApiKeyScope")
        .description("A scope an API key can hold.")
        .field(prop(
            "name",
            TypeRef::named_nn(TypeRef::STRING),
            "The scope, as written in `scopes`.",
        ))
        .field(prop(
            "description",
            TypeRef::named_nn(TypeRef::STRING),
            "What it allows.",
        ))
}

fn create_api_key_payload_type() -> Object {
    Object::new("CreateApiKeyPayload")
        .description("The result of `createApiKey`: the key and its secret.")
        .field(prop("apiKey", TypeRef::named_nn("ApiKey"), "The new key."))
        .field(prop(
            "secret",
            TypeRef::named_nn(TypeRef::STRING),
            "The secret to send as `X-Nimbus-Key`. Shown only now: it is stored only as a digest.",
        ))
}

fn delete_api_key_payload_type() -> Object {
    deleted_payload_type(
        "DeleteApiKeyPayload",
        "The result of `deleteApiKey`.",
        "Id of the revoked key.",
    )
}

fn api_key_scopes() -> Field {
    Field::new(
        "apiKeyScopes",
        TypeRef::named_nn_list_nn("ApiKeyScope"),
        |_| {
            FieldFuture::new(async move {
                let scopes = Scope::ALL
                    .iter()
                    .map(|scope| {
                        FieldValue::value(object([
                            ("name", Value::from(scope.name())),
                            ("description", Value::from(scope.about())),
                        ]))
                    })
                    .collect::<Vec<_>>();
                Ok(Some(FieldValue::list(scopes)))
            })
        },
    )
    .description("Every scope an API key can hold, with what it allows.")
}

fn api_keys() -> Field {
    with_connection_args(Field::new("apiKeys", TypeRef::named_nn("ApiKeyConnection"), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            let project = opt_string(&ctx, "projectId")?;
            let grant = caller.require_in(project.as_deref())?;
            let page = page_request(&ctx)?;
            let (keys, total) =
                service::list_keys(app(&ctx)?, &grant, &page, wants_total_count(&ctx)).await?;
            Ok(Some(FieldValue::value(connection(&page, keys, total, |k| &k.id, key_value))))
        })
    }))
    .description("The API keys of a project, by id (scope `keys.read`; another project than the addressed one needs `admin`).")
    .argument(InputValue::new("projectId", TypeRef::named(TypeRef::ID)).description("The project; omitted: the addressed one."))
}

fn create_api_key() -> Field {
    Field::new(
        "createApiKey",
        TypeRef::named_nn("CreateApiKeyPayload"),
        |ctx| {
            FieldFuture::new(async move {
                let caller = caller(&ctx)?;
                let grant = caller.require::<KeysWrite>()?;
                let input: CreateApiKeyInput = input(&ctx)?;
                let grant = caller.extend_to(grant, input.project_id.as_deref())?;
                let expires_at = input
                    .expires_at
                    .as_deref()
                    .map(|t| parse_datetime("expiresAt", t))
                    .transpose()?;
                let new = NewApiKey {
                    name: input.name,
                    scopes: input.scopes,
                    expires_at,
                };
                let (key, secret) = service::create_key(app(&ctx)?, caller, &grant, new).await?;
                Ok(Some(FieldValue::value(object([
                    ("apiKey", key_value(&key)),
                    ("secret", Value::from(secret)),
                ]))))
            })
        },
    )
    .description("Creates an API key (scope `keys.write`). Publishes `keys.ID.create`.")
    .argument(CreateApiKeyInput::argument())
}

fn delete_api_key() -> Field {
    Field::new("deleteApiKey", TypeRef::named_nn("DeleteApiKeyPayload"), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            let grant = caller.require::<KeysWrite>()?;
            let input: DeleteApiKeyInput = input(&ctx)?;
            let key = service::delete_key(app(&ctx)?, caller, &grant, &input.id).await?;
            Ok(Some(FieldValue::value(object([("deletedId", Value::from(key.id))]))))
        })
    })
    .description("Revokes an API key at once, on every replica (scope `keys.write`). Publishes `keys.ID.delete`.")
    .argument(DeleteApiKeyInput::argument())
}
