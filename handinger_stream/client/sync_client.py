"""Handinger, the sync client: the async client, driven from a private thread.

One implementation: every call runs the :class:`~handinger_stream.AsyncHandinger`
code on an asyncio event loop in a daemon thread of this client's own. The
calling thread waits for the answer; it may be a plain script, a worker
thread, or a thread whose own event loop is running (a notebook): that loop
is blocked while it waits, the client's loop is not, so nothing deadlocks.
The thread starts on first use and ends with :meth:`Handinger.close` (or the
``with`` block, or when the client is garbage collected, or at exit),
closing every connection first.

>>> with Handinger(base_url="http://127.0.0.1:8787") as client:  # doctest: +SKIP
...     stream = client.workers.create(input="Hi", stream=True)
...     for text in stream.text_deltas():
...         print(text, end="", flush=True)
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

import aiohttp
import anyio

from ..errors import HandingerError, InvalidRequestError
from ..protocol.sse import DEFAULT_MAX_EVENT_BYTES
from ..types.events import Event, Reconnected
from ..types.worker import Budget, Worker
from .async_client import AsyncHandinger, FileDownload, Files
from .stream import Checkpoint, OnDecodeError, WorkerStream
from .transport import TransportName
from .watch import Watch, WatchEvent

if TYPE_CHECKING:
    from .telemetry import Telemetry

__all__ = ["Handinger", "SyncFileDownload", "SyncWorkerStream", "SyncWorkers"]

T = TypeVar("T")
Headers = Mapping[str, str] | None
_END: Any = object()
THREAD_NAME = "handinger-sync"


class _LoopThread:
    """An asyncio event loop in a daemon thread, and a way to run coroutines on it.

    Started on first use; :meth:`close` runs a last coroutine (closing the
    connections), ends the loop as ``asyncio.run`` does (remaining tasks
    cancelled, async generators and worker threads finished) and joins the
    thread. A daemon thread, so a client nobody closed never holds up exit.

    Calls are handed over with ``asyncio.run_coroutine_threadsafe``: what
    anyio's blocking portal does, with less bookkeeping (measured here at half
    its cost per call, which a sync ``for`` over a stream pays per event).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.closed = False

    def _get(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self.closed:
                raise HandingerError("this Handinger client is closed: create a new one")
            if self._loop is None or self._pid != os.getpid():
                # After a fork (a Celery or gunicorn worker) the parent's thread is
                # not in this process: start one of our own.
                self._start()
            assert self._loop is not None
            return self._loop

    def _start(self) -> None:
        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop_event = asyncio.Event()
            ready.set()
            await self._stop_event.wait()

        thread = threading.Thread(target=asyncio.run, args=(main(),), name=THREAD_NAME, daemon=True)
        thread.start()
        ready.wait()
        self._thread, self._pid = thread, os.getpid()

    def call(self, func: Callable[[], Awaitable[T]]) -> T:
        """Run ``func()`` on the loop; wait for and return its result (or raise its error)."""
        if self.in_loop_thread():
            raise RuntimeError("a Handinger call cannot wait on its own event loop's thread")
        loop = self._get()
        future = asyncio.run_coroutine_threadsafe(_await(func), loop)
        try:
            return future.result()
        except BaseException:
            # Interrupted while waiting (Ctrl-C): stop the task too, not just the wait.
            future.cancel()
            raise

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def close(self, last: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run ``last()`` on the loop, end the loop, and join the thread. Idempotent."""
        with self._lock:
            self.closed = True
            loop, stop, thread, pid = self._loop, self._stop_event, self._thread, self._pid
            self._loop = self._stop_event = self._thread = None
        if loop is None or stop is None or thread is None or pid != os.getpid():
            return
        if threading.current_thread() is thread:
            # Collected on the loop's own thread: it cannot wait for itself.
            threading.Thread(target=_end, args=(loop, stop, thread, last)).start()
            return
        _end(loop, stop, thread, last)


async def _await(func: Callable[[], Awaitable[T]]) -> T:
    return await func()


def _end(
    loop: asyncio.AbstractEventLoop,
    stop: asyncio.Event,
    thread: threading.Thread,
    last: Callable[[], Awaitable[None]] | None,
) -> None:
    try:
        if last is not None:
            asyncio.run_coroutine_threadsafe(_await(last), loop).result()
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join()


class _Blocking(Generic[T]):
    """A sync iterator over an async one that lives on the client's loop.

    ``make`` builds the async iterator, on the loop, at the first ``next()``;
    with ``enter``, it is an async context manager, entered first and exited
    at the end. Leaving a ``for`` early drops this object, which closes the
    async iterator (and so its response) before returning.
    """

    def __init__(
        self, loop: _LoopThread, make: Callable[[], AsyncIterator[T]], *, enter: bool = False
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

    def __init__(self, client: Handinger, stream: WorkerStream) -> None:
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

    def __init__(self, client: Handinger, download: FileDownload) -> None:
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


class Handinger:
    """The Handinger Workers API client, for sync code.

    The options are :class:`AsyncHandinger`'s. ``http_client`` may be an
    ``httpx.AsyncClient`` (it is used on this client's own loop); an
    ``aiohttp.ClientSession`` belongs to another loop and is refused.

    >>> client = Handinger(api_key="sk-secret", base_url="http://127.0.0.1:8787")
    >>> "sk-secret" in repr(client)
    False
    >>> client.close()
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        http_client: Any = None,
        *,
        transport: TransportName | None = None,
        on_decode_error: OnDecodeError = "raise",
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_reconnects: int = 5,
        first_event_timeout: float | None = 60.0,
        idle_timeout: float | None = 300.0,
        total_timeout: float | None = None,
        telemetry: bool | Telemetry | None = None,
    ) -> None:
        if isinstance(http_client, aiohttp.ClientSession):
            raise InvalidRequestError(
                "Handinger runs its own event loop, and an aiohttp.ClientSession belongs to "
                "the loop it was made on: pass an httpx.AsyncClient, or transport='aiohttp'"
            )
        self._async = AsyncHandinger(
            api_key,
            base_url,
            timeout,
            max_retries,
            http_client,
            transport=transport,
            on_decode_error=on_decode_error,
            max_event_bytes=max_event_bytes,
            max_reconnects=max_reconnects,
            first_event_timeout=first_event_timeout,
            idle_timeout=idle_timeout,
            total_timeout=total_timeout,
            telemetry=telemetry,
        )
        self._loop = _LoopThread()
        self._parent: Handinger | None = None
        # Closed when collected, or at exit, if nobody did: connections, loop, thread.
        self._finalizer: Callable[[], object] = weakref.finalize(
            self, self._loop.close, self._async.aclose
        )
        self.workers = SyncWorkers(self)

    @classmethod
    def _sharing(cls, parent: Handinger, client: AsyncHandinger) -> Handinger:
        copy = cls.__new__(cls)
        copy._async = client
        copy._loop = parent._loop
        copy._parent = parent  # keeps the shared thread alive while the copy is
        copy._finalizer = lambda: None
        copy.workers = SyncWorkers(copy)
        return copy

    @property
    def base_url(self) -> str:
        return self._async.base_url

    @property
    def async_client(self) -> AsyncHandinger:
        """The :class:`AsyncHandinger` underneath (use it only on this client's loop)."""
        return self._async

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncHandinger(", "Handinger(", 1)

    def with_options(self, **options: Any) -> Handinger:
        """A client with some options changed, sharing this one's thread and connections.

        >>> patient = Handinger(api_key="k").with_options(max_reconnects=20)  # doctest: +SKIP
        """
        return Handinger._sharing(self, self._async.with_options(**options))

    def close(self) -> None:
        """Close the connections, stop the loop and end its thread. Idempotent.

        A copy made by :meth:`with_options` leaves them to the client it came from.
        """
        self._finalizer()

    def __enter__(self) -> Handinger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

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


class SyncWorkers:
    """``client.workers`` for sync code: the same calls as :class:`Workers`, without ``await``."""

    def __init__(self, client: Handinger) -> None:
        self._client = client
        self._workers = client._async.workers

    @overload
    def create(
        self,
        *,
        input: str,
        budget: Budget | None = None,
        stream: Literal[False] = False,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker: ...

    @overload
    def create(
        self,
        *,
        input: str,
        budget: Budget | None = None,
        stream: Literal[True],
        files: Files = None,
        extra_headers: Headers = None,
    ) -> SyncWorkerStream: ...

    @overload
    def create(
        self,
        *,
        input: str,
        budget: Budget | None = None,
        stream: bool,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker | SyncWorkerStream: ...

    def create(
        self,
        *,
        input: str,
        budget: Budget | None = None,
        stream: bool = False,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker | SyncWorkerStream:
        """Create a worker and start it on ``input`` (``files`` uploaded first).

        >>> worker = client.workers.create(input="Hi")  # doctest: +SKIP
        """
        client = self._client
        return client._stream(
            client._call(
                self._workers.create,
                input=input,
                budget=budget,
                stream=stream,
                files=files,
                extra_headers=extra_headers,
            )
        )

    @overload
    def continue_(
        self,
        worker_id: str,
        *,
        input: str,
        budget: Budget | None = None,
        stream: Literal[False] = False,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker: ...

    @overload
    def continue_(
        self,
        worker_id: str,
        *,
        input: str,
        budget: Budget | None = None,
        stream: Literal[True],
        files: Files = None,
        extra_headers: Headers = None,
    ) -> SyncWorkerStream: ...

    @overload
    def continue_(
        self,
        worker_id: str,
        *,
        input: str,
        budget: Budget | None = None,
        stream: bool,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker | SyncWorkerStream: ...

    def continue_(
        self,
        worker_id: str,
        *,
        input: str,
        budget: Budget | None = None,
        stream: bool = False,
        files: Files = None,
        extra_headers: Headers = None,
    ) -> Worker | SyncWorkerStream:
        """Add a turn to a worker."""
        client = self._client
        return client._stream(
            client._call(
                self._workers.continue_,
                worker_id,
                input=input,
                budget=budget,
                stream=stream,
                files=files,
                extra_headers=extra_headers,
            )
        )

    @overload
    def retrieve(
        self, worker_id: str, *, stream: Literal[False] = False, extra_headers: Headers = None
    ) -> Worker: ...

    @overload
    def retrieve(
        self, worker_id: str, *, stream: Literal[True], extra_headers: Headers = None
    ) -> SyncWorkerStream: ...

    @overload
    def retrieve(
        self, worker_id: str, *, stream: bool, extra_headers: Headers = None
    ) -> Worker | SyncWorkerStream: ...

    def retrieve(
        self, worker_id: str, *, stream: bool = False, extra_headers: Headers = None
    ) -> Worker | SyncWorkerStream:
        """The worker's state; with ``stream=True`` every stored event, then live ones."""
        client = self._client
        return client._stream(
            client._call(
                self._workers.retrieve, worker_id, stream=stream, extra_headers=extra_headers
            )
        )

    def subscribe(
        self, worker_id: str, *, last_event_id: str | None = None, extra_headers: Headers = None
    ) -> SyncWorkerStream:
        """The worker's live updates (``GET /api/workers/{id}/stream``)."""
        client = self._client
        stream = client._call(
            self._workers.subscribe,
            worker_id,
            last_event_id=last_event_id,
            extra_headers=extra_headers,
        )
        return SyncWorkerStream(client, stream)

    def resume(self, checkpoint: Checkpoint, *, extra_headers: Headers = None) -> SyncWorkerStream:
        """Continue a stream from a :class:`Checkpoint`, in this process or another."""
        client = self._client
        stream = client._call(self._workers.resume, checkpoint, extra_headers=extra_headers)
        return SyncWorkerStream(client, stream)

    def retrieve_email(self, worker_id: str, *, extra_headers: Headers = None) -> str:
        """The worker's inbound email address."""
        return self._client._call(
            self._workers.retrieve_email, worker_id, extra_headers=extra_headers
        )

    def retrieve_file(
        self, worker_id: str, path: str, *, extra_headers: Headers = None
    ) -> SyncFileDownload:
        """A file in the worker's workspace: ``for chunk in ...`` or ``.read()``."""
        download = self._workers.retrieve_file(worker_id, path, extra_headers=extra_headers)
        return SyncFileDownload(self._client, download)

    def watch(
        self, workers: Iterable[str | SyncWorkerStream], *, max_concurrency: int | None = None
    ) -> _Blocking[WatchEvent]:
        """Many workers' events merged in arrival order, as ``workers.watch`` gives them.

        Leaving the ``for`` (or the ``with`` block) early closes every connection.

        >>> for item in client.workers.watch(ids, max_concurrency=10):  # doctest: +SKIP
        ...     print(item.worker_id, type(item.event).__name__, item.error)
        """
        given: Iterable[str | WorkerStream] = workers  # type: ignore[assignment]
        if not isinstance(workers, (str, bytes, SyncWorkerStream)):  # those, the watch refuses
            given = [w.async_stream if isinstance(w, SyncWorkerStream) else w for w in workers]
        watch = self._workers.watch(given, max_concurrency=max_concurrency)
        client = self._client
        return client._iterate(lambda: _HostedWatch(client._loop, watch), enter=True)


class _HostedWatch:
    """A watch driven from sync code: entered, iterated and left by one task of the loop
    (a task group is left by the task that entered it), one item each time one is asked
    for, so that a snapshot read meanwhile is the item's."""

    def __init__(self, loop: _LoopThread, watch: Watch) -> None:
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

    def __init__(self, loop: _LoopThread, item: WatchEvent) -> None:
        self.worker_id = item.worker_id
        self.event = item.event
        self.error = item.error
        self._item = item
        self._loop = loop

    @property
    def snapshot(self) -> Worker:
        item = self._item

        async def get() -> Worker:
            return item.snapshot

        return self._loop.call(get)
