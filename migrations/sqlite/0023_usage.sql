-- Usage of each project, in hourly (`period` 'h') and daily ('d') buckets that start
-- at `bucket` (milliseconds since the epoch, UTC). Every replica adds what it
-- counted since its last flush to the row of its bucket (an additive upsert), so
-- replicas add up without talking to each other. `dimension` tells a metric's
-- parts apart (the root field of an operation, an error code, `http` or `ws`);
-- '' for the metric as a whole. `replica` is '' for counters and snapshots; a peak
-- (realtime connections) is kept per replica, as the highest it saw, and read as
-- the sum over replicas. No foreign key: a flush racing a project's deletion must
-- not fail the whole batch; the deletion removes the rows, retention the rest.
CREATE TABLE usage_counters (
    project_id TEXT   NOT NULL,
    period     TEXT   NOT NULL,
    bucket     BIGINT NOT NULL,
    metric     TEXT   NOT NULL,
    dimension  TEXT   NOT NULL,
    replica    TEXT   NOT NULL,
    value      BIGINT NOT NULL,
    PRIMARY KEY (project_id, period, bucket, metric, dimension, replica)
);
CREATE INDEX usage_counters_by_age ON usage_counters (period, bucket);

-- Event log positions the `usage` log consumer counted above its stored position:
-- a replica taking the consumer over handles those events again (ADR 19), and must
-- not count them twice. Rows at or below the stored position are deleted as it moves.
CREATE TABLE usage_counted_events (
    position BIGINT NOT NULL PRIMARY KEY
);
