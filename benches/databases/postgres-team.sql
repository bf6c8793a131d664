-- Scope `team` of benches/databases.sh on PostgreSQL: each post is read by the
-- members of its team only, through row-level security on an indexed team column
-- and a membership table; the user is the JWT's `user_id` claim (see
-- postgres-owner.sql). The policy reads the user's teams once per statement
-- (`= ANY (ARRAY(…))`), the form PostgreSQL plans as an index condition.
CREATE ROLE bench_user NOLOGIN;
CREATE TABLE memberships (
    user_id int NOT NULL,
    team_id int NOT NULL,
    PRIMARY KEY (user_id, team_id)
);
GRANT SELECT ON memberships TO bench_user;
GRANT SELECT, INSERT ON posts TO bench_user;
GRANT USAGE ON SEQUENCE posts_id_seq TO bench_user;
CREATE INDEX posts_team_published_views ON posts (team, published, views DESC);
ALTER TABLE posts ENABLE ROW LEVEL SECURITY;
CREATE POLICY posts_read_team ON posts FOR SELECT TO bench_user
    USING (team = ANY (ARRAY(SELECT team_id FROM memberships
        WHERE user_id = nullif(current_setting('jwt.claims.user_id', true), '')::int)));
CREATE POLICY posts_create_team ON posts FOR INSERT TO bench_user
    WITH CHECK (team = ANY (ARRAY(SELECT team_id FROM memberships
        WHERE user_id = nullif(current_setting('jwt.claims.user_id', true), '')::int)));
