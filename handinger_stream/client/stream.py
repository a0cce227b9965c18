"""WorkerStream: a live worker, as typed events and a growing snapshot.

A stream is two parts. Its core, without I/O, is
:class:`~handinger_stream.protocol.handover.Handover`: the queue of decoded
events, the Worker folded from those handed over, and the stream's states
with the one table of their transitions (read ``protocol/handover.py``
first). This module is the I/O driver on top, which does what needs the
network or the clock and tells the core what happened:

- :class:`WorkerStream`, what users hold: hands events over from the core's
  queue (``_step``, ``ready``; the iterators at the end of the module read
  the queue by index themselves, the hot path), raises or skips bad events,
  and closes (``aclose``, ``_abandon``), telling the :class:`StreamObserver`
  (telemetry) once how the stream ended.
- ``_Connection``, its side towards the server, called when the queue has
  nothing left to hand over (``advance``): by the state, it **reads** under
  the :class:`~handinger_stream.protocol.stall.StallClock`'s limits (OPEN),
  **decodes** through the :class:`~handinger_stream.protocol.sse.SSEDecoder`
  and :mod:`~handinger_stream.protocol.wire` into the queue, **resumes**
  after a break as the :class:`~handinger_stream.protocol.cursor.ReplayCursor`
  says and :meth:`RetryPolicy.call <handinger_stream.protocol.retry.RetryPolicy.call>`
  allows (BROKEN, RESUMING; see ``docs/resilience.md``), or drains the
  connection after ``[DONE]`` (DONE).

Handing an event over costs a list index: folding happens in batches, when
the snapshot is looked at and before the next read, so ``stream.snapshot``
is exact whenever it is read.

>>> async def show(client):  # doctest: +SKIP
...     stream = await client.workers.create(input="Hi", stream=True)
...     async for text in stream.text_deltas():
...         print(text, end="", flush=True)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from time import monotonic
from types import TracebackType
from typing import Any, Generic, Literal, Protocol, TypeVar

import anyio
import msgspec

from ..errors import (
    APIConnectionError,
    APIStatusError,
    GoneError,
    HandingerError,
    HistoryGoneError,
    IncompleteStreamError,
    StreamDecodeError,
    StreamTimeoutError,
    WorkerFailedError,
)
from ..protocol.cursor import ReplayCursor, reached
from ..protocol.handover import (
    BROKEN,
    CLOSED,
    DONE,
    FINISHED,
    OPEN,
    RESUMING,
    Handover,
)
from ..protocol.retry import RetryPolicy
from ..protocol.sse import (
    DEFAULT_MAX_EVENT_BYTES,
    EventTooLargeError,
    SSEDecoder,
    expand_runs,
)
from ..protocol.stall import StallClock
from ..protocol.wire import decode_items
from ..types.events import AISDKVersion, Event, Reconnected, TextDeltaEvent
from ..types.worker import Worker
from .transport import Response, close_soon

__all__ = ["Checkpoint", "StreamObserver", "StreamPolicy", "WorkerStream"]

log = logging.getLogger("handinger_stream")

OnDecodeError = Literal["raise", "skip"]
Opened = tuple["Response | None", list[Event]]
"""What opening a stream gives: a streaming response, or events from a JSON answer."""
Reopen = Callable[[str, "str | None"], Awaitable[Opened]]
"""Opens the worker's replay stream: ``(worker_id, last_event_id)``."""

_DRAIN_BYTES = 64 * 1024
_DRAIN_SECONDS = 1.0
T = TypeVar("T")


class StreamObserver(Protocol):
    """What a stream tells an observer (telemetry, ``client/telemetry.py``): arrivals, its end."""

    def arrived(self, n: int, now: float, reconnects: int) -> None: ...

    def end(self, worker: Worker, error: HandingerError | None) -> None: ...


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """How hard a stream tries to reach its end.

    ``max_reconnects`` bounds consecutive resume attempts (the count resets
    when events flow again); ``retry`` says how long each waits. The limits
    are in seconds, ``None`` for none: ``first_event_timeout`` until the first
    event, ``idle_timeout`` between events (keep-alive comments do not
    count), ``total_timeout`` for the whole stream.

    >>> StreamPolicy(max_reconnects=0).max_reconnects
    0
    """

    max_reconnects: int = 5
    first_event_timeout: float | None = 60.0
    idle_timeout: float | None = 300.0
    total_timeout: float | None = None
    # The transport's timeout for one read, if it has one (the client's ``timeout``).
    read_timeout: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """Where a consumer got to: enough to continue in another process.

    ``position`` counts the events delivered since the worker's first event
    (``None`` when the stream did not start there); ``last_event_id`` is the
    SSE id of the last one. ``snapshot`` is the Worker as folded so far.

    >>> cp = Checkpoint(worker_id="w1", last_event_id="41", position=42, snapshot=Worker(id="w1"))
    >>> msgspec.json.decode(msgspec.json.encode(cp), type=Checkpoint) == cp
    True
    """

    worker_id: str
    last_event_id: str | None
    position: int | None
    snapshot: Worker


@dataclass(frozen=True, slots=True)
class _Break:
    """Why a connection ended before the stream's end: a reason, and its cause."""

    reason: str
    cause: BaseException | None = None
    limit: str = ""  # the stall limit that expired, if that was why
    seconds: float = 0.0
    resume_error: str = ""  # the last resume's failure: only the last, however many there were
    gone: bool = False  # the server no longer has what follows (a replay that forgot it)

    def resuming_failed(self, error: Exception) -> _Break:
        """The same break, after a resume that failed too."""
        return _Break(self.reason, error, self.limit, self.seconds, str(error))

    def told(self) -> str:
        """The reason, and how the last resume failed."""
        if not self.resume_error:
            return self.reason
        return f"{self.reason}; resuming failed ({self.resume_error})"


class WorkerStream:
    """An async iterator of typed events, and the Worker they fold into.

    ``ai_sdk`` is the AI SDK major whose ``readUIMessageStream`` the Worker's
    messages follow (the client's option of that name).

    >>> async def watch(client):  # doctest: +SKIP
    ...     async with await client.workers.create(input="Hi", stream=True) as stream:
    ...         async for event in stream:
    ...             print(type(event).__name__, len(stream.snapshot.output_text))
    ...     return await stream.get_final_worker()
    """

    def __init__(
        self,
        response: Response | None,
        *,
        worker_id: str = "",
        on_decode_error: OnDecodeError = "raise",
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        initial: list[Event] | None = None,
        reopen: Reopen | None = None,
        policy: StreamPolicy | None = None,
        from_start: bool = False,
        observer: StreamObserver | None = None,
        ai_sdk: AISDKVersion = 7,
    ) -> None:
        self._observer = observer  # None once told of the end
        # A JSON answer (no response) is complete in ``initial``: nothing more to read.
        self._handover = handover = Handover(
            worker_id,
            events=initial,
            skip_bad=on_decode_error == "skip",
            state=OPEN if response is not None else FINISHED,
            ai_sdk=ai_sdk,
        )
        self._connection = _Connection(
            handover,
            response,
            max_event_bytes=max_event_bytes,
            reopen=reopen,
            policy=policy or StreamPolicy(),
            from_start=from_start,
            observer=observer,
        )

    # -- state ----------------------------------------------------------

    @property
    def snapshot(self) -> Worker:
        """The Worker as folded after the last event delivered."""
        return self._handover.snapshot()

    @property
    def worker_id(self) -> str:
        return self._handover.worker_id

    @property
    def last_event_id(self) -> str | None:
        """The SSE id of the last event delivered (what a resume starts after)."""
        handover = self._handover
        handover.fold()
        return handover.last_event_id

    @property
    def reconnects(self) -> int:
        """How many times the stream was resumed after a break."""
        return self._connection.reconnects

    @property
    def closed(self) -> bool:
        """True once the HTTP response has been released."""
        return self._connection.response is None

    @property
    def completed(self) -> bool:
        """True when the stream reached its end marker, or the worker completed."""
        if self._handover.reached_done:
            return True
        return self.closed and self.snapshot.status == "completed"

    def checkpoint(self) -> Checkpoint:
        """Where this consumer got to; ``client.workers.resume(cp)`` continues from it.

        >>> cp = stream.checkpoint()  # doctest: +SKIP
        >>> open("cp.json", "wb").write(msgspec.json.encode(cp))  # doctest: +SKIP
        """
        handover = self._handover
        snapshot = handover.snapshot()
        return Checkpoint(
            worker_id=snapshot.id,
            last_event_id=handover.last_event_id,
            position=handover.index if self._connection.cursor.from_start else None,
            snapshot=snapshot,
        )

    # -- iteration ------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        return _EventIterator(self)

    async def __anext__(self) -> Event:
        event = await self._next()
        if event is None:
            raise StopAsyncIteration
        return event

    def events(self, *, reconnects: bool = False) -> AsyncIterator[Event | Reconnected]:
        """The events; with ``reconnects=True`` a :class:`Reconnected` marks each resume."""
        return _NoticeIterator(self) if reconnects else _EventIterator(self)

    def text_deltas(self) -> AsyncIterator[str]:
        """Only the answer's text, piece by piece: for live token display.

        When the worker failed, :class:`WorkerFailedError` is raised after the
        last piece, so a display shows everything written and then the failure.
        """
        return _TextDeltaIterator(self)

    def snapshots(self, min_interval: float | None = None) -> AsyncIterator[Worker]:
        """The Worker after each event that changed it.

        With ``min_interval`` (seconds) snapshots are coalesced so a display
        refreshing a few times a second does not pay per token; the last one
        is always delivered. Raises :class:`WorkerFailedError` after the last
        one when the worker failed.
        """
        return _SnapshotIterator(self, min_interval)

    async def get_final_worker(self) -> Worker:
        """Read to the end; the whole Worker.

        Raises :class:`WorkerFailedError` when the worker reported an error and
        :class:`IncompleteStreamError` when the stream ended before its end.
        """
        handover = self._handover
        try:
            while True:
                handover.head = handover.limit  # hand over what is decoded, all at once
                if await self._next() is None:
                    break
        finally:
            await self.aclose()
        worker = handover.worker_state.snapshot()
        if worker.error is not None:
            raise WorkerFailedError(worker)
        if not self.completed:
            raise IncompleteStreamError(
                f"stream of worker {worker.id or '(unknown)'} ended before its end marker "
                f"after {handover.index} events",
                worker=worker,
            )
        return worker

    def _raise_if_failed(self) -> None:
        worker = self.snapshot
        if worker.error is not None:
            raise WorkerFailedError(worker)

    # -- handing over -----------------------------------------------------

    def _next(self) -> Coroutine[Any, Any, Event | None]:
        """The next event; ``None`` at the end. (No coroutine of its own: one level less.)"""
        return self._step(notices=False)  # type: ignore[return-value]

    async def _step(self, *, notices: bool) -> Event | Reconnected | None:
        """The next event (or resume notice); ``None`` at the end. Reads when it must."""
        handover = self._handover
        while True:
            head = handover.head
            if head < handover.limit:
                handover.head = head + 1
                return handover.queue[head]  # type: ignore[return-value]
            if handover.notice is not None:
                notice = handover.pop_notice()
                if notices:
                    return notice
                continue  # only events(reconnects=True) shows them
            if head < len(handover.queue):
                await self._bad_event(head)
                continue
            if not await self._connection.advance():
                return None

    async def ready(self) -> int:
        """Wait until there is something to hand over, without handing it over.

        Returns how many events the next ``__anext__`` calls give without
        waiting (a bad event counts as one: taking it raises; one that
        ``on_decode_error="skip"`` skips is skipped here); 0 at the end.
        For a consumer of many streams at once, such as ``workers.watch``:
        one task per stream waits here while the consumer takes what is ready,
        so ``stream.snapshot`` stays exact for the events handed over.

        >>> while (n := await stream.ready()):  # doctest: +SKIP
        ...     for _ in range(n):
        ...         event = await stream.__anext__()
        """
        handover = self._handover
        while True:
            head = handover.head
            if head < handover.limit:
                return handover.limit - head
            if handover.notice is not None:
                handover.pop_notice()  # only events(reconnects=True) shows it
                continue
            if head < len(handover.queue):
                if handover.skips(head):
                    await self._bad_event(head)  # nothing to hand over: skip it here
                    continue
                return 1
            if not await self._connection.advance():
                return 0

    async def read_ahead(self) -> int:
        """Read once more while what was decoded before is still being handed over.

        Only while the stream is OPEN and holds no bad event (``ready()`` goes
        on from any other state, once everything was handed over). What was
        handed over is dropped first; the new events are appended after those
        still to be handed over. Returns how many more the ``__anext__`` calls
        give without waiting: the new events before any bad one (0 for a read
        that brought none, or that ended the connection: ``ready()`` decides
        then). ``workers.watch`` reads so while its consumer takes the
        previous read's events, at most one read ahead of it.
        """
        handover = self._handover
        handover.drop_taken()
        before = handover.limit
        await self._connection._read()
        added = handover.limit - before
        return added if added > 0 else 0

    async def _bad_event(self, at: int) -> None:
        """The queue's next item is an event that could not be decoded: raise or skip it."""
        handover = self._handover
        skip = handover.skips(at)
        error = handover.hand_over_bad(at)
        if skip:
            log.warning("skipping undecodable event: %s", error)
            return
        handover.fail(error)
        await self.aclose()
        raise error

    async def _catch_up_to(self, checkpoint: Checkpoint) -> None:
        """Fold the replay silently through the checkpoint's last event (``workers.resume``)."""
        if checkpoint.last_event_id is None and not checkpoint.position:
            return
        position = checkpoint.position if checkpoint.position is not None else 1 << 62
        handover = self._handover
        while True:
            index = handover.index
            event = await self._next()
            if event is None or reached(checkpoint.last_event_id, position, event.event_id, index):
                break

    # -- closing --------------------------------------------------------
    # aclose() ends the stream; the connection's disconnect() ends one
    # connection (a resume may open another); _abandon() is aclose() for a
    # dropped iterator, which cannot await.

    async def aclose(self) -> None:
        """Stop the stream and release the HTTP response. Idempotent; what was
        delivered stays readable on :attr:`snapshot`."""
        self._stop()
        await self._connection.disconnect()

    def _stop(self) -> None:
        self._handover.close()
        self._report_end()

    def _abandon(self) -> None:
        """Left without ``aclose()`` (a loop exited early): close as soon as possible."""
        self._stop()
        connection = self._connection
        response = connection.response
        if response is None:
            return
        if response.abort():
            connection.response = None
            return
        # The transport closes only by awaiting: on the running loop, soon.
        close_soon(self.aclose)

    async def __aenter__(self) -> WorkerStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _report_end(self) -> None:
        """Tell the observer, once, how the stream ended."""
        observer, self._observer = self._observer, None
        if observer is not None:
            self._connection.observer = None
            handover = self._handover
            observer.end(handover.worker_state.snapshot(), handover.error)

    def __del__(self) -> None:
        # Dropped while open (events taken with __anext__, never closed): let the
        # connection go rather than leave it to the transport's own finaliser.
        self._report_end()
        response = self._connection.response
        if response is not None and not response.abort():
            close_soon(response.aclose)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        handover = self._handover
        return (
            f"<WorkerStream worker={handover.worker_state.id or '?'} {state} "
            f"events={handover.index}>"
        )


class _Connection:
    """A stream's connection to the server, and those that replace it: read, decode, resume.

    It tells the core what happened (decoded events into its queue, the
    state transitions); :class:`WorkerStream` hands the events over.
    """

    __slots__ = (
        "_asked_for_finish",
        "_attempts",
        "_break",
        "_clock",
        "_decoder",
        "_max_event_bytes",
        "_policy",
        "_read_timeout",
        "_reopen",
        "_retry_ms",
        "cursor",
        "handover",
        "observer",
        "reconnects",
        "response",
    )

    def __init__(
        self,
        handover: Handover,
        response: Response | None,
        *,
        max_event_bytes: int,
        reopen: Reopen | None,
        policy: StreamPolicy,
        from_start: bool,
        observer: StreamObserver | None,
    ) -> None:
        self.handover = handover
        self.response = response  # the connection read now; None between connections
        self.cursor = ReplayCursor(from_start=from_start)
        self.observer = observer  # told of arrivals (WorkerStream tells it of the end)
        self.reconnects = 0
        self._max_event_bytes = max_event_bytes
        self._decoder = SSEDecoder(max_event_bytes)
        self._clock = StallClock(
            first_event=policy.first_event_timeout,
            idle=policy.idle_timeout,
            total=policy.total_timeout,
        )
        self._reopen = reopen
        self._policy = policy
        self._read_timeout = (
            policy.read_timeout if policy.read_timeout is not None else float("inf")
        )
        self._break: _Break | None = None  # why the connection ended, while BROKEN or RESUMING
        self._attempts = 0  # resume attempts in a row
        self._retry_ms: int | None = None
        self._asked_for_finish = False  # a resume was tried for a finish after an error

    async def advance(self) -> bool:
        """All that was decoded was handed over: read more, resume, or end (False)."""
        handover = self.handover
        state = handover.state
        if state is OPEN:
            handover.next_batch()
            await self._read()
            return True
        if state is BROKEN:
            handover.next_batch()
            await self._after_break()
            return True
        if state is DONE:
            await self.disconnect(drain=True)
            if handover.state is DONE:  # (unless closed meanwhile)
                if self.reconnects and self._turn_unended():
                    # A replay that says [DONE] in the middle of a turn has lost its rest:
                    # taking that for the end would end the turn with no terminal at all.
                    raise self._give_up(
                        _Break("the resumed replay ended ([DONE]) before the turn's end", gone=True)
                    )
                handover.enter(FINISHED)
        return False

    def _turn_unended(self) -> bool:
        """A turn began (its ``start``) and its terminal has not come."""
        handover = self.handover
        status = handover.snapshot().status  # (folds what was handed over)
        return handover.worker_state.message is not None and status != "completed"

    async def disconnect(self, *, drain: bool = False) -> None:
        """Let the connection go; ``drain``: read the (normally empty) rest of the body first.

        Reading to the end after ``[DONE]`` lets the connection go back to the
        pool, and lets the transport's readers finish instead of being abandoned.
        """
        response = self.response
        if response is None:
            return
        try:
            if drain:
                left = _DRAIN_BYTES
                with anyio.move_on_after(_DRAIN_SECONDS):
                    try:
                        while left > 0 and (chunk := await response.read_chunk()):
                            left -= len(chunk)
                    except HandingerError:
                        pass
            with anyio.CancelScope(shield=True):
                await response.aclose()
        finally:
            # Only now is it closed: `closed` never runs ahead of the transport.
            self.response = None

    # -- reading and decoding -------------------------------------------------

    async def _read(self) -> None:
        """Read from the connection once, under the stall limits, and decode what arrived."""
        response = self.response
        assert response is not None  # OPEN: a connection is being read
        now = monotonic()
        clock = self._clock
        if not clock.started:
            clock.start(now)
        expires = clock.expires
        read_timeout = self._read_timeout
        try:
            if expires - now > read_timeout:
                # The transport's own read timeout fires first: no scope needed,
                # and a live stream saves a timer per read.
                chunk: bytes | None = await response.read_chunk()
            else:
                chunk = None
                if expires > now:
                    with anyio.move_on_after(expires - now):
                        chunk = await response.read_chunk()
        except APIConnectionError as exc:
            await self._lose(_Break(f"connection broke ({exc.message})", exc))
            return
        except BaseException:
            # Cancelled: let the connection go, keep what was folded; a later
            # step may still resume.
            await self._lose(_Break("the stream was closed"))
            raise
        if self.handover.state is not OPEN:
            return  # closed by another task while this one read: nothing more to hand over
        if chunk is None:
            limit = clock.limit
            assert limit is not None
            brk = _Break(
                f"no event for {limit.seconds:g} s ({limit.name} limit)",
                limit=limit.name,
                seconds=limit.seconds,
            )
            await self._lose(brk)  # (past the total limit, _after_break does not resume)
            return
        self._decode(chunk)
        if not chunk:
            await self._lose(_Break("the connection ended before the stream's end"))

    async def _lose(self, brk: _Break) -> None:
        """The connection ended: BROKEN if the stream was still OPEN; let the connection go.

        After ``[DONE]`` the end is known already, and a stream closed
        meanwhile has nothing to resume: neither counts as a break.
        """
        if self.handover.state is OPEN:
            self._break = brk
            self.handover.enter(BROKEN)
        await self.disconnect()

    def _decode(self, chunk: bytes) -> None:
        """Decode bytes into the core's queue (``b""``: the connection ended).

        Once per read of a live stream, so the common case calls little.
        """
        decoder = self._decoder
        handover = self.handover
        too_large: EventTooLargeError | None = None
        try:
            items = decoder.feed_runs(chunk) if chunk else decoder.close()
        except EventTooLargeError as exc:
            items, too_large = exc.events, exc
        queue = handover.queue
        if items:
            now = monotonic()
            self._clock.progress(now)
            cursor = self.cursor
            start = len(queue)
            if cursor.resuming:
                items = cursor.admit(expand_runs(items))
                done = decode_items(items, queue, handover.stops)
            else:
                done = decode_items(items, queue, handover.stops)
                if len(queue) > start:
                    # Counted as decoded: a run that was not what it seemed is exact here.
                    last = queue[-1].event_id
                    first = queue[start].event_id if last is not None else None
                    if first is None and last is not None:
                        first = _first_id(queue, start)
                    cursor.take(len(queue) - start, first, last)
            if items:
                self._attempts = 0
            if self.observer is not None and len(queue) > start:
                self.observer.arrived(len(queue) - start, now, self.reconnects)
            if done:
                handover.enter(DONE)
        if too_large is not None and handover.state is not DONE:
            handover.add_too_large(str(too_large), decoder.last_event_id)
        stops = handover.stops
        handover.limit = stops[0] if stops else len(queue)

    # -- breaks and resumes -------------------------------------------------

    async def _after_break(self) -> None:
        """BROKEN, and all the connection brought was handed over: end, resume or fail."""
        brk = self._break
        assert brk is not None  # BROKEN: a break was recorded
        if brk.limit == "total":
            # Decided here, once all was handed over, not where the read expired: a
            # read ahead (workers.watch) expires with events still to hand over, and
            # whether the turn had ended is known only from them.
            self._fail_unless_ended(brk)
            return
        clean_end = brk.cause is None and not brk.limit
        if clean_end and self.handover.snapshot().status == "completed":
            if self.handover.worker_state.awaiting_finish and not self._asked_for_finish:
                # An error chunk, then the end: the AI SDK may still have had a `finish`
                # to send. One resume asks for it; where there is none to resume (a
                # server that closes after an error), the error chunk was the end.
                self._asked_for_finish = True
                if not self._why_not_resumable():
                    await self._resume(brk, once=True)
                    if self.handover.state is not RESUMING:
                        return  # reopened (or closed meanwhile)
                    self.handover.enter(BROKEN)  # nothing to resume: the error was the end
            # Some servers send no [DONE]; a completed worker is the end all the same.
            self.handover.enter(FINISHED)
            return
        why_not = self._why_not_resumable()
        if why_not or self._attempts >= self._policy.max_reconnects:
            self._fail_unless_ended(brk, why_not)
            return
        await self._resume(brk)

    def _why_not_resumable(self) -> str:
        if self._reopen is None:
            return "this stream cannot be resumed"
        if not self.handover.worker_id:
            return (
                "the worker id was not known yet, so it cannot be resumed "
                "(creating it again could make a second worker)"
            )
        return self.cursor.unresumable()

    def _fail_unless_ended(self, brk: _Break, why_not: str = "") -> None:
        """The stream cannot go on: raise the error that says why (FAILED); or, when the
        turn's terminal (a ``finish``, ``error`` or ``abort`` chunk, or a snapshot saying
        ``completed``) was received already, end as FINISHED.

        Only what follows the terminal was lost then (the final snapshot): the turn
        has ended, and ends once for the consumer, with its terminal, never with an
        error after it.
        """
        if self.handover.snapshot().status != "completed":
            raise self._give_up(brk, why_not)
        log.info(
            "worker %s: the turn had ended; what followed its end was not received: %s",
            self.handover.worker_id,
            brk.told(),
        )
        self.handover.enter(FINISHED)

    def _give_up(self, brk: _Break, why_not: str = "") -> IncompleteStreamError:
        """FAILED: the error that says why the stream ended early, to raise."""
        worker = self.handover.snapshot()
        name = worker.id or "(unknown)"
        tail = f"; {why_not}" if why_not else ""
        if self._attempts and not why_not:
            tail = f"; gave up after {self._attempts} reconnect attempts"
        message = f"stream of worker {name} ended early: {brk.told()}{tail}"
        error: IncompleteStreamError
        if brk.gone or isinstance(brk.cause, GoneError):
            # The server no longer keeps what follows our last event: the turn cannot be
            # read to its end, and starting over would deliver it twice. Said as such.
            last_id = self.cursor.last_id
            after = f"id {last_id}" if last_id is not None else f"event {self.cursor.received}"
            error = HistoryGoneError(
                f"stream of worker {name} cannot be resumed: the server no longer keeps "
                f"the events after {after}"
                + (f": {brk.reason}" if brk.gone else f" (410 Gone); it broke: {brk.reason}"),
                last_event_id=last_id,
                worker=worker,
            )
        elif brk.limit:
            error = StreamTimeoutError(message, limit=brk.limit, seconds=brk.seconds, worker=worker)
        else:
            error = IncompleteStreamError(message, worker=worker)
        error.__cause__ = brk.cause
        self.handover.fail(error)
        return error

    async def _resume(self, brk: _Break, *, once: bool = False) -> None:
        """RESUMING: reopen the worker's replay stream, then read it (OPEN) or its
        JSON answer (FINISHED), after a :class:`Reconnected` notice.

        ``once``: one attempt, no wait; a failure leaves the state RESUMING for the
        caller to decide, instead of failing the stream.
        """
        handover = self.handover
        handover.enter(RESUMING)
        try:
            reopened = await self._reopen_patiently(brk, once=once)
        except BaseException:
            if handover.state is RESUMING:
                handover.enter(BROKEN)  # interrupted: the next step decides again
            raise
        if reopened is None:
            return  # closed meanwhile: nobody is left to tell
        (response, initial), reason, waited = reopened
        if handover.state is CLOSED:
            # Closed by another task while this one reconnected.
            if response is not None:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
            return
        cursor = self.cursor
        last_id = cursor.last_id
        skipped = cursor.resumed()
        self.reconnects += 1
        log.info(
            "resumed worker %s after: %s (attempt %d, from %s)",
            handover.worker_id,
            reason,
            self._attempts,
            f"id {last_id}" if last_id is not None else f"the start, skipping {skipped}",
        )
        self._decoder = SSEDecoder(self._max_event_bytes)
        self._break = None
        self._clock.connected(monotonic())
        self.response = response
        # A JSON answer: one snapshot, and nothing more to follow.
        handover.enter(OPEN if response is not None else FINISHED)
        notice = Reconnected(
            attempt=self._attempts,
            reason=reason,
            delay=waited,
            last_event_id=last_id,
            skipped=skipped,
        )
        handover.post_notice(notice, initial)

    async def _reopen_patiently(
        self, brk: _Break, *, once: bool = False
    ) -> tuple[Opened, str, float] | None:
        """The replay stream reopened, why it had to be, and the last wait; ``None`` when
        the stream was closed meanwhile, when it ended at its turn's terminal (see
        ``_fail_unless_ended``), or, ``once``, when the one attempt failed.

        Waits first, then retries while the policy finds the failure
        retryable and ``max_reconnects`` allows: attempts count across
        resumes in a row (reset when events flow). The first wait is the
        server's SSE ``retry:`` when it sent one; a later one its
        ``Retry-After`` when it answered with one.
        """
        reopen = self._reopen
        assert reopen is not None
        retry = self._policy.retry
        if self._decoder.retry is not None:
            self._retry_ms = self._decoder.retry  # the server's wish, from any connection so far
        server_retry = self._retry_ms / 1000 if self._retry_ms is not None else None
        self._attempts += 1
        first = self._attempts
        waited = 0.0 if once else retry.delay(first, server_retry=server_retry)

        def delay(n: int, error: Exception) -> float:
            retry_after = error.retry_after if isinstance(error, APIStatusError) else None
            return retry.delay(first + n, retry_after=retry_after, server_retry=server_retry)

        def on_retry(n: int, wait: float, error: Exception) -> None:
            nonlocal brk, waited
            brk = brk.resuming_failed(error)
            self._attempts = first + n
            waited = wait

        try:
            opened = await retry.call(
                lambda: reopen(self.handover.worker_id, self.cursor.last_id),
                retries=0 if once else self._policy.max_reconnects - first,
                retryable=lambda error: retry.retryable(error, idempotent=True),
                delay=delay,
                first_delay=waited,
                on_retry=on_retry,
            )
        except (APIConnectionError, APIStatusError) as exc:
            if self.handover.state is CLOSED:
                return None
            if once:
                log.debug("worker %s: the one resume failed: %s", self.handover.worker_id, exc)
                return None
            self._fail_unless_ended(brk.resuming_failed(exc))
            return None
        return opened, brk.told(), waited


def _first_id(queue: Sequence[Event | StreamDecodeError], start: int) -> str | None:
    """The SSE id of the first of ``queue[start:]`` that had one."""
    return next((e.event_id for e in queue[start:] if e.event_id is not None), None)


# -- the iterators ------------------------------------------------------------


class _StreamIterator(Generic[T]):
    """An async iterator over a stream that closes the stream when it ends or is dropped.

    A class, not an async generator: a generator left unfinished is closed by
    the event loop's finaliser, which trio reports as a ResourceWarning.
    It holds the stream's core too, so handing over reads its queue directly.
    """

    __slots__ = ("_done", "_handover", "_stream")

    def __init__(self, stream: WorkerStream) -> None:
        self._stream = stream
        self._handover = stream._handover
        self._done = False

    def __aiter__(self) -> _StreamIterator[T]:
        return self

    async def __anext__(self) -> T:
        if self._done:
            raise StopAsyncIteration
        try:
            item = await self._next()
            if item is None:
                self._done = True
                await self._stream.aclose()
                self._ended()
        except BaseException:
            self._done = True
            await self._stream.aclose()
            raise
        if item is None:
            raise StopAsyncIteration
        return item

    def _next(self) -> Awaitable[T | None]:
        raise NotImplementedError

    def _ended(self) -> None:
        """Called once at the end, after the stream closed; may raise."""

    async def aclose(self) -> None:
        self._done = True
        await self._stream.aclose()

    def __del__(self) -> None:
        if not self._done:
            self._stream._abandon()


class _EventIterator(_StreamIterator[Event]):
    """The events (``async for event in stream``)."""

    __slots__ = ()

    async def __anext__(self) -> Event:
        # The hot path: a decoded event is handed over by index, without a call;
        # otherwise straight to the stream's step (what _StreamIterator.__anext__
        # does, inlined).
        handover = self._handover
        head = handover.head
        if head < handover.limit:
            handover.head = head + 1
            return handover.queue[head]  # type: ignore[return-value]
        if self._done:
            raise StopAsyncIteration
        stream = self._stream
        try:
            event = await stream._step(notices=False)
        except BaseException:
            self._done = True
            await stream.aclose()
            raise
        if event is None:
            self._done = True
            await stream.aclose()
            raise StopAsyncIteration
        return event  # type: ignore[return-value]

    def _next(self) -> Coroutine[Any, Any, Event | None]:
        return self._stream._next()


class _NoticeIterator(_StreamIterator["Event | Reconnected"]):
    """The events, and a :class:`Reconnected` notice at each resume."""

    __slots__ = ()

    def _next(self) -> Coroutine[Any, Any, Event | Reconnected | None]:
        return self._stream._step(notices=True)


class _TextDeltaIterator(_StreamIterator[str]):
    """The text of the answer, piece by piece."""

    __slots__ = ()

    async def _next(self) -> str | None:
        handover = self._handover
        while True:
            queue, head, limit = handover.queue, handover.head, handover.limit
            while head < limit:
                event = queue[head]
                head += 1
                if type(event) is TextDeltaEvent:
                    handover.head = head
                    return event.delta
            handover.head = head
            next_event = await self._stream._next()
            if next_event is None:
                return None
            if type(next_event) is TextDeltaEvent:
                return next_event.delta

    def _ended(self) -> None:
        self._stream._raise_if_failed()


class _SnapshotIterator(_StreamIterator[Worker]):
    """The Worker after each event that changed it, at most one per ``min_interval``."""

    __slots__ = ("_last_sent", "_min_interval", "_unsent")

    def __init__(self, stream: WorkerStream, min_interval: float | None) -> None:
        super().__init__(stream)
        self._min_interval = min_interval
        self._last_sent = -float("inf")
        self._unsent = False

    async def _next(self) -> Worker | None:
        stream, handover = self._stream, self._handover
        while await stream._next() is not None:
            if not handover.fold():
                continue
            if self._min_interval:
                now = anyio.current_time()
                if now - self._last_sent < self._min_interval:
                    self._unsent = True
                    continue
                self._last_sent = now
            self._unsent = False
            return handover.worker_state.snapshot()
        if self._unsent:
            self._unsent = False
            return handover.worker_state.snapshot()
        return None

    def _ended(self) -> None:
        self._stream._raise_if_failed()
