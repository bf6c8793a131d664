-- What happened to a user's account, when, and from where: sign-ins, sign-outs,
-- credential changes. Listed by `accountLogs` and `userLogs`.
CREATE TABLE activity_logs (
    project_id TEXT NOT NULL,
    id         TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    event      TEXT NOT NULL,
    ip         TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, id),
    FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, id) ON DELETE CASCADE
);
CREATE INDEX activity_logs_of_user ON activity_logs (project_id, user_id, id);
