-- Whether a collection's table has the twin indexes its metadata calls for (ADR
-- 0022): while `documentSecurity` is on, indexes led by the sole reader beside
-- its own. Collections created from now on are made with them and every
-- structural change keeps them; those made before are given theirs at start-up,
-- one collection at a time, and marked when done. Setting it back to 0 makes the
-- next start bring the table's twins to what the metadata calls for again.
ALTER TABLE db_collections ADD COLUMN reader_twins INTEGER NOT NULL DEFAULT 1;
UPDATE db_collections SET reader_twins = 0;
