"""Signal: many waiters woken at once, each with its own timeout, no task per wait;
:func:`joined`: one call per key at a time, its result shared by whoever asks meanwhile.

>>> import asyncio
>>> async def demo():
...     signal = Signal()
...     asyncio.get_running_loop().call_soon(signal.fire)
...     return await signal.wait(1.0), await signal.wait(0.01)
>>> asyncio.run(demo())
(True, False)
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

__all__ = ["Signal", "joined", "retrieved"]

_K = TypeVar("_K", bound=Hashable)
_T = TypeVar("_T")


def joined(
    calls: dict[_K, asyncio.Future[_T]], key: _K, call: Callable[[], Awaitable[_T]]
) -> Awaitable[_T]:
    """``call()``'s result, shared with every caller of the same ``key`` while it runs
    (``calls`` holds the running ones). A caller cancelled leaves the call to the others.

    >>> async def demo():
    ...     calls, made = {}, []
    ...     async def fetch():
    ...         made.append(1)
    ...         await asyncio.sleep(0)
    ...         return "record"
    ...     both = await asyncio.gather(*(joined(calls, "k", fetch) for _ in range(2)))
    ...     return both, len(made), calls
    >>> asyncio.run(demo())
    (['record', 'record'], 1, {})
    """
    running = calls.get(key)
    if running is None:
        running = calls[key] = asyncio.ensure_future(call())
        running.add_done_callback(functools.partial(_ended, calls, key))
    return asyncio.shield(running)


def _ended(calls: dict[Any, asyncio.Future[Any]], key: Any, done: asyncio.Future[Any]) -> None:
    if calls.get(key) is done:
        del calls[key]
    retrieved(done)


def retrieved(done: asyncio.Future[Any]) -> None:
    """Retrieve a shared future's exception, so that one whose every waiter was cancelled
    is not reported as never retrieved."""
    if not done.cancelled():
        done.exception()


class Signal:
    """``await signal.wait(timeout)``: True when :meth:`fire` is called, False on timeout.

    One future per wait, and one timer for all of them, set for the soonest
    deadline (``asyncio.wait_for`` would make a task each time, a timer per
    wait a heap entry each time): with a thousand readers on a chat, that is
    the cost of every event.
    """

    __slots__ = ("_timer", "_waiters")

    def __init__(self) -> None:
        self._waiters: dict[asyncio.Future[bool], float] = {}  # future -> deadline
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._waiters)

    def fire(self) -> None:
        self._wake(True, None)

    def fail(self, error: BaseException) -> None:
        """Wake every waiter with ``error``."""
        self._wake(False, error)

    def _wake(self, result: bool, error: BaseException | None) -> None:
        waiters, self._waiters = self._waiters, {}
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for future in waiters:
            if not future.done():
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(error)

    def _expire(self, when: float) -> None:
        """The soonest deadline passed: end the waits that are due, and set the timer on."""
        self._timer = None
        loop = asyncio.get_running_loop()
        # The loop runs a timer up to its clock's resolution early: ``when`` is due.
        now = max(loop.time(), when)
        due = [future for future, deadline in self._waiters.items() if deadline <= now]
        for future in due:
            del self._waiters[future]
            if not future.done():
                future.set_result(False)
        if self._waiters:
            soonest = min(self._waiters.values())
            self._timer = loop.call_at(soonest, self._expire, soonest)

    async def wait(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        deadline = loop.time() + max(timeout, 0.0)
        self._waiters[future] = deadline
        timer = self._timer
        if timer is None or deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._expire, deadline)
        try:
            return await future
        finally:
            if future.cancelled():
                # Not to be woken any more (the timer may stay: it finds nothing due).
                self._waiters.pop(future, None)
