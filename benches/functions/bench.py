#!/usr/bin/env python3
"""The parts of benches/functions.sh that are not wrk: setting up functions and
PocketBase's records, cold starts, the per-execution overhead, and memory with
1,000 asynchronous executions. Standard library only; one keep-alive connection
per measurement, so the client's own cost is the same for every request it times.

Every command prints `RESULT key=value ...` as its last line.

    bench.py setup URL KEY                 functions `hello` and `reader`, a document
    bench.py quiet URL KEY                 only `hello-quiet` and `reader-quiet`, a document
    bench.py cold URL KEY ROUNDS           activateDeployment answered -> first response
    bench.py overhead URL ROUNDS           hello-world execution vs { __typename }
    bench.py pocketbase URL EMAIL PASSWORD a `posts` collection with one record
    bench.py memory URL KEY PID COUNT      RSS idle, while COUNT async executions run, after
"""

import http.client
import json
import statistics
import sys
import time
import urllib.parse

HELLO = "export default async ({ res }) => res.json({ message: 'Hello' });"
# Reads the document named by the path through the project's own GraphQL.
READER = """export default async ({ req, res }) => {
    const read = await nimbus.graphql(
        'query($id: ID!) { document(databaseId: "bench", collectionId: "posts", id: $id) { data } }',
        { id: req.path.slice(1) },
    );
    if (read.errors) throw new Error(JSON.stringify(read.errors));
    return res.json({ title: read.data.document.data.title });
};"""
# Holds its place for a while, as an execution waiting on a slow API would.
SLOW = """export default async ({ res }) => {
    await new Promise((resolve) => setTimeout(resolve, 200));
    return res.json({ message: 'Hello' });
};"""


class Client:
    def __init__(self, url, key=None):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.key = key
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if self.key:
            headers["X-Nimbus-Key"] = self.key
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def graphql(self, query, variables=None):
        body = json.dumps({"query": query, "variables": variables or {}})
        status, answer = self.request(
            "POST", "/v1/graphql", body, {"Content-Type": "application/json"}
        )
        answer = json.loads(answer)
        if answer.get("errors"):
            sys.exit(f"GraphQL errors ({status}): {answer['errors']}")
        return answer["data"]

    def deploy(self, function, code, activate=True):
        boundary = "nimbus-bench-boundary"
        operations = json.dumps(
            {
                "query": "mutation($input: CreateDeploymentInput!) { createDeployment(input: $input) { id } }",
                "variables": {
                    "input": {"functionId": function, "code": None, "activate": activate}
                },
            }
        )
        parts = [
            ("operations", None, operations.encode()),
            ("map", None, b'{"0": ["variables.input.code"]}'),
            ("0", "main.js", code.encode()),
        ]
        body = b""
        for name, filename, content in parts:
            disposition = f'form-data; name="{name}"'
            if filename:
                disposition += f'; filename="{filename}"'
            body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
            body += content + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        status, answer = self.request(
            "POST",
            "/v1/graphql",
            body,
            {
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Apollo-Require-Preflight": "true",
            },
        )
        answer = json.loads(answer)
        if answer.get("errors"):
            sys.exit(f"deployment refused ({status}): {answer['errors']}")
        return answer["data"]["createDeployment"]["id"]


def create_function(client, function, settings):
    client.graphql(
        "mutation($input: CreateFunctionInput!) { createFunction(input: $input) { id } }",
        {"input": {"id": function, "name": function, "entrypoint": "main.js", **settings}},
    )


def create_document(client):
    """The database `bench`, its collection `posts` and the document `p1`."""
    client.graphql('mutation { createDatabase(input: {id: "bench", name: "Bench"}) { id } }')
    client.graphql(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        {
            "input": {
                "databaseId": "bench",
                "id": "posts",
                "name": "posts",
                "attributes": [{"key": "title", "type": "STRING", "size": 100, "required": True}],
            }
        },
    )
    client.graphql(
        'mutation { createDocument(input: {databaseId: "bench", collectionId: "posts", id: "p1", data: {title: "Hello"}}) { id } }'
    )


def create_quiet(client):
    """Warm, and no record of their successes (`logging: false`, ADR 31)."""
    create_function(client, "hello-quiet", {"execute": ["any"], "warm": True, "logging": False})
    client.deploy("hello-quiet", HELLO)
    create_function(
        client, "reader-quiet", {"execute": ["any"], "scopes": ["documents.read"], "warm": True, "logging": False}
    )
    client.deploy("reader-quiet", READER)


def check_routes(url, routes):
    for path, expect in routes:
        status, body = Client(url).request("GET", path)
        if status != 200 or expect not in body:
            sys.exit(f"{path} answered {status} {body[:200]!r}")


QUIET_ROUTES = [
    ("/v1/functions/hello-quiet", b"Hello"),
    ("/v1/functions/reader-quiet/p1", b"Hello"),
]


def setup(url, key):
    client = Client(url, key)
    create_function(client, "hello", {"execute": ["any"]})
    client.deploy("hello", HELLO)
    create_document(client)
    create_function(client, "reader", {"execute": ["any"], "scopes": ["documents.read"]})
    client.deploy("reader", READER)
    # The same handlers in warm contexts (ADR 30): one per sandbox thread, reused.
    create_function(client, "hello-warm", {"execute": ["any"], "warm": True})
    client.deploy("hello-warm", HELLO)
    create_function(client, "reader-warm", {"execute": ["any"], "scopes": ["documents.read"], "warm": True})
    client.deploy("reader-warm", READER)
    create_quiet(client)
    create_function(client, "slow", {"execute": ["any"]})
    client.deploy("slow", SLOW)
    check_routes(
        url,
        [
            ("/v1/functions/hello", b"Hello"),
            ("/v1/functions/reader/p1", b"Hello"),
            ("/v1/functions/hello-warm", b"Hello"),
            ("/v1/functions/reader-warm/p1", b"Hello"),
        ]
        + QUIET_ROUTES,
    )
    print("RESULT document=p1")


def quiet(url, key):
    client = Client(url, key)
    create_document(client)
    create_quiet(client)
    check_routes(url, QUIET_ROUTES)
    print("RESULT document=p1")


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def cold(url, key, rounds):
    """Per round: a new deployment uploaded (not active), activated, and the time
    from activateDeployment's answer to the first execution's response."""
    client = Client(url, key)
    runner = Client(url)
    create_function(client, "cold", {"execute": ["any"]})
    times = []
    for n in range(rounds):
        deployment = client.deploy("cold", HELLO.replace("Hello", f"Hello {n}"), activate=False)
        client.graphql(
            "mutation($input: DeploymentRefInput!) { activateDeployment(input: $input) { id } }",
            {"input": {"functionId": "cold", "deploymentId": deployment}},
        )
        started = time.perf_counter()
        status, body = runner.request("GET", "/v1/functions/cold")
        elapsed = time.perf_counter() - started
        if status != 200 or f"Hello {n}".encode() not in body:
            sys.exit(f"round {n}: {status} {body[:200]!r}")
        times.append(elapsed * 1000)
    print(
        f"RESULT rounds={rounds} p50_ms={statistics.median(times):.2f} "
        f"p90_ms={percentile(times, 90):.2f} max_ms={max(times):.2f}"
    )


def overhead(url, rounds):
    """Sequential requests on one connection: the hello-world function over its
    HTTP route, and `{ __typename }` over GraphQL (a request that does nothing),
    alternated so that both see the same machine; the difference of the medians
    is what an execution adds (a fresh context, the run, its record)."""
    client = Client(url)
    typename = json.dumps({"query": "{ __typename }"})
    hello, reference = [], []
    for _ in range(rounds // 10):
        client.request("GET", "/v1/functions/hello")
    for _ in range(rounds):
        started = time.perf_counter()
        status, _ = client.request("GET", "/v1/functions/hello")
        hello.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        client.request("POST", "/v1/graphql", typename, {"Content-Type": "application/json"})
        reference.append((time.perf_counter() - started) * 1000)
        if status != 200:
            sys.exit(f"hello answered {status}")
    print(
        f"RESULT rounds={rounds} hello_p50_ms={statistics.median(hello):.3f} "
        f"typename_p50_ms={statistics.median(reference):.3f} "
        f"overhead_p50_ms={statistics.median(hello) - statistics.median(reference):.3f}"
    )


def pocketbase(url, email, password):
    client = Client(url)
    status, body = client.request(
        "POST",
        "/api/collections/_superusers/auth-with-password",
        json.dumps({"identity": email, "password": password}),
        {"Content-Type": "application/json"},
    )
    token = json.loads(body)["token"]
    auth = {"Content-Type": "application/json", "Authorization": token}
    status, body = client.request(
        "POST",
        "/api/collections",
        json.dumps(
            {
                "name": "posts",
                "type": "base",
                "listRule": "",
                "viewRule": "",
                "fields": [{"name": "title", "type": "text", "required": True}],
            }
        ),
        auth,
    )
    if status != 200:
        sys.exit(f"collection: {status} {body[:300]!r}")
    status, body = client.request(
        "POST", "/api/collections/posts/records", json.dumps({"title": "Hello"}), auth
    )
    if status != 200:
        sys.exit(f"record: {status} {body[:300]!r}")
    print(f"RESULT record={json.loads(body)['id']}")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def memory(url, key, pid, count):
    """RSS at rest, its peak while COUNT asynchronous executions of `slow` (200 ms
    each) are queued and run, and once they have all ended."""
    client = Client(url, key)
    idle = rss_mib(pid)
    started = time.perf_counter()
    queued = 0
    peak = idle
    while queued < count:
        batch = min(100, count - queued)
        fields = " ".join(
            f'e{n}: createExecution(input: {{functionId: "slow", async: true}}) {{ id }}'
            for n in range(batch)
        )
        client.graphql(f"mutation {{ {fields} }}")
        queued += batch
        peak = max(peak, rss_mib(pid))
    queued_at = time.perf_counter() - started
    done = 0
    while True:
        peak = max(peak, rss_mib(pid))
        done = client.graphql(
            'query { jobs(kind: "functions.execute", status: DONE, first: 1) { totalCount } }'
        )["jobs"]["totalCount"]
        if done >= count:
            break
        if time.perf_counter() - started > 600:
            sys.exit(f"only {done} of {count} executions ended in 600 s")
        time.sleep(0.05)
    ran_in = time.perf_counter() - started
    time.sleep(5)
    after = rss_mib(pid)
    print(
        f"RESULT count={count} idle_mib={idle:.1f} peak_mib={peak:.1f} after_mib={after:.1f} "
        f"per_execution_kib={(peak - idle) * 1024 / count:.1f} queued_s={queued_at:.2f} ran_s={ran_in:.2f}"
    )


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "setup":
        setup(*args)
    elif command == "quiet":
        quiet(*args)
    elif command == "cold":
        cold(args[0], args[1], int(args[2]))
    elif command == "overhead":
        overhead(args[0], int(args[1]))
    elif command == "pocketbase":
        pocketbase(*args)
    elif command == "memory":
        memory(args[0], args[1], int(args[2]), int(args[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
