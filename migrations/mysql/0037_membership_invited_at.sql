-- When a membership's invitation was sent (or sent again): its link expires a week
-- after it, whatever else changes on the membership. Until now that time was read
-- from `updated_at`, which a change of roles moved too.
ALTER TABLE memberships ADD COLUMN invited_at BIGINT NULL;
UPDATE memberships SET invited_at = updated_at;
