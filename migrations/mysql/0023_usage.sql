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
    project_id VARCHAR(36)  NOT NULL,
    period     CHAR(1)      NOT NULL,
    bucket     BIGINT       NOT NULL,
    metric     VARCHAR(32)  NOT NULL,
    dimension  VARCHAR(100) NOT NULL,
    replica    VARCHAR(36)  NOT NULL,
    value      BIGINT       NOT NULL,
    PRIMARY KEY (project_id, period, bucket, metric, dimension, replica),
    INDEX usage_counters_by_age (period, bucket)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Event log positions the `usage` log consumer counted above its stored position:
-- a replica taking the consumer over handles those events again (ADR 19), and must
-- not count them twice. Rows at or below the stored position are deleted as it moves.
CREATE TABLE usage_counted_events (
    position BIGINT NOT NULL PRIMARY KEY
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
