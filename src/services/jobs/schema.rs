//! GraphQL of background jobs: `jobs`, `job`, `retryJob`, `deleteJob`.

use async_graphql::dynamic::{
    Enum, EnumItem, Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext, TypeRef,
};
use async_graphql::{Name, Value};

use crate::auth::scopes::{JobsRead, JobsWrite};
use crate::error::{AppError, AppResult};
use crate::graphql::SchemaParts;
use crate::graphql::types::{
    DATETIME, JSON, app, caller, connection, connection_types, datetime, deleted_payload_type,
    input, json_value, object, opt_string, page_request, prop, wants_total_count,
    with_connection_args,
};
use crate::jobs::Job;

use super::service::{self, JobFilter, STATUSES};

fn job_value(job: &Job) -> Value {
    let status = STATUSES
        .iter()
        .find(|(_, stored, _)| *stored == job.status)
        .map_or("QUEUED", |(name, _, _)| name);
    object([
        ("id", Value::from(job.id.as_str())),
        ("kind", Value::from(job.kind.as_str())),
        ("status", Value::Enum(Name::new(status))),
        ("attempts", Value::from(job.attempts)),
        ("maxAttempts", Value::from(job.max_attempts)),
        ("runAt", datetime(job.run_at)),
        (
            "leaseExpiresAt",
            job.lease_expires_at.map_or(Value::Null, datetime),
        ),
        (
            "lastError",
            job.last_error.as_deref().map_or(Value::Null, Value::from),
        ),
        ("payload", json_value(&shown_payload(job))),
        ("createdAt", datetime(job.created_at)),
        ("updatedAt", datetime(job.updated_at)),
    ])
}

/// A job's payload as `jobs.read` shows it: a delivery's event body is what the
/// webhook's configuring key may read, not every holder of `jobs.read`, so it is
/// named by its event id only.
fn shown_payload(job: &Job) -> serde_json::Value {
    let mut payload = job.payload.clone();
    if job.kind == crate::services::webhooks::service::KIND
        && let Some(fields) = payload.as_object_mut()
    {
        fields.remove("body");
    }
    payload
}

crate::graphql_input! {
    "The dead job to queue again."
    struct RetryJobInput {
        "The job's id."
        id: String as "ID",
    }
}

crate::graphql_input! {
    "The job to delete."
    struct DeleteJobInput {
        "The job's id."
        id: String as "ID",
    }
}

pub fn register(parts: &mut SchemaParts, _project: &crate::services::projects::Project) {
    parts.add_type(job_status_type());
    parts.add_type(job_type());
    parts.add_types(connection_types("Job", "background jobs"));
    parts.add_input::<RetryJobInput>();
    parts.add_input::<DeleteJobInput>();
    parts.add_type(deleted_payload_type(
        "DeleteJobPayload",
        "The result of `deleteJob`.",
        "Id of the deleted job.",
    ));
    parts.query(jobs());
    parts.query(job());
    parts.mutation(retry_job());
    parts.mutation(delete_job());
}

fn job_status_type() -> Enum {
    STATUSES.iter().fold(
        Enum::new("JobStatus").description("Where a background job is in its life."),
        |ty, (name, _, about)| ty.item(EnumItem::new(*name).description(*about)),
    )
}

fn job_type() -> Object {
    Object::new("Job")
        .description("A background job of the project: an email to send, a webhook delivery, …; retried with backoff, dead-lettered after `NIMBUS_JOBS_MAX_ATTEMPTS`.")
        .field(prop("id", TypeRef::named_nn(TypeRef::ID), "Unique id."))
        .field(prop("kind", TypeRef::named_nn(TypeRef::STRING), "What the job does: `mail`, `webhook`, …"))
        .field(prop("status", TypeRef::named_nn("JobStatus"), "Where the job is in its life."))
        .field(prop("attempts", TypeRef::named_nn(TypeRef::INT), "Attempts so far."))
        .field(prop("maxAttempts", TypeRef::named_nn(TypeRef::INT), "Attempts before the job is dead."))
        .field(prop("runAt", TypeRef::named_nn(DATETIME), "When the job runs next (or last ran)."))
        .field(prop("leaseExpiresAt", TypeRef::named(DATETIME), "While running: when another replica may take the job over."))
        .field(prop("lastError", TypeRef::named(TypeRef::STRING), "Why the last attempt failed."))
        .field(prop("payload", TypeRef::named_nn(JSON), "What the job works on (emails are sealed: their links and codes are secrets; a webhook delivery names its event by id, without its body)."))
        .field(prop("createdAt", TypeRef::named_nn(DATETIME), "When the job was queued."))
        .field(prop("updatedAt", TypeRef::named_nn(DATETIME), "When the job last changed."))
}

fn status_arg(ctx: &ResolverContext<'_>) -> AppResult<Option<String>> {
    match ctx.args.get("status") {
        None => Ok(None),
        Some(v) if v.is_null() => Ok(None),
        Some(v) => {
            let name = v
                .enum_name()
                .map_err(|_| AppError::invalid("status", "expected a JobStatus"))?;
            STATUSES
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, stored, _)| Some(stored.to_string()))
                .ok_or_else(|| AppError::invalid("status", "unknown job status"))
        }
    }
}

fn jobs() -> Field {
    with_connection_args(Field::new(
        "jobs",
        TypeRef::named_nn("JobConnection"),
        |ctx| {
            FieldFuture::new(async move {
                let grant = caller(&ctx)?.require::<JobsRead>()?;
                let filter = JobFilter {
                    status: status_arg(&ctx)?,
                    kind: opt_string(&ctx, "kind")?,
                };
                let page = page_request(&ctx)?;
                let (jobs, total) =
                    service::list(app(&ctx)?, &grant, &filter, &page, wants_total_count(&ctx))
                        .await?;
                Ok(Some(FieldValue::value(connection(
                    &page,
                    jobs,
                    total,
                    |j| &j.id,
                    job_value,
                ))))
            })
        },
    ))
    .description("The project's background jobs, oldest first (scope `jobs.read`).")
    .argument(
        InputValue::new("status", TypeRef::named("JobStatus"))
            .description("Only jobs in this status."),
    )
    .argument(
        InputValue::new("kind", TypeRef::named(TypeRef::STRING))
            .description("Only jobs of this kind (`mail`, `webhook`, …)."),
    )
}

fn job() -> Field {
    Field::new("job", TypeRef::named_nn("Job"), |ctx| {
        FieldFuture::new(async move {
            let grant = caller(&ctx)?.require::<JobsRead>()?;
            let id =
                opt_string(&ctx, "id")?.ok_or_else(|| AppError::invalid("id", "is required"))?;
            let job = service::get(app(&ctx)?, &grant, &id).await?;
            Ok(Some(FieldValue::value(job_value(&job))))
        })
    })
    .description("One background job of the project (scope `jobs.read`).")
    .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID)).description("The job's id."))
}

fn retry_job() -> Field {
    Field::new("retryJob", TypeRef::named_nn("Job"), |ctx| {
        FieldFuture::new(async move {
            let grant = caller(&ctx)?.require::<JobsWrite>()?;
            let input: RetryJobInput = input(&ctx)?;
            let job = service::retry(app(&ctx)?, &grant, &input.id).await?;
            Ok(Some(FieldValue::value(job_value(&job))))
        })
    })
    .description("Queues a dead job again with its attempts counted afresh (scope `jobs.write`); `JOB_NOT_DEAD` for any other.")
    .argument(RetryJobInput::argument())
}

fn delete_job() -> Field {
    Field::new("deleteJob", TypeRef::named_nn("DeleteJobPayload"), |ctx| {
        FieldFuture::new(async move {
            let grant = caller(&ctx)?.require::<JobsWrite>()?;
            let input: DeleteJobInput = input(&ctx)?;
            let id = service::delete(app(&ctx)?, &grant, &input.id).await?;
            Ok(Some(FieldValue::value(object([("deletedId", Value::from(id))]))))
        })
    })
    .description("Deletes a job: a queued one never runs, a running one is not retried (scope `jobs.write`).")
    .argument(DeleteJobInput::argument())
}
