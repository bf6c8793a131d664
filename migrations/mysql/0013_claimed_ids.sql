-- Every team and user id a project ever gave out. Permissions name teams and users
-- by id (`team:T`, `team:T/ROLE`, `user:U`) on documents, files, buckets and
-- collections, and those grants outlive the team or user; an id is therefore never
-- given to a second team or user, so a newcomer cannot inherit what was granted to
-- a deleted one. Rows are never removed (only with their project).
CREATE TABLE claimed_ids (
    project_id VARCHAR(36) NOT NULL,
    kind       VARCHAR(16) NOT NULL,
    id         VARCHAR(36) NOT NULL,
    PRIMARY KEY (project_id, kind, id),
    CONSTRAINT claimed_ids_project FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
INSERT INTO claimed_ids (project_id, kind, id) SELECT project_id, 'team', id FROM teams;
INSERT INTO claimed_ids (project_id, kind, id) SELECT project_id, 'user', id FROM users;
