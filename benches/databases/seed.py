#!/usr/bin/env python3
"""The data of benches/databases.sh, and its seeding into each system.

Every system gets the same 10,000 `posts` (by default): post N (1-based) has
  title      "Post N"
  body       about 240 bytes of text that names N
  views      (N * 2654435761) mod 2^32 mod 100001   (pseudo-random, 0..100000)
  published  N % 3 != 0
and indexes on (views) and (published, views).

Who may read them is the scope (environment: BENCH_SCOPE, BENCH_SHARE, BENCH_TEAMS):
  all    (default) every signed-in user reads every post
  owner  post N belongs to user N % SHARE and only its owner reads it; the bench
         user is user 1, so it reads one post in SHARE
  team   post N belongs to team N % SHARE and only that team's members read it; the
         bench user is in teams 1..TEAMS (default 3), so it reads TEAMS posts in SHARE
Users and teams are named u<K> and t<K> on Nimbus, u%014d and t%014d on PocketBase
(its ids have 15 characters), and are the integers K on PostgreSQL.

Subcommands (standard library only; every request's failure stops the run):
  nimbus URL ADMIN_KEY EMAIL PASSWORD [COUNT]
      creates database `bench`, collection `posts` (documentSecurity, read("users"),
      create("users")), the documents `p1`..`pCOUNT` through `createPosts` (1,000 per
      request, with the admin key), then the user and a session; prints
      `secret=… seed_seconds=… signin_seconds=…`.
  pocketbase URL SUPERUSER_EMAIL SUPERUSER_PASSWORD EMAIL PASSWORD [COUNT]
      turns the batch API on, creates the `posts` collection (every rule
      `@request.auth.id != ""`, the two indexes, created/updated autodate fields),
      the records `p00000000000001`.. (15 characters, as PocketBase ids are) through
      /api/batch (1,000 per request, as the superuser), then a user of the built-in
      `users` collection and its token; prints `token=… seed_seconds=…`.
  csv [COUNT]
      the rows as CSV (id,title,body,views,published,owner,team) for PostgreSQL's
      COPY (owner and team empty in the scope `all`, one of them set otherwise).
  expect [COUNT]
      what the bench user must see: `top=<the titles of the 20 most-viewed
      published posts it reads, comma-separated> published=<how many published
      posts it reads> first=<its first post> step=<between its posts of team or
      user 1> mine=<how many of those>`.
"""

import os

import csv
import json
import sys
import time
import urllib.error
import urllib.request

LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure "
    "dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur."
)
BODY_BYTES = 240
SCOPE = os.environ.get("BENCH_SCOPE", "all")
SHARE = int(os.environ.get("BENCH_SHARE", "10"))
TEAMS = int(os.environ.get("BENCH_TEAMS", "3"))
if SCOPE not in ("all", "owner", "team"):
    sys.exit(f"seed.py: BENCH_SCOPE must be all, owner or team, not {SCOPE!r}")


def reader(n):
    """The user (scope owner) or team (scope team) that reads post n."""
    return n % SHARE


def readable(n):
    """Whether the bench user reads post n."""
    if SCOPE == "owner":
        return reader(n) == 1
    if SCOPE == "team":
        return 1 <= reader(n) <= TEAMS
    return True


def nimbus_permissions(n):
    if SCOPE == "owner":
        return [f'read("user:u{reader(n)}")']
    if SCOPE == "team":
        return [f'read("team:t{reader(n)}")']
    return []


def post(n):
    """Post number n (1-based): the same on every system."""
    head = f"Post {n} says: "
    body = head + LOREM[n % 40 :]
    body = (body + " " + LOREM)[:BODY_BYTES]
    return {
        "title": f"Post {n}",
        "body": body,
        "views": (n * 2654435761) % (1 << 32) % 100001,
        "published": n % 3 != 0,
    }


def request(method, url, body=None, headers=None, timeout=300):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as error:
        sys.exit(f"seed.py: {method} {url} answered {error.code}: {error.read().decode()[:2000]}")
    return json.loads(text) if text else None


def graphql(url, query, variables=None, headers=None):
    answer = request("POST", url, {"query": query, "variables": variables or {}}, headers)
    if answer.get("errors"):
        sys.exit(f"seed.py: {query[:120]} answered {json.dumps(answer['errors'])[:2000]}")
    return answer["data"]


def seed_nimbus(url, key, email, password, count=10000):
    admin = {"X-Nimbus-Key": key}
    endpoint = url.rstrip("/") + "/v1/graphql"
    graphql(endpoint, 'mutation { createDatabase(input: {id: "bench", name: "Bench"}) { id } }', headers=admin)
    graphql(
        endpoint,
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { graphqlName } }",
        {
            "input": {
                "databaseId": "bench",
                "id": "posts",
                "name": "posts",
                "documentSecurity": True,
                "permissions": ['read("users")', 'create("users")'] if SCOPE == "all" else ['create("users")'],
                "attributes": [
                    {"key": "title", "type": "STRING", "size": 200, "required": True},
                    {"key": "body", "type": "STRING", "size": 1000, "required": True},
                    {"key": "views", "type": "INTEGER", "min": 0, "max": 1000000, "default": 0},
                    {"key": "published", "type": "BOOLEAN", "default": False},
                ],
                "indexes": [
                    {"key": "by_views", "type": "KEY", "attributes": ["views"]},
                    {
                        "key": "by_published_views",
                        "type": "KEY",
                        "attributes": ["published", "views"],
                        "orders": ["ASC", "DESC"],
                    },
                ],
            }
        },
        admin,
    )
    create = "mutation($input: [CreatePostInput!]!) { createPosts(input: $input) { id } }"
    started = time.monotonic()
    for first in range(1, count + 1, 1000):
        batch = [
            dict(post(n), id=f"p{n}", **({"permissions": nimbus_permissions(n)} if SCOPE != "all" else {}))
            for n in range(first, min(first + 1000, count + 1))
        ]
        created = graphql(endpoint, create, {"input": batch}, admin)["createPosts"]
        if len(created) != len(batch):
            sys.exit(f"seed.py: createPosts made {len(created)} of {len(batch)} documents")
    seeded = time.monotonic() - started
    graphql(
        endpoint,
        "mutation($e: String!, $p: String!) { createAccount(input: {id: \"u1\", email: $e, password: $p}) { id } }",
        {"e": email, "p": password},
    )
    if SCOPE == "team":
        for k in range(1, TEAMS + 1):
            graphql(endpoint, f'mutation {{ createTeam(input: {{id: "t{k}", name: "Team {k}"}}) {{ id }} }}', headers=admin)
            graphql(
                endpoint,
                f'mutation {{ createMembership(input: {{teamId: "t{k}", userId: "u1", roles: ["member"]}}) {{ id }} }}',
                headers=admin,
            )
    started = time.monotonic()
    secret = graphql(
        endpoint,
        "mutation($e: String!, $p: String!) { createEmailPasswordSession(input: {email: $e, password: $p}) { secret } }",
        {"e": email, "p": password},
    )["createEmailPasswordSession"]["secret"]
    signin = time.monotonic() - started
    total = graphql(endpoint, "{ posts { totalCount } }", headers={"Authorization": f"Bearer {secret}"})
    mine = sum(1 for n in range(1, count + 1) if readable(n))
    if total["posts"]["totalCount"] != mine:
        sys.exit(f"seed.py: the signed-in user sees {total['posts']['totalCount']} posts, not {mine}")
    print(f"secret={secret} seed_seconds={seeded:.2f} signin_seconds={signin:.3f}")


def pocketbase_admin(url, su_email, su_password):
    """The base URL and superuser headers of a PocketBase, batches of 1,000 allowed."""
    base = url.rstrip("/")
    su = request(
        "POST",
        f"{base}/api/collections/_superusers/auth-with-password",
        {"identity": su_email, "password": su_password},
    )
    admin = {"Authorization": su["token"]}
    request(
        "PATCH",
        f"{base}/api/settings",
        {"batch": {"enabled": True, "maxRequests": 1000, "timeout": 60, "maxBodySize": 0}},
        admin,
    )
    return base, admin


def seed_pocketbase(url, su_email, su_password, email, password, count=10000):
    base, admin = pocketbase_admin(url, su_email, su_password)
    rule = create_rule = '@request.auth.id != ""'
    scoped_fields, scoped_indexes = [], []
    if SCOPE == "owner":
        rule = "owner = @request.auth.id"
        create_rule = '@request.auth.id != "" && @request.body.owner = @request.auth.id'
        scoped_fields = [{"name": "owner", "type": "text", "max": 15}]
        scoped_indexes = ["CREATE INDEX idx_posts_owner ON posts (owner, published, views DESC)"]
    elif SCOPE == "team":
        # The user's teams are a relation of the user; a post names its team.
        teams = request(
            "POST",
            f"{base}/api/collections",
            {"name": "teams", "type": "base", "fields": [{"name": "name", "type": "text"}]},
            admin,
        )
        for k in range(1, TEAMS + 1):
            request("POST", f"{base}/api/collections/teams/records", {"id": f"t{k:014d}", "name": f"Team {k}"}, admin)
        users = request("GET", f"{base}/api/collections/users", headers=admin)
        users["fields"].append(
            {"name": "teams", "type": "relation", "collectionId": teams["id"], "maxSelect": 999, "cascadeDelete": False}
        )
        request("PATCH", f"{base}/api/collections/users", {"fields": users["fields"]}, admin)
        rule = "@request.auth.teams.id ?= team"
        create_rule = "@request.auth.teams.id ?= @request.body.team"
        scoped_fields = [{"name": "team", "type": "text", "max": 15}]
        scoped_indexes = ["CREATE INDEX idx_posts_team ON posts (team, published, views DESC)"]
    request(
        "POST",
        f"{base}/api/collections",
        {
            "name": "posts",
            "type": "base",
            "listRule": rule,
            "viewRule": rule,
            "createRule": create_rule,
            "updateRule": None,
            "deleteRule": None,
            "fields": [
                {"name": "title", "type": "text", "required": True, "max": 200},
                {"name": "body", "type": "text", "required": True, "max": 1000},
                {"name": "views", "type": "number", "onlyInt": True, "min": 0, "max": 1000000},
                {"name": "published", "type": "bool"},
                {"name": "created", "type": "autodate", "onCreate": True, "onUpdate": False},
                {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
            ]
            + scoped_fields,
            "indexes": [
                "CREATE INDEX idx_posts_views ON posts (views)",
                "CREATE INDEX idx_posts_published_views ON posts (published, views DESC)",
            ]
            + scoped_indexes,
        },
        admin,
    )
    started = time.monotonic()
    for first in range(1, count + 1, 1000):
        requests = [
            {
                "method": "POST",
                "url": "/api/collections/posts/records",
                "body": dict(post(n), id=f"p{n:014d}", **pocketbase_scope(n)),
            }
            for n in range(first, min(first + 1000, count + 1))
        ]
        answers = request("POST", f"{base}/api/batch", {"requests": requests}, admin)
        bad = [a for a in answers if a.get("status", 0) // 100 != 2]
        if bad or len(answers) != len(requests):
            sys.exit(f"seed.py: the PocketBase batch failed: {json.dumps(bad[:3])[:2000]}")
    seeded = time.monotonic() - started
    request(
        "POST",
        f"{base}/api/collections/users/records",
        {"id": f"u{1:014d}", "email": email, "password": password, "passwordConfirm": password},
    )
    if SCOPE == "team":
        request(
            "PATCH",
            f"{base}/api/collections/users/records/u{1:014d}",
            {"teams": [f"t{k:014d}" for k in range(1, TEAMS + 1)]},
            admin,
        )
    token = request(
        "POST",
        f"{base}/api/collections/users/auth-with-password",
        {"identity": email, "password": password},
    )["token"]
    total = request("GET", f"{base}/api/collections/posts/records?perPage=1", headers={"Authorization": token})
    mine = sum(1 for n in range(1, count + 1) if readable(n))
    if total["totalItems"] != mine:
        sys.exit(f"seed.py: the signed-in user sees {total['totalItems']} records, not {mine}")
    print(f"token={token} seed_seconds={seeded:.2f}")


def pocketbase_scope(n):
    if SCOPE == "owner":
        return {"owner": f"u{reader(n):014d}"}
    if SCOPE == "team":
        return {"team": f"t{reader(n):014d}"}
    return {}


def write_csv(count=10000):
    out = csv.writer(sys.stdout, lineterminator="\n")
    for n in range(1, count + 1):
        p = post(n)
        owner = reader(n) if SCOPE == "owner" else ""
        team = reader(n) if SCOPE == "team" else ""
        out.writerow([n, p["title"], p["body"], p["views"], "t" if p["published"] else "f", owner, team])


def write_expect(count=10000):
    mine = [n for n in range(1, count + 1) if readable(n)]
    published = [(n, post(n)) for n in mine if post(n)["published"]]
    top = sorted(published, key=lambda p: (-p[1]["views"], p[0]))[:20]
    step = 1 if SCOPE == "all" else SHARE
    first = 1
    print(
        f"top={','.join(p[1]['title'] for p in top).replace(' ', '_')} published={len(published)} "
        f"first={first} step={step} mine={len(range(first, count + 1, step))}"
    )


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    command, args = argv[1], argv[2:]
    if command == "nimbus" and len(args) in (4, 5):
        seed_nimbus(*args[:4], *(int(a) for a in args[4:]))
    elif command == "pocketbase" and len(args) in (5, 6):
        seed_pocketbase(*args[:5], *(int(a) for a in args[5:]))
    elif command == "csv" and len(args) in (0, 1):
        write_csv(*(int(a) for a in args))
    elif command == "expect" and len(args) in (0, 1):
        write_expect(*(int(a) for a in args))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
