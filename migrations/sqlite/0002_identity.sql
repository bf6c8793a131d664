-- Users of a project: who signs in to the project's apps. Email is stored lowercased;
-- each email and phone is unique within a project. `password_hash` holds the stored
-- form of src/auth/passwords.rs (argon2id, or an imported algorithm until the next
-- sign-in re-hashes it). Booleans are 0/1 integers, JSON lives in text/blob columns.
CREATE TABLE users (
    project_id          TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    id                  TEXT NOT NULL,
    name                TEXT NOT NULL DEFAULT '',
    email               TEXT NULL,
    phone               TEXT NULL,
    password_hash       TEXT NULL,
    password_history    BLOB NULL,
    password_updated_at BIGINT NULL,
    status              SMALLINT NOT NULL DEFAULT 1,
    email_verified      SMALLINT NOT NULL DEFAULT 0,
    phone_verified      SMALLINT NOT NULL DEFAULT 0,
    labels              TEXT NOT NULL DEFAULT '[]',
    prefs               BLOB NULL,
    accessed_at         BIGINT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (project_id, id)
);
CREATE UNIQUE INDEX users_email ON users (project_id, email);
CREATE UNIQUE INDEX users_phone ON users (project_id, phone);

-- Sessions: a signed-in device. Only the SHA-256 of the session secret is kept.
CREATE TABLE sessions (
    project_id  TEXT NOT NULL,
    id          TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    provider    TEXT NOT NULL,
    ip          TEXT NOT NULL DEFAULT '',
    user_agent  TEXT NOT NULL DEFAULT '',
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (project_id, id),
    FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, id) ON DELETE CASCADE
);
CREATE INDEX sessions_by_user ON sessions (project_id, user_id, created_at);
