-- The event log: every change's event (documents, files, teams, memberships, keys,
-- users and sessions, projects and their structure), written in the transaction
-- that makes the change. Replicas deliver to their subscribers from it in position
-- order and catch up from it after a bus gap; the bus only carries notifications.
-- Rows older than the retention (NIMBUS_EVENT_RETENTION) are pruned. No foreign key
-- to projects: a project's deletion is itself an event.
CREATE TABLE event_log (
    position   INTEGER NOT NULL PRIMARY KEY,
    project_id TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    -- The message as JSON (the bus message the subscribers see).
    body       TEXT    NOT NULL
);
CREATE INDEX event_log_project ON event_log (project_id, position);
CREATE INDEX event_log_created ON event_log (created_at);

-- The last position given out, bumped by a logging transaction as its last
-- statement (SQLite has one writer, so positions follow commit order).
CREATE TABLE event_head (
    id       INTEGER NOT NULL PRIMARY KEY,
    position INTEGER NOT NULL
);
INSERT INTO event_head (id, position) VALUES (1, 0);
