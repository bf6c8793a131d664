//! Finds the project a request addresses and the credential it presents:
//! `X-Nimbus-Project` (default `default`) and `X-Nimbus-Key`.

use std::sync::Arc;

use axum::http::HeaderMap;

use crate::AppState;
use crate::auth::{Caller, Credential};
use crate::error::{AppError, AppResult};
use crate::graphql::LoadedProject;
use crate::services::keys::service::authenticate;
use crate::services::projects::DEFAULT_PROJECT;

pub const PROJECT_HEADER: &str = "x-nimbus-project";
pub const KEY_HEADER: &str = "x-nimbus-key";

/// The caller of a request and the project it addresses, with its schema.
pub struct Addressed {
    pub caller: Caller,
    pub loaded: Arc<LoadedProject>,
}

/// The value of a header when it is present and readable.
pub fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Resolves the addressed project and the caller.
pub async fn resolve(
    state: &AppState,
    project: Option<&str>,
    key: Option<&str>,
) -> AppResult<Addressed> {
    check_project_id(project)?;
    let project_id = project.unwrap_or(DEFAULT_PROJECT);
    let loaded = state.schemas.get(state, project_id).await?;
    let credential = match key {
        None => Credential::Anonymous,
        Some(secret) => Credential::Key(authenticate(state, &loaded.project.id, secret).await?),
    };
    Ok(Addressed {
        caller: Caller {
            project: loaded.project.clone(),
            credential,
        },
        loaded,
    })
}

/// Resolves from the request headers.
pub async fn from_headers(state: &AppState, headers: &HeaderMap) -> AppResult<Addressed> {
    resolve(
        state,
        header(headers, PROJECT_HEADER),
        header(headers, KEY_HEADER),
    )
    .await
}

/// Rejects a malformed project id early with `INVALID_ID` rather than "not found".
fn check_project_id(project: Option<&str>) -> AppResult<()> {
    match project {
        Some(id) => crate::db::ids::validate("project", id).map_err(|_| AppError::Invalid {
            code: "INVALID_ID",
            field: "X-Nimbus-Project".into(),
            reason: "a project id has 1 to 36 characters of a-z, A-Z, 0-9, '.', '_' and '-'".into(),
        }),
        None => Ok(()),
    }
}
