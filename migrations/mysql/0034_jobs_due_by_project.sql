-- Due jobs by project: a claim finds every project with queued jobs in one seek
-- each, and takes a project's oldest, so one project's backlog does not hold back
-- another's jobs.
CREATE INDEX jobs_due_by_project ON jobs (status, project_id, run_at);
