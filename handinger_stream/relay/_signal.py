"""Signal: many waiters woken at once, each with its own timeout, no task per wait.

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

__all__ = ["Signal"]


def _expire(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


class Signal:
    """``await signal.wait(timeout)``: True when :meth:`fire` is called, False on timeout.

    One future and one timer handle per wait (``asyncio.wait_for`` would make
    a task each time): with a thousand readers on a chat, that is the cost
    of every event.
    """

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[bool]] = []

    def __len__(self) -> int:
        return len(self._waiters)

    def fire(self) -> None:
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(True)

    def fail(self, error: BaseException) -> None:
        """Wake every waiter with ``error``."""
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_exception(error)

    async def wait(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(future)
        handle = loop.call_later(max(timeout, 0.0), _expire, future)
        try:
            return await future
        finally:
            handle.cancel()
            if future.cancelled() or (future.exception() is None and not future.result()):
                # Timed out, or the wait was cancelled: not to be woken any more.
                try:
                    self._waiters.remove(future)
                except ValueError:
                    pass
