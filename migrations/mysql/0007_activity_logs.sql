-- What happened to a user's account, when, and from where: sign-ins, sign-outs,
-- credential changes. Listed by `accountLogs` and `userLogs`.
CREATE TABLE activity_logs (
    project_id VARCHAR(36) NOT NULL,
    id         VARCHAR(36) NOT NULL,
    user_id    VARCHAR(36) NOT NULL,
    event      VARCHAR(64) NOT NULL,
    ip         VARCHAR(64) NOT NULL DEFAULT '',
    user_agent VARCHAR(512) NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, id),
    INDEX activity_logs_of_user (project_id, user_id, id),
    CONSTRAINT activity_logs_user FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
