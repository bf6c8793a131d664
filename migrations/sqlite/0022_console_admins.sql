-- Console administrators: server-wide (no project), created with `nimbus admin
-- create`. Email is stored lowercased and unique. `password_hash` holds the stored
-- form of src/auth/passwords.rs (argon2id). The TOTP secret is sealed (AES-256-GCM
-- under the server secret); `totp_pending` holds an enrolment not yet confirmed with
-- a code, and `totp_last_step` the last time step accepted, so a code is not replayed.
CREATE TABLE console_admins (
    id             TEXT NOT NULL PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    totp_secret    TEXT NULL,
    totp_pending   TEXT NULL,
    totp_last_step BIGINT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

-- A signed-in console: only the SHA-256 of the cookie's secret is kept. It ends when
-- unused for the idle lifetime (`last_used_at`, refreshed at most once a minute), at
-- `expires_at` whatever its use, at sign-out, or with its administrator.
CREATE TABLE console_sessions (
    id           TEXT NOT NULL PRIMARY KEY,
    admin_id     TEXT NOT NULL REFERENCES console_admins (id) ON DELETE CASCADE,
    secret_hash  TEXT NOT NULL,
    ip           TEXT NOT NULL DEFAULT '',
    user_agent   TEXT NOT NULL DEFAULT '',
    last_used_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX console_sessions_of_admin ON console_sessions (admin_id);

-- Who acted on a user's account when it was not the user: `key:ID` for an API key,
-- `admin:EMAIL` for a console administrator; empty for the user themself.
ALTER TABLE activity_logs ADD COLUMN actor TEXT NOT NULL DEFAULT '';
