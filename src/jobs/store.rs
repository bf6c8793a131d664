//! SQL of jobs and schedules. Claims are written so that two replicas never hold
//! one job: a claim writes a fresh owner token into due rows and reads back the
//! rows holding it; every later write of a job names that token, so a replica
//! whose lease was taken over cannot overwrite the job's new owner.

use std::collections::HashMap;

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

/// The projects a claim shares its room among, at most; when there are more, the
/// next claim goes on after the last of them ([`Turns::after`]).
const PROJECTS_PER_CLAIM: usize = 64;

/// What a replica's claims take turns by: the projects it served, from the least
/// to the most recently served, and how many jobs of each it runs now, of which
/// a project may hold at most `cap`.
pub struct Turns<'a> {
    pub served: &'a [String],
    pub held: &'a HashMap<String, usize>,
    pub cap: usize,
    /// Where a claim starts looking for projects with due jobs (after this id;
    /// `""`: from the first), and where the next should start: past the last
    /// project looked at when there were more than one claim looks at.
    pub after: String,
}

/// Leases at most `limit` due jobs to `owner` until `lease_until`, counting an
/// attempt for each, and returns them. Jobs whose replica died go first; then
/// the room is shared among the projects with due jobs, the projects running the
/// fewest first (among them, the one served least recently), each its oldest, no
/// project past its cap on this replica: one project's backlog, or its jobs
/// waiting long, does not hold back another's jobs.
pub async fn claim(
    pool: &AnyPool,
    dialect: Dialect,
    owner: &str,
    limit: usize,
    now: i64,
    lease_until: i64,
    turns: &mut Turns<'_>,
) -> Result<Vec<JobRow>, sqlx::Error> {
    let lease = Lease {
        pool,
        dialect,
        owner,
        now,
        lease_until,
    };
    let [expired, queued] = DUE;
    let mut claimed = lease.take(expired, None, limit).await?;
    let mut room = limit.saturating_sub(claimed);
    if room > 0 {
        let mut projects = due_projects(pool, dialect, now, &turns.after).await?;
        turns.after = if projects.len() >= PROJECTS_PER_CLAIM {
            projects.last().cloned().unwrap_or_default()
        } else {
            String::new()
        };
        let mut running = if projects.len() > 1 {
            running_per_project(pool).await?
        } else {
            HashMap::new()
        };
        let mut held = turns.held.clone();
        // Rounds until the room is full or no project can take more: a project
        // with fewer due jobs than its share leaves the rest to the others.
        while room > 0 {
            projects.retain(|project| held.get(project).copied().unwrap_or(0) < turns.cap);
            let shares = share_room(&projects, &running, &held, turns, room);
            if shares.is_empty() {
                break;
            }
            for (project, share) in shares {
                let took = lease.take(queued, Some(&project), share).await?;
                claimed += took;
                room -= took;
                *running.entry(project.clone()).or_default() += took;
                *held.entry(project.clone()).or_default() += took;
                if took < share {
                    projects.retain(|p| *p != project);
                }
            }
        }
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

/// One claim's lease, written into the rows it takes.
struct Lease<'a> {
    pool: &'a AnyPool,
    dialect: Dialect,
    owner: &'a str,
    now: i64,
    lease_until: i64,
}

impl Lease<'_> {
    /// Leases at most `room` rows meeting `due` (of `project`, if named), in
    /// `order`; returns how many.
    async fn take(
        &self,
        (due, order): (&str, &str),
        project: Option<&str>,
        room: usize,
    ) -> Result<usize, sqlx::Error> {
        if room == 0 {
            return Ok(0);
        }
        let set = "SET status = 'running', lease_owner = ?, lease_expires_at = ?, \
                   attempts = attempts + 1, updated_at = ?";
        let of_project = if project.is_some() {
            " AND project_id = ?"
        } else {
            ""
        };
        // MariaDB takes ORDER BY and LIMIT on a single-table UPDATE, locks the rows
        // of the index range it reads and re-reads the condition after a wait, so
        // two replicas never take one row; SQLite needs a compile-time option for
        // that, so it picks the rows in a subquery, which its single writer makes
        // atomic.
        let sql = match self.dialect {
            Dialect::MySql => {
                format!("UPDATE jobs {set} WHERE {due}{of_project} ORDER BY {order} LIMIT {room}")
            }
            Dialect::Sqlite => format!(
                "UPDATE jobs {set} WHERE id IN \
                 (SELECT id FROM jobs WHERE {due}{of_project} ORDER BY {order} LIMIT {room})"
            ),
        };
        let mut query = sqlx::query(&sql)
            .bind(self.owner)
            .bind(self.lease_until)
            .bind(self.now)
            .bind(self.now);
        if let Some(project) = project {
            query = query.bind(project);
        }
        Ok(query.execute(self.pool).await?.rows_affected() as usize)
    }
}

/// The projects with queued jobs that are due, at most [`PROJECTS_PER_CLAIM`],
/// each found by one seek of the `(status, project_id, run_at)` index however
/// many jobs a project has queued: MariaDB skips through the index for a
/// `GROUP BY` of its prefix, SQLite steps from one project to the next.
async fn due_projects(
    pool: &AnyPool,
    dialect: Dialect,
    now: i64,
    after: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = match dialect {
        Dialect::MySql => {
            sqlx::query_as(&format!(
                "SELECT project_id FROM jobs WHERE status = 'queued' AND project_id > ? \
                 GROUP BY status, project_id HAVING MIN(run_at) <= ? LIMIT {PROJECTS_PER_CLAIM}"
            ))
            .bind(after)
            .bind(now)
            .fetch_all(pool)
            .await?
        }
        Dialect::Sqlite => {
            sqlx::query_as(&format!(
                "WITH RECURSIVE due(project_id, n) AS ( \
                   SELECT (SELECT project_id FROM jobs WHERE status = 'queued' AND run_at <= ? \
                           AND project_id > ? ORDER BY status, project_id LIMIT 1), 1 \
                   UNION ALL \
                   SELECT (SELECT j.project_id FROM jobs j \
                           WHERE j.status = 'queued' AND j.run_at <= ? \
                             AND j.project_id > due.project_id \
                           ORDER BY j.status, j.project_id LIMIT 1), due.n + 1 \
                   FROM due WHERE due.project_id IS NOT NULL AND due.n < {PROJECTS_PER_CLAIM}) \
                 SELECT project_id FROM due WHERE project_id IS NOT NULL"
            ))
            .bind(now)
            .bind(after)
            .bind(now)
            .fetch_all(pool)
            .await?
        }
    };
    Ok(rows.into_iter().map(|(project,)| project).collect())
}

/// How many jobs each project has running, on every replica.
async fn running_per_project(pool: &AnyPool) -> Result<HashMap<String, usize>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT project_id, COUNT(*) FROM jobs WHERE status = 'running' GROUP BY project_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(project, count)| (project, count.max(0) as usize))
        .collect())
}

/// Hands out `room` places one at a time, each to the project running the
/// fewest with the places it was given so far; among those, to the one served
/// least recently (never served first, in a random order, so no project id is
/// preferred); none past its cap on this replica.
fn share_room(
    projects: &[String],
    running: &HashMap<String, usize>,
    held: &HashMap<String, usize>,
    turns: &Turns<'_>,
    room: usize,
) -> Vec<(String, usize)> {
    use rand::seq::SliceRandom as _;
    struct Share<'p> {
        project: &'p String,
        load: usize,
        /// 0: never served; else 1 + its place in `served`.
        when: usize,
        room: usize,
        given: usize,
    }
    let mut shares: Vec<Share> = projects
        .iter()
        .map(|project| Share {
            project,
            load: running.get(project).copied().unwrap_or(0),
            when: turns
                .served
                .iter()
                .position(|p| p == project)
                .map_or(0, |at| at + 1),
            room: turns
                .cap
                .saturating_sub(held.get(project).copied().unwrap_or(0)),
            given: 0,
        })
        .collect();
    shares.shuffle(&mut rand::rng());
    for _ in 0..room {
        let Some(next) = shares
            .iter_mut()
            .filter(|share| share.given < share.room)
            .min_by_key(|share| (share.load, share.when))
        else {
            break;
        };
        next.load += 1;
        next.given += 1;
    }
    shares
        .into_iter()
        .filter(|share| share.given > 0)
        .map(|share| (share.project.clone(), share.given))
        .collect()
}

#[cfg(test)]
mod share_tests {
    use super::*;

    fn names(of: &[&str]) -> Vec<String> {
        of.iter().map(|name| name.to_string()).collect()
    }

    fn share_of(shares: &[(String, usize)], project: &str) -> usize {
        shares
            .iter()
            .find(|(p, _)| p == project)
            .map_or(0, |(_, n)| *n)
    }

    #[test]
    fn the_room_goes_to_the_projects_running_the_fewest() {
        let running = HashMap::from([("busy".to_string(), 8), ("some".to_string(), 1)]);
        let held = HashMap::new();
        let turns = Turns {
            served: &[],
            held: &held,
            cap: 100,
            after: String::new(),
        };
        let shares = share_room(
            &names(&["busy", "some", "idle"]),
            &running,
            &held,
            &turns,
            4,
        );
        assert_eq!(shares.iter().map(|(_, n)| n).sum::<usize>(), 4);
        assert_eq!(share_of(&shares, "busy"), 0, "{shares:?}");
        let (idle, some) = (share_of(&shares, "idle"), share_of(&shares, "some"));
        assert!(idle >= some && idle - some <= 2, "{shares:?}");
        // With room enough, the busiest gets its turn too.
        let shares = share_room(&names(&["busy", "idle"]), &running, &held, &turns, 12);
        assert_eq!(share_of(&shares, "busy"), 2, "{shares:?}");
    }

    #[test]
    fn among_equals_the_place_goes_to_the_project_served_least_recently() {
        let idle = HashMap::new();
        let projects = names(&["a", "b", "c"]);
        for served in [names(&["c", "a", "b"]), names(&["a", "b"])] {
            let turns = Turns {
                served: &served,
                held: &idle,
                cap: 100,
                after: String::new(),
            };
            for _ in 0..20 {
                let shares = share_room(&projects, &idle, &idle, &turns, 1);
                assert_eq!(shares, [("c".to_string(), 1)]);
            }
        }
    }

    #[test]
    fn no_project_is_given_past_its_cap_on_the_replica() {
        let held = HashMap::from([("hog".to_string(), 5)]);
        let turns = Turns {
            served: &[],
            held: &held,
            cap: 6,
            after: String::new(),
        };
        let idle = HashMap::new();
        let shares = share_room(&names(&["hog"]), &idle, &held, &turns, 3);
        assert_eq!(shares, [("hog".to_string(), 1)]);
        let shares = share_room(&names(&["hog", "other"]), &idle, &held, &turns, 8);
        assert_eq!(share_of(&shares, "hog"), 1, "{shares:?}");
        assert_eq!(share_of(&shares, "other"), 6, "{shares:?}");
    }
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
pub async fn delete_project_jobs<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM jobs WHERE project_id = ?")
        .bind(project_id)
        .execute(db)
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
    conn: &mut sqlx::AnyConnection,
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
    .execute(&mut *conn)
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
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Removes schedule `id`; false when there was none.
pub async fn delete_schedule<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM job_schedules WHERE id = ?")
        .bind(id)
        .execute(db)
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
