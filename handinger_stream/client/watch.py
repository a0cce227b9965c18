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

Today's API (``docs/monitoring.md``): a worker template's replay stream holds
every task's turns, each opened by a snapshot and a ``start`` chunk whose
metadata name the task; the watch reads the task from there, so each item
says which task it belongs to (``item.task_id``). A task is watched through
its template's stream, showing only its own turns. With ``follow=True`` a
template's stream is opened again when it closes, after the last event seen,
so that tasks started later (by a schedule, an e-mail, the web UI, the API)
show up as they start.

Backpressure rather than a queue: a reader reads at most one read ahead of
the consumer (while the consumer takes one read's events, the stream reads
the next, then waits until the first were taken). A slow consumer therefore
slows the reads (and TCP slows the server) while memory per worker stays its
snapshot plus the events of two reads.

>>> async def follow(client, ids):  # doctest: +SKIP
...     async with client.workers.watch(ids, max_concurrency=50) as watch:
...         async for item in watch:
...             if item.error is not None:
...                 print(item.worker_id, "lost:", item.error)
...         return watch.workers
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Generic, Literal, Protocol, TypeAlias, TypeVar

import anyio
import sniffio
from anyio.abc import TaskGroup

from ..errors import APIStatusError, HandingerError, InvalidRequestError, NotFoundError
from ..protocol.cursor import ReplayCursor
from ..protocol.handover import OPEN, Handover
from ..protocol.retry import RetryPolicy
from ..types.events import Event, StartEvent, WorkerSnapshotEvent
from ..types.task import Task, TaskTrigger
from ..types.worker import Worker
from .stream import WorkerStream

__all__ = [
    "DEFAULT_BUFFER",
    "FOLLOW_FIRST_WAIT",
    "FOLLOW_MAX_WAIT",
    "Watch",
    "WatchEvent",
    "task_of",
]

DEFAULT_BUFFER = 64
"""Events of one worker given in a row before another worker with events ready gets a turn."""

FOLLOW_FIRST_WAIT = 0.25
"""With ``follow=True``: seconds before a closed template stream is opened again ..."""
FOLLOW_MAX_WAIT = 5.0
"""... doubled each time it closes with nothing new, up to this (a new task shows within it)."""
TRIGGER_LOOKUP_TIMEOUT = 5.0  # seconds for a task's trigger; past that it stays unknown

Stage = Literal["waiting", "open", "ended"]
# What a watched id names: a worker (or a template: the same route answers both), a task
# (given as one, with tasks=), or not known yet (a worker first, then a task on a 404).
_Kind = Literal["worker", "task", "either"]


# A one-shot gate a task waits at until another opens it: a reader until the consumer
# took its events, the consumer until a reader handed some over. Up to once per read
# of every watched stream, so under asyncio it is a bare future, a fraction of the cost
# of an anyio.Event (made through the backend lookup, with a waiter list of its own);
# cancelling the task that waits cancels the future. Elsewhere an anyio.Event.
_Gate: TypeAlias = "asyncio.Future[None] | anyio.Event"


def _open(gate: _Gate) -> None:
    if not isinstance(gate, asyncio.Future):
        gate.set()
    elif not gate.done():  # (cancelled when the task waiting at it was)
        gate.set_result(None)


def _passed(gate: _Gate) -> Awaitable[object]:
    """What to await to wait at ``gate``."""
    return gate if isinstance(gate, asyncio.Future) else gate.wait()


class OpenStream(Protocol):
    """Opens a worker's replay stream, from its start or after ``last_event_id``."""

    def __call__(
        self, worker_id: str, last_event_id: str | None = None
    ) -> Awaitable[WorkerStream]: ...


def task_of(event: Event) -> str | None:
    """The task an event opens a turn of, when it says (a snapshot's or a ``start``'s metadata).

    >>> task_of(StartEvent(message_metadata={"taskId": "tsk_1"}))
    'tsk_1'
    >>> task_of(StartEvent()) is None
    True
    """
    kind = type(event)
    if kind is WorkerSnapshotEvent:
        metadata: object = event.worker.metadata  # type: ignore[union-attr]
    elif kind is StartEvent:
        metadata = event.message_metadata  # type: ignore[union-attr]
    else:
        return None
    task_id = metadata.get("taskId") if isinstance(metadata, dict) else None
    return task_id if isinstance(task_id, str) and task_id else None


class WatchEvent:
    """One item of a :class:`Watch`: an event of one worker, or why its stream was lost.

    ``event`` is the typed event and ``error`` is ``None``; or, once for a
    worker whose stream could not be read to its end (it could not be
    resumed, the worker does not exist, the key was refused), ``event`` is
    ``None`` and ``error`` is the exception. ``snapshot`` is the Worker
    folded so far (for an error item, the partial Worker).

    Today's API: ``worker_id`` is the worker template's id, ``task_id`` the
    task the event belongs to and ``trigger`` what started it (``"api"``,
    ``"email"``, ``"schedule"``, ``"ui"``), each ``None`` when not known (a
    seed-generation worker has no tasks).

    Like ``stream.snapshot``, ``snapshot`` is folded when you read it: the
    Worker through the last event the watch gave you for that worker. Read
    it while handling the item (or keep the Worker it returns): a later item
    of the same worker moves it on.

    >>> item = WatchEvent("w1", None, Worker(id="w1"))
    >>> item.worker_id, item.event, item.snapshot.status, item.error, item.task_id
    ('w1', None, 'pending', None, None)
    """

    __slots__ = ("_snapshot", "error", "event", "task_id", "trigger", "worker_id")

    def __init__(
        self,
        worker_id: str,
        event: Event | None,
        snapshot: Worker,
        error: HandingerError | None = None,
        *,
        task_id: str | None = None,
        trigger: TaskTrigger | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.event = event
        self.error = error
        self.task_id = task_id
        self.trigger = trigger
        self._snapshot = snapshot

    @property
    def snapshot(self) -> Worker:
        return self._snapshot

    def __repr__(self) -> str:
        what = type(self.event).__name__ if self.event is not None else f"error={self.error!r}"
        task = f" task {self.task_id}" if self.task_id is not None else ""
        return f"<WatchEvent {self.worker_id}{task} {what}>"


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

    def __init__(
        self,
        w: _F,
        event: Event | None,
        error: HandingerError | None = None,
        *,
        worker_id: str | None = None,
        task_id: str | None = None,
        trigger: TaskTrigger | None = None,
    ) -> None:
        self.worker_id = w.id if worker_id is None else worker_id
        self.event = event
        self.error = error
        self.task_id = task_id
        self.trigger = trigger
        self._w = w

    @property
    def snapshot(self) -> Worker:
        return self._w.snapshot


# LiveEvent's slots filled in place: a third of the cost of its __init__ (keywords),
# once per event on the watch's hot path.
_new_item = LiveEvent.__new__


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


class TasksView(Mapping[str, Worker]):
    """``watch.tasks``: task id → that task's latest Worker, read when looked up."""

    __slots__ = ("_owners",)

    def __init__(self, owners: Mapping[str, _Watched]) -> None:
        self._owners = owners

    def __getitem__(self, task_id: str) -> Worker:
        return self._owners[task_id].task_snapshot(task_id)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._owners

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._owners))

    def __len__(self) -> int:
        return len(self._owners)


class _Watched:
    """One watched id (a worker, a template or a task): its stream, where it stands, what
    is ready to be taken, and which task its stream is playing."""

    __slots__ = (
        "drained",
        "error",
        "events",
        "finished",
        "frozen",
        "given",
        "handover",
        "id",
        "kind",
        "later",
        "only",
        "playing",
        "ready",
        "removed",
        "replay",
        "scope",
        "stage",
        "stream",
        "triggers",
        "turns",
        "worker_id",
    )

    def __init__(self, watched_id: str, stream: WorkerStream | None, kind: _Kind) -> None:
        self.id = watched_id  # the key of watch.workers: what the caller gave
        self.worker_id = stream.worker_id if stream is not None else watched_id
        self.kind = kind
        self.stream = stream
        self.events: AsyncIterator[Event] | None = None  # the consumer's iterator over it
        # ... and the stream's core, whose ready events the consumer takes by index.
        self.handover: Handover | None = None
        self.given = stream is not None  # opened by the caller, not by the watch
        self.stage: Stage = "waiting"
        self.ready = 0  # events the consumer may take from the stream without waiting
        # ... and those of the read after theirs (read ahead meanwhile), theirs next.
        self.later = 0
        # Opened when the consumer took the ``ready`` ones: the reader waits at it.
        self.drained: _Gate | None = None
        self.scope: anyio.CancelScope | None = None
        self.removed = False
        self.finished = False  # the consumer has taken its end
        self.error: HandingerError | None = None
        # Today's API: a template's stream plays its tasks' turns one after another.
        self.only: str | None = None  # a watched task: only its turns are handed out
        self.playing: str | None = None  # the task whose turn the stream is in
        self.frozen: dict[str, Worker] = {}  # each task's Worker when its stream moved on
        self.triggers: dict[str, TaskTrigger | None] = {}  # None: looked up, not known
        self.turns: set[str] = set()  # message ids of the turns its streams began
        # A reopened stream: what it repeats of the last one, should the server ignore
        # Last-Event-ID and replay from the start, is skipped.
        self.replay: ReplayCursor | None = None

    @property
    def snapshot(self) -> Worker:
        if self.only is not None:
            return self.task_snapshot(self.only)
        stream = self.stream
        # The stream's own fold: exact for what the consumer took, since only it takes.
        return stream.snapshot if stream is not None else Worker(id=self.worker_id)

    def task_snapshot(self, task_id: str) -> Worker:
        """The task's Worker: folded live while its turn plays, else as its stream left it."""
        stream = self.stream
        if stream is not None and self.playing == task_id:
            return stream.snapshot
        return self.frozen.get(task_id) or Worker(id=self.worker_id)

    def note(self, event: Event) -> bool:
        """Follow which task ``event`` belongs to; whether it is to be handed out."""
        replay = self.replay
        if replay is not None and not replay.admit_id(event.event_id):
            return False  # repeated by a reopened stream
        kind = type(event)
        if kind is StartEvent:
            message_id = event.message_id  # type: ignore[union-attr]
            if message_id is not None:
                self.turns.add(message_id)
        task_id = task_of(event)
        if task_id is not None:
            if kind is WorkerSnapshotEvent:
                self.frozen[task_id] = event.worker  # type: ignore[union-attr]
            self.playing = task_id
        return self.only is None or self.playing == self.only

    def reopening(self) -> str | None:
        """The stream closed and is to be opened again: keep what it folded; its last id."""
        stream = self.stream
        if stream is None:
            return None
        if self.playing is not None:
            self.frozen[self.playing] = stream.snapshot
        self.playing = None
        return stream.last_event_id

    def reopened(self, stream: WorkerStream, last_event_id: str | None) -> None:
        self.stream = stream
        self.replay = ReplayCursor.resuming_after(last_event_id) if last_event_id else None

    def hand_back(self) -> None:
        """The stream ended while ready (an error, or closed): nothing more is to be taken."""
        self.ready = self.later = 0
        drained, self.drained = self.drained, None
        if drained is not None:
            _open(drained)


class Watch:
    """Many workers' events, merged in arrival order; see ``docs/monitoring.md``.

    Made by ``client.workers.watch(workers, max_concurrency=None)``; use it
    as an async context manager, then iterate it (or :meth:`completed`).
    Leaving the ``async with`` block stops every read and closes every
    connection; the workers themselves go on.

    ``workers`` are worker ids (the seed's runs, or today's templates: one
    route answers both) and open streams; ``tasks`` are task ids. An id in
    ``workers`` that the API does not know as a worker is asked for as a
    task (one request more than naming it in ``tasks``). With ``follow``, a
    template's stream is opened again each time it closes, so that the watch
    goes on until it is left.

    >>> async def main(client, ids):  # doctest: +SKIP
    ...     async with client.workers.watch(ids) as watch:
    ...         async for worker in watch.completed():
    ...             print(worker.id, worker.status, worker.failed)
    """

    def __init__(
        self,
        open_stream: OpenStream,
        workers: Iterable[str | WorkerStream],
        *,
        max_concurrency: int | None = None,
        buffer: int = DEFAULT_BUFFER,
        tasks: Iterable[str] = (),
        find_task: Callable[[str], Awaitable[Task]] | None = None,
        follow: bool = False,
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
        if isinstance(tasks, (str, bytes)):
            raise InvalidRequestError(f"tasks must be an iterable of task ids, not {tasks!r}")
        self._open_stream = open_stream  # a worker's replay stream, by its id
        self._find_task = find_task  # a task, by its id (today's API)
        self._follow = follow
        self._task_owners: dict[str, _Watched] = {}  # each task seen: whose stream plays it
        self._limit = max_concurrency
        self._buffer = buffer
        self._records: dict[str, _Watched] = {}
        # Workers with events ready (in the order their reads came), ready-made error
        # items, and ends: at most one of each per worker.
        self._queue: deque[_Watched | LiveEvent[_Watched] | _End] = deque()
        self._current: _Watched | None = None  # the worker whose events are being taken
        self._gate: Callable[[], _Gate] = anyio.Event  # a bare future's maker under asyncio
        self._turn = 0  # how many more of its events before the next worker's turn
        self._waiting: deque[_Watched] = deque()  # ids waiting for a connection slot
        self._open = 0  # connections being read: given streams and opened ids
        self._unfinished = 0  # workers whose end the consumer has not taken yet
        self._more: _Gate | None = None  # opened when the queue gets an item
        self._done: list[str] = []
        self._orphans: list[WorkerStream] = []
        self._tg: TaskGroup | None = None
        self._phase: Literal["new", "open", "closed"] = "new"
        for worker in workers:
            self._register(worker)
        for task_id in tasks:
            self._register(task_id, "task")

    # -- the watched set ---------------------------------------------------

    @property
    def workers(self) -> Mapping[str, Worker]:
        """Every watched worker's latest snapshot, by id (in the order they were added)."""
        return SnapshotsView(self._records)

    @property
    def tasks(self) -> Mapping[str, Worker]:
        """Every task seen so far (today's API), by id: its latest Worker.

        >>> async with client.workers.watch([template_id]) as watch:  # doctest: +SKIP
        ...     async for item in watch:
        ...         print(item.task_id, item.trigger, watch.tasks[item.task_id].status)
        """
        return TasksView(self._task_owners)

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

    def add(self, worker: str | WorkerStream, *, task: bool = False) -> None:
        """Watch one more worker: an id (read from its first event) or an open stream;
        with ``task=True``, the id is a task's.

        >>> watch.add("wrk_123")  # doctest: +SKIP
        >>> watch.add("tsk_456", task=True)  # doctest: +SKIP
        """
        if self._phase == "closed":
            raise RuntimeError("this watch is closed")
        if task and not isinstance(worker, str):
            raise InvalidRequestError("a task to watch is its id")
        w = self._register(worker, "task" if task else "either")
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
        for task_id in [t for t, owner in self._task_owners.items() if owner is w]:
            del self._task_owners[task_id]
        if not w.finished:
            self._unfinished -= 1
        if self._current is w:
            self._current = None
        if w.scope is not None:
            w.scope.cancel()  # its reader closes the stream
        elif w.stream is not None and self._phase == "new":
            self._orphans.append(w.stream)  # a stream handed over: closed on exit
        self._wake()

    def _register(self, worker: str | WorkerStream, kind: _Kind = "either") -> _Watched:
        if isinstance(worker, WorkerStream):
            worker_id, stream = worker.worker_id, worker
            if not worker_id:
                raise InvalidRequestError(
                    "this stream's worker id is not known yet, so it cannot be watched"
                )
            kind = "worker"
        elif isinstance(worker, str) and worker:
            worker_id, stream = worker, None
        else:
            what = "task" if kind == "task" else "worker"
            raise InvalidRequestError(
                f"a {what} to watch is a non-empty id"
                + (" or a WorkerStream" if kind != "task" else "")
                + f"; got {worker!r}"
            )
        if worker_id in self._records:
            raise InvalidRequestError(f"{worker_id!r} is watched already")
        if kind == "task" and self._find_task is None:
            raise InvalidRequestError("this watch cannot look tasks up")
        w = _Watched(worker_id, stream, kind)
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
                        w.stream = await self._open_first(w)
                    await self._pump(w, w.stream)
                    if self._follow:
                        await self._follow_on(w)
                except HandingerError as exc:
                    w.error = exc
                    self._push(self._item(w, None, exc))
        finally:
            stream = w.stream  # kept: its snapshot is the worker's
            if stream is not None:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
            w.stage = "ended"
            self._release()
            if not w.removed and self._phase == "open":
                self._push(_End(w))

    async def _open_first(self, w: _Watched) -> WorkerStream:
        """The stream of what ``w`` names: a worker's (or template's) replay, or that of the
        template a task runs on. An id given as a worker is tried as one first: the API
        says which it is (a 404), where its form might mislead (ids are the server's, and
        client-chosen task ids have any form)."""
        if w.kind != "task":
            try:
                return await self._open_stream(w.id)
            except NotFoundError:
                if self._find_task is None:
                    raise
                try:
                    return await self._open_task(w)
                except APIStatusError:
                    pass  # no such task either (or no tasks: the seed's API): the 404 says so
                raise
        return await self._open_task(w)

    async def _open_task(self, w: _Watched) -> WorkerStream:
        assert self._find_task is not None
        task = await self._find_task(w.id)
        w.kind = "task"
        w.only = task.id
        w.worker_id = task.worker_id
        w.triggers[task.id] = task.triggered_by
        self._task_owners[task.id] = w
        return await self._open_stream(task.worker_id)

    async def _follow_on(self, w: _Watched) -> None:
        """``follow``: open a template's stream again each time it closes, after the last
        event seen, waiting longer (up to :data:`FOLLOW_MAX_WAIT`) while nothing is new.
        A seed worker's stream, which names no task, ends as it always did."""
        wait = FOLLOW_FIRST_WAIT
        policy = RetryPolicy()
        last: str | None = None
        # A template's stream names its tasks; an empty template's has no turn at all.
        while w.kind == "task" or w.playing is not None or w.frozen or not w.turns:
            stream = w.stream
            seen = len(w.turns)
            if stream is not None:
                last = w.reopening() or last  # a stream that brought nothing moves no id
                await stream.aclose()  # (again, after a failed reopen: it does nothing)
            await anyio.sleep(wait)
            try:
                reopened = await self._open_stream(w.worker_id, last)
            except HandingerError as exc:
                if not policy.retryable(exc, idempotent=True):
                    raise
                # The closed stream stays: its snapshot is what is known meanwhile.
                wait = min(wait * 2, FOLLOW_MAX_WAIT)
                continue
            w.reopened(reopened, last)
            await self._pump(w, reopened)
            # Something new: look again soon; else less and less often.
            wait = FOLLOW_FIRST_WAIT if len(w.turns) > seen else min(wait * 2, FOLLOW_MAX_WAIT)

    async def _pump(self, w: _Watched, stream: WorkerStream) -> None:
        """Hand the worker's decoded events to the consumer, reading one read ahead of it.

        While the consumer takes one read's events (``w.ready``), the reader
        reads the next (``stream.read_ahead()``: appended after them, counted
        in ``w.later``), and then waits until the consumer took the first: at
        most two reads' events per worker are held, and a reader whose events
        come as fast as they are taken never waits for the consumer (one task
        step per read, as a stream of its own). Anything but a plain read (a
        bad event, a break, the end) waits until the consumer took all, and
        goes on with ``ready()``, as the stream's own step: only the consumer
        takes events, and never while this waits in ``ready()``.
        """
        w.events = stream.__aiter__()
        w.handover = handover = stream._handover
        gate = self._gate
        while n := await stream.ready():
            self._hand(w, n)
            while handover.state is OPEN and not handover.stops:
                if w.later:  # two reads held: wait until the consumer took the first
                    drained = w.drained = gate()
                    await _passed(drained)
                    continue
                try:
                    n = await stream.read_ahead()
                except HandingerError:
                    await self._drained(w)  # what came before it is handed out first
                    raise
                if n:
                    self._hand(w, n)
            await self._drained(w)

    def _hand(self, w: _Watched, n: int) -> None:
        """``n`` more of ``w``'s events are ready: after those the consumer has, or now."""
        if w.ready:
            w.later += n  # (w is in the queue, or being taken from)
        else:
            w.ready = n
            self._queue.append(w)
            self._wake()

    async def _drained(self, w: _Watched) -> None:
        """Wait until the consumer took every event handed to it."""
        gate = self._gate
        while w.ready or w.later:
            drained = w.drained = gate()
            await _passed(drained)

    def _hand_back(self, w: _Watched) -> None:
        """The consumer took ``w``'s ready events: the read after them comes next (at
        the back of the line: the others' turn first), and the reader may read again."""
        later = w.later
        if later:
            w.ready = later
            w.later = 0
            self._queue.append(w)  # (the consumer calls this: nobody to wake)
        else:
            w.ready = 0
        drained = w.drained
        if drained is not None:
            w.drained = None
            _open(drained)

    def _item(
        self, w: _Watched, event: Event | None, error: HandingerError | None = None
    ) -> LiveEvent[_Watched]:
        """An item of ``w``, with the task its stream is playing and that task's trigger."""
        task_id = w.only if w.only is not None else w.playing
        return LiveEvent(
            w,
            event,
            error,
            worker_id=w.worker_id,
            task_id=task_id,
            trigger=w.triggers.get(task_id) if task_id is not None else None,
        )

    async def _labelled(self, w: _Watched, event: Event) -> LiveEvent[_Watched]:
        """The item of ``event``; the first of a task not seen before asks what started it
        (one request per task, at most :data:`TRIGGER_LOOKUP_TIMEOUT` seconds)."""
        task_id = w.playing
        if task_id is not None and task_id not in w.triggers:
            self._task_owners.setdefault(task_id, w)
            w.triggers[task_id] = None  # asked once, whatever the answer
            if self._find_task is not None:
                with anyio.move_on_after(TRIGGER_LOOKUP_TIMEOUT):
                    try:
                        w.triggers[task_id] = (await self._find_task(task_id)).triggered_by
                    except HandingerError:
                        pass  # unknown: the item says None
        elif task_id is not None and w.only is None:
            self._task_owners[task_id] = w  # the latest stream to play it shows it
        return self._item(w, event)

    def _push(self, item: LiveEvent[_Watched] | _End) -> None:
        self._queue.append(item)
        self._wake()

    def _wake(self) -> None:
        more = self._more
        if more is not None:
            self._more = None
            _open(more)

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
                    handover = w.handover
                    assert handover is not None and w.events is not None
                    head = handover.head
                    if head < handover.limit:  # a plain event: by index, as _ready_item
                        handover.head = head + 1
                        event: Event | None = handover.queue[head]  # type: ignore[assignment]
                    else:
                        try:
                            # A bad event, or a stream closed meanwhile: its own step.
                            event = await w.events.__anext__()
                        except StopAsyncIteration:  # a bad event skipped at the very end
                            event = None
                        except HandingerError as exc:  # a bad event (its stream closed itself)
                            self._current = None
                            w.error = exc
                            w.hand_back()
                            return self._item(w, None, exc)
                    if event is None:  # the stream was closed meanwhile
                        self._current = None
                        w.hand_back()
                    else:
                        self._took(w)
                    if event is not None and w.note(event):
                        return await self._labelled(w, event)
                    continue
                self._current = None
            if queue:
                item = queue.popleft()
                if type(item) is _Watched:
                    if not item.removed:
                        self._current = item
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
            if more is None or (isinstance(more, asyncio.Future) and more.done()):
                # (a future is done once the consumer was cancelled waiting at it)
                more = self._more = self._gate()
            await _passed(more)

    def _took(self, w: _Watched) -> None:
        """One of ``w``'s ready events was taken: hand the stream back when it was the
        last, or let the others have their turn when ``w``'s is over."""
        if not w.ready:
            self._current = None
            self._hand_back(w)
        elif not self._turn:
            self._current = None
            self._queue.append(w)  # the rest after the others' turn

    def _ready_item(self) -> LiveEvent[_Watched] | None:
        """The next item when it is a plain ready event of the worker being taken from;
        ``None`` (nothing taken) when the consumer must go the long way, :meth:`_take`.

        The hot path, once per event: no coroutine of its own, and the event is taken
        from the stream's core by index, as the stream's own iterator takes it (the
        reader only appends to that queue, or drops what was taken, between two of
        these calls: the index is read afresh each time). An event that
        may name a task (a ``start``, a snapshot) goes the long way, which may ask what
        started that task.
        """
        queue = self._queue
        while True:
            w = self._current
            if w is None or not self._turn:
                # The next worker with events ready, as _take takes it; anything else
                # (an error item, an end, an empty queue) is _take's.
                if not queue:
                    return None
                first = queue[0]
                if type(first) is not _Watched:
                    return None
                queue.popleft()
                w = first
                if w.removed:
                    continue
                self._current = w
                ready, buffer = w.ready, self._buffer
                self._turn = ready if ready < buffer else buffer  # (min(), without its call)
            handover = w.handover
            if handover is None:
                return None
            head = handover.head
            if head >= handover.limit:
                return None  # a bad event, or the stream closed meanwhile
            event: Event = handover.queue[head]  # type: ignore[assignment]
            kind = type(event)
            if kind is StartEvent or kind is WorkerSnapshotEvent:
                return None
            task_id = w.playing  # not moved by this event: it names no task
            if task_id is not None and task_id not in w.triggers:
                return None  # (_labelled asks what started it)
            handover.head = head + 1
            # What _took(), note() and _item() do for an event that names no task, inline.
            self._turn -= 1
            w.ready -= 1
            if not w.ready:
                self._current = None
                self._hand_back(w)
            elif not self._turn:
                self._current = None
                queue.append(w)  # the rest after the others' turn
            replay = w.replay
            if replay is not None and not replay.admit_id(event.event_id):
                continue  # repeated by a reopened stream
            only = w.only
            if only is not None:
                if task_id != only:
                    continue
            elif task_id is not None:
                self._task_owners[task_id] = w  # the latest stream to play it shows it
            item: LiveEvent[_Watched] = _new_item(LiveEvent)
            item.worker_id = w.worker_id
            item.event = event
            item.error = None
            item.task_id = task_id
            item.trigger = w.triggers.get(task_id) if task_id is not None else None
            item._w = w
            return item

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchEvent:
        ready = self._ready_item()
        if ready is not None:
            return ready
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
        if sniffio.current_async_library() == "asyncio":
            self._gate = asyncio.get_running_loop().create_future
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
        ready = self._watch._ready_item()
        if ready is not None:
            return ready
        while True:
            item = await self._watch._take()
            if item is None:
                raise StopAsyncIteration
            if type(item) is LiveEvent:
                return item
            w = item._w
            if w.error is None:  # a lost stream's error item was its end already
                return self._watch._item(w, None)


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
