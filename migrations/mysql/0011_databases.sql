-- Databases and their collections. Each collection is a real table (`table_name`,
-- with a `<table>_perms` side table of document permissions); its attributes,
-- relationships and indexes are kept here as JSON, with `version` bumped on every
-- structural change so that two concurrent changes cannot overwrite each other.
-- The JSON columns are MEDIUMTEXT, read as bytes (ADR 0001).
CREATE TABLE db_databases (
    project_id VARCHAR(36) NOT NULL,
    id         VARCHAR(36) NOT NULL,
    name       VARCHAR(128) NOT NULL,
    enabled    SMALLINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, id),
    CONSTRAINT db_databases_project FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE db_collections (
    project_id        VARCHAR(36) NOT NULL,
    database_id       VARCHAR(36) NOT NULL,
    id                VARCHAR(36) NOT NULL,
    name              VARCHAR(128) NOT NULL,
    type_name         VARCHAR(64) NOT NULL,
    table_name        VARCHAR(64) NOT NULL,
    document_security SMALLINT NOT NULL,
    enabled           SMALLINT NOT NULL,
    permissions       MEDIUMTEXT NOT NULL,
    attributes        MEDIUMTEXT NOT NULL,
    indexes           MEDIUMTEXT NOT NULL,
    relationships     MEDIUMTEXT NOT NULL,
    version           BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (project_id, database_id, id),
    UNIQUE INDEX db_collections_type_name (project_id, type_name),
    UNIQUE INDEX db_collections_table (table_name),
    CONSTRAINT db_collections_database FOREIGN KEY (project_id, database_id) REFERENCES db_databases (project_id, id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
