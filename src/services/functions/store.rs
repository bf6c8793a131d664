//! SQL of functions, their variables, deployments and executions.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Executor, FromRow, Row as _};

use crate::db::Page;
use crate::db::columns::{json, optional_text, text};

use super::{Deployment, Execution, Function, Variable};

const COLUMNS: &str = "project_id, id, name, runtime, entrypoint, execute, events, schedule, \
     timeout, memory, enabled, warm, logging, scopes, reach, deployment_id, created_at, updated_at";

/// A function as stored: lists are JSON arrays.
#[derive(Debug, Clone)]
pub struct FunctionRow(pub Function);

fn list_of(row: &AnyRow, column: &str) -> Result<Vec<String>, sqlx::Error> {
    // Written by this module only, from checked values.
    Ok(serde_json::from_str(&text(row, column)?).unwrap_or_default())
}

impl FromRow<'_, AnyRow> for FunctionRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(FunctionRow(Function {
            project_id: row.try_get("project_id")?,
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            runtime: row.try_get("runtime")?,
            entrypoint: row.try_get("entrypoint")?,
            execute: list_of(row, "execute")?,
            events: list_of(row, "events")?,
            schedule: row.try_get("schedule")?,
            timeout: row.try_get("timeout")?,
            memory: row.try_get("memory")?,
            enabled: row.try_get::<i16, _>("enabled")? != 0,
            warm: row.try_get::<i16, _>("warm")? != 0,
            logging: row.try_get::<i16, _>("logging")? != 0,
            scopes: list_of(row, "scopes")?,
            reach: crate::auth::Delegation::from_column(optional_text(row, "reach")?.as_deref()),
            deployment_id: row.try_get("deployment_id")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        }))
    }
}

pub async fn insert<'e>(
    db: impl Executor<'e, Database = Any>,
    f: &Function,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO functions ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&f.project_id)
    .bind(&f.id)
    .bind(&f.name)
    .bind(&f.runtime)
    .bind(&f.entrypoint)
    .bind(json(&f.execute))
    .bind(json(&f.events))
    .bind(&f.schedule)
    .bind(f.timeout)
    .bind(f.memory)
    .bind(i16::from(f.enabled))
    .bind(i16::from(f.warm))
    .bind(i16::from(f.logging))
    .bind(json(&f.scopes))
    .bind(f.reach.to_column())
    .bind(&f.deployment_id)
    .bind(f.created_at)
    .bind(f.updated_at)
    .execute(db)
    .await
    .map(|_| ())
}

/// Writes the changeable fields of `f` over the row whose scopes are still
/// `vouched` (those the changing key was checked against); false when it is gone
/// or they changed meanwhile.
pub async fn update<'e>(
    db: impl Executor<'e, Database = Any>,
    f: &Function,
    vouched: &[String],
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE functions SET name = ?, entrypoint = ?, execute = ?, events = ?, schedule = ?, \
         timeout = ?, memory = ?, enabled = ?, warm = ?, logging = ?, \
         scopes = ?, reach = ?, deployment_id = ?, updated_at = ? \
         WHERE project_id = ? AND id = ? AND scopes = ?",
    )
    .bind(&f.name)
    .bind(&f.entrypoint)
    .bind(json(&f.execute))
    .bind(json(&f.events))
    .bind(&f.schedule)
    .bind(f.timeout)
    .bind(f.memory)
    .bind(i16::from(f.enabled))
    .bind(i16::from(f.warm))
    .bind(i16::from(f.logging))
    .bind(json(&f.scopes))
    .bind(f.reach.to_column())
    .bind(&f.deployment_id)
    .bind(f.updated_at)
    .bind(&f.project_id)
    .bind(&f.id)
    .bind(json(&vouched))
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

pub async fn find(
    pool: &AnyPool,
    project_id: &str,
    id: &str,
) -> Result<Option<Function>, sqlx::Error> {
    sqlx::query_as::<_, FunctionRow>(&format!(
        "SELECT {COLUMNS} FROM functions WHERE project_id = ? AND id = ?"
    ))
    .bind(project_id)
    .bind(id)
    .fetch_optional(pool)
    .await
    .map(|row| row.map(|r| r.0))
}

/// The functions of `project_id` that events may trigger: enabled, with an active
/// deployment and at least one event pattern.
pub async fn subscribed<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
) -> Result<Vec<Function>, sqlx::Error> {
    let rows: Vec<FunctionRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM functions WHERE project_id = ? AND enabled = 1 \
         AND deployment_id IS NOT NULL AND events <> '[]'"
    ))
    .bind(project_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Those of `projects` that have a function events may trigger ([`subscribed`]).
pub async fn with_subscribed<'e>(
    db: impl Executor<'e, Database = Any>,
    projects: &[&str],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    if projects.is_empty() {
        return Ok(Default::default());
    }
    let mut query = sqlx::QueryBuilder::<Any>::new(
        "SELECT DISTINCT project_id FROM functions WHERE enabled = 1 \
         AND deployment_id IS NOT NULL AND events <> '[]' AND project_id IN (",
    );
    let mut list = query.separated(", ");
    for project in projects {
        list.push_bind(*project);
    }
    query.push(")");
    query
        .build_query_scalar::<String>()
        .fetch_all(db)
        .await
        .map(|found| found.into_iter().collect())
}

pub async fn list(
    pool: &AnyPool,
    project_id: &str,
    page: &Page,
) -> Result<Vec<Function>, sqlx::Error> {
    let (keyset, binds) = page.keyset_sql("id");
    let sql = format!("SELECT {COLUMNS} FROM functions WHERE project_id = ?{keyset}");
    let rows: Vec<FunctionRow> = binds
        .iter()
        .fold(sqlx::query_as(&sql).bind(project_id), |q, b| q.bind(b))
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

pub async fn count(pool: &AnyPool, project_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM functions WHERE project_id = ?")
        .bind(project_id)
        .fetch_one(pool)
        .await
}

/// Deletes a function with its variables and deployments (its executions are
/// deleted apart, in the same transaction: they have no foreign key).
pub async fn delete<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM functions WHERE project_id = ? AND id = ?")
        .bind(project_id)
        .bind(id)
        .execute(db)
        .await
        .map(|r| r.rows_affected() == 1)
}

// ---------------------------------------------------------------------------
// Variables

/// A variable with its sealed value.
#[derive(Debug, Clone)]
pub struct VariableRow {
    pub variable: Variable,
    pub sealed: String,
}

impl FromRow<'_, AnyRow> for VariableRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(VariableRow {
            variable: Variable {
                function_id: row.try_get("function_id")?,
                key: row.try_get("var_key")?,
                size: row.try_get("size")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            },
            sealed: text(row, "value")?,
        })
    }
}

const VARIABLE_COLUMNS: &str = "function_id, var_key, value, size, created_at, updated_at";

pub async fn variables(
    pool: &AnyPool,
    project_id: &str,
    function_id: &str,
) -> Result<Vec<VariableRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {VARIABLE_COLUMNS} FROM function_variables WHERE project_id = ? AND function_id = ? ORDER BY var_key"
    ))
    .bind(project_id)
    .bind(function_id)
    .fetch_all(pool)
    .await
}

pub async fn insert_variable<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    variable: &Variable,
    sealed: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO function_variables (project_id, {VARIABLE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(project_id)
    .bind(&variable.function_id)
    .bind(&variable.key)
    .bind(sealed)
    .bind(variable.size)
    .bind(variable.created_at)
    .bind(variable.updated_at)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn update_variable<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    variable: &Variable,
    sealed: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE function_variables SET value = ?, size = ?, updated_at = ? \
         WHERE project_id = ? AND function_id = ? AND var_key = ?",
    )
    .bind(sealed)
    .bind(variable.size)
    .bind(variable.updated_at)
    .bind(project_id)
    .bind(&variable.function_id)
    .bind(&variable.key)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

pub async fn delete_variable<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    function_id: &str,
    key: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "DELETE FROM function_variables WHERE project_id = ? AND function_id = ? AND var_key = ?",
    )
    .bind(project_id)
    .bind(function_id)
    .bind(key)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

// ---------------------------------------------------------------------------
// Deployments

const DEPLOYMENT_COLUMNS: &str = "id, function_id, entrypoint, source_size, modules, created_at";

#[derive(Debug, Clone)]
pub struct DeploymentRow(pub Deployment);

impl FromRow<'_, AnyRow> for DeploymentRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(DeploymentRow(Deployment {
            id: row.try_get("id")?,
            function_id: row.try_get("function_id")?,
            entrypoint: row.try_get("entrypoint")?,
            source_size: row.try_get("source_size")?,
            modules: row.try_get("modules")?,
            created_at: row.try_get("created_at")?,
        }))
    }
}

pub async fn insert_deployment<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    deployment: &Deployment,
    program: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO function_deployments (project_id, {DEPLOYMENT_COLUMNS}, program) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(project_id)
    .bind(&deployment.id)
    .bind(&deployment.function_id)
    .bind(&deployment.entrypoint)
    .bind(deployment.source_size)
    .bind(deployment.modules)
    .bind(deployment.created_at)
    .bind(program.to_vec())
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn find_deployment(
    pool: &AnyPool,
    project_id: &str,
    function_id: &str,
    id: &str,
) -> Result<Option<Deployment>, sqlx::Error> {
    sqlx::query_as::<_, DeploymentRow>(&format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM function_deployments WHERE project_id = ? AND function_id = ? AND id = ?"
    ))
    .bind(project_id)
    .bind(function_id)
    .bind(id)
    .fetch_optional(pool)
    .await
    .map(|row| row.map(|r| r.0))
}

/// The compiled program of a deployment.
pub async fn program(
    pool: &AnyPool,
    project_id: &str,
    function_id: &str,
    id: &str,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT program FROM function_deployments WHERE project_id = ? AND function_id = ? AND id = ?",
    )
    .bind(project_id)
    .bind(function_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub async fn list_deployments(
    pool: &AnyPool,
    project_id: &str,
    function_id: &str,
    page: &Page,
) -> Result<Vec<Deployment>, sqlx::Error> {
    let (keyset, binds) = page.keyset_sql("id");
    let sql = format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM function_deployments WHERE project_id = ? AND function_id = ?{keyset}"
    );
    let rows: Vec<DeploymentRow> = binds
        .iter()
        .fold(
            sqlx::query_as(&sql).bind(project_id).bind(function_id),
            |q, b| q.bind(b),
        )
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

pub async fn count_deployments(
    pool: &AnyPool,
    project_id: &str,
    function_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM function_deployments WHERE project_id = ? AND function_id = ?",
    )
    .bind(project_id)
    .bind(function_id)
    .fetch_one(pool)
    .await
}

pub async fn delete_deployment<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    function_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "DELETE FROM function_deployments WHERE project_id = ? AND function_id = ? AND id = ?",
    )
    .bind(project_id)
    .bind(function_id)
    .bind(id)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// Records who changed what the function runs (its code, settings or variables):
/// what their key hands on, if its scopes are still `vouched` (those the key was
/// checked against); false when the function is gone or they changed meanwhile.
pub async fn set_reach<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    function_id: &str,
    reach: &crate::auth::Delegation,
    vouched: &[String],
) -> Result<bool, sqlx::Error> {
    sqlx::query("UPDATE functions SET reach = ? WHERE project_id = ? AND id = ? AND scopes = ?")
        .bind(reach.to_column())
        .bind(project_id)
        .bind(function_id)
        .bind(json(&vouched))
        .execute(db)
        .await
        .map(|r| r.rows_affected() == 1)
}

/// Makes `deployment_id` the function's active deployment (none: deactivates).
pub async fn set_active<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    function_id: &str,
    deployment_id: Option<&str>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE functions SET deployment_id = ?, updated_at = ? WHERE project_id = ? AND id = ?",
    )
    .bind(deployment_id)
    .bind(now)
    .bind(project_id)
    .bind(function_id)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

// ---------------------------------------------------------------------------
// Executions

const EXECUTION_COLUMNS: &str = "project_id, function_id, id, deployment_id, trigger_kind, status, \
     caller, request_method, request_path, request_headers, response_status, response_headers, \
     response_body, logs, errors, logs_truncated, failure, duration_ms, created_at, updated_at, \
     scheduled_at";

fn pairs_of(row: &AnyRow, column: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
    Ok(serde_json::from_str(&text(row, column)?).unwrap_or_default())
}

#[derive(Debug, Clone)]
pub struct ExecutionRow(pub Execution);

impl FromRow<'_, AnyRow> for ExecutionRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(ExecutionRow(Execution {
            project_id: row.try_get("project_id")?,
            function_id: row.try_get("function_id")?,
            id: row.try_get("id")?,
            deployment_id: row.try_get("deployment_id")?,
            trigger: row.try_get("trigger_kind")?,
            status: row.try_get("status")?,
            caller: row.try_get("caller")?,
            request_method: row.try_get("request_method")?,
            request_path: text(row, "request_path")?,
            request_headers: pairs_of(row, "request_headers")?,
            response_status: row.try_get("response_status")?,
            response_headers: pairs_of(row, "response_headers")?,
            response_body: row.try_get::<Vec<u8>, _>("response_body")?.into(),
            logs: text(row, "logs")?,
            errors: text(row, "errors")?,
            logs_truncated: row.try_get::<i16, _>("logs_truncated")? != 0,
            failure: row.try_get("failure")?,
            duration_ms: row.try_get("duration_ms")?,
            scheduled_at: row.try_get("scheduled_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        }))
    }
}

/// What a record keeps of a response body: its first
/// [`super::service::KEPT_RESPONSE_BYTES`] (the caller of a synchronous
/// execution got all of it).
fn kept_body(body: &[u8]) -> Vec<u8> {
    body[..body.len().min(super::service::KEPT_RESPONSE_BYTES)].to_vec()
}

/// How many of a project's executions are in `status` (of one caller's, `user:ID`
/// or `""` for guests, when `caller` is given), counted up to `up_to`.
pub async fn count_in_status<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    status: &str,
    caller: Option<&str>,
    up_to: usize,
) -> Result<usize, sqlx::Error> {
    let by_caller = match caller {
        Some("") => " AND caller IS NULL",
        Some(_) => " AND caller = ?",
        None => "",
    };
    let sql = format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM function_executions \
         WHERE project_id = ? AND status = ?{by_caller} LIMIT ?) AS counted"
    );
    let mut query = sqlx::query_as::<_, (i64,)>(&sql)
        .bind(project_id)
        .bind(status);
    if let Some(caller) = caller.filter(|c| !c.is_empty()) {
        query = query.bind(caller);
    }
    let (count,) = query.bind(up_to as i64).fetch_one(db).await?;
    Ok(count.max(0) as usize)
}

/// Records a new execution if the function it runs as (created at
/// `function_created_at`) still exists; false when it does not. `request_body` is
/// kept only for one that runs later. The existence
/// check and the insert are one statement: on MariaDB `INSERT … SELECT` holds a
/// shared lock on the function's row until the commit, so a concurrent delete
/// either commits first (nothing is written) or waits and deletes the record with
/// the function's executions; on SQLite writers take turns. A later function of
/// the same id has another creation time and gets none of the old records.
pub async fn insert_execution_of<'e>(
    db: impl Executor<'e, Database = Any>,
    e: &Execution,
    function_created_at: i64,
    request_body: Option<&[u8]>,
) -> Result<bool, sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO function_executions ({EXECUTION_COLUMNS}, request_body) \
         SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM functions \
         WHERE project_id = ? AND id = ? AND created_at = ?"
    ))
    .bind(&e.project_id)
    .bind(&e.function_id)
    .bind(&e.id)
    .bind(&e.deployment_id)
    .bind(&e.trigger)
    .bind(&e.status)
    .bind(&e.caller)
    .bind(&e.request_method)
    .bind(&e.request_path)
    .bind(json(&e.request_headers))
    .bind(e.response_status)
    .bind(json(&e.response_headers))
    .bind(kept_body(&e.response_body))
    .bind(&e.logs)
    .bind(&e.errors)
    .bind(i16::from(e.logs_truncated))
    .bind(&e.failure)
    .bind(e.duration_ms)
    .bind(e.created_at)
    .bind(e.updated_at)
    .bind(e.scheduled_at)
    .bind(request_body.map(<[u8]>::to_vec))
    .bind(&e.project_id)
    .bind(&e.function_id)
    .bind(function_created_at)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// Most records one statement of [`insert_executions_of`] inserts.
pub const RECORDS_PER_INSERT: usize = 64;

/// Records finished synchronous executions, each (as [`insert_execution_of`]
/// does) only if the function it ran as, created at its `i64`, still exists;
/// the ids of those written. One statement per power of two of records (64 at
/// most), so a batch of any size takes a few round trips and a few statement
/// shapes, not one of each per record.
pub async fn insert_executions_of(
    conn: &mut sqlx::AnyConnection,
    records: &[(&Execution, i64)],
) -> Result<Vec<String>, sqlx::Error> {
    let mut written = Vec::with_capacity(records.len());
    let mut rest = records;
    while !rest.is_empty() {
        let take = RECORDS_PER_INSERT.min(1 << rest.len().ilog2());
        let (chunk, after) = rest.split_at(take);
        rest = after;
        let mut insert = sqlx::QueryBuilder::<Any>::new(format!(
            "INSERT INTO function_executions ({EXECUTION_COLUMNS}, request_body) "
        ));
        for (n, (e, function_created_at)) in chunk.iter().enumerate() {
            insert.push(if n == 0 {
                "SELECT "
            } else {
                " UNION ALL SELECT "
            });
            let mut values = insert.separated(", ");
            values
                .push_bind(e.project_id.as_str())
                .push_bind(e.function_id.as_str())
                .push_bind(e.id.as_str())
                .push_bind(e.deployment_id.as_str())
                .push_bind(e.trigger.as_str())
                .push_bind(e.status.as_str())
                .push_bind(e.caller.as_deref())
                .push_bind(e.request_method.as_str())
                .push_bind(e.request_path.as_str())
                .push_bind(json(&e.request_headers))
                .push_bind(e.response_status)
                .push_bind(json(&e.response_headers))
                .push_bind(kept_body(&e.response_body))
                .push_bind(e.logs.as_str())
                .push_bind(e.errors.as_str())
                .push_bind(i16::from(e.logs_truncated))
                .push_bind(e.failure.as_deref())
                .push_bind(e.duration_ms)
                .push_bind(e.created_at)
                .push_bind(e.updated_at)
                .push_bind(e.scheduled_at)
                .push("NULL");
            insert
                .push(" FROM functions WHERE project_id = ")
                .push_bind(e.project_id.as_str())
                .push(" AND id = ")
                .push_bind(e.function_id.as_str())
                .push(" AND created_at = ")
                .push_bind(*function_created_at);
        }
        insert.push(" RETURNING id");
        written.extend(
            insert
                .build_query_scalar::<String>()
                .fetch_all(&mut *conn)
                .await?,
        );
    }
    Ok(written)
}

/// Marks a scheduled execution as running; false when it is no longer scheduled
/// (cancelled, or claimed by another run of its job).
pub async fn start_scheduled<'e>(
    db: impl Executor<'e, Database = Any>,
    e: &Execution,
    at: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE function_executions SET status = ?, updated_at = ? \
         WHERE project_id = ? AND function_id = ? AND id = ? AND status = ?",
    )
    .bind(super::status::PROCESSING)
    .bind(at)
    .bind(&e.project_id)
    .bind(&e.function_id)
    .bind(&e.id)
    .bind(super::status::SCHEDULED)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// Records how an execution ended (and forgets its request body); false when it is
/// gone or already ended.
pub async fn finish_execution<'e>(
    db: impl Executor<'e, Database = Any>,
    e: &Execution,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE function_executions SET status = ?, response_status = ?, response_headers = ?, \
         response_body = ?, logs = ?, errors = ?, logs_truncated = ?, failure = ?, duration_ms = ?, \
         deployment_id = ?, updated_at = ?, \
         request_body = NULL \
         WHERE project_id = ? AND function_id = ? AND id = ? AND status IN ('waiting', 'processing', 'scheduled')",
    )
    .bind(&e.status)
    .bind(e.response_status)
    .bind(json(&e.response_headers))
    .bind(kept_body(&e.response_body))
    .bind(&e.logs)
    .bind(&e.errors)
    .bind(i16::from(e.logs_truncated))
    .bind(&e.failure)
    .bind(e.duration_ms)
    .bind(&e.deployment_id)
    .bind(e.updated_at)
    .bind(&e.project_id)
    .bind(&e.function_id)
    .bind(&e.id)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

pub async fn find_execution(
    pool: &AnyPool,
    project_id: &str,
    function_id: &str,
    id: &str,
) -> Result<Option<Execution>, sqlx::Error> {
    sqlx::query_as::<_, ExecutionRow>(&format!(
        "SELECT {EXECUTION_COLUMNS} FROM function_executions WHERE project_id = ? AND function_id = ? AND id = ?"
    ))
    .bind(project_id)
    .bind(function_id)
    .bind(id)
    .fetch_optional(pool)
    .await
    .map(|row| row.map(|r| r.0))
}

/// The body of an execution that waits to run.
pub async fn request_body(
    pool: &AnyPool,
    project_id: &str,
    function_id: &str,
    id: &str,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar::<_, Option<Vec<u8>>>(
        "SELECT request_body FROM function_executions WHERE project_id = ? AND function_id = ? AND id = ?",
    )
    .bind(project_id)
    .bind(function_id)
    .bind(id)
    .fetch_optional(pool)
    .await
    .map(Option::flatten)
}

/// Which of a function's executions a list or count takes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecutionFilter<'a> {
    /// Only those of this caller (`user:ID`).
    pub caller: Option<&'a str>,
    /// Only those in this status (one of [`super::status`]).
    pub status: Option<&'a str>,
    /// Only those started this way (`graphql`, `http`, `schedule`, `event`).
    pub trigger: Option<&'a str>,
}

impl ExecutionFilter<'_> {
    /// ` AND …` for the filter, with its binds in order.
    fn sql(&self) -> (String, Vec<&str>) {
        let mut sql = String::new();
        let mut binds = Vec::new();
        for (column, value) in [
            ("caller", self.caller),
            ("status", self.status),
            ("trigger_kind", self.trigger),
        ] {
            if let Some(value) = value {
                sql.push_str(&format!(" AND {column} = ?"));
                binds.push(value);
            }
        }
        (sql, binds)
    }
}

/// Executions of a function, oldest first (the page's order), as `filter` takes
/// them.
pub async fn list_executions(
    pool: &AnyPool,
    project_id: &str,
    function_id: &str,
    filter: &ExecutionFilter<'_>,
    page: &Page,
) -> Result<Vec<Execution>, sqlx::Error> {
    let (keyset, binds) = page.keyset_sql("id");
    let (filtered, filter_binds) = filter.sql();
    let sql = list_executions_sql(&filtered, &keyset);
    let query = sqlx::query_as(&sql).bind(project_id).bind(function_id);
    let query = filter_binds.iter().fold(query, |q, b| q.bind(*b));
    let rows: Vec<ExecutionRow> = binds
        .iter()
        .fold(query, |q, b| q.bind(b))
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// The list of a function's executions, `filtered` (its ` AND …`), then the
/// page's `keyset`; a caller's own come from their range of
/// `function_executions_by_function_caller`.
pub(crate) fn list_executions_sql(filtered: &str, keyset: &str) -> String {
    format!(
        "SELECT {EXECUTION_COLUMNS} FROM function_executions WHERE project_id = ? AND function_id = ?{filtered}{keyset}"
    )
}

/// The count of a function's executions, `filtered` (its ` AND …`).
pub(crate) fn count_executions_sql(filtered: &str) -> String {
    format!(
        "SELECT COUNT(*) FROM function_executions WHERE project_id = ? AND function_id = ?{filtered}"
    )
}

pub async fn count_executions(
    pool: &AnyPool,
    project_id: &str,
    function_id: &str,
    filter: &ExecutionFilter<'_>,
) -> Result<i64, sqlx::Error> {
    let (filtered, binds) = filter.sql();
    let sql = count_executions_sql(&filtered);
    let query = sqlx::query_scalar(&sql).bind(project_id).bind(function_id);
    binds
        .iter()
        .fold(query, |q, b| q.bind(*b))
        .fetch_one(pool)
        .await
}

/// Deletes one execution that has ended, or waits for its scheduled time (its
/// job then finds nothing to run); false when there is none (or it is queued or
/// running: it finishes into its record).
pub async fn delete_ended_execution<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    function_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "DELETE FROM function_executions WHERE project_id = ? AND function_id = ? AND id = ? \
         AND status IN ('completed', 'failed', 'scheduled')",
    )
    .bind(project_id)
    .bind(function_id)
    .bind(id)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// The executions of a function yet to end (waiting, scheduled or running):
/// those whose watchers are told when the function goes, with them. Held on
/// MariaDB until the transaction ends, so a claim or an end meanwhile waits for
/// the delete and finds them gone.
pub async fn pending_executions_of<'e>(
    db: impl Executor<'e, Database = Any>,
    dialect: crate::db::Dialect,
    project_id: &str,
    function_id: &str,
) -> Result<Vec<Execution>, sqlx::Error> {
    let hold = match dialect {
        crate::db::Dialect::MySql => " FOR UPDATE",
        crate::db::Dialect::Sqlite => "",
    };
    let rows: Vec<ExecutionRow> = sqlx::query_as(&format!(
        "SELECT {EXECUTION_COLUMNS} FROM function_executions \
         WHERE project_id = ? AND status IN (?, ?, ?) AND function_id = ?{hold}"
    ))
    .bind(project_id)
    .bind(super::status::WAITING)
    .bind(super::status::SCHEDULED)
    .bind(super::status::PROCESSING)
    .bind(function_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

pub async fn delete_executions_of<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    function_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM function_executions WHERE project_id = ? AND function_id = ?")
        .bind(project_id)
        .bind(function_id)
        .execute(db)
        .await
        .map(|_| ())
}

pub async fn delete_project_executions<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM function_executions WHERE project_id = ?")
        .bind(project_id)
        .execute(db)
        .await
        .map(|_| ())
}

pub async fn prune_executions(pool: &AnyPool, before: i64) -> Result<u64, sqlx::Error> {
    // A scheduled execution's retention starts when it is due to run.
    sqlx::query(
        "DELETE FROM function_executions WHERE created_at < ? \
         AND (scheduled_at IS NULL OR scheduled_at < ?)",
    )
    .bind(before)
    .bind(before)
    .execute(pool)
    .await
    .map(|r| r.rows_affected())
}
