-- Teams of a project's users, and their memberships. A confirmed membership gives
-- its user the roles `team:T`, `team:T/ROLE` for each of its roles, and `member:M`.
CREATE TABLE teams (
    project_id VARCHAR(36) NOT NULL,
    id         VARCHAR(36) NOT NULL,
    name       VARCHAR(128) NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, id),
    CONSTRAINT teams_project FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE memberships (
    project_id VARCHAR(36) NOT NULL,
    id         VARCHAR(36) NOT NULL,
    team_id    VARCHAR(36) NOT NULL,
    user_id    VARCHAR(36) NOT NULL,
    roles      VARCHAR(2048) NOT NULL,
    confirmed  SMALLINT NOT NULL,
    joined_at  BIGINT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, id),
    UNIQUE INDEX memberships_of_team (project_id, team_id, user_id),
    INDEX memberships_of_user (project_id, user_id),
    CONSTRAINT memberships_team FOREIGN KEY (project_id, team_id) REFERENCES teams (project_id, id) ON DELETE CASCADE,
    CONSTRAINT memberships_user FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
