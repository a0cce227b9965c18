"""Run an asyncio server in a daemon thread with its own loop (sync code, trio, fixtures).

The emulator and the cassette recorder are aiohttp servers: they need an
asyncio loop. Sync tests and trio code have none, so these servers run on a
loop of their own in a background thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import sniffio

__all__ = ["LoopThread", "under_trio"]


def under_trio() -> bool:
    """Whether the caller runs inside trio, where aiohttp cannot.

    >>> under_trio()
    False
    """
    try:
        return sniffio.current_async_library() == "trio"
    except sniffio.AsyncLibraryNotFoundError:
        return False


class LoopThread:
    """Start a server's coroutine in a new thread; stop it, and whatever it left, on request.

    >>> async def start() -> None: ...
    >>> async def stop() -> None: ...
    >>> thread = LoopThread("demo")
    >>> thread.start(start, stop)
    >>> thread.stop()
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._thread: threading.Thread | None = None
        self._request_stop: Callable[[], None] | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(
        self, start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
    ) -> None:
        """Run ``start()`` on the thread's loop; return once it has, raising what it raised."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            stopping = asyncio.Event()

            async def main() -> None:
                try:
                    await start()
                except BaseException as exc:
                    failure.append(exc)
                    ready.set()
                    return

                def request_stop() -> None:
                    loop.call_soon_threadsafe(stopping.set)

                self._request_stop = request_stop
                ready.set()
                await stopping.wait()
                await stop()
                # Handlers still sleeping (a stall, a paced replay) end here, not with the loop.
                others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in others:
                    task.cancel()
                await asyncio.gather(*others, return_exceptions=True)

            try:
                loop.run_until_complete(main())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to run ``stop()`` and end; wait for the thread."""
        if self._request_stop is not None:
            self._request_stop()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self._thread = None
        self._request_stop = None
