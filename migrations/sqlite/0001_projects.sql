-- Projects: isolated tenants of one server. Every table of every service carries a
-- project_id, and every query filters on it.
CREATE TABLE projects (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- API keys: server-side credentials of a project. Only the SHA-256 of the secret is
-- kept; `scopes` is a JSON array of scope names; `admin` keys reach every project.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY NOT NULL,
    project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    expires_at  BIGINT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX api_keys_by_project ON api_keys (project_id, id);

-- One-time server facts, e.g. that the first admin key was generated; the primary key
-- makes "first" true on exactly one replica.
CREATE TABLE server_state (
    name  TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
