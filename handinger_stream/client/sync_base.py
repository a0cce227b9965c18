"""What sync code needs to drive the async client: a loop in a thread of the
client's own, sync iterators over async ones, and sync views of a stream, a
download and a watch. :class:`SyncAPIClient` is what every sync resource calls.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from .._loop_thread import LoopThread
from ..errors import HandingerError
from ..types.events import Event, Reconnected
from ..types.worker import Worker
from .download import FileDownload
from .stream import Checkpoint, WorkerStream
from .watch import Watch, WatchEvent

if TYPE_CHECKING:
    pass

__all__ = ["SyncAPIClient", "SyncFileDownload", "SyncWorkerStream"]

T = TypeVar("T")
Headers = Mapping[str, str] | None
_END: Any = object()
THREAD_NAME = "handinger-sync"


def _new_loop() -> LoopThread:
    """The loop thread of a new sync client: named ``THREAD_NAME`` (a thread listing shows
    whose it is); once closed, a call says to make a new client."""
    return LoopThread(THREAD_NAME, closed_error=_closed)


def _closed() -> HandingerError:
    return HandingerError("this Handinger client is closed: create a new one")


class _Blocking(Generic[T]):
    """A sync iterator over an async one that lives on the client's loop.

    ``make`` builds the async iterator, on the loop, at the first ``next()``;
    with ``enter``, it is an async context manager, entered first and exited
    at the end. Leaving a ``for`` early drops this object, which closes the
    async iterator (and so its response) before returning.
    """

    def __init__(
        self, loop: LoopThread, make: Callable[[], AsyncIterator[T]], *, enter: bool = False
    ) -> None:
        self._loop = loop
        self._make = make
        self._enter = enter
        self._made: Any = None  # what make() gave: the iterator, or the context manager
        self._it: AsyncIterator[T] | None = None
        self._done = False

    def __iter__(self) -> _Blocking[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        try:
            item = self._loop.call(self._anext)
        except BaseException:
            # The async iterator closed itself, unless we were interrupted mid-call.
            try:
                self.close()
            except Exception:  # the first error is the one to see
                pass
            raise
        if item is _END:
            self._done = True
            raise StopIteration
        return item

    async def _anext(self) -> T:
        if self._it is None:
            self._made = self._make()
            self._it = await self._made.__aenter__() if self._enter else self._made
        assert self._it is not None
        try:
            return await self._it.__anext__()
        except StopAsyncIteration:
            await self._aclose()
            return _END  # type: ignore[no-any-return]

    async def _aclose(self) -> None:
        made, self._made = self._made, None
        if made is None:
            return
        if self._enter:
            await made.__aexit__(None, None, None)
        elif (aclose := getattr(made, "aclose", None)) is not None:
            await aclose()

    def close(self) -> None:
        """Stop iterating and close what the iteration holds open. Idempotent."""
        if self._done:
            return
        self._done = True
        if self._made is not None and not self._loop.closed:
            self._loop.call(self._aclose)

    def __enter__(self) -> _Blocking[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if self._done:
            return
        if self._loop.in_loop_thread():
            # The async iterator, dropped with us, closes itself on its loop.
            self._done = True
            return
        try:
            self.close()
        except Exception:  # a finaliser has nobody to report to
            pass


class SyncWorkerStream:
    """A live worker, for sync code: the same stream as :class:`WorkerStream`, with
    sync iterators. Each call runs on the client's loop thread.

    >>> with client.workers.create(input="Hi", stream=True) as stream:  # doctest: +SKIP
    ...     for event in stream:
    ...         print(type(event).__name__, len(stream.snapshot.output_text))
    """

    def __init__(self, client: SyncAPIClient, stream: WorkerStream) -> None:
        self._client = client  # keeps the client (and its thread) alive while we are
        self._loop = client._loop
        self._stream = stream

    @property
    def async_stream(self) -> WorkerStream:
        """The :class:`WorkerStream` underneath (use it only on the client's loop)."""
        return self._stream

    def _get(self, read: Callable[[WorkerStream], T]) -> T:
        stream = self._stream

        async def get() -> T:
            return read(stream)

        return self._loop.call(get)

    @property
    def snapshot(self) -> Worker:
        """The Worker as folded after the last event delivered."""
        return self._get(lambda s: s.snapshot)

    @property
    def worker_id(self) -> str:
        return self._get(lambda s: s.worker_id)

    @property
    def last_event_id(self) -> str | None:
        return self._get(lambda s: s.last_event_id)

    @property
    def reconnects(self) -> int:
        return self._get(lambda s: s.reconnects)

    @property
    def closed(self) -> bool:
        return self._get(lambda s: s.closed)

    @property
    def completed(self) -> bool:
        return self._get(lambda s: s.completed)

    def checkpoint(self) -> Checkpoint:
        """Where this consumer got to; ``client.workers.resume(cp)`` continues from it."""
        return self._get(lambda s: s.checkpoint())

    def __iter__(self) -> Iterator[Event]:
        return _Blocking(self._loop, self._stream.__aiter__)

    def __next__(self) -> Event:
        item = self._loop.call(self._anext)
        if item is _END:
            raise StopIteration
        return item

    async def _anext(self) -> Event:
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            return _END  # type: ignore[no-any-return]

    def events(self, *, reconnects: bool = False) -> Iterator[Event | Reconnected]:
        """The events; with ``reconnects=True`` a :class:`Reconnected` marks each resume."""
        return _Blocking(self._loop, lambda: self._stream.events(reconnects=reconnects))

    def text_deltas(self) -> Iterator[str]:
        """Only the answer's text, piece by piece; raises :class:`WorkerFailedError`
        after the last piece when the worker failed."""
        return _Blocking(self._loop, self._stream.text_deltas)

    def snapshots(self, min_interval: float | None = None) -> Iterator[Worker]:
        """The Worker after each event that changed it, coalesced to ``min_interval`` seconds."""
        return _Blocking(self._loop, lambda: self._stream.snapshots(min_interval))

    def get_final_worker(self) -> Worker:
        """Read to the end; the whole Worker (raises as :meth:`WorkerStream.get_final_worker`)."""
        return self._loop.call(self._stream.get_final_worker)

    def close(self) -> None:
        """Stop the stream and release its response. Idempotent."""
        if not self._loop.closed:
            self._loop.call(self._stream.aclose)

    def __enter__(self) -> SyncWorkerStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self._stream).replace("<WorkerStream", "<SyncWorkerStream", 1)


class SyncFileDownload:
    """A file's bytes, chunk by chunk (``for chunk in download``), or whole (``read()``)."""

    def __init__(self, client: SyncAPIClient, download: FileDownload) -> None:
        self._client = client
        self._download = download

    def __iter__(self) -> Iterator[bytes]:
        return _Blocking(self._client._loop, lambda: self._download)

    def read(self) -> bytes:
        """The whole file."""
        return self._client._loop.call(self._download.read)

    def close(self) -> None:
        if not self._client._loop.closed:
            self._client._loop.call(self._download.aclose)

    def __enter__(self) -> SyncFileDownload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SyncAPIClient:
    """The sync client's core, under every sync resource: calls run on ``_loop``."""

    _loop: LoopThread

    def _call(self, func: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        return self._loop.call(functools.partial(func, *args, **kwargs))

    def _stream(self, opened: WorkerStream | Worker) -> SyncWorkerStream | Worker:
        return SyncWorkerStream(self, opened) if isinstance(opened, WorkerStream) else opened

    def _iterate(
        self, make: Callable[[], AsyncIterator[T]], *, enter: bool = False
    ) -> _Blocking[T]:
        """A sync iterator (and context manager) over an async one made on the loop;
        ``enter``: it is an async context manager too, entered first. (A new
        async iterator of the resource, such as ``watch``, is wrapped so.)"""
        return _Blocking(self._loop, make, enter=enter)


class _HostedWatch:
    """A watch driven from sync code: entered, iterated and left by one task of the loop
    (a task group is left by the task that entered it), one item each time one is asked
    for, so that a snapshot read meanwhile is the item's."""

    def __init__(self, loop: LoopThread, watch: Watch) -> None:
        self._loop = loop
        self._watch = watch
        self._asks, asked = anyio.create_memory_object_stream[None](0)
        answers, self._answers = anyio.create_memory_object_stream[WatchEvent](0)
        self._host = asyncio.get_running_loop().create_task(self._run(asked, answers))

    async def _run(
        self,
        asked: anyio.abc.ObjectReceiveStream[None],
        answers: anyio.abc.ObjectSendStream[WatchEvent],
    ) -> None:
        async with asked, answers, self._watch as watch:
            async for _ in asked:
                item = await anext(watch, None)
                if item is None:
                    return
                await answers.send(item)

    async def __aenter__(self) -> _HostedWatch:
        return self

    def __aiter__(self) -> _HostedWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        try:
            await self._asks.send(None)
            item = await self._answers.receive()
        except (anyio.BrokenResourceError, anyio.EndOfStream):
            await self._host  # the watch's own error, if it failed
            raise StopAsyncIteration from None
        return _SyncItem(self._loop, item)

    async def __aexit__(self, *exc_info: object) -> None:
        host = self._host
        host.cancel()
        try:
            await host  # it leaves the watch: every connection closed
        except asyncio.CancelledError:
            if not host.cancelled():
                raise  # this call was cancelled itself
        except Exception:
            pass  # the watch's error: raised by __anext__ already, or nobody was asking
        self._asks.close()
        self._answers.close()


class _SyncItem(WatchEvent):
    """A watch's item in sync code: its snapshot is folded on the loop, when read."""

    __slots__ = ("_item", "_loop")

    def __init__(self, loop: LoopThread, item: WatchEvent) -> None:
        self.worker_id = item.worker_id
        self.event = item.event
        self.error = item.error
        self.task_id = item.task_id
        self.trigger = item.trigger
        self._item = item
        self._loop = loop

    @property
    def snapshot(self) -> Worker:
        item = self._item

        async def get() -> Worker:
            return item.snapshot

        return self._loop.call(get)
