"""The relay's Signal: many waiters, one timer, each wait ending at its own deadline."""

from __future__ import annotations

import asyncio

import pytest

from handinger_stream.relay._signal import Signal

pytestmark = pytest.mark.asyncio


async def test_each_wait_ends_at_its_own_deadline_and_a_fire_wakes_the_rest() -> None:
    signal = Signal()
    loop = asyncio.get_running_loop()
    started = loop.time()
    ended: dict[float, tuple[bool, float]] = {}

    async def wait(timeout: float) -> None:
        ended[timeout] = (await signal.wait(timeout), loop.time() - started)

    tasks = [asyncio.ensure_future(wait(t)) for t in (0.2, 0.05, 5.0, 0.1)]
    await asyncio.sleep(0.3)
    assert len(signal) == 1  # the three short waits are gone, the long one waits on
    signal.fire()
    await asyncio.gather(*tasks)
    for timeout in (0.05, 0.1, 0.2):
        woken, after = ended[timeout]
        assert woken is False
        assert timeout - 0.01 <= after < timeout + 0.09
    assert ended[5.0][0] is True and ended[5.0][1] < 1.0
    assert len(signal) == 0


async def test_a_later_wait_with_a_sooner_deadline_is_not_kept_waiting() -> None:
    signal = Signal()
    long = asyncio.ensure_future(signal.wait(10.0))
    await asyncio.sleep(0)
    assert await asyncio.wait_for(signal.wait(0.02), 1.0) is False
    assert not long.done()
    signal.fire()
    assert await long is True


async def test_a_cancelled_wait_leaves_nothing_behind_and_others_still_time_out() -> None:
    signal = Signal()
    cancelled = asyncio.ensure_future(signal.wait(0.01))
    other = asyncio.ensure_future(signal.wait(0.05))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert len(signal) == 1
    assert await asyncio.wait_for(other, 1.0) is False
    assert len(signal) == 0


async def test_fail_raises_in_every_waiter() -> None:
    signal = Signal()
    waits = [asyncio.ensure_future(signal.wait(5.0)) for _ in range(3)]
    await asyncio.sleep(0)
    signal.fail(RuntimeError("gone"))
    for wait in waits:
        with pytest.raises(RuntimeError, match="gone"):
            await wait
    # A wait after the failure is a fresh one.
    assert await signal.wait(0.01) is False
