-- Whether a bucket's images may be transformed into previews for clients
-- (Appwrite's `transformations`); API keys and the console preview either way.
ALTER TABLE storage_buckets ADD COLUMN transformations SMALLINT NOT NULL DEFAULT 1;
