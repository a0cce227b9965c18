"""The emulator's clocks: real time by default, or one a test moves by hand.

Schedules ask the clock to call them back at a time (:meth:`Clock.call_at`);
today's timestamps (``createdAt``, ``nextRunAt``, a delivery's ``createdAt``)
are its :meth:`Clock.now`; the waits between webhook delivery attempts are
its :meth:`Clock.sleep`. :class:`RealClock` fires in the background as time
passes; :class:`EmulatorClock` stands still until :meth:`EmulatorClock.advance`
moves it, firing what falls due on the way, so a cron schedule is tested
without waiting.

>>> clock = EmulatorClock(start="2026-01-05T09:00:00Z")
>>> fired = []
>>> timer = clock.call_at(clock.now() + 60, lambda: fired.append(iso(clock.now())))
>>> clock.advance(59), fired
(0, [])
>>> clock.advance(1), fired
(1, ['2026-01-05T09:01:00.000Z'])
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

__all__ = ["Clock", "EmulatorClock", "RealClock", "Timer", "iso", "parse_iso"]


def iso(seconds: float) -> str:
    """An instant (seconds since the epoch) as the API writes it: ISO-8601, UTC, milliseconds.

    >>> iso(0)
    '1970-01-01T00:00:00.000Z'
    """
    when = datetime.fromtimestamp(seconds, timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> float:
    """An ISO-8601 date-time as seconds since the epoch (no zone: UTC); ``ValueError`` if not one.

    >>> parse_iso("2026-01-05T09:00:00Z") - parse_iso("2026-01-05T10:00:00+01:00")
    0.0
    """
    if not isinstance(text, str) or len(text) > 64:
        raise ValueError("not an ISO-8601 date-time")
    # Python 3.10 reads no "Z"; the API writes one.
    when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


class Timer(Protocol):
    """A callback the clock will make, unless it is cancelled first."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """What the emulator asks of time."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback()`` on the emulator's loop once ``now()`` reaches ``when``."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait between two webhook delivery attempts."""
        ...


class RealClock:
    """The wall clock: timers fire in the background on the loop that armed them.

    >>> RealClock().now() > 1.7e9
    True
    """

    def now(self) -> float:
        return time.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, when - time.time()), callback)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "RealClock()"


@dataclass(order=True)
class _Due:
    when: float
    order: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class EmulatorClock:
    """A clock that moves only when told: :meth:`advance` fires what falls due, in order.

    ``start``: the instant it shows first (an ISO string, a ``datetime`` or
    epoch seconds; by default 2026-01-01T00:00:00Z, so timestamps are
    repeatable). Waits between webhook delivery attempts take no time on it
    and at most ``max_real_wait`` seconds of real time (a few milliseconds),
    so retries are quick under test.

    :meth:`advance` may be called from any thread: when the emulator runs in
    a thread of its own, the callbacks still run on the emulator's loop, and
    the call returns once they ran.
    """

    #: The most callbacks one :meth:`advance` makes: more means a step too large for the timers.
    max_fires = 10_000

    def __init__(
        self,
        start: float | str | datetime = "2026-01-01T00:00:00Z",
        *,
        max_real_wait: float = 0.005,
    ) -> None:
        if isinstance(start, str):
            start = parse_iso(start)
        elif isinstance(start, datetime):
            start = (start if start.tzinfo else start.replace(tzinfo=timezone.utc)).timestamp()
        self._now = float(start)
        self.max_real_wait = max_real_wait
        self._due: list[_Due] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"EmulatorClock(now={iso(self._now)!r})"

    def now(self) -> float:
        return self._now

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fire callbacks on ``loop`` (the emulator's), whichever thread advances the clock."""
        self._loop = loop

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        due = _Due(float(when), next(self._order), callback)
        with self._lock:
            heapq.heappush(self._due, due)
        return due

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(min(max(seconds, 0.0), self.max_real_wait))

    @property
    def pending(self) -> int:
        """Callbacks armed and not yet made (cancelled ones aside)."""
        with self._lock:
            return sum(not due.cancelled for due in self._due)

    def advance(self, seconds: float) -> int:
        """Move ``seconds`` ahead, making each callback that falls due at its own instant.

        Returns how many callbacks were made. A callback that arms another
        one inside the step (the next run of a cron schedule) is made too.

        >>> clock = EmulatorClock(start=0)
        >>> ticks = []
        >>> def tick() -> None:
        ...     ticks.append(clock.now())
        ...     clock.call_at(clock.now() + 10, tick)
        >>> _ = clock.call_at(10, tick)
        >>> clock.advance(35), ticks, clock.now()
        (3, [10.0, 20.0, 30.0], 35.0)
        """
        if not seconds >= 0:  # NaN too
            raise ValueError(f"the clock only moves forward; got {seconds!r}")
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running() or _running_loop() is loop:
            return self._advance(seconds)
        # Another thread (the emulator runs in one of its own): fire on the emulator's loop.
        result: concurrent.futures.Future[int] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(self._advance(seconds))
            except BaseException as exc:
                result.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return result.result(timeout=30)

    def _advance(self, seconds: float) -> int:
        target = self._now + seconds
        fired = 0
        while True:
            with self._lock:
                if not self._due or self._due[0].when > target:
                    break
                if fired >= self.max_fires and not self._due[0].cancelled:
                    raise RuntimeError(
                        f"more than {self.max_fires} timers fell due in one advance; "
                        "advance in smaller steps"
                    )
                due = heapq.heappop(self._due)
            if due.cancelled:
                continue
            self._now = max(self._now, due.when)
            fired += 1
            due.callback()
        self._now = target
        return fired


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
