-- Invitations by email: the SHA-256 of the secret in the invitation link, cleared
-- when the invitation is accepted.
ALTER TABLE memberships ADD COLUMN invite_secret_hash TEXT NULL;
