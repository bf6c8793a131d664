-- Scope `owner` of benches/databases.sh on PostgreSQL: each post is read by its
-- owner only, through row-level security on an indexed owner column; the user is
-- the JWT's `user_id` claim, which postgraphile.config.mjs hands to PostgreSQL as
-- the setting jwt.claims.user_id, and requests run as the role bench_user.
CREATE ROLE bench_user NOLOGIN;
GRANT SELECT, INSERT ON posts TO bench_user;
GRANT USAGE ON SEQUENCE posts_id_seq TO bench_user;
ALTER TABLE posts ALTER COLUMN owner SET DEFAULT nullif(current_setting('jwt.claims.user_id', true), '')::int;
CREATE INDEX posts_owner_published_views ON posts (owner, published, views DESC);
ALTER TABLE posts ENABLE ROW LEVEL SECURITY;
CREATE POLICY posts_read_own ON posts FOR SELECT TO bench_user
    USING (owner = nullif(current_setting('jwt.claims.user_id', true), '')::int);
CREATE POLICY posts_create_own ON posts FOR INSERT TO bench_user
    WITH CHECK (owner = nullif(current_setting('jwt.claims.user_id', true), '')::int);
