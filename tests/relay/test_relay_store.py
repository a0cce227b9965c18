"""The store contract, over MemoryStore and over RedisStore (a real redis-server):
fenced appends, idempotent retries, takeover, trimming, expiry, waiting, the fleet."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handinger_stream import InvalidRequestError
from handinger_stream.relay import (
    ChatBusyError,
    EntriesGoneError,
    Lease,
    LeaseLostError,
    MemoryStore,
    NewEntry,
    RedisStore,
    Store,
    StoreUnavailableError,
)
from handinger_stream.relay.store import Quota
from tests.relay_helpers import RedisServer, free_port, redis_server

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore(max_events=50)
        return
    server: RedisServer = request.getfixturevalue("redis")
    # A prefix per test: tests do not see each other's chats.
    async with RedisStore(server.url, prefix=f"t{next(_prefixes)}:", max_events=50) as redis_store:
        yield redis_store


def new_entries(*texts: str, first_id: int = 0) -> list[NewEntry]:
    return [
        NewEntry(b'{"type":"text-delta","id":"t","delta":"%s"}' % t.encode(), str(first_id + i))
        for i, t in enumerate(texts)
    ]


async def test_a_turn_is_appended_read_and_ended(store: Store) -> None:
    assert await store.chat("c") is None
    assert await store.read("c", 0, 10) == []
    lease = await store.begin_turn("c", holder="p1", ttl=5)
    assert (lease.turn_start, lease.last_seq, lease.worker_id) == (1, 0, None)
    await store.set_worker(lease, "wrk_1")
    await store.append(lease, new_entries("a", "b"))
    await store.append(lease, [NewEntry(b'{"type":"data-worker","data":{}}', "2", snapshot=True)])
    info = await store.chat("c")
    assert info is not None
    assert (info.worker_id, info.active, info.last_seq, info.last_upstream_id) == (
        "wrk_1",
        True,
        3,
        "2",
    )
    assert info.status == "running" and info.leased and info.producer == "p1"
    await store.finish(lease)
    entries = await store.read("c", 0, 10)
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    assert [e.upstream_id for e in entries[:3]] == ["0", "1", "2"]
    assert [e.snapshot for e in entries] == [False, False, True, False]
    assert entries[-1].end and entries[-1].error is None and entries[-1].data == b""
    assert entries[0].event().delta == "a"  # type: ignore[union-attr]
    assert await store.read("c", 2, 1) == entries[2:3]
    info = await store.chat("c")
    assert info is not None and not info.active and info.status == "completed" and not info.leased

    # The next turn starts after the last one's end marker; the worker stays the chat's.
    second = await store.begin_turn("c", holder="p2", ttl=5)
    assert (second.turn_start, second.worker_id, second.last_upstream_id) == (5, "wrk_1", "2")
    await store.finish(second, "the worker sent nothing for this turn")
    end = (await store.read("c", 4, 10))[0]
    assert end.end and end.error == "the worker sent nothing for this turn"
    info = await store.chat("c")
    assert info is not None and info.status == "failed" and info.error == end.error


async def test_one_turn_at_a_time(store: Store) -> None:
    lease = await store.begin_turn("busy", holder="p1", ttl=5)
    with pytest.raises(ChatBusyError):
        await store.begin_turn("busy", holder="p2", ttl=5)
    # Not even once the producer is gone: the running turn is resumed, not replaced.
    await store.release(lease)
    with pytest.raises(ChatBusyError):
        await store.begin_turn("busy", holder="p2", ttl=5)


async def test_an_append_retried_after_a_lost_reply_is_not_applied_twice(store: Store) -> None:
    lease = await store.begin_turn("retry", holder="p", ttl=5)
    batch = new_entries("a", "b")
    await store.append(lease, batch)
    # The reply was lost: the producer does not know it went through, and sends it again.
    lease.last_seq = 0
    await store.append(lease, batch)
    await store.finish(lease)
    await store.finish(lease)  # a retried finish, too
    assert [e.seq for e in await store.read("retry", 0, 10)] == [1, 2, 3]


async def test_a_stale_producer_is_fenced_out_after_a_takeover(store: Store) -> None:
    old = await store.begin_turn("fenced", holder="old", ttl=0.2)
    await store.set_worker(old, "wrk_f")
    await store.append(old, new_entries("a"))
    # While the lease holds, nobody takes over.
    assert await store.take_over("fenced", holder="new", ttl=5) is None
    await asyncio.sleep(0.35)  # the old producer stalls past its lease
    new = await store.take_over("fenced", holder="new", ttl=5)
    assert new is not None and new.fence == old.fence + 1
    assert (new.last_seq, new.last_upstream_id, new.worker_id) == (1, "0", "wrk_f")
    assert await store.take_over("fenced", holder="third", ttl=5) is None
    with pytest.raises(LeaseLostError):
        await store.append(old, new_entries("stale"))
    with pytest.raises(LeaseLostError):
        await store.renew(old)
    with pytest.raises(LeaseLostError):
        await store.finish(old)
    await store.append(new, new_entries("b", first_id=1))
    await store.finish(new)
    entries = await store.read("fenced", 0, 10)
    assert [e.data for e in entries[:-1]] == [c.data for c in new_entries("a", "b")]
    info = await store.chat("fenced")
    assert info is not None and info.producer == "new" and info.status == "completed"


async def test_a_lapsed_lease_nobody_took_is_taken_back(store: Store) -> None:
    lease = await store.begin_turn("lapsed", holder="p", ttl=0.2)
    await asyncio.sleep(0.35)  # e.g. the store was unreachable for longer than the lease
    info = await store.chat("lapsed")
    assert info is not None and info.active and not info.leased
    await store.append(lease, new_entries("a"))
    info = await store.chat("lapsed")
    assert info is not None and info.leased


async def test_trimmed_entries_are_gone_not_skipped(store: Store) -> None:
    lease = await store.begin_turn("long", holder="p", ttl=5)
    for i in range(0, 200, 10):
        await store.append(lease, new_entries(*(str(n) for n in range(i, i + 10)), first_id=i))
    with pytest.raises(EntriesGoneError):
        await store.read("long", 0, 10)
    recent = await store.read("long", 190, 10)
    assert [e.seq for e in recent] == list(range(191, 201))


async def test_waiting_readers_wake_on_an_append(store: Store) -> None:
    lease = await store.begin_turn("wake", holder="p", ttl=5)
    assert not await store.wait("wake", 0, 0.05)
    waiters = [asyncio.ensure_future(store.wait("wake", 0, 10)) for _ in range(20)]
    await asyncio.sleep(0.05)
    await store.append(lease, new_entries("a"))
    assert await asyncio.gather(*waiters) == [True] * 20
    assert await store.wait("wake", 0, 0.01)  # already there: no wait


async def test_the_fleet_lists_running_turns_only(store: Store) -> None:
    one = await store.begin_turn("f1", holder="p1", ttl=5)
    two = await store.begin_turn("f2", holder="p2", ttl=5)
    await store.set_worker(two, "wrk_2")
    await store.append(two, new_entries("x"))
    fleet = await store.fleet()
    assert [i.chat_id for i in fleet][:2] == ["f2", "f1"]  # the latest activity first
    assert fleet[0].worker_id == "wrk_2" and fleet[0].status == "running" and fleet[0].leased
    await store.finish(one)
    assert [i.chat_id for i in await store.fleet()] == ["f2"]


async def test_a_chat_s_owner_is_kept_with_its_record_through_its_turns(store: Store) -> None:
    assert await store.owner("o") is None
    assert (await store.admit_turn("o", "alice", Quota())).new_chat
    lease = await store.begin_turn("o", holder="p", ttl=5)
    await store.append(lease, new_entries("a"))
    running = await store.chat("o")
    assert running is not None and running.owner == "alice" and running.active
    assert [i.owner for i in await store.fleet()] == ["alice"]
    await store.finish(lease)
    second = await store.begin_turn("o", holder="p", ttl=5)  # Relay.send, as ever
    await store.finish(second)
    info = await store.chat("o")
    assert info is not None and info.owner == "alice" and info.last_seq == 3
    assert (await store.admit_turn("o", "bob", Quota())).refused == "owner"
    assert not (await store.admit_turn("o", "alice", Quota())).new_chat
    with pytest.raises(ValueError):
        await store.admit_turn("p", "bad\nprincipal", Quota())


async def test_redis_a_claimed_chat_expires_unless_a_turn_runs(redis: RedisServer) -> None:
    store = RedisStore(redis.url, prefix="claim:", keep_seconds=50, chat_seconds=100)
    async with store:
        await store.admit_turn("c", "alice", Quota())
        ttl = store._redis.pttl

        assert 0 < await ttl("claim:c:m") <= 100_000  # claimed, never begun: it goes
        lease = await store.begin_turn("c", holder="p", ttl=5)
        assert await ttl("claim:c:m") == -1  # a turn runs: it stays
        await store.finish(lease)
        assert 0 < await ttl("claim:c:m") <= 100_000
        assert await store.owner("c") == "alice"


async def test_entries_expire_after_the_turn_and_the_chat_later() -> None:
    store = MemoryStore(keep_seconds=0.05, chat_seconds=0.2)
    lease = await store.begin_turn("gone", holder="p", ttl=5)
    await store.set_worker(lease, "wrk_g")
    await store.append(lease, new_entries("a"))
    await store.finish(lease)
    await asyncio.sleep(0.1)
    with pytest.raises(EntriesGoneError):
        await store.read("gone", 0, 10)
    info = await store.chat("gone")
    assert info is not None and info.worker_id == "wrk_g"  # the chat goes on with its worker
    await asyncio.sleep(0.2)
    assert await store.chat("gone") is None


async def test_redis_keys_expire_after_the_turn(redis: RedisServer) -> None:
    async with RedisStore(redis.url, prefix="exp:", keep_seconds=0.2, chat_seconds=0.6) as store:
        lease = await store.begin_turn("e", holder="p", ttl=5)
        await store.append(lease, new_entries("a"))
        await store.finish(lease)
        await asyncio.sleep(0.4)
        with pytest.raises(EntriesGoneError):
            await store.read("e", 0, 10)
        assert await store.chat("e") is not None
        await asyncio.sleep(0.4)
        assert await store.chat("e") is None


async def test_an_unreachable_redis_is_a_clear_error_without_the_password() -> None:
    url = f"redis://:s3cret-pass@127.0.0.1:{free_port()}/0"
    store = RedisStore(url, socket_timeout=1)
    async with store:
        assert "s3cret" not in repr(store)
        for call in (store.ping(), store.chat("x"), store.read("x", 0, 1), store.wait("x", 0, 1)):
            with pytest.raises(StoreUnavailableError) as caught:
                await call
            assert "unavailable" in str(caught.value) and "s3cret" not in str(caught.value)


def test_a_url_that_is_not_redis_s_is_refused_clearly_without_the_password() -> None:
    for url in ("notaurl", "http://:s3cret-pass@127.0.0.1:6379/0"):
        with pytest.raises(InvalidRequestError, match="redis://") as caught:
            RedisStore(url)
        assert "s3cret" not in str(caught.value)


def test_new_entry_is_still_importable_by_its_previous_name() -> None:
    from handinger_stream.relay import Chunk

    assert Chunk is NewEntry


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["append", "expire", "takeover", "stale"]), st.integers(1, 3)),
        max_size=25,
    )
)
async def test_whatever_the_interleaving_the_log_is_dense_and_only_holders_append(
    steps: list[tuple[str, int]],
) -> None:
    # Producers come and go (leases expire, others take over, stale ones keep trying):
    # the log is 1, 2, 3, ... and every entry was appended by the lease holder of its time.
    store = MemoryStore()
    holder = await store.begin_turn("h", holder="p0", ttl=60)
    stale: list[Lease] = []
    expected: list[bytes] = []
    for n, (action, count) in enumerate(steps):
        batch = [NewEntry(b"%d.%d" % (n, i)) for i in range(count)]
        if action == "append":
            await store.append(holder, batch)
            expected += [c.data for c in batch]
        elif action == "expire":
            store._chats["h"].lease_expires = 0.0  # time passes, in effect
        elif action == "takeover":
            store._chats["h"].lease_expires = 0.0
            new = await store.take_over("h", holder=f"p{n}", ttl=60)
            assert new is not None and new.fence == holder.fence + 1
            stale.append(holder)
            holder = new
        elif stale:
            with pytest.raises(LeaseLostError):
                await store.append(stale[n % len(stale)], batch)
    entries = await store.read("h", 0, 1000)
    assert [e.seq for e in entries] == list(range(1, len(expected) + 1))
    assert [e.data for e in entries] == expected


async def test_read_ready_answers_as_read_does_or_not_at_all(store: Store) -> None:
    lease = await store.begin_turn("ready", holder="p", ttl=5)
    await store.append(lease, new_entries("a", "b", "c"))
    await store.wait("ready", 3, 0.01)  # a live reader's wait (RedisStore: its follower)
    await store.append(lease, new_entries("d", first_id=3))
    assert await store.wait("ready", 3, 2.0)
    for after, limit in ((0, 10), (1, 2), (3, 5), (4, 1)):
        ready = store.read_ready("ready", after, limit)
        if isinstance(store, MemoryStore):
            assert ready is not None  # a MemoryStore always has its entries at hand
        assert ready is None or ready == await store.read("ready", after, limit)
    assert [e.seq for e in store.read_ready("ready", 3, 5) or []] == [4]  # both have it
