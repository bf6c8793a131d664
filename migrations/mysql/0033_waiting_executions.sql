-- A project's waiting executions, counted before another is queued: one project
-- cannot queue executions without bound (`NIMBUS_FUNCTIONS_MAX_WAITING`).
CREATE INDEX function_executions_by_status ON function_executions (project_id, status);
