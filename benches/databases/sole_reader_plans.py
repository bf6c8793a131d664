"""The plans of ADR 22 on SQLite: a reader's own list (the 20 most-viewed published
documents) and its total, through today's plans (ADR 17) and through a sole-reader
column kept in the collection table, on a collection laid out as `ddl.rs` makes it.

Usage: python3 sole_reader_plans.py DOCS SHARE MULTI_PCT PATH
  DOCS documents, the reader owning one in SHARE, MULTI_PCT percent of them read by
  a second owner too; the database is built at PATH unless it exists. Prints each
  plan's best time of 7 (one run for the slowest), whether it returned the same rows
  and total as the others, and SQLite's query plans."""
import random, sqlite3, sys, time, os

docs, share, multi_pct, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
READ = 1
roles = ["any", "users", "user:u1", "user:u1/verified"]
users = share  # u1 owns one doc in `share`

fresh = not os.path.exists(path)
db = sqlite3.connect(path)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA cache_size=-512")
if fresh:
    t0 = time.time()
    db.executescript("""
    CREATE TABLE c (id TEXT NOT NULL PRIMARY KEY, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
      a_title TEXT, a_body TEXT, a_views BIGINT, a_published SMALLINT, nimbus_reader TEXT);
    CREATE TABLE p (resource_id TEXT NOT NULL, role TEXT NOT NULL, actions INTEGER NOT NULL, sole INTEGER NOT NULL DEFAULT 0,
      PRIMARY KEY (resource_id, role)) WITHOUT ROWID;
    """)
    rnd = random.Random(7)
    body = "x" * 240
    def rows():
        for i in range(docs):
            owner = (i % users) + 1
            yield (f"d{i:07d}", i, i, f"title {i}", body, rnd.randrange(100000), i % 3 != 0, owner)
    cur = db.cursor()
    batch_c, batch_p = [], []
    for (id_, c, u, title, b, views, pub, owner) in rows():
        multi = multi_pct and (hash(id_) % 100) < multi_pct
        readers = [f"user:u{owner}"] + ([f"user:u{(owner % users) + 1}"] if multi else [])
        sole = readers[0] if len(readers) == 1 else None
        batch_c.append((id_, c, u, title, b, views, int(pub), sole))
        for r in readers:
            batch_p.append((id_, r, READ, 1 if sole else 0))
        batch_p.append((id_, f"user:u{owner}x", 14, 0))  # a write grant of someone else
        if len(batch_c) >= 20000:
            cur.executemany("INSERT INTO c VALUES (?,?,?,?,?,?,?,?)", batch_c)
            cur.executemany("INSERT OR IGNORE INTO p VALUES (?,?,?,?)", batch_p)
            batch_c, batch_p = [], []
    cur.executemany("INSERT INTO c VALUES (?,?,?,?,?,?,?,?)", batch_c)
    cur.executemany("INSERT OR IGNORE INTO p VALUES (?,?,?,?)", batch_p)
    db.commit()
    db.executescript("""
    CREATE INDEX s_c__created ON c (created_at, id);
    CREATE INDEX s_c__updated ON c (updated_at, id);
    CREATE INDEX i_v ON c (a_views);
    CREATE INDEX i_pv ON c (a_published, a_views);
    CREATE INDEX s_c__perms ON p (role, resource_id, actions);
    CREATE INDEX r_pv ON c (nimbus_reader, a_published, a_views);
    CREATE INDEX r_id ON c (nimbus_reader, id);
    CREATE INDEX s_c__perms_sole ON p (role, sole, resource_id, actions);
    ANALYZE;
    """)
    db.commit()
    print(f"seeded {docs} in {time.time()-t0:.1f}s", flush=True)

ph = ",".join("?" * len(roles))
cols = "d.id, d.a_title, d.a_views"
order = "ORDER BY a_views DESC, id LIMIT 21"
Q = {
 "grant count (cap 1000)": (f"SELECT COUNT(*) FROM (SELECT 1 FROM p INDEXED BY s_c__perms WHERE role IN ({ph}) LIMIT 1000)", roles),
 "page, probe walk (today above the threshold)": (f"SELECT {cols} FROM c d INDEXED BY i_pv WHERE d.a_published = 1 AND EXISTS (SELECT 1 FROM p INDEXED BY sqlite_autoindex_p_1 WHERE p.resource_id = d.id AND +p.role IN ({ph}) AND (p.actions & 1) <> 0) ORDER BY d.a_views DESC, d.id LIMIT 21", roles),
 "page, grants (today below it)": (f"SELECT {cols} FROM (SELECT DISTINCT resource_id FROM p INDEXED BY s_c__perms WHERE role IN ({ph}) AND (actions & 1) <> 0) r CROSS JOIN c d ON d.id = r.resource_id WHERE d.a_published = 1 ORDER BY d.a_views DESC, d.id LIMIT 21", roles),
 "total, grants (today)": (f"SELECT COUNT(*) FROM (SELECT DISTINCT resource_id FROM p INDEXED BY s_c__perms WHERE role IN ({ph}) AND (actions & 1) <> 0) r CROSS JOIN c d ON d.id = r.resource_id WHERE d.a_published = 1", roles),
 "total, probe (today past 20,000 grants)": (f"SELECT COUNT(*) FROM c d INDEXED BY i_pv WHERE d.a_published = 1 AND EXISTS (SELECT 1 FROM p INDEXED BY sqlite_autoindex_p_1 WHERE p.resource_id = d.id AND +p.role IN ({ph}) AND (p.actions & 1) <> 0)", roles),
}
branch = lambda: f"SELECT * FROM (SELECT {cols} FROM c d INDEXED BY r_pv WHERE d.nimbus_reader = ? AND d.a_published = 1 ORDER BY d.a_views DESC, d.id LIMIT 21)"
multi = (f"SELECT * FROM (SELECT {cols} FROM (SELECT DISTINCT resource_id FROM p INDEXED BY s_c__perms_sole WHERE role IN ({ph}) AND sole = 0 AND (actions & 1) <> 0) r "
         f"CROSS JOIN c d ON d.id = r.resource_id WHERE d.a_published = 1 ORDER BY d.a_views DESC, d.id LIMIT 21)")
Q["page, sole readers + others (new)"] = (
    " UNION ALL ".join([branch() for _ in roles] + [multi]) + " ORDER BY 3 DESC, 1 LIMIT 21", roles + roles)
Q["total, sole readers + others (new)"] = (
    f"SELECT (SELECT COUNT(*) FROM c d INDEXED BY r_pv WHERE d.nimbus_reader IN ({ph}) AND d.a_published = 1) + "
    f"(SELECT COUNT(*) FROM (SELECT DISTINCT resource_id FROM p INDEXED BY s_c__perms_sole WHERE role IN ({ph}) AND sole = 0 AND (actions & 1) <> 0) r CROSS JOIN c d ON d.id = r.resource_id WHERE d.a_published = 1)",
    roles + roles)

def run(sql, args, n):
    best = 1e9
    for _ in range(n):
        t = time.perf_counter()
        res = db.execute(sql, args).fetchall()
        best = min(best, time.perf_counter() - t)
    return best * 1000, res

ref_page = run(Q["page, grants (today below it)"][0], Q["page, grants (today below it)"][1], 1)[1]
ref_total = run(Q["total, grants (today)"][0], Q["total, grants (today)"][1], 1)[1]
print(f"## SQLite {sqlite3.sqlite_version}: {docs} documents, reader reads 1 in {share}, {multi_pct}% with two readers")
for name, (sql, args) in Q.items():
    slow = "probe" in name and docs >= 1000000 and "total" in name
    ms, res = run(sql, args, 1 if slow else 7)
    check = ""
    if name.startswith("page"):
        check = "same rows" if res == ref_page else "DIFFERENT ROWS"
    elif name.startswith("total"):
        check = f"= {res[0][0]}" + ("" if res == ref_total else " DIFFERENT")
    print(f"| {name} | {ms:.3f} ms | {check} |", flush=True)
    if "new" in name or "today" in name:
        plan = db.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
        print("    " + "\n    ".join(r[3] for r in plan))
