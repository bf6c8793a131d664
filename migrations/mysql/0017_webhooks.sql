-- Webhooks of a project: where to POST which events. `events` is a JSON array of
-- Appwrite event patterns (`*` matches one segment), MEDIUMTEXT read as bytes (ADR 0001). The signing secret must be read
-- back to sign, so it is sealed with the server secret, never stored in clear.
-- `failures` counts consecutive failed deliveries; at the configured threshold the
-- webhook is disabled (`enabled` 0) until an update enables it again.
CREATE TABLE webhooks (
    project_id VARCHAR(36) NOT NULL,
    id         VARCHAR(36) NOT NULL,
    name       VARCHAR(128) NOT NULL,
    url        VARCHAR(2048) NOT NULL,
    events     MEDIUMTEXT NOT NULL,
    enabled    SMALLINT NOT NULL,
    tls_verify SMALLINT NOT NULL,
    secret     VARCHAR(512) NOT NULL,
    failures   BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, id),
    CONSTRAINT webhooks_project FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per delivery attempt: what the receiver answered (status, time taken, the
-- start of its body), or why nothing came back. Pruned with finished jobs.
CREATE TABLE webhook_deliveries (
    id               VARCHAR(36) NOT NULL PRIMARY KEY,
    project_id       VARCHAR(36) NOT NULL,
    webhook_id       VARCHAR(36) NOT NULL,
    event_id         VARCHAR(64) NOT NULL,
    job_id           VARCHAR(36) NOT NULL,
    attempt          BIGINT NOT NULL,
    status_code      BIGINT NULL,
    duration_ms      BIGINT NOT NULL,
    success          SMALLINT NOT NULL,
    error            VARCHAR(1024) NULL,
    response_excerpt VARCHAR(1024) NULL,
    created_at       BIGINT NOT NULL,
    INDEX webhook_deliveries_by_webhook (project_id, webhook_id, id),
    INDEX webhook_deliveries_by_age (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
