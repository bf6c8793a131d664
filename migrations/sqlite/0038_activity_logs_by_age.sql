-- Activity logs are kept for NIMBUS_ACTIVITY_LOG_RETENTION_DAYS: the hourly prune
-- deletes by age, through this index rather than a scan of every user's log.
CREATE INDEX activity_logs_by_age ON activity_logs (created_at);
