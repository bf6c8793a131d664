-- The event log: every change's event (documents, files, teams, memberships, keys,
-- users and sessions, projects and their structure), written in the transaction
-- that makes the change, as its last statement before COMMIT. Replicas deliver to
-- their subscribers from it in position order and catch up from it after a bus
-- gap; the bus only carries notifications. Rows older than the retention
-- (NIMBUS_EVENT_RETENTION) are pruned. No foreign key to projects: a project's
-- deletion is itself an event.
--
-- AUTOINCREMENT: a position is never given out twice, even once every row older
-- than it was pruned. SQLite has one writer, so positions follow commit order.
CREATE TABLE event_log (
    position   INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    project_id TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    -- The message as JSON (the bus message the subscribers see).
    body       TEXT    NOT NULL
);
CREATE INDEX event_log_project ON event_log (project_id, position);
CREATE INDEX event_log_created ON event_log (created_at);
