-- Transactions of document writes (Appwrite's transactions API): operations
-- staged across requests, applied together when committed. `staged` holds the
-- operations as a JSON list, in the order given; `owner` is `user:<id>` for a
-- user's, `key` for a server's (every key of the project sees those). A row
-- lives until it expires, whatever its status, and is pruned after.
CREATE TABLE document_transactions (
    project_id  VARCHAR(36) NOT NULL,
    id          VARCHAR(36) NOT NULL,
    owner       VARCHAR(64) NOT NULL,
    status      VARCHAR(16) NOT NULL,
    operations  INT NOT NULL,
    staged      MEDIUMTEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (project_id, id),
    KEY document_transactions_owner (project_id, owner, created_at),
    KEY document_transactions_expiry (expires_at),
    CONSTRAINT document_transactions_project FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
