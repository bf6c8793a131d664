-- Projects: isolated tenants of one server. Every table of every service carries a
-- project_id, and every query filters on it. Binary collation keeps ids and names
-- case-sensitive, as they are on SQLite. Strings are VARCHAR, never TEXT: through
-- sqlx's Any driver a MariaDB TEXT column reads only as bytes (see ADR 0001).
CREATE TABLE projects (
    id          VARCHAR(36) NOT NULL PRIMARY KEY,
    name        VARCHAR(128) NOT NULL,
    description VARCHAR(1024) NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- API keys: server-side credentials of a project. Only the SHA-256 of the secret is
-- kept; `scopes` is a JSON array of scope names; `admin` keys reach every project.
CREATE TABLE api_keys (
    id          VARCHAR(36) NOT NULL PRIMARY KEY,
    project_id  VARCHAR(36) NOT NULL,
    name        VARCHAR(128) NOT NULL,
    secret_hash CHAR(64) NOT NULL,
    scopes      VARCHAR(2048) NOT NULL,
    expires_at  BIGINT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    INDEX api_keys_by_project (project_id, id),
    CONSTRAINT api_keys_project FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One-time server facts, e.g. that the first admin key was generated; the primary key
-- makes "first" true on exactly one replica.
CREATE TABLE server_state (
    name  VARCHAR(64) NOT NULL PRIMARY KEY,
    value VARCHAR(1024) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
