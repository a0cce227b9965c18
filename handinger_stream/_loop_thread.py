"""An asyncio event loop in a daemon thread of its own, for callers without a loop they may use.

The sync client runs the async one on such a loop; the emulator and the
cassette recorder (aiohttp servers) run on one when sync code, trio code or a
session-wide fixture starts them. It imports nothing of the package, so every
part may use it.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

import sniffio

__all__ = ["LoopThread", "serving", "under_trio"]

T = TypeVar("T")

# The event loops that serve something of ours (an emulator, a cassette's replay started
# with ``async with``), and what: a sync call made on such a loop's own thread blocks the
# loop, so the server could never answer it.
_SERVED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[str]] = (
    weakref.WeakKeyDictionary()
)


def serving(loop: asyncio.AbstractEventLoop, what: str) -> Callable[[], None]:
    """Note that ``loop`` serves ``what`` (``"the emulator at http://…"``); call the
    answer when it stops. Sync calls from that loop's thread are then refused at once.

        done = serving(asyncio.get_running_loop(), f"the emulator at {base_url}")
    """
    with _LOCK:
        _SERVED.setdefault(loop, []).append(what)

    def done() -> None:
        with _LOCK:
            served = _SERVED.get(loop)
            if served is not None and what in served:
                served.remove(what)
                if not served:
                    del _SERVED[loop]

    return done


_LOCK = threading.Lock()


def _served_here() -> str | None:
    """What the event loop running in this thread serves, if it serves anything."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    with _LOCK:
        served = _SERVED.get(loop)
        return ", ".join(served) if served else None


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
    """An asyncio event loop in a daemon thread, and a way to run coroutines on it.

    Started on first use, from any thread (inside a running loop too: the
    caller's thread only waits, unless that loop serves something of ours,
    :func:`serving`: then the call is refused at once, since the server
    could never answer it); started again in a child process after a
    fork, whose parent's thread did not come along. :meth:`close` runs a last
    coroutine (closing connections, stopping a server), ends the loop as
    ``asyncio.run`` does (remaining tasks cancelled, async generators and
    worker threads finished) and joins the thread. A daemon thread, so a loop
    nobody closed never holds up exit.

    Calls are handed over with ``asyncio.run_coroutine_threadsafe``: what
    anyio's blocking portal does, with less bookkeeping (measured at half its
    cost per call, which a sync ``for`` over a stream pays per event).

    >>> async def answer() -> int:
    ...     return 42
    >>> thread = LoopThread("demo")
    >>> thread.call(answer)
    42
    >>> thread.close()
    >>> thread.call(answer)
    Traceback (most recent call last):
    RuntimeError: the demo loop thread is closed
    """

    def __init__(self, name: str, *, closed_error: Callable[[], Exception] | None = None) -> None:
        self.name = name
        self._closed_error = closed_error
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.closed = False

    def call(self, func: Callable[[], Awaitable[T]]) -> T:
        """Run ``func()`` on the loop; wait for and return its result (or raise its error)."""
        if self.in_loop_thread():
            raise RuntimeError("a Handinger call cannot wait on its own event loop's thread")
        served = _served_here()
        if served is not None:
            # Waiting here would block the loop that must answer: the call could only
            # time out (a minute later). Said at once, with what to do instead.
            raise RuntimeError(
                f"a sync Handinger call cannot be made from the thread whose event loop "
                f"serves {served}: it would block that loop, so the server could never "
                "answer. Use AsyncHandinger and await its calls here, or run the server "
                "in a thread of its own ('with Emulator() as emu:' instead of 'async with')"
            )
        loop = self._get()  # first: if it raises, no coroutine is left unawaited
        # The coroutine runs in a copy of the caller's context (its OpenTelemetry span,
        # say), less the caller's async library: called from trio, it runs on asyncio.
        context = contextvars.copy_context()
        context.run(sniffio.current_async_library_cvar.set, None)
        future = context.run(asyncio.run_coroutine_threadsafe, _await(func), loop)
        try:
            return future.result()
        except BaseException:
            # Interrupted while waiting (Ctrl-C): stop the task too, not just the wait.
            future.cancel()
            raise

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def close(
        self, last: Callable[[], Awaitable[None]] | None = None, *, timeout: float | None = None
    ) -> None:
        """Run ``last()`` on the loop, end the loop, and join the thread (for at most
        ``timeout`` seconds). Idempotent."""
        with self._lock:
            self.closed = True
            loop, stop, thread, pid = self._loop, self._stop_event, self._thread, self._pid
            self._loop = self._stop_event = self._thread = None
        if loop is None or stop is None or thread is None or pid != os.getpid():
            return
        if threading.current_thread() is thread:
            # Closed (or collected) on the loop's own thread: it cannot wait for itself.
            threading.Thread(target=_end_loop, args=(loop, stop, thread, last, None)).start()
            return
        _end_loop(loop, stop, thread, last, timeout)

    def _get(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self.closed:
                raise self._error()
            if self._loop is None or self._pid != os.getpid():
                # After a fork (a Celery or gunicorn worker) the parent's thread is
                # not in this process: start one of our own.
                self._start()
            assert self._loop is not None
            return self._loop

    def _error(self) -> Exception:
        if self._closed_error is not None:
            return self._closed_error()
        return RuntimeError(f"the {self.name} loop thread is closed")

    def _start(self) -> None:
        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop_event = asyncio.Event()
            ready.set()
            await self._stop_event.wait()

        thread = threading.Thread(target=asyncio.run, args=(main(),), name=self.name, daemon=True)
        thread.start()
        ready.wait()
        self._thread, self._pid = thread, os.getpid()


async def _await(func: Callable[[], Awaitable[T]]) -> T:
    # func() is called here, on the loop: what it makes belongs to that loop.
    return await func()


def _end_loop(
    loop: asyncio.AbstractEventLoop,
    stop: asyncio.Event,
    thread: threading.Thread,
    last: Callable[[], Awaitable[None]] | None,
    timeout: float | None,
) -> None:
    try:
        if last is not None:
            asyncio.run_coroutine_threadsafe(_await(last), loop).result()
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
