-- A team's memberships oldest first, a page at a time: one range of this index,
-- however large the team.
CREATE INDEX memberships_by_age ON memberships (project_id, team_id, created_at, id);
