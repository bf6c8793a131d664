-- The event log loses its index on created_at: pruning walks the primary key from
-- the oldest position instead (positions are taken at the time of logging, so the
-- times rise with them), and every logged event costs one index insert less.
--
-- Bodies written from now on hold a document event (and any change whose
-- channels, event names and key scope follow from its resource) without what
-- follows from the resource, under the kind `change`; the whole messages written
-- before stay readable as they are (`bus::log::decode`), so no row is converted.
DROP INDEX event_log_created;
