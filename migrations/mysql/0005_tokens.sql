-- One-time secrets sent to a user by email: verification and recovery links, magic
-- sign-in links, sign-in codes. Only the SHA-256 of the secret is kept; a token is
-- deleted when used.
CREATE TABLE tokens (
    project_id  VARCHAR(36) NOT NULL,
    id          VARCHAR(36) NOT NULL,
    user_id     VARCHAR(36) NOT NULL,
    kind        VARCHAR(32) NOT NULL,
    secret_hash CHAR(64) NOT NULL,
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (project_id, id),
    INDEX tokens_of_user (project_id, user_id, kind),
    CONSTRAINT tokens_user FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
