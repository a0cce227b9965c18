"""The relay's fan-out over WebSockets beside SSE: one turn, readers of both transports.

``python -m benchmarks relay-ws [--readers 1000] [--events 2000] [--stores memory]``

As ``relay.py`` (whose pieces it uses): the benchmark server upstream, one relay
process (``handinger-stream relay``), and this process, which starts the turn
with ``POST /api/chat`` and opens the readers on raw asyncio sockets. A
WebSocket reader sends one ``resume`` frame of ai 7's ``WebSocketChatTransport``
protocol on ``GET /api/chat/ws`` and reads the ``chunk`` frames; an SSE reader
is ``GET /api/chat/{id}/stream``.

Three runs per store, each a turn of its own on the same relay process:
``sse`` (``readers`` SSE readers), ``ws`` (``readers`` WebSocket readers) and
``both`` (``readers`` of each, opened alternately). Reported per run and
transport: whether every reader got every event, the fan-out lag p50/p99 (over
the events sent once every reader was connected); per run, the relay's CPU
time per delivered event (one event to one reader: the alone runs give each
transport's cost).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import struct
import sys
import threading
import time
from typing import Any

from .relay import _STAMP, _drain, _given, _percentile, _Reader, _redis, _rss_bytes, _start_relay
from .suite import replay_server, server_cpu

RUNS = {"sse": ("sse",), "ws": ("ws",), "both": ("sse", "ws")}


def _masked(payload: bytes, opcode: int = 0x1) -> bytes:
    """One client frame (clients must mask theirs, RFC 6455 5.3)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


class _WSReader(asyncio.Protocol):
    """One WebSocket reader: upgrade, one ``resume`` frame, then count the chunk frames."""

    def __init__(self, chat: str, done: asyncio.Future[None], host: bytes) -> None:
        self.chat = chat
        self.done = done
        self.host = host
        self.events = 0
        self.stamps: list[tuple[int, int]] = []  # (sent, received), in ns
        self.complete = False
        self.buffer = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16))
        transport.write(
            b"GET /api/chat/ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (self.host, key)
        )

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        buffer = self.buffer + data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self._finish()
                return
            self.upgraded = True
            buffer = buffer[end + 4 :]
            request = {"type": "resume", "requestId": "r", "id": self.chat}
            assert self.transport is not None
            self.transport.write(
                _masked(json.dumps({**request, "headers": {}, "body": {}}).encode())
            )
        at = 0
        while True:  # whole frames only (the server's are unmasked, unfragmented)
            if len(buffer) - at < 2:
                break
            opcode, size = buffer[at] & 0x0F, buffer[at + 1] & 0x7F
            start = at + 2
            if size == 126:
                if len(buffer) - at < 4:
                    break
                (size,) = struct.unpack_from("!H", buffer, start)
                start += 2
            elif size == 127:
                if len(buffer) - at < 10:
                    break
                (size,) = struct.unpack_from("!Q", buffer, start)
                start += 8
            if len(buffer) < start + size:
                break
            payload = buffer[start : start + size]
            at = start + size
            if opcode == 0x9 and self.transport is not None:  # a ping: pong it
                self.transport.write(_masked(payload, 0xA))
            elif opcode == 0x1:
                self._frame(payload, now)
        self.buffer = buffer[at:]

    def _frame(self, payload: bytes, now: int) -> None:
        if payload.startswith(b'{"type":"chunk"'):
            self.events += 1
            found = _STAMP.search(payload)
            if found:
                self.stamps.append((int(found.group(1)), now))
        elif payload.startswith(b'{"type":"end"'):
            self.events += 1  # the turn's end, as SSE's last id
            self.complete = True
            self._finish()
        elif not payload.startswith(b'{"type":"start"'):
            self._finish()  # an error, or no-active: incomplete

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()


async def _fan_out(
    port: int, readers: int, events: int, pace_ms: float, transports: tuple[str, ...]
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    chat = f"bench-ws-{time.monotonic_ns()}"
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
    first_done: asyncio.Future[None] = loop.create_future()
    first = _Reader(post, first_done)
    await loop.create_connection(lambda: first, "127.0.0.1", port)
    # The turn has begun: now the readers join it. (A refusal never starts it: say so.)
    await asyncio.wait_for(first.started, 60)
    get = b"GET /api/chat/%s/stream HTTP/1.1\r\nHost: %s\r\n\r\n" % (chat.encode(), host)
    opened: dict[str, list[Any]] = {t: [] for t in transports}
    transports_open: list[asyncio.Transport] = []
    waits: list[asyncio.Future[None]] = [first_done]
    for _ in range(readers):
        for kind in transports:  # alternately: neither transport gets a head start
            done: asyncio.Future[None] = loop.create_future()
            reader: Any = _Reader(get, done) if kind == "sse" else _WSReader(chat, done, host)
            connection, _ = await loop.create_connection(_given(reader), "127.0.0.1", port)
            opened[kind].append(reader)
            transports_open.append(connection)
            waits.append(done)
    connected_ns = time.monotonic_ns()
    # A reader that never finishes is reported (incomplete), not waited for past this.
    _, pending = await asyncio.wait(waits, timeout=float(os.environ.get("RELAY_WS_WAIT", 600)))
    if pending:
        print(f"relay-ws: {len(pending)} readers unfinished", file=sys.stderr)
    for connection in transports_open:
        connection.close()
    result: dict[str, Any] = {"expected_events": first.events, "transports": {}}
    for kind, group in opened.items():
        # The lag counts the events sent once every reader was connected (the rest was history).
        lags = [r - s for reader in group for s, r in reader.stamps if s >= connected_ns]
        result["transports"][kind] = {
            "readers": len(group),
            "every_reader_got_every_event": all(
                r.complete and r.events == first.events for r in group
            ),
            "readers_complete": sum(r.complete for r in group),
            "min_events": min((r.events for r in group), default=0),
            "lag_ms_p50": _percentile(lags, 50),
            "lag_ms_p99": _percentile(lags, 99),
        }
    return result


def _measure(
    store: str, upstream: str, readers: int, events: int, pace_ms: float
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(_redis()) if store == "redis" else None
        relay, port = _start_relay(upstream, redis_url)
        said: list[str] = []
        threading.Thread(target=_drain, args=(relay.stderr, said), daemon=True).start()
        try:
            time.sleep(0.5)
            for run, transports in RUNS.items():
                rss_before = _rss_bytes(relay.pid)
                cpu_before = server_cpu(relay)
                result = asyncio.run(_fan_out(port, readers, events, pace_ms, transports))
                cpu = server_cpu(relay) - cpu_before
                delivered = result["expected_events"] * readers * len(transports)
                result.update(
                    store=store,
                    run=run,
                    relay_cpu_s=round(cpu, 3),
                    cpu_us_per_delivered_event=round(cpu / delivered * 1e6, 3)
                    if delivered
                    else None,
                    rss_growth_kib=round((_rss_bytes(relay.pid) - rss_before) / 1024),
                )
                out.append(result)
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait(30)
        result["relay_said"] = said[:5]  # warnings, if any (a reader cut)
    return out


def run(
    readers: int = 1000,
    events: int = 2000,
    pace_ms: float = 5.0,
    stores: tuple[str, ...] = ("memory",),
) -> dict[str, Any]:
    """Measure each store's three runs; the results as a dict (printed as JSON)."""
    with replay_server() as (upstream, _):
        results = [
            r for store in stores for r in _measure(store, upstream, readers, events, pace_ms)
        ]
    return {"events": events, "pace_ms": pace_ms, "readers": readers, "results": results}


def section(figures: dict[str, Any]) -> list[str]:
    """The Markdown section of ``docs/benchmarks.md`` for these figures."""
    out = [
        "",
        "## Relay fan-out over WebSockets beside SSE (`python -m benchmarks relay-ws`)",
        "",
        f"One upstream worker ({figures['events']:,} events, one per {figures['pace_ms']:g} ms) "
        "relayed by one relay process to readers of ai 7's `WebSocketChatTransport` protocol "
        "(`GET /api/chat/ws`, a `resume` frame) and SSE readers (`GET /api/chat/{id}/stream`) "
        "on loopback: each transport alone, then both at once on one turn. Lag: upstream "
        "sending to reader receiving, for the events sent once every reader was connected. "
        "CPU: the relay process's, per event delivered to one reader.",
        "",
        "| store | run | transport | readers | every reader got every event | lag p50 ms "
        "| lag p99 ms | relay CPU µs per delivered event (run) |",
        "| --- | --- | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in figures["results"]:
        for kind, t in r["transports"].items():
            yes = "yes" if t["every_reader_got_every_event"] else "**no**"
            p50 = "-" if t["lag_ms_p50"] is None else f"{t['lag_ms_p50']:.1f}"
            p99 = "-" if t["lag_ms_p99"] is None else f"{t['lag_ms_p99']:.1f}"
            out.append(
                f"| {r['store']} | {r['run']} | {kind} | {t['readers']:,} | {yes} | {p50} | "
                f"{p99} | {r['cpu_us_per_delivered_event']} |"
            )
    return out
