-- The event log: every change's event (documents, files, teams, memberships, keys,
-- users and sessions, projects and their structure), written in the transaction
-- that makes the change. Replicas deliver to their subscribers from it in position
-- order and catch up from it after a bus gap; the bus only carries notifications.
-- Rows older than the retention (NIMBUS_EVENT_RETENTION) are pruned. No foreign key
-- to projects: a project's deletion is itself an event.
CREATE TABLE event_log (
    position   BIGINT       NOT NULL PRIMARY KEY,
    project_id VARCHAR(36)  NOT NULL,
    created_at BIGINT       NOT NULL,
    -- The message as JSON (the bus message the subscribers see), read as bytes (ADR 0001).
    body       MEDIUMTEXT   NOT NULL,
    KEY event_log_project (project_id, position),
    KEY event_log_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The last position given out. A transaction that logs bumps it as its last
-- statement before COMMIT: the row lock is held only until the commit, so positions
-- are given out in commit order and a reader tailing by position never passes one
-- a still-open transaction will fill (auto-increment ids are taken at insert, not
-- at commit, and would let it). A rollback gives its positions back: no gaps.
CREATE TABLE event_head (
    id       INT    NOT NULL PRIMARY KEY,
    position BIGINT NOT NULL
) ENGINE = InnoDB;
INSERT INTO event_head (id, position) VALUES (1, 0);
