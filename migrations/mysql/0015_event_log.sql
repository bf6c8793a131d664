-- The event log: every change's event (documents, files, teams, memberships, keys,
-- users and sessions, projects and their structure), written in the transaction
-- that makes the change, as its last statement before COMMIT. Replicas deliver to
-- their subscribers from it in position order and catch up from it after a bus
-- gap; the bus only carries notifications. Rows older than the retention
-- (NIMBUS_EVENT_RETENTION) are pruned. No foreign key to projects: a project's
-- deletion is itself an event.
--
-- Positions are auto-increment ids, taken at insert, not at commit: a reader that
-- finds a gap waits for it to fill (a transaction between its insert and its
-- commit) before passing it (a rollback leaves a gap for good); see ADR 18.
CREATE TABLE event_log (
    position   BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    project_id VARCHAR(36)  NOT NULL,
    created_at BIGINT       NOT NULL,
    -- The message as JSON (the bus message the subscribers see), read as bytes
    -- (ADR 0001).
    body       MEDIUMTEXT   NOT NULL,
    KEY event_log_project (project_id, position),
    KEY event_log_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
