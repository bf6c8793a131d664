-- Multi-factor sign-in: a user's TOTP authenticator (its shared secret, whether it was
-- confirmed, the last time step used, so a code works once), the digests of their
-- recovery codes, and whether a second factor is required. A session records whether
-- it passed the second factor.
ALTER TABLE users
    ADD COLUMN mfa SMALLINT NOT NULL DEFAULT 0,
    ADD COLUMN totp_secret VARCHAR(64) NULL,
    ADD COLUMN totp_verified SMALLINT NOT NULL DEFAULT 0,
    ADD COLUMN totp_last_step BIGINT NULL,
    ADD COLUMN recovery_codes VARCHAR(2048) NULL;
ALTER TABLE sessions ADD COLUMN mfa_verified SMALLINT NOT NULL DEFAULT 0;
