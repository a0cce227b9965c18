"""Watch many workers at once: one merged stream of their events, in arrival order.

:class:`Watch` sits on top of the client. Each watched worker has a reader
task (owned by the watch's anyio task group) that only waits, with
:meth:`WorkerStream.ready() <handinger_stream.client.stream.WorkerStream.ready>`,
until its stream has decoded events, and then hands the worker to the
consumer. The consumer takes those events from the stream itself, so each
event is folded once, by its stream, and ``stream.snapshot`` is exact for
what was handed out. Each stream resumes by itself after a break. What the
consumer gets are :class:`WatchEvent` items or, with :meth:`Watch.completed`,
final Workers in the order they end.

Backpressure rather than a queue: a reader waits until the consumer has
taken what its stream decoded before it lets the stream read again. A slow
consumer therefore slows the reads (and TCP slows the server) while memory
per worker stays its snapshot plus the events of one read.

>>> async def follow(client, ids):  # doctest: +SKIP
...     async with client.workers.watch(ids, max_concurrency=50) as watch:
...         async for item in watch:
...             if item.error is not None:
...                 print(item.worker_id, "lost:", item.error)
...         return watch.workers
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Generic, Literal, Protocol, TypeVar

import anyio
from anyio.abc import TaskGroup

from ..errors import HandingerError, InvalidRequestError
from ..types.events import Event
from ..types.worker import Worker
from .stream import WorkerStream

__all__ = ["DEFAULT_BUFFER", "Watch", "WatchEvent"]

DEFAULT_BUFFER = 64
"""Events of one worker given in a row before another worker with events ready gets a turn."""

Stage = Literal["waiting", "open", "ended"]


class WatchEvent:
    """One item of a :class:`Watch`: an event of one worker, or why its stream was lost.

    ``event`` is the typed event and ``error`` is ``None``; or, once for a
    worker whose stream could not be read to its end (it could not be
    resumed, the worker does not exist, the key was refused), ``event`` is
    ``None`` and ``error`` is the exception. ``snapshot`` is the Worker
    folded so far (for an error item, the partial Worker).

    Like ``stream.snapshot``, ``snapshot`` is folded when you read it: the
    Worker through the last event the watch gave you for that worker. Read
    it while handling the item (or keep the Worker it returns): a later item
    of the same worker moves it on.

    >>> item = WatchEvent("w1", None, Worker(id="w1"))
    >>> item.worker_id, item.event, item.snapshot.status, item.error
    ('w1', None, 'pending', None)
    """

    __slots__ = ("_snapshot", "error", "event", "worker_id")

    def __init__(
        self,
        worker_id: str,
        event: Event | None,
        snapshot: Worker,
        error: HandingerError | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.event = event
        self.error = error
        self._snapshot = snapshot

    @property
    def snapshot(self) -> Worker:
        return self._snapshot

    def __repr__(self) -> str:
        what = type(self.event).__name__ if self.event is not None else f"error={self.error!r}"
        return f"<WatchEvent {self.worker_id} {what}>"


class Followed(Protocol):
    """A worker being followed, whose snapshot is folded as its items are handed out."""

    @property
    def id(self) -> str: ...

    @property
    def snapshot(self) -> Worker: ...


_F = TypeVar("_F", bound=Followed)


class LiveEvent(WatchEvent, Generic[_F]):
    """An item of a followed worker: its snapshot is the worker's, read when asked for.

    (Also the items of the relay's ``FleetWatch``.)
    """

    __slots__ = ("_w",)

    def __init__(self, w: _F, event: Event | None, error: HandingerError | None = None) -> None:
        self.worker_id = w.id
        self.event = event
        self.error = error
        self._w = w

    @property
    def snapshot(self) -> Worker:
        return self._w.snapshot


class SnapshotsView(Mapping[str, Worker]):
    """``watch.workers``: id → the latest snapshot, read when looked up."""

    __slots__ = ("_followed",)

    def __init__(self, followed: Mapping[str, Followed]) -> None:
        self._followed = followed

    def __getitem__(self, worker_id: str) -> Worker:
        return self._followed[worker_id].snapshot

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self._followed  # without folding a snapshot to answer

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._followed))

    def __len__(self) -> int:
        return len(self._followed)


class _End:
    """Internal: a worker's stream has ended (after all of its items)."""

    __slots__ = ("_w",)

    def __init__(self, w: _Watched) -> None:
        self._w = w


class _Watched:
    """One watched worker: its stream, where it stands, and what is ready to be taken."""

    __slots__ = (
        "drained",
        "error",
        "events",
        "finished",
        "given",
        "id",
        "ready",
        "removed",
        "scope",
        "stage",
        "stream",
    )

    def __init__(self, worker_id: str, stream: WorkerStream | None) -> None:
        self.id = worker_id
        self.stream = stream
        self.events: AsyncIterator[Event] | None = None  # the consumer's iterator over it
        self.given = stream is not None  # opened by the caller, not by the watch
        self.stage: Stage = "waiting"
        self.ready = 0  # events the consumer may take from the stream without waiting
        self.drained: anyio.Event | None = None  # set when the consumer took them all
        self.scope: anyio.CancelScope | None = None
        self.removed = False
        self.finished = False  # the consumer has taken its end
        self.error: HandingerError | None = None

    @property
    def snapshot(self) -> Worker:
        stream = self.stream
        # The stream's own fold: exact for what the consumer took, since only it takes.
        return stream.snapshot if stream is not None else Worker(id=self.id)

    def hand_back(self) -> None:
        """Nothing more is to be taken of what the reader handed over: let it read again."""
        self.ready = 0
        drained, self.drained = self.drained, None
        if drained is not None:
            drained.set()


class Watch:
    """Many workers' events, merged in arrival order; see ``docs/monitoring.md``.

    Made by ``client.workers.watch(workers, max_concurrency=None)``; use it
    as an async context manager, then iterate it (or :meth:`completed`).
    Leaving the ``async with`` block stops every read and closes every
    connection; the workers themselves go on.

    >>> async def main(client, ids):  # doctest: +SKIP
    ...     async with client.workers.watch(ids) as watch:
    ...         async for worker in watch.completed():
    ...             print(worker.id, worker.status, worker.failed)
    """

    def __init__(
        self,
        open_stream: Callable[[str], Awaitable[WorkerStream]],
        workers: Iterable[str | WorkerStream],
        *,
        max_concurrency: int | None = None,
        buffer: int = DEFAULT_BUFFER,
    ) -> None:
        if isinstance(workers, (str, bytes, WorkerStream)):
            raise InvalidRequestError(
                "workers must be an iterable of worker ids and/or WorkerStreams, "
                f"not a single {type(workers).__name__}"
            )
        if max_concurrency is not None and (
            not isinstance(max_concurrency, int) or max_concurrency < 1
        ):
            raise InvalidRequestError(
                f"max_concurrency must be None or a positive int; got {max_concurrency!r}"
            )
        if not isinstance(buffer, int) or buffer < 1:
            raise InvalidRequestError(f"buffer must be a positive int; got {buffer!r}")
        self._open_stream = open_stream  # a worker's replay stream, by its id
        self._limit = max_concurrency
        self._buffer = buffer
        self._records: dict[str, _Watched] = {}
        # Workers with events ready (in the order their reads came), ready-made error
        # items, and ends: at most one of each per worker.
        self._queue: deque[_Watched | LiveEvent[_Watched] | _End] = deque()
        self._current: _Watched | None = None  # the worker whose events are being taken
        self._events: AsyncIterator[Event] | None = None  # ... from its stream, by this
        self._turn = 0  # how many more of its events before the next worker's turn
        self._waiting: deque[_Watched] = deque()  # ids waiting for a connection slot
        self._open = 0  # connections being read: given streams and opened ids
        self._unfinished = 0  # workers whose end the consumer has not taken yet
        self._more: anyio.Event | None = None  # set when the queue gets an item
        self._done: list[str] = []
        self._orphans: list[WorkerStream] = []
        self._tg: TaskGroup | None = None
        self._phase: Literal["new", "open", "closed"] = "new"
        for worker in workers:
            self._register(worker)

    # -- the watched set ---------------------------------------------------

    @property
    def workers(self) -> Mapping[str, Worker]:
        """Every watched worker's latest snapshot, by id (in the order they were added)."""
        return SnapshotsView(self._records)

    @property
    def errors(self) -> Mapping[str, HandingerError]:
        """Why a worker's stream could not be read to its end, for those where it could not."""
        return {r.id: r.error for r in self._records.values() if r.error is not None}

    @property
    def waiting(self) -> list[str]:
        """Ids waiting for a connection slot (``max_concurrency``), in the order they will go."""
        return [r.id for r in self._waiting if not r.removed]

    @property
    def done(self) -> list[str]:
        """Ids whose stream has ended, in the order the consumer saw them end."""
        return [i for i in self._done if i in self._records]

    def stage(self, worker_id: str) -> Stage:
        """``"waiting"`` for a slot, ``"open"`` (being read) or ``"ended"``."""
        try:
            return self._records[worker_id].stage
        except KeyError:
            raise InvalidRequestError(f"not watching worker {worker_id!r}") from None

    def add(self, worker: str | WorkerStream) -> None:
        """Watch one more worker: an id (read from its first event) or an open stream.

        >>> watch.add("wrk_123")  # doctest: +SKIP
        """
        if self._phase == "closed":
            raise RuntimeError("this watch is closed")
        w = self._register(worker)
        if self._phase == "open":
            self._schedule(w)

    def remove(self, worker_id: str) -> None:
        """Stop watching a worker: its connection closes and what was ready of it is dropped.

        The worker itself goes on; nothing more of it is yielded.
        """
        w = self._records.pop(worker_id, None)
        if w is None:
            raise InvalidRequestError(f"not watching worker {worker_id!r}")
        w.removed = True
        if not w.finished:
            self._unfinished -= 1
        if self._current is w:
            self._current = None
        if w.scope is not None:
            w.scope.cancel()  # its reader closes the stream
        elif w.stream is not None and self._phase == "new":
            self._orphans.append(w.stream)  # a stream handed over: closed on exit
        self._wake()

    def _register(self, worker: str | WorkerStream) -> _Watched:
        if isinstance(worker, WorkerStream):
            worker_id, stream = worker.worker_id, worker
            if not worker_id:
                raise InvalidRequestError(
                    "this stream's worker id is not known yet, so it cannot be watched"
                )
        elif isinstance(worker, str) and worker:
            worker_id, stream = worker, None
        else:
            raise InvalidRequestError(
                f"a worker to watch is a non-empty id or a WorkerStream; got {worker!r}"
            )
        if worker_id in self._records:
            raise InvalidRequestError(f"worker {worker_id!r} is watched already")
        w = _Watched(worker_id, stream)
        self._records[worker_id] = w
        self._unfinished += 1
        return w

    # -- readers -------------------------------------------------------------

    def _schedule(self, w: _Watched) -> None:
        """Read ``w`` now if a slot is free (or it is open already); else queue it."""
        assert self._tg is not None
        if w.given or self._limit is None or self._open < self._limit:
            self._open += 1
            w.stage = "open"
            self._tg.start_soon(self._read, w, name=f"watch {w.id}")
        else:
            self._waiting.append(w)

    def _release(self) -> None:
        """A reader is done: its slot goes to the next worker waiting for one."""
        self._open -= 1
        if self._phase != "open":
            return
        while self._waiting and (self._limit is None or self._open < self._limit):
            w = self._waiting.popleft()
            if not w.removed:
                self._schedule(w)

    async def _read(self, w: _Watched) -> None:
        try:
            with anyio.CancelScope() as w.scope:
                if w.removed:
                    return
                try:
                    if w.stream is None:
                        w.stream = await self._open_stream(w.id)
                    await self._pump(w, w.stream)
                except HandingerError as exc:
                    w.error = exc
                    self._push(LiveEvent(w, None, exc))
        finally:
            stream = w.stream  # kept: its snapshot is the worker's
            if stream is not None:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
            w.stage = "ended"
            self._release()
            if not w.removed and self._phase == "open":
                self._push(_End(w))

    async def _pump(self, w: _Watched, stream: WorkerStream) -> None:
        """Wait for decoded events, hand the worker to the consumer, wait until it took them.

        Only the consumer takes events from the stream, and never while this
        waits in ``ready()``: one coroutine reads the stream at a time.
        """
        queue = self._queue
        w.events = stream.__aiter__()
        while n := await stream.ready():
            w.ready = n
            drained = w.drained = anyio.Event()
            queue.append(w)
            self._wake()
            await drained.wait()

    def _push(self, item: LiveEvent[_Watched] | _End) -> None:
        self._queue.append(item)
        self._wake()

    def _wake(self) -> None:
        more = self._more
        if more is not None:
            self._more = None
            more.set()

    # -- consuming -------------------------------------------------------------

    async def _take(self) -> LiveEvent[_Watched] | _End | None:
        """The next item for the consumer; ``None`` when every worker has ended."""
        queue = self._queue
        while True:
            w = self._current
            if w is not None:
                if self._turn:
                    self._turn -= 1
                    w.ready -= 1
                    assert self._events is not None
                    try:
                        # Ready: it returns at once, without reading.
                        event = await self._events.__anext__()
                    except StopAsyncIteration:  # a bad event skipped at the very end
                        event = None
                    except HandingerError as exc:  # a bad event (its stream closed itself)
                        self._current = None
                        w.error = exc
                        w.hand_back()
                        return LiveEvent(w, None, exc)
                    if not w.ready or event is None:
                        self._current = None
                        w.hand_back()
                    elif not self._turn:
                        self._current = None
                        queue.append(w)  # the rest after the others' turn
                    if event is not None:
                        return LiveEvent(w, event)
                    continue
                self._current = None
            if queue:
                item = queue.popleft()
                if type(item) is _Watched:
                    if not item.removed:
                        self._current, self._events = item, item.events
                        self._turn = min(item.ready, self._buffer)
                    continue
                w = item._w  # type: ignore[union-attr]
                if w.removed:
                    continue
                if type(item) is _End:
                    w.finished = True
                    self._unfinished -= 1
                    self._done.append(w.id)
                return item  # type: ignore[return-value]
            if self._phase == "new":
                raise RuntimeError(
                    "enter the watch first: 'async with client.workers.watch(...) as watch:'"
                )
            if self._phase == "closed" or self._unfinished <= 0:
                return None
            more = self._more
            if more is None:
                more = self._more = anyio.Event()
            await more.wait()

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchEvent:
        while True:
            item = await self._take()
            if item is None:
                raise StopAsyncIteration
            if type(item) is LiveEvent:
                return item

    def events(self, *, ends: bool = False) -> AsyncIterator[WatchEvent]:
        """The items, as iterating the watch gives them; with ``ends=True`` one more per worker.

        With ``ends``, each worker's last item has ``event=None``: its ``error``
        is ``None`` when the stream ended (``snapshot`` is then the final
        Worker), or the exception when it was lost (the one error item).

        >>> async for item in watch.events(ends=True):  # doctest: +SKIP
        ...     if item.event is None:
        ...         print(item.worker_id, "ended", item.snapshot.status, item.error)
        """
        return _Items(self) if ends else self

    def completed(self) -> AsyncIterator[Worker]:
        """The final Worker of each watched worker, in the order they end.

        Use it instead of iterating the watch. A worker that failed comes
        with ``worker.failed``; one whose stream was lost comes as the
        partial Worker, with the reason in ``watch.errors``.

        >>> async for worker in watch.completed():  # doctest: +SKIP
        ...     print(worker.id, worker.status)
        """
        return _Completed(self)

    # -- lifetime ----------------------------------------------------------------

    async def __aenter__(self) -> Watch:
        if self._phase != "new":
            raise RuntimeError("a watch can be entered only once")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._phase = "open"
        for w in list(self._records.values()):
            self._schedule(w)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._phase = "closed"
        self._current = None
        self._wake()
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                tg.cancel_scope.cancel()
                # The body's own exception goes on as it is, not wrapped in a group;
                # a reader's unexpected one comes out of the task group.
                await tg.__aexit__(None, None, None)
        finally:
            # Streams handed to us whose reader never ran are ours to close too.
            with anyio.CancelScope(shield=True):
                for w in self._records.values():
                    if w.stream is not None:
                        await w.stream.aclose()
                for stream in self._orphans:
                    await stream.aclose()

    def __repr__(self) -> str:
        return (
            f"<Watch {len(self._records)} workers, {self._open} open, "
            f"{len(self._waiting)} waiting, {self._phase}>"
        )


class _Items:
    """``watch.events(ends=True)``: the items, and an end item for each worker."""

    __slots__ = ("_watch",)

    def __init__(self, watch: Watch) -> None:
        self._watch = watch

    def __aiter__(self) -> _Items:
        return self

    async def __anext__(self) -> WatchEvent:
        while True:
            item = await self._watch._take()
            if item is None:
                raise StopAsyncIteration
            if type(item) is LiveEvent:
                return item
            w = item._w
            if w.error is None:  # a lost stream's error item was its end already
                return LiveEvent(w, None)


class _Completed:
    """``watch.completed()``: final Workers as their streams end."""

    __slots__ = ("_watch",)

    def __init__(self, watch: Watch) -> None:
        self._watch = watch

    def __aiter__(self) -> _Completed:
        return self

    async def __anext__(self) -> Worker:
        while True:
            item = await self._watch._take()
            if item is None:
                raise StopAsyncIteration
            if type(item) is _End:
                return item._w.snapshot
