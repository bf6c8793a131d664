#!/usr/bin/env python3
"""Webhook deliveries per second from one `nimbus serve` to a local receiver, beside
the receiver's own ceiling measured in the same run (see benches/webhooks.sh).

    bench.py receiver PORT            the receiver: counts POSTs, GET /stats answers
                                      {"count", "first", "last"} (monotonic seconds)
    bench.py run NIMBUS_BIN EVENTS CONCURRENCY [DATABASE_URL]
    bench.py resume NIMBUS_BIN MISSED  a subscriber of `realtime(channels: ["documents"])`
                                      keeps the cursor of one event, goes away while
                                      MISSED documents are created, and comes back with
                                      `after: cursor`: the time from its `subscribe` to
                                      the last missed event, beside a live subscriber
                                      receiving the same number of events as they happen

The receiver is a small asyncio HTTP/1.1 server on one core: it reads each request
with its body, answers 200 and closes, as Nimbus opens one connection per delivery
(each is made to the address checked for it). The reference drives the same receiver
with the same body, one new connection per request, CONCURRENCY at once, from this
process. Nimbus's events come from `createPosts` (1,000 documents per request); every
document create is one delivery of a webhook on `databases.*.collections.*.documents.*.create`.
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

STATS = {"count": 0, "first": None, "last": None}


async def serve_one(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            if head.startswith(b"GET /stats"):
                body = json.dumps(STATS).encode()
            else:
                now = time.monotonic()
                STATS["count"] += 1
                STATS["first"] = STATS["first"] or now
                STATS["last"] = now
                body = b"ok"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def receiver(port):
    server = await asyncio.start_server(serve_one, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as r:
        return json.loads(r.read())


async def post_once(port, body):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /ref HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    writer.close()


async def reference(port, total, concurrency, body):
    queue = iter(range(total))

    async def worker():
        for _ in queue:
            await post_once(port, body)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.monotonic() - started)


def graphql(url, key, query, variables=None):
    req = urllib.request.Request(url + "/v1/graphql", json.dumps({"query": query, "variables": variables or {}}).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("X-Nimbus-Key", key)
    with urllib.request.urlopen(req, timeout=300) as r:
        answer = json.loads(r.read())
    if answer.get("errors"):
        sys.exit(f"bench.py: {query[:80]}: {answer['errors']}")
    return answer["data"]


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(nimbus, events, concurrency, database_url=None):
    work = tempfile.mkdtemp(prefix="nimbus-webhooks-")
    rport, nport = free_port(), free_port()
    rec = subprocess.Popen([sys.executable, __file__, "receiver", str(rport)])
    procs = [rec]
    try:
        for _ in range(100):
            try:
                stats(rport)
                break
            except OSError:
                time.sleep(0.05)
        # A body of the size of a document event's delivery.
        body = json.dumps({"$id": "p1", "title": "x" * 40, "body": "y" * 240, "$permissions": []}).encode()
        body = body + b" " * max(0, 900 - len(body))
        ref_rate = asyncio.run(reference(rport, events, concurrency, body))
        base = stats(rport)["count"]

        srv, key = start_nimbus(nimbus, work, nport, {
            "NIMBUS_WEBHOOKS_ALLOW_PRIVATE": "true", "NIMBUS_JOBS_CONCURRENCY": str(concurrency)}, database_url)
        procs.append(srv)
        url = f"http://127.0.0.1:{nport}"
        graphql(url, key, 'mutation { createDatabase(input: {id: "bench", name: "Bench"}) { id } }')
        graphql(url, key, "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { graphqlName } }", {"input": {
            "databaseId": "bench", "id": "posts", "name": "posts",
            "attributes": [{"key": "title", "type": "STRING", "size": 200, "required": True},
                           {"key": "body", "type": "STRING", "size": 1000, "required": True}]}})
        graphql(url, key, "mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { secret } }", {"input": {
            "name": "bench", "url": f"http://127.0.0.1:{rport}/hook", "events": ["databases.*.collections.*.documents.*.create"]}})
        create = "mutation($input: [CreatePostInput!]!) { createPosts(input: $input) { id } }"
        started = time.monotonic()
        for first in range(0, events, 1000):
            batch = [{"id": f"p{n}", "title": "x" * 40, "body": "y" * 240} for n in range(first, min(first + 1000, events))]
            graphql(url, key, create, {"input": batch})
        created = time.monotonic() - started
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            s = stats(rport)
            if s["count"] - base >= events:
                break
            time.sleep(0.05)
        s = stats(rport)
        got = s["count"] - base
        elapsed = s["last"] - started
        cpu = None
        try:
            with open(f"/proc/{srv.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
        print(json.dumps({
            "events": events, "delivered": got, "concurrency": concurrency,
            "backend": "mariadb" if database_url else "sqlite",
            "creates_seconds": round(created, 2), "seconds": round(elapsed, 2),
            "deliveries_per_s": round(got / elapsed, 1), "reference_per_s": round(ref_rate, 1),
            "nimbus_cpu_seconds": cpu,
        }))
    finally:
        for p in procs:
            p.terminate()
            p.wait()


class Ws:
    """A minimal graphql-transport-ws client over a plain socket (no extensions)."""

    def __init__(self, port, key):
        import base64
        import socket
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(("GET /v1/graphql/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode() +
                           "\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.send({"type": "connection_init", "payload": {"X-Nimbus-Key": key}})
        assert self.recv()["type"] == "connection_ack"

    def send(self, message):
        import struct
        data = json.dumps(message).encode()
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def recv(self):
        import struct
        while True:
            self._need(2)
            opcode, n = self.buf[0] & 0x0F, self.buf[1] & 0x7F
            at = 2
            if n == 126:
                self._need(4)
                n, at = struct.unpack(">H", self.buf[2:4])[0], 4
            elif n == 127:
                self._need(10)
                n, at = struct.unpack(">Q", self.buf[2:10])[0], 10
            self._need(at + n)
            data, self.buf = self.buf[at:at + n], self.buf[at + n:]
            if opcode == 1:
                message = json.loads(data)
                if message.get("type") == "ping":
                    self.send({"type": "pong"})
                    continue
                return message
            if opcode == 8:
                raise ConnectionError(f"closed: {data[2:]!r}")

    def close(self):
        self.sock.close()


def start_nimbus(nimbus, work, port, extra_env=None, database_url=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIMBUS_")}
    env.update(NIMBUS_LOG="warn", **(extra_env or {}))
    args = [nimbus, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", work + "/data"]
    if database_url:
        args += ["--database-url", database_url]
    out = open(work + "/nimbus.out", "w+")
    srv = subprocess.Popen(args, env=env, stdout=out, stderr=open(work + "/nimbus.err", "w"))
    for _ in range(200):
        out.seek(0)
        for line in out.read().splitlines():
            if "X-Nimbus-Key:" in line:
                return srv, line.split("X-Nimbus-Key:")[1].split()[0]
        time.sleep(0.05)
    srv.terminate()
    sys.exit("bench.py: Nimbus printed no admin key: " + open(work + "/nimbus.err").read()[-2000:])


def resume(nimbus, missed):
    work = tempfile.mkdtemp(prefix="nimbus-resume-")
    port = free_port()
    srv, key = start_nimbus(nimbus, work, port)
    url = f"http://127.0.0.1:{port}"
    sub = 'subscription($after: String) { realtime(channels: ["documents"], after: $after) { events cursor } }'
    create = "mutation($input: [CreatePostInput!]!) { createPosts(input: $input) { id } }"
    try:
        graphql(url, key, 'mutation { createDatabase(input: {id: "bench", name: "Bench"}) { id } }')
        graphql(url, key, "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { graphqlName } }", {"input": {
            "databaseId": "bench", "id": "posts", "name": "posts",
            "attributes": [{"key": "title", "type": "STRING", "size": 200, "required": True}]}})

        def batches(prefix):
            for first in range(0, missed, 1000):
                graphql(url, key, create, {"input": [{"id": f"{prefix}{n}", "title": "x" * 40} for n in range(first, min(first + 1000, missed))]})

        ws = Ws(port, key)
        ws.send({"id": "1", "type": "subscribe", "payload": {"query": sub, "variables": {}}})
        time.sleep(0.5)  # the subscription is registered before the first write
        graphql(url, key, create, {"input": [{"id": "first", "title": "x"}]})
        cursor = ws.recv()["payload"]["data"]["realtime"]["cursor"]
        ws.close()
        batches("m")
        # Resumed: from `subscribe` to the last missed event.
        ws = Ws(port, key)
        started = time.monotonic()
        ws.send({"id": "1", "type": "subscribe", "payload": {"query": sub, "variables": {"after": cursor}}})
        got = 0
        while got < missed:
            message = ws.recv()
            assert message["type"] == "next", message
            got += 1
        resumed = time.monotonic() - started
        ws.close()
        # Reference: a live subscriber getting as many events as bulk creates make them.
        ws = Ws(port, key)
        ws.send({"id": "1", "type": "subscribe", "payload": {"query": sub, "variables": {}}})
        time.sleep(0.5)
        started = time.monotonic()
        import threading
        writer = threading.Thread(target=batches, args=("l",))
        writer.start()
        got = 0
        while got < missed:
            message = ws.recv()
            assert message["type"] == "next", message
            got += 1
        live = time.monotonic() - started
        writer.join()
        ws.close()
        print(json.dumps({"missed": missed, "resume_seconds": round(resumed, 3),
                          "live_seconds_for_as_many": round(live, 3)}))
    finally:
        srv.terminate()
        srv.wait()


if __name__ == "__main__":
    if sys.argv[1] == "receiver":
        asyncio.run(receiver(int(sys.argv[2])))
    elif sys.argv[1] == "resume":
        resume(sys.argv[2], int(sys.argv[3]))
    else:
        run(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *(sys.argv[5:6]))
