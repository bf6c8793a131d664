-- Whether an execution's logs and errors went past the log limit and were cut
-- (`Execution.logsTruncated`); records from before say no.
ALTER TABLE function_executions ADD COLUMN logs_truncated SMALLINT NOT NULL DEFAULT 0;
