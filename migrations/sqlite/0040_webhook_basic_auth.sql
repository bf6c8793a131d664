-- HTTP Basic credentials a webhook's deliveries carry (Appwrite's `httpUser` and
-- `httpPass`); the password sealed under the server secret, as the signing
-- secret is. NULL: none.
ALTER TABLE webhooks ADD COLUMN http_user VARCHAR(256) NULL;
ALTER TABLE webhooks ADD COLUMN http_pass TEXT NULL;
