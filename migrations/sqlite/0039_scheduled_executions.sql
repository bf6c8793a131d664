-- When an execution asked for with `scheduledAt` runs (milliseconds since the
-- epoch); NULL for one that runs at once or as soon as it can. Its record is
-- kept for the retention counted from then, not from when it was asked for.
ALTER TABLE function_executions ADD COLUMN scheduled_at BIGINT;

-- A user's scheduled executions, counted before another is scheduled.
CREATE INDEX function_executions_by_caller ON function_executions (project_id, status, caller);
