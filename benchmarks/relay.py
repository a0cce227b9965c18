"""The relay's fan-out: one upstream worker relayed to many concurrent SSE readers.

``python -m benchmarks relay [--readers 1000] [--events 2000] [--stores memory redis]``

For each store, in processes of their own: the benchmark server (``server.py``,
its events stamped with ``time.monotonic_ns()`` at sending), one relay
(``handinger-stream relay``, with ``--redis`` for RedisStore, on a redis-server
started here), and this process, which starts the turn with ``POST /api/chat``
and opens the readers (``GET /api/chat/{id}/stream``) on raw asyncio sockets.

Reported per store: whether every reader got every event; fan-out lag (the
time from the upstream sending an event to a reader receiving it) p50/p99,
over the events sent once every reader was connected; the relay process's
CPU time per delivered event (one event to one reader); and its memory per reader
(resident set with the readers connected, less before them, divided by
their number).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .suite import replay_server, server_cpu

ROOT = Path(__file__).resolve().parent.parent
_STAMP = re.compile(rb'"b":\{"t":(\d+)\}')
# A text delta's text and stamp, if it has one (a merged delta has its newest one's).
_DELTA = re.compile(
    rb'"type":"text-delta","id":"[^"]*","delta":"([^"]*)"(?:,"providerMetadata":\{"b":\{"t":(\d+)\}\})?'
)


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class _Reader(asyncio.Protocol):
    """One SSE reader: counts events, keeps (receive time, send stamp) pairs.

    ``marker``: how a line that counts an event begins (the relay's events each
    have an ``id:``; a server passing the upstream's id-less events through has
    only their ``data:`` lines to count). ``deltas``: keep each text delta's text,
    stamp (``b""`` if none) and receive time too, to check a reader by content
    (the relay may merge a backlog's deltas into fewer events).
    """

    def __init__(
        self,
        request: bytes,
        done: asyncio.Future[None],
        marker: bytes = b"id: ",
        deltas: bool = False,
    ) -> None:
        self.request = request
        self.done = done
        self.marker = marker
        self.events = 0
        self.stamps: list[tuple[int, int]] = []  # (sent, received), in ns
        self.tail = b""
        self.complete = False
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.opened_ns = time.monotonic_ns()  # made just before its connection is opened
        self.first_byte_ns: int | None = None  # when the response began (the join time)
        self.deltas: list[tuple[bytes, bytes, int]] | None = [] if deltas else None
        self.last = b""  # the end of what arrived: how an incomplete reader's answer stopped

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if self.first_byte_ns is None:
            self.first_byte_ns = now
        # Only whole events: a stamp or an id split between two reads counts once.
        self.last = (self.last + data)[-256:]
        data = self.tail + data
        cut = data.rfind(b"\n\n") + 2
        whole, self.tail = data[:cut], data[cut:]
        self.events += whole.count(b"\n" + self.marker) + whole.startswith(self.marker)
        if self.events and not self.started.done():
            self.started.set_result(None)
        self.stamps.extend((int(stamp), now) for stamp in _STAMP.findall(whole))
        if self.deltas is not None:
            self.deltas.extend((text, stamp, now) for text, stamp in _DELTA.findall(whole))
        if b"data: [DONE]" in whole:
            self.complete = True
            if not self.done.done():
                self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _chat_requests(
    port: int, events: int, pace_ms: float, query: bytes = b""
) -> tuple[bytes, bytes]:
    """A new chat's ``POST /api/chat`` (its turn: the paced, stamped scenario) and the
    ``GET /api/chat/{id}/stream`` that joins it (``query``: its query string)."""
    chat = f"bench-{time.monotonic_ns()}"
    spec = f"n={events}&pace_ms={pace_ms}&stamp=1"
    body = json.dumps(
        {"id": chat, "messages": [{"role": "user", "parts": [{"type": "text", "text": spec}]}]}
    ).encode()
    # The relay answers only Hosts of its own (DNS rebinding): the loopback address it is on.
    host = b"127.0.0.1:%d" % port
    post = (
        b"POST /api/chat HTTP/1.1\r\nHost: %s\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (host, len(body), body)
    )
    get = b"GET /api/chat/%s/stream%s HTTP/1.1\r\nHost: %s\r\n\r\n" % (
        chat.encode(),
        query,
        host,
    )
    return post, get


async def _fan_out(port: int, readers: int, events: int, pace_ms: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    # Every event as stored: this scenario counts and times each one (a reader that
    # fell behind would otherwise get its backlog merged; benchmarks/fanout.py has that).
    post, get = _chat_requests(port, events, pace_ms, b"?compact=0")
    first_done: asyncio.Future[None] = loop.create_future()
    first = _Reader(post, first_done)
    await loop.create_connection(lambda: first, "127.0.0.1", port)
    # The turn has begun: now the readers join it. (A refusal never starts it: say so.)
    await asyncio.wait_for(first.started, 60)
    opened: list[tuple[_Reader, asyncio.Future[None], asyncio.Transport]] = []
    for _ in range(readers):
        done: asyncio.Future[None] = loop.create_future()
        reader = _Reader(get, done)
        transport, _ = await loop.create_connection(_given(reader), "127.0.0.1", port)
        opened.append((reader, done, transport))
    connected_ns = time.monotonic_ns()
    await asyncio.wait_for(asyncio.gather(first_done, *(d for _, d, _ in opened)), 600)
    for _, _, transport in opened:
        transport.close()
    # The lag counts the events sent once every reader was connected (the rest was history).
    lags = [
        received - sent
        for reader, _, _ in opened
        for sent, received in reader.stamps
        if sent >= connected_ns
    ]
    counts = [reader.events for reader, _, _ in opened]
    return {
        "expected_events": first.events,
        "every_reader_got_every_event": all(
            r.complete and r.events == first.events for r, _, _ in opened
        ),
        "readers_complete": sum(r.complete for r, _, _ in opened),
        "min_events": min(counts) if counts else 0,
        "lag_ms_p50": _percentile(lags, 50),
        "lag_ms_p99": _percentile(lags, 99),
    }


def _given(reader: _Reader) -> Callable[[], _Reader]:
    return lambda: reader


def _percentile(values: list[int], q: int) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, len(values) * q // 100)] / 1e6, 3)


def _drain(stream: Any, into: list[str]) -> None:
    """Keep reading the relay's stderr: a full pipe would block the relay mid-run."""
    for line in stream:
        into.append(line.rstrip())


def _start_relay(
    upstream: str, redis_url: str | None, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[str], int]:
    """``handinger-stream relay`` in a process of its own (``extra``: more of its flags)."""
    args = [sys.executable, "-m", "handinger_stream", "relay", "--port", "0"]
    args += ["--base-url", upstream, *extra]
    if redis_url:
        args += ["--redis", redis_url]
    env = {**os.environ, "HANDINGER_API_KEY": "bench"}
    process = subprocess.Popen(
        args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT
    )
    assert process.stderr is not None
    for _ in range(10):
        line = process.stderr.readline()
        found = re.search(r"relay on http://[^:]+:(\d+)/", line)
        if found:
            return process, int(found.group(1))
    process.kill()
    raise RuntimeError("the relay did not start")


@contextlib.contextmanager
def _redis() -> Iterator[str]:
    """A fresh redis-server for one run: its URL."""
    with _redis_server() as (url, _):
        yield url


@contextlib.contextmanager
def _redis_server() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A fresh redis-server for one run: its URL and its process (whose CPU a run reads)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is needed for the RedisStore run")
    directory = tempfile.mkdtemp(prefix="bench-redis-")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", directory],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def _measure(
    store: str, upstream: str, readers: int, events: int, pace_ms: float
) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(_redis()) if store == "redis" else None
        relay, port = _start_relay(upstream, redis_url)
        said: list[str] = []
        threading.Thread(target=_drain, args=(relay.stderr, said), daemon=True).start()
        try:
            time.sleep(0.5)
            rss_before = _rss_bytes(relay.pid)
            cpu_before = server_cpu(relay)
            peak: list[int] = [rss_before]

            async def run() -> dict[str, Any]:
                async def sample() -> None:
                    while True:
                        peak.append(_rss_bytes(relay.pid))
                        await asyncio.sleep(0.2)

                sampler = asyncio.ensure_future(sample())
                try:
                    return await _fan_out(port, readers, events, pace_ms)
                finally:
                    sampler.cancel()

            result = asyncio.run(run())
            cpu = server_cpu(relay) - cpu_before
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait(30)
    delivered = result["expected_events"] * readers
    result.update(
        store=store,
        readers=readers,
        relay_cpu_s=round(cpu, 3),
        cpu_us_per_delivered_event=round(cpu / delivered * 1e6, 3) if delivered else None,
        memory_kib_per_reader=round((max(peak) - rss_before) / readers / 1024, 1),
        relay_said=said[:5],  # warnings, if any (a reader cut, Redis unavailable)
    )
    return result


def run(
    readers: int = 1000,
    events: int = 2000,
    pace_ms: float = 5.0,
    stores: tuple[str, ...] = ("memory", "redis"),
) -> dict[str, Any]:
    """Measure each store; the results as a dict (printed as JSON by ``python -m benchmarks``)."""
    with replay_server() as (upstream, _):
        results = [_measure(store, upstream, readers, events, pace_ms) for store in stores]
    return {"events": events, "pace_ms": pace_ms, "results": results}
