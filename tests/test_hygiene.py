"""Resource hygiene: 1,000 streams abandoned at random points leave nothing behind.

Each stream is left by one of: ``break`` out of the loop (no ``async with``),
``aclose()``, or a cancel scope. Right after, within a few event-loop
ticks (counted, not timed), its response must be closed.
At the end no connection is in use, no task is left, the open file
descriptors are back to the start (plus idle pooled connections, which close
with the client), and no ResourceWarning was raised (the suite turns them
into errors).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio

from handinger_stream import AsyncHandinger, WorkerStream
from handinger_stream.emulator import Emulator

from .conftest import API_KEY

STREAMS = 1000


@pytest.fixture(scope="module")
def quiet_emulator() -> Iterator[Emulator]:
    with Emulator(api_key=API_KEY, seed=3) as emulator:
        yield emulator


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def pool_counts(client: AsyncHandinger) -> tuple[int, int]:
    """(connections in use, idle connections) of the client's pool."""
    transport: Any = client.transport
    if transport.name == "aiohttp":
        connector = transport._session.connector
        idle = sum(len(conns) for conns in connector._conns.values())
        return len(connector._acquired), idle
    pool = transport._client._transport._pool
    idle = sum(1 for c in pool.connections if c.is_idle())
    return len(pool.connections) - idle, idle


async def settle(predicate: Callable[[], bool], ticks: int = 500) -> bool:
    """Let the loop run (and the server thread close its ends) until ``predicate`` holds."""
    for _ in range(ticks):
        if predicate():
            return True
        await anyio.sleep(0.01)
    return predicate()


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


async def abandon_many(emulator: Emulator, transport: str) -> None:
    rnd = random.Random(transport)
    start_fds = open_fds()
    client = AsyncHandinger(
        api_key=API_KEY,
        base_url=emulator.base_url,
        transport=transport,  # type: ignore[arg-type]
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
    in_use, idle = pool_counts(client)
    assert in_use == 0
    # Each idle pooled connection is two descriptors here: ours and the server thread's.
    assert await settle(lambda: open_fds() <= start_fds + 2 * idle), (open_fds(), start_fds, idle)
    await client.aclose()
    assert await settle(lambda: open_fds() <= start_fds), (open_fds(), start_fds)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_abandoned_streams_leave_nothing_on_asyncio(
    quiet_emulator: Emulator, transport: str
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
