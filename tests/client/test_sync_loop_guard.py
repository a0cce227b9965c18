"""The sync client called on the thread whose running loop serves the emulator (a
notebook's ``async with Emulator()``, then ``Handinger`` calls) fails at once, saying why,
instead of blocking the loop that must answer until the request times out."""

from __future__ import annotations

import asyncio

import pytest

from handinger_stream import Handinger
from handinger_stream.emulator import Emulator


async def test_a_sync_call_on_the_emulator_s_own_loop_fails_at_once() -> None:
    async with Emulator() as emu:
        with Handinger(**emu.client_options(), max_retries=0) as client:
            with pytest.raises(RuntimeError, match="serves the emulator at http://") as raised:
                client.workers.create(input="Hi")
            assert "AsyncHandinger" in str(raised.value)
            assert "with Emulator() as emu:" in str(raised.value)


async def test_from_another_thread_the_same_call_works() -> None:
    # What the message advises against is only the loop's own thread.
    async with Emulator() as emu:

        def create() -> str:
            with Handinger(**emu.client_options()) as client:
                return client.workers.create(input="Hi").id

        assert (await asyncio.to_thread(create)).startswith("wrk_")


def test_a_sync_call_beside_an_emulator_in_its_own_thread_works() -> None:
    with Emulator() as emu, Handinger(**emu.client_options()) as client:
        assert client.workers.create(input="Hi").status in ("pending", "running", "completed")
