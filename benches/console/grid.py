"""The console's document grid against a large collection, timed per request.

    python3 grid.py seed URL KEY ROWS     database `grid`, collection `items` (title,
                                          price, category; no index but the id), ROWS
                                          documents through createItems (1,000 a request)
    python3 grid.py time URL KEY REPEAT   each query the grid sends, REPEAT times
    python3 grid.py index URL KEY -       indexes on the attributes the grid sorts and
                                          filters by in this benchmark
                                          (a user adding them): `by_price`, `by_category`

The queries are the grid's own (console/page-documents.js): the first page with the
count (`ConsoleDocumentsTotal`), the next page by `cursorAfter`, a page half-way in
by `cursorAfter` (scrolled to) and by `offset` (jumped to), each unsorted, sorted by
price and filtered on category. Each request's time is curl's time to the first
byte of the answer minus its time to the request sent (`time_starttransfer -
time_pretransfer`) over loopback: the server's time, without connecting. Prints a
RESULT line per query with p50/p95/max in milliseconds and whether p95 is under the
50 ms goal.
"""

import json
import subprocess
import sys
import time
import urllib.request

PAGE = 100
FIELDS = "id createdAt updatedAt permissions data"
DOCUMENTS = "query ConsoleDocuments($db: ID!, $coll: ID!, $queries: [String!]) {\n  documents(databaseId: $db, collectionId: $coll, queries: $queries) { documents { " + FIELDS + " } }\n}"
WITH_TOTAL = "query ConsoleDocumentsTotal($db: ID!, $coll: ID!, $queries: [String!]) {\n  documents(databaseId: $db, collectionId: $coll, queries: $queries) { total documents { " + FIELDS + " } }\n}"
CATEGORIES = ["books", "games", "music", "tools", "toys"]


def graphql(url, key, query, variables=None):
    request = urllib.request.Request(
        url + "/v1/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json", "X-Nimbus-Key": key},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        body = json.load(response)
    if body.get("errors"):
        sys.exit(f"grid.py: {json.dumps(body['errors'])[:400]}")
    return body["data"]


def seed(url, key, rows):
    graphql(url, key, 'mutation { createDatabase(input: {id: "grid", name: "Grid"}) { id } }')
    graphql(
        url,
        key,
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        {
            "input": {
                "databaseId": "grid",
                "id": "items",
                "name": "Items",
                "graphqlName": "Item",
                "permissions": ['read("users")'],
                "attributes": [
                    {"key": "title", "type": "STRING", "size": 100},
                    {"key": "price", "type": "INTEGER"},
                    {"key": "category", "type": "STRING", "size": 20},
                ],
            }
        },
    )
    started = time.monotonic()
    create = "mutation($input: [CreateItemInput!]!) { createItems(input: $input) { id } }"
    for first in range(0, rows, 1000):
        batch = [
            {
                "id": f"i{n:06d}",
                "title": f"Item number {n}",
                # Spread over 0..99,999 without following the insertion order.
                "price": (n * 7919) % 100000,
                "category": CATEGORIES[n % len(CATEGORIES)],
            }
            for n in range(first + 1, min(first + 1000, rows) + 1)
        ]
        made = graphql(url, key, create, {"input": batch})["createItems"]
        if len(made) != len(batch):
            sys.exit(f"grid.py: createItems made {len(made)} of {len(batch)}")
    print(f"seeded rows={rows} seconds={time.monotonic() - started:.1f}")


def q(method, attribute=None, values=None):
    query = {"method": method}
    if attribute is not None:
        query["attribute"] = attribute
    if values is not None:
        query["values"] = values
    return json.dumps(query)


def timed(url, key, query, queries, check):
    body = json.dumps({"query": query, "variables": {"db": "grid", "coll": "items", "queries": queries}})
    out = subprocess.run(
        [
            "curl", "-sS", "-o", "-", "-w", "\n%{http_code} %{time_pretransfer} %{time_starttransfer}",
            "-H", "Content-Type: application/json", "-H", f"X-Nimbus-Key: {key}",
            "-H", "X-Nimbus-Project: default", "--data-binary", "@-", url + "/v1/graphql",
        ],
        input=body.encode(), capture_output=True, check=True,
    ).stdout.decode()
    payload, _, tail = out.rpartition("\n")
    status, pre, first = tail.split()
    data = json.loads(payload)
    if status != "200" or data.get("errors"):
        sys.exit(f"grid.py: HTTP {status} {payload[:400]}")
    check(data["data"]["documents"])
    return (float(first) - float(pre)) * 1000


def percentile(sorted_values, p):
    rank = max(0, min(len(sorted_values) - 1, -(-p * len(sorted_values) // 100) - 1))
    return sorted_values[rank]


def time_all(url, key, repeat):
    limit = q("limit", values=[PAGE])
    middle = 50_000
    by_price = q("orderDesc", "price")
    books = q("equal", "category", ["books"])

    def id_at(base, offset):
        # The id a scroll reaches: the last of the page before `offset` (not timed).
        page = graphql(url, key, DOCUMENTS, {"db": "grid", "coll": "items", "queries": base + [q("limit", values=[1]), q("offset", values=[offset - 1])]})
        return page["documents"]["documents"][0]["id"]

    def full(total=None):
        def check(listed):
            assert len(listed["documents"]) == PAGE, len(listed["documents"])
            if total is not None:
                assert listed["total"] == total, (listed["total"], total)
        return check

    rows = graphql(url, key, WITH_TOTAL, {"db": "grid", "coll": "items", "queries": [limit]})["documents"]["total"]
    books_total = graphql(url, key, WITH_TOTAL, {"db": "grid", "coll": "items", "queries": [books, limit]})["documents"]["total"]
    cases = []
    for name, base, count in [("unsorted", [], rows), ("sorted by price desc", [by_price], rows), ("filtered category = books", [books], books_total)]:
        second = id_at(base, PAGE)
        deep = id_at(base, min(middle, count - PAGE))
        cases += [
            (f"{name}: first page + total", WITH_TOTAL, base + [limit], full(count)),
            (f"{name}: next page (cursorAfter)", DOCUMENTS, base + [limit, q("cursorAfter", values=[second])], full()),
            (f"{name}: page at {min(middle, count - PAGE):,} (cursorAfter)", DOCUMENTS, base + [limit, q("cursorAfter", values=[deep])], full()),
            (f"{name}: page at {min(middle, count - PAGE):,} (offset)", DOCUMENTS, base + [limit, q("offset", values=[min(middle, count - PAGE)])], full()),
        ]
    worst = 0.0
    for name, query, queries, check in cases:
        timed(url, key, query, queries, check)  # warm: the schema and statement caches
        times = sorted(timed(url, key, query, queries, check) for _ in range(repeat))
        p50, p95 = percentile(times, 50), percentile(times, 95)
        worst = max(worst, p95)
        verdict = "yes" if p95 < 50 else "NO"
        print(f"RESULT query=\"{name}\" n={repeat} p50_ms={p50:.1f} p95_ms={p95:.1f} max_ms={times[-1]:.1f} under_50ms={verdict}")
    print(f"WORST p95_ms={worst:.1f}")


def index(url, key):
    started = time.monotonic()
    for attribute in ["price", "category"]:
        graphql(
            url,
            key,
            "mutation($input: CreateIndexInput!) { createIndex(input: $input) { id } }",
            {"input": {"databaseId": "grid", "collectionId": "items", "index": {"key": f"by_{attribute}", "type": "KEY", "attributes": [attribute], "orders": ["ASC"]}}},
        )
    print(f"indexed by_price by_category seconds={time.monotonic() - started:.1f}")


if __name__ == "__main__":
    command, url, key, number = sys.argv[1:5]
    if command == "seed":
        seed(url, key, int(number))
    elif command == "index":
        index(url, key)
    else:
        time_all(url, key, int(number))
