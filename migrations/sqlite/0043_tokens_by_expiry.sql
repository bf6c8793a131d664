-- Links and codes past their end, found by the hourly prune: without it a
-- user's tokens (recovery or sign-in links anyone may ask to be mailed to them)
-- were kept for ever and read on every check of one.
CREATE INDEX tokens_by_expiry ON tokens (expires_at);
