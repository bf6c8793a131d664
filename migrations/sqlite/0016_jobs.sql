-- Durable background work (emails, webhook deliveries): a job is written in the
-- transaction of the change that asks for it, so a crash or restart loses nothing.
-- A replica claims due jobs by writing its lease (owner token and expiry) into them;
-- a job whose lease expired (its replica died) is claimed again by another.
-- `dedupe_key`, when set, makes an enqueue idempotent (one delivery per webhook and
-- event, one job per schedule tick). Timestamps are milliseconds since the epoch.
CREATE TABLE jobs (
    id               TEXT NOT NULL PRIMARY KEY,
    project_id       TEXT NOT NULL,
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    dedupe_key       TEXT NULL UNIQUE,
    -- queued | running | done | dead
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL,
    max_attempts     BIGINT NOT NULL,
    run_at           BIGINT NOT NULL,
    lease_owner      TEXT NULL,
    lease_expires_at BIGINT NULL,
    last_error       TEXT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX jobs_due ON jobs (status, run_at);
CREATE INDEX jobs_leases ON jobs (status, lease_expires_at);
CREATE INDEX jobs_by_owner ON jobs (lease_owner);
CREATE INDEX jobs_by_project ON jobs (project_id, id);

-- Recurring jobs: a CRON expression and the time of its next tick. A replica takes
-- a tick by moving `next_run_at` forward from the value it read (compare and set),
-- so exactly one replica enqueues each tick.
CREATE TABLE job_schedules (
    id          TEXT NOT NULL PRIMARY KEY,
    project_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    cron        TEXT NOT NULL,
    next_run_at BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX job_schedules_due ON job_schedules (next_run_at);
