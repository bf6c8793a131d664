//! SQL of jobs and schedules. Claims are written so that two replicas never hold
//! one job: a claim writes a fresh owner token into due rows and reads back the
//! rows holding it; every later write of a job names that token, so a replica
//! whose lease was taken over cannot overwrite the job's new owner.

use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Executor, FromRow, Row as _};

use crate::db::columns::text;
use crate::db::{Dialect, Page};

use super::{DEAD, DONE, Job, QUEUED, RUNNING};

const COLUMNS: &str = "id, project_id, kind, payload, dedupe_key, status, attempts, max_attempts, \
     run_at, lease_owner, lease_expires_at, last_error, created_at, updated_at";

/// A job as stored.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub project_id: String,
    pub kind: String,
    pub payload: String,
    pub dedupe_key: Option<String>,
    pub status: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_at: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl FromRow<'_, AnyRow> for JobRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(JobRow {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            kind: row.try_get("kind")?,
            payload: text(row, "payload")?,
            dedupe_key: row.try_get("dedupe_key")?,
            status: row.try_get("status")?,
            attempts: row.try_get("attempts")?,
            max_attempts: row.try_get("max_attempts")?,
            run_at: row.try_get("run_at")?,
            lease_owner: row.try_get("lease_owner")?,
            lease_expires_at: row.try_get("lease_expires_at")?,
            last_error: row.try_get("last_error")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// Inserts `job`; with a dedupe key already taken, inserts nothing and answers false.
pub async fn insert<'e>(
    db: impl Executor<'e, Database = Any>,
    dialect: Dialect,
    job: &Job,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "{} INTO jobs ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, ?, ?)",
        dialect.insert_ignore()
    );
    sqlx::query(&sql)
        .bind(&job.id)
        .bind(&job.project_id)
        .bind(&job.kind)
        .bind(job.payload.to_string())
        .bind(&job.dedupe_key)
        .bind(QUEUED)
        .bind(job.attempts)
        .bind(job.max_attempts)
        .bind(job.run_at)
        .bind(job.created_at)
        .bind(job.updated_at)
        .execute(db)
        .await
        .map(|r| r.rows_affected() == 1)
}

/// What makes a job due, in two conditions that each read one index range: queued
/// and its time has come, or running under a lease that expired (its replica died
/// or hung). The one that orders them comes with each.
const DUE: [(&str, &str); 2] = [
    (
        "status = 'running' AND lease_expires_at <= ?",
        "lease_expires_at",
    ),
    ("status = 'queued' AND run_at <= ?", "run_at"),
];

/// Leases at most `limit` due jobs to `owner` until `lease_until`, counting an
/// attempt for each, and returns them. Jobs whose replica died go first.
pub async fn claim(
    pool: &AnyPool,
    dialect: Dialect,
    owner: &str,
    limit: usize,
    now: i64,
    lease_until: i64,
) -> Result<Vec<JobRow>, sqlx::Error> {
    let set = "SET status = 'running', lease_owner = ?, lease_expires_at = ?, \
               attempts = attempts + 1, updated_at = ?";
    let mut claimed = 0;
    for (due, order) in DUE {
        let room = limit.saturating_sub(claimed);
        if room == 0 {
            break;
        }
        // MariaDB takes ORDER BY and LIMIT on a single-table UPDATE, locks the rows
        // of the index range it reads and re-reads the condition after a wait, so
        // two replicas never take one row; SQLite needs a compile-time option for
        // that, so it picks the rows in a subquery, which its single writer makes
        // atomic.
        let sql = match dialect {
            Dialect::MySql => {
                format!("UPDATE jobs {set} WHERE {due} ORDER BY {order} LIMIT {room}")
            }
            Dialect::Sqlite => format!(
                "UPDATE jobs {set} WHERE id IN \
                 (SELECT id FROM jobs WHERE {due} ORDER BY {order} LIMIT {room})"
            ),
        };
        claimed += sqlx::query(&sql)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected() as usize;
    }
    if claimed == 0 {
        return Ok(Vec::new());
    }
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE lease_owner = ? AND status = 'running'"
    ))
    .bind(owner)
    .fetch_all(pool)
    .await
}

/// Marks a job its owner ran as done; false when the owner lost it meanwhile.
pub async fn finish(pool: &AnyPool, id: &str, owner: &str, now: i64) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE jobs SET status = ?, lease_owner = NULL, lease_expires_at = NULL, \
         last_error = NULL, updated_at = ? WHERE id = ? AND lease_owner = ?",
    )
    .bind(DONE)
    .bind(now)
    .bind(id)
    .bind(owner)
    .execute(pool)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// Records a failed run: queued again at `retry_at`, or dead when that is `None`.
pub async fn fail(
    pool: &AnyPool,
    id: &str,
    owner: &str,
    error: &str,
    retry_at: Option<i64>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let (status, run_at) = match retry_at {
        Some(at) => (QUEUED, at),
        None => (DEAD, now),
    };
    sqlx::query(
        "UPDATE jobs SET status = ?, run_at = ?, lease_owner = NULL, lease_expires_at = NULL, \
         last_error = ?, updated_at = ? WHERE id = ? AND lease_owner = ?",
    )
    .bind(status)
    .bind(run_at)
    .bind(error)
    .bind(now)
    .bind(id)
    .bind(owner)
    .execute(pool)
    .await
    .map(|r| r.rows_affected() == 1)
}

pub async fn find(
    pool: &AnyPool,
    project_id: &str,
    id: &str,
) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE project_id = ? AND id = ?"
    ))
    .bind(project_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The project's jobs, by id, optionally of one status and kind.
pub async fn list(
    pool: &AnyPool,
    project_id: &str,
    status: Option<&str>,
    kind: Option<&str>,
    page: &Page,
) -> Result<Vec<JobRow>, sqlx::Error> {
    let mut sql = format!("SELECT {COLUMNS} FROM jobs WHERE project_id = ?");
    let mut binds = vec![project_id.to_string()];
    if let Some(status) = status {
        sql.push_str(" AND status = ?");
        binds.push(status.to_string());
    }
    if let Some(kind) = kind {
        sql.push_str(" AND kind = ?");
        binds.push(kind.to_string());
    }
    let (keyset, keyset_binds) = page.keyset_sql("id");
    sql.push_str(&keyset);
    binds.extend(keyset_binds);
    binds
        .iter()
        .fold(sqlx::query_as(&sql), |q, b| q.bind(b))
        .fetch_all(pool)
        .await
}

pub async fn count(
    pool: &AnyPool,
    project_id: &str,
    status: Option<&str>,
    kind: Option<&str>,
) -> Result<i64, sqlx::Error> {
    let mut sql = String::from("SELECT COUNT(*) FROM jobs WHERE project_id = ?");
    let mut binds = vec![project_id.to_string()];
    if let Some(status) = status {
        sql.push_str(" AND status = ?");
        binds.push(status.to_string());
    }
    if let Some(kind) = kind {
        sql.push_str(" AND kind = ?");
        binds.push(kind.to_string());
    }
    binds
        .iter()
        .fold(sqlx::query_scalar(&sql), |q, b| q.bind(b))
        .fetch_one(pool)
        .await
}

/// Queues a dead job again with its attempts reset; false when it is not dead.
pub async fn retry_dead(
    pool: &AnyPool,
    project_id: &str,
    id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE jobs SET status = ?, attempts = 0, run_at = ?, last_error = NULL, updated_at = ? \
         WHERE project_id = ? AND id = ? AND status = ?",
    )
    .bind(QUEUED)
    .bind(now)
    .bind(now)
    .bind(project_id)
    .bind(id)
    .bind(DEAD)
    .execute(pool)
    .await
    .map(|r| r.rows_affected() == 1)
}

pub async fn delete(pool: &AnyPool, project_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM jobs WHERE project_id = ? AND id = ?")
        .bind(project_id)
        .bind(id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() == 1)
}

/// Deletes every job of a project (deleted with it): a queued email or delivery of a
/// project that no longer exists is not sent.
pub async fn delete_project_jobs(pool: &AnyPool, project_id: &str) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM jobs WHERE project_id = ?")
        .bind(project_id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
}

/// Deletes finished jobs last changed before `before`.
pub async fn prune_done(pool: &AnyPool, before: i64) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM jobs WHERE status = ? AND updated_at < ?")
        .bind(DONE)
        .bind(before)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
}

/// A recurring job as stored.
#[derive(Debug, Clone)]
pub struct ScheduleRow {
    pub id: String,
    pub project_id: String,
    pub kind: String,
    pub payload: String,
    pub cron: String,
    pub next_run_at: i64,
}

impl FromRow<'_, AnyRow> for ScheduleRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(ScheduleRow {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            kind: row.try_get("kind")?,
            payload: text(row, "payload")?,
            cron: row.try_get("cron")?,
            next_run_at: row.try_get("next_run_at")?,
        })
    }
}

/// Creates schedule `id`, or changes its expression and payload (the next tick is
/// recomputed only when the expression changed).
pub async fn upsert_schedule(
    pool: &AnyPool,
    dialect: Dialect,
    row: &ScheduleRow,
    now: i64,
) -> Result<(), sqlx::Error> {
    let inserted = sqlx::query(&format!(
        "{} INTO job_schedules (id, project_id, kind, payload, cron, next_run_at, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        dialect.insert_ignore()
    ))
    .bind(&row.id)
    .bind(&row.project_id)
    .bind(&row.kind)
    .bind(&row.payload)
    .bind(&row.cron)
    .bind(row.next_run_at)
    .bind(now)
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 0 {
        sqlx::query(
            "UPDATE job_schedules SET next_run_at = CASE WHEN cron = ? THEN next_run_at ELSE ? END, \
             project_id = ?, kind = ?, payload = ?, cron = ?, updated_at = ? WHERE id = ?",
        )
        .bind(&row.cron)
        .bind(row.next_run_at)
        .bind(&row.project_id)
        .bind(&row.kind)
        .bind(&row.payload)
        .bind(&row.cron)
        .bind(now)
        .bind(&row.id)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Removes schedule `id`; false when there was none.
pub async fn delete_schedule(pool: &AnyPool, id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM job_schedules WHERE id = ?")
        .bind(id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() == 1)
}

pub async fn due_schedules(pool: &AnyPool, now: i64) -> Result<Vec<ScheduleRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, project_id, kind, payload, cron, next_run_at FROM job_schedules \
         WHERE next_run_at <= ? ORDER BY next_run_at LIMIT 100",
    )
    .bind(now)
    .fetch_all(pool)
    .await
}

/// Moves schedule `id` from the tick `from` to `to`; false when another replica
/// took the tick first.
pub async fn advance_schedule<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
    from: i64,
    to: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE job_schedules SET next_run_at = ?, updated_at = ? WHERE id = ? AND next_run_at = ?",
    )
    .bind(to)
    .bind(now)
    .bind(id)
    .bind(from)
    .execute(db)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// Whether `status` is one a job can be in.
pub fn is_status(status: &str) -> bool {
    [QUEUED, RUNNING, DONE, DEAD].contains(&status)
}
