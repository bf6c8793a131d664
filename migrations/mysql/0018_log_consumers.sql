-- Consumers of the event log (webhooks, event-triggered functions): each reads the
-- log from its stored `position` and acts on the events after it, on exactly one
-- replica at a time, the one holding its lease (`lease_owner` until `lease_until`,
-- milliseconds since the epoch, renewed while it works). A replica that dies stops
-- renewing, and another takes the lease once it lapses.
--
-- `position` is the consumer's floor: every event up to it was handled (or given up
-- as a position that never committed). The holder handles events after it too, and
-- holds it below a position still missing (a transaction between its log insert and
-- its commit) until that fills or a minute passes; handlers are idempotent, so a
-- new holder handling those again changes nothing. Pruning of the event log does
-- not go past the lowest position, for a while (ADR 19).
CREATE TABLE log_consumers (
    name        VARCHAR(64) NOT NULL PRIMARY KEY,
    position    BIGINT      NOT NULL,
    lease_owner VARCHAR(64) NULL,
    lease_until BIGINT      NOT NULL,
    updated_at  BIGINT      NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
