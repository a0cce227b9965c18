"""The emulator's three ways to run: on the asyncio loop, in a thread, and under trio."""

from __future__ import annotations

import inspect
import threading

import httpx
import pytest
import trio

from handinger_stream import AsyncHandinger
from handinger_stream.emulator import Emulator


def _emulator_threads() -> int:
    return sum(t.name == "handinger-emulator" for t in threading.enumerate())


def test_async_with_under_trio_runs_in_a_thread_and_stops() -> None:
    before = _emulator_threads()

    async def main() -> str:
        async with Emulator() as emu:
            assert _emulator_threads() == before + 1
            async with AsyncHandinger(**emu.client_options()) as client:
                stream = await client.workers.create(input="Hi from trio", stream=True)
                worker = await stream.get_final_worker()
        return worker.status

    assert trio.run(main) == "completed"
    assert _emulator_threads() == before


def test_start_under_trio_says_what_to_use_instead() -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match="async with Emulator"):
            await Emulator().start()

    trio.run(main)


async def test_async_with_on_asyncio_runs_on_this_loop() -> None:
    before = _emulator_threads()
    async with Emulator(api_key="k") as emu:
        assert _emulator_threads() == before
        async with AsyncHandinger(**emu.client_options()) as client:
            stream = await client.workers.create(input="Hi", stream=True)
            assert (await stream.get_final_worker()).status == "completed"


def test_a_failed_start_in_a_thread_raises_and_leaves_no_thread() -> None:
    with Emulator() as first:
        taken = first.port
        before = _emulator_threads()
        # reuse_address does not allow two listeners on one port: the second start fails.
        with pytest.raises(OSError), Emulator(port=taken):
            pass
        assert _emulator_threads() == before


def test_the_documented_defaults_are_the_real_ones() -> None:
    defaults = {
        name: p.default
        for name, p in inspect.signature(Emulator).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert defaults["api_key"] is None
    assert defaults["tokens_per_second"] == 0
    assert defaults["seed"] == 0
    assert defaults["keepalive_interval"] == 15
    doc = inspect.getdoc(Emulator) or ""
    for phrase in ("api_key=None", "tokens_per_second=0", "seed=0", "keepalive_interval=15"):
        assert phrase in doc


def test_any_key_is_accepted_by_default_and_none_is_refused() -> None:
    with Emulator() as emu:
        url = emu.base_url + "/api/workers"
        ok = httpx.post(url, json={"input": "x"}, headers={"authorization": "Bearer anything"})
        missing = httpx.post(url, json={"input": "x"})
    assert ok.status_code == 200
    assert missing.status_code == 401
