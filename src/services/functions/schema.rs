//! GraphQL of functions: `function`, `functions`, `functionVariables`,
//! `deployments`, `execution`, `executions`, their mutations, and the
//! `executionChanged` subscription.

use async_graphql::dynamic::{
    Enum, EnumItem, Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext,
    SubscriptionField, SubscriptionFieldFuture, TypeRef,
};
use async_graphql::{Name, Value};
use base64::Engine as _;

use crate::auth::scopes::{FunctionsRead, FunctionsWrite};
use crate::error::{AppError, AppResult};
use crate::graphql::SchemaParts;
use crate::graphql::types::{
    DATETIME, app, caller, connection, connection_types, datetime, deleted_payload_type, input,
    object, opt_string, page_request, parse_datetime, prop, wants_total_count,
    with_connection_args,
};

use super::service::{self, ExecutionRequest, FunctionChange, NewFunction, Trigger};
use super::store::ExecutionFilter;
use super::{Deployment, Execution, Function, Variable};

fn strings(list: &[String]) -> Value {
    Value::List(list.iter().map(|s| Value::from(s.as_str())).collect())
}

fn enum_value(name: &str) -> Value {
    Value::Enum(Name::new(name.to_ascii_uppercase()))
}

/// The GraphQL value of a function.
pub fn function_value(function: &Function) -> Value {
    object([
        ("id", Value::from(function.id.as_str())),
        ("projectId", Value::from(function.project_id.as_str())),
        ("name", Value::from(function.name.as_str())),
        ("runtime", enum_value(&function.runtime)),
        ("entrypoint", Value::from(function.entrypoint.as_str())),
        ("execute", strings(&function.execute)),
        ("events", strings(&function.events)),
        (
            "schedule",
            function
                .schedule
                .as_deref()
                .map_or(Value::Null, Value::from),
        ),
        ("timeout", Value::from(function.timeout)),
        ("memory", Value::from(function.memory)),
        ("enabled", Value::from(function.enabled)),
        ("warm", Value::from(function.warm)),
        ("logging", Value::from(function.logging)),
        ("scopes", strings(&function.scopes)),
        (
            "deploymentId",
            function
                .deployment_id
                .as_deref()
                .map_or(Value::Null, Value::from),
        ),
        ("createdAt", datetime(function.created_at)),
        ("updatedAt", datetime(function.updated_at)),
    ])
}

/// A function as its realtime events carry it.
pub fn function_json(function: &Function) -> serde_json::Value {
    function_value(function).into_json().unwrap_or_default()
}

/// A variable (never its value) as its realtime events carry it.
pub fn variable_json(variable: &Variable) -> serde_json::Value {
    variable_value(variable).into_json().unwrap_or_default()
}

fn variable_value(variable: &Variable) -> Value {
    object([
        ("functionId", Value::from(variable.function_id.as_str())),
        ("key", Value::from(variable.key.as_str())),
        ("size", Value::from(variable.size)),
        ("createdAt", datetime(variable.created_at)),
        ("updatedAt", datetime(variable.updated_at)),
    ])
}

fn deployment_value(deployment: &Deployment) -> Value {
    object([
        ("id", Value::from(deployment.id.as_str())),
        ("functionId", Value::from(deployment.function_id.as_str())),
        ("entrypoint", Value::from(deployment.entrypoint.as_str())),
        ("sourceSize", Value::from(deployment.source_size)),
        ("modules", Value::from(deployment.modules)),
        ("createdAt", datetime(deployment.created_at)),
        ("updatedAt", datetime(deployment.created_at)),
    ])
}

/// A deployment as its realtime events carry it.
pub fn deployment_json(deployment: &Deployment) -> serde_json::Value {
    deployment_value(deployment).into_json().unwrap_or_default()
}

fn headers_value(headers: &[(String, String)]) -> Value {
    Value::List(
        headers
            .iter()
            .map(|(name, value)| {
                object([
                    ("name", Value::from(name.as_str())),
                    ("value", Value::from(value.as_str())),
                ])
            })
            .collect(),
    )
}

/// An execution as `caller` is shown it: its logs and errors only to keys, as
/// Appwrite shows them. A function's logs are its author's (they often hold
/// what the function saw of other users, or secrets), not its caller's.
fn execution_value_for(caller: &crate::auth::Caller, execution: &Execution) -> Value {
    execution_fields(execution, &execution.response_body, caller.key().is_some())
}

/// The fields of an execution, with `body` as its response body; its logs and
/// errors empty unless `logs`.
fn execution_fields(execution: &Execution, body: &[u8], logs: bool) -> Value {
    let shown = |text: &str| Value::from(if logs { text } else { "" });
    object([
        ("id", Value::from(execution.id.as_str())),
        ("functionId", Value::from(execution.function_id.as_str())),
        (
            "deploymentId",
            Value::from(execution.deployment_id.as_str()),
        ),
        ("trigger", enum_value(&execution.trigger)),
        ("status", enum_value(&execution.status)),
        (
            "requestMethod",
            Value::from(execution.request_method.as_str()),
        ),
        ("requestPath", Value::from(execution.request_path.as_str())),
        ("requestHeaders", headers_value(&execution.request_headers)),
        ("responseStatusCode", Value::from(execution.response_status)),
        (
            "responseHeaders",
            headers_value(&execution.response_headers),
        ),
        (
            "responseBody",
            Value::from(String::from_utf8_lossy(body).into_owned()),
        ),
        (
            "responseBodyBase64",
            Value::from(base64::engine::general_purpose::STANDARD.encode(body)),
        ),
        ("logs", shown(&execution.logs)),
        (
            "logsTruncated",
            Value::from(logs && execution.logs_truncated),
        ),
        ("errors", shown(&execution.errors)),
        (
            "failure",
            execution
                .failure
                .as_deref()
                .map_or(Value::Null, Value::from),
        ),
        (
            "duration",
            Value::from(execution.duration_ms as f64 / 1000.0),
        ),
        (
            "scheduledAt",
            execution.scheduled_at.map_or(Value::Null, datetime),
        ),
        ("createdAt", datetime(execution.created_at)),
        ("updatedAt", datetime(execution.updated_at)),
    ])
}

/// An execution as its realtime events carry it: to its caller too, so without
/// its logs and errors (keys read them with `execution`).
pub fn execution_json(execution: &Execution) -> serde_json::Value {
    let body = &execution.response_body;
    execution_fields(
        execution,
        &body[..body.len().min(service::KEPT_RESPONSE_BYTES)],
        false,
    )
    .into_json()
    .unwrap_or_default()
}

/// A published execution (the JSON of [`execution_json`]) as a value again: its
/// enum fields become enums.
fn execution_from_payload(payload: &serde_json::Value) -> Value {
    let mut value = Value::from_json(payload.clone()).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        for field in ["status", "trigger"] {
            if let Some(Value::String(name)) = map.get(field).cloned() {
                map.insert(Name::new(field), Value::Enum(Name::new(name)));
            }
        }
    }
    value
}

crate::graphql_input! {
    "A new function."
    struct CreateFunctionInput {
        "Id to give the function; omitted or `unique()` generates one."
        id: Option<String> as "ID",
        "What the function is for, 1-128 characters."
        name: String,
        "The runtime; `JS` (an ES module run in the in-process sandbox) is the one there is."
        runtime: Option<String> as "FunctionRuntime",
        "The module whose default export runs, e.g. `main.js` or `src/main.mjs`."
        entrypoint: String,
        "Roles that may execute it, as in permissions: `any` (public, e.g. for third-party webhooks), `guests`, `users`, `user:ID`, `team:ID`, `team:ID/ROLE`, `label:NAME`, … Omitted: none (only keys with `executions.write`)."
        execute: Option<Vec<String>>,
        "Event patterns (Appwrite's names, `*` for one segment), at most 100: each matching event runs the function once (not events its own executions caused)."
        events: Option<Vec<String>>,
        "A CRON expression (5 fields, or 6 with seconds first; UTC) to run it on; omitted: none."
        schedule: Option<String>,
        "Seconds an execution may take, 1-900; default 15."
        timeout: Option<i64>,
        "MiB of memory an execution may use, 8-512; default 64."
        memory: Option<i64>,
        "Whether it runs at all; default true."
        enabled: Option<bool>,
        "Whether executions reuse a warm context: each sandbox thread keeps the active deployment loaded, and module-level state persists between its executions on that thread (never across functions, deployments or variable changes); default false, a fresh context per execution."
        warm: Option<bool>,
        "Whether successful synchronous executions (the HTTP route, `createExecution` without `async`) are recorded with their logs and `executions` event; default true. False answers them the same but keeps no record of them, which makes them cheaper; failed and asynchronous executions are always recorded."
        logging: Option<bool>,
        "API scopes its own `nimbus.graphql` calls hold when no signed-in user called it (not `admin`; only scopes the calling key holds)."
        scopes: Option<Vec<String>>,
    }
}

crate::graphql_input! {
    "Changes to a function; omitted fields stay."
    struct UpdateFunctionInput {
        "The function."
        id: String as "ID",
        "What the function is for."
        name: Option<String>,
        "The module whose default export runs (for deployments made from now on)."
        entrypoint: Option<String>,
        "Roles that may execute it."
        execute: Option<Vec<String>>,
        "Event patterns."
        events: Option<Vec<String>>,
        "A CRON expression; an empty string removes the schedule."
        schedule: Option<String>,
        "Seconds an execution may take, 1-900."
        timeout: Option<i64>,
        "MiB of memory an execution may use, 8-512."
        memory: Option<i64>,
        "Whether it runs at all."
        enabled: Option<bool>,
        "Whether executions reuse a warm context per sandbox thread and deployment (module state persists between them)."
        warm: Option<bool>,
        "Whether successful synchronous executions are recorded (failed and asynchronous ones always are)."
        logging: Option<bool>,
        "API scopes of its own `nimbus.graphql` calls."
        scopes: Option<Vec<String>>,
    }
}

crate::graphql_input! {
    "The function to delete."
    struct DeleteFunctionInput {
        "The function."
        id: String as "ID",
    }
}

crate::graphql_input! {
    "A variable of a function, given to its code in `env`."
    struct VariableInput {
        "The function."
        function_id: String as "ID",
        "The name in `env`: 1-128 of `A-Za-z0-9_`, not starting with a digit."
        key: String,
        "The value, at most 8 KiB (64 KiB for all of a function's values); sealed at rest and never shown again."
        value: String,
    }
}

crate::graphql_input! {
    "The variable to delete."
    struct DeleteVariableInput {
        "The function."
        function_id: String as "ID",
        "The variable's key."
        key: String,
    }
}

crate::graphql_input! {
    "Code to deploy, uploaded in a multipart request."
    struct CreateDeploymentInput {
        "The function."
        function_id: String as "ID",
        // Read through the upload API, not serde.
        #[allow(dead_code)]
        "One `.js`/`.mjs` file (an ES module, its dependencies bundled, e.g. by esbuild), or a `.tar.gz` of `.js`/`.mjs`/`.json` modules that holds the entrypoint."
        code: serde_json::Value as "Upload",
        "Make it the deployment executions run; default true."
        activate: Option<bool>,
    }
}

crate::graphql_input! {
    "An execution of a function."
    struct ExecutionRefInput {
        "The function."
        function_id: String as "ID",
        "The execution."
        execution_id: String as "ID",
    }
}

crate::graphql_input! {
    "A deployment of a function."
    struct DeploymentRefInput {
        "The function."
        function_id: String as "ID",
        "The deployment."
        deployment_id: String as "ID",
    }
}

crate::graphql_input! {
    "A request header."
    struct ExecutionHeaderInput {
        "Its name (sent lower-cased)."
        name: String,
        "Its value."
        value: String,
    }
}

crate::graphql_input! {
    "An execution to start."
    struct CreateExecutionInput {
        "The function."
        function_id: String as "ID",
        "The request body the function reads (`req.bodyText`, `req.bodyJson`)."
        body: Option<String>,
        "The request method; default POST."
        method: Option<String> as "ExecutionMethod",
        "The request path with its query string, from `/`; default `/`."
        path: Option<String>,
        "Request headers."
        headers: Option<Vec<ExecutionHeaderInput>>,
        "Run it as a background job and answer at once with status `WAITING`; default false."
        r#async: Option<bool>,
        "With `async: true`, run it at this time rather than as soon as possible (status `SCHEDULED` until then): at least a minute ahead, at most a year (with a JWT: before it ends), a body of at most 64 KiB. A project holds at most `NIMBUS_FUNCTIONS_MAX_SCHEDULED` of them, a user (or all guests) 100 (`TOO_MANY_EXECUTIONS`); `deleteExecution` cancels one before it starts."
        scheduled_at: Option<String> as "DateTime",
    }
}

pub fn register(parts: &mut SchemaParts, _project: &crate::services::projects::Project) {
    register_types(parts);
    parts.query(function_field());
    parts.query(functions_field());
    parts.query(variables_field());
    parts.query(variable_field());
    parts.query(deployments_field());
    parts.query(deployment_field());
    parts.query(execution_field());
    parts.query(executions_field());
    parts.mutation(create_function());
    parts.mutation(update_function());
    parts.mutation(delete_function());
    parts.mutation(create_variable());
    parts.mutation(update_variable());
    parts.mutation(delete_variable());
    parts.mutation(create_deployment());
    parts.mutation(activate_deployment());
    parts.mutation(delete_deployment());
    parts.mutation(delete_execution());
    parts.mutation(create_execution());
    parts.subscription(execution_changed());
}

fn register_types(parts: &mut SchemaParts) {
    parts.add_type(
        Enum::new("FunctionRuntime")
            .description("What runs a function's code.")
            .item(
                EnumItem::new("JS").description("JavaScript ES modules in the in-process sandbox."),
            ),
    );
    parts.add_type(
        Enum::new("ExecutionStatus")
            .description("Where an execution stands.")
            .item(EnumItem::new("WAITING").description("Queued to run as a background job."))
            .item(EnumItem::new("SCHEDULED").description("Queued to run at its `scheduledAt`."))
            .item(EnumItem::new("PROCESSING").description("Running."))
            .item(EnumItem::new("COMPLETED").description("The function answered."))
            .item(
                EnumItem::new("FAILED")
                    .description("It threw, hit a limit, or could not run; see `failure`."),
            ),
    );
    parts.add_type(
        Enum::new("ExecutionTrigger")
            .description("What started an execution.")
            .item(EnumItem::new("GRAPHQL").description("`createExecution`."))
            .item(EnumItem::new("HTTP").description("The plain HTTP route `/v1/functions/ID/…`."))
            .item(EnumItem::new("SCHEDULE").description("A tick of the function's CRON schedule."))
            .item(EnumItem::new("EVENT").description("An event the function subscribes to; the request is a `POST /` with the event's payload as body and its name in `x-nimbus-event`.")),
    );
    parts.add_type(
        ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
            .into_iter()
            .fold(
                Enum::new("ExecutionMethod")
                    .description("The HTTP method of an execution's request."),
                |e, m| e.item(EnumItem::new(m)),
            ),
    );
    parts.add_type(function_type());
    parts.add_types(connection_types("Function", "functions"));
    parts.add_type(variable_type());
    parts.add_type(deployment_type());
    parts.add_types(connection_types("Deployment", "deployments"));
    parts.add_type(header_type());
    parts.add_type(execution_type());
    parts.add_types(connection_types("Execution", "executions"));
    parts.add_input::<CreateFunctionInput>();
    parts.add_input::<UpdateFunctionInput>();
    parts.add_input::<DeleteFunctionInput>();
    parts.add_input::<VariableInput>();
    parts.add_input::<DeleteVariableInput>();
    parts.add_input::<CreateDeploymentInput>();
    parts.add_input::<DeploymentRefInput>();
    parts.add_input::<ExecutionRefInput>();
    parts.add_input::<ExecutionHeaderInput>();
    parts.add_input::<CreateExecutionInput>();
    parts.add_type(deleted_payload_type(
        "DeleteFunctionPayload",
        "The result of `deleteFunction`.",
        "Id of the deleted function.",
    ));
    parts.add_type(deleted_payload_type(
        "DeleteDeploymentPayload",
        "The result of `deleteDeployment`.",
        "Id of the deleted deployment.",
    ));
    parts.add_type(deleted_payload_type(
        "DeleteExecutionPayload",
        "The result of `deleteExecution`.",
        "Id of the deleted execution.",
    ));
    parts.add_type(deleted_payload_type(
        "DeleteVariablePayload",
        "The result of `deleteVariable`.",
        "Key of the deleted variable.",
    ));
}

fn id() -> TypeRef {
    TypeRef::named_nn(TypeRef::ID)
}

fn string() -> TypeRef {
    TypeRef::named_nn(TypeRef::STRING)
}

fn int() -> TypeRef {
    TypeRef::named_nn(TypeRef::INT)
}

fn string_list() -> TypeRef {
    TypeRef::named_nn_list_nn(TypeRef::STRING)
}

fn function_type() -> Object {
    Object::new("Function")
        .description("User code run in the sandbox, by `createExecution`, the HTTP route `/v1/functions/ID/…` or its schedule.")
        .field(prop("id", id(), "Unique id."))
        .field(prop("projectId", id(), "The project it belongs to."))
        .field(prop("name", string(), "What it is for."))
        .field(prop("runtime", TypeRef::named_nn("FunctionRuntime"), "What runs its code."))
        .field(prop("entrypoint", string(), "The module whose default export runs."))
        .field(prop("execute", string_list(), "Roles that may execute it."))
        .field(prop("events", string_list(), "Event patterns it is subscribed to."))
        .field(prop("schedule", TypeRef::named(TypeRef::STRING), "Its CRON schedule (UTC), if any."))
        .field(prop("timeout", int(), "Seconds an execution may take."))
        .field(prop("memory", int(), "MiB of memory an execution may use."))
        .field(prop("enabled", TypeRef::named_nn(TypeRef::BOOLEAN), "Whether it runs."))
        .field(prop("warm", TypeRef::named_nn(TypeRef::BOOLEAN), "Whether executions reuse a warm context per sandbox thread and deployment, keeping module-level state between them; false: a fresh context per execution."))
        .field(prop("logging", TypeRef::named_nn(TypeRef::BOOLEAN), "Whether successful synchronous executions are recorded, with their logs and `executions` event; failed and asynchronous executions always are."))
        .field(prop("scopes", string_list(), "API scopes its own `nimbus.graphql` calls hold when no signed-in user called it."))
        .field(prop("deploymentId", TypeRef::named(TypeRef::ID), "The active deployment; null until one is activated."))
        .field(prop("createdAt", TypeRef::named_nn(DATETIME), "When it was created."))
        .field(prop("updatedAt", TypeRef::named_nn(DATETIME), "When it last changed."))
}

fn variable_type() -> Object {
    Object::new("FunctionVariable")
        .description("A variable of a function, in its code's `env`. Its value is sealed at rest and never shown.")
        .field(prop("functionId", id(), "The function."))
        .field(prop("key", string(), "Its name in `env`."))
        .field(prop("size", int(), "Bytes of its value."))
        .field(prop("createdAt", TypeRef::named_nn(DATETIME), "When it was created."))
        .field(prop("updatedAt", TypeRef::named_nn(DATETIME), "When its value last changed."))
}

fn deployment_type() -> Object {
    Object::new("Deployment")
        .description("Code uploaded to a function, compiled once.")
        .field(prop("id", id(), "Unique id."))
        .field(prop("functionId", id(), "The function."))
        .field(prop(
            "entrypoint",
            string(),
            "The module whose default export runs.",
        ))
        .field(prop("sourceSize", int(), "Bytes uploaded."))
        .field(prop("modules", int(), "Modules it holds."))
        .field(prop(
            "createdAt",
            TypeRef::named_nn(DATETIME),
            "When it was uploaded.",
        ))
        .field(prop(
            "updatedAt",
            TypeRef::named_nn(DATETIME),
            "When it was uploaded (deployments do not change).",
        ))
}

fn header_type() -> Object {
    Object::new("ExecutionHeader")
        .description("An HTTP header of an execution's request or response.")
        .field(prop("name", string(), "Its name, lower-cased."))
        .field(prop("value", string(), "Its value."))
}

fn execution_type() -> Object {
    Object::new("Execution")
        .description("One run of a function: its request, its response and what it logged. Kept `NIMBUS_EXECUTION_RETENTION`.")
        .field(prop("id", id(), "Unique id."))
        .field(prop("functionId", id(), "The function."))
        .field(prop("deploymentId", id(), "The deployment that ran."))
        .field(prop("trigger", TypeRef::named_nn("ExecutionTrigger"), "What started it."))
        .field(prop("status", TypeRef::named_nn("ExecutionStatus"), "Where it stands."))
        .field(prop("requestMethod", string(), "The request's method."))
        .field(prop("requestPath", string(), "The request's path and query string."))
        .field(prop("requestHeaders", TypeRef::named_nn_list_nn("ExecutionHeader"), "The request's headers."))
        .field(prop("responseStatusCode", int(), "The HTTP status the function answered (500 when it failed, 0 while waiting)."))
        .field(prop("responseHeaders", TypeRef::named_nn_list_nn("ExecutionHeader"), "The headers it answered."))
        .field(prop("responseBody", string(), "The body it answered, as text (invalid UTF-8 replaced); records keep the first 64 KiB, a synchronous answer has all of it."))
        .field(prop("responseBodyBase64", string(), "The same body, in base64, for binary answers."))
        .field(prop("logs", string(), "What it logged (`console.log`, `context.log`), cut at the log limit. Shown to keys only: empty for users and guests, and in realtime events."))
        .field(prop("logsTruncated", TypeRef::named_nn(TypeRef::BOOLEAN), "Whether its logs and errors went past the log limit (64 KiB) and were cut there (false where they are not shown)."))
        .field(prop("errors", string(), "What it logged as errors (`console.error`, `context.error`), and why it failed. Shown to keys only, as `logs`."))
        .field(prop("failure", TypeRef::named(TypeRef::STRING), "Why it failed, as a stable code: `EXECUTION_THREW`, `EXECUTION_CPU_LIMIT`, `EXECUTION_TIMEOUT`, `EXECUTION_MEMORY_LIMIT`, `EXECUTION_STACK_OVERFLOW`, `EXECUTION_NEVER_SETTLED`, `EXECUTION_RESPONSE_TOO_LARGE`, `EXECUTION_INVALID_RESPONSE`, `EXECUTION_CRASHED`."))
        .field(prop("duration", TypeRef::named_nn(TypeRef::FLOAT), "Seconds it ran, rounded up to the millisecond (a run is never 0)."))
        .field(prop("scheduledAt", TypeRef::named(DATETIME), "When it was asked to run, for one started with `scheduledAt`."))
        .field(prop("createdAt", TypeRef::named_nn(DATETIME), "When it was started."))
        .field(prop("updatedAt", TypeRef::named_nn(DATETIME), "When it last changed."))
}

fn required(ctx: &ResolverContext<'_>, name: &str) -> AppResult<String> {
    opt_string(ctx, name)?.ok_or_else(|| AppError::invalid(name, "is required"))
}

fn function_field() -> Field {
    Field::new("function", TypeRef::named_nn("Function"), |ctx| {
        FieldFuture::new(async move {
            let grant = caller(&ctx)?.require::<FunctionsRead>()?;
            let id = required(&ctx, "id")?;
            let function = service::get(app(&ctx)?, &grant, &id).await?;
            Ok(Some(FieldValue::value(function_value(&function))))
        })
    })
    .description("One function of the project (scope `functions.read`).")
    .argument(InputValue::new("id", id()).description("The function's id."))
}

fn functions_field() -> Field {
    with_connection_args(Field::new(
        "functions",
        TypeRef::named_nn("FunctionConnection"),
        |ctx| {
            FieldFuture::new(async move {
                let grant = caller(&ctx)?.require::<FunctionsRead>()?;
                let page = page_request(&ctx)?;
                let (list, total) =
                    service::list(app(&ctx)?, &grant, &page, wants_total_count(&ctx)).await?;
                Ok(Some(FieldValue::value(connection(
                    &page,
                    list,
                    total,
                    |f| &f.id,
                    function_value,
                ))))
            })
        },
    ))
    .description("The project's functions, by id (scope `functions.read`).")
}

fn variables_field() -> Field {
    Field::new(
        "functionVariables",
        TypeRef::named_nn_list_nn("FunctionVariable"),
        |ctx| {
            FieldFuture::new(async move {
                let grant = caller(&ctx)?.require::<FunctionsRead>()?;
                let id = required(&ctx, "functionId")?;
                let list = service::variables(app(&ctx)?, &grant, &id).await?;
                Ok(Some(FieldValue::list(
                    list.iter().map(|v| FieldValue::value(variable_value(v))),
                )))
            })
        },
    )
    .description("A function's variables, by key, without their values (scope `functions.read`).")
    .argument(InputValue::new("functionId", id()).description("The function."))
}

fn variable_field() -> Field {
    Field::new("functionVariable", TypeRef::named_nn("FunctionVariable"), |ctx| {
        FieldFuture::new(async move {
            let grant = caller(&ctx)?.require::<FunctionsRead>()?;
            let id = required(&ctx, "functionId")?;
            let key = required(&ctx, "key")?;
            let variable = service::variable(app(&ctx)?, &grant, &id, &key).await?;
            Ok(Some(FieldValue::value(variable_value(&variable))))
        })
    })
    .description("One variable of a function, without its value (scope `functions.read`); `VARIABLE_NOT_FOUND` when it has none of that key.")
    .argument(InputValue::new("functionId", id()).description("The function."))
    .argument(InputValue::new("key", TypeRef::named_nn(TypeRef::STRING)).description("The variable's key."))
}

fn deployment_field() -> Field {
    Field::new("deployment", TypeRef::named_nn("Deployment"), |ctx| {
        FieldFuture::new(async move {
            let grant = caller(&ctx)?.require::<FunctionsRead>()?;
            let function_id = required(&ctx, "functionId")?;
            let id = required(&ctx, "deploymentId")?;
            let deployment = service::deployment(app(&ctx)?, &grant, &function_id, &id).await?;
            Ok(Some(FieldValue::value(deployment_value(&deployment))))
        })
    })
    .description("One deployment of a function (scope `functions.read`).")
    .argument(InputValue::new("functionId", id()).description("The function."))
    .argument(InputValue::new("deploymentId", id()).description("The deployment."))
}

fn deployments_field() -> Field {
    with_connection_args(Field::new(
        "deployments",
        TypeRef::named_nn("DeploymentConnection"),
        |ctx| {
            FieldFuture::new(async move {
                let grant = caller(&ctx)?.require::<FunctionsRead>()?;
                let id = required(&ctx, "functionId")?;
                let page = page_request(&ctx)?;
                let (list, total) =
                    service::deployments(app(&ctx)?, &grant, &id, &page, wants_total_count(&ctx))
                        .await?;
                Ok(Some(FieldValue::value(connection(
                    &page,
                    list,
                    total,
                    |d| &d.id,
                    deployment_value,
                ))))
            })
        },
    ))
    .description("A function's deployments, oldest first (scope `functions.read`).")
    .argument(InputValue::new("functionId", id()).description("The function."))
}

fn execution_field() -> Field {
    Field::new("execution", TypeRef::named_nn("Execution"), |ctx| {
        FieldFuture::new(async move {
            let function_id = required(&ctx, "functionId")?;
            let id = required(&ctx, "executionId")?;
            let caller = caller(&ctx)?;
            let execution = service::get_execution(app(&ctx)?, caller, &function_id, &id).await?;
            Ok(Some(FieldValue::value(execution_value_for(
                caller, &execution,
            ))))
        })
    })
    .description("One execution: its caller's own, or any with scope `executions.read`.")
    .argument(InputValue::new("functionId", id()).description("The function."))
    .argument(InputValue::new("executionId", id()).description("The execution."))
}

fn executions_field() -> Field {
    with_connection_args(Field::new(
        "executions",
        TypeRef::named_nn("ExecutionConnection"),
        |ctx| {
            FieldFuture::new(async move {
                let function_id = required(&ctx, "functionId")?;
                let status = lowercase_enum(&ctx, "status")?;
                let trigger = lowercase_enum(&ctx, "trigger")?;
                let filter = ExecutionFilter {
                    caller: None,
                    status: status.as_deref(),
                    trigger: trigger.as_deref(),
                };
                let page = page_request(&ctx)?;
                let caller = caller(&ctx)?;
                let (list, total) = service::executions(
                    app(&ctx)?,
                    caller,
                    &function_id,
                    filter,
                    &page,
                    wants_total_count(&ctx),
                )
                .await?;
                Ok(Some(FieldValue::value(connection(
                    &page,
                    list,
                    total,
                    |e| &e.id,
                    |e| execution_value_for(caller, e),
                ))))
            })
        },
    ))
    .description("A function's executions, oldest first (`last` for the newest): a signed-in user's own, or all with scope `executions.read`.")
    .argument(InputValue::new("functionId", id()).description("The function."))
    .argument(
        InputValue::new("status", TypeRef::named("ExecutionStatus"))
            .description("Only executions in this status (`FAILED` for the failures)."),
    )
    .argument(
        InputValue::new("trigger", TypeRef::named("ExecutionTrigger"))
            .description("Only executions started this way."),
    )
}

/// An enum argument as its stored, lowercase name; `None` when not given.
fn lowercase_enum(ctx: &ResolverContext<'_>, name: &str) -> AppResult<Option<String>> {
    match ctx.args.get(name) {
        Some(value) if !value.is_null() => value
            .enum_name()
            .map(|item| Some(item.to_ascii_lowercase()))
            .map_err(|_| AppError::invalid(name, "expected one of its enum's values")),
        _ => Ok(None),
    }
}

/// The caller's key, which a key-only mutation has (its scope was just checked).
fn key_of<'a>(ctx: &ResolverContext<'a>) -> AppResult<&'a crate::auth::caller::ApiKeyGrant> {
    caller(ctx)?.key().ok_or(AppError::Unauthenticated)
}

fn create_function() -> Field {
    Field::new("createFunction", TypeRef::named_nn("Function"), |ctx| {
        FieldFuture::new(async move {
            let grant = caller(&ctx)?.require::<FunctionsWrite>()?;
            let given: CreateFunctionInput = input(&ctx)?;
            if given.runtime.as_deref().is_some_and(|r| r != "JS") {
                return Err(AppError::invalid("runtime", "`JS` is the one runtime").into());
            }
            let new = NewFunction {
                id: given.id,
                name: given.name,
                entrypoint: given.entrypoint,
                execute: given.execute.unwrap_or_default(),
                events: given.events.unwrap_or_default(),
                schedule: given.schedule,
                timeout: given.timeout,
                memory: given.memory,
                enabled: given.enabled,
                warm: given.warm,
                logging: given.logging,
                scopes: given.scopes.unwrap_or_default(),
            };
            let function = service::create(app(&ctx)?, &grant, key_of(&ctx)?, new).await?;
            Ok(Some(FieldValue::value(function_value(&function))))
        })
    })
    .description(
        "Creates a function (scope `functions.write`); deploy code to it with `createDeployment`.",
    )
    .argument(CreateFunctionInput::argument())
}

fn update_function() -> Field {
    Field::new("updateFunction", TypeRef::named_nn("Function"), |ctx| {
        FieldFuture::new(async move {
            let grant = caller(&ctx)?.require::<FunctionsWrite>()?;
            let given: UpdateFunctionInput = input(&ctx)?;
            let change = FunctionChange {
                name: given.name,
                entrypoint: given.entrypoint,
                execute: given.execute,
                events: given.events,
                schedule: given.schedule,
                timeout: given.timeout,
                memory: given.memory,
                enabled: given.enabled,
                warm: given.warm,
                logging: given.logging,
                scopes: given.scopes,
            };
            let function =
                service::update(app(&ctx)?, &grant, key_of(&ctx)?, &given.id, change).await?;
            Ok(Some(FieldValue::value(function_value(&function))))
        })
    })
    .description(
        "Changes a function (scope `functions.write`); a changed schedule takes effect at once.",
    )
    .argument(UpdateFunctionInput::argument())
}

fn delete_function() -> Field {
    Field::new(
        "deleteFunction",
        TypeRef::named_nn("DeleteFunctionPayload"),
        |ctx| {
            FieldFuture::new(async move {
                let grant = caller(&ctx)?.require::<FunctionsWrite>()?;
                let given: DeleteFunctionInput = input(&ctx)?;
                let function = service::delete(app(&ctx)?, &grant, &given.id).await?;
                Ok(Some(FieldValue::value(object([(
                    "deletedId",
                    Value::from(function.id),
                )]))))
            })
        },
    )
    .description("Deletes a function with its variables, deployments, schedule and executions (scope `functions.write`).")
    .argument(DeleteFunctionInput::argument())
}

fn create_variable() -> Field {
    Field::new(
        "createVariable",
        TypeRef::named_nn("FunctionVariable"),
        |ctx| {
            FieldFuture::new(async move {
                let grant = caller(&ctx)?.require::<FunctionsWrite>()?;
                let given: VariableInput = input(&ctx)?;
                let variable = service::create_variable(
                    app(&ctx)?,
                    &grant,
                    key_of(&ctx)?,
                    &given.function_id,
                    &given.key,
                    &given.value,
                )
                .await?;
                Ok(Some(FieldValue::value(variable_value(&variable))))
            })
        },
    )
    .description("Adds a variable to a function's `env` (scope `functions.write`); its value is never shown again.")
    .argument(VariableInput::argument())
}

fn update_variable() -> Field {
    Field::new(
        "updateVariable",
        TypeRef::named_nn("FunctionVariable"),
        |ctx| {
            FieldFuture::new(async move {
                let grant = caller(&ctx)?.require::<FunctionsWrite>()?;
                let given: VariableInput = input(&ctx)?;
                let variable = service::update_variable(
                    app(&ctx)?,
                    &grant,
                    key_of(&ctx)?,
                    &given.function_id,
                    &given.key,
                    &given.value,
                )
                .await?;
                Ok(Some(FieldValue::value(variable_value(&variable))))
            })
        },
    )
    .description("Replaces a variable's value (scope `functions.write`).")
    .argument(VariableInput::argument())
}

fn delete_variable() -> Field {
    Field::new(
        "deleteVariable",
        TypeRef::named_nn("DeleteVariablePayload"),
        |ctx| {
            FieldFuture::new(async move {
                let grant = caller(&ctx)?.require::<FunctionsWrite>()?;
                let given: DeleteVariableInput = input(&ctx)?;
                service::delete_variable(
                    app(&ctx)?,
                    &grant,
                    key_of(&ctx)?,
                    &given.function_id,
                    &given.key,
                )
                .await?;
                Ok(Some(FieldValue::value(object([(
                    "deletedId",
                    Value::from(given.key),
                )]))))
            })
        },
    )
    .description("Removes a variable from a function's `env` (scope `functions.write`).")
    .argument(DeleteVariableInput::argument())
}

/// The uploaded code of a `createDeployment` input: its file name and bytes.
fn uploaded_code(ctx: &ResolverContext<'_>) -> AppResult<(String, Vec<u8>)> {
    use std::io::Read as _;
    let missing = || {
        AppError::invalid(
            "code",
            "send the code as a multipart upload (the GraphQL multipart request spec)",
        )
    };
    let input = ctx.args.get("input").ok_or_else(missing)?;
    let input = input.object().map_err(|_| missing())?;
    let upload = input
        .get("code")
        .and_then(|code| code.upload().ok())
        .ok_or_else(missing)?;
    let value = upload.value(ctx.ctx).map_err(|_| missing())?;
    let mut bytes = Vec::new();
    // One byte past the limit tells that it is over.
    value
        .content
        .take(service::MAX_SOURCE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|_| missing())?;
    Ok((value.filename, bytes))
}

fn create_deployment() -> Field {
    Field::new("createDeployment", TypeRef::named_nn("Deployment"), |ctx| {
        FieldFuture::new(async move {
            let grant = caller(&ctx)?.require::<FunctionsWrite>()?;
            let given: CreateDeploymentInput = input(&ctx)?;
            let (filename, bytes) = uploaded_code(&ctx)?;
            let deployment = service::create_deployment(
                app(&ctx)?,
                &grant,
                key_of(&ctx)?,
                &given.function_id,
                filename,
                bytes,
                given.activate.unwrap_or(true),
            )
            .await?;
            Ok(Some(FieldValue::value(deployment_value(&deployment))))
        })
    })
    .description("Uploads code to a function in one multipart request and compiles it; a syntax error answers `DEPLOYMENT_INVALID` with the module and line (scope `functions.write`).")
    .argument(CreateDeploymentInput::argument())
}

fn activate_deployment() -> Field {
    Field::new("activateDeployment", TypeRef::named_nn("Function"), |ctx| {
        FieldFuture::new(async move {
            let grant = caller(&ctx)?.require::<FunctionsWrite>()?;
            let given: DeploymentRefInput = input(&ctx)?;
            let function = service::activate_deployment(
                app(&ctx)?,
                &grant,
                key_of(&ctx)?,
                &given.function_id,
                &given.deployment_id,
            )
            .await?;
            Ok(Some(FieldValue::value(function_value(&function))))
        })
    })
    .description("Makes a deployment the one executions run (scope `functions.write`).")
    .argument(DeploymentRefInput::argument())
}

fn delete_deployment() -> Field {
    Field::new(
        "deleteDeployment",
        TypeRef::named_nn("DeleteDeploymentPayload"),
        |ctx| {
            FieldFuture::new(async move {
                let grant = caller(&ctx)?.require::<FunctionsWrite>()?;
                let given: DeploymentRefInput = input(&ctx)?;
                let deployment = service::delete_deployment(
                    app(&ctx)?,
                    &grant,
                    &given.function_id,
                    &given.deployment_id,
                )
                .await?;
                Ok(Some(FieldValue::value(object([(
                    "deletedId",
                    Value::from(deployment.id),
                )]))))
            })
        },
    )
    .description("Deletes a deployment; deleting the active one leaves the function with none until another is activated (scope `functions.write`).")
    .argument(DeploymentRefInput::argument())
}

fn delete_execution() -> Field {
    Field::new(
        "deleteExecution",
        TypeRef::named_nn("DeleteExecutionPayload"),
        |ctx| {
            FieldFuture::new(async move {
                let grant = caller(&ctx)?.require::<FunctionsWrite>()?;
                let given: ExecutionRefInput = input(&ctx)?;
                service::delete_execution(
                    app(&ctx)?,
                    &grant,
                    &given.function_id,
                    &given.execution_id,
                )
                .await?;
                Ok(Some(FieldValue::value(object([(
                    "deletedId",
                    Value::from(given.execution_id),
                )]))))
            })
        },
    )
    .description("Deletes the record of an execution that has ended, or cancels one `SCHEDULED` (scope `functions.write`); one still waiting or running is refused (`OPERATION_NOT_ALLOWED`).")
    .argument(ExecutionRefInput::argument())
}

fn create_execution() -> Field {
    Field::new("createExecution", TypeRef::named_nn("Execution"), |ctx| {
        FieldFuture::new(async move {
            let state = app(&ctx)?;
            let caller = caller(&ctx)?;
            let given: CreateExecutionInput = input(&ctx)?;
            let ready = service::runnable(state, caller, &given.function_id).await?;
            limit_executions(&ctx, state, caller).await?;
            let request = service::check_request(
                state,
                caller,
                ExecutionRequest {
                    method: given.method.unwrap_or_else(|| "POST".into()),
                    path: given.path.unwrap_or_else(|| "/".into()),
                    headers: given
                        .headers
                        .unwrap_or_default()
                        .into_iter()
                        .map(|h| (h.name, h.value))
                        .collect(),
                    body: given.body.unwrap_or_default().into(),
                    host: String::new(),
                    scheme: "https".into(),
                    port: 443,
                },
            )?;
            let run_later = given.r#async.unwrap_or(false);
            let at = given
                .scheduled_at
                .as_deref()
                .map(|at| scheduled_time(at, run_later))
                .transpose()?;
            if !run_later && ctx.data_opt::<super::InsideFunction>().is_some() {
                // The calling execution holds a sandbox thread while it waits: chains
                // of synchronous executions would hold them all, and wait on each other.
                return Err(AppError::NotAllowed(
                    "a function runs another function only with `async: true`".into(),
                )
                .into());
            }
            let value = if run_later {
                let execution =
                    service::execute_later(state, caller, &ready.function, Trigger::Graphql, request, at)
                        .await?;
                execution_value_for(caller, &execution)
            } else {
                let (execution, _) =
                    service::execute_now(state, caller, &ready, Trigger::Graphql, request, None)
                        .await?;
                execution_value_for(caller, &execution)
            };
            Ok(Some(FieldValue::value(value)))
        })
    })
    .description("Runs a function: at once, answering its response, or (`async: true`) as a background job, answering `WAITING` (follow it with `executionChanged` or `execution`). Needs one of the function's execute roles, or a key with `executions.write`; `TOO_MANY_EXECUTIONS` when the server's sandbox queue is full.")
    .argument(CreateExecutionInput::argument())
}

/// Nearest a scheduled execution may be asked to run (Appwrite's minute).
const SCHEDULE_AHEAD_MIN_MS: i64 = 60_000;
/// Farthest ahead a scheduled execution may be asked to run: its record and job
/// are kept until then.
const SCHEDULE_AHEAD_MAX_MS: i64 = 366 * 24 * 3_600_000;

/// A `scheduledAt` as the time to run at, if it is one `createExecution` takes.
fn scheduled_time(at: &str, run_later: bool) -> AppResult<i64> {
    if !run_later {
        return Err(AppError::invalid(
            "scheduledAt",
            "a scheduled execution runs in the background: set `async: true`",
        ));
    }
    let at = parse_datetime("scheduledAt", at)?;
    let now = crate::db::now_millis();
    if at < now + SCHEDULE_AHEAD_MIN_MS || at > now + SCHEDULE_AHEAD_MAX_MS {
        return Err(AppError::invalid(
            "scheduledAt",
            "a scheduled execution runs at least a minute and at most a year from now",
        ));
    }
    Ok(at)
}

/// `createExecution`s one user, or one guest client address, may start in a
/// minute (Appwrite's limit): each holds a sandbox thread or a queued job, which
/// every project shares, so aliases and batches of it must not fill them.
const EXECUTIONS_PER_CALLER: crate::auth::rate_limit::Limit =
    crate::auth::rate_limit::Limit::per_minute(60);

/// Counts a client's `createExecution` against [`EXECUTIONS_PER_CALLER`]; keys
/// (servers, and functions acting with their scopes) are not limited.
async fn limit_executions(
    ctx: &async_graphql::dynamic::ResolverContext<'_>,
    state: &crate::AppState,
    caller: &crate::auth::Caller,
) -> AppResult<()> {
    let who = match &caller.credential {
        crate::auth::Credential::Key(_) => return Ok(()),
        crate::auth::Credential::Session(_) => {
            format!("user:{}", caller.require_session()?.user.id)
        }
        crate::auth::Credential::Anonymous => {
            let ip = ctx
                .data_opt::<crate::services::users::service::ClientInfo>()
                .map(|client| client.ip.as_str())
                .unwrap_or_default();
            format!("client:{}", crate::auth::rate_limit::client_key(ip))
        }
    };
    state
        .rate_limiter
        .hit(
            &format!("executions:{}:{who}", caller.project.id),
            EXECUTIONS_PER_CALLER,
        )
        .await
}

/// An `executionChanged` subscription: the events on a function's executions
/// channel (or one execution's).
struct ExecutionWatch {
    channel: String,
}

impl crate::services::realtime::watch::Watch for ExecutionWatch {
    fn outcome(
        &self,
        event: &crate::bus::Event,
        _caller: &crate::auth::Caller,
    ) -> Option<&'static str> {
        event.action_on(&self.channel).map(|_| "")
    }

    fn value(&self, event: &crate::bus::Event, _outcome: &'static str) -> Value {
        execution_from_payload(&event.payload)
    }
}

fn execution_changed() -> SubscriptionField {
    SubscriptionField::new("executionChanged", TypeRef::named_nn("Execution"), |ctx| {
        SubscriptionFieldFuture::new(async move {
            if let Some(rendering) = crate::services::realtime::watch::prepared(&ctx) {
                return Ok(rendering);
            }
            let state = app(&ctx)?.clone();
            let caller = caller(&ctx)?.clone();
            let function_id = required(&ctx, "functionId")?;
            crate::db::ids::validate("functionId", &function_id)?;
            let execution_id = opt_string(&ctx, "executionId")?;
            let channel = match &execution_id {
                Some(id) => {
                    crate::db::ids::validate("executionId", id)?;
                    format!("functions.{function_id}.executions.{id}")
                }
                None => format!("functions.{function_id}.executions"),
            };
            Ok(crate::services::realtime::watch::follow(
                &ctx,
                state,
                caller,
                ExecutionWatch { channel },
            ))
        })
    })
    .description("Executions of a function as they are created and finish: a signed-in user's own, or all of them for a key with `executions.read`.")
    .argument(InputValue::new("functionId", id()).description("The function."))
    .argument(
        InputValue::new("executionId", TypeRef::named(TypeRef::ID))
            .description("Only this execution."),
    )
}
