-- Functions of a project: user code run in the JavaScript sandbox. `execute`,
-- `events` and `scopes` are JSON arrays (roles that may run it, Appwrite event
-- patterns, the API scopes its own `nimbus.graphql` calls get), MEDIUMTEXT read as
-- bytes (ADR 0001); `schedule` a CRON expression or NULL; `timeout` in seconds,
-- `memory` in MiB. `deployment_id` is the active deployment, NULL until one is
-- activated.
CREATE TABLE functions (
    project_id    VARCHAR(36) NOT NULL,
    id            VARCHAR(36) NOT NULL,
    name          VARCHAR(128) NOT NULL,
    runtime       VARCHAR(16) NOT NULL,
    entrypoint    VARCHAR(255) NOT NULL,
    execute       MEDIUMTEXT NOT NULL,
    events        MEDIUMTEXT NOT NULL,
    schedule      VARCHAR(255) NULL,
    timeout       BIGINT NOT NULL,
    memory        BIGINT NOT NULL,
    enabled       SMALLINT NOT NULL,
    scopes        MEDIUMTEXT NOT NULL,
    deployment_id VARCHAR(36) NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (project_id, id),
    CONSTRAINT functions_project FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- A function's variables, given to its code as `env`. Values are sealed with a key
-- derived from the server secret (AES-256-GCM), never stored in clear.
CREATE TABLE function_variables (
    project_id  VARCHAR(36) NOT NULL,
    function_id VARCHAR(36) NOT NULL,
    var_key     VARCHAR(128) NOT NULL,
    value       MEDIUMTEXT NOT NULL,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (project_id, function_id, var_key),
    CONSTRAINT function_variables_function FOREIGN KEY (project_id, function_id) REFERENCES functions (project_id, id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Uploaded code, compiled once: `program` holds the compiled modules the sandbox
-- runs, `source_size` the size of what was uploaded.
CREATE TABLE function_deployments (
    project_id  VARCHAR(36) NOT NULL,
    function_id VARCHAR(36) NOT NULL,
    id          VARCHAR(36) NOT NULL,
    entrypoint  VARCHAR(255) NOT NULL,
    source_size BIGINT NOT NULL,
    modules     BIGINT NOT NULL,
    program     LONGBLOB NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (project_id, function_id, id),
    CONSTRAINT function_deployments_function FOREIGN KEY (project_id, function_id) REFERENCES functions (project_id, id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per execution: the request (kept until an asynchronous run took it), the
-- response, the captured logs and how it ended. `caller` is `user:ID`, `key:ID` or
-- NULL for a guest or a schedule. Pruned after `NIMBUS_EXECUTION_RETENTION`.
CREATE TABLE function_executions (
    project_id       VARCHAR(36) NOT NULL,
    function_id      VARCHAR(36) NOT NULL,
    id               VARCHAR(36) NOT NULL,
    deployment_id    VARCHAR(36) NOT NULL,
    trigger_kind     VARCHAR(16) NOT NULL,
    status           VARCHAR(16) NOT NULL,
    caller           VARCHAR(80) NULL,
    request_method   VARCHAR(16) NOT NULL,
    request_path     VARCHAR(2048) NOT NULL,
    request_headers  MEDIUMTEXT NOT NULL,
    request_body     LONGBLOB NULL,
    response_status  BIGINT NOT NULL,
    response_headers MEDIUMTEXT NOT NULL,
    response_body    LONGBLOB NOT NULL,
    logs             MEDIUMTEXT NOT NULL,
    errors           MEDIUMTEXT NOT NULL,
    failure          VARCHAR(64) NULL,
    duration_ms      BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (project_id, function_id, id),
    INDEX function_executions_by_age (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
