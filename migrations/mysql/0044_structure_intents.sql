-- A MariaDB structure change written down before its DDL, which commits by
-- itself: should its replica or the database die between the DDL and the
-- metadata, whoever next takes the project's structure lock finds it here and
-- settles it (its undo when the metadata did not commit; what finishes it, its
-- drops, when it did). One change at a time holds a project's lock, so one row
-- per project.
CREATE TABLE structure_intents (
    project_id      VARCHAR(36) NOT NULL,
    database_id     VARCHAR(36) NOT NULL,
    collection_id   VARCHAR(36) NOT NULL,
    version         BIGINT NULL,
    undo_statements MEDIUMTEXT NOT NULL,
    finish_statements MEDIUMTEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (project_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
