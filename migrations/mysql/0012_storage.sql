-- Storage: buckets, their files, file permissions and the chunks of resumable
-- uploads. A file row exists from the moment its upload starts (`status`
-- 'uploading'), which claims its id; it is listed and served only once 'ready'.
-- Permission roles compare byte for byte (utf8mb4_bin), as everywhere.
CREATE TABLE storage_buckets (
    project_id              VARCHAR(36) NOT NULL,
    id                      VARCHAR(36) NOT NULL,
    name                    VARCHAR(128) NOT NULL,
    enabled                 SMALLINT NOT NULL,
    file_security           SMALLINT NOT NULL,
    permissions             MEDIUMTEXT NOT NULL,
    maximum_file_size       BIGINT NOT NULL,
    allowed_file_extensions MEDIUMTEXT NOT NULL,
    compression             VARCHAR(8) NOT NULL,
    encryption              SMALLINT NOT NULL,
    antivirus               SMALLINT NOT NULL,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL,
    PRIMARY KEY (project_id, id),
    CONSTRAINT storage_buckets_project FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE storage_files (
    project_id      VARCHAR(36) NOT NULL,
    bucket_id       VARCHAR(36) NOT NULL,
    id              VARCHAR(36) NOT NULL,
    name            VARCHAR(255) NOT NULL,
    status          VARCHAR(16) NOT NULL,
    uploader        VARCHAR(64) NOT NULL,
    size            BIGINT NOT NULL,
    stored_size     BIGINT NOT NULL,
    mime_type       VARCHAR(255) NOT NULL,
    checksum        VARCHAR(64) NOT NULL,
    compression     VARCHAR(8) NOT NULL,
    encryption_salt VARCHAR(64),
    chunk_size      BIGINT NOT NULL,
    chunks_total    INT NOT NULL,
    chunks_uploaded INT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (project_id, bucket_id, id),
    CONSTRAINT storage_files_bucket FOREIGN KEY (project_id, bucket_id) REFERENCES storage_buckets (project_id, id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE storage_file_perms (
    project_id VARCHAR(36) NOT NULL,
    bucket_id  VARCHAR(36) NOT NULL,
    file_id    VARCHAR(36) NOT NULL,
    action     VARCHAR(8) NOT NULL,
    role       VARCHAR(255) NOT NULL,
    PRIMARY KEY (project_id, bucket_id, file_id, action, role),
    INDEX storage_file_perms_role (project_id, bucket_id, action, role, file_id),
    CONSTRAINT storage_file_perms_file FOREIGN KEY (project_id, bucket_id, file_id) REFERENCES storage_files (project_id, bucket_id, id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE storage_upload_chunks (
    project_id  VARCHAR(36) NOT NULL,
    bucket_id   VARCHAR(36) NOT NULL,
    file_id     VARCHAR(36) NOT NULL,
    chunk_index INT NOT NULL,
    object_key  VARCHAR(255) NOT NULL,
    size        BIGINT NOT NULL,
    PRIMARY KEY (project_id, bucket_id, file_id, chunk_index),
    CONSTRAINT storage_upload_chunks_file FOREIGN KEY (project_id, bucket_id, file_id) REFERENCES storage_files (project_id, bucket_id, id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
