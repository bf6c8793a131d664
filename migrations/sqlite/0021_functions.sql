-- Functions of a project: user code run in the JavaScript sandbox. `execute`,
-- `events` and `scopes` are JSON arrays (roles that may run it, Appwrite event
-- patterns, the API scopes its own `nimbus.graphql` calls get); `schedule` a CRON
-- expression or NULL; `timeout` in seconds, `memory` in MiB. `deployment_id` is the
-- active deployment, NULL until one is activated.
CREATE TABLE functions (
    project_id    TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    id            TEXT NOT NULL,
    name          TEXT NOT NULL,
    runtime       TEXT NOT NULL,
    entrypoint    TEXT NOT NULL,
    execute       TEXT NOT NULL,
    events        TEXT NOT NULL,
    schedule      TEXT NULL,
    timeout       BIGINT NOT NULL,
    memory        BIGINT NOT NULL,
    enabled       SMALLINT NOT NULL,
    scopes        TEXT NOT NULL,
    deployment_id TEXT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (project_id, id)
);

-- A function's variables, given to its code as `env`. Values are sealed with a key
-- derived from the server secret (AES-256-GCM), never stored in clear.
CREATE TABLE function_variables (
    project_id  TEXT NOT NULL,
    function_id TEXT NOT NULL,
    var_key     TEXT NOT NULL,
    value       TEXT NOT NULL,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (project_id, function_id, var_key),
    FOREIGN KEY (project_id, function_id) REFERENCES functions (project_id, id) ON DELETE CASCADE
);

-- Uploaded code, compiled once: `program` holds the compiled modules the sandbox
-- runs, `source_size` the size of what was uploaded.
CREATE TABLE function_deployments (
    project_id  TEXT NOT NULL,
    function_id TEXT NOT NULL,
    id          TEXT NOT NULL,
    entrypoint  TEXT NOT NULL,
    source_size BIGINT NOT NULL,
    modules     BIGINT NOT NULL,
    program     BLOB NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (project_id, function_id, id),
    FOREIGN KEY (project_id, function_id) REFERENCES functions (project_id, id) ON DELETE CASCADE
);

-- One row per execution: the request (kept until an asynchronous run took it), the
-- response, the captured logs and how it ended. `caller` is `user:ID`, `key:ID` or
-- NULL for a guest or a schedule. Pruned after `NIMBUS_EXECUTION_RETENTION`.
CREATE TABLE function_executions (
    project_id       TEXT NOT NULL,
    function_id      TEXT NOT NULL,
    id               TEXT NOT NULL,
    deployment_id    TEXT NOT NULL,
    trigger_kind     TEXT NOT NULL,
    status           TEXT NOT NULL,
    caller           TEXT NULL,
    request_method   TEXT NOT NULL,
    request_path     TEXT NOT NULL,
    request_headers  TEXT NOT NULL,
    request_body     BLOB NULL,
    response_status  BIGINT NOT NULL,
    response_headers TEXT NOT NULL,
    response_body    BLOB NOT NULL,
    logs             TEXT NOT NULL,
    errors           TEXT NOT NULL,
    failure          TEXT NULL,
    duration_ms      BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (project_id, function_id, id)
);
CREATE INDEX function_executions_by_age ON function_executions (created_at);
