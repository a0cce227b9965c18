"""Resource hygiene: 1,000 streams abandoned at random points leave nothing behind.

Each stream is left by one of: ``break`` out of the loop (no ``async with``),
``aclose()``, or a cancel scope. Right after, within a few event-loop
ticks (counted, not timed), its response must be closed.
At the end the OS lists no connection of ours to the server, no task is
left, the open file descriptors are back to the start, and no
ResourceWarning was raised (the suite turns them into errors).
"""

from __future__ import annotations

import asyncio
import random

import anyio
import anyio.lowlevel
import pytest
import trio

from handinger_stream import AsyncHandinger, WorkerStream
from handinger_stream.client.transport import TransportName
from handinger_stream.emulator import Emulator
from tests.conftest import API_KEY
from tests.helpers.emulators import emulator_fixture
from tests.helpers.leaks import connections_to, open_fds, settle

STREAMS = 1000


quiet_emulator = emulator_fixture(api_key=API_KEY, seed=3)


async def abandon(stream: WorkerStream, how: str, after: int) -> None:
    if how == "break":
        seen = 0
        async for _ in stream:
            seen += 1
            if seen > after:
                break
    elif how == "aclose":
        for _ in range(after + 1):
            await stream.__anext__()
        await stream.aclose()
    else:
        with anyio.CancelScope() as scope:
            seen = 0
            async for _ in stream:
                seen += 1
                if seen > after:
                    scope.cancel()
                    await anyio.sleep(1)  # the cancellation lands here
            pytest.fail("the stream ended before the cancel point")


async def abandon_many(emulator: Emulator, transport: TransportName) -> None:
    rnd = random.Random(transport)
    start_fds = open_fds()
    client = AsyncHandinger(
        api_key=API_KEY,
        base_url=emulator.base_url,
        transport=transport,
    )
    for i in range(STREAMS):
        stream = await client.workers.create(input="Hi", budget="low", stream=True)
        how = ("break", "aclose", "cancel")[i % 3]
        await abandon(stream, how, after=rnd.randrange(60))
        # Closed at once, or (a dropped iterator over httpx) by a task scheduled
        # then: a few loop ticks, counted rather than timed.
        for _ in range(100):
            if stream.closed:
                break
            await anyio.lowlevel.checkpoint()
        assert stream.closed, (i, how)
    port = int(emulator.base_url.rsplit(":", 1)[1])
    # A stream left early closes its connection; one read to its end hands it back
    # to the pool, where the next request reuses it. So at most one stays open: a
    # leaked connection would be held forever and they would pile up.
    assert await settle(lambda: connections_to(port) <= 1), connections_to(port)
    await client.aclose()
    assert await settle(lambda: connections_to(port) == 0), connections_to(port)
    assert await settle(lambda: open_fds() <= start_fds), (open_fds(), start_fds)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_abandoned_streams_leave_nothing_on_asyncio(
    quiet_emulator: Emulator, transport: TransportName
) -> None:
    tasks_before = len(asyncio.all_tasks())
    await abandon_many(quiet_emulator, transport)
    assert len(asyncio.all_tasks()) == tasks_before


def test_abandoned_streams_leave_nothing_on_trio(quiet_emulator: Emulator) -> None:
    async def main() -> None:
        before = trio.lowlevel.current_statistics().tasks_living
        await abandon_many(quiet_emulator, "httpx")
        assert trio.lowlevel.current_statistics().tasks_living == before

    trio.run(main)
