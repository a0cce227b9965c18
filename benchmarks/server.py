"""A replay server for the benchmarks: pre-encoded UI message streams, written fast.

A small HTTP/1.1 server on raw asyncio transports (no framework in the hot
path), so that the server costs as little as possible of the shared cores.
Every request (``POST /api/workers`` with ``{"input": SPEC}``, or ``GET``
with ``?spec=SPEC``) streams the scenario named by SPEC, a query string:

- ``n=100000`` replay n text deltas (sources and metadata mixed in) at full speed;
- ``n=2000&pace_ms=1&stamp=1`` one event per ``pace_ms``, each stamped with
  ``time.monotonic_ns()`` at sending, in the delta's ``providerMetadata``.

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


def _line(obj: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def head() -> bytes:
    return _line({"type": "start", "messageId": "msg_bench"}) + _line(
        {"type": "text-start", "id": "t0"}
    )


def tail(n: int) -> bytes:
    usage = {"inputTokens": 12, "outputTokens": n, "totalTokens": n + 12}
    return (
        _line({"type": "text-end", "id": "t0"})
        + _line(
            {"type": "finish", "messageMetadata": {"usage": usage, "costs": {"modelCostUsd": 0.01}}}
        )
        + b"data: [DONE]\n\n"
    )


def delta(i: int) -> bytes:
    return b'data: {"type":"text-delta","id":"t0","delta":"w%d "}\n\n' % (i % 1000)


def mixed(i: int) -> bytes:
    """Event i of a replay: mostly deltas, a source every 1,000, metadata every 10,000."""
    if i % 10_000 == 9_999:
        return _line({"type": "message-metadata", "messageMetadata": {"progress": i}})
    if i % 1_000 == 999:
        return _line(
            {
                "type": "source-url",
                "sourceId": f"s{i}",
                "url": f"https://example.com/{i}",
                "title": f"Source {i}",
            }
        )
    return delta(i)


@lru_cache(maxsize=4)
def replay_body(n: int) -> bytes:
    return head() + b"".join(mixed(i) for i in range(n)) + tail(n)


def stamped(i: int, now_ns: int) -> bytes:
    meta = b'"providerMetadata":{"b":{"t":%d}}' % now_ns
    return b'data: {"type":"text-delta","id":"t0","delta":"w%d ",%s}\n\n' % (i % 1000, meta)


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
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"x-handinger-worker-id: " + WORKER_ID.encode() + b"\r\n"
            b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        )
        try:
            if pace:
                await self.paced(n, pace)
            else:
                body = replay_body(n)
                for start in range(0, len(body), CHUNK):
                    await self.write(body[start : start + CHUNK])
            self.transport.write(b"0\r\n\r\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.transport.close()

    async def paced(self, n: int, pace: float) -> None:
        loop = asyncio.get_running_loop()
        await self.write(head())
        start = loop.time()
        for i in range(n):
            # Sleep to the schedule, not by the interval, so delays do not add up.
            delay = start + i * pace - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.write(stamped(i, time.monotonic_ns()))
        await self.write(tail(n))


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
