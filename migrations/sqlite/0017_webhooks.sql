-- Webhooks of a project: where to POST which events. `events` is a JSON array of
-- Appwrite event patterns (`*` matches one segment). The signing secret must be read
-- back to sign, so it is sealed with the server secret, never stored in clear.
-- `failures` counts consecutive failed deliveries; at the configured threshold the
-- webhook is disabled (`enabled` 0) until an update enables it again.
CREATE TABLE webhooks (
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    id         TEXT NOT NULL,
    name       TEXT NOT NULL,
    url        TEXT NOT NULL,
    events     TEXT NOT NULL,
    enabled    SMALLINT NOT NULL,
    tls_verify SMALLINT NOT NULL,
    secret     TEXT NOT NULL,
    failures   BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, id)
);

-- One row per delivery attempt: what the receiver answered (status, time taken, the
-- start of its body), or why nothing came back. Pruned with finished jobs.
CREATE TABLE webhook_deliveries (
    id               TEXT NOT NULL PRIMARY KEY,
    project_id       TEXT NOT NULL,
    webhook_id       TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    job_id           TEXT NOT NULL,
    attempt          BIGINT NOT NULL,
    status_code      BIGINT NULL,
    duration_ms      BIGINT NOT NULL,
    success          SMALLINT NOT NULL,
    error            TEXT NULL,
    response_excerpt TEXT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (project_id, webhook_id, id);
CREATE INDEX webhook_deliveries_by_age ON webhook_deliveries (created_at);
