-- A structure change written down before its DDL (see the MariaDB migration):
-- SQLite's DDL is transactional, so the table stays empty here; it exists so
-- both backends have the same tables.
CREATE TABLE structure_intents (
    project_id      TEXT NOT NULL PRIMARY KEY,
    database_id     TEXT NOT NULL,
    collection_id   TEXT NOT NULL,
    version         INTEGER,
    undo_statements TEXT NOT NULL,
    finish_statements TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
