//! Rules of the job admin operations: every one is confined to the grant's project.

use crate::AppState;
use crate::auth::Grant;
use crate::auth::scopes::{JobsRead, JobsWrite};
use crate::db::{Page, ids, now_millis};
use crate::error::{AppError, AppResult, codes};
use crate::jobs::{self, Job, store};

fn not_found(id: &str) -> AppError {
    AppError::NotFound {
        what: "job",
        id: id.to_string(),
    }
}

/// Which jobs to list.
#[derive(Debug, Default)]
pub struct JobFilter {
    /// `queued`, `running`, `done` or `dead`.
    pub status: Option<String>,
    pub kind: Option<String>,
}

pub async fn list(
    state: &AppState,
    grant: &Grant<JobsRead>,
    filter: &JobFilter,
    page: &Page,
    with_total: bool,
) -> AppResult<(Vec<Job>, i64)> {
    if let Some(status) = &filter.status
        && !store::is_status(status)
    {
        return Err(AppError::invalid("status", "unknown job status"));
    }
    if let Some(kind) = &filter.kind
        && (kind.is_empty() || kind.len() > 64)
    {
        return Err(AppError::invalid("kind", "must be 1 to 64 characters"));
    }
    let (status, kind) = (filter.status.as_deref(), filter.kind.as_deref());
    let rows = store::list(state.db.pool(), grant.project(), status, kind, page).await?;
    let total = if with_total {
        store::count(state.db.pool(), grant.project(), status, kind).await?
    } else {
        0
    };
    Ok((rows.into_iter().map(Job::from).collect(), total))
}

pub async fn get(state: &AppState, grant: &Grant<JobsRead>, id: &str) -> AppResult<Job> {
    ids::validate("id", id)?;
    store::find(state.db.pool(), grant.project(), id)
        .await?
        .map(Job::from)
        .ok_or_else(|| not_found(id))
}

/// Queues a dead job again, its attempts counted afresh.
pub async fn retry(state: &AppState, grant: &Grant<JobsWrite>, id: &str) -> AppResult<Job> {
    ids::validate("id", id)?;
    let mut job = store::find(state.db.pool(), grant.project(), id)
        .await?
        .map(Job::from)
        .ok_or_else(|| not_found(id))?;
    let now = now_millis();
    if !store::retry_dead(state.db.pool(), grant.project(), id, now).await? {
        let current = store::find(state.db.pool(), grant.project(), id).await?;
        return Err(match current {
            None => not_found(id),
            Some(current) => AppError::Invalid {
                code: codes::JOB_NOT_DEAD,
                field: "id".into(),
                reason: format!(
                    "the job is {}; only a dead job can be retried",
                    current.status
                ),
            },
        });
    }
    // The answer is the job as queued (what the update wrote), not whatever a
    // worker has made of it by the time it could be read back.
    job.status = jobs::QUEUED.into();
    job.attempts = 0;
    job.run_at = now;
    job.last_error = None;
    job.updated_at = now;
    state.jobs.wake();
    Ok(job)
}

/// Deletes a job: a queued one never runs; a running one finishes its attempt but
/// is not retried.
pub async fn delete(state: &AppState, grant: &Grant<JobsWrite>, id: &str) -> AppResult<String> {
    ids::validate("id", id)?;
    if !store::delete(state.db.pool(), grant.project(), id).await? {
        return Err(not_found(id));
    }
    Ok(id.to_string())
}

/// Forgets the jobs of the grant's deleted project: its queued mail and deliveries
/// are not sent any more. A failure is logged.
pub async fn forget_project(state: &AppState, admin: &crate::auth::AdminGrant) {
    if let Err(err) = store::delete_project_jobs(state.db.pool(), admin.project()).await {
        tracing::warn!(error = %err, "cannot delete a deleted project's jobs");
    }
}

/// The statuses, as the schema's enum names them.
pub const STATUSES: &[(&str, &str, &str)] = &[
    (
        "QUEUED",
        jobs::QUEUED,
        "Waiting for its time: the first run or a retry.",
    ),
    (
        "RUNNING",
        jobs::RUNNING,
        "Leased by a replica that runs it.",
    ),
    ("DONE", jobs::DONE, "Ran successfully."),
    (
        "DEAD",
        jobs::DEAD,
        "Failed every attempt (or in a way retrying cannot fix); `retryJob` queues it again.",
    ),
];
