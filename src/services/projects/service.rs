//! Project rules: who may manage projects (admin keys), valid names, the default
//! project that cannot be deleted, and telling every replica when a project changes.

use crate::AppState;
use crate::auth::AdminGrant;
use crate::bus::{BusMessage, log};
use crate::db::{DbErrorExt as _, Page, ids, now_millis};
use crate::error::{AppError, AppResult};

use super::{AuthSettings, DEFAULT_PROJECT, Project, store};

/// A request to create a project.
#[derive(Debug)]
pub struct NewProject {
    pub id: Option<String>,
    pub name: String,
    pub description: Option<String>,
}

/// A request to change a project; absent fields stay as they are.
#[derive(Debug)]
pub struct ProjectChanges {
    pub name: Option<String>,
    pub description: Option<String>,
}

const MAX_NAME: usize = 128;
const MAX_DESCRIPTION: usize = 1024;

fn check_name(name: &str) -> AppResult<()> {
    let length = name.chars().count();
    if name.trim().is_empty() || length > MAX_NAME {
        return Err(AppError::invalid(
            "name",
            format!("must be 1 to {MAX_NAME} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn check_description(description: &str) -> AppResult<()> {
    if description.chars().count() > MAX_DESCRIPTION || description.contains('\0') {
        return Err(AppError::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters, without NUL"),
        ));
    }
    Ok(())
}

/// The project `id`, if it exists; used to address requests, so no grant is needed.
pub async fn load_project(state: &AppState, id: &str) -> AppResult<Option<Project>> {
    if ids::validate("project", id).is_err() {
        return Ok(None);
    }
    Ok(store::find_project(state.db.pool(), id)
        .await?
        .map(Project::from))
}

/// Makes sure the `default` project exists.
pub async fn ensure_default_project(state: &AppState) -> AppResult<()> {
    // Read first: a command run beside a live server (`nimbus admin …`) then
    // needs no write lock on a database that already has the project.
    if store::find_project(state.db.pool(), DEFAULT_PROJECT)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let now = now_millis();
    let project = Project {
        id: DEFAULT_PROJECT.into(),
        name: "Default".into(),
        description: "The project addressed when a request names none.".into(),
        auth: AuthSettings::default(),
        created_at: now,
        updated_at: now,
    };
    store::insert_project_if_missing(state.db.pool(), state.db.dialect(), &project).await?;
    Ok(())
}

pub async fn create_project(
    state: &AppState,
    _: &AdminGrant,
    new: NewProject,
    data: &dyn ProjectData,
) -> AppResult<Project> {
    let id = ids::resolve("id", new.id.as_deref())?;
    check_name(&new.name)?;
    let description = new.description.unwrap_or_default();
    check_description(&description)?;
    let now = now_millis();
    let project = Project {
        id,
        name: new.name,
        description,
        auth: AuthSettings::default(),
        created_at: now,
        updated_at: now,
    };
    let mut tx = state.db.pool().begin().await?;
    store::insert_project(&mut *tx, &project)
        .await
        .conflict_as("project", &project.id)?;
    data.clear_leftovers(&mut tx, &project.id).await?;
    tx.commit().await?;
    tracing::info!(project = %project.id, "project created");
    Ok(project)
}

/// The project the admin grant names.
pub async fn get_project(state: &AppState, admin: &AdminGrant) -> AppResult<Project> {
    let id = admin.project();
    load_project(state, id)
        .await?
        .ok_or_else(|| AppError::ProjectNotFound { id: id.into() })
}

pub async fn list_projects(
    state: &AppState,
    _: &AdminGrant,
    page: &Page,
    with_total: bool,
) -> AppResult<(Vec<Project>, i64)> {
    let rows = store::list_projects(state.db.pool(), page).await?;
    let total = if with_total {
        store::count_projects(state.db.pool()).await?
    } else {
        0
    };
    Ok((rows.into_iter().map(Project::from).collect(), total))
}

/// Applies `change` to the grant's project as it is when its row lock is held, and
/// writes it: two administrators changing different settings at once both keep
/// theirs.
async fn change_project(
    state: &AppState,
    admin: &AdminGrant,
    change: impl FnOnce(&mut Project) -> AppResult<()>,
) -> AppResult<Project> {
    let id = admin.project();
    let not_found = || AppError::ProjectNotFound { id: id.into() };
    ids::validate("project", id).map_err(|_| not_found())?;
    let mut tx = state.db.begin_write().await?;
    store::lock_project(&mut tx, id).await?;
    let mut project = store::find_project(&mut *tx, id)
        .await?
        .map(Project::from)
        .ok_or_else(not_found)?;
    change(&mut project)?;
    project.updated_at = now_millis();
    if !store::update_project(&mut *tx, &project).await? {
        return Err(not_found());
    }
    commit_change(state, tx, &project.id).await?;
    Ok(project)
}

pub async fn update_project(
    state: &AppState,
    admin: &AdminGrant,
    changes: ProjectChanges,
) -> AppResult<Project> {
    if let Some(name) = &changes.name {
        check_name(name)?;
    }
    if let Some(description) = &changes.description {
        check_description(description)?;
    }
    change_project(state, admin, |project| {
        if let Some(name) = changes.name {
            project.name = name;
        }
        if let Some(description) = changes.description {
            project.description = description;
        }
        Ok(())
    })
    .await
}

/// Changes to a project's sign-in policy; absent fields stay as they are.
#[derive(Debug, Default)]
pub struct AuthChanges {
    pub password_min_length: Option<u32>,
    pub password_history: Option<u32>,
    pub password_dictionary: Option<bool>,
    pub personal_data_check: Option<bool>,
    pub max_sessions: Option<u32>,
    pub session_length_secs: Option<u64>,
    pub email_password: Option<bool>,
    pub anonymous: Option<bool>,
    pub magic_url: Option<bool>,
    pub email_otp: Option<bool>,
    pub presence_guests: Option<bool>,
    pub avatars_public: Option<bool>,
    pub invalidate_sessions: Option<bool>,
    pub redirect_hosts: Option<Vec<String>>,
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: T,
    min: T,
    max: T,
) -> AppResult<T> {
    if value < min || value > max {
        return Err(AppError::invalid(
            field,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(value)
}

pub async fn update_project_auth(
    state: &AppState,
    admin: &AdminGrant,
    changes: AuthChanges,
) -> AppResult<Project> {
    change_project(state, admin, |project| {
        change_auth(&mut project.auth, changes)
    })
    .await
}

fn change_auth(auth: &mut AuthSettings, changes: AuthChanges) -> AppResult<()> {
    if let Some(v) = changes.password_min_length {
        // Passwords are at most 256 bytes, so a longer minimum could never be met.
        auth.password_min_length = in_range("passwordMinLength", v, 6, 256)?;
    }
    if let Some(v) = changes.password_history {
        auth.password_history = in_range("passwordHistory", v, 0, 20)?;
    }
    if let Some(v) = changes.max_sessions {
        auth.max_sessions = in_range("maxSessions", v, 1, 100)?;
    }
    if let Some(v) = changes.session_length_secs {
        auth.session_length_secs = in_range("sessionLength", v, 60, 10 * 365 * 24 * 3600)?;
    }
    if let Some(v) = changes.password_dictionary {
        auth.password_dictionary = v;
    }
    if let Some(v) = changes.personal_data_check {
        auth.personal_data_check = v;
    }
    if let Some(v) = changes.email_password {
        auth.email_password = v;
    }
    if let Some(v) = changes.anonymous {
        auth.anonymous = v;
    }
    if let Some(v) = changes.magic_url {
        auth.magic_url = v;
    }
    if let Some(v) = changes.email_otp {
        auth.email_otp = v;
    }
    if let Some(v) = changes.presence_guests {
        auth.presence_guests = v;
    }
    if let Some(v) = changes.avatars_public {
        auth.avatars_public = v;
    }
    if let Some(v) = changes.invalidate_sessions {
        auth.invalidate_sessions = v;
    }
    if let Some(hosts) = changes.redirect_hosts {
        if hosts.len() > 100 {
            return Err(AppError::invalid("redirectHosts", "at most 100 hosts"));
        }
        let mut normalized = Vec::with_capacity(hosts.len());
        for host in hosts {
            let host = host.trim().to_ascii_lowercase();
            let valid = !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
            if !valid {
                return Err(AppError::invalid(
                    "redirectHosts",
                    format!("`{host}` is not a host name"),
                ));
            }
            normalized.push(host);
        }
        auth.redirect_hosts = normalized;
    }
    Ok(())
}

/// What other services keep of a project outside the rows that cascade with it.
/// The registry attaches one to every schema, so this service names none of them.
#[async_trait::async_trait]
pub trait ProjectData: Send + Sync + 'static {
    /// Removes what deleting the grant's project's rows would leave behind
    /// (collection tables, which are not rows that cascade); runs first.
    async fn drop_before(&self, state: &AppState, admin: &AdminGrant) -> AppResult<()>;

    /// Forgets what the grant's deleted project leaves (its stored files).
    async fn forget_after(&self, state: &AppState, admin: &AdminGrant);

    /// Removes the rows a deleted project of the same id left in tables that
    /// do not cascade with it (its jobs, webhook deliveries, executions,
    /// usage), in the transaction that makes the project again: a delete cut
    /// short after its commit must not hand them to the new project.
    async fn clear_leftovers(
        &self,
        conn: &mut sqlx::AnyConnection,
        project_id: &str,
    ) -> AppResult<()>;
}

/// Deletes the project the grant names, with everything in it.
pub async fn delete_project(
    state: &AppState,
    admin: &AdminGrant,
    data: &dyn ProjectData,
) -> AppResult<()> {
    let id = admin.project();
    if id == DEFAULT_PROJECT {
        return Err(AppError::NotAllowed(
            "the default project cannot be deleted".into(),
        ));
    }
    if load_project(state, id).await?.is_none() {
        return Err(AppError::ProjectNotFound { id: id.into() });
    }
    data.drop_before(state, admin).await?;
    let mut tx = state.db.pool().begin().await?;
    if !store::delete_project(&mut *tx, id).await? {
        return Err(AppError::ProjectNotFound { id: id.into() });
    }
    commit_change(state, tx, id).await?;
    data.forget_after(state, admin).await;
    tracing::info!(project = %id, "project deleted");
    Ok(())
}

/// The message that makes every replica drop what it cached about a project (its
/// schema included), logged with the change.
pub fn change_message(id: &str) -> BusMessage {
    BusMessage::ProjectChanged {
        project_id: id.to_string(),
    }
}

/// Commits `tx`, which changed the project, with its [`change_message`], and
/// forgets what this replica cached about the project.
pub async fn commit_change(
    state: &AppState,
    tx: sqlx::Transaction<'static, sqlx::Any>,
    id: &str,
) -> AppResult<()> {
    log::commit(&state.bus, tx, vec![change_message(id)]).await?;
    forget(state, id).await;
    Ok(())
}

/// Drops at once what this replica cached about the project, so that its next
/// request (and the next operation on its open sockets) sees the change even
/// before the relay delivers it.
pub async fn forget(state: &AppState, id: &str) {
    state.schemas.invalidate(id).await;
    state.sessions.evict_project(id);
}
