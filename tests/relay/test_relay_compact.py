"""A late joiner, a resumer and a reader that fell behind get the turn compacted: the deltas
of a part merged, over real loopback HTTP on both stores, folding exactly as the whole turn,
and ``Last-Event-ID`` from any event of it resumes exactly where the whole log would."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import socket
from collections.abc import AsyncIterator, Iterator

import aiohttp
import anyio
import msgspec
import pytest

from handinger_stream import AsyncHandinger
from handinger_stream.protocol.reducer import fold
from handinger_stream.protocol.sse import ServerSentEvent
from handinger_stream.protocol.wire import decode_event
from handinger_stream.relay import MemoryStore, RedisStore, Relay, Store
from tests.conftest import Canned, RawServer
from tests.relay.test_relay import serve_aiohttp
from tests.relay_helpers import RedisServer, SSEReply, http, read_sse, redis_server

__all__ = ["http"]  # a fixture of tests/relay_helpers.py, used here

DELTAS = 400
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    server: RedisServer = request.getfixturevalue("redis")
    async with RedisStore(server.url, prefix=f"c{next(_prefixes)}:") as redis_store:
        yield redis_store


def long_turn() -> tuple[list[bytes], list[bytes]]:
    """A turn's SSE as the worker sends it: 400 deltas of a text and a reasoning part
    (ids on every event), then, after a pause, its end."""
    events = [b'{"type":"start","messageId":"m1"}', b'{"type":"start-step"}']
    events.append(b'{"type":"reasoning-start","id":"r"}')
    events += [b'{"type":"reasoning-delta","id":"r","delta":"think %d "}' % i for i in range(50)]
    events.append(b'{"type":"reasoning-end","id":"r"}')
    events.append(b'{"type":"text-start","id":"t"}')
    for i in range(DELTAS - 50):
        events.append(b'{"type":"text-delta","id":"t","delta":"w\\u00e9rd %d "}' % i)
        if i % 100 == 99:  # a progress part updated twice in a row: its last value stands
            events.append(b'{"type":"data-progress","id":"p","data":{"done":%d}}' % i)
            events.append(b'{"type":"data-progress","id":"p","data":{"done":%d}}' % (i + 1))
    head = [b"id: %d\ndata: %s\n\n" % (i, data) for i, data in enumerate(events)]
    n = len(events)
    tail = [
        b'{"type":"text-end","id":"t"}',
        b'{"type":"finish-step"}',
        b'{"type":"finish","finishReason":"stop"}',
    ]
    end = [b"id: %d\ndata: %s\n\n" % (n + i, data) for i, data in enumerate(tail)]
    return [b"".join(head)], [b"".join(end) + b"data: [DONE]\n\n"]


def folded(reply: SSEReply, ai_sdk: int) -> object:
    events = [
        decode_event(ServerSentEvent(data, id=event_id), n)
        for n, (event_id, data) in enumerate(reply.events)
    ]
    worker = fold(events, "wrk_long", ai_sdk=ai_sdk)  # type: ignore[arg-type]
    return msgspec.to_builtins(worker.messages)


@contextlib.asynccontextmanager
async def late_joiners(
    store: Store, raw_server: RawServer, http: aiohttp.ClientSession
) -> AsyncIterator[tuple[str, SSEReply, SSEReply]]:
    """A relay serving the long turn, and what two readers that joined it once its history
    was logged got: compacted (the default), and every event as stored (``?compact=0``)."""
    head, end = long_turn()
    raw_server.serve(
        Canned(
            head + end,
            headers={"content-type": "text/event-stream", "x-handinger-worker-id": "wrk_long"},
            pauses={0: 1.5},  # the whole history sent, the turn still running
        )
    )
    async with (
        AsyncHandinger(api_key="k", base_url=raw_server.base_url) as client,
        Relay(client, store) as relay,
    ):
        runner, base = await serve_aiohttp(relay, keepalive=0.05)
        try:
            await relay.attach(await client.workers.retrieve("wrk_long", stream=True))
            with anyio.fail_after(10):  # until the history is logged
                while not await store.wait("wrk_long", DELTAS, 1.0):
                    pass
            url = base + "api/chat/wrk_long/stream"
            merged, whole = await asyncio.gather(
                read_sse(http, "GET", url), read_sse(http, "GET", url + "?compact=0")
            )
            assert merged.complete and whole.complete and len(whole.events) > DELTAS
            yield url, merged, whole
        finally:
            await runner.cleanup()


async def test_a_late_joiner_gets_the_history_compacted_folding_the_same(
    store: Store, raw_server: RawServer, http: aiohttp.ClientSession
) -> None:
    async with late_joiners(store, raw_server, http) as (_, merged, whole):
        pass
    # At least 10x fewer events and 3x fewer bytes, folding into the same message.
    assert len(merged.events) * 10 <= len(whole.events)
    assert sum(map(len, merged.data)) * 3 <= sum(map(len, whole.data))
    for ai_sdk in (6, 7):
        assert folded(merged, ai_sdk) == folded(whole, ai_sdk)
    # Every id of the compacted stream is one of the whole log's, in order, ending at its end.
    ids = [event_id for event_id, _ in merged.events]
    whole_ids = [event_id for event_id, _ in whole.events]
    assert set(ids) <= set(whole_ids) and ids[-1] == whole_ids[-1]
    assert [whole_ids.index(i) for i in ids] == sorted(whole_ids.index(i) for i in ids)
    # Of each run of one data part, only its last value was sent.
    assert sum(b'"data-progress"' in data for data in merged.data) < sum(
        b'"data-progress"' in data for data in whole.data
    )


async def test_last_event_id_from_any_compacted_event_resumes_exactly(
    store: Store, raw_server: RawServer, http: aiohttp.ClientSession
) -> None:
    async with late_joiners(store, raw_server, http) as (url, merged, whole):
        # Cut the compacted stream after each of its events: the resume from that
        # event's id is exactly the whole log's rest, and the two fold as the whole.
        whole_ids = [event_id for event_id, _ in whole.events]
        for k, (event_id, _) in enumerate(merged.events[:-1]):
            assert event_id is not None
            rest = await read_sse(
                http, "GET", url + "?compact=0", headers={"last-event-id": event_id}
            )
            assert rest.events == whole.events[whole_ids.index(event_id) + 1 :]
            if k % 5 == 0:
                joined = SSEReply(200, {}, merged.events[: k + 1] + rest.events)
                assert folded(joined, 7) == folded(whole, 7)


async def test_a_reader_that_falls_behind_catches_up_merged_and_is_not_cut(
    raw_server: RawServer, http: aiohttp.ClientSession
) -> None:
    # More than the kernel's buffers take for a reader with a tiny window: the relay's
    # writes to it block while it pauses, and its backlog grows meanwhile.
    n, padding = 2000, b"x" * 4000
    events = [
        b'id: %d\ndata: {"type":"text-delta","id":"t","delta":"w%d %s "}\n\n' % (i, i, padding)
        for i in range(n)
    ]
    head = b'id: s\ndata: {"type":"text-start","id":"t"}\n\n'
    raw_server.serve(
        Canned(
            [head, *events, b"data: [DONE]\n\n"],  # one event at a time: live batches are small
            headers={"content-type": "text/event-stream", "x-handinger-worker-id": "wrk_slow"},
            delay=0.001,
        )
    )
    async with (
        AsyncHandinger(api_key="k", base_url=raw_server.base_url) as client,
        Relay(client) as relay,
    ):
        runner, base = await serve_aiohttp(relay, write_timeout=5.0)
        try:
            stream = await client.workers.retrieve("wrk_slow", stream=True)
            await relay.attach(stream)
            port = int(base.split(":")[2].split("/")[0])
            slow = socket.socket()
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(slow, ("127.0.0.1", port))
            slow.sendall(
                b"GET /relay/api/chat/wrk_slow/stream HTTP/1.1\r\n"
                b"Host: x\r\nConnection: close\r\n\r\n"
            )
            url = base + "api/chat/wrk_slow/stream"
            whole, live = await asyncio.gather(
                read_sse(http, "GET", url + "?compact=0"), read_sse(http, "GET", url)
            )
            await asyncio.sleep(1.0)  # the slow reader takes nothing for a while (< the timeout)
            got = b""
            with slow:
                while chunk := await asyncio.wait_for(loop.sock_recv(slow, 1 << 16), 30):
                    got += chunk
        finally:
            await runner.cleanup()
    assert whole.complete and len(whole.events) == n + 1
    body = got.split(b"\r\n\r\n", 1)[1]
    assert b"data: [DONE]" in body  # not cut: it took something within the timeout
    datas = re.findall(rb"\ndata: (\{.*\})\n", body)
    # Merged while it was behind; a reader keeping up got its events (nearly) one by one.
    assert len(datas) < n / 2 < len(live.events)
    text = "".join(msgspec.json.decode(d).get("delta", "") for d in datas)
    assert text == "".join(c.get("delta", "") for c in whole.chunks)
