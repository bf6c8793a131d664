"""The write cost of ADR 22's twin indexes on SQLite, at the storage layer alone:
creates (the document and its one grant, one transaction each, WAL, synchronous
NORMAL) into a `documentSecurity` collection laid out as `ddl.rs` makes it with the
benchmark's indexes on `(a_views)` and `(a_published, a_views)`, without twins and
with its three (`(nimbus_reader, id)` and one per index). Both tables start with
10,000 documents; five rounds of 3,000 creates each, alternating which goes first.

Usage: python3 reader_twins_writes.py
Prints each round's microseconds per create, the best and median, and their ratios.
The server's own work per create request is not in these figures: the create
workload of benches/databases.sh gives the request-level cost."""
import os, random, sqlite3, tempfile, time

def make(path, twins):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("CREATE TABLE c (id TEXT NOT NULL PRIMARY KEY, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, nimbus_reader TEXT, a_title TEXT, a_body TEXT, a_views INTEGER, a_published INTEGER)")
    db.execute("CREATE INDEX s_c__created ON c (created_at, id)")
    db.execute("CREATE INDEX s_c__updated ON c (updated_at, id)")
    db.execute("CREATE INDEX i_c__views ON c (a_views)")
    db.execute("CREATE INDEX i_c__pv ON c (a_published, a_views)")
    db.execute("CREATE TABLE c_perms (resource_id TEXT NOT NULL REFERENCES c (id) ON DELETE CASCADE, role TEXT NOT NULL, actions INTEGER NOT NULL, sole INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (resource_id, role)) WITHOUT ROWID")
    db.execute("CREATE INDEX s_c__perms ON c_perms (role, sole, resource_id, actions)")
    if twins:
        db.execute("CREATE INDEX s_c__reader ON c (nimbus_reader, id)")
        db.execute("CREATE INDEX r_c__views ON c (nimbus_reader, a_views, id)")
        db.execute("CREATE INDEX r_c__pv ON c (nimbus_reader, a_published, a_views, id)")
    return db

def insert(db, n, start):
    body = "x" * 240
    t0 = time.perf_counter()
    for i in range(start, start + n):
        id = f"d{random.getrandbits(64):016x}"
        owner = f"user:u{i % 1000}"
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO c VALUES (?, ?, ?, ?, 't', ?, ?, ?)", (id, i, i, owner, body, i % 977, i % 3 != 0))
        db.execute("INSERT INTO c_perms VALUES (?, ?, 13, 1)", (id, owner))
        db.execute("COMMIT")
    return (time.perf_counter() - t0) / n * 1e6

d = tempfile.mkdtemp()
dbs = {t: make(os.path.join(d, f"{t}.db"), t) for t in (False, True)}
for t, db in dbs.items():
    insert(db, 10000, 0)
best = {False: [], True: []}
for r in range(5):
    for t in (False, True) if r % 2 == 0 else (True, False):
        best[t].append(insert(dbs[t], 3000, 10000 + r * 3000))
for t in (False, True):
    print("twins" if t else "none ", " ".join(f"{x:.1f}" for x in best[t]), "us/create; best", f"{min(best[t]):.1f}", "median", f"{sorted(best[t])[2]:.1f}")
print("ratio best", f"{min(best[True]) / min(best[False]):.3f}", "median", f"{sorted(best[True])[2] / sorted(best[False])[2]:.3f}")
