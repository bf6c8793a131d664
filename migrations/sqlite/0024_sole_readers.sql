-- Whether a collection's table holds each document's sole reader (ADR 0022), its
-- column and its side table's `sole` marks filled in. Collections created from
-- now on are made with them; those made before are filled in at start-up, in
-- bounded batches, and marked when done: until then no list reads through them.
ALTER TABLE db_collections ADD COLUMN readers_ready INTEGER NOT NULL DEFAULT 1;
UPDATE db_collections SET readers_ready = 0;
