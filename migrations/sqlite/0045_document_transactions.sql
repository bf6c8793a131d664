-- Transactions of document writes (Appwrite's transactions API): operations
-- staged across requests, applied together when committed. `staged` holds the
-- operations as a JSON list, in the order given; `owner` is `user:<id>` for a
-- user's, `key` for a server's (every key of the project sees those). A row
-- lives until it expires, whatever its status, and is pruned after.
CREATE TABLE document_transactions (
    project_id  TEXT NOT NULL,
    id          TEXT NOT NULL,
    owner       TEXT NOT NULL,
    status      TEXT NOT NULL,
    operations  INTEGER NOT NULL,
    staged      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (project_id, id),
    FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE
);
CREATE INDEX document_transactions_owner ON document_transactions (project_id, owner, created_at);
CREATE INDEX document_transactions_expiry ON document_transactions (expires_at);
