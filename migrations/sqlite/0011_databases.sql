-- Databases and their collections. Each collection is a real table (`table_name`,
-- with a `<table>_perms` side table of document permissions); its attributes,
-- relationships and indexes are kept here as JSON, with `version` bumped on every
-- structural change so that two concurrent changes cannot overwrite each other.
CREATE TABLE db_databases (
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    id         TEXT NOT NULL,
    name       TEXT NOT NULL,
    enabled    SMALLINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, id)
);

CREATE TABLE db_collections (
    project_id        TEXT NOT NULL,
    database_id       TEXT NOT NULL,
    id                TEXT NOT NULL,
    name              TEXT NOT NULL,
    type_name         TEXT NOT NULL,
    table_name        TEXT NOT NULL,
    document_security SMALLINT NOT NULL,
    enabled           SMALLINT NOT NULL,
    permissions       TEXT NOT NULL,
    attributes        TEXT NOT NULL,
    indexes           TEXT NOT NULL,
    relationships     TEXT NOT NULL,
    version           BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (project_id, database_id, id),
    FOREIGN KEY (project_id, database_id) REFERENCES db_databases (project_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX db_collections_type_name ON db_collections (project_id, type_name);
CREATE UNIQUE INDEX db_collections_table ON db_collections (table_name);
