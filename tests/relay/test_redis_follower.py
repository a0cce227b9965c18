"""RedisStore's follower: one XREAD loop per chat and process, and the window of entries its
readers share; checked against a real redis-server by counting the commands it ran."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from handinger_stream.relay import NewEntry, RedisStore
from handinger_stream.relay import redis_store as redis_store_module
from tests.relay_helpers import RedisServer, redis_server

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
async def stores(redis: RedisServer) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two stores on one prefix: the one under test, and one whose reads go to Redis."""
    prefix = f"f{next(_prefixes)}:"
    store, plain = RedisStore(redis.url, prefix=prefix), RedisStore(redis.url, prefix=prefix)
    try:
        yield store, plain
    finally:
        await store.aclose()
        await plain.aclose()


async def xranges(url: str) -> int:
    """How many XRANGE commands the Redis server has run so far."""
    client = aioredis.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return int(stats.get("cmdstat_xrange", {}).get("calls", 0))


def entries(first: int, n: int) -> list[NewEntry]:
    return [
        NewEntry(b'{"type":"text-delta","id":"t","delta":"%d"}' % i, str(i))
        for i in range(first, first + n)
    ]


async def test_a_long_turn_is_read_from_the_window_wherever_a_reader_stands(
    stores: tuple[RedisStore, RedisStore], redis: RedisServer
) -> None:
    store, plain = stores
    lease = await store.begin_turn("long", holder="p", ttl=30)
    assert await store.wait("long", 0, 0.01) is False  # the follower starts at the turn's start
    total = 5 * redis_store_module._WINDOW
    for first in range(0, total, 256):
        await store.append(lease, entries(first, min(256, total - first)))
        await asyncio.sleep(0)
    while store._followers["long"].last < total:
        assert await store.wait("long", store._followers["long"].last, 2.0)
    follower = store._followers["long"]
    # Trimmed as it grew, never past twice the window, and what it keeps is the log's end.
    assert redis_store_module._WINDOW <= len(follower.entries) <= 2 * redis_store_module._WINDOW
    assert follower.entries[-1].seq == total
    before = await xranges(redis.url)
    for after in (follower.first - 1, total - 1000, total - 257, total - 1, total):
        assert await store.read("long", after, 256) == await plain.read("long", after, 256)
    # The plain store's five reads went to Redis; the follower's none.
    assert await xranges(redis.url) == before + 5
    # Before the window, a read goes to Redis and is still right.
    assert await store.read("long", 10, 3) == await plain.read("long", 10, 3)
    assert [e.seq for e in await store.read("long", 10, 3)] == [11, 12, 13]


async def test_readers_joining_at_once_share_one_history_read_and_then_the_window(
    stores: tuple[RedisStore, RedisStore], redis: RedisServer
) -> None:
    store, plain = stores
    lease = await store.begin_turn("join", holder="p", ttl=30)
    await store.append(lease, entries(0, 100))
    await store.wait("join", 100, 0.01)  # a reader at the live end starts the follower
    await store.append(lease, entries(100, 5))
    assert await store.wait("join", 100, 2.0)
    assert store._followers["join"].first == 101
    before = await xranges(redis.url)
    read = await asyncio.gather(*(store.read("join", 0, 256) for _ in range(50)))
    assert await xranges(redis.url) == before + 1
    expected = await plain.read("join", 0, 256)
    assert [e.seq for e in expected] == list(range(1, 106))
    assert all(got == expected for got in read)
    # Each reader its own list: one cutting its batch cuts nobody else's.
    assert len({id(got) for got in read}) == 50
    del read[0][3:]
    assert len(read[1]) == 105
    # The history is in front of the window now: the next joiners never go to Redis.
    assert store._followers["join"].first == 1
    before = await xranges(redis.url)
    assert await store.read("join", 40, 10) == expected[40:50]
    assert await xranges(redis.url) == before


async def test_readers_busy_writing_keep_the_follower_alive(
    stores: tuple[RedisStore, RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A follower quits when unwanted for the linger. Readers that always find entries
    # never wait on it, yet want it: losing it sent them all to Redis, far behind.
    monkeypatch.setattr(redis_store_module, "_LINGER", 0.1)
    store, _ = stores
    lease = await store.begin_turn("busy", holder="p", ttl=30)
    await store.wait("busy", 0, 0.01)
    follower = store._followers["busy"]
    position = 0
    for i in range(30):
        await store.append(lease, entries(i, 1))
        for _ in range(400):
            if follower.last > position:
                break
            await asyncio.sleep(0.005)
        assert follower.last > position, "the follower stopped following"
        got = await store.read("busy", position, 256)
        position = got[-1].seq
        await asyncio.sleep(0.02)
    assert position == 30
    assert store._followers.get("busy") is follower and not follower.task.done()


async def test_more_chats_than_redis_py_pools_by_default_are_followed_and_produced_at_once(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    # redis-py's own connection pool refuses its 101st connection: one process following
    # 150 chats (a blocked XREAD each) and producing them (an append each) must not fail.
    store, _ = stores
    chats = [f"many-{i}" for i in range(150)]
    leases = await asyncio.gather(*(store.begin_turn(c, holder="p", ttl=30) for c in chats))
    waits = [asyncio.ensure_future(store.wait(c, 0, 10.0)) for c in chats]
    await asyncio.sleep(0.2)  # every follower blocked in its XREAD
    await asyncio.gather(*(store.append(lease, entries(0, 1)) for lease in leases))
    assert await asyncio.gather(*waits) == [True] * 150


async def test_the_producing_process_s_readers_get_its_appends_without_the_round_trip(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    store, plain = stores
    # The follower's XREADs held back until the gate opens: what its readers see meanwhile
    # can only come from this process's own appends.
    gate = asyncio.Event()
    xread = store._blocking.xread

    async def held(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await xread(*args, **kwargs)

    store._blocking.xread = held  # type: ignore[method-assign]
    lease = await store.begin_turn("own", holder="p", ttl=30)
    await store.wait("own", 0, 0.01)  # a reader here: the follower, waiting to XREAD
    await store.append(lease, entries(0, 3))
    ready = store.read_ready("own", 0, 10)
    assert ready is not None and [e.seq for e in ready] == [1, 2, 3]
    await store.finish(lease, "stopped")
    gate.set()
    await asyncio.sleep(0.1)  # the XREAD has returned the same entries meanwhile
    ready = store.read_ready("own", 0, 10)
    assert ready == await plain.read("own", 0, 10)
    assert [e.seq for e in store._followers["own"].entries] == [1, 2, 3, 4]
    assert ready[-1].end and ready[-1].error == "stopped"
