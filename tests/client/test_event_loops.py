"""One AsyncHandinger across event loops: each loop gets its own connections, closed with it.

The natural mistake — one client, two ``asyncio.run`` calls — used to end in
"Event loop is closed", "Unclosed client session" and ResourceWarnings. It
works now, and leaves nothing behind (the suite turns ResourceWarnings and
unraisable exceptions into errors; a subprocess in dev mode checks the exit).
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import threading

import pytest
import trio

from handinger_stream import AsyncHandinger, WorkerStream
from handinger_stream.client.transport import TransportName
from handinger_stream.emulator import Emulator
from tests.conftest import API_KEY
from tests.helpers.leaks import connections_to


def test_two_asyncio_runs_with_one_client(emulator: Emulator, transport: TransportName) -> None:
    client = AsyncHandinger(api_key=API_KEY, base_url=emulator.base_url, transport=transport)
    used = []
    left_open: list[WorkerStream] = []

    async def turn(prompt: str) -> str:
        used.append(client.transport)
        stream = await client.workers.create(input=prompt, stream=True)
        # Leave a second stream half read, still referenced: the loop's end must close it.
        half = await client.workers.create(input=prompt + " again", stream=True)
        await half.__anext__()
        left_open.append(half)
        return (await stream.get_final_worker()).status

    assert asyncio.run(turn("first")) == "completed"
    assert connections_to(emulator.port) == 0  # closed as the first loop ended
    assert asyncio.run(turn("second")) == "completed"
    assert used[0] is not used[1]  # a fresh transport for the fresh loop
    assert connections_to(emulator.port) == 0
    left_open.clear()
    gc.collect()  # dropping them now finds nothing left to warn about


def test_aclose_then_use_again_on_the_same_loop(emulator: Emulator) -> None:
    async def main() -> None:
        client = AsyncHandinger(api_key=API_KEY, base_url=emulator.base_url)
        await client.workers.create(input="one")
        await client.aclose()
        assert connections_to(emulator.port) == 0
        await client.workers.create(input="two")
        await client.aclose()

    asyncio.run(main())


def test_loops_in_two_threads_at_once(emulator: Emulator) -> None:
    client = AsyncHandinger(api_key=API_KEY, base_url=emulator.base_url)
    barrier = threading.Barrier(2)
    results: list[str] = []

    async def turn(n: int) -> None:
        stream = await client.workers.create(input=f"thread {n}", stream=True)
        await stream.__anext__()
        barrier.wait(5)  # both loops hold an open stream on the one client now
        results.append((await stream.get_final_worker()).status)

    threads = [threading.Thread(target=asyncio.run, args=(turn(n),)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["completed", "completed"]
    assert connections_to(emulator.port) == 0


def test_a_copy_from_with_options_follows_the_loop(emulator: Emulator) -> None:
    client = AsyncHandinger(api_key=API_KEY, base_url=emulator.base_url)
    copy = client.with_options(max_reconnects=1)

    async def main() -> str:
        async with copy:  # closing the copy leaves the connections to the client
            worker = await copy.workers.create(input="copy")
        return worker.status

    assert asyncio.run(main()) == "pending"
    assert asyncio.run(main()) == "pending"
    assert connections_to(emulator.port) == 0


def test_trio_runs_then_asyncio(emulator: Emulator) -> None:
    client = AsyncHandinger(api_key=API_KEY, base_url=emulator.base_url)

    async def main() -> str:
        stream = await client.workers.create(input="either", stream=True)
        return (await stream.get_final_worker()).status

    async def trio_main() -> str:
        try:
            return await main()
        finally:
            await client.aclose()

    assert trio.run(trio_main) == "completed"
    assert trio.run(trio_main) == "completed"
    assert asyncio.run(main()) == "completed"


SCRIPT = """
import asyncio
from handinger_stream import AsyncHandinger, WorkerStream

client = AsyncHandinger(transport={transport!r})

async def main():
    stream = await client.workers.create(input="twice", stream=True)
    print((await stream.get_final_worker()).status)

asyncio.run(main())
asyncio.run(main())
"""


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_the_natural_mistake_as_a_script(emulator: Emulator, transport: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDINGER_")}
    env.update(HANDINGER_API_KEY=API_KEY, HANDINGER_BASE_URL=emulator.base_url)
    script = textwrap.dedent(SCRIPT).format(transport=transport)
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["completed", "completed"]
    for sign in ("Event loop is closed", "Unclosed", "ResourceWarning", "Traceback"):
        assert sign not in result.stderr, result.stderr
