-- One-time secrets sent to a user by email: verification and recovery links, magic
-- sign-in links, sign-in codes. Only the SHA-256 of the secret is kept; a token is
-- deleted when used.
CREATE TABLE tokens (
    project_id  TEXT NOT NULL,
    id          TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (project_id, id),
    FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, id) ON DELETE CASCADE
);
CREATE INDEX tokens_of_user ON tokens (project_id, user_id, kind);
