-- Console administrators: server-wide (no project), created with `nimbus admin
-- create`. Email is stored lowercased and unique. `password_hash` holds the stored
-- form of src/auth/passwords.rs (argon2id). The TOTP secret is sealed (AES-256-GCM
-- under the server secret); `totp_pending` holds an enrolment not yet confirmed with
-- a code, and `totp_last_step` the last time step accepted, so a code is not replayed.
CREATE TABLE console_admins (
    id             VARCHAR(36) NOT NULL,
    email          VARCHAR(320) NOT NULL,
    password_hash  VARCHAR(1024) NOT NULL,
    totp_secret    VARCHAR(512) NULL,
    totp_pending   VARCHAR(512) NULL,
    totp_last_step BIGINT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (id),
    UNIQUE INDEX console_admins_email (email)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- A signed-in console: only the SHA-256 of the cookie's secret is kept. It ends when
-- unused for the idle lifetime (`last_used_at`, refreshed at most once a minute), at
-- `expires_at` whatever its use, at sign-out, or with its administrator.
CREATE TABLE console_sessions (
    id           VARCHAR(36) NOT NULL,
    admin_id     VARCHAR(36) NOT NULL,
    secret_hash  CHAR(64) NOT NULL,
    ip           VARCHAR(64) NOT NULL DEFAULT '',
    user_agent   VARCHAR(512) NOT NULL DEFAULT '',
    last_used_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (id),
    INDEX console_sessions_of_admin (admin_id),
    CONSTRAINT console_sessions_admin FOREIGN KEY (admin_id) REFERENCES console_admins (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Who acted on a user's account when it was not the user: `key:ID` for an API key,
-- `admin:EMAIL` for a console administrator; empty for the user themself.
ALTER TABLE activity_logs ADD COLUMN actor VARCHAR(400) NOT NULL DEFAULT '';
