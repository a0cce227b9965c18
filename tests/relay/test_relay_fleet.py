"""FleetWatch: the turns the relays on a store produce, read from the store and folded.

In one process over MemoryStore (the relay in front of the emulator, on loopback);
the same over a real redis-server and relay processes is in test_dashboard_fleet.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest

from handinger_stream import AsyncHandinger, IncompleteStreamError, WatchEvent
from handinger_stream.emulator import Emulator
from handinger_stream.relay import (
    FleetWatch,
    MemoryStore,
    NewEntry,
    RedisStore,
    Relay,
    StoreUnavailableError,
)
from tests.conftest import API_KEY
from tests.helpers.emulators import emulator_fixture
from tests.relay_helpers import free_port

# Workers that take a second or so: still running when the fleet is looked at.
paced = emulator_fixture(api_key=API_KEY, tokens_per_second=150)


@pytest.fixture
async def client(paced: Emulator) -> AsyncIterator[AsyncHandinger]:
    async with AsyncHandinger(api_key=API_KEY, base_url=paced.base_url) as client:
        yield client


async def stored_events(store: MemoryStore, chat_id: str, turn_start: int) -> int:
    entries = await store.read(chat_id, turn_start - 1, 100_000)
    return sum(not entry.end for entry in entries)


async def test_every_turn_running_is_seen_whole_and_folded_once(client: AsyncHandinger) -> None:
    store = MemoryStore()
    async with Relay(client, store) as relay:
        turns = [await relay.send(f"chat-{i}", f"Question {i}") for i in range(3)]
        counts: Counter[str] = Counter()
        ends: list[WatchEvent] = []
        async with FleetWatch(store, until_idle=True, interval=0.05) as fleet:
            async for item in fleet.events(ends=True):
                if item.event is None:
                    ends.append(item)
                else:
                    counts[item.worker_id] += 1
        assert sorted(e.worker_id for e in ends) == sorted(t.worker_id for t in turns)
        for turn in turns:
            final = await client.workers.retrieve(turn.worker_id)
            assert fleet.workers[turn.worker_id] == final and final.status == "completed"
            assert counts[turn.worker_id] == await stored_events(store, turn.chat_id, 1)
        assert all(end.error is None for end in ends)


async def test_a_later_turn_of_a_chat_is_followed_on_the_same_row(client: AsyncHandinger) -> None:
    store = MemoryStore()
    async with Relay(client, store) as relay:
        first = await relay.send("again", "Hello")
        ends = 0
        async with FleetWatch(store, interval=0.05) as fleet:
            async for item in fleet.events(ends=True):
                if item.event is not None:
                    continue
                ends += 1
                assert item.error is None
                final = await client.workers.retrieve(first.worker_id)
                assert item.snapshot.messages == final.messages
                if ends == 2:
                    break
                second = await relay.send("again", "And then?")
                assert second.worker_id == first.worker_id
        assert len(fleet.workers[first.worker_id].messages) == 4  # two questions, two answers


async def test_a_long_view_keeps_only_the_latest_ended_workers(client: AsyncHandinger) -> None:
    store = MemoryStore()
    async with Relay(client, store) as relay:
        turns = [await relay.send(f"keep-{i}", f"Question {i}") for i in range(6)]
        counts: Counter[str] = Counter()
        ended: list[str] = []
        async with FleetWatch(store, until_idle=True, interval=0.05, keep=2) as fleet:
            async for item in fleet.events(ends=True):
                if item.event is None:
                    ended.append(item.worker_id)
                else:
                    counts[item.worker_id] += 1
        assert sorted(ended) == sorted(t.worker_id for t in turns)
        assert set(fleet.workers) == set(ended[-2:])  # the two that ended last
        for turn in turns:  # forgetting one never read any turn twice
            assert counts[turn.worker_id] == await stored_events(store, turn.chat_id, 1)


@pytest.mark.parametrize("ends", [True, False])
async def test_a_turn_the_relay_could_not_finish_is_one_lost_item(ends: bool) -> None:
    store = MemoryStore()
    lease = await store.begin_turn("broken", holder="a relay", ttl=10)
    await store.set_worker(lease, "wrk_broken")
    await store.append(lease, [NewEntry(b'{"type":"start"}'), NewEntry(b'{"type":"start-step"}')])
    async with FleetWatch(store, until_idle=True, interval=0.05) as fleet:
        await store.finish(lease, "the worker's stream failed: connection reset")
        items = [item async for item in fleet.events(ends=ends)]
    # With ends or without, as a watch's lost stream: its events, then one error item.
    assert [type(i.event).__name__ for i in items] == ["StartEvent", "StartStepEvent", "NoneType"]
    lost = items[-1]
    assert lost.worker_id == "wrk_broken" and isinstance(lost.error, IncompleteStreamError)
    assert "connection reset" in str(lost.error)
    assert lost.error.worker == lost.snapshot == fleet.workers["wrk_broken"]


async def test_nothing_running_ends_at_once_when_asked_to() -> None:
    async with FleetWatch(MemoryStore(), until_idle=True) as fleet:
        assert [item async for item in fleet.events(ends=True)] == []
    assert dict(fleet.workers) == {} and fleet.waiting == []


async def test_an_unreachable_store_is_said_when_entering() -> None:
    async with RedisStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1) as store:
        with pytest.raises(StoreUnavailableError):
            async with FleetWatch(store):
                pass
    with pytest.raises(ValueError):
        FleetWatch(MemoryStore(), interval=0)
