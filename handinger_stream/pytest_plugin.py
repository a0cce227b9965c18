"""A pytest plugin: the ``handinger_emulator`` fixture, for your own test suite.

Installed with the package (entry point ``pytest11``), so any test can ask
for it:

    async def test_my_app(handinger_emulator):
        async with AsyncHandinger(**handinger_emulator.client_options()) as client:
            worker = await (await client.workers.create(input="Hi", stream=True)).get_final_worker()
            assert worker.status == "completed"

The emulator runs in a background thread, so the fixture serves sync tests,
asyncio tests and trio tests alike.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .emulator import Emulator

__all__ = ["handinger_emulator"]


@pytest.fixture
def handinger_emulator() -> Iterator[Emulator]:
    """A running emulator (any API key accepted, pace 0, seed 0)."""
    with Emulator(tokens_per_second=0, seed=0) as emulator:
        yield emulator
