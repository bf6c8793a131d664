-- An invitation by email to an address with no account names the address, not a
-- user: the user is created only when the invitation is accepted through the emailed
-- link (which proves the mailbox), so inviting creates no account for an address
-- nobody proved. `email` and `invite_name` (the name the invitee's account gets)
-- are kept only while such an invitation waits; accepting sets `user_id` and
-- clears them. SQLite cannot drop a NOT NULL constraint, so the table is rebuilt.
CREATE TABLE memberships_new (
    project_id         TEXT NOT NULL,
    id                 TEXT NOT NULL,
    team_id            TEXT NOT NULL,
    user_id            TEXT NULL,
    email              TEXT NULL,
    invite_name        TEXT NULL,
    roles              TEXT NOT NULL,
    confirmed          SMALLINT NOT NULL,
    joined_at          BIGINT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    invite_secret_hash TEXT NULL,
    PRIMARY KEY (project_id, id),
    FOREIGN KEY (project_id, team_id) REFERENCES teams (project_id, id) ON DELETE CASCADE,
    FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, id) ON DELETE CASCADE,
    CHECK (user_id IS NOT NULL OR (email IS NOT NULL AND confirmed = 0))
);
INSERT INTO memberships_new (project_id, id, team_id, user_id, roles, confirmed, joined_at,
                             created_at, updated_at, invite_secret_hash)
    SELECT project_id, id, team_id, user_id, roles, confirmed, joined_at, created_at,
           updated_at, invite_secret_hash
    FROM memberships;
DROP TABLE memberships;
ALTER TABLE memberships_new RENAME TO memberships;
CREATE UNIQUE INDEX memberships_of_team ON memberships (project_id, team_id, user_id);
CREATE INDEX memberships_of_user ON memberships (project_id, user_id);
CREATE UNIQUE INDEX memberships_invited ON memberships (project_id, team_id, email);
