-- TOTP secrets are now stored sealed (AES-256-GCM), which is longer than the plain
-- base32 secret.
ALTER TABLE users MODIFY totp_secret VARCHAR(255) NULL;
