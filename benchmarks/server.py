"""A replay server for the benchmarks: pre-encoded UI message streams, written fast.

A small HTTP/1.1 server on raw asyncio transports (no framework in the hot
path), so that the server costs as little as possible of the shared cores.
Every request (``POST /api/workers`` with ``{"input": SPEC}``, or ``GET``
with ``?spec=SPEC``) streams the scenario named by SPEC, a query string:

- ``n=100000`` replay n text deltas (sources and metadata mixed in) at full speed;
- ``n=2000&pace_ms=1&stamp=1`` one event per ``pace_ms``, each stamped with
  ``time.monotonic_ns()`` at sending, in the delta's ``providerMetadata``;
- ``ids=1`` the emulator's own shape: an ``id:`` line on every event and a
  transient ``data-worker`` snapshot every ``snapshots`` events (default
  1,000; the emulator sends one at each turn's start and end). Without it:
  the AI SDK's own shape, bare ``data:`` lines.

Run it as ``python -m benchmarks.server``: it prints ``{"port": N}``, then
serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from functools import lru_cache
from urllib.parse import parse_qs, urlsplit

CHUNK = 64 * 1024
WORKER_ID = "wrk_bench"


class Shape:
    """How events are framed: bare ``data:`` lines, or the emulator's (ids, snapshots)."""

    def __init__(self, ids: bool, snapshots: int = 1000) -> None:
        self.ids = ids
        self.snapshots = snapshots
        self.next_id = 0

    def frame(self, payload: bytes) -> bytes:
        if not self.ids:
            return b"data: " + payload + b"\n\n"
        self.next_id += 1
        return b"id: %d\ndata: %s\n\n" % (self.next_id - 1, payload)

    def line(self, obj: dict[str, object]) -> bytes:
        return self.frame(json.dumps(obj, separators=(",", ":")).encode())

    def snapshot(self, status: str, chars: int) -> bytes:
        worker = {
            "id": WORKER_ID,
            "object": "worker",
            "status": status,
            "running": status == "running",
            "output_text": "w" * min(chars, 200),
            "usage": {"inputTokens": 12, "outputTokens": chars // 4},
        }
        return self.line({"type": "data-worker", "data": worker, "transient": True})

    def head(self) -> bytes:
        first = self.snapshot("running", 0) if self.ids else b""
        return (
            first
            + self.line({"type": "start", "messageId": "msg_bench"})
            + self.line({"type": "text-start", "id": "t0"})
        )

    def tail(self, n: int) -> bytes:
        usage = {"inputTokens": 12, "outputTokens": n, "totalTokens": n + 12}
        finish = {"usage": usage, "costs": {"modelCostUsd": 0.01}}
        return (
            self.line({"type": "text-end", "id": "t0"})
            + self.line({"type": "finish", "messageMetadata": finish})
            + (self.snapshot("completed", n * 4) if self.ids else b"")
            + b"data: [DONE]\n\n"
        )

    def event(self, i: int) -> bytes:
        """Event i of a replay: mostly deltas, a source every 1,000, metadata every 10,000."""
        if i % 10_000 == 9_999:
            return self.line({"type": "message-metadata", "messageMetadata": {"progress": i}})
        if i % 1_000 == 999:
            return self.line(
                {
                    "type": "source-url",
                    "sourceId": f"s{i}",
                    "url": f"https://example.com/{i}",
                    "title": f"Source {i}",
                }
            )
        if self.ids and i % self.snapshots == self.snapshots // 2:
            return self.snapshot("running", i * 4)
        return self.frame(b'{"type":"text-delta","id":"t0","delta":"w%d "}' % (i % 1000))

    def stamped(self, i: int, now_ns: int) -> bytes:
        meta = b'"providerMetadata":{"b":{"t":%d}}' % now_ns
        return self.frame(b'{"type":"text-delta","id":"t0","delta":"w%d ",%s}' % (i % 1000, meta))


@lru_cache(maxsize=4)
def replay_body(n: int, ids: bool, snapshots: int) -> bytes:
    shape = Shape(ids, snapshots)
    head = shape.head()
    return head + b"".join(shape.event(i) for i in range(n)) + shape.tail(n)


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=1 << 20)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.can_write.set()
        if self.task is not None:
            self.task.cancel()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.task is not None:
            return
        head_text = self.buffer[:end].decode("latin-1")
        lines = head_text.split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        body = self.buffer[end + 4 :]
        if len(body) < length:
            return
        spec = parse_qs(urlsplit(target).query).get("spec", [""])[0]
        if method == "POST":
            spec = json.loads(body[:length] or b"{}").get("input", spec)
        self.task = asyncio.get_running_loop().create_task(self.respond(spec))

    async def write(self, data: bytes) -> None:
        # One HTTP chunk per call; wait while the client is behind.
        if self.closed or self.transport is None:
            raise ConnectionResetError
        self.transport.write(b"%x\r\n%s\r\n" % (len(data), data))
        if not self.can_write.is_set():
            await self.can_write.wait()

    async def respond(self, spec: str) -> None:
        assert self.transport is not None
        params = {k: v[0] for k, v in parse_qs(spec).items()}
        n = int(params.get("n", "1000"))
        pace = float(params.get("pace_ms", "0")) / 1000
        ids = params.get("ids") == "1"
        snapshots = int(params.get("snapshots", "1000"))
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"x-handinger-worker-id: " + WORKER_ID.encode() + b"\r\n"
            b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        )
        try:
            if pace:
                await self.paced(n, pace, Shape(ids, snapshots))
            else:
                body = replay_body(n, ids, snapshots)
                for start in range(0, len(body), CHUNK):
                    await self.write(body[start : start + CHUNK])
            self.transport.write(b"0\r\n\r\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.transport.close()

    async def paced(self, n: int, pace: float, shape: Shape) -> None:
        loop = asyncio.get_running_loop()
        await self.write(shape.head())
        start = loop.time()
        for i in range(n):
            # Sleep to the schedule, not by the interval, so delays do not add up.
            delay = start + i * pace - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.write(shape.stamped(i, time.monotonic_ns()))
        await self.write(shape.tail(n))


async def serve(port: int = 0) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Conn, "127.0.0.1", port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": bound}), flush=True)
    # Serve until the parent closes our stdin.
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


if __name__ == "__main__":
    asyncio.run(serve())
