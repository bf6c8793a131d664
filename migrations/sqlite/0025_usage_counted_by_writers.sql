-- Created and deleted resources are counted in memory by the replica that commits
-- their events, flushed with the other counters: the `usage` event log consumer
-- and the positions it had counted are gone.
DROP TABLE usage_counted_events;
DELETE FROM log_consumers WHERE name = 'usage';
