-- An invitation by email to an address with no account names the address, not a
-- user: the user is created only when the invitation is accepted through the emailed
-- link (which proves the mailbox), so inviting creates no account for an address
-- nobody proved. `email` and `invite_name` (the name the invitee's account gets)
-- are kept only while such an invitation waits; accepting sets `user_id` and
-- clears them.
ALTER TABLE memberships
    MODIFY user_id VARCHAR(36) NULL,
    ADD COLUMN email VARCHAR(320) NULL,
    ADD COLUMN invite_name VARCHAR(128) NULL,
    ADD UNIQUE INDEX memberships_invited (project_id, team_id, email),
    ADD CONSTRAINT memberships_member CHECK (user_id IS NOT NULL OR (email IS NOT NULL AND confirmed = 0));
