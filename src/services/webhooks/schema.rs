//! GraphQL of webhooks: `webhooks`, `webhook`, `webhookDeliveries`,
//! `createWebhook`, `updateWebhook`, `rotateWebhookSecret`, `deleteWebhook`.

use async_graphql::Value;
use async_graphql::dynamic::{Field, FieldFuture, FieldValue, InputValue, Object, TypeRef};

use crate::auth::scopes::{WebhooksRead, WebhooksWrite};
use crate::error::AppError;
use crate::graphql::SchemaParts;
use crate::graphql::types::{
    DATETIME, app, caller, connection, connection_types, datetime, deleted_payload_type, input,
    object, opt_string, page_request, prop, wants_total_count, with_connection_args,
};

use super::service::{self, NewWebhook, WebhookChange};
use super::{Delivery, Webhook};

/// The GraphQL value of a webhook.
pub fn webhook_value(webhook: &Webhook) -> Value {
    object([
        ("id", Value::from(webhook.id.as_str())),
        ("projectId", Value::from(webhook.project_id.as_str())),
        ("name", Value::from(webhook.name.as_str())),
        ("url", Value::from(webhook.url.as_str())),
        (
            "events",
            Value::List(
                webhook
                    .events
                    .iter()
                    .map(|e| Value::from(e.as_str()))
                    .collect(),
            ),
        ),
        ("enabled", Value::from(webhook.enabled)),
        ("tlsVerify", Value::from(webhook.tls_verify)),
        (
            "httpUser",
            webhook
                .http_user
                .as_deref()
                .map_or(Value::Null, Value::from),
        ),
        ("failures", Value::from(webhook.failures)),
        ("createdAt", datetime(webhook.created_at)),
        ("updatedAt", datetime(webhook.updated_at)),
    ])
}

/// A delivery attempt as its realtime event carries it.
pub fn delivery_json(delivery: &Delivery) -> serde_json::Value {
    delivery_value(delivery).into_json().unwrap_or_default()
}

fn delivery_value(delivery: &Delivery) -> Value {
    let text = |t: &Option<String>| t.as_deref().map_or(Value::Null, Value::from);
    object([
        ("id", Value::from(delivery.id.as_str())),
        ("webhookId", Value::from(delivery.webhook_id.as_str())),
        ("eventId", Value::from(delivery.event_id.as_str())),
        ("jobId", Value::from(delivery.job_id.as_str())),
        ("attempt", Value::from(delivery.attempt)),
        (
            "statusCode",
            delivery.status_code.map_or(Value::Null, Value::from),
        ),
        ("durationMs", Value::from(delivery.duration_ms)),
        ("success", Value::from(delivery.success)),
        ("error", text(&delivery.error)),
        ("responseExcerpt", text(&delivery.response_excerpt)),
        ("createdAt", datetime(delivery.created_at)),
    ])
}

crate::graphql_input! {
    "A new webhook."
    struct CreateWebhookInput {
        "Id to give the webhook; omitted or `unique()` generates one."
        id: Option<String> as "ID",
        "What the webhook is for, 1-128 characters."
        name: String,
        "Where events are POSTed: an http(s) URL without credentials, at most 2048 bytes; not a private, loopback or link-local address unless the server allows it."
        url: String,
        "Event patterns with Appwrite's names, `*` for any one segment: `users.*.create`, `databases.*.collections.*.documents.*`, … (1 to 100)."
        events: Vec<String>,
        "Whether events are delivered; omitted: true."
        enabled: Option<bool>,
        "Whether the receiver's TLS certificate is checked; omitted: true."
        tls_verify: Option<bool>,
        "The user of HTTP Basic credentials each delivery carries (Appwrite's `httpUser`); at most 256 characters, no `:`."
        http_user: Option<String>,
        "Their password (Appwrite's `httpPass`), kept sealed and never shown; at most 256 characters."
        http_pass: Option<String>,
    }
}

crate::graphql_input! {
    "Changes to a webhook; omitted fields stay."
    struct UpdateWebhookInput {
        "The webhook's id."
        id: String as "ID",
        "What the webhook is for, 1-128 characters."
        name: Option<String>,
        "Where events are POSTed."
        url: Option<String>,
        "Event patterns (1 to 100)."
        events: Option<Vec<String>>,
        "Whether events are delivered; `true` also clears the count of consecutive failures of a webhook that was disabled by them."
        enabled: Option<bool>,
        "Whether the receiver's TLS certificate is checked."
        tls_verify: Option<bool>,
        "The Basic user; empty: none (and no password)."
        http_user: Option<String>,
        "The Basic password; empty: none."
        http_pass: Option<String>,
    }
}

crate::graphql_input! {
    "The webhook whose secret to replace."
    struct RotateWebhookSecretInput {
        "The webhook's id."
        id: String as "ID",
    }
}

crate::graphql_input! {
    "The webhook to delete."
    struct DeleteWebhookInput {
        "The webhook's id."
        id: String as "ID",
    }
}

pub fn register(parts: &mut SchemaParts, _project: &crate::services::projects::Project) {
    parts.add_type(webhook_type());
    parts.add_types(connection_types("Webhook", "webhooks"));
    parts.add_type(delivery_type());
    parts.add_types(connection_types(
        "WebhookDelivery",
        "webhook delivery attempts",
    ));
    parts.add_input::<CreateWebhookInput>();
    parts.add_input::<UpdateWebhookInput>();
    parts.add_input::<RotateWebhookSecretInput>();
    parts.add_input::<DeleteWebhookInput>();
    parts.add_type(secret_payload_type(
        "CreateWebhookPayload",
        "The result of `createWebhook`: the webhook and its signing secret.",
    ));
    parts.add_type(secret_payload_type(
        "RotateWebhookSecretPayload",
        "The result of `rotateWebhookSecret`: the webhook and its new signing secret.",
    ));
    parts.add_type(deleted_payload_type(
        "DeleteWebhookPayload",
        "The result of `deleteWebhook`.",
        "Id of the deleted webhook.",
    ));

    parts.query(webhooks());
    parts.query(webhook());
    parts.query(webhook_deliveries());
    parts.mutation(create_webhook());
    parts.mutation(update_webhook());
    parts.mutation(rotate_webhook_secret());
    parts.mutation(delete_webhook());
}

fn webhook_type() -> Object {
    Object::new("Webhook")
        .description("A URL that receives the project's events matching its patterns, signed with its secret (shown only by `createWebhook` and `rotateWebhookSecret`).")
        .field(prop("id", TypeRef::named_nn(TypeRef::ID), "Unique id; sent as `X-Appwrite-Webhook-Id`."))
        .field(prop("projectId", TypeRef::named_nn(TypeRef::ID), "The project the webhook belongs to."))
        .field(prop("name", TypeRef::named_nn(TypeRef::STRING), "What the webhook is for; sent as `X-Appwrite-Webhook-Name`."))
        .field(prop("url", TypeRef::named_nn(TypeRef::STRING), "Where events are POSTed."))
        .field(prop("events", TypeRef::named_nn_list_nn(TypeRef::STRING), "The event patterns it receives."))
        .field(prop("enabled", TypeRef::named_nn(TypeRef::BOOLEAN), "Whether events are delivered; false after too many consecutive failures, until an update enables it."))
        .field(prop("tlsVerify", TypeRef::named_nn(TypeRef::BOOLEAN), "Whether the receiver's TLS certificate is checked."))
        .field(prop("httpUser", TypeRef::named(TypeRef::STRING), "The user of the HTTP Basic credentials its deliveries carry, if any (the password is never shown)."))
        .field(prop("failures", TypeRef::named_nn(TypeRef::INT), "Consecutive failed deliveries."))
        .field(prop("createdAt", TypeRef::named_nn(DATETIME), "When the webhook was created."))
        .field(prop("updatedAt", TypeRef::named_nn(DATETIME), "When the webhook last changed."))
}

fn delivery_type() -> Object {
    Object::new("WebhookDelivery")
        .description("One attempt to deliver an event to a webhook.")
        .field(prop(
            "id",
            TypeRef::named_nn(TypeRef::ID),
            "Unique id of the attempt.",
        ))
        .field(prop(
            "webhookId",
            TypeRef::named_nn(TypeRef::ID),
            "The webhook.",
        ))
        .field(prop(
            "eventId",
            TypeRef::named_nn(TypeRef::ID),
            "The event, as sent in `webhook-id`.",
        ))
        .field(prop(
            "jobId",
            TypeRef::named_nn(TypeRef::ID),
            "The delivery job (`job(id:)`).",
        ))
        .field(prop(
            "attempt",
            TypeRef::named_nn(TypeRef::INT),
            "Which attempt of the job this was, from 1.",
        ))
        .field(prop(
            "statusCode",
            TypeRef::named(TypeRef::INT),
            "The receiver's HTTP status; null when it did not answer.",
        ))
        .field(prop(
            "durationMs",
            TypeRef::named_nn(TypeRef::INT),
            "How long the attempt took, in milliseconds.",
        ))
        .field(prop(
            "success",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            "Whether the receiver took the event (a 2xx answer within the limits).",
        ))
        .field(prop(
            "error",
            TypeRef::named(TypeRef::STRING),
            "Why the attempt failed.",
        ))
        .field(prop(
            "responseExcerpt",
            TypeRef::named(TypeRef::STRING),
            "The first kilobyte of the receiver's answer.",
        ))
        .field(prop(
            "createdAt",
            TypeRef::named_nn(DATETIME),
            "When the attempt was made.",
        ))
}

fn secret_payload_type(name: &str, description: &str) -> Object {
    Object::new(name)
        .description(description)
        .field(prop(
            "webhook",
            TypeRef::named_nn("Webhook"),
            "The webhook.",
        ))
        .field(prop(
            "secret",
            TypeRef::named_nn(TypeRef::STRING),
            "The signing secret (`whsec_…`, Standard Webhooks' form). Shown only now.",
        ))
}

fn id_arg(
    ctx: &async_graphql::dynamic::ResolverContext<'_>,
    name: &str,
) -> Result<String, AppError> {
    opt_string(ctx, name)?.ok_or_else(|| AppError::invalid(name, "is required"))
}

fn webhooks() -> Field {
    with_connection_args(Field::new(
        "webhooks",
        TypeRef::named_nn("WebhookConnection"),
        |ctx| {
            FieldFuture::new(async move {
                let grant = caller(&ctx)?.require::<WebhooksRead>()?;
                let page = page_request(&ctx)?;
                let (hooks, total) =
                    service::list(app(&ctx)?, &grant, &page, wants_total_count(&ctx)).await?;
                Ok(Some(FieldValue::value(connection(
                    &page,
                    hooks,
                    total,
                    |w| &w.id,
                    webhook_value,
                ))))
            })
        },
    ))
    .description("The project's webhooks, by id (scope `webhooks.read`).")
}

fn webhook() -> Field {
    Field::new("webhook", TypeRef::named_nn("Webhook"), |ctx| {
        FieldFuture::new(async move {
            let grant = caller(&ctx)?.require::<WebhooksRead>()?;
            let id = id_arg(&ctx, "id")?;
            let hook = service::get(app(&ctx)?, &grant, &id).await?;
            Ok(Some(FieldValue::value(webhook_value(&hook))))
        })
    })
    .description("One webhook of the project (scope `webhooks.read`).")
    .argument(
        InputValue::new("id", TypeRef::named_nn(TypeRef::ID)).description("The webhook's id."),
    )
}

fn webhook_deliveries() -> Field {
    with_connection_args(Field::new(
        "webhookDeliveries",
        TypeRef::named_nn("WebhookDeliveryConnection"),
        |ctx| {
            FieldFuture::new(async move {
                let grant = caller(&ctx)?.require::<WebhooksRead>()?;
                let id = id_arg(&ctx, "webhookId")?;
                let page = page_request(&ctx)?;
                let (deliveries, total) =
                    service::deliveries(app(&ctx)?, &grant, &id, &page, wants_total_count(&ctx))
                        .await?;
                Ok(Some(FieldValue::value(connection(
                    &page,
                    deliveries,
                    total,
                    |d| &d.id,
                    delivery_value,
                ))))
            })
        },
    ))
    .description("The delivery attempts of a webhook, oldest first (`last` for the newest), kept `NIMBUS_JOBS_RETENTION_DAYS` (scope `webhooks.read`). Each new attempt is also published as `webhooks.ID.deliveries.ID.create` on the realtime channels `webhooks`, `webhooks.ID` and `webhooks.ID.deliveries`, to keys holding `webhooks.read`.")
    .argument(InputValue::new("webhookId", TypeRef::named_nn(TypeRef::ID)).description("The webhook's id."))
}

fn create_webhook() -> Field {
    Field::new("createWebhook", TypeRef::named_nn("CreateWebhookPayload"), |ctx| {
        FieldFuture::new(async move {
            let grant = caller(&ctx)?.require::<WebhooksWrite>()?;
            let input: CreateWebhookInput = input(&ctx)?;
            let new = NewWebhook {
                id: input.id,
                name: input.name,
                url: input.url,
                events: input.events,
                enabled: input.enabled.unwrap_or(true),
                tls_verify: input.tls_verify.unwrap_or(true),
                http_user: input.http_user,
                http_pass: input.http_pass,
            };
            let key = caller(&ctx)?.key().ok_or(AppError::Unauthenticated)?;
            let (hook, secret) = service::create(app(&ctx)?, &grant, key, new).await?;
            Ok(Some(FieldValue::value(object([
                ("webhook", webhook_value(&hook)),
                ("secret", Value::from(secret)),
            ]))))
        })
    })
    .description("Creates a webhook with a new signing secret, shown only in this answer (scope `webhooks.write`). It delivers only events the creating key may read (their scope: `documents.read`, `users.read`, …; every event for an `admin` key or the console), and none made after that key expires.")
    .argument(CreateWebhookInput::argument())
}

fn update_webhook() -> Field {
    Field::new("updateWebhook", TypeRef::named_nn("Webhook"), |ctx| {
        FieldFuture::new(async move {
            let grant = caller(&ctx)?.require::<WebhooksWrite>()?;
            let input: UpdateWebhookInput = input(&ctx)?;
            let change = WebhookChange {
                name: input.name,
                url: input.url,
                events: input.events,
                enabled: input.enabled,
                tls_verify: input.tls_verify,
                http_user: input.http_user,
                http_pass: input.http_pass,
            };
            let key = caller(&ctx)?.key().ok_or(AppError::Unauthenticated)?;
            let hook = service::update(app(&ctx)?, &grant, key, &input.id, change).await?;
            Ok(Some(FieldValue::value(webhook_value(&hook))))
        })
    })
    .description("Changes a webhook; `enabled: true` re-enables one disabled by failures (scope `webhooks.write`). From then on it delivers only events the changing key may read, until that key expires.")
    .argument(UpdateWebhookInput::argument())
}

fn rotate_webhook_secret() -> Field {
    Field::new(
        "rotateWebhookSecret",
        TypeRef::named_nn("RotateWebhookSecretPayload"),
        |ctx| {
            FieldFuture::new(async move {
                let grant = caller(&ctx)?.require::<WebhooksWrite>()?;
                let input: RotateWebhookSecretInput = input(&ctx)?;
                let (hook, secret) = service::rotate_secret(app(&ctx)?, &grant, &input.id).await?;
                Ok(Some(FieldValue::value(object([
                    ("webhook", webhook_value(&hook)),
                    ("secret", Value::from(secret)),
                ]))))
            })
        },
    )
    .description("Replaces a webhook's signing secret; the old one stops signing at once (scope `webhooks.write`).")
    .argument(RotateWebhookSecretInput::argument())
}

fn delete_webhook() -> Field {
    Field::new("deleteWebhook", TypeRef::named_nn("DeleteWebhookPayload"), |ctx| {
        FieldFuture::new(async move {
            let grant = caller(&ctx)?.require::<WebhooksWrite>()?;
            let input: DeleteWebhookInput = input(&ctx)?;
            let hook = service::delete(app(&ctx)?, &grant, &input.id).await?;
            Ok(Some(FieldValue::value(object([("deletedId", Value::from(hook.id))]))))
        })
    })
    .description("Deletes a webhook and its delivery log; queued deliveries are dropped (scope `webhooks.write`).")
    .argument(DeleteWebhookInput::argument())
}
