"""The relay's Signal (many waiters, one timer, each wait ending at its own deadline) and
batched calls (shared, but never older than the question)."""

from __future__ import annotations

import asyncio

import pytest

from handinger_stream.relay._signal import Signal, batched

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


class _Record:
    """A record that changes while it is read, and counts its reads."""

    def __init__(self) -> None:
        self.value = 0
        self.reads = 0
        self.gate = asyncio.Event()

    async def read(self) -> int:
        self.reads += 1
        seen = self.value  # the state when the read went out
        await self.gate.wait()
        return seen


async def test_a_batched_call_is_never_older_than_its_question() -> None:
    record = _Record()
    batches: dict[str, object] = {}
    first = asyncio.ensure_future(batched(batches, "k", record.read))
    await asyncio.sleep(0)
    record.value = 1  # changed after the first read went out...
    later = [asyncio.ensure_future(batched(batches, "k", record.read)) for _ in range(500)]
    await asyncio.sleep(0)
    assert record.reads == 1  # ...the askers since wait for a read of their own
    record.gate.set()
    assert await first == 0
    assert await asyncio.gather(*later) == [1] * 500  # none got the stale answer
    assert record.reads == 2  # and 501 callers cost two reads
    assert batches == {}


async def test_a_batched_failure_reaches_its_callers_and_a_cancelled_one_leaves_the_rest() -> None:
    batches: dict[str, object] = {}
    calls = 0

    async def fail() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise ConnectionError(f"read {calls} failed")

    running = asyncio.ensure_future(batched(batches, "k", fail))
    await asyncio.sleep(0)
    gathered = [asyncio.ensure_future(batched(batches, "k", fail)) for _ in range(3)]
    await asyncio.sleep(0)
    gathered[0].cancel()
    results = await asyncio.gather(running, *gathered, return_exceptions=True)
    assert str(results[0]) == "read 1 failed"
    assert isinstance(results[1], asyncio.CancelledError)
    assert [str(r) for r in results[2:]] == ["read 2 failed"] * 2
    assert batches == {}
    # After the failures, a new caller gets a call of its own.
    with pytest.raises(ConnectionError, match="read 3"):
        await batched(batches, "k", fail)
