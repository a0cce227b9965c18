"""The lifecycle the testing kit's servers share: an aiohttp app on a loopback port.

The emulator and the cassette recorder are both a :class:`LoopbackServer`:
``async with`` serves on the current asyncio loop; ``with`` (and ``async
with`` under trio, where aiohttp cannot run) serves on a
:class:`~handinger_stream._loop_thread.LoopThread` of the server's own, so
sync code, trio code and session-wide fixtures can use it.
"""

from __future__ import annotations

import abc
import asyncio
import sys
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar

import anyio.to_thread
from aiohttp import web

from .._loop_thread import LoopThread, serving, under_trio

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from typing import Self
    else:
        from typing_extensions import Self

__all__ = ["LoopbackServer"]


class LoopbackServer(abc.ABC):
    """Start, serve and stop one aiohttp app on ``host:port`` (``port=0``: an ephemeral one).

    A subclass makes the app (:meth:`_app`) and may release what it opened
    once the app stopped (:meth:`_stopped`) or act when its block ends
    (:meth:`_finished`).

    >>> class Hello(LoopbackServer):
    ...     _kind, _usage = "hello server", "Hello()"
    ...     async def _app(self) -> web.Application:
    ...         return web.Application()
    >>> with Hello() as server:
    ...     server.base_url.startswith("http://127.0.0.1:")
    True
    """

    #: What the server is called in messages (and in its thread's name).
    _kind: ClassVar[str]
    #: How it is made, as the message under trio shows it.
    _usage: ClassVar[str]

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._thread: LoopThread | None = None
        self._unserve: Callable[[], None] | None = None

    @property
    def base_url(self) -> str:
        """Where clients send their requests: ``http://host:port`` (once it is running)."""
        if not self.port:
            raise RuntimeError(f"the {self._kind} is not running")
        return f"http://{self.host}:{self.port}"

    @abc.abstractmethod
    async def _app(self) -> web.Application:
        """The app to serve, made on the loop that serves it."""

    async def _stopped(self) -> None:
        """Release what :meth:`_app` opened besides the app (the app has stopped)."""
        return None  # nothing, unless the server opened more

    def _finished(self) -> None:
        """What to do when the ``with`` block ends, the server stopped."""
        return None  # nothing, unless the server keeps something

    async def start(self) -> None:
        """Start serving on the current asyncio loop (``async with`` does it for you)."""
        if under_trio():
            raise RuntimeError(
                f"under trio, use 'async with {self._usage}' or 'with {self._usage}'"
            )
        try:
            self._runner = web.AppRunner(
                await self._app(), handle_signals=False, access_log=None, shutdown_timeout=1.0
            )
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
            await site.start()
        except BaseException:
            await self.stop()  # a port in use, say: nothing is left open
            raise
        self.port = int(self._runner.addresses[0][1])
        # A sync client called from this loop's thread would block the loop that answers
        # it (a notebook's 'async with Emulator()', then Handinger calls): refused at once.
        self._unserve = serving(asyncio.get_running_loop(), f"the {self._kind} at {self.base_url}")

    async def stop(self) -> None:
        """Stop serving; requests still running are cancelled after a second."""
        if self._unserve is not None:
            unserve, self._unserve = self._unserve, None
            unserve()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        await self._stopped()

    async def __aenter__(self) -> Self:
        if under_trio():
            await anyio.to_thread.run_sync(self.__enter__)
        else:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._thread is not None:
            await anyio.to_thread.run_sync(self.__exit__, exc_type, exc, tb)
            return
        await self.stop()
        self._finished()

    # -- in a thread ----------------------------------------------------

    def __enter__(self) -> Self:
        thread = LoopThread("handinger-" + self._kind.replace(" ", "-"))
        try:
            thread.call(self.start)
        except BaseException:
            thread.close()
            raise
        self._thread = thread
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.close(self.stop, timeout=10.0)
        self._finished()
