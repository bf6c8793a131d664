-- What the key that last configured a webhook or a function handed on to it: the
-- events it may receive and how long its scopes last (ADR 46). NULL, for rows from
-- before and for an operator's, is every event, for ever.
ALTER TABLE webhooks ADD COLUMN reach TEXT NULL;
ALTER TABLE functions ADD COLUMN reach TEXT NULL;
