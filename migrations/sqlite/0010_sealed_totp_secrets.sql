-- TOTP secrets are now stored sealed (AES-256-GCM); SQLite's TEXT column already
-- holds them, so nothing changes here. Kept so both dialects number alike.
SELECT 1;
