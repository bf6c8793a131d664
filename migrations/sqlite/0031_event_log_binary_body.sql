-- The log's body is bound as bytes from now on (ADR 39): SQLite keeps the value as
-- given, a BLOB in the TEXT column, with the same UTF-8 JSON bytes; readers take
-- the body as bytes either way (ADR 0001). Nothing changes here; kept so both
-- dialects number alike.
SELECT 1;
