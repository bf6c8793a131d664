#!/usr/bin/env python3
"""The data and the signed-in users of benches/realtime.sh.

Each system gets a `posts` collection (title, views) that every signed-in user may
read, one post, and COUNT users, each with its own session; the subscribers of the
benchmark each sign in as one of them. The benchmark's updates set the post's
`views` to the event's sequence number.

Subcommands (standard library only; every request's failure stops the run):
  nimbus URL ADMIN_KEY COUNT OUT [anonymous|password]
      creates database `realtime`, collection `posts` (permissions read("users"),
      create("users"), update("users"); no document security), the document `p1`,
      then COUNT users with a session each: `createAnonymousSession` (no password
      hashing; anonymous users hold the `users` role), or `createAccount` then
      `createEmailPasswordSession` (two Argon2id hashes each), 50 aliased
      mutations per request; writes the session secrets to OUT, one a line;
      prints `sessions=… seconds=…`.
  pocketbase URL SUPERUSER_EMAIL SUPERUSER_PASSWORD COUNT OUT
      creates the `posts` collection (list and view rules `@request.auth.id != ""`,
      updates by superusers only) and the record `p00000000000001`, lowers the
      bcrypt cost of the `users` password field to 4 (its documented minimum: the
      default, 10, would take minutes for thousands of users and measures nothing
      here), creates COUNT users through /api/batch and signs each in with
      auth-with-password; writes their tokens to OUT; prints
      `superuser_token=… record=… users=… seconds=…`.
"""

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

# No __pycache__ beside seed.py in the source tree.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "databases"))
from seed import graphql, pocketbase_admin, request  # noqa: E402  (benches/databases/seed.py)

# Aliased mutations per request. Each sign-in answers with a Set-Cookie header, and
# Python's http.client refuses a response with more than 100 headers.
ALIASES = 50
PASSWORD = "realtime bench password 1234"


def in_batches(count, size):
    return [range(first, min(first + size, count)) for first in range(0, count, size)]


def setup_nimbus(url, key, count, out, how="anonymous"):
    admin = {"X-Nimbus-Key": key}
    endpoint = url.rstrip("/") + "/v1/graphql"
    graphql(endpoint, 'mutation { createDatabase(input: {id: "realtime", name: "Realtime"}) { id } }', headers=admin)
    graphql(
        endpoint,
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { graphqlName } }",
        {
            "input": {
                "databaseId": "realtime",
                "id": "posts",
                "name": "posts",
                "documentSecurity": False,
                "permissions": ['read("users")', 'create("users")', 'update("users")'],
                "attributes": [
                    {"key": "title", "type": "STRING", "size": 200, "required": True},
                    {"key": "views", "type": "INTEGER", "min": 0, "max": 2000000000, "default": 0},
                ],
            }
        },
        admin,
    )
    graphql(
        endpoint,
        "mutation($input: CreatePostInput!) { createPost(input: $input) { id } }",
        {"input": {"id": "p1", "title": "Post 1", "views": 0}},
        admin,
    )
    started = time.monotonic()

    def email(n):
        return f"realtime-{n}@example.com"

    def aliased(numbers, field, arguments):
        parts = [f"s{n}: {field}{arguments(n)} {{ {'secret' if 'Session' in field else 'id'} }}" for n in numbers]
        return "mutation { " + " ".join(parts) + " }"

    def sessions(numbers):
        if how == "anonymous":
            data = graphql(endpoint, aliased(numbers, "createAnonymousSession", lambda n: ""))
        else:
            credentials = lambda n: f'(input: {{email: "{email(n)}", password: "{PASSWORD}"}})'  # noqa: E731
            graphql(endpoint, aliased(numbers, "createAccount", credentials))
            data = graphql(endpoint, aliased(numbers, "createEmailPasswordSession", credentials))
        return [data[f"s{n}"]["secret"] for n in numbers]

    # Two requests at a time: the server has two cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        secrets = [s for batch in pool.map(sessions, in_batches(count, ALIASES)) for s in batch]
    seconds = time.monotonic() - started
    # Every subscriber must be able to read the post, or it would receive nothing.
    for secret in (secrets[0], secrets[-1]):
        seen = graphql(endpoint, '{ post(id: "p1") { id views } }', headers={"Authorization": f"Bearer {secret}"})
        if not seen.get("post"):
            sys.exit(f"setup.py: a benchmark user cannot read the post: {seen}")
    with open(out, "w") as f:
        f.write("\n".join(secrets) + "\n")
    print(f"sessions={len(secrets)} seconds={seconds:.2f}")


def setup_pocketbase(url, su_email, su_password, count, out):
    base, admin = pocketbase_admin(url, su_email, su_password)
    rule = '@request.auth.id != ""'
    request(
        "POST",
        f"{base}/api/collections",
        {
            "name": "posts",
            "type": "base",
            "listRule": rule,
            "viewRule": rule,
            "createRule": rule,
            "updateRule": None,
            "deleteRule": None,
            "fields": [
                {"name": "title", "type": "text", "required": True, "max": 200},
                {"name": "views", "type": "number", "onlyInt": True, "min": 0, "max": 2000000000},
            ],
        },
        admin,
    )
    record = "p00000000000001"
    request("POST", f"{base}/api/collections/posts/records", {"id": record, "title": "Post 1", "views": 0}, admin)
    users = request("GET", f"{base}/api/collections/users", headers=admin)
    fields = users["fields"]
    for field in fields:
        if field.get("type") == "password":
            field["cost"] = 4
    request("PATCH", f"{base}/api/collections/users", {"fields": fields}, admin)
    started = time.monotonic()

    def email(n):
        return f"realtime-{n}@example.com"

    for numbers in in_batches(count, 1000):
        requests = [
            {
                "method": "POST",
                "url": "/api/collections/users/records",
                "body": {"email": email(n), "password": PASSWORD, "passwordConfirm": PASSWORD},
            }
            for n in numbers
        ]
        answers = request("POST", f"{base}/api/batch", {"requests": requests}, admin)
        bad = [a for a in answers if a.get("status", 0) // 100 != 2]
        if bad or len(answers) != len(requests):
            sys.exit(f"setup.py: the PocketBase batch failed: {str(bad[:3])[:2000]}")

    def sign_in(n):
        return request(
            "POST",
            f"{base}/api/collections/users/auth-with-password",
            {"identity": email(n), "password": PASSWORD},
        )["token"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        tokens = list(pool.map(sign_in, range(count)))
    seconds = time.monotonic() - started
    for token in (tokens[0], tokens[-1]):
        seen = request("GET", f"{base}/api/collections/posts/records/{record}", headers={"Authorization": token})
        if seen.get("id") != record:
            sys.exit(f"setup.py: a benchmark user cannot read the record: {seen}")
    with open(out, "w") as f:
        f.write("\n".join(tokens) + "\n")
    print(f"superuser_token={admin['Authorization']} record={record} users={len(tokens)} seconds={seconds:.2f}")


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    command, args = argv[1], argv[2:]
    if command == "nimbus" and len(args) in (4, 5):
        if len(args) == 5 and args[4] not in ("anonymous", "password"):
            sys.exit(__doc__)
        setup_nimbus(args[0], args[1], int(args[2]), *args[3:])
    elif command == "pocketbase" and len(args) == 5:
        setup_pocketbase(args[0], args[1], args[2], int(args[3]), args[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
