"""client.workers.watch: the hand-back between a worker's reader and the one consumer.

The consumer takes a reader's events from the stream's core by index. While
it takes one read's events, the reader reads the next (appended after them)
and then parks (on a bare future under asyncio, an anyio Event elsewhere)
until the first read's were all taken. These tests hold the watch to that:
at most two reads of a worker are held while the consumer does not take (the
memory bound), each worker's events come in its stream's order, and a worker
removed while its reader is parked goes without another item.
Over loopback against the emulator, under asyncio and trio.
"""

from __future__ import annotations

from collections import defaultdict

import anyio
import pytest

from handinger_stream import AsyncHandinger, WorkerStream
from handinger_stream.client.stream import _Connection
from handinger_stream.emulator import Emulator
from handinger_stream.protocol.handover import Handover
from tests.conftest import API_KEY
from tests.helpers.emulators import emulator_fixture

BACKENDS = ["asyncio", "trio"]

# Workers that take a while (0.4 to 2 s each), so that readers are parked mid-stream.
paced = emulator_fixture(api_key=API_KEY, tokens_per_second=100, keepalive_interval=0.2)


def client_for(emu: Emulator) -> AsyncHandinger:
    return AsyncHandinger(api_key=API_KEY, base_url=emu.base_url)


async def open_streams(client: AsyncHandinger, n: int, prompt: str) -> list[WorkerStream]:
    return [
        await client.workers.create(input=f"{prompt} {i}", budget="low", stream=True)
        for i in range(n)
    ]


def decoded(stream: WorkerStream) -> int:
    """Events (and bad events) its stream has decoded so far, handed over or not."""
    handover = stream._handover
    return handover.base + len(handover.queue)


async def replay_ids(client: AsyncHandinger, worker_id: str) -> list[str | None]:
    stream = await client.workers.retrieve(worker_id, stream=True)
    return [event.event_id async for event in stream]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_reader_holds_at_most_two_reads_while_the_consumer_does_not_take(
    paced: Emulator, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each read that brought events, by stream: where its events end (an index in the
    # stream), checked against what the consumer took before every read.
    ends: dict[Handover, list[int]] = defaultdict(list)  # (keeps each alive: no id reused)
    most = 0  # the most reads of one stream held at once, over the whole run
    read = _Connection._read

    def held(handover: Handover) -> int:
        """Reads of the stream with events not all taken yet."""
        return sum(1 for end in ends[handover] if end > handover.index)

    async def counted(self: _Connection) -> None:
        nonlocal most
        handover = self.handover
        # A read starts only when at most one earlier read's events are still held.
        assert held(handover) <= 1
        before = handover.base + len(handover.queue)
        await read(self)
        after = handover.base + len(handover.queue)
        if after > before:
            ends[handover].append(after)
            most = max(most, held(handover))

    monkeypatch.setattr(_Connection, "_read", counted)

    async def main() -> None:
        async with client_for(paced) as client:
            streams = await open_streams(client, 6, "Parked")
            by_id = {stream.worker_id: stream for stream in streams}
            ids: dict[str, list[str | None]] = defaultdict(list)
            async with client.workers.watch(streams, buffer=4) as watch:
                async for item in watch:
                    assert item.event is not None
                    ids[item.worker_id].append(item.event.event_id)
                    if sum(map(len, ids.values())) == 1:
                        # Meanwhile the server goes on sending: every reader reads a
                        # batch, then the next, and parks with both.
                        await anyio.sleep(0.3)
                        before = {i: decoded(s) for i, s in by_id.items()}
                        await anyio.sleep(0.3)
                        # No reader read again while two batches waited for the
                        # consumer: what is kept per worker is the events of two reads.
                        assert {i: decoded(s) for i, s in by_id.items()} == before
                        assert all(held(s._handover) <= 2 for s in streams)
                        # ... and they did read ahead of the consumer.
                        assert any(held(s._handover) == 2 for s in streams)
            assert most == 2
            for worker_id in by_id:
                # Every event once, in its stream's order.
                assert ids[worker_id] == await replay_ids(client, worker_id)

    anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_removed_while_its_reader_is_parked_goes_at_once(
    paced: Emulator, backend: str
) -> None:
    async def main() -> None:
        async with client_for(paced) as client:
            streams = await open_streams(client, 3, "Removed parked")
            first_id: str | None = None
            gone: WorkerStream | None = None
            after = 0
            async with client.workers.watch(streams) as watch:
                async for item in watch:
                    if first_id is None:
                        first_id = item.worker_id
                        await anyio.sleep(0.3)  # every reader parks with a batch
                        gone = next(s for s in streams if s.worker_id != first_id)
                        pending = gone._handover
                        assert pending.head < pending.limit  # its batch is waiting
                        watch.remove(gone.worker_id)
                        continue
                    assert gone is not None
                    assert item.worker_id != gone.worker_id  # nothing of it after remove()
                    after += 1
                    if after == 1:
                        await anyio.sleep(0.05)
                        # Its reader was woken from its park by the cancel, and closed it.
                        assert gone.closed
            assert gone is not None and gone.worker_id not in watch.workers
            assert after > 0

    anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_consumer_that_stops_waiting_and_comes_back_gets_every_event(
    paced: Emulator, backend: str
) -> None:
    """Waiting for the next item can be given up (a timeout) and resumed, again and again."""

    async def main() -> None:
        async with client_for(paced) as client:
            streams = await open_streams(client, 3, "Impatient")
            worker_ids = [stream.worker_id for stream in streams]
            ids: dict[str, list[str | None]] = defaultdict(list)
            timeouts = 0
            async with client.workers.watch(streams) as watch:
                iterator = watch.__aiter__()
                while True:
                    # Shorter than the gaps between the paced events: it often times out
                    # while the consumer waits for a reader to hand something over.
                    with anyio.move_on_after(0.002) as scope:
                        try:
                            item = await iterator.__anext__()
                        except StopAsyncIteration:
                            break
                    if scope.cancelled_caught:
                        timeouts += 1
                        continue
                    assert item.event is not None
                    ids[item.worker_id].append(item.event.event_id)
            assert timeouts > 10
            for worker_id in worker_ids:
                assert ids[worker_id] == await replay_ids(client, worker_id)

    anyio.run(main, backend=backend)
