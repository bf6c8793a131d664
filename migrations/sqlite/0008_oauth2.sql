-- Sign-in through OAuth2 / OpenID Connect providers: what each project configured
-- (the client secret sealed with a key derived from the server secret), sign-ins in
-- progress (only the SHA-256 of their `state` is kept; one use each; any replica can
-- finish one) and the provider identities linked to users.
CREATE TABLE oauth2_providers (
    project_id        TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    provider          TEXT NOT NULL,
    enabled           SMALLINT NOT NULL,
    client_id         TEXT NOT NULL,
    client_secret     TEXT NOT NULL,
    issuer            TEXT NULL,
    authorization_url TEXT NULL,
    token_url         TEXT NULL,
    userinfo_url      TEXT NULL,
    scopes            TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (project_id, provider)
);

CREATE TABLE oauth2_states (
    project_id    TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    state_hash    TEXT NOT NULL,
    provider      TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    success_url   TEXT NOT NULL,
    failure_url   TEXT NOT NULL,
    token_mode    SMALLINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (project_id, state_hash)
);
CREATE INDEX oauth2_states_expiry ON oauth2_states (expires_at);

CREATE TABLE identities (
    project_id TEXT NOT NULL,
    id         TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    provider   TEXT NOT NULL,
    subject    TEXT NOT NULL,
    email      TEXT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, id),
    FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX identities_by_subject ON identities (project_id, provider, subject);
CREATE INDEX identities_of_user ON identities (project_id, user_id);
