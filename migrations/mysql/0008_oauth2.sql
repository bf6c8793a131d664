-- Sign-in through OAuth2 / OpenID Connect providers: what each project configured
-- (the client secret sealed with a key derived from the server secret), sign-ins in
-- progress (only the SHA-256 of their `state` is kept; one use each; any replica can
-- finish one) and the provider identities linked to users.
CREATE TABLE oauth2_providers (
    project_id        VARCHAR(36) NOT NULL,
    provider          VARCHAR(32) NOT NULL,
    enabled           SMALLINT NOT NULL,
    client_id         VARCHAR(512) NOT NULL,
    client_secret     VARCHAR(2048) NOT NULL,
    issuer            VARCHAR(2048) NULL,
    authorization_url VARCHAR(2048) NULL,
    token_url         VARCHAR(2048) NULL,
    userinfo_url      VARCHAR(2048) NULL,
    scopes            VARCHAR(1024) NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (project_id, provider),
    CONSTRAINT oauth2_providers_project FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE oauth2_states (
    project_id    VARCHAR(36) NOT NULL,
    state_hash    CHAR(64) NOT NULL,
    provider      VARCHAR(32) NOT NULL,
    pkce_verifier VARCHAR(128) NOT NULL,
    success_url   VARCHAR(2048) NOT NULL,
    failure_url   VARCHAR(2048) NOT NULL,
    token_mode    SMALLINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (project_id, state_hash),
    INDEX oauth2_states_expiry (expires_at),
    CONSTRAINT oauth2_states_project FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE identities (
    project_id VARCHAR(36) NOT NULL,
    id         VARCHAR(36) NOT NULL,
    user_id    VARCHAR(36) NOT NULL,
    provider   VARCHAR(32) NOT NULL,
    subject    VARCHAR(255) NOT NULL,
    email      VARCHAR(320) NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, id),
    UNIQUE INDEX identities_by_subject (project_id, provider, subject),
    INDEX identities_of_user (project_id, user_id),
    CONSTRAINT identities_user FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
