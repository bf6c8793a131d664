//! API key rules: verifying a presented secret for a project, creating keys with no
//! more power than the creator holds, listing and revoking them, the first admin key,
//! and the realtime events `keys.K.create` / `keys.K.delete`.

use std::collections::BTreeSet;

use crate::AppState;
use crate::auth::scopes::{KeysRead, KeysWrite, Scope, ScopeMarker};
use crate::auth::secrets::SecretKind;
use crate::auth::{ApiKeyGrant, Caller, Grant, secrets};
use crate::bus::{BusMessage, Event, log};
use crate::db::{Page, ids, now_millis};
use crate::error::{AppError, AppResult, codes};
use crate::services::projects::{DEFAULT_PROJECT, service::load_project};

use super::{ApiKey, store};

/// A request to create a key.
#[derive(Debug)]
pub struct NewApiKey {
    pub name: String,
    pub scopes: Vec<String>,
    /// Milliseconds since the epoch after which the key stops working.
    pub expires_at: Option<i64>,
}

const MAX_NAME: usize = 128;
/// Marks in `server_state` that the first admin key was generated.
const FIRST_ADMIN_KEY: &str = "first_admin_key";

/// Verifies `secret` for a request addressing `project_id`.
pub async fn authenticate(
    state: &AppState,
    project_id: &str,
    secret: &str,
) -> AppResult<ApiKeyGrant> {
    let key_id = secrets::id_of(SecretKind::ApiKey, secret).ok_or(AppError::InvalidApiKey)?;
    if ids::validate("key", key_id).is_err() {
        return Err(AppError::InvalidApiKey);
    }
    let row = store::find_key(state.db.pool(), key_id)
        .await?
        .ok_or(AppError::InvalidApiKey)?;
    if !secrets::matches(secret, &row.secret_hash) {
        return Err(AppError::InvalidApiKey);
    }
    let key = row.to_key();
    let grant = ApiKeyGrant {
        key_id: key.id,
        project_id: key.project_id,
        scopes: key.scopes.into_iter().collect::<BTreeSet<_>>(),
        expires_at: key.expires_at,
        handed_on_by: None,
    };
    if grant.project_id != project_id && !grant.is_admin() {
        return Err(AppError::InvalidApiKey);
    }
    if key.expires_at.is_some_and(|at| at <= now_millis()) {
        return Err(AppError::ApiKeyExpired);
    }
    Ok(grant)
}

/// Whether the key `key_id` still exists and has not expired: what it handed on
/// (a signed file URL) holds only as long.
pub async fn key_holds(state: &AppState, key_id: &str) -> AppResult<bool> {
    if ids::validate("key", key_id).is_err() {
        return Ok(false);
    }
    let row = store::find_key(state.db.pool(), key_id).await?;
    Ok(row.is_some_and(|row| row.expires_at.is_none_or(|at| at > now_millis())))
}

/// The scopes a new key asks for, known and each once, by name; or `INVALID_SCOPE`.
fn check_new_key(new: &NewApiKey) -> AppResult<Vec<Scope>> {
    let length = new.name.chars().count();
    if new.name.trim().is_empty() || length > MAX_NAME || new.name.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "name",
            format!("must be 1 to {MAX_NAME} printable characters"),
        ));
    }
    if new.scopes.is_empty() {
        return Err(AppError::Invalid {
            code: codes::INVALID_SCOPE,
            field: "scopes".into(),
            reason: "a key needs at least one scope".into(),
        });
    }
    let mut names = new.scopes.clone();
    names.sort();
    names.dedup();
    let mut scopes = Vec::with_capacity(names.len());
    for name in &names {
        let Some(scope) = Scope::from_name(name) else {
            return Err(AppError::Invalid {
                code: codes::INVALID_SCOPE,
                field: "scopes".into(),
                reason: format!("unknown scope `{name}`; the `apiKeyScopes` query lists them"),
            });
        };
        scopes.push(scope);
    }
    if new.expires_at.is_some_and(|at| at <= now_millis()) {
        return Err(AppError::invalid("expiresAt", "must be in the future"));
    }
    Ok(scopes)
}

/// The project a grant names, which must exist: a key operation on another
/// project than the addressed one names it in its input.
async fn granted_project<S: ScopeMarker>(state: &AppState, grant: &Grant<S>) -> AppResult<String> {
    let id = grant.project();
    load_project(state, id)
        .await?
        .map(|p| p.id)
        .ok_or_else(|| AppError::ProjectNotFound { id: id.to_string() })
}

/// Creates a key in the grant's project on behalf of an API caller holding
/// `keys.write` there. A key can only hand out scopes it holds itself; only
/// `admin` can hand out `admin`.
pub async fn create_key(
    state: &AppState,
    caller: &Caller,
    grant: &Grant<KeysWrite>,
    new: NewApiKey,
) -> AppResult<(ApiKey, String)> {
    if let Some(key) = caller.key()
        && let Some(beyond) = new.scopes.iter().find(|s| !key.holds_named(s))
    {
        return Err(AppError::PermissionDenied {
            reason: format!("a key cannot grant the scope `{beyond}`, which it does not hold"),
        });
    }
    // Nor time it does not have: a key made by an expiring one would otherwise
    // carry its scopes past its end. A console session is the operator's, and
    // ends when they sign out: their keys last as they ask.
    if let Some(key) = caller.key()
        && !key.is_console()
        && let Some(ends) = key.expires_at
        && new.expires_at.is_none_or(|wanted| wanted > ends)
    {
        return Err(AppError::PermissionDenied {
            reason: "a key that expires can create only keys that expire no later than it".into(),
        });
    }
    create_key_as_operator(state, grant.project(), new).await
}

/// Creates a key in `project_id` with no caller check: for the operator's command
/// line and the first start, who own the database anyway.
pub async fn create_key_as_operator(
    state: &AppState,
    project_id: &str,
    new: NewApiKey,
) -> AppResult<(ApiKey, String)> {
    let scopes = check_new_key(&new)?;
    if load_project(state, project_id).await?.is_none() {
        return Err(AppError::ProjectNotFound {
            id: project_id.to_string(),
        });
    }
    let now = now_millis();
    let key = ApiKey {
        id: ids::generate(),
        project_id: project_id.to_string(),
        name: new.name,
        scopes,
        expires_at: new.expires_at,
        created_at: now,
        updated_at: now,
    };
    let (secret, digest) = secrets::new_secret(SecretKind::ApiKey, &key.id);
    let mut tx = state.db.pool().begin().await?;
    store::insert_key(&mut *tx, &key, &digest).await?;
    log::commit(&state.bus, tx, vec![event(&key, "create")]).await?;
    tracing::info!(key = %key.id, project = %key.project_id, "API key created");
    Ok((key, secret))
}

/// The keys of the grant's project.
pub async fn list_keys(
    state: &AppState,
    grant: &Grant<KeysRead>,
    page: &Page,
    with_total: bool,
) -> AppResult<(Vec<ApiKey>, i64)> {
    let project_id = granted_project(state, grant).await?;
    let rows = store::list_keys(state.db.pool(), &project_id, page).await?;
    let total = if with_total {
        store::count_keys(state.db.pool(), &project_id).await?
    } else {
        0
    };
    Ok((rows.iter().map(|r| r.to_key()).collect(), total))
}

/// Revokes a key of the addressed project (any project's, with `admin`) whose
/// scopes the calling key holds as well (only `admin` revokes `admin`). It stops
/// working at once, on every replica: keys are verified against the database on
/// every request.
pub async fn delete_key(
    state: &AppState,
    caller: &Caller,
    grant: &Grant<KeysWrite>,
    id: &str,
) -> AppResult<ApiKey> {
    let not_found = || AppError::NotFound {
        what: "API key",
        id: id.to_string(),
    };
    ids::validate("id", id)?;
    let key = store::find_key(state.db.pool(), id)
        .await?
        .map(|row| row.to_key())
        .ok_or_else(not_found)?;
    if key.project_id != grant.project() && caller.require_admin().is_err() {
        return Err(not_found());
    }
    // As with creating: a key cannot revoke more power than it holds, so a
    // `keys.write` key cannot take out an `admin` key or a broader one.
    if let Some(caller_key) = caller.key()
        && let Some(beyond) = key.scopes.iter().find(|s| !caller_key.holds(**s))
    {
        return Err(AppError::PermissionDenied {
            reason: format!(
                "a key cannot revoke a key holding the scope `{beyond}`, which it does not hold"
            ),
        });
    }
    let mut tx = state.db.pool().begin().await?;
    if !store::delete_key(&mut *tx, id).await? {
        return Err(not_found());
    }
    crate::auth::delegation::end_for_key(&mut tx, &key.id).await?;
    log::commit(&state.bus, tx, vec![event(&key, "delete")]).await?;
    tracing::info!(key = %key.id, project = %key.project_id, "API key deleted");
    // This replica's connections and functions holding the key hear of it at
    // once; the others through the logged event above.
    state.sessions.key_changed(&key.id);
    state.functions.key_revoked(&key.project_id, &key.id);
    Ok(key)
}

/// On the very first start of a server (across all replicas), creates an `admin`
/// key in the default project and returns its secret to be shown once.
pub async fn bootstrap_admin_key(state: &AppState) -> AppResult<Option<String>> {
    let mut tx = state.db.pool().begin().await?;
    let first = store::claim_server_fact(
        &mut *tx,
        state.db.dialect(),
        FIRST_ADMIN_KEY,
        &now_millis().to_string(),
    )
    .await?;
    if !first {
        return Ok(None);
    }
    let now = now_millis();
    let key = ApiKey {
        id: ids::generate(),
        project_id: DEFAULT_PROJECT.into(),
        name: "admin (first start)".into(),
        scopes: vec![Scope::Admin],
        expires_at: None,
        created_at: now,
        updated_at: now,
    };
    let (secret, digest) = secrets::new_secret(SecretKind::ApiKey, &key.id);
    store::insert_key(&mut *tx, &key, &digest).await?;
    // Marker and key commit together: a crash in between leaves neither, and the
    // next start tries again.
    tx.commit().await?;
    Ok(Some(secret))
}

/// The JSON of a key as realtime subscribers receive it (never the secret).
pub fn key_json(key: &ApiKey) -> serde_json::Value {
    let time = |ms: i64| {
        crate::graphql::types::datetime(ms)
            .into_json()
            .unwrap_or_default()
    };
    serde_json::json!({
        "id": key.id,
        "projectId": key.project_id,
        "name": key.name,
        "scopes": key.scopes.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "expiresAt": key.expires_at.map(time),
        "createdAt": time(key.created_at),
        "updatedAt": time(key.updated_at),
    })
}

/// The event of a change to a key, logged with it.
fn event(key: &ApiKey, action: &str) -> BusMessage {
    BusMessage::Event(Event {
        id: crate::bus::new_event_id(),
        project_id: key.project_id.clone(),
        events: vec![
            format!("keys.{}.{action}", key.id),
            format!("keys.*.{action}"),
        ],
        channels: vec!["keys".into(), format!("keys.{}", key.id)],
        timestamp: now_millis(),
        payload: key_json(key),
        previous: None,
        position: 0,
        read_roles: Vec::new(),
        previous_read_roles: Vec::new(),
        key_scope: KeysRead::NAME.into(),
        cause: None,
    })
}
