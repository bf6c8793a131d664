#!/usr/bin/env python3
"""The hostile client of benches/abuse.sh: one attack on a Nimbus server, from a
loopback address of its own, for a fixed time. Standard library only.

    attack.py PHASE --url http://127.0.0.1:PORT --source 127.0.0.2 --duration 15 [...]

Phases (each the attacker alone, in a loop until its time is up):
  bombs       GraphQL documents that are small to send and big to work on: 30
              fragments each spreading the next twice (2^30 fields if expanded),
              10,000 aliases, 20,000 copies of one field and 4,000 copies of a
              field with arguments (same response key, to be merged); over
              `--connections` kept-alive connections, each sending the next as soon
              as the last was answered
  slowloris   `--connections` connections that each send half a request head, then
              nothing; one the server closes is opened again at once
  websockets  `--connections` WebSockets (graphql-transport-ws), each initialised
              (connection_init, connection_ack) and then idle; reopened when closed
  uploads     anonymous multipart `createFile` requests of `--upload-mib` MiB each,
              one after another on each of `--connections` connections
  previews    `--connections` connections each asking, one after another, for a
              preview of `--file` (public-read) at a width never asked before, so
              that none comes from the cache
  presence    `--connections` WebSockets, each holding `--presences` `presence`
              subscriptions on one channel (each a JOIN to everyone there), and
              replacing its oldest every `--churn-ms` (a LEAVE and a JOIN)
Every socket is bound to `--source` before it connects, so the server counts the
attacker as a client of its own. Target and source must be loopback addresses
(127.0.0.0/8); connections are capped by `--connections`, the time by `--duration`
(and an alarm a minute later, whatever happens).

Prints `READY key=value ...` once the attack is in place (its sockets opened),
then, when its time is up, `RESULT key=value ...`: what it sent, how the server
answered (`outcomes=STATUS:CODE*COUNT,...`, CODE being the first GraphQL error's
`extensions.code`) and the CPU seconds the attacker itself used.
"""

import argparse
import asyncio
import base64
import collections
import ipaddress
import json
import os
import signal
import sys
import time
import urllib.parse

RECONNECT_PAUSE = 1.0
CONNECT_TIMEOUT = 5.0
# What a presence says about itself: the 1 KiB a state may hold, nearly.
PRESENCE_STATE = {"name": "x" * 900, "cursor": [12, 34]}


def loopback(address, what):
    try:
        if ipaddress.ip_address(address).is_loopback:
            return address
    except ValueError:
        pass
    sys.exit(f"attack.py: {what} {address!r} is not a loopback address")


class Stats:
    """Counters a phase reports in its RESULT line."""

    def __init__(self):
        self.counts = collections.Counter()
        self.outcomes = collections.Counter()
        self.latencies = []
        # Answer times by kind of request, where a phase sends several kinds.
        self.kinds = collections.defaultdict(list)
        self.open_now = 0
        self.open_peak = 0

    def opened(self):
        self.open_now += 1
        self.open_peak = max(self.open_peak, self.open_now)

    def closed(self):
        self.open_now -= 1

    def outcome(self, status, body=b"", kind=None):
        code = "-"
        if body[:1] == b"{":
            try:
                errors = json.loads(body).get("errors") or []
                if errors:
                    code = (errors[0].get("extensions") or {}).get("code") or "NO_CODE"
                else:
                    code = "OK"
            except ValueError:
                code = "NOT_JSON"
        self.outcomes[f"{kind}/{status}:{code}" if kind else f"{status}:{code}"] += 1


async def connect(args):
    return await asyncio.wait_for(
        asyncio.open_connection(args.host, args.port, local_addr=(args.source, 0)),
        CONNECT_TIMEOUT,
    )


def close(writer):
    try:
        writer.close()
    except Exception:
        pass


async def read_response(reader):
    """One HTTP/1.1 response: (status, headers, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    else:
        body = await reader.read()
    return status, headers, body


def request_head(args, method, path, headers, length=None):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {args.host}:{args.port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ---- bombs ---------------------------------------------------------------------


def bomb_documents():
    fragments = " ".join(
        f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(29)
    )
    fragment_bomb = f"query Bomb {{ ...F0 }} {fragments} fragment F29 on Query {{ __typename }}"
    aliases = "{ " + " ".join(f"a{i}: __typename" for i in range(10_000)) + " }"
    duplicates = "{ " + " ".join(["__typename"] * 20_000) + " }"
    with_arguments = "{ " + " ".join(['post(id: "p1") { id title }'] * 4_000) + " }"
    return {
        "fragments": fragment_bomb,
        "aliases": aliases,
        "duplicates": duplicates,
        "arguments": with_arguments,
    }


async def bombs(args, stats, ready):
    documents = bomb_documents()
    bodies = [
        (name, json.dumps({"query": query}).encode()) for name, query in documents.items()
    ]
    stats.counts["largest_bytes"] = max(len(body) for _, body in bodies)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}

    async def worker(n):
        turn = n
        reader = writer = None
        while True:
            try:
                if writer is None:
                    reader, writer = await connect(args)
                    stats.opened()
                name, body = bodies[turn % len(bodies)]
                turn += 1
                started = time.monotonic()
                writer.write(request_head(args, "POST", "/v1/graphql", headers, len(body)) + body)
                await writer.drain()
                status, response_headers, answer = await read_response(reader)
                stats.latencies.append(time.monotonic() - started)
                stats.kinds[name].append(time.monotonic() - started)
                stats.counts["requests"] += 1
                stats.outcome(status, answer, kind=name)
                if response_headers.get("connection", "").lower() == "close":
                    raise ConnectionResetError
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                stats.counts["connection_errors"] += 1
                if writer is not None:
                    close(writer)
                    stats.closed()
                reader = writer = None
                await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(worker(n)) for n in range(args.connections)]
    ready.set()
    return tasks


# ---- slowloris -----------------------------------------------------------------

SLOW_HEAD = b"POST /v1/graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Pad"


async def slowloris(args, stats, ready):
    first_round = [0]

    def attempted():
        first_round[0] += 1
        if first_round[0] == args.connections:
            ready.set()

    async def slot():
        first = True
        while True:
            try:
                reader, writer = await connect(args)
            except (OSError, asyncio.TimeoutError):
                stats.counts["connect_failed"] += 1
                if first:
                    first = False
                    attempted()
                await asyncio.sleep(RECONNECT_PAUSE)
                continue
            stats.counts["opened"] += 1
            stats.opened()
            started = time.monotonic()
            answer = b""
            try:
                writer.write(SLOW_HEAD)
                await writer.drain()
                if first:
                    first = False
                    attempted()
                answer = await reader.read(4096)
                while answer and len(answer) < 64 * 1024:
                    more = await reader.read(4096)
                    if not more:
                        break
                    answer += more
            except OSError:
                pass
            finally:
                stats.closed()
                close(writer)
            held = time.monotonic() - started
            if answer.startswith(b"HTTP/1.1 "):
                status = answer[9:12].decode("latin-1")
                body = answer.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in answer else b""
                stats.outcome(status, body)
            else:
                stats.outcome("closed")
            stats.latencies.append(held)
            if answer.startswith(b"HTTP/1.1 503"):
                await asyncio.sleep(RECONNECT_PAUSE)

    return [asyncio.create_task(slot()) for _ in range(args.connections)]


# ---- WebSockets ----------------------------------------------------------------


def ws_frame(payload, opcode=1):
    """A client frame: masked, as clients must, with a zero key (the cheapest)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def ws_message(message):
    return ws_frame(json.dumps(message, separators=(",", ":")).encode())


async def ws_read_frame(reader):
    """One server frame: (opcode, payload)."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return b0 & 0x0F, await reader.readexactly(n)


async def ws_open(args, stats):
    """A WebSocket past connection_ack, or None (the outcome is counted)."""
    try:
        reader, writer = await connect(args)
    except (OSError, asyncio.TimeoutError):
        stats.outcome("connect_failed")
        return None
    key = base64.b64encode(os.urandom(16)).decode()
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": "graphql-transport-ws",
    }
    try:
        writer.write(request_head(args, "GET", "/v1/graphql/ws", headers))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_TIMEOUT)
        status = head[9:12].decode("latin-1")
        if status != "101":
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            stats.outcome(status, body)
            close(writer)
            return None
        writer.write(ws_message({"type": "connection_init", "payload": {}}))
        await writer.drain()
        opcode, payload = await asyncio.wait_for(ws_read_frame(reader), CONNECT_TIMEOUT)
        if opcode != 1 or b"connection_ack" not in payload:
            stats.outcome("no_ack", payload[:200] if opcode == 1 else b"")
            close(writer)
            return None
    except (ConnectionError, asyncio.IncompleteReadError):
        # Closed (or reset) before any answer: how a server sheds a connection it
        # has no time to refuse politely.
        stats.outcome("dropped")
        close(writer)
        return None
    except asyncio.TimeoutError:
        stats.outcome("no_answer")
        close(writer)
        return None
    except (OSError, ValueError, IndexError):
        stats.outcome("handshake_failed")
        close(writer)
        return None
    stats.outcome("acked")
    return reader, writer


async def websockets(args, stats, ready):
    first_round = [0]

    def attempted():
        first_round[0] += 1
        if first_round[0] == args.connections:
            ready.set()

    async def slot():
        first = True
        while True:
            opened = await ws_open(args, stats)
            if first:
                first = False
                attempted()
            if opened is None:
                await asyncio.sleep(RECONNECT_PAUSE)
                continue
            reader, writer = opened
            stats.opened()
            try:
                while True:
                    opcode, payload = await ws_read_frame(reader)
                    if opcode == 9:
                        writer.write(ws_frame(payload, opcode=10))
                    elif opcode == 8:
                        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 0
                        stats.counts[f"closed_{code}"] += 1
                        break
                    else:
                        stats.counts["messages"] += 1
            except (OSError, asyncio.IncompleteReadError):
                stats.counts["closed_eof"] += 1
            finally:
                stats.closed()
                close(writer)
            await asyncio.sleep(RECONNECT_PAUSE)

    return [asyncio.create_task(slot()) for _ in range(args.connections)]


# ---- uploads -------------------------------------------------------------------


async def uploads(args, stats, ready):
    boundary = "nimbus-abuse-" + os.urandom(8).hex()
    operations = json.dumps(
        {
            "query": "mutation($i: CreateFileInput!) { createFile(input: $i) { id } }",
            "variables": {"i": {"bucketId": args.bucket, "fileId": "unique()", "file": None}},
        }
    )
    preamble = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{operations}\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n"
        '{"0": ["variables.i.file"]}\r\n'
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"big.bin\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    epilogue = f"\r\n--{boundary}--\r\n".encode()
    size = args.upload_mib * 1024 * 1024
    block = os.urandom(1024 * 1024)
    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Apollo-Require-Preflight": "true",
        "Accept": "application/json",
        "Connection": "close",
    }
    head = request_head(
        args, "POST", "/v1/graphql", headers, len(preamble) + size + len(epilogue)
    )

    async def worker():
        while True:
            try:
                reader, writer = await connect(args)
            except (OSError, asyncio.TimeoutError):
                stats.outcome("connect_failed")
                await asyncio.sleep(RECONNECT_PAUSE)
                continue
            stats.opened()
            started = time.monotonic()
            answer = asyncio.create_task(read_response(reader))
            sent = 0
            try:
                writer.write(head + preamble)
                while sent < size and not answer.done():
                    writer.write(block)
                    await writer.drain()
                    sent += len(block)
                if not answer.done():
                    writer.write(epilogue)
                    await writer.drain()
            except OSError:
                pass
            stats.counts["sent_mib"] += sent // (1024 * 1024)
            try:
                status, _, body = await asyncio.wait_for(answer, 30)
                stats.outcome(status, body)
                if sent < size:
                    stats.counts["answered_before_body_sent"] += 1
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                stats.outcome("no_answer")
            finally:
                answer.cancel()
                stats.closed()
                close(writer)
            stats.counts["requests"] += 1
            stats.latencies.append(time.monotonic() - started)

    tasks = [asyncio.create_task(worker()) for _ in range(args.connections)]
    ready.set()
    return tasks


# ---- previews ------------------------------------------------------------------


async def previews(args, stats, ready):
    widths = iter(range(args.first_width, 100_000))
    headers = {"Accept": "image/*"}

    async def worker():
        reader = writer = None
        while True:
            try:
                if writer is None:
                    reader, writer = await connect(args)
                    stats.opened()
                path = f"{args.file}?width={next(widths)}"
                started = time.monotonic()
                writer.write(request_head(args, "GET", path, headers))
                await writer.drain()
                status, response_headers, body = await read_response(reader)
                stats.latencies.append(time.monotonic() - started)
                stats.counts["requests"] += 1
                stats.outcome(status, body if status != 200 else b"")
                if response_headers.get("connection", "").lower() == "close":
                    raise ConnectionResetError
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                stats.counts["connection_errors"] += 1
                if writer is not None:
                    close(writer)
                    stats.closed()
                reader = writer = None
                await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(worker()) for _ in range(args.connections)]
    ready.set()
    return tasks


# ---- presence ------------------------------------------------------------------

PRESENCE_QUERY = (
    "subscription($c: String!, $s: JSON) { presence(channel: $c, state: $s) "
    "{ type presenceId state } }"
)


async def presence(args, stats, ready):
    first_round = [0]
    counter = iter(range(1, 1 << 62))

    def attempted():
        first_round[0] += 1
        if first_round[0] == args.connections:
            ready.set()

    def subscribe():
        n = next(counter)
        return n, ws_message(
            {
                "id": str(n),
                "type": "subscribe",
                "payload": {
                    "query": PRESENCE_QUERY,
                    "variables": {"c": args.channel, "s": PRESENCE_STATE},
                },
            }
        )

    async def drain_socket(reader):
        """Reads whatever arrives, counting messages by their type (on the raw
        stream: no frame is parsed, so the attacker spends little per message)."""
        tail = b""
        while True:
            chunk = await reader.read(256 * 1024)
            if not chunk:
                return "eof"
            data = tail + chunk
            stats.counts["next"] += data.count(b'"type":"next"')
            stats.counts["error"] += data.count(b'"type":"error"')
            stats.counts["received_bytes"] += len(chunk)
            # Shorter than either pattern: nothing is counted twice.
            tail = data[-12:]

    async def slot():
        first = True
        while True:
            opened = await ws_open(args, stats)
            if opened is None:
                if first:
                    first = False
                    attempted()
                await asyncio.sleep(RECONNECT_PAUSE)
                continue
            reader, writer = opened
            stats.opened()
            reading = asyncio.create_task(drain_socket(reader))
            held = collections.deque()
            try:
                for _ in range(args.presences):
                    n, message = subscribe()
                    held.append(n)
                    writer.write(message)
                    stats.counts["joins_sent"] += 1
                await writer.drain()
                if first:
                    first = False
                    attempted()
                while not reading.done():
                    await asyncio.sleep(args.churn_ms / 1000)
                    oldest = held.popleft()
                    writer.write(ws_message({"id": str(oldest), "type": "complete"}))
                    n, message = subscribe()
                    held.append(n)
                    writer.write(message)
                    stats.counts["joins_sent"] += 1
                    await writer.drain()
            except OSError:
                pass
            finally:
                reading.cancel()
                stats.closed()
                close(writer)
            # Reached only when the server ended the socket, not at the end of the attack.
            stats.counts["closed"] += 1
            await asyncio.sleep(RECONNECT_PAUSE)

    return [asyncio.create_task(slot()) for _ in range(args.connections)]


PHASES = {
    "bombs": bombs,
    "slowloris": slowloris,
    "websockets": websockets,
    "uploads": uploads,
    "previews": previews,
    "presence": presence,
}


def percentile(values, p):
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def run(args):
    stats = Stats()
    ready = asyncio.Event()
    started = time.monotonic()
    tasks = await PHASES[args.phase](args, stats, ready)
    try:
        await asyncio.wait_for(ready.wait(), args.ready_timeout)
    except asyncio.TimeoutError:
        pass
    ready_seconds = time.monotonic() - started
    print(
        f"READY phase={args.phase} after_s={ready_seconds:.2f} open={stats.open_now}",
        flush=True,
    )
    await asyncio.sleep(args.duration)
    open_at_end = stats.open_now
    # Cancel until every worker has stopped: on Python 3.11 `asyncio.wait_for` can
    # swallow a cancellation that arrives as its inner call completes (a connect or an
    # answer, many a second here), and the worker would go on looping.
    pending = set(tasks)
    deadline = time.monotonic() + 5
    while pending and time.monotonic() < deadline:
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=0.1)
        for task in done:
            outcome = None if task.cancelled() else task.exception()
            if outcome is not None:
                # A worker that died of something unforeseen: say so, count it.
                print(f"attack.py: a worker failed: {outcome!r}", file=sys.stderr)
                stats.counts["workers_failed"] += 1
    if pending:
        stats.counts["workers_stuck"] += len(pending)
    cpu = os.times()
    fields = {
        "phase": args.phase,
        "ready_s": f"{ready_seconds:.2f}",
        "open_peak": stats.open_peak,
        "open_at_end": open_at_end,
        "cpu_s": f"{cpu.user + cpu.system:.2f}",
    }
    fields.update(sorted(stats.counts.items()))
    if stats.latencies:
        fields["answer_p50_ms"] = f"{1000 * percentile(stats.latencies, 0.5):.1f}"
        fields["answer_max_ms"] = f"{1000 * max(stats.latencies):.1f}"
    for kind, latencies in sorted(stats.kinds.items()):
        fields[f"p50_ms_{kind}"] = f"{1000 * percentile(latencies, 0.5):.1f}"
    outcomes = ",".join(f"{key}*{n}" for key, n in stats.outcomes.most_common())
    fields["outcomes"] = outcomes.replace(" ", "_") or "-"
    print("RESULT " + " ".join(f"{key}={value}" for key, value in fields.items()), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=sorted(PHASES))
    parser.add_argument("--url", required=True, help="the server, http://127.0.0.1:PORT")
    parser.add_argument("--source", default="127.0.0.2", help="loopback address to send from")
    parser.add_argument("--duration", type=float, default=15, help="seconds, once ready")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--ready-timeout", type=float, default=15)
    parser.add_argument("--upload-mib", type=int, default=64)
    parser.add_argument("--bucket", default="public", help="uploads: the bucket")
    parser.add_argument("--file", default="", help="previews: the file's preview path")
    parser.add_argument("--first-width", type=int, default=64)
    parser.add_argument("--presences", type=int, default=20)
    parser.add_argument("--churn-ms", type=float, default=100)
    parser.add_argument("--channel", default="lobby")
    args = parser.parse_args()
    url = urllib.parse.urlsplit(args.url)
    args.host = loopback(url.hostname or "", "target")
    args.port = url.port or 80
    loopback(args.source, "source")
    if not 1 <= args.connections <= 2000:
        sys.exit("attack.py: --connections is 1 to 2000")
    if not 0 < args.duration <= 120:
        sys.exit("attack.py: --duration is at most 120 seconds")
    # Whatever happens, the attack stops by itself.
    signal.alarm(int(args.duration + args.ready_timeout) + 60)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
