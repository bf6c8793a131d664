"""The plans of ADR 22 on MariaDB, printed as SQL for the `mariadb` client: `seed`
builds a database of DOCS documents (the reader owning one in SHARE, MULTI_PCT
percent read by a second owner too) from `seq_0_to_N`; `measure` runs each plan
five times (today's once at a million) with profiling on, checks that the plans
agree (an MD5 of the page's ids, the totals), explains each, and ends with SHOW
PROFILES.

Usage: python3 sole_reader_plans_mariadb.py DOCS SHARE MULTI_PCT seed|measure | mariadb -t"""
import sys

docs, share, multi_pct, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
db = f"plans_{docs}_{share}_{multi_pct}"
roles = ["any", "users", "user:u1", "user:u1/verified"]
inl = ",".join(f"'{r}'" for r in roles)
out = []
p = out.append
if mode == "seed":
    p(f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; USE {db};")
    p("""CREATE TABLE c (id VARCHAR(36) NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
      a_title VARCHAR(100), a_body LONGTEXT, a_views BIGINT, a_published SMALLINT, nimbus_reader VARCHAR(128),
      PRIMARY KEY (id), KEY s_created (created_at, id), KEY s_updated (updated_at, id),
      KEY i_v (a_views), KEY i_pv (a_published, a_views), KEY r_pv (nimbus_reader, a_published, a_views))
      ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;""")
    p("""CREATE TABLE p (resource_id VARCHAR(36) NOT NULL, role VARCHAR(128) NOT NULL, actions SMALLINT NOT NULL,
      sole SMALLINT NOT NULL DEFAULT 0, PRIMARY KEY (resource_id, role), KEY s_role (role, resource_id, actions),
      KEY s_role_sole (role, sole, resource_id, actions)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;""")
    # owner = (i % share) + 1; multi when crc32(id) % 100 < multi_pct: a second reader
    p(f"""INSERT INTO c SELECT CONCAT('d', LPAD(seq, 7, '0')), seq, seq, CONCAT('title ', seq), REPEAT('x', 240),
      FLOOR(RAND(7) * 100000), IF(seq % 3 <> 0, 1, 0),
      IF(CRC32(CONCAT('d', LPAD(seq, 7, '0'))) % 100 < {multi_pct}, NULL, CONCAT('user:u', (seq % {share}) + 1))
      FROM seq_0_to_{docs - 1};""")
    p(f"""INSERT INTO p SELECT id, CONCAT('user:u', (created_at % {share}) + 1), 1, IF(nimbus_reader IS NULL, 0, 1) FROM c;""")
    p(f"""INSERT IGNORE INTO p SELECT id, CONCAT('user:u', ((created_at % {share}) + 1) % {share} + 1), 1, 0 FROM c WHERE nimbus_reader IS NULL;""")
    p(f"""INSERT IGNORE INTO p SELECT id, CONCAT('user:u', (created_at % {share}) + 1, 'x'), 14, 0 FROM c;""")
    p("ANALYZE TABLE c; ANALYZE TABLE p;")
else:
    cols = "d.id, d.a_title, d.a_views"
    Q = {}
    Q["grant count (cap 1000)"] = f"SELECT COUNT(*) FROM (SELECT 1 FROM p FORCE INDEX (s_role) WHERE role IN ({inl}) LIMIT 1000) g"
    Q["page, probe walk (today above the threshold)"] = (
        f"SET STATEMENT optimizer_switch='semijoin=off,materialization=off' FOR SELECT {cols} FROM c d FORCE INDEX (i_pv) WHERE d.a_published = 1 AND EXISTS "
        f"(SELECT 1 FROM p WHERE p.resource_id = d.id AND p.role IN ({inl}) AND (p.actions & 1) <> 0) ORDER BY d.a_views DESC, d.id LIMIT 21")
    Q["page, grants (today below it)"] = (
        f"SELECT {cols} FROM (SELECT DISTINCT resource_id FROM p FORCE INDEX (s_role) WHERE role IN ({inl}) AND (actions & 1) <> 0) r "
        f"STRAIGHT_JOIN c d ON d.id = r.resource_id WHERE d.a_published = 1 ORDER BY d.a_views DESC, d.id LIMIT 21")
    Q["total, grants (today)"] = (
        f"SELECT COUNT(*) FROM (SELECT DISTINCT resource_id FROM p FORCE INDEX (s_role) WHERE role IN ({inl}) AND (actions & 1) <> 0) r "
        f"STRAIGHT_JOIN c d ON d.id = r.resource_id WHERE d.a_published = 1")
    Q["total, MariaDB own plan (today past 20,000 grants)"] = (
        f"SELECT COUNT(*) FROM c d WHERE d.a_published = 1 AND EXISTS "
        f"(SELECT 1 FROM p WHERE p.resource_id = d.id AND p.role IN ({inl}) AND (p.actions & 1) <> 0)")
    branches = [f"(SELECT {cols} FROM c d FORCE INDEX (r_pv) WHERE d.nimbus_reader = '{r}' AND d.a_published = 1 ORDER BY d.a_views DESC, d.id LIMIT 21)" for r in roles]
    multi = (f"(SELECT {cols} FROM (SELECT DISTINCT resource_id FROM p FORCE INDEX (s_role_sole) WHERE role IN ({inl}) AND sole = 0 AND (actions & 1) <> 0) r "
             f"STRAIGHT_JOIN c d ON d.id = r.resource_id WHERE d.a_published = 1 ORDER BY d.a_views DESC, d.id LIMIT 21)")
    Q["page, sole readers + others (new)"] = " UNION ALL ".join(branches + [multi]) + " ORDER BY 3 DESC, 1 LIMIT 21"
    Q["total, sole readers + others (new)"] = (
        f"SELECT (SELECT COUNT(*) FROM c d FORCE INDEX (r_pv) WHERE d.nimbus_reader IN ({inl}) AND d.a_published = 1) + "
        f"(SELECT COUNT(*) FROM (SELECT DISTINCT resource_id FROM p FORCE INDEX (s_role_sole) WHERE role IN ({inl}) AND sole = 0 AND (actions & 1) <> 0) r "
        f"STRAIGHT_JOIN c d ON d.id = r.resource_id WHERE d.a_published = 1)")
    p(f"USE {db};")
    p("SET profiling = 1; SET profiling_history_size = 100;")
    names = []
    for name, sql in Q.items():
        reps = 1 if ("today" in name and docs >= 1000000) else 5
        for _ in range(reps):
            p(sql + ";")
            names.append(name)
        p(f"SELECT '{name}' AS plan, MD5(GROUP_CONCAT(x.id ORDER BY x.a_views DESC, x.id)) AS rows_md5 FROM ({sql.split(' FOR ', 1)[-1] if sql.startswith('SET') else sql}) x;" if name.startswith("page") else f"SELECT '{name}' AS plan, ({sql}) AS total;")
        p(f"EXPLAIN {sql.split(' FOR ', 1)[-1] if sql.startswith('SET') else sql};")
    p("SHOW PROFILES;")
    print("-- NAMES " + "|".join(names))
print("\n".join(out))
