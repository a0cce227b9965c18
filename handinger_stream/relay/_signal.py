"""Signal: many waiters woken at once, each with its own timeout, no task per wait;
:func:`joined`: one call per key at a time, its result shared by whoever asks meanwhile;
:func:`batched`: for a state that changes, a call shared only by those who asked before it began.

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
from typing import Any, Generic, TypeVar

__all__ = ["Signal", "batched", "joined", "retrieved"]

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


class _Batch(Generic[_T]):
    """A key's call running, and the callers gathered for the one after it."""

    __slots__ = ("call", "next", "running")

    def __init__(self, call: Callable[[], Awaitable[_T]]) -> None:
        self.call = call
        self.running: asyncio.Future[_T] = asyncio.ensure_future(call())
        self.next: asyncio.Future[_T] | None = None


def batched(batches: dict[_K, Any], key: _K, call: Callable[[], Awaitable[_T]]) -> Awaitable[_T]:
    """``call()``'s result, from a call begun after this caller asked; shared with every
    caller of the same ``key`` who asked before it began.

    Unlike :func:`joined`, an answer is never older than the question: a record that
    may change (a turn begun, elsewhere, just before the ask) is read afresh for a
    caller who asked while a read was already on its way. At most two calls per key:
    one running, and one gathering callers to begin when it ends (the same call for
    a key: the first caller's is made). ``batches`` holds them.

    >>> async def demo():
    ...     batches, made = {}, []
    ...     async def fetch():
    ...         made.append(1)
    ...         await asyncio.sleep(0)
    ...         return len(made)
    ...     first = batched(batches, "k", fetch)  # begins at once
    ...     later = [batched(batches, "k", fetch) for _ in range(3)]  # share the next
    ...     return await first, await asyncio.gather(*later), len(made), batches
    >>> asyncio.run(demo())
    (1, [2, 2, 2], 2, {})
    """
    batch: _Batch[_T] | None = batches.get(key)
    if batch is None:
        batch = batches[key] = _Batch(call)
        batch.running.add_done_callback(functools.partial(_batch_ran, batches, key, batch))
        return asyncio.shield(batch.running)
    if batch.next is None:
        batch.next = asyncio.get_running_loop().create_future()
    return asyncio.shield(batch.next)


def _batch_ran(
    batches: dict[Any, Any], key: Any, batch: _Batch[Any], done: asyncio.Future[Any]
) -> None:
    retrieved(done)
    gathered = batch.next
    if gathered is None:
        if batches.get(key) is batch:
            del batches[key]
        return
    # The gathered callers' call begins now, after every one of them asked.
    batch.next = None
    try:
        following = batch.running = asyncio.ensure_future(batch.call())
    except Exception as exc:  # the call could not even begin: its callers hear why
        if batches.get(key) is batch:
            del batches[key]
        gathered.set_exception(exc)
        retrieved(gathered)
        return
    following.add_done_callback(functools.partial(_handed, gathered))
    following.add_done_callback(functools.partial(_batch_ran, batches, key, batch))


def _handed(gathered: asyncio.Future[Any], done: asyncio.Future[Any]) -> None:
    """Hand a call's outcome to the callers gathered for it."""
    if gathered.done():
        return
    if done.cancelled():
        gathered.cancel()
    elif (error := done.exception()) is not None:
        gathered.set_exception(error)
    else:
        gathered.set_result(done.result())
    retrieved(gathered)


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
