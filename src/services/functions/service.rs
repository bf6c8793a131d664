//! Function rules: checking and storing functions, their variables (sealed at
//! rest, never shown again), deployments (unpacked with limits and compiled once),
//! and executions: who may run one, who may read it, and how it is recorded and
//! announced.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::str::FromStr as _;

use bytes::Bytes;
use sha2::Digest as _;

use crate::AppState;
use crate::auth::caller::ApiKeyGrant;
use crate::auth::permissions::Role;
use crate::auth::rate_limit::Limit;
use crate::auth::scopes::{
    ExecutionsRead, ExecutionsWrite, FunctionsRead, FunctionsWrite, Scope, ScopeMarker,
};
use crate::auth::sealing::Sealer;
use crate::auth::{Caller, Credential, Delegation, Grant};
use crate::bus::{BusMessage, CAUSE, Cause, Event, log};
use crate::db::{DbErrorExt as _, Page, ids, now_millis};
use crate::error::{AppError, AppResult, codes};
use crate::jobs::NewJob;
use crate::sandbox::{self, Source};

use super::{Deployment, Execution, Function, Variable, execute, status, store};

/// The kind of the jobs that run asynchronous executions.
pub const EXECUTE_KIND: &str = "functions.execute";
/// The kind of the jobs a function's CRON schedule enqueues.
pub const SCHEDULE_KIND: &str = "functions.schedule";
/// How deep a chain of event triggers may go: a function triggered by a change
/// that a function triggered by a change … made, at most this many functions
/// long. Past it, events are logged but trigger nothing.
pub const MAX_TRIGGER_DEPTH: u32 = 8;
/// The kind of the schedule that prunes execution records.
pub const PRUNE_KIND: &str = "functions.prune";

const SEALING_PURPOSE: &str = "function variables";
const MAX_NAME: usize = 128;
const MAX_ENTRYPOINT: usize = 255;
/// Seconds an execution may take: Appwrite's bounds.
pub const MAX_TIMEOUT: i64 = 900;
const DEFAULT_TIMEOUT: i64 = 15;
/// MiB of engine heap.
const MIN_MEMORY: i64 = 8;
pub const MAX_MEMORY: i64 = 512;
const DEFAULT_MEMORY: i64 = 64;
const MAX_ROLES: usize = 100;
const MAX_SCHEDULE: usize = 255;
const MAX_VARIABLE_KEY: usize = 128;
/// Bytes of one variable's value, and of all of a function's values together.
pub const MAX_VARIABLE_BYTES: usize = 8 << 10;
pub const MAX_VARIABLES_BYTES: usize = 64 << 10;
/// Most modules of a deployment, and most bytes of them unpacked.
pub const MAX_MODULES: usize = 256;
pub const MAX_SOURCE_BYTES: usize = 8 << 20;
/// Most bytes of an execution's path and headers.
const MAX_PATH: usize = 2048;
const MAX_HEADERS: usize = 100;
const MAX_HEADER_BYTES: usize = 16 << 10;
/// Most bytes of a response body kept in the execution record (the caller of a
/// synchronous execution gets all of it).
pub const KEPT_RESPONSE_BYTES: usize = 64 << 10;

/// A function to create.
#[derive(Debug, Default)]
pub struct NewFunction {
    pub id: Option<String>,
    pub name: String,
    pub entrypoint: String,
    pub execute: Vec<String>,
    pub events: Vec<String>,
    pub schedule: Option<String>,
    pub timeout: Option<i64>,
    pub memory: Option<i64>,
    pub enabled: Option<bool>,
    pub warm: Option<bool>,
    pub logging: Option<bool>,
    pub scopes: Vec<String>,
}

/// Changes to a function; what is `None` stays. An empty `schedule` removes it.
#[derive(Debug, Default)]
pub struct FunctionChange {
    pub name: Option<String>,
    pub entrypoint: Option<String>,
    pub execute: Option<Vec<String>>,
    pub events: Option<Vec<String>>,
    pub schedule: Option<String>,
    pub timeout: Option<i64>,
    pub memory: Option<i64>,
    pub enabled: Option<bool>,
    pub warm: Option<bool>,
    pub logging: Option<bool>,
    pub scopes: Option<Vec<String>>,
}

fn not_found(id: &str) -> AppError {
    AppError::NotFound {
        what: "function",
        id: id.to_string(),
    }
}

fn deployment_not_found(id: &str) -> AppError {
    AppError::NotFound {
        what: "deployment",
        id: id.to_string(),
    }
}

fn execution_not_found(id: &str) -> AppError {
    AppError::NotFound {
        what: "execution",
        id: id.to_string(),
    }
}

fn sealer(state: &AppState) -> Sealer {
    Sealer::new(&state.secret, SEALING_PURPOSE)
}

fn check_name(name: &str) -> AppResult<()> {
    let length = name.chars().count();
    if name.trim().is_empty() || length > MAX_NAME || name.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "name",
            format!("must be 1 to {MAX_NAME} printable characters"),
        ));
    }
    Ok(())
}

/// A module path inside a deployment: relative, `/`-separated, of plain segments
/// (no `.`, `..` or empty ones), ending `.js`, `.mjs` or `.json`.
pub fn check_module_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > MAX_ENTRYPOINT {
        return Err(format!("a module path has 1 to {MAX_ENTRYPOINT} bytes"));
    }
    let plain = |segment: &str| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@+".contains(&b))
    };
    if !path.split('/').all(plain) {
        return Err(format!(
            "`{}` is not a relative path of plain names (letters, digits, `._-@+`)",
            path.chars().take(64).collect::<String>()
        ));
    }
    if ![".js", ".mjs", ".json"]
        .iter()
        .any(|ext| path.ends_with(ext))
    {
        return Err("only `.js`, `.mjs` and `.json` modules are taken".into());
    }
    Ok(())
}

fn check_entrypoint(entrypoint: &str) -> AppResult<()> {
    check_module_path(entrypoint).map_err(|reason| AppError::invalid("entrypoint", reason))?;
    if entrypoint.ends_with(".json") {
        return Err(AppError::invalid(
            "entrypoint",
            "the entrypoint is a `.js` or `.mjs` module",
        ));
    }
    Ok(())
}

fn check_roles(roles: &[String]) -> AppResult<Vec<String>> {
    if roles.len() > MAX_ROLES {
        return Err(AppError::Invalid {
            code: codes::INVALID_ROLE,
            field: "execute".into(),
            reason: format!("at most {MAX_ROLES} roles"),
        });
    }
    let mut checked: Vec<String> = Vec::with_capacity(roles.len());
    for role in roles {
        let parsed = Role::from_str(role).map_err(|err| AppError::Invalid {
            code: codes::INVALID_ROLE,
            field: "execute".into(),
            reason: err.to_string(),
        })?;
        let canonical = parsed.to_string();
        if !checked.contains(&canonical) {
            checked.push(canonical);
        }
    }
    Ok(checked)
}

fn check_events(events: &[String]) -> AppResult<Vec<String>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    crate::bus::patterns::check_patterns(events).map_err(|err| match err {
        AppError::Invalid { reason, .. } => AppError::Invalid {
            code: codes::INVALID_FUNCTION_EVENTS,
            field: "events".into(),
            reason,
        },
        other => other,
    })
}

fn check_schedule(schedule: Option<String>) -> AppResult<Option<String>> {
    let Some(schedule) = schedule.map(|s| s.trim().to_string()) else {
        return Ok(None);
    };
    if schedule.is_empty() {
        return Ok(None);
    }
    let invalid = |reason: String| AppError::Invalid {
        code: codes::INVALID_SCHEDULE,
        field: "schedule".into(),
        reason,
    };
    if schedule.len() > MAX_SCHEDULE {
        return Err(invalid(format!("at most {MAX_SCHEDULE} bytes")));
    }
    crate::jobs::next_tick(&schedule, now_millis()).map_err(|err| invalid(err.to_string()))?;
    Ok(Some(schedule))
}

fn check_timeout(timeout: i64) -> AppResult<i64> {
    if !(1..=MAX_TIMEOUT).contains(&timeout) {
        return Err(AppError::invalid(
            "timeout",
            format!("must be 1 to {MAX_TIMEOUT} seconds"),
        ));
    }
    Ok(timeout)
}

fn check_memory(memory: i64) -> AppResult<i64> {
    if !(MIN_MEMORY..=MAX_MEMORY).contains(&memory) {
        return Err(AppError::invalid(
            "memory",
            format!("must be {MIN_MEMORY} to {MAX_MEMORY} MiB"),
        ));
    }
    Ok(memory)
}

/// The scopes a function's own API calls get: known scopes of a project (not
/// `admin`, which reaches every project), each held by the key that sets them, so
/// that no key makes a function that can do more than the key itself.
fn check_scopes(key: &ApiKeyGrant, scopes: &[String]) -> AppResult<Vec<String>> {
    let mut checked: Vec<String> = Vec::with_capacity(scopes.len());
    for name in scopes {
        let scope = Scope::from_name(name).ok_or_else(|| AppError::Invalid {
            code: codes::INVALID_SCOPE,
            field: "scopes".into(),
            reason: format!(
                "`{}` is not a scope",
                name.chars().take(64).collect::<String>()
            ),
        })?;
        if scope == Scope::Admin {
            return Err(AppError::Invalid {
                code: codes::INVALID_SCOPE,
                field: "scopes".into(),
                reason: "a function cannot hold `admin`".into(),
            });
        }
        if !key.holds(scope) {
            return Err(AppError::PermissionDenied {
                reason: format!(
                    "a key cannot give a function the scope `{name}`, which it does not hold"
                ),
            });
        }
        if !checked.contains(name) {
            checked.push(name.clone());
        }
    }
    Ok(checked)
}

/// What a key hands on to a function it changes, and the function's scopes it
/// was checked against: the change is written only while they are still the
/// function's ([`record`]).
struct Vouched {
    reach: Delegation,
    scopes: Vec<String>,
}

/// What `key` hands on to a function whose code or configuration it changes: it
/// must hold every scope the function holds (else its code could do, with them,
/// what the key cannot), and from now on the function is triggered by the events
/// the key may read, with scopes that last as long as the key.
fn vouch(key: &ApiKeyGrant, function: &Function) -> AppResult<Vouched> {
    if let Some(missing) = function.scopes.iter().find(|name| !key.holds_named(name)) {
        return Err(AppError::PermissionDenied {
            reason: format!(
                "the function holds the scope `{missing}`, which this key does not: only a key \
                 holding all of its scopes may change it"
            ),
        });
    }
    Ok(Vouched {
        reach: Delegation::of(key),
        scopes: function.scopes.clone(),
    })
}

/// The answer when the function's scopes changed between the check and the write.
fn changed_meanwhile() -> AppError {
    AppError::Invalid {
        code: codes::FUNCTION_CHANGED,
        field: "functionId".into(),
        reason: "the function's scopes were changed by another request at the same time; try again"
            .into(),
    }
}

/// Records, in `conn`'s transaction, who changed what the function runs.
async fn record(
    conn: &mut sqlx::AnyConnection,
    project_id: &str,
    function_id: &str,
    vouched: &Vouched,
) -> AppResult<()> {
    if store::set_reach(
        conn,
        project_id,
        function_id,
        &vouched.reach,
        &vouched.scopes,
    )
    .await?
    {
        Ok(())
    } else {
        Err(changed_meanwhile())
    }
}

/// The schedule row of a function: ids of at most 64 bytes, whatever the
/// project's and function's ids.
pub fn schedule_id(project_id: &str, function_id: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{project_id}\0{function_id}").as_bytes());
    format!("functions:{}", &hex::encode(digest)[..40])
}

/// Makes the jobs schedule follow the function's (set, changed or removed), in
/// the transaction that writes the function: a schedule written after it
/// commits would be missing for good should the server die in between.
async fn sync_schedule(
    state: &AppState,
    conn: &mut sqlx::AnyConnection,
    function: &Function,
) -> AppResult<()> {
    let id = schedule_id(&function.project_id, &function.id);
    let result = match &function.schedule {
        Some(cron) => {
            crate::jobs::Jobs::schedule_in(
                conn,
                state,
                &id,
                &function.project_id,
                SCHEDULE_KIND,
                serde_json::json!({ "functionId": function.id }),
                cron,
            )
            .await
        }
        None => crate::jobs::Jobs::unschedule_in(conn, &id).await,
    };
    result.map_err(AppError::Internal)
}

fn function_event(function: &Function, action: &str) -> BusMessage {
    BusMessage::Event(Event {
        channels: vec!["functions".into(), format!("functions.{}", function.id)],
        key_scope: FunctionsRead::NAME.into(),
        ..Event::change(
            &function.project_id,
            &format!("functions.{}", function.id),
            "functions.*",
            action,
            super::schema::function_json(function),
        )
    })
}

/// Creates a function. `key` is the caller's: the function's scopes must be its.
pub async fn create(
    state: &AppState,
    grant: &Grant<FunctionsWrite>,
    key: &ApiKeyGrant,
    new: NewFunction,
) -> AppResult<Function> {
    let id = ids::resolve("id", new.id.as_deref())?;
    check_name(&new.name)?;
    check_entrypoint(&new.entrypoint)?;
    let now = now_millis();
    let function = Function {
        id,
        project_id: grant.project().to_string(),
        name: new.name,
        runtime: "js".into(),
        entrypoint: new.entrypoint,
        execute: check_roles(&new.execute)?,
        events: check_events(&new.events)?,
        schedule: check_schedule(new.schedule)?,
        timeout: check_timeout(new.timeout.unwrap_or(DEFAULT_TIMEOUT))?,
        memory: check_memory(new.memory.unwrap_or(DEFAULT_MEMORY))?,
        enabled: new.enabled.unwrap_or(true),
        warm: new.warm.unwrap_or(false),
        logging: new.logging.unwrap_or(true),
        scopes: check_scopes(key, &new.scopes)?,
        reach: Delegation::of(key),
        deployment_id: None,
        created_at: now,
        updated_at: now,
    };
    let mut tx = state.db.pool().begin().await?;
    store::insert(&mut *tx, &function)
        .await
        .conflict_as("function", &function.id)?;
    sync_schedule(state, &mut tx, &function).await?;
    log::commit(&state.bus, tx, vec![function_event(&function, "create")]).await?;
    tracing::info!(function = %function.id, project = %function.project_id, "function created");
    Ok(function)
}

async fn load(state: &AppState, project_id: &str, id: &str) -> AppResult<Function> {
    ids::validate("functionId", id).map_err(|_| not_found(id))?;
    store::find(state.db.pool(), project_id, id)
        .await?
        .ok_or_else(|| not_found(id))
}

pub async fn update(
    state: &AppState,
    grant: &Grant<FunctionsWrite>,
    key: &ApiKeyGrant,
    id: &str,
    change: FunctionChange,
) -> AppResult<Function> {
    let mut function = load(state, grant.project(), id).await?;
    let vouched = vouch(key, &function)?;
    function.reach = vouched.reach.clone();
    if let Some(name) = change.name {
        check_name(&name)?;
        function.name = name;
    }
    if let Some(entrypoint) = change.entrypoint {
        check_entrypoint(&entrypoint)?;
        function.entrypoint = entrypoint;
    }
    if let Some(execute) = change.execute {
        function.execute = check_roles(&execute)?;
    }
    if let Some(events) = change.events {
        function.events = check_events(&events)?;
    }
    if change.schedule.is_some() {
        function.schedule = check_schedule(change.schedule)?;
    }
    if let Some(timeout) = change.timeout {
        function.timeout = check_timeout(timeout)?;
    }
    if let Some(memory) = change.memory {
        function.memory = check_memory(memory)?;
    }
    if let Some(enabled) = change.enabled {
        function.enabled = enabled;
    }
    if let Some(warm) = change.warm {
        function.warm = warm;
    }
    if let Some(logging) = change.logging {
        function.logging = logging;
    }
    if let Some(scopes) = change.scopes {
        function.scopes = check_scopes(key, &scopes)?;
    }
    function.updated_at = now_millis();
    let mut tx = state.db.pool().begin().await?;
    if !store::update(&mut *tx, &function, &vouched.scopes).await? {
        return Err(changed_meanwhile());
    }
    sync_schedule(state, &mut tx, &function).await?;
    log::commit(&state.bus, tx, vec![function_event(&function, "update")]).await?;
    state
        .functions
        .function_changed(&function.project_id, Some(&function.id));
    Ok(function)
}

/// Deletes a function with its variables, deployments, schedule and executions.
pub async fn delete(
    state: &AppState,
    grant: &Grant<FunctionsWrite>,
    id: &str,
) -> AppResult<Function> {
    let function = load(state, grant.project(), id).await?;
    let mut tx = state.db.pool().begin().await?;
    if !store::delete(&mut *tx, grant.project(), id).await? {
        return Err(not_found(id));
    }
    // In the delete's transaction: a record written behind its response either
    // committed before (and goes here) or finds the function gone. Those yet to
    // end are announced as deleted: their watchers would otherwise wait for an
    // end that never comes (a running one's end finds no record).
    let pending =
        store::pending_executions_of(&mut *tx, state.db.dialect(), grant.project(), id).await?;
    store::delete_executions_of(&mut *tx, grant.project(), id).await?;
    let mut messages: Vec<_> = pending
        .iter()
        .map(|execution| execution_event(execution, "delete"))
        .collect();
    messages.push(function_event(&function, "delete"));
    log::commit(&state.bus, tx, messages).await?;
    state.functions.function_changed(grant.project(), Some(id));
    if let Some(deployment) = &function.deployment_id {
        state.functions.forget(grant.project(), deployment);
    }
    let schedule = schedule_id(grant.project(), id);
    if let Err(err) = state.jobs.unschedule(state, &schedule).await {
        // The schedule's next tick finds the function gone and removes it then.
        tracing::warn!(error = %err, "cannot remove a deleted function's schedule");
    }
    Ok(function)
}

pub async fn get(state: &AppState, grant: &Grant<FunctionsRead>, id: &str) -> AppResult<Function> {
    load(state, grant.project(), id).await
}

pub async fn list(
    state: &AppState,
    grant: &Grant<FunctionsRead>,
    page: &Page,
    with_total: bool,
) -> AppResult<(Vec<Function>, i64)> {
    let functions = store::list(state.db.pool(), grant.project(), page).await?;
    let total = if with_total {
        store::count(state.db.pool(), grant.project()).await?
    } else {
        0
    };
    Ok((functions, total))
}

// ---------------------------------------------------------------------------
// Variables

fn invalid_variable(field: &str, reason: String) -> AppError {
    AppError::Invalid {
        code: codes::INVALID_VARIABLE,
        field: field.into(),
        reason,
    }
}

fn check_variable_key(key: &str) -> AppResult<()> {
    if key.is_empty()
        || key.len() > MAX_VARIABLE_KEY
        || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        || key.as_bytes()[0].is_ascii_digit()
    {
        return Err(invalid_variable(
            "key",
            format!("a key has 1 to {MAX_VARIABLE_KEY} of `A-Za-z0-9_`, not starting with a digit"),
        ));
    }
    if is_reserved_variable(key) {
        return Err(invalid_variable(
            "key",
            "Nimbus sets `ID`, `NAME`, `DEPLOYMENT`, `PROJECT_ID`, `RUNTIME_NAME` and `MEMORY` \
             after `NIMBUS_FUNCTION_` and `APPWRITE_FUNCTION_` for every execution"
                .into(),
        ));
    }
    Ok(())
}

/// The value fits alone, and with the function's other values.
async fn check_variable_value(
    state: &AppState,
    project_id: &str,
    function_id: &str,
    key: &str,
    value: &str,
) -> AppResult<()> {
    if value.len() > MAX_VARIABLE_BYTES {
        return Err(invalid_variable(
            "value",
            format!("a value is at most {MAX_VARIABLE_BYTES} bytes"),
        ));
    }
    let others: i64 = store::variables(state.db.pool(), project_id, function_id)
        .await?
        .iter()
        .filter(|row| row.variable.key != key)
        .map(|row| row.variable.size)
        .sum();
    if others as usize + value.len() > MAX_VARIABLES_BYTES {
        return Err(invalid_variable(
            "value",
            format!("a function's values are at most {MAX_VARIABLES_BYTES} bytes together"),
        ));
    }
    Ok(())
}

pub async fn variables(
    state: &AppState,
    grant: &Grant<FunctionsRead>,
    function_id: &str,
) -> AppResult<Vec<Variable>> {
    load(state, grant.project(), function_id).await?;
    Ok(
        store::variables(state.db.pool(), grant.project(), function_id)
            .await?
            .into_iter()
            .map(|row| row.variable)
            .collect(),
    )
}

/// One variable of a function, without its value.
pub async fn variable(
    state: &AppState,
    grant: &Grant<FunctionsRead>,
    function_id: &str,
    key: &str,
) -> AppResult<Variable> {
    variables(state, grant, function_id)
        .await?
        .into_iter()
        .find(|variable| variable.key == key)
        .ok_or_else(|| AppError::NotFound {
            what: "variable",
            id: key.chars().take(64).collect(),
        })
}

pub async fn create_variable(
    state: &AppState,
    grant: &Grant<FunctionsWrite>,
    by: &ApiKeyGrant,
    function_id: &str,
    key: &str,
    value: &str,
) -> AppResult<Variable> {
    // The code reads its variables: changing them is changing the function.
    let vouched = vouch(by, &load(state, grant.project(), function_id).await?)?;
    check_variable_key(key)?;
    check_variable_value(state, grant.project(), function_id, key, value).await?;
    let now = now_millis();
    let variable = Variable {
        function_id: function_id.to_string(),
        key: key.to_string(),
        size: value.len() as i64,
        created_at: now,
        updated_at: now,
    };
    let mut tx = state.db.pool().begin().await?;
    store::insert_variable(
        &mut *tx,
        grant.project(),
        &variable,
        &sealer(state).seal(value),
    )
    .await
    .conflict_as("variable", key)?;
    variable_committed(state, grant.project(), tx, &variable, &vouched, "create").await?;
    Ok(variable)
}

pub async fn update_variable(
    state: &AppState,
    grant: &Grant<FunctionsWrite>,
    by: &ApiKeyGrant,
    function_id: &str,
    key: &str,
    value: &str,
) -> AppResult<Variable> {
    // The code reads its variables: changing them is changing the function.
    let vouched = vouch(by, &load(state, grant.project(), function_id).await?)?;
    let missing = || AppError::NotFound {
        what: "variable",
        id: key.to_string(),
    };
    let mut variable = store::variables(state.db.pool(), grant.project(), function_id)
        .await?
        .into_iter()
        .map(|row| row.variable)
        .find(|v| v.key == key)
        .ok_or_else(missing)?;
    check_variable_value(state, grant.project(), function_id, key, value).await?;
    variable.size = value.len() as i64;
    variable.updated_at = now_millis();
    let mut tx = state.db.pool().begin().await?;
    if !store::update_variable(
        &mut *tx,
        grant.project(),
        &variable,
        &sealer(state).seal(value),
    )
    .await?
    {
        return Err(missing());
    }
    variable_committed(state, grant.project(), tx, &variable, &vouched, "update").await?;
    Ok(variable)
}

pub async fn delete_variable(
    state: &AppState,
    grant: &Grant<FunctionsWrite>,
    by: &ApiKeyGrant,
    function_id: &str,
    key: &str,
) -> AppResult<()> {
    // The code reads its variables: changing them is changing the function.
    let vouched = vouch(by, &load(state, grant.project(), function_id).await?)?;
    let mut variable = store::variables(state.db.pool(), grant.project(), function_id)
        .await?
        .into_iter()
        .map(|row| row.variable)
        .find(|v| v.key == key)
        .ok_or_else(|| AppError::NotFound {
            what: "variable",
            id: key.to_string(),
        })?;
    let mut tx = state.db.pool().begin().await?;
    if !store::delete_variable(&mut *tx, grant.project(), function_id, key).await? {
        return Err(AppError::NotFound {
            what: "variable",
            id: key.to_string(),
        });
    }
    variable.updated_at = now_millis();
    variable_committed(state, grant.project(), tx, &variable, &vouched, "delete").await?;
    Ok(())
}

/// Commits a variable's change with its event, which tells every replica to
/// read the function's variables again (this one at once), and who changed it.
async fn variable_committed(
    state: &AppState,
    project_id: &str,
    mut tx: sqlx::Transaction<'static, sqlx::Any>,
    variable: &Variable,
    vouched: &Vouched,
    action: &str,
) -> AppResult<()> {
    record(&mut tx, project_id, &variable.function_id, vouched).await?;
    let name = format!(
        "functions.{}.variables.{}",
        variable.function_id, variable.key
    );
    let event = BusMessage::Event(Event {
        channels: vec![
            "functions".into(),
            format!("functions.{}", variable.function_id),
        ],
        key_scope: FunctionsRead::NAME.into(),
        ..Event::change(
            project_id,
            &name,
            "functions.*.variables.*",
            action,
            super::schema::variable_json(variable),
        )
    });
    log::commit(&state.bus, tx, vec![event]).await?;
    state
        .functions
        .function_changed(project_id, Some(&variable.function_id));
    Ok(())
}

/// The function's variables, opened, for its `env`: those kept ready with this
/// very function when they are, else from the database; and the warm context
/// an execution of `deployment_id` runs in, when the function is warm and kept
/// ready (a function read apart from the cache runs in a fresh context).
pub(super) async fn environment(
    state: &AppState,
    function: &Function,
    deployment_id: &str,
) -> AppResult<(
    std::sync::Arc<BTreeMap<String, String>>,
    Option<crate::sandbox::WarmKey>,
)> {
    match state.functions.ready(&function.project_id, &function.id) {
        Some(ready) if ready.function == *function => {
            Ok((ready.env.clone(), ready.warm_key(deployment_id)))
        }
        _ => Ok((open_variables(state, function).await?.into(), None)),
    }
}

/// The function `id` of a project with its variables opened: kept on this replica
/// until a change to either is heard (on any replica, through the event log) or
/// for [`super::READY_TTL`], else read and kept.
pub(super) async fn ready(
    state: &AppState,
    project_id: &str,
    id: &str,
) -> AppResult<std::sync::Arc<super::Ready>> {
    if let Some(ready) = state.functions.ready(project_id, id) {
        return Ok(ready);
    }
    // Boxed: the futures of every execution hold this one, and need not carry
    // the reading's state inline for the few that read.
    Box::pin(read_ready(state, project_id, id)).await
}

/// The function `id` read from the database, and kept ready.
async fn read_ready(
    state: &AppState,
    project_id: &str,
    id: &str,
) -> AppResult<std::sync::Arc<super::Ready>> {
    ids::validate("functionId", id).map_err(|_| not_found(id))?;
    let heard = state.functions.changes_heard();
    let function = store::find(state.db.pool(), project_id, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let env = open_variables(state, &function).await?;
    Ok(state.functions.keep_ready(heard, function, env))
}

/// The function's variables, opened from the database. A value that does not
/// open (sealed under another server secret) is left out, and logged.
async fn open_variables(
    state: &AppState,
    function: &Function,
) -> AppResult<BTreeMap<String, String>> {
    let sealer = sealer(state);
    let mut env = BTreeMap::new();
    for row in store::variables(state.db.pool(), &function.project_id, &function.id).await? {
        match sealer.open(&row.sealed) {
            Ok(value) => {
                // What says which function runs is Nimbus's to set.
                if !is_reserved_variable(&row.variable.key) {
                    env.insert(row.variable.key, value);
                }
            }
            Err(_) => tracing::warn!(
                function = %function.id,
                key = %row.variable.key,
                "a function variable does not open with this server secret"
            ),
        }
    }
    let deployment = function.deployment_id.clone().unwrap_or_default();
    let memory = function.memory.to_string();
    for prefix in RESERVED_PREFIXES {
        for (name, value) in [
            ("ID", &function.id),
            ("NAME", &function.name),
            ("DEPLOYMENT", &deployment),
            ("PROJECT_ID", &function.project_id),
            ("RUNTIME_NAME", &function.runtime),
            ("MEMORY", &memory),
        ] {
            debug_assert!(SET_BY_NIMBUS.contains(&name));
            env.insert(format!("{prefix}{name}"), value.clone());
        }
    }
    Ok(env)
}

/// The prefixes of what Nimbus sets in every function's `env`: its own, and
/// Appwrite's for code written for it.
const RESERVED_PREFIXES: [&str; 2] = ["NIMBUS_FUNCTION_", "APPWRITE_FUNCTION_"];

/// What Nimbus sets after each of [`RESERVED_PREFIXES`].
const SET_BY_NIMBUS: [&str; 6] = [
    "ID",
    "NAME",
    "DEPLOYMENT",
    "PROJECT_ID",
    "RUNTIME_NAME",
    "MEMORY",
];

/// Whether a variable's key is one Nimbus sets itself (`NIMBUS_FUNCTION_ID`,
/// `APPWRITE_FUNCTION_ID`, …): such a variable is not passed on over it. Other
/// names under those prefixes (`APPWRITE_FUNCTION_API_ENDPOINT`) are the user's.
fn is_reserved_variable(key: &str) -> bool {
    RESERVED_PREFIXES
        .iter()
        .filter_map(|prefix| key.strip_prefix(prefix))
        .any(|name| SET_BY_NIMBUS.contains(&name))
}

// ---------------------------------------------------------------------------
// Deployments

fn deployment_invalid(reason: impl Into<String>) -> AppError {
    AppError::Invalid {
        code: codes::DEPLOYMENT_INVALID,
        field: "code".into(),
        reason: reason.into(),
    }
}

/// The modules of an upload: one `.js`/`.mjs` file (named by its file name), or a
/// gzipped tar of `.js`/`.mjs`/`.json` files, within the limits on count and size,
/// with no path leaving the archive.
pub fn unpack(filename: &str, bytes: &[u8]) -> AppResult<BTreeMap<String, String>> {
    let name = filename.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut modules = BTreeMap::new();
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        if bytes.len() > MAX_SOURCE_BYTES {
            return Err(deployment_invalid(format!(
                "the archive is over {MAX_SOURCE_BYTES} bytes"
            )));
        }
        // Reads at most one byte past the limit: a gzip bomb stops there.
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .take(MAX_SOURCE_BYTES as u64 * 2 + 1)
            .read_to_end(&mut unpacked)
            .map_err(|_| deployment_invalid("the archive is not a gzipped tar"))?;
        let mut archive = tar::Archive::new(unpacked.as_slice());
        let entries = archive
            .entries()
            .map_err(|_| deployment_invalid("the archive is not a gzipped tar"))?;
        let mut total = 0usize;
        for entry in entries {
            let mut entry =
                entry.map_err(|_| deployment_invalid("the archive is not a readable tar"))?;
            let kind = entry.header().entry_type();
            let path = entry
                .path()
                .map_err(|_| deployment_invalid("an archive path is not UTF-8"))?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            if kind.is_dir() {
                continue;
            }
            if !kind.is_file() {
                return Err(deployment_invalid(format!(
                    "`{}` is a link or special file; only regular files are taken",
                    path.chars().take(64).collect::<String>()
                )));
            }
            // Metadata files of macOS tar; they carry no code.
            if path.rsplit('/').next().is_some_and(|n| n.starts_with("._")) {
                continue;
            }
            check_module_path(&path).map_err(deployment_invalid)?;
            let size = entry.header().size().unwrap_or(u64::MAX) as usize;
            total = total.saturating_add(size);
            if total > MAX_SOURCE_BYTES {
                return Err(deployment_invalid(format!(
                    "the modules are over {MAX_SOURCE_BYTES} bytes together"
                )));
            }
            if modules.len() >= MAX_MODULES {
                return Err(deployment_invalid(format!("at most {MAX_MODULES} modules")));
            }
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|_| deployment_invalid(format!("`{path}` is not UTF-8 text")))?;
            modules.insert(path, text);
        }
        if modules.is_empty() {
            return Err(deployment_invalid("the archive holds no module"));
        }
        return Ok(modules);
    }
    if !(name.ends_with(".js") || name.ends_with(".mjs")) {
        return Err(deployment_invalid(
            "upload one `.js` or `.mjs` file (an ES module, bundled) or a `.tar.gz` of modules",
        ));
    }
    check_module_path(name).map_err(deployment_invalid)?;
    if bytes.len() > MAX_SOURCE_BYTES {
        return Err(deployment_invalid(format!(
            "the module is over {MAX_SOURCE_BYTES} bytes"
        )));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| deployment_invalid("the file is not UTF-8 text, so not JavaScript"))?;
    if text.contains('\0') {
        return Err(deployment_invalid("the file is binary, not JavaScript"));
    }
    modules.insert(name.to_string(), text.to_string());
    Ok(modules)
}

fn compile_error(err: sandbox::CompileError) -> AppError {
    let place = match (&err.module, err.line) {
        (Some(module), Some(line)) => format!("{module}, line {line}: "),
        (Some(module), None) => format!("{module}: "),
        (None, Some(line)) => format!("line {line}: "),
        (None, None) => String::new(),
    };
    deployment_invalid(format!("{place}{}", err.message))
}

/// Unpacks, checks and compiles an upload (on a blocking thread: compiling is CPU
/// work), stores the program, and activates it when asked. At most
/// `NIMBUS_FUNCTIONS_DEPLOYMENTS_PER_MINUTE` per project, counted before compiling.
pub async fn create_deployment(
    state: &AppState,
    grant: &Grant<FunctionsWrite>,
    key: &ApiKeyGrant,
    function_id: &str,
    filename: String,
    bytes: Vec<u8>,
    activate: bool,
) -> AppResult<Deployment> {
    let function = load(state, grant.project(), function_id).await?;
    let vouched = vouch(key, &function)?;
    // Before the expensive part: compiling costs up to two seconds of CPU.
    let per_minute = state.config.functions_deployments_per_minute;
    if per_minute > 0 {
        let limit = Limit {
            attempts: per_minute,
            window: std::time::Duration::from_secs(60),
        };
        state
            .rate_limiter
            .hit(&format!("deployments:{}", grant.project()), limit)
            .await?;
    }
    let entrypoint = function.entrypoint.clone();
    let source_size = bytes.len() as i64;
    let (program, modules) = tokio::task::spawn_blocking(move || {
        let mut modules = unpack(&filename, &bytes)?;
        // One bundled file is the entrypoint whatever it was called.
        if modules.len() == 1 && !modules.contains_key(&entrypoint) && !filename.contains(".tar") {
            let (_, text) = modules.pop_first().expect("one module");
            modules.insert(entrypoint.clone(), text);
        }
        if !modules.contains_key(&entrypoint) {
            return Err(deployment_invalid(format!(
                "the entrypoint `{entrypoint}` is not among the uploaded modules"
            )));
        }
        let count = modules.len();
        let source = Source {
            modules,
            entrypoint,
        };
        let program = sandbox::compile(&source).map_err(compile_error)?;
        Ok::<_, AppError>((program, count))
    })
    .await
    .map_err(|err| AppError::Internal(anyhow::anyhow!("compiling panicked: {err}")))??;
    let deployment = Deployment {
        id: ids::generate(),
        function_id: function.id.clone(),
        entrypoint: function.entrypoint.clone(),
        source_size,
        modules: modules as i64,
        created_at: now_millis(),
    };
    let mut tx = state.db.pool().begin().await?;
    store::insert_deployment(&mut *tx, grant.project(), &deployment, program.to_bytes()).await?;
    let mut messages = vec![deployment_event(grant.project(), &deployment, "create")];
    if activate {
        store::set_active(
            &mut *tx,
            grant.project(),
            function_id,
            Some(&deployment.id),
            now_millis(),
        )
        .await?;
        record(&mut tx, grant.project(), function_id, &vouched).await?;
        let mut function = function;
        function.deployment_id = Some(deployment.id.clone());
        messages.push(function_event(&function, "update"));
    }
    log::commit(&state.bus, tx, messages).await?;
    if activate {
        state
            .functions
            .function_changed(grant.project(), Some(function_id));
    }
    state
        .functions
        .keep(grant.project(), &deployment.id, program);
    Ok(deployment)
}

fn deployment_event(project_id: &str, deployment: &Deployment, action: &str) -> BusMessage {
    let name = format!(
        "functions.{}.deployments.{}",
        deployment.function_id, deployment.id
    );
    BusMessage::Event(Event {
        channels: vec![
            "functions".into(),
            format!("functions.{}", deployment.function_id),
        ],
        key_scope: FunctionsRead::NAME.into(),
        ..Event::change(
            project_id,
            &name,
            "functions.*.deployments.*",
            action,
            super::schema::deployment_json(deployment),
        )
    })
}

pub async fn deployments(
    state: &AppState,
    grant: &Grant<FunctionsRead>,
    function_id: &str,
    page: &Page,
    with_total: bool,
) -> AppResult<(Vec<Deployment>, i64)> {
    load(state, grant.project(), function_id).await?;
    let pool = state.db.pool();
    let list = store::list_deployments(pool, grant.project(), function_id, page).await?;
    let total = if with_total {
        store::count_deployments(pool, grant.project(), function_id).await?
    } else {
        0
    };
    Ok((list, total))
}

async fn load_deployment(
    state: &AppState,
    project_id: &str,
    function_id: &str,
    id: &str,
) -> AppResult<Deployment> {
    ids::validate("deploymentId", id).map_err(|_| deployment_not_found(id))?;
    store::find_deployment(state.db.pool(), project_id, function_id, id)
        .await?
        .ok_or_else(|| deployment_not_found(id))
}

/// One deployment of a function.
pub async fn deployment(
    state: &AppState,
    grant: &Grant<FunctionsRead>,
    function_id: &str,
    id: &str,
) -> AppResult<Deployment> {
    load(state, grant.project(), function_id).await?;
    load_deployment(state, grant.project(), function_id, id).await
}

/// Makes a deployment the one executions run.
pub async fn activate_deployment(
    state: &AppState,
    grant: &Grant<FunctionsWrite>,
    key: &ApiKeyGrant,
    function_id: &str,
    deployment_id: &str,
) -> AppResult<Function> {
    let mut function = load(state, grant.project(), function_id).await?;
    let vouched = vouch(key, &function)?;
    function.reach = vouched.reach.clone();
    load_deployment(state, grant.project(), function_id, deployment_id).await?;
    function.deployment_id = Some(deployment_id.to_string());
    function.updated_at = now_millis();
    let mut tx = state.db.pool().begin().await?;
    if !store::set_active(
        &mut *tx,
        grant.project(),
        function_id,
        Some(deployment_id),
        function.updated_at,
    )
    .await?
    {
        return Err(not_found(function_id));
    }
    record(&mut tx, grant.project(), function_id, &vouched).await?;
    log::commit(&state.bus, tx, vec![function_event(&function, "update")]).await?;
    state
        .functions
        .function_changed(grant.project(), Some(function_id));
    Ok(function)
}

/// Deletes a deployment. Deleting the active one deactivates the function (as
/// Appwrite does): it runs nothing until another is activated.
pub async fn delete_deployment(
    state: &AppState,
    grant: &Grant<FunctionsWrite>,
    function_id: &str,
    deployment_id: &str,
) -> AppResult<Deployment> {
    let mut function = load(state, grant.project(), function_id).await?;
    let deployment = load_deployment(state, grant.project(), function_id, deployment_id).await?;
    let mut tx = state.db.pool().begin().await?;
    let mut messages = vec![deployment_event(grant.project(), &deployment, "delete")];
    if function.deployment_id.as_deref() == Some(deployment_id) {
        function.deployment_id = None;
        function.updated_at = now_millis();
        store::set_active(
            &mut *tx,
            grant.project(),
            function_id,
            None,
            function.updated_at,
        )
        .await?;
        messages.push(function_event(&function, "update"));
    }
    if !store::delete_deployment(&mut *tx, grant.project(), function_id, deployment_id).await? {
        return Err(deployment_not_found(deployment_id));
    }
    log::commit(&state.bus, tx, messages).await?;
    state
        .functions
        .function_changed(grant.project(), Some(function_id));
    state.functions.forget(grant.project(), deployment_id);
    Ok(deployment)
}

// ---------------------------------------------------------------------------
// Executions

/// How an execution was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `createExecution`.
    Graphql,
    /// The plain HTTP route.
    Http,
    /// A CRON tick.
    Schedule,
    /// An event the function subscribes to.
    Event,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Graphql => "graphql",
            Trigger::Http => "http",
            Trigger::Schedule => "schedule",
            Trigger::Event => "event",
        }
    }
}

/// The request an execution runs with.
#[derive(Debug, Clone, Default)]
pub struct ExecutionRequest {
    pub method: String,
    /// The path, from `/`, with its query string.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Host, scheme and port the guest's `req` shows.
    pub host: String,
    pub scheme: String,
    pub port: u16,
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"];

/// Whether a header is one Nimbus sets for the function (`x-nimbus-user-id`,
/// `x-nimbus-event`, …), or Appwrite's of the same kind, which code ported from it
/// trusts: a caller's own is dropped, never passed on as if Nimbus had set it.
fn is_reserved_header(name: &str) -> bool {
    name.starts_with("x-nimbus-") || name.starts_with("x-appwrite-")
}

/// The request, checked: a known method, a path from `/`, bounded headers with
/// lower-cased names, a body within `NIMBUS_FUNCTIONS_MAX_REQUEST_BYTES`. The
/// caller's reserved headers are dropped and Nimbus's own added: a signed-in
/// caller's id as `x-nimbus-user-id`.
pub fn check_request(
    state: &AppState,
    caller: &Caller,
    mut request: ExecutionRequest,
) -> AppResult<ExecutionRequest> {
    request.method.make_ascii_uppercase();
    if !METHODS.contains(&request.method.as_str()) {
        return Err(AppError::invalid(
            "method",
            format!("one of {}", METHODS.join(", ")),
        ));
    }
    if request.path.is_empty() {
        request.path = "/".into();
    }
    if !request.path.starts_with('/')
        || request.path.len() > MAX_PATH
        || request.path.chars().any(char::is_control)
    {
        return Err(AppError::invalid(
            "path",
            format!("a path starts with `/` and has at most {MAX_PATH} bytes"),
        ));
    }
    let header_bytes: usize = request.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    if request.headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return Err(AppError::invalid(
            "headers",
            format!("at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes together"),
        ));
    }
    for (name, value) in &mut request.headers {
        name.make_ascii_lowercase();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            || value.chars().any(|c| c.is_control() && c != '\t')
        {
            return Err(AppError::invalid(
                "headers",
                "a header name is a token and a value has no control characters",
            ));
        }
    }
    request
        .headers
        .retain(|(name, _)| !is_reserved_header(name));
    if let Some(session) = caller.signed_in()? {
        request.headers.extend([
            ("x-nimbus-user-id".into(), session.user.id.clone()),
            ("x-appwrite-user-id".into(), session.user.id.clone()),
        ]);
    }
    let max = state.config.functions_max_request_bytes;
    if request.body.len() > max {
        return Err(AppError::Invalid {
            code: codes::REQUEST_TOO_LARGE,
            field: "body".into(),
            reason: format!("a function's request body is at most {max} bytes"),
        });
    }
    Ok(request)
}

/// Who started an execution, as the record names them.
fn caller_name(caller: &Caller) -> AppResult<Option<String>> {
    if let Some(key) = caller.key() {
        return Ok(Some(key.actor()));
    }
    Ok(caller
        .signed_in()?
        .map(|session| format!("user:{}", session.user.id)))
}

/// Whether `caller` may execute `function`: a key holding `executions.write`, or
/// a client holding one of the function's execute roles.
fn may_execute(caller: &Caller, function: &Function) -> AppResult<()> {
    if caller.key().is_some() {
        caller.require::<ExecutionsWrite>()?;
        return Ok(());
    }
    // A session owing its second factor runs nothing, not even as a guest: the
    // function would be told (and would record) the user's id.
    caller.signed_in()?;
    may_execute_as(&caller.credential, function)
}

/// Whether a client with `credential` holds one of the function's execute roles:
/// checked when a call is made, and again when a queued call is about to run.
pub(crate) fn may_execute_as(credential: &Credential, function: &Function) -> AppResult<()> {
    let roles = credential.roles();
    let allowed = function
        .execute
        .iter()
        .filter_map(|r| Role::from_str(r).ok())
        .any(|role| roles.contains(&role));
    if allowed {
        return Ok(());
    }
    if matches!(credential, Credential::Anonymous) {
        return Err(AppError::Unauthenticated);
    }
    Err(AppError::PermissionDenied {
        reason: "the function's execute roles do not include the caller".into(),
    })
}

/// The function `id` of the caller's project, kept ready, if the caller may
/// execute it and it can run: enabled, with an active deployment.
pub async fn runnable(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> AppResult<std::sync::Arc<super::Ready>> {
    let ready = ready(state, &caller.project.id, id).await?;
    may_execute(caller, &ready.function)?;
    can_run(&ready.function)?;
    Ok(ready)
}

/// Whether `function` can run now: enabled, with an active deployment. Checked
/// when it is called, and again when a queued call is about to run.
pub(crate) fn can_run(function: &Function) -> AppResult<&str> {
    if !function.enabled {
        return Err(AppError::Invalid {
            code: codes::FUNCTION_DISABLED,
            field: "functionId".into(),
            reason: "the function is disabled".into(),
        });
    }
    function
        .deployment_id
        .as_deref()
        .ok_or_else(|| AppError::Invalid {
            code: codes::DEPLOYMENT_NOT_FOUND,
            field: "functionId".into(),
            reason: "the function has no active deployment".into(),
        })
}

/// Where an execution's realtime events go: the executions channels, to its caller
/// (when a user) and to keys holding `executions.read`.
pub(super) fn execution_event(execution: &Execution, action: &str) -> BusMessage {
    let name = format!(
        "functions.{}.executions.{}",
        execution.function_id, execution.id
    );
    let read_roles = match execution.caller.as_deref() {
        Some(user) if user.starts_with("user:") => vec![user.to_string()],
        _ => Vec::new(),
    };
    BusMessage::Event(Event {
        channels: vec![
            "executions".into(),
            format!("functions.{}.executions", execution.function_id),
            name.clone(),
        ],
        key_scope: ExecutionsRead::NAME.into(),
        read_roles,
        ..Event::change(
            &execution.project_id,
            &name,
            "functions.*.executions.*",
            action,
            super::schema::execution_json(execution),
        )
    })
}

/// A new execution of `function` for `request`, which gets the headers that
/// tell the function how it runs: the trigger and the execution's id, under
/// Nimbus's names and Appwrite's (where `createExecution` is `http`), so that
/// code written for either reads them.
fn new_execution(
    function: &Function,
    caller: Option<String>,
    trigger: Trigger,
    request: &mut ExecutionRequest,
    initial_status: &str,
) -> Execution {
    let now = now_millis();
    let id = ids::generate();
    let appwrite_trigger = match trigger {
        // Appwrite calls a run at a set time a schedule's, whoever asked for it.
        _ if initial_status == status::SCHEDULED => "schedule",
        Trigger::Graphql | Trigger::Http => "http",
        Trigger::Schedule => "schedule",
        Trigger::Event => "event",
    };
    request.headers.extend([
        ("x-nimbus-trigger".to_string(), trigger.as_str().to_string()),
        ("x-nimbus-execution-id".to_string(), id.clone()),
        (
            "x-appwrite-trigger".to_string(),
            appwrite_trigger.to_string(),
        ),
        ("x-appwrite-execution-id".to_string(), id.clone()),
    ]);
    Execution {
        id,
        project_id: function.project_id.clone(),
        function_id: function.id.clone(),
        deployment_id: function.deployment_id.clone().unwrap_or_default(),
        trigger: trigger.as_str().into(),
        status: initial_status.into(),
        caller,
        request_method: request.method.clone(),
        request_path: request.path.clone(),
        request_headers: request.headers.clone(),
        response_status: 0,
        response_headers: Vec::new(),
        response_body: Bytes::new(),
        logs: String::new(),
        errors: String::new(),
        logs_truncated: false,
        failure: None,
        duration_ms: 0,
        scheduled_at: None,
        created_at: now,
        updated_at: now,
    }
}

/// Whether a synchronous execution of `function` that ended as `execution` did
/// is recorded: always, unless it succeeded and the function keeps no record of
/// successes (`logging: false`, ADR 31).
pub fn is_recorded(function: &Function, execution: &Execution) -> bool {
    function.logging || execution.status != status::COMPLETED
}

/// Runs the function kept `ready` now for `caller` and records it (unless
/// [`is_recorded`] says not, or a call over the HTTP route from `client`, its
/// limit key, has spent its [`RECORDS_PER_CLIENT`]): the execution, with its
/// whole response body (the record keeps the first [`KEPT_RESPONSE_BYTES`]), and
/// whether it was recorded.
pub async fn execute_now(
    state: &AppState,
    caller: &Caller,
    ready: &super::Ready,
    trigger: Trigger,
    request: ExecutionRequest,
    client: Option<&str>,
) -> AppResult<(std::sync::Arc<Execution>, bool)> {
    let function = &ready.function;
    let mut request = request;
    let mut execution = new_execution(
        function,
        caller_name(caller)?,
        trigger,
        &mut request,
        status::PROCESSING,
    );
    let identity = execute::Identity::of(caller, ready);
    let outcome = execute::run(state, ready, identity, request).await?;
    execute::apply(&mut execution, outcome);
    let execution = std::sync::Arc::new(execution);
    let recorded = is_recorded(function, &execution)
        && match client {
            Some(client) => may_record_call(state, caller, client).await,
            None => true,
        };
    if !recorded {
        // Usage counts executions by their `create` events; this one has none.
        if let Some(counters) = state.usage.project(&function.project_id) {
            counters.unrecorded_execution();
        }
        return Ok((execution, false));
    }
    // Over plain HTTP the record is written behind the response (ADR 24); a
    // `createExecution` caller may ask for it by id at once, so it is written first.
    let record = super::QueuedRecord {
        execution: execution.clone(),
        function_created_at: function.created_at,
    };
    let record = match trigger {
        Trigger::Http => match state.functions.record_later(record) {
            Ok(()) => return Ok((execution, true)),
            Err(record) => record,
        },
        _ => record,
    };
    // Boxed, as the path an HTTP execution rarely takes.
    Box::pin(record_now(state, &record)).await?;
    Ok((execution, true))
}

/// Records of calls over a function's HTTP route one client (a user, or a
/// guest's address) leaves in a minute: each keeps up to 16 KiB of the caller's
/// headers and 64 KiB each of body, response and logs for the retention's days,
/// so a client calling a public function in a loop must not fill the disk.
/// Calls past it run and answer as before, unrecorded.
pub const RECORDS_PER_CLIENT: crate::auth::rate_limit::Limit =
    crate::auth::rate_limit::Limit::per_minute(120);

/// Whether a call over the HTTP route by `caller` from client address `client`
/// (its limit key) may leave a record: keys always; clients within
/// [`RECORDS_PER_CLIENT`]. Asked only when the call would be recorded.
async fn may_record_call(state: &AppState, caller: &Caller, client: &str) -> bool {
    let who = match &caller.credential {
        Credential::Key(_) => return true,
        Credential::Session(session) => format!("user:{}", session.user.id),
        Credential::Anonymous => format!("client:{client}"),
    };
    let key = format!("function-records:{}:{who}", caller.project.id);
    match state.rate_limiter.hit(&key, RECORDS_PER_CLIENT).await {
        Ok(()) => true,
        Err(_) => {
            tracing::debug!(project = %caller.project.id, %who, "function call not recorded: the client's records per minute are spent");
            false
        }
    }
}

/// Writes the record of a sync execution now, with its `create` event.
async fn record_now(state: &AppState, record: &super::QueuedRecord) -> AppResult<()> {
    let mut tx = state.db.pool().begin().await?;
    // The function may have been deleted while it ran: then there is nothing to
    // record it under.
    if store::insert_execution_of(
        &mut *tx,
        &record.execution,
        record.function_created_at,
        None,
    )
    .await?
    {
        log::commit(&state.bus, tx, vec![created_event(&record.execution)]).await?;
    }
    Ok(())
}

/// The `create` event of a sync execution's record, caused by that execution.
fn created_event(execution: &Execution) -> BusMessage {
    let mut message = execution_event(execution, "create");
    if let BusMessage::Event(event) = &mut message {
        event.cause = Some(Cause {
            function_id: execution.function_id.clone(),
            depth: 1,
        });
    }
    message
}

/// Writes the records of sync executions queued behind their responses, in one
/// transaction per batch (as many as wait, up to [`super::RECORDS_PER_BATCH`]),
/// until `stop`; then writes what is still queued, while new records are written
/// by their requests. A batch that fails is tried again record by record, so one
/// bad record costs only itself; a record that cannot be written is logged.
pub async fn record_forever(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(mut queue) = state.functions.take_records() else {
        return;
    };
    let mut batch = Vec::with_capacity(super::RECORDS_PER_BATCH);
    loop {
        tokio::select! {
            got = queue.recv_many(&mut batch, super::RECORDS_PER_BATCH) => {
                if got == 0 {
                    return;
                }
            }
            _ = stop.changed() => break,
        }
        write_records(&state, &mut batch).await;
    }
    state.functions.stop_recording_later();
    queue.close();
    while queue.recv_many(&mut batch, super::RECORDS_PER_BATCH).await > 0 {
        write_records(&state, &mut batch).await;
    }
}

async fn write_records(state: &AppState, batch: &mut Vec<super::QueuedRecord>) {
    async fn write(state: &AppState, records: &[super::QueuedRecord]) -> AppResult<()> {
        let mut tx = state.db.pool().begin().await?;
        let rows: Vec<_> = records
            .iter()
            .map(|r| (&*r.execution, r.function_created_at))
            .collect();
        // A record of a function deleted since it ran is dropped here (and one
        // written just before the delete goes with the function's executions).
        let written: std::collections::HashSet<String> =
            store::insert_executions_of(&mut tx, &rows)
                .await?
                .into_iter()
                .collect();
        let events = records
            .iter()
            .filter(|r| written.contains(&r.execution.id))
            .map(|r| created_event(&r.execution))
            .collect();
        log::commit(&state.bus, tx, events).await?;
        Ok(())
    }
    metrics::histogram!("nimbus_function_records_per_batch").record(batch.len() as f64);
    if batch.len() > 1 && write(state, batch).await.is_ok() {
        batch.clear();
        return;
    }
    for record in batch.drain(..) {
        if let Err(err) = write(state, std::slice::from_ref(&record)).await {
            metrics::counter!("nimbus_function_records_lost_total").increment(1);
            tracing::error!(
                error = %err.message(),
                project = %record.execution.project_id,
                function = %record.execution.function_id,
                execution = %record.execution.id,
                "an execution record could not be written"
            );
        }
    }
}

/// Most executions one user (or all guests together) may have scheduled and
/// not yet run in a project; keys are bounded by the project's
/// `NIMBUS_FUNCTIONS_MAX_SCHEDULED` only.
pub const MAX_SCHEDULED_PER_CALLER: usize = 100;

/// Largest request body a scheduled execution keeps until it runs.
pub const MAX_SCHEDULED_BODY: usize = 64 * 1024;

/// Records an execution as `waiting` (`scheduled` when it runs `at` a set
/// time) and queues the job that runs it, in one transaction. A scheduled one
/// keeps a body of at most [`MAX_SCHEDULED_BODY`], and one started with a JWT
/// runs before the JWT ends.
pub async fn execute_later(
    state: &AppState,
    caller: &Caller,
    function: &Function,
    trigger: Trigger,
    request: ExecutionRequest,
    at: Option<i64>,
) -> AppResult<Execution> {
    if let Some(at) = at {
        if request.body.len() > MAX_SCHEDULED_BODY {
            return Err(AppError::invalid(
                "body",
                format!("a scheduled execution keeps a body of at most {MAX_SCHEDULED_BODY} bytes"),
            ));
        }
        // With a minute to spare: the job may start a little after its time.
        if let Some(jwt_end) = caller.signed_in()?.and_then(|s| s.jwt_expires_at)
            && at >= jwt_end - 60_000
        {
            return Err(AppError::invalid(
                "scheduledAt",
                "started with a JWT, an execution runs before the JWT ends",
            ));
        }
    }
    let mut request = request;
    let mut execution = new_execution(
        function,
        caller_name(caller)?,
        trigger,
        &mut request,
        if at.is_some() {
            status::SCHEDULED
        } else {
            status::WAITING
        },
    );
    execution.scheduled_at = at;
    // A user's execution runs as that user when its job does: the job names the
    // session (ids, no secret), checked again then.
    // Started with a JWT, it runs within the JWT's minutes, not the session's.
    let on_behalf = caller.signed_in()?.map(|session| {
        serde_json::json!({
            "userId": session.user.id,
            "sessionId": session.session.id,
            "jwtExpiresAt": session.jwt_expires_at,
        })
    });
    queue(
        state,
        &execution,
        function.created_at,
        &request.body,
        on_behalf,
    )
    .await?;
    Ok(execution)
}

async fn queue(
    state: &AppState,
    execution: &Execution,
    function_created_at: i64,
    body: &[u8],
    on_behalf: Option<serde_json::Value>,
) -> AppResult<()> {
    // Queued by another execution (`createExecution` through `nimbus.graphql`): one
    // level deeper in its chain, which ends at the same depth as event triggers, so
    // a function that queues itself cannot run forever.
    let depth = CAUSE.try_with(|cause| cause.depth + 1).unwrap_or(1);
    if depth > MAX_TRIGGER_DEPTH {
        return Err(AppError::NotAllowed(format!(
            "functions that run each other form chains of at most {MAX_TRIGGER_DEPTH}"
        )));
    }
    // Each call may queue another (a function's own calls, too, up to the chain's
    // depth): what a project keeps waiting is bounded, not only how deep it goes.
    // Counted before the transaction, whose first statement must be its write (a
    // SQLite transaction that reads first cannot always write after); calls at the
    // same moment may pass the bound by as many as they are. Scheduled calls have
    // their own bounds (they may wait a year), per project and per caller; a
    // schedule's tick is never refused.
    let pool = state.db.pool();
    let project = execution.project_id.as_str();
    if execution.status == status::SCHEDULED {
        let most = state.config.functions_max_scheduled;
        if store::count_in_status(pool, project, status::SCHEDULED, None, most).await? >= most {
            return Err(AppError::TooManyExecutions { retry_after: 60 });
        }
        // Users one by one, guests together; keys (a server's, the console's, a
        // function's own) only by the project's bound.
        let by_client = execution
            .caller
            .as_deref()
            .is_none_or(|c| c.starts_with("user:"));
        if by_client {
            let caller = execution.caller.as_deref().unwrap_or_default();
            let own = store::count_in_status(
                pool,
                project,
                status::SCHEDULED,
                Some(caller),
                MAX_SCHEDULED_PER_CALLER,
            )
            .await?;
            if own >= MAX_SCHEDULED_PER_CALLER {
                return Err(AppError::TooManyExecutions { retry_after: 60 });
            }
        }
    } else if execution.trigger != Trigger::Schedule.as_str() {
        let most = state.config.functions_max_waiting;
        if store::count_in_status(pool, project, status::WAITING, None, most).await? >= most {
            return Err(AppError::TooManyExecutions { retry_after: 60 });
        }
    }
    let mut tx = state.db.pool().begin().await?;
    // A function deleted since it was read takes no new execution.
    if !store::insert_execution_of(&mut *tx, execution, function_created_at, Some(body)).await? {
        return Err(not_found(&execution.function_id));
    }
    let job = NewJob {
        project_id: execution.project_id.clone(),
        kind: EXECUTE_KIND,
        payload: serde_json::json!({
            "functionId": execution.function_id,
            "executionId": execution.id,
            "depth": depth,
            "caller": on_behalf,
        }),
        run_at: execution.scheduled_at,
        dedupe_key: Some(format!(
            "execution:{}:{}",
            execution.project_id, execution.id
        )),
    };
    state
        .jobs
        .enqueue(&mut *tx, state.db.dialect(), job)
        .await?;
    let cause = Cause {
        function_id: execution.function_id.clone(),
        depth,
    };
    CAUSE
        .scope(
            cause,
            log::commit(&state.bus, tx, vec![execution_event(execution, "create")]),
        )
        .await?;
    state.jobs.wake();
    Ok(())
}

/// Those of `projects` whose events may trigger a function ([`queue_triggered`]):
/// the event log consumer passes over the others' events unread.
pub async fn projects_triggering(
    state: &AppState,
    projects: &[&str],
) -> AppResult<std::collections::HashSet<String>> {
    Ok(store::with_subscribed(state.db.pool(), projects).await?)
}

/// The subscribed functions of the projects seen so far: read once per project
/// for a batch of events.
#[derive(Default)]
pub struct Subscribed(std::collections::HashMap<String, Vec<Function>>);

/// Queues one execution of each function of `event`'s project that subscribes to
/// it (enabled, with an active deployment), through `conn` (the event consumer's
/// transaction): the one entry point from logged events to functions. A job is
/// keyed by function and event id, so an event handled twice runs each function
/// once. A function is not triggered by a change its own execution made (as in
/// Appwrite), nor past [`MAX_TRIGGER_DEPTH`]. Answers the execution events to log
/// with the transaction.
pub async fn queue_triggered(
    state: &AppState,
    conn: &mut sqlx::AnyConnection,
    subscribed: &mut Subscribed,
    event: &Event,
) -> AppResult<Vec<BusMessage>> {
    let Some(name) = event.events.first() else {
        return Ok(Vec::new());
    };
    let depth = event.cause.as_ref().map_or(1, |cause| cause.depth + 1);
    if !subscribed.0.contains_key(&event.project_id) {
        let functions = store::subscribed(&mut *conn, &event.project_id).await?;
        subscribed.0.insert(event.project_id.clone(), functions);
    }
    let mut messages = Vec::new();
    // Serialised once, for the first function it triggers.
    let mut body: Option<Vec<u8>> = None;
    for function in &subscribed.0[&event.project_id] {
        if !function
            .events
            .iter()
            .any(|p| crate::bus::patterns::matches(p, name))
        {
            continue;
        }
        if event
            .cause
            .as_ref()
            .is_some_and(|cause| cause.function_id == function.id)
            || !function.reach.covers(&event.key_scope, event.timestamp)
        {
            continue;
        }
        if depth > MAX_TRIGGER_DEPTH {
            tracing::warn!(
                function = %function.id,
                project = %function.project_id,
                event = %name,
                "a chain of event triggers reached its depth limit; not triggered"
            );
            metrics::counter!("nimbus_function_triggers_dropped_total").increment(1);
            continue;
        }
        let body = body.get_or_insert_with(|| event_body(state, event));
        let mut headers = vec![
            ("content-type".into(), "application/json".into()),
            ("x-nimbus-event".into(), name.clone()),
            ("x-appwrite-event".into(), name.clone()),
        ];
        if body.is_empty() {
            headers.push(("x-nimbus-event-body".into(), "omitted".into()));
        }
        let request = ExecutionRequest {
            method: "POST".into(),
            path: "/".into(),
            headers,
            ..ExecutionRequest::default()
        };
        let mut request = request;
        let execution = new_execution(
            function,
            None,
            Trigger::Event,
            &mut request,
            status::WAITING,
        );
        let job = NewJob {
            project_id: execution.project_id.clone(),
            kind: EXECUTE_KIND,
            payload: serde_json::json!({
                "functionId": execution.function_id,
                "executionId": execution.id,
                "depth": depth,
            }),
            run_at: None,
            dedupe_key: Some(format!(
                "trigger:{}:{}:{}",
                execution.project_id, execution.function_id, event.id
            )),
        };
        if state
            .jobs
            .enqueue(&mut *conn, state.db.dialect(), job)
            .await?
            .is_none()
        {
            // Queued when this event was handled before.
            continue;
        }
        // A function deleted since it was read is not run: its job finds no
        // execution and ends.
        if !store::insert_execution_of(&mut *conn, &execution, function.created_at, Some(body))
            .await?
        {
            continue;
        }
        let mut message = execution_event(&execution, "create");
        if let BusMessage::Event(event) = &mut message {
            event.cause = Some(Cause {
                function_id: function.id.clone(),
                depth,
            });
        }
        messages.push(message);
    }
    Ok(messages)
}

/// The request body of an execution `event` triggers: the event's payload as JSON,
/// or nothing when it is over `NIMBUS_FUNCTIONS_MAX_REQUEST_BYTES` (a function
/// called over HTTP could not be sent it either); the execution then carries
/// `x-nimbus-event-body: omitted` and reads what it needs through `nimbus.graphql`.
fn event_body(state: &AppState, event: &Event) -> Vec<u8> {
    let body = serde_json::to_vec(&event.payload).unwrap_or_default();
    if body.len() > state.config.functions_max_request_bytes {
        return Vec::new();
    }
    body
}

/// Queues a scheduled run of `function` (a CRON tick).
pub(super) async fn execute_scheduled(state: &AppState, function: &Function) -> AppResult<()> {
    let mut request = ExecutionRequest {
        method: "POST".into(),
        path: "/".into(),
        ..ExecutionRequest::default()
    };
    let execution = new_execution(
        function,
        None,
        Trigger::Schedule,
        &mut request,
        status::WAITING,
    );
    queue(state, &execution, function.created_at, &[], None).await
}

/// Who may read `execution`: its caller, or a key holding `executions.read`.
fn may_read(caller: &Caller, execution: &Execution) -> AppResult<()> {
    if caller.key().is_some() {
        caller.require::<ExecutionsRead>()?;
        return Ok(());
    }
    match (caller.signed_in()?, execution.caller.as_deref()) {
        (Some(session), Some(who)) if who == format!("user:{}", session.user.id) => Ok(()),
        _ => Err(execution_not_found(&execution.id)),
    }
}

pub async fn get_execution(
    state: &AppState,
    caller: &Caller,
    function_id: &str,
    id: &str,
) -> AppResult<Execution> {
    ids::validate("executionId", id).map_err(|_| execution_not_found(id))?;
    ids::validate("functionId", function_id).map_err(|_| execution_not_found(id))?;
    let execution = store::find_execution(state.db.pool(), &caller.project.id, function_id, id)
        .await?
        .ok_or_else(|| execution_not_found(id))?;
    may_read(caller, &execution)?;
    Ok(execution)
}

/// Deletes the record of an execution that has ended, with its `delete` event,
/// or cancels one waiting for its scheduled time (its job then finds nothing to
/// run). A queued or running one is refused: it would write its record again as
/// it ends.
pub async fn delete_execution(
    state: &AppState,
    grant: &Grant<FunctionsWrite>,
    function_id: &str,
    id: &str,
) -> AppResult<()> {
    ids::validate("executionId", id).map_err(|_| execution_not_found(id))?;
    load(state, grant.project(), function_id).await?;
    let execution = store::find_execution(state.db.pool(), grant.project(), function_id, id)
        .await?
        .ok_or_else(|| execution_not_found(id))?;
    if execution.status == status::WAITING || execution.status == status::PROCESSING {
        return Err(AppError::NotAllowed(
            "the execution has not ended yet; delete its record once it has".into(),
        ));
    }
    let mut tx = state.db.pool().begin().await?;
    if !store::delete_ended_execution(&mut *tx, grant.project(), function_id, id).await? {
        return Err(execution_not_found(id));
    }
    log::commit(&state.bus, tx, vec![execution_event(&execution, "delete")]).await?;
    Ok(())
}

/// The executions of a function the caller may read: all of them for a key
/// holding `executions.read`, a user's own otherwise (none for a guest).
pub async fn executions(
    state: &AppState,
    caller: &Caller,
    function_id: &str,
    filter: store::ExecutionFilter<'_>,
    page: &Page,
    with_total: bool,
) -> AppResult<(Vec<Execution>, i64)> {
    ids::validate("functionId", function_id).map_err(|_| not_found(function_id))?;
    let own = match &caller.credential {
        Credential::Key(_) => {
            caller.require::<ExecutionsRead>()?;
            None
        }
        Credential::Session(_) => Some(format!("user:{}", caller.require_session()?.user.id)),
        Credential::Anonymous => return Err(AppError::Unauthenticated),
    };
    let pool = state.db.pool();
    let project = &caller.project.id;
    let filter = store::ExecutionFilter {
        caller: own.as_deref(),
        ..filter
    };
    let list = store::list_executions(pool, project, function_id, &filter, page).await?;
    let total = if with_total {
        store::count_executions(pool, project, function_id, &filter).await?
    } else {
        0
    };
    Ok((list, total))
}

/// Forgets the execution records of the grant's deleted project (its functions go
/// with its rows). A failure is logged; pruning takes what is left.
pub async fn forget_project(state: &AppState, admin: &crate::auth::AdminGrant) {
    if let Err(err) = store::delete_project_executions(state.db.pool(), admin.project()).await {
        tracing::warn!(error = %err, "cannot delete a deleted project's function executions");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_names_nimbus_sets_are_reserved() {
        for key in [
            "APPWRITE_FUNCTION_ID",
            "NIMBUS_FUNCTION_DEPLOYMENT",
            "APPWRITE_FUNCTION_MEMORY",
        ] {
            assert!(is_reserved_variable(key), "{key}");
            assert!(check_variable_key(key).is_err(), "{key}");
        }
        for key in [
            "APPWRITE_FUNCTION_API_ENDPOINT",
            "NIMBUS_FUNCTION_IDS",
            "FUNCTION_ID",
            "API_TOKEN",
        ] {
            assert!(!is_reserved_variable(key), "{key}");
            assert!(check_variable_key(key).is_ok(), "{key}");
        }
    }
}
