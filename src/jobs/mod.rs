//! Durable background jobs: emails, webhook deliveries and whatever else must
//! happen after a request without the request waiting for it, and must happen even
//! if the replica that accepted it dies.
//!
//! A job is a row, written with [`Jobs::enqueue`] in the caller's transaction when
//! there is one, so it exists exactly when the change that asked for it does. Each
//! replica runs a worker ([`work_forever`]) that claims due jobs with a lease (an
//! owner token and an expiry, see [`store::claim`]), runs at most
//! `NIMBUS_JOBS_CONCURRENCY` at once, and records the outcome: done, queued again
//! after an exponential backoff with jitter, or dead after `NIMBUS_JOBS_MAX_ATTEMPTS`
//! (kept for an administrator to look at and retry). A replica killed mid-job
//! leaves its lease to expire; another then claims the job. Delivery is therefore
//! at least once: handlers make their effect idempotent or accept a rare repeat.
//!
//! Recurring jobs are CRON schedules ([`Jobs::schedule`]); exactly one replica
//! enqueues each tick, by advancing the schedule's next run in the transaction that
//! enqueues it.
//!
//! This module knows no kind of job: the crate root registers a [`Handler`] per
//! kind. It never looks inside a payload.

pub mod store;

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rand::Rng as _;
use sqlx::{Any, Executor};
use tokio::sync::{Notify, Semaphore};

use crate::AppState;
use crate::config::Config;
use crate::db::{Dialect, ids, now_millis};

/// Waiting for its time (first run or a retry).
pub const QUEUED: &str = "queued";
/// Leased by a replica that runs it.
pub const RUNNING: &str = "running";
/// Ran successfully.
pub const DONE: &str = "done";
/// Failed every attempt, or failed in a way retrying cannot fix.
pub const DEAD: &str = "dead";

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Longest error text kept on a job.
const MAX_ERROR_CHARS: usize = 1000;
/// The kind of the built-in schedule that prunes finished jobs.
pub const PRUNE_KIND: &str = "jobs.prune";

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub project_id: String,
    /// Which [`Handler`] runs it.
    pub kind: &'static str,
    pub payload: serde_json::Value,
    /// When to run it first; none: now.
    pub run_at: Option<i64>,
    /// Makes enqueueing idempotent: a second job with the same key is not added.
    pub dedupe_key: Option<String>,
}

/// A job as its handler sees it.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub project_id: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub dedupe_key: Option<String>,
    pub status: String,
    /// Attempts so far, this one included while it runs.
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_at: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<store::JobRow> for Job {
    fn from(row: store::JobRow) -> Job {
        Job {
            payload: serde_json::from_str(&row.payload).unwrap_or(serde_json::Value::Null),
            id: row.id,
            project_id: row.project_id,
            kind: row.kind,
            dedupe_key: row.dedupe_key,
            status: row.status,
            attempts: row.attempts,
            max_attempts: row.max_attempts,
            run_at: row.run_at,
            lease_owner: row.lease_owner,
            lease_expires_at: row.lease_expires_at,
            last_error: row.last_error,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// Why a run failed.
#[derive(Debug)]
pub enum Failure {
    /// Worth another attempt later (a receiver down, a timeout).
    Retry(String),
    /// Another attempt cannot succeed (a payload that does not parse): dead now.
    Permanent(String),
}

/// Runs the jobs of one kind.
#[async_trait::async_trait]
pub trait Handler: Send + Sync {
    async fn run(&self, state: &AppState, job: &Job) -> Result<(), Failure>;
}

/// The job queue of this replica: its settings, its handlers and its wake-up call.
pub struct Jobs {
    concurrency: usize,
    max_attempts: u32,
    retry_base: Duration,
    lease: Duration,
    poll: Duration,
    retention: Duration,
    /// This replica's name in lease tokens.
    replica: String,
    handlers: OnceLock<HashMap<&'static str, Arc<dyn Handler>>>,
    wake: Notify,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("replica", &self.replica)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl Jobs {
    pub fn new(config: &Config) -> Jobs {
        Jobs {
            concurrency: config.jobs_concurrency,
            max_attempts: config.jobs_max_attempts.max(1),
            retry_base: Duration::from_millis(config.jobs_retry_base_ms.max(1)),
            lease: Duration::from_secs(config.jobs_lease_secs.max(1)),
            poll: Duration::from_millis(config.jobs_poll_ms.clamp(10, 60_000)),
            retention: Duration::from_secs(u64::from(config.jobs_retention_days) * 86_400),
            replica: ids::generate(),
            handlers: OnceLock::new(),
            wake: Notify::new(),
        }
    }

    /// Sets the handler of every kind; once, before the worker starts.
    pub fn set_handlers(&self, handlers: HashMap<&'static str, Arc<dyn Handler>>) {
        if self.handlers.set(handlers).is_err() {
            tracing::warn!("job handlers were set twice; the first set stays");
        }
    }

    /// Adds `job` through `db` (a transaction, to enqueue with the change that asks
    /// for it) and wakes this replica's worker. `None` when its dedupe key was taken.
    pub async fn enqueue<'e>(
        &self,
        db: impl Executor<'e, Database = Any>,
        dialect: Dialect,
        new: NewJob,
    ) -> Result<Option<String>, sqlx::Error> {
        let now = now_millis();
        let job = Job {
            id: ids::generate(),
            project_id: new.project_id,
            kind: new.kind.to_string(),
            payload: new.payload,
            dedupe_key: new.dedupe_key,
            status: QUEUED.into(),
            attempts: 0,
            max_attempts: i64::from(self.max_attempts),
            run_at: new.run_at.unwrap_or(now),
            lease_owner: None,
            lease_expires_at: None,
            last_error: None,
            created_at: now,
            updated_at: now,
        };
        let added = store::insert(db, dialect, &job).await?;
        // Inside a transaction the row is not visible yet: the worker then finds it
        // on its next look, at most a poll interval later.
        self.wake.notify_one();
        Ok(added.then_some(job.id))
    }

    /// Wakes the worker, e.g. after the transaction holding new jobs committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Creates or changes the recurring job `id`: a job of `kind` with `payload`
    /// enqueued at every tick of `cron` (5 fields, or 6 with seconds first, UTC).
    pub async fn schedule(
        &self,
        state: &AppState,
        id: &str,
        project_id: &str,
        kind: &'static str,
        payload: serde_json::Value,
        cron: &str,
    ) -> anyhow::Result<()> {
        let mut conn = state.db.pool().acquire().await?;
        Self::schedule_in(&mut conn, state, id, project_id, kind, payload, cron).await
    }

    /// [`Self::schedule`] on `conn`, e.g. in the transaction of what it
    /// schedules, so that the two commit together.
    pub async fn schedule_in(
        conn: &mut sqlx::AnyConnection,
        state: &AppState,
        id: &str,
        project_id: &str,
        kind: &'static str,
        payload: serde_json::Value,
        cron: &str,
    ) -> anyhow::Result<()> {
        let now = now_millis();
        let next = next_tick(cron, now)?;
        let row = store::ScheduleRow {
            id: id.to_string(),
            project_id: project_id.to_string(),
            kind: kind.to_string(),
            payload: payload.to_string(),
            cron: cron.to_string(),
            next_run_at: next,
        };
        store::upsert_schedule(conn, state.db.dialect(), &row, now).await?;
        Ok(())
    }

    /// Removes the recurring job `id`: no tick is enqueued from now on (one already
    /// enqueued still runs).
    pub async fn unschedule(&self, state: &AppState, id: &str) -> anyhow::Result<()> {
        store::delete_schedule(state.db.pool(), id).await?;
        Ok(())
    }

    /// [`Self::unschedule`] on `conn`, e.g. in the transaction of what it
    /// unschedules.
    pub async fn unschedule_in(conn: &mut sqlx::AnyConnection, id: &str) -> anyhow::Result<()> {
        store::delete_schedule(conn, id).await?;
        Ok(())
    }

    /// The wait before retrying after the `attempt`-th failure: the base doubled
    /// per attempt, capped, then drawn between half and all of it so that jobs that
    /// failed together do not retry together.
    pub fn backoff(&self, attempt: i64) -> Duration {
        let exponent = attempt.clamp(1, 32) as u32 - 1;
        let full = self
            .retry_base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(MAX_BACKOFF);
        let half = full / 2;
        half + Duration::from_millis(rand::rng().random_range(0..=half.as_millis() as u64))
    }
}

/// The next tick of `cron` after `after` (milliseconds), or why the expression is
/// not one. Five fields are read as crontab reads them (minute first), six with
/// seconds first: days of the week numbered 0 to 7 (0 and 7 Sunday, 1 Monday) or
/// named, and a day that names both a day of the month and a day of the week
/// when either matches. `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly`
/// and `@yearly` (`@annually`) stand for their schedules.
pub fn next_tick(cron: &str, after: i64) -> anyhow::Result<i64> {
    let fields: Vec<&str> = cron.split_whitespace().collect();
    let (second, minute, hour, day, month, weekday) = match fields.as_slice() {
        ["@midnight"] => return next_of("@daily", after),
        ["@annually"] => return next_of("@yearly", after),
        [shorthand] if shorthand.starts_with('@') => return next_of(shorthand, after),
        [minute, hour, day, month, weekday] => ("0", *minute, *hour, *day, *month, *weekday),
        [second, minute, hour, day, month, weekday] => {
            (*second, *minute, *hour, *day, *month, *weekday)
        }
        _ => anyhow::bail!("a CRON expression has 5 fields (or 6, seconds first)"),
    };
    let weekdays = crate_weekdays(weekday)?;
    let any = |field: &str| field == "*" || field == "?";
    if any(day) || any(weekday) {
        return next_of(
            &format!("{second} {minute} {hour} {day} {month} {weekdays}"),
            after,
        );
    }
    // Both restricted: crontab runs on either, the `cron` crate on both.
    let by_day = next_of(&format!("{second} {minute} {hour} {day} {month} *"), after);
    let by_weekday = next_of(
        &format!("{second} {minute} {hour} * {month} {weekdays}"),
        after,
    );
    match (by_day, by_weekday) {
        (Ok(a), Ok(b)) => Ok(a.min(b)),
        (Ok(one), Err(_)) | (Err(_), Ok(one)) => Ok(one),
        (Err(err), Err(_)) => Err(err),
    }
}

/// The next tick after `after` of an expression the `cron` crate reads.
fn next_of(expression: &str, after: i64) -> anyhow::Result<i64> {
    let schedule = cron::Schedule::from_str(expression)
        .map_err(|err| anyhow::anyhow!("not a CRON expression: {err}"))?;
    let after = chrono::DateTime::from_timestamp_millis(after)
        .ok_or_else(|| anyhow::anyhow!("time out of range"))?;
    schedule
        .after(&after)
        .next()
        .map(|at| at.timestamp_millis())
        .ok_or_else(|| anyhow::anyhow!("the CRON expression never fires"))
}

/// A crontab day-of-week field (0–7 with 0 and 7 Sunday, or three-letter names)
/// as the `cron` crate reads it (1–7 from Sunday): every item, names included,
/// becomes the list of days it means, so that `1-5` keeps meaning Monday to
/// Friday and `MON,5` Monday and Friday.
fn crate_weekdays(field: &str) -> anyhow::Result<String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    const NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let day = |text: &str| -> anyhow::Result<u8> {
        if let Some(named) = NAMES
            .iter()
            .position(|name| name.eq_ignore_ascii_case(text))
        {
            return Ok(named as u8);
        }
        match text.parse::<u8>() {
            Ok(day) if day <= 7 => Ok(day),
            _ => anyhow::bail!(
                "a day of the week is 0 to 7 (0 and 7 are Sunday) or its name, not `{text}`"
            ),
        }
    };
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => match step.parse::<u8>() {
                Ok(step) if step > 0 => (range, step),
                _ => anyhow::bail!("a step of days of the week is a positive number, not `{step}`"),
            },
            None => (item, 1),
        };
        let (first, last) = match range.split_once('-') {
            _ if range == "*" => (0, 7),
            Some((first, last)) => (day(first)?, day(last)?),
            // `n/step` runs to the end of the week, 7 (Sunday) included.
            None if item.contains('/') => (day(range)?, 7),
            None => {
                let single = day(range)?;
                (single, single)
            }
        };
        if first > last {
            anyhow::bail!("the days of the week `{range}` run backwards");
        }
        for weekday in (first..=last).step_by(usize::from(step)) {
            days[usize::from(weekday % 7)] = true;
        }
    }
    Ok(days
        .iter()
        .enumerate()
        .filter(|(_, on)| **on)
        .map(|(sunday_first, _)| (sunday_first + 1).to_string())
        .collect::<Vec<_>>()
        .join(","))
}

/// How many projects a replica remembers serving, for taking turns among them.
const SERVED_KEPT: usize = 1024;

/// Claims and runs due jobs on this replica until the server stops.
pub async fn work_forever(state: AppState) {
    let jobs = &state.jobs;
    if jobs.concurrency == 0 {
        tracing::info!("this replica runs no background jobs (NIMBUS_JOBS_CONCURRENCY=0)");
        return;
    }
    let slots = Arc::new(Semaphore::new(jobs.concurrency));
    if let Err(err) = jobs
        .schedule(
            &state,
            PRUNE_KIND,
            "",
            PRUNE_KIND,
            serde_json::Value::Null,
            "17 * * * *",
        )
        .await
    {
        tracing::warn!(error = %err, "cannot set up the pruning of finished jobs");
    }
    // The projects this replica's claims served, the least recent first: a claim
    // shares its room among projects running as many, in turn.
    let mut served: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    // The jobs of each project running here: a quarter of the slots (of four or
    // more) stays for the other projects, whatever one project's jobs wait on.
    let held: Arc<std::sync::Mutex<HashMap<String, usize>>> = Arc::default();
    let cap = jobs.concurrency - jobs.concurrency / 4;
    let mut scan_after = String::new();
    loop {
        take_schedule_ticks(&state).await;
        let free = slots.available_permits();
        let mut claimed_all = false;
        if free > 0 {
            let now = now_millis();
            let owner = format!("{}:{}", jobs.replica, ids::generate());
            let lease_until = now + jobs.lease.as_millis() as i64;
            let held_now = held.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let mut turns = store::Turns {
                served: served.make_contiguous(),
                held: &held_now,
                cap,
                after: std::mem::take(&mut scan_after),
            };
            let claimed = store::claim(
                state.db.pool(),
                state.db.dialect(),
                &owner,
                free,
                now,
                lease_until,
                &mut turns,
            )
            .await;
            scan_after = turns.after;
            match claimed {
                Ok(rows) => {
                    claimed_all = rows.len() == free;
                    for row in &rows {
                        if let Some(at) = served.iter().position(|p| *p == row.project_id) {
                            served.remove(at);
                        } else if served.len() >= SERVED_KEPT {
                            served.pop_front();
                        }
                        served.push_back(row.project_id.clone());
                    }
                    for row in rows {
                        let Ok(permit) = slots.clone().acquire_owned().await else {
                            return;
                        };
                        let state = state.clone();
                        let owner = owner.clone();
                        let holding = Holding::new(&held, &row.project_id);
                        tokio::spawn(async move {
                            run_one(&state, row.into(), &owner).await;
                            drop(holding);
                            drop(permit);
                            state.jobs.wake();
                        });
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot claim jobs"),
            }
        }
        if claimed_all {
            // Every slot was filled: wait for one to free up (it wakes us).
            jobs.wake.notified().await;
            continue;
        }
        tokio::select! {
            _ = jobs.wake.notified() => {}
            _ = tokio::time::sleep(jobs.poll) => {}
        }
    }
}

/// One job of a project running here, counted in its project's share of this
/// replica's slots until dropped (also should the job's task panic).
struct Holding {
    held: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    project: String,
}

impl Holding {
    fn new(held: &Arc<std::sync::Mutex<HashMap<String, usize>>>, project: &str) -> Holding {
        *held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(project.to_string())
            .or_default() += 1;
        Holding {
            held: held.clone(),
            project: project.to_string(),
        }
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.project) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.project);
            }
        }
    }
}

/// Enqueues the job of every schedule tick that is due and no other replica took.
async fn take_schedule_ticks(state: &AppState) {
    let now = now_millis();
    let due = match store::due_schedules(state.db.pool(), now).await {
        Ok(due) => due,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read job schedules");
            return;
        }
    };
    for schedule in due {
        let next = match next_tick(&schedule.cron, now) {
            Ok(next) => next,
            Err(err) => {
                tracing::warn!(schedule = %schedule.id, error = %err, "a stored schedule does not parse");
                continue;
            }
        };
        let taken = async {
            let mut tx = state.db.pool().begin().await?;
            if !store::advance_schedule(&mut *tx, &schedule.id, schedule.next_run_at, next, now)
                .await?
            {
                return Ok::<bool, sqlx::Error>(false);
            }
            let payload = serde_json::from_str(&schedule.payload).unwrap_or_default();
            let job = Job {
                id: ids::generate(),
                project_id: schedule.project_id.clone(),
                kind: schedule.kind.clone(),
                payload,
                dedupe_key: Some(format!("schedule:{}:{}", schedule.id, schedule.next_run_at)),
                status: QUEUED.into(),
                attempts: 0,
                max_attempts: i64::from(state.jobs.max_attempts),
                run_at: now,
                lease_owner: None,
                lease_expires_at: None,
                last_error: None,
                created_at: now,
                updated_at: now,
            };
            store::insert(&mut *tx, state.db.dialect(), &job).await?;
            tx.commit().await?;
            Ok(true)
        }
        .await;
        match taken {
            Ok(true) => tracing::debug!(schedule = %schedule.id, "schedule tick enqueued"),
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(schedule = %schedule.id, error = %err, "cannot take a schedule tick")
            }
        }
    }
}

/// Runs one claimed job and records how it went.
async fn run_one(state: &AppState, job: Job, owner: &str) {
    let jobs = &state.jobs;
    let handler = jobs
        .handlers
        .get()
        .and_then(|handlers| handlers.get(job.kind.as_str()))
        .cloned();
    // The run must end before the lease does, or another replica would start it too.
    let limit = jobs
        .lease
        .saturating_sub(Duration::from_secs(1))
        .max(Duration::from_millis(500));
    let outcome = match (handler, job.kind.as_str()) {
        (_, PRUNE_KIND) => prune(state).await,
        (Some(handler), _) => match tokio::time::timeout(limit, handler.run(state, &job)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Retry(format!("did not finish within {limit:?}"))),
        },
        (None, kind) => Err(Failure::Permanent(format!(
            "no handler for jobs of kind `{kind}`"
        ))),
    };
    let now = now_millis();
    // How the run went, as the job's row records it: done, or failed with its error
    // and when to try again (`None`: dead).
    let failed = match outcome {
        Ok(()) => {
            metrics::counter!("nimbus_jobs_total", "kind" => job.kind.clone(), "outcome" => "done")
                .increment(1);
            None
        }
        Err(failure) => {
            let (error, retry) = match failure {
                Failure::Retry(error) => (error, job.attempts < job.max_attempts),
                Failure::Permanent(error) => (error, false),
            };
            let error: String = error.chars().take(MAX_ERROR_CHARS).collect();
            let retry_at = retry.then(|| now + jobs.backoff(job.attempts).as_millis() as i64);
            let outcome = if retry { "retry" } else { "dead" };
            metrics::counter!("nimbus_jobs_total", "kind" => job.kind.clone(), "outcome" => outcome)
                .increment(1);
            tracing::info!(job = %job.id, kind = %job.kind, attempt = job.attempts, %error, outcome, "a job failed");
            Some((error, retry_at))
        }
    };
    // A deadlock (MariaDB, against the claims of other workers) rolled the update
    // back and is gone when tried again; left alone, the job would run again once
    // its lease ran out.
    let mut tries = 0;
    let recorded = loop {
        tries += 1;
        let recorded = match &failed {
            None => store::finish(state.db.pool(), &job.id, owner, now).await,
            Some((error, retry_at)) => {
                store::fail(state.db.pool(), &job.id, owner, error, *retry_at, now).await
            }
        };
        match recorded {
            Err(err) if tries < RECORD_TRIES && is_deadlock(&err) => {
                // Tried again at once, the same claims may win again: wait a
                // moment that grows and differs between workers.
                let ceiling = 2u64 << tries.min(6);
                let wait = Duration::from_millis(rand::rng().random_range(1..=ceiling));
                tokio::time::sleep(wait).await;
            }
            recorded => break recorded,
        }
    };
    match recorded {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(job = %job.id, "a job's lease was taken over before it finished")
        }
        Err(err) => {
            tracing::warn!(job = %job.id, error = %err, "cannot record a job's outcome; it runs again after its lease")
        }
    }
}

/// Tries at recording a job's outcome when the database answers with a deadlock:
/// a storm of claims beside the outcomes can pick the same victim a few times
/// in a row, and every try given up runs the job a second time.
const RECORD_TRIES: u32 = 10;

/// Whether the database rolled a statement back as a deadlock victim (SQLSTATE
/// 40001), which succeeds when tried again.
fn is_deadlock(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "40001")
}

/// Deletes finished jobs past retention.
async fn prune(state: &AppState) -> Result<(), Failure> {
    let before = now_millis() - state.jobs.retention.as_millis() as i64;
    store::prune_done(state.db.pool(), before)
        .await
        .map(|_| ())
        .map_err(|err| Failure::Retry(format!("cannot prune finished jobs: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let mut config = Config::with_data_dir(std::env::temp_dir());
        config.jobs_retry_base_ms = 1000;
        let jobs = Jobs::new(&config);
        for (attempt, full) in [(1, 1000), (2, 2000), (3, 4000), (10, 512_000)] {
            let wait = jobs.backoff(attempt).as_millis() as u64;
            assert!((full / 2..=full).contains(&wait), "{attempt}: {wait}");
        }
        assert!(jobs.backoff(40) <= MAX_BACKOFF);
    }

    #[test]
    fn cron_reads_five_and_six_fields() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:00:30Z")
            .unwrap()
            .timestamp_millis();
        let next = next_tick("*/5 * * * *", at).unwrap();
        assert_eq!(
            chrono::DateTime::from_timestamp_millis(next)
                .unwrap()
                .to_rfc3339(),
            "2026-01-01T10:05:00+00:00"
        );
        let next = next_tick("*/10 * * * * *", at).unwrap();
        assert_eq!(next - at, 10_000);
        assert!(next_tick("every minute", at).is_err());
        assert!(next_tick("61 * * * *", at).is_err());
    }

    fn next_at(cron: &str, after: &str) -> String {
        let after = chrono::DateTime::parse_from_rfc3339(after)
            .unwrap()
            .timestamp_millis();
        let next = next_tick(cron, after).unwrap_or_else(|err| panic!("{cron}: {err}"));
        chrono::DateTime::from_timestamp_millis(next)
            .unwrap()
            .to_rfc3339()
    }

    #[test]
    fn days_of_the_week_count_as_crontab_counts_them() {
        // 2026-01-02 is a Friday.
        let friday = "2026-01-02T10:00:00Z";
        assert_eq!(next_at("0 9 * * 1-5", friday), "2026-01-05T09:00:00+00:00");
        assert_eq!(
            next_at("0 9 * * MON-FRI", friday),
            "2026-01-05T09:00:00+00:00"
        );
        assert_eq!(next_at("0 0 * * 0", friday), "2026-01-04T00:00:00+00:00");
        assert_eq!(next_at("0 0 * * 7", friday), "2026-01-04T00:00:00+00:00");
        assert_eq!(next_at("0 0 * * 6", friday), "2026-01-03T00:00:00+00:00");
        assert_eq!(next_at("0 0 * * 5-7", friday), "2026-01-03T00:00:00+00:00");
        assert_eq!(next_at("0 0 * * 1,3", friday), "2026-01-05T00:00:00+00:00");
        assert_eq!(
            next_at("0 0 * * 1-5/2", "2026-01-05T10:00:00Z"),
            "2026-01-07T00:00:00+00:00"
        );
        assert_eq!(next_at("0 0 * * */3", friday), "2026-01-03T00:00:00+00:00");
        assert_eq!(next_at("0 0 0 * * 1", friday), "2026-01-05T00:00:00+00:00");
        // Names and numbers mix; `n/step` reaches Sunday as 7.
        assert_eq!(
            next_at("0 0 * * SUN,1-5", friday),
            "2026-01-04T00:00:00+00:00"
        );
        assert_eq!(
            next_at("0 0 * * MON,5", "2026-01-06T10:00:00Z"),
            "2026-01-09T00:00:00+00:00"
        );
        assert_eq!(next_at("0 0 * * 1/3", friday), "2026-01-04T00:00:00+00:00");
        // A day of the month and a day of the week: either one.
        assert_eq!(next_at("0 0 15 * 1", friday), "2026-01-05T00:00:00+00:00");
        assert_eq!(next_at("0 0 3 * 1", friday), "2026-01-03T00:00:00+00:00");
        for bad in [
            "0 0 * * 8",
            "0 0 * * 5-1",
            "0 0 * * 1/0",
            "0 0 * * -1",
            "0 0 * * 1,",
        ] {
            assert!(next_tick(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn shorthands_stand_for_their_schedules() {
        let friday = "2026-01-02T10:00:00Z";
        assert_eq!(next_at("@hourly", friday), "2026-01-02T11:00:00+00:00");
        assert_eq!(next_at("@daily", friday), "2026-01-03T00:00:00+00:00");
        assert_eq!(next_at("@midnight", friday), "2026-01-03T00:00:00+00:00");
        assert_eq!(next_at("@weekly", friday), "2026-01-04T00:00:00+00:00");
        assert_eq!(next_at("@monthly", friday), "2026-02-01T00:00:00+00:00");
        assert_eq!(next_at("@yearly", friday), "2027-01-01T00:00:00+00:00");
        assert_eq!(next_at("@annually", friday), "2027-01-01T00:00:00+00:00");
        assert!(next_tick("@often", 0).is_err());
    }
}
