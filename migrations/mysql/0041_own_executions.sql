-- A user's own executions of a function, listed and counted in order from
-- their own range: without it the list read every execution of the function
-- to find the caller's.
CREATE INDEX function_executions_by_function_caller ON function_executions (project_id, function_id, caller, id);
