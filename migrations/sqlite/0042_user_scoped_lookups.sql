-- A user's unfinished uploads, counted before another starts: without it every
-- file of the project was read to find them.
CREATE INDEX storage_files_by_uploader ON storage_files (project_id, uploader, status);
-- Uploads left behind, found by the sweeper by status and age.
CREATE INDEX storage_files_by_status ON storage_files (status, updated_at);
-- A team's confirmed members, counted (its `total`) and read for its owners from
-- the index instead of every membership row of the team.
CREATE INDEX memberships_confirmed ON memberships (project_id, team_id, confirmed);
