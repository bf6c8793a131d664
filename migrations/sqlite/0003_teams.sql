-- Teams of a project's users, and their memberships. A confirmed membership gives
-- its user the roles `team:T`, `team:T/ROLE` for each of its roles, and `member:M`.
CREATE TABLE teams (
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    id         TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, id)
);

CREATE TABLE memberships (
    project_id TEXT NOT NULL,
    id         TEXT NOT NULL,
    team_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    roles      TEXT NOT NULL,
    confirmed  SMALLINT NOT NULL,
    joined_at  BIGINT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, id),
    FOREIGN KEY (project_id, team_id) REFERENCES teams (project_id, id) ON DELETE CASCADE,
    FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX memberships_of_team ON memberships (project_id, team_id, user_id);
CREATE INDEX memberships_of_user ON memberships (project_id, user_id);
