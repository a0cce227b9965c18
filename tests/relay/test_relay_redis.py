"""Relays in processes of their own over a real redis-server: late joiners, resumes on
another relay, a producer killed mid-stream, relays racing, Redis restarted.

Each relay is ``python -m handinger_stream relay --redis URL --base-url EMULATOR`` with
a one-second lease; the emulator (in this process, in a thread) writes at a pace a
turn takes a few seconds at. What every reader got is checked against the emulator's
own replay of the worker, event for event.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
import redis.asyncio as aioredis

from handinger_stream.emulator import Emulator
from handinger_stream.relay import RedisStore
from tests.relay_helpers import (
    RedisServer,
    RelayProcess,
    chat_body,
    emulator_replay,
    http,
    paced,
    read_sse,
    redis,
    relays,
)

__all__ = ["http", "paced", "redis", "relays"]  # fixtures of tests/relay_helpers.py, used here

PROMPT = "What's the weather in Barcelona?"
LONG = "Write a report on SSE history"  # a longer answer
ALL = (
    "?snapshots=1&compact=0"  # every event the worker sent, as sent, its Worker snapshots included
)


def stream_url(relay: RelayProcess, chat_id: str) -> str:
    return f"{relay.url}api/chat/{chat_id}/stream{ALL}"


async def test_a_late_joiner_gets_the_whole_turn_and_a_resume_gets_exactly_the_rest(
    relays: Callable[[], RelayProcess], paced: Emulator, http: aiohttp.ClientSession
) -> None:
    a, b = relays(), relays()
    chat = "late-joiner"
    first = await read_sse(
        http, "POST", f"{a.url}api/chat{ALL}", json=chat_body(chat, PROMPT), stop_after=12
    )
    assert first.status == 200 and first.headers["x-vercel-ai-ui-message-stream"] == "v1"
    worker_id = first.headers["x-handinger-worker-id"]
    # Joining late, at the other relay: the turn from its first event.
    late = await read_sse(http, "GET", stream_url(b, chat))
    assert late.status == 200 and late.complete
    assert late.data[:12] == first.data
    assert late.chunks == await emulator_replay(paced.base_url, worker_id)
    ids = [int(i) for i, _ in late.events if i is not None]
    assert len(ids) == len(late.events) and ids == sorted(set(ids))
    # Resuming after an id gets exactly what follows it, at either relay.
    after = first.events[7][0]
    assert after is not None
    for relay in (a, b):
        rest = await read_sse(
            http, "GET", stream_url(relay, chat), headers={"last-event-id": after}
        )
        assert rest.status == 200 and rest.complete
        assert rest.data == late.data[8:]
    # The turn is over: a resume without an id has nothing to give.
    async with http.get(stream_url(b, chat)) as response:
        assert response.status == 204


async def test_the_producer_killed_mid_stream_is_replaced_and_nothing_is_lost_or_doubled(
    relays: Callable[[], RelayProcess],
    paced: Emulator,
    http: aiohttp.ClientSession,
    redis: RedisServer,
) -> None:
    a, b = relays(), relays()
    chat = "killed"
    first = await read_sse(
        http, "POST", f"{a.url}api/chat{ALL}", json=chat_body(chat, PROMPT), stop_after=20
    )
    worker_id = first.headers["x-handinger-worker-id"]
    async with RedisStore(redis.url) as store:
        before = await store.chat(chat)
        a.kill()
        assert before is not None and before.active and before.producer is not None
        rest = await read_sse(
            http, "GET", stream_url(b, chat), headers={"last-event-id": first.last_id or "0"}
        )
        after = await store.chat(chat)
    assert rest.status == 200 and rest.complete
    replay = await emulator_replay(paced.base_url, worker_id)
    assert first.chunks + rest.chunks == replay
    assert after is not None and not after.active and after.status == "completed"
    assert after.producer != before.producer  # the relay that took over


async def test_two_relays_racing_for_an_orphaned_turn_make_one_producer(
    relays: Callable[[], RelayProcess],
    paced: Emulator,
    http: aiohttp.ClientSession,
    redis: RedisServer,
) -> None:
    a, b, c = relays(), relays(), relays()
    chat = "race"
    first = await read_sse(
        http, "POST", f"{a.url}api/chat{ALL}", json=chat_body(chat, PROMPT), stop_after=10
    )
    worker_id = first.headers["x-handinger-worker-id"]
    a.kill()
    # Readers arrive at both other relays at once, several at each: all find the lease
    # expired, and all try to take it.
    replies = await asyncio.gather(
        *(read_sse(http, "GET", stream_url(relay, chat)) for relay in (b, c, b, c, b, c))
    )
    replay = await emulator_replay(paced.base_url, worker_id)
    for reply in replies:
        assert reply.status == 200 and reply.complete
        assert reply.chunks == replay
    async with aioredis.Redis.from_url(redis.url) as r:
        meta = await r.hgetall(f"handinger:relay:{chat}:m")
        entries: list[Any] = await r.xrange(f"handinger:relay:{chat}:s") or []
    # One lease for the relay that began the turn, and exactly one more: one producer.
    assert meta[b"fence"] == b"2"
    # The log: dense seqs, each upstream event once, then the end marker.
    assert [int(i.split(b"-")[1]) for i, _ in entries] == list(range(1, len(entries) + 1))
    assert [msgspec.json.decode(f[b"d"]) for _, f in entries[:-1]] == replay
    assert b"e" in entries[-1][1] and b"x" not in entries[-1][1]


async def test_redis_restarted_mid_stream_gives_a_clear_error_then_a_clean_resume(
    relays: Callable[[], RelayProcess],
    paced: Emulator,
    http: aiohttp.ClientSession,
    redis: RedisServer,
) -> None:
    a, b = relays(), relays()
    chat = "redis-restart"
    reading = asyncio.ensure_future(
        read_sse(http, "POST", f"{a.url}api/chat{ALL}", json=chat_body(chat, PROMPT))
    )
    await asyncio.sleep(0.8)  # some way into the turn
    redis.stop()
    first = await reading
    # The reader is told, in a chunk the AI SDK shows, and the stream ends unfinished.
    assert first.status == 200 and not first.complete
    last_id, error = first.events[-1]
    assert last_id is None and b'"type":"error"' in error and b"store is unavailable" in error
    got = first.chunks[:-1]
    assert len(got) > 3
    # While Redis is down a resume is refused, clearly.
    async with http.get(
        stream_url(b, chat), headers={"last-event-id": first.last_id or "0"}
    ) as response:
        assert response.status == 503
        assert (await response.json())["error"]["type"] == "unavailable"
    redis.start()
    rest = await read_sse(
        http, "GET", stream_url(b, chat), headers={"last-event-id": first.last_id or "0"}
    )
    assert rest.status == 200 and rest.complete
    worker_id = first.headers["x-handinger-worker-id"]
    assert got + rest.chunks == await emulator_replay(paced.base_url, worker_id)


async def test_the_fleet_lists_what_every_relay_process_is_producing(
    relays: Callable[[], RelayProcess], redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    a, b = relays(), relays()
    one = await read_sse(
        http, "POST", f"{a.url}api/chat", json=chat_body("fleet-1", PROMPT), stop_after=3
    )
    two = await read_sse(
        http, "POST", f"{b.url}api/chat", json=chat_body("fleet-2", "Hi"), stop_after=3
    )
    async with RedisStore(redis.url) as store:
        fleet = {info.chat_id: info for info in await store.fleet()}
        assert {"fleet-1", "fleet-2"} <= fleet.keys()
        assert fleet["fleet-1"].worker_id == one.headers["x-handinger-worker-id"]
        assert fleet["fleet-2"].worker_id == two.headers["x-handinger-worker-id"]
        assert fleet["fleet-1"].producer != fleet["fleet-2"].producer
        for chat_id in ("fleet-1", "fleet-2"):
            info = fleet[chat_id]
            assert info.leased and info.status in ("pending", "running")
            assert info.updated_at is not None and info.last_seq >= 3
        # Once the turns end, they leave the fleet.
        for _ in range(200):
            if not {"fleet-1", "fleet-2"} & {i.chat_id for i in await store.fleet()}:
                break
            await asyncio.sleep(0.1)
        assert not {"fleet-1", "fleet-2"} & {i.chat_id for i in await store.fleet()}


async def test_many_readers_catching_up_wait_their_turn_and_never_starve_the_producer(
    redis: RedisServer,
) -> None:
    # One pooled connection and a short timeout: 200 readers reading history at once
    # queue for it. A wait for a free connection is load, not Redis being down, and
    # the producer's renewals and appends go on connections of their own.
    from handinger_stream.relay import NewEntry

    store = RedisStore(redis.url, prefix="crowd:", max_connections=1, socket_timeout=0.3)
    try:
        lease = await store.begin_turn("crowd", holder="me", ttl=5)
        body = b'{"type":"text-delta","id":"t","delta":"%s"}' % (b"x" * 200)
        for _ in range(4):
            await store.append(lease, [NewEntry(body) for _ in range(500)])

        async def reader(after: int) -> int:
            # Each from a place of its own: identical reads would share one round trip.
            return after + len(await store.read("crowd", after, 2000))

        async def producer() -> None:
            for _ in range(20):
                await store.renew(lease)
                await store.append(lease, [NewEntry(body)])

        readers = asyncio.gather(*(reader(after) for after in range(200)))
        results, _ = await asyncio.gather(readers, producer())
        assert all(n >= 2000 for n in results)
        assert lease.last_seq == 2020
    finally:
        await store.aclose()


async def test_a_producer_killed_under_a_thousand_readers_leaves_every_reader_complete(
    relays: Callable[[], RelayProcess], paced: Emulator, redis: RedisServer
) -> None:
    # The failover under load: a thousand readers at relay b, the producer a SIGKILLed
    # mid-turn; b takes the turn over once a's lease lapses and every reader ends whole.
    # Half read every event as stored (each exactly once, in order); half compacted (the
    # burst after the takeover arrives merged), folding the same.
    a, b = relays(), relays()
    chat = "killed-under-load"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        first = await read_sse(
            http, "POST", f"{a.url}api/chat{ALL}", json=chat_body(chat, LONG), stop_after=5
        )
        worker_id = first.headers["x-handinger-worker-id"]
        url = f"{b.url}api/chat/{chat}/stream"
        # From the first event on: a reader connecting late on a loaded machine still
        # gets its answer whole (without an id, one after the end would get a 204).
        since = {"last-event-id": first.events[0][0] or ""}
        readers = [
            asyncio.ensure_future(
                read_sse(http, "GET", url + (ALL if i % 2 else ""), headers=since, within=120)
            )
            for i in range(1000)
        ]
        async with RedisStore(redis.url) as store:
            before = await store.chat(chat)
            assert before is not None and before.active
            a.kill()
            replies = await asyncio.gather(*readers)
            after = await store.chat(chat)
    assert after is not None and not after.active and after.status == "completed"
    assert after.producer != before.producer
    replay = (await emulator_replay(paced.base_url, worker_id))[1:]
    whole = [r for i, r in enumerate(replies) if i % 2]
    merged = [r for i, r in enumerate(replies) if not i % 2]
    statuses = collections.Counter((r.status, r.complete) for r in replies)
    assert statuses == {(200, True): 1000}, (statuses, b.log()[-3000:])
    for reply in whole:
        assert reply.chunks == replay
    text = "".join(c.get("delta", "") for c in replay if c.get("type") == "text-delta")
    for reply in merged:
        assert len(reply.events) <= len(replay)
        assert (
            "".join(c.get("delta", "") for c in reply.chunks if c.get("type") == "text-delta")
            == text
        )
