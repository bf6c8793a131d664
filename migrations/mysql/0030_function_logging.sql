-- Whether a function's successful synchronous executions are recorded
-- (`Function.logging`, ADR 31); functions from before keep recording them.
ALTER TABLE functions ADD COLUMN logging SMALLINT NOT NULL DEFAULT 1;
