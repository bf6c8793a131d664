-- Users of a project: who signs in to the project's apps. Email is stored lowercased;
-- each email and phone is unique within a project. `password_hash` holds the stored
-- form of src/auth/passwords.rs (argon2id, or an imported algorithm until the next
-- sign-in re-hashes it). Booleans are SMALLINT 0/1 and JSON lives in VARCHAR or BLOB
-- columns: the types sqlx's Any driver reads (ADR 0001).
CREATE TABLE users (
    project_id          VARCHAR(36) NOT NULL,
    id                  VARCHAR(36) NOT NULL,
    name                VARCHAR(128) NOT NULL DEFAULT '',
    email               VARCHAR(320) NULL,
    phone               VARCHAR(20) NULL,
    password_hash       VARCHAR(1024) NULL,
    password_history    BLOB NULL,
    password_updated_at BIGINT NULL,
    status              SMALLINT NOT NULL DEFAULT 1,
    email_verified      SMALLINT NOT NULL DEFAULT 0,
    phone_verified      SMALLINT NOT NULL DEFAULT 0,
    labels              VARCHAR(2048) NOT NULL DEFAULT '[]',
    prefs               BLOB NULL,
    accessed_at         BIGINT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (project_id, id),
    UNIQUE INDEX users_email (project_id, email),
    UNIQUE INDEX users_phone (project_id, phone),
    CONSTRAINT users_project FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Sessions: a signed-in device. Only the SHA-256 of the session secret is kept.
CREATE TABLE sessions (
    project_id  VARCHAR(36) NOT NULL,
    id          VARCHAR(36) NOT NULL,
    user_id     VARCHAR(36) NOT NULL,
    secret_hash CHAR(64) NOT NULL,
    provider    VARCHAR(32) NOT NULL,
    ip          VARCHAR(64) NOT NULL DEFAULT '',
    user_agent  VARCHAR(512) NOT NULL DEFAULT '',
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (project_id, id),
    INDEX sessions_by_user (project_id, user_id, created_at),
    CONSTRAINT sessions_user FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
