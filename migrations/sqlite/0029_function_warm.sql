-- Whether a function's executions reuse a warm context per sandbox thread and
-- deployment (`Function.warm`, ADR 33); functions from before keep a fresh
-- context per execution.
ALTER TABLE functions ADD COLUMN warm SMALLINT NOT NULL DEFAULT 0;
