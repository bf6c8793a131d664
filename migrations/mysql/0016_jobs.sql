-- Durable background work (emails, webhook deliveries): a job is written in the
-- transaction of the change that asks for it, so a crash or restart loses nothing.
-- A replica claims due jobs by writing its lease (owner token and expiry) into them;
-- a job whose lease expired (its replica died) is claimed again by another.
-- `dedupe_key`, when set, makes an enqueue idempotent (one delivery per webhook and
-- event, one job per schedule tick). Timestamps are milliseconds since the epoch;
-- payloads are JSON in MEDIUMTEXT, read as bytes (ADR 0001).
CREATE TABLE jobs (
    id               VARCHAR(36) NOT NULL PRIMARY KEY,
    project_id       VARCHAR(36) NOT NULL,
    kind             VARCHAR(64) NOT NULL,
    payload          MEDIUMTEXT NOT NULL,
    dedupe_key       VARCHAR(255) NULL,
    -- queued | running | done | dead
    status           VARCHAR(16) NOT NULL,
    attempts         BIGINT NOT NULL,
    max_attempts     BIGINT NOT NULL,
    run_at           BIGINT NOT NULL,
    lease_owner      VARCHAR(64) NULL,
    lease_expires_at BIGINT NULL,
    last_error       VARCHAR(1024) NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE KEY jobs_dedupe (dedupe_key),
    INDEX jobs_due (status, run_at),
    INDEX jobs_leases (status, lease_expires_at),
    INDEX jobs_by_owner (lease_owner),
    INDEX jobs_by_project (project_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Recurring jobs: a CRON expression and the time of its next tick. A replica takes
-- a tick by moving `next_run_at` forward from the value it read (compare and set),
-- so exactly one replica enqueues each tick.
CREATE TABLE job_schedules (
    id          VARCHAR(64) NOT NULL PRIMARY KEY,
    project_id  VARCHAR(36) NOT NULL,
    kind        VARCHAR(64) NOT NULL,
    payload     MEDIUMTEXT NOT NULL,
    cron        VARCHAR(255) NOT NULL,
    next_run_at BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    INDEX job_schedules_due (next_run_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
