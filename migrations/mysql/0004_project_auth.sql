-- Per-project sign-in policy (password rules, sessions, enabled methods) as a JSON
-- object; absent keys take the defaults of src/services/projects/mod.rs.
ALTER TABLE projects ADD COLUMN auth VARCHAR(4096) NOT NULL DEFAULT '{}';
