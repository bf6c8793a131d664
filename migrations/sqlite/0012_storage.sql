-- Storage: buckets, their files, file permissions and the chunks of resumable
-- uploads. A file row exists from the moment its upload starts (`status`
-- 'uploading'), which claims its id; it is listed and served only once 'ready'.
CREATE TABLE storage_buckets (
    project_id              TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    id                      TEXT NOT NULL,
    name                    TEXT NOT NULL,
    enabled                 SMALLINT NOT NULL,
    file_security           SMALLINT NOT NULL,
    permissions             TEXT NOT NULL,
    maximum_file_size       BIGINT NOT NULL,
    allowed_file_extensions TEXT NOT NULL,
    compression             TEXT NOT NULL,
    encryption              SMALLINT NOT NULL,
    antivirus               SMALLINT NOT NULL,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL,
    PRIMARY KEY (project_id, id)
);

CREATE TABLE storage_files (
    project_id      TEXT NOT NULL,
    bucket_id       TEXT NOT NULL,
    id              TEXT NOT NULL,
    name            TEXT NOT NULL,
    status          TEXT NOT NULL,
    uploader        TEXT NOT NULL,
    size            BIGINT NOT NULL,
    stored_size     BIGINT NOT NULL,
    mime_type       TEXT NOT NULL,
    checksum        TEXT NOT NULL,
    compression     TEXT NOT NULL,
    encryption_salt TEXT,
    chunk_size      BIGINT NOT NULL,
    chunks_total    INTEGER NOT NULL,
    chunks_uploaded INTEGER NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (project_id, bucket_id, id),
    FOREIGN KEY (project_id, bucket_id) REFERENCES storage_buckets (project_id, id) ON DELETE CASCADE
);

CREATE TABLE storage_file_perms (
    project_id TEXT NOT NULL,
    bucket_id  TEXT NOT NULL,
    file_id    TEXT NOT NULL,
    action     TEXT NOT NULL,
    role       TEXT NOT NULL,
    PRIMARY KEY (project_id, bucket_id, file_id, action, role),
    FOREIGN KEY (project_id, bucket_id, file_id) REFERENCES storage_files (project_id, bucket_id, id) ON DELETE CASCADE
);
CREATE INDEX storage_file_perms_role ON storage_file_perms (project_id, bucket_id, action, role, file_id);

CREATE TABLE storage_upload_chunks (
    project_id  TEXT NOT NULL,
    bucket_id   TEXT NOT NULL,
    file_id     TEXT NOT NULL,
    chunk_index INTEGER NOT NULL,
    object_key  TEXT NOT NULL,
    size        BIGINT NOT NULL,
    PRIMARY KEY (project_id, bucket_id, file_id, chunk_index),
    FOREIGN KEY (project_id, bucket_id, file_id) REFERENCES storage_files (project_id, bucket_id, id) ON DELETE CASCADE
);
