"""WorkerStream: a live worker, as typed events and a growing snapshot.

The stream is a thin I/O shell around sans-IO parts: bytes from the
transport go through the :class:`~handinger_stream.protocol.sse.SSEDecoder` and
:mod:`~handinger_stream.protocol.wire` into a queue of typed events, handed over one
by one and folded into a :class:`~handinger_stream.protocol.reducer.WorkerState`. The
:class:`~handinger_stream.protocol.cursor.ReplayCursor` says how to resume after a
break, the :class:`~handinger_stream.protocol.stall.StallClock` when a silent stream
counts as broken, and the :class:`~handinger_stream.protocol.retry.RetryPolicy` how
long to wait before trying again (see ``docs/resilience.md``).

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
    HandingerError,
    IncompleteStreamError,
    StreamDecodeError,
    StreamTimeoutError,
    WorkerFailedError,
)
from ..protocol.cursor import ReplayCursor, reached
from ..protocol.reducer import WorkerState
from ..protocol.retry import RetryPolicy
from ..protocol.sse import (
    DEFAULT_MAX_EVENT_BYTES,
    EventTooLargeError,
    SSEDecoder,
    expand_runs,
)
from ..protocol.stall import StallClock
from ..protocol.wire import decode_items
from ..types.events import Event, Reconnected, TextDeltaEvent
from ..types.worker import Worker
from .transport import Response, close_soon

__all__ = ["Checkpoint", "Recorder", "StreamPolicy", "WorkerStream"]

log = logging.getLogger("handinger_stream")

OnDecodeError = Literal["raise", "skip"]
Opened = tuple["Response | None", list[Event]]
"""What opening a stream gives: a streaming response, or events from a JSON answer."""
Reopen = Callable[[str, "str | None"], Awaitable[Opened]]
"""Opens the worker's replay stream: ``(worker_id, last_event_id)``."""

_DRAIN_BYTES = 64 * 1024
_DRAIN_SECONDS = 1.0
T = TypeVar("T")


class Recorder(Protocol):
    """What a stream tells telemetry (``client/telemetry.py``): events as they arrive, its end."""

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


class _TooLarge(StreamDecodeError):
    """An event past ``max_event_bytes``: raised in its turn even when skipping bad events."""


class WorkerStream:
    """An async iterator of typed events, and the Worker they fold into.

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
        recorder: Recorder | None = None,
    ) -> None:
        policy = policy or StreamPolicy()
        self._response = response
        self._max_event_bytes = max_event_bytes
        self._decoder = SSEDecoder(max_event_bytes)
        self._state = WorkerState(worker_id)
        self._cursor = ReplayCursor(from_start=from_start)
        self._clock = StallClock(
            first_event=policy.first_event_timeout,
            idle=policy.idle_timeout,
            total=policy.total_timeout,
        )
        self._on_decode_error = on_decode_error
        self._reopen = reopen
        self._policy = policy
        self._read_timeout = (
            policy.read_timeout if policy.read_timeout is not None else float("inf")
        )
        # The delivery queue: what the last read decoded. queue[_head:_limit]
        # are plain events, handed over without a look; a decode error sits in
        # its own slot (listed in _stops) and is raised in its turn.
        self._queue: list[Event | StreamDecodeError] = list(initial or ())
        self._head = 0
        self._limit = len(self._queue)
        self._stops: list[int] = []
        self._folded = 0  # queue[:_folded] are in the state
        self._base = 0  # events taken from earlier queues: index = _base + _head
        self._notice: Reconnected | None = None
        self._last_event_id: str | None = None
        self._attempts = 0  # resume attempts in a row
        self._reconnects = 0
        self._retry_ms: int | None = None
        self._break: _Break | None = None
        self._done_marker = False
        # A JSON answer (no response) is complete in ``initial``: nothing more to read.
        self._finished = response is None
        self._recorder = recorder
        self._error: HandingerError | None = None  # what ended the stream, for the recorder

    # -- state ----------------------------------------------------------

    @property
    def snapshot(self) -> Worker:
        """The Worker as folded after the last event delivered."""
        self._fold()
        return self._state.snapshot()

    @property
    def worker_id(self) -> str:
        self._fold()
        return self._state.id

    @property
    def last_event_id(self) -> str | None:
        """The SSE id of the last event delivered (what a resume starts after)."""
        self._fold()
        return self._last_event_id

    @property
    def reconnects(self) -> int:
        """How many times the stream was resumed after a break."""
        return self._reconnects

    @property
    def closed(self) -> bool:
        """True once the HTTP response has been released."""
        return self._response is None

    @property
    def completed(self) -> bool:
        """True when the stream reached its end marker, or the worker completed."""
        if self._done_marker:
            return True
        return self._response is None and self.snapshot.status == "completed"

    def checkpoint(self) -> Checkpoint:
        """Where this consumer got to; ``client.workers.resume(cp)`` continues from it.

        >>> cp = stream.checkpoint()  # doctest: +SKIP
        >>> open("cp.json", "wb").write(msgspec.json.encode(cp))  # doctest: +SKIP
        """
        snapshot = self.snapshot
        return Checkpoint(
            worker_id=self._state.id,
            last_event_id=self._last_event_id,
            position=self._index if self._cursor.from_start else None,
            snapshot=snapshot,
        )

    @property
    def _index(self) -> int:
        """Events (and bad events) taken so far: the index the next one has."""
        return self._base + self._head

    # -- iteration ------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        return _Events(self)

    async def __anext__(self) -> Event:
        event = await self._next()
        if event is None:
            raise StopAsyncIteration
        return event

    def events(self, *, reconnects: bool = False) -> AsyncIterator[Event | Reconnected]:
        """The events; with ``reconnects=True`` a :class:`Reconnected` marks each resume."""
        return _Notices(self) if reconnects else _Events(self)

    def text_deltas(self) -> AsyncIterator[str]:
        """Only the answer's text, piece by piece: for live token display.

        When the worker failed, :class:`WorkerFailedError` is raised after the
        last piece, so a display shows everything written and then the failure.
        """
        return _TextDeltas(self)

    def snapshots(self, min_interval: float | None = None) -> AsyncIterator[Worker]:
        """The Worker after each event that changed it.

        With ``min_interval`` (seconds) snapshots are coalesced so a display
        refreshing a few times a second does not pay per token; the last one
        is always delivered. Raises :class:`WorkerFailedError` after the last
        one when the worker failed.
        """
        return _Snapshots(self, min_interval)

    async def get_final_worker(self) -> Worker:
        """Read to the end; the whole Worker.

        Raises :class:`WorkerFailedError` when the worker reported an error and
        :class:`IncompleteStreamError` when the stream ended before its end.
        """
        try:
            while True:
                self._head = self._limit  # hand over what is decoded, all at once
                if await self._next() is None:
                    break
        finally:
            await self.aclose()
        worker = self._state.snapshot()
        if worker.error is not None:
            raise WorkerFailedError(worker)
        if not self.completed:
            raise IncompleteStreamError(
                f"stream of worker {worker.id or '(unknown)'} ended before its end marker "
                f"after {self._index} events",
                worker=worker,
            )
        return worker

    def _raise_if_failed(self) -> None:
        worker = self.snapshot
        if worker.error is not None:
            raise WorkerFailedError(worker)

    # -- the delivery loop ------------------------------------------------

    def _next(self) -> Coroutine[Any, Any, Event | None]:
        """The next event; ``None`` at the end. (No coroutine of its own: one level less.)"""
        return self._step(notices=False)  # type: ignore[return-value]

    async def _step(self, *, notices: bool) -> Event | Reconnected | None:
        """The next event (or resume notice); ``None`` at the end. Reads when it must."""
        while True:
            head = self._head
            if head < self._limit:
                self._head = head + 1
                return self._queue[head]  # type: ignore[return-value]
            if self._notice is not None:
                notice, self._notice = self._notice, None
                self._set_limit()
                if notices:
                    return notice
                continue  # only events(reconnects=True) shows them
            if head < len(self._queue):
                await self._bad_event(head)
                continue
            if not await self._advance():
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
        while True:
            head = self._head
            if head < self._limit:
                return self._limit - head
            if self._notice is not None:
                self._notice = None
                self._set_limit()
                continue
            if head < len(self._queue):
                if self._skips(head):
                    await self._bad_event(head)  # nothing to hand over: skip it here
                    continue
                return 1
            if not await self._advance():
                return 0

    async def _advance(self) -> bool:
        """All that was decoded was taken: read more, resume, or end (False)."""
        if self._finished:
            return False
        if self._done_marker:
            await self._release(drain=True)
            self._finished = True
            return False
        self._fold()
        self._base += len(self._queue)
        self._queue = []
        self._head = self._limit = self._folded = 0
        response = self._response
        if response is None:
            await self._after_connection()
            return True
        # Read from the connection and decode what arrived into the queue.
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
            await self._release()
            self._break = _Break(f"connection broke ({exc.message})", exc)
            return True
        except BaseException:
            # Cancelled: release now, keep what was folded.
            await self._release()
            raise
        if chunk is None:
            limit = clock.limit
            assert limit is not None
            await self._release()
            self._break = _Break(
                f"no event for {limit.seconds:g} s ({limit.name} limit)",
                limit=limit.name,
                seconds=limit.seconds,
            )
            if limit.name == "total":
                raise self._give_up(self._break)
            return True
        self._take(chunk)
        if not chunk:
            await self._release()
            self._break = _Break("the connection ended before the stream's end")
        return True

    def _set_limit(self) -> None:
        """Where the plain events of the queue end: at the next bad event, or a notice."""
        if self._notice is not None:
            self._limit = self._head
        else:
            self._limit = self._stops[0] if self._stops else len(self._queue)

    def _fold(self) -> bool:
        """Fold the events handed over since the last fold; whether the Worker changed."""
        start, end = self._folded, self._head
        if start >= end:
            return False
        self._folded = end
        events: list[Event] = self._queue[start:end]  # type: ignore[assignment]
        for event in reversed(events):
            if event.event_id is not None:
                self._last_event_id = event.event_id
                break
        return self._state.apply_all(events)

    def _skips(self, at: int) -> bool:
        """Whether the bad event at ``at`` is skipped (an oversized one never is)."""
        return self._on_decode_error == "skip" and not isinstance(self._queue[at], _TooLarge)

    async def _bad_event(self, at: int) -> None:
        """The queue's next item is an event that could not be decoded: raise or skip it."""
        self._fold()
        bad = self._queue[at]
        assert isinstance(bad, StreamDecodeError)
        error = StreamDecodeError(
            bad.reason,
            index=self._base + at,
            event_id=bad.event_id,
            data=bad.excerpt,
            worker=self._state.snapshot(),
        )
        self._head = self._folded = at + 1
        self._stops.pop(0)
        self._set_limit()
        if self._skips(at):
            log.warning("skipping undecodable event: %s", error)
            return
        self._error = error
        await self.aclose()
        raise error

    def _take(self, chunk: bytes) -> None:
        """Decode bytes into the queue (``b""``: the connection ended).

        Once per read of a live stream, so the common case calls little.
        """
        decoder = self._decoder
        too_large: EventTooLargeError | None = None
        try:
            items = decoder.feed_runs(chunk) if chunk else decoder.close()
        except EventTooLargeError as exc:
            items, too_large = exc.events, exc
        queue = self._queue
        if items:
            now = monotonic()
            self._clock.progress(now)
            cursor = self._cursor
            start = len(queue)
            if cursor.resuming:
                items = cursor.admit(expand_runs(items))
                self._done_marker = decode_items(items, queue, self._stops)
            else:
                self._done_marker = decode_items(items, queue, self._stops)
                if len(queue) > start:
                    # Counted as decoded: a run that was not what it seemed is exact here.
                    last = queue[-1].event_id
                    first = queue[start].event_id if last is not None else None
                    if first is None and last is not None:
                        first = _first_id(queue, start)
                    cursor.take(len(queue) - start, first, last)
            if items:
                self._attempts = 0
            if self._recorder is not None and len(queue) > start:
                self._recorder.arrived(len(queue) - start, now, self._reconnects)
        if too_large is not None and not self._done_marker:
            self._stops.append(len(queue))
            queue.append(
                _TooLarge(str(too_large), index=0, event_id=decoder.last_event_id, data=b"")
            )
        stops = self._stops
        self._limit = stops[0] if stops else len(queue)

    # -- breaks and resumes -------------------------------------------------

    async def _after_connection(self) -> None:
        """The connection is gone and all it brought was delivered: end, resume or fail."""
        brk = self._break or _Break("the stream was closed")
        clean_end = brk.cause is None and not brk.limit
        if clean_end and self.snapshot.status == "completed":
            # Some servers send no [DONE]; a completed worker is the end all the same.
            self._finished = True
            return
        why_not = self._why_not_resumable()
        if why_not or self._attempts >= self._policy.max_reconnects:
            raise self._give_up(brk, why_not)
        await self._resume(brk)

    def _why_not_resumable(self) -> str:
        if self._reopen is None:
            return "this stream cannot be resumed"
        if not self.worker_id:
            return (
                "the worker id was not known yet, so it cannot be resumed "
                "(creating it again could make a second worker)"
            )
        return self._cursor.unresumable()

    def _give_up(self, brk: _Break, why_not: str = "") -> IncompleteStreamError:
        self._finished = True
        worker = self.snapshot
        name = worker.id or "(unknown)"
        tail = f"; {why_not}" if why_not else ""
        if self._attempts and not why_not:
            tail = f"; gave up after {self._attempts} reconnect attempts"
        message = f"stream of worker {name} ended early: {brk.reason}{tail}"
        error: IncompleteStreamError
        if brk.limit:
            error = StreamTimeoutError(message, limit=brk.limit, seconds=brk.seconds, worker=worker)
        else:
            error = IncompleteStreamError(message, worker=worker)
        error.__cause__ = brk.cause
        self._error = error
        return error

    async def _resume(self, brk: _Break) -> None:
        """Reopen the worker's replay stream, waiting as the retry policy says."""
        assert self._reopen is not None
        retry = self._policy.retry
        if self._decoder.retry is not None:
            self._retry_ms = self._decoder.retry  # the server's wish, from any connection so far
        server_retry = self._retry_ms / 1000 if self._retry_ms is not None else None
        self._attempts += 1
        delay = retry.delay(self._attempts, server_retry=server_retry)
        while True:
            await anyio.sleep(delay)
            try:
                response, initial = await self._reopen(self.worker_id, self._cursor.last_id)
            except (APIConnectionError, APIStatusError) as exc:
                brk = _Break(f"{brk.reason}; resuming failed ({exc})", exc, brk.limit, brk.seconds)
                if (
                    not retry.retryable(exc, idempotent=True)
                    or self._attempts >= self._policy.max_reconnects
                ):
                    raise self._give_up(brk) from exc
                self._attempts += 1
                retry_after = exc.retry_after if isinstance(exc, APIStatusError) else None
                delay = retry.delay(
                    self._attempts, retry_after=retry_after, server_retry=server_retry
                )
                continue
            break
        last_id = self._cursor.last_id
        skipped = self._cursor.resumed()
        self._reconnects += 1
        log.info(
            "resumed worker %s after: %s (attempt %d, from %s)",
            self.worker_id,
            brk.reason,
            self._attempts,
            f"id {last_id}" if last_id is not None else f"the start, skipping {skipped}",
        )
        self._decoder = SSEDecoder(self._max_event_bytes)
        self._break = None
        self._clock.connected(monotonic())
        self._response = response
        if response is None:
            # A JSON answer: one snapshot, and nothing more to follow.
            self._finished = True
        self._notice = Reconnected(
            attempt=self._attempts,
            reason=brk.reason,
            delay=delay,
            last_event_id=last_id,
            skipped=skipped,
        )
        self._queue.extend(initial)
        self._set_limit()

    async def _catch_up_to(self, checkpoint: Checkpoint) -> None:
        """Fold the replay silently through the checkpoint's last event (``workers.resume``)."""
        if checkpoint.last_event_id is None and not checkpoint.position:
            return
        position = checkpoint.position if checkpoint.position is not None else 1 << 62
        while True:
            index = self._index
            event = await self._next()
            if event is None or reached(checkpoint.last_event_id, position, event.event_id, index):
                break

    # -- closing --------------------------------------------------------
    # aclose() ends the stream; _release() ends one connection (a resume may
    # open another); _abandon() is aclose() for a dropped iterator, which
    # cannot await.

    async def aclose(self) -> None:
        """Stop the stream and release the HTTP response. Idempotent; what was
        delivered stays readable on :attr:`snapshot`."""
        self._stop()
        await self._release()

    def _stop(self) -> None:
        self._fold()
        self._finished = True
        self._end_recording()
        del self._queue[self._head :]
        self._stops.clear()
        self._notice = None
        self._set_limit()

    async def _release(self, *, drain: bool = False) -> None:
        """Let the connection go; ``drain``: read the (normally empty) rest of the body first.

        Reading to the end after ``[DONE]`` lets the connection go back to the
        pool, and lets the transport's readers finish instead of being abandoned.
        """
        response = self._response
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
            self._response = None

    def _abandon(self) -> None:
        """Left without ``aclose()`` (a loop exited early): close as soon as possible."""
        self._stop()
        response = self._response
        if response is None:
            return
        if response.abort():
            self._response = None
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

    def _end_recording(self) -> None:
        """Tell the recorder, once, how the stream ended."""
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            recorder.end(self._state.snapshot(), self._error)

    def __del__(self) -> None:
        # Dropped while open (events taken with __anext__, never closed): let the
        # connection go rather than leave it to the transport's own finaliser.
        self._end_recording()
        response = self._response
        if response is not None and not response.abort():
            close_soon(response.aclose)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<WorkerStream worker={self._state.id or '?'} {state} events={self._index}>"


def _first_id(queue: Sequence[Event | StreamDecodeError], start: int) -> str | None:
    """The SSE id of the first of ``queue[start:]`` that had one."""
    return next((e.event_id for e in queue[start:] if e.event_id is not None), None)


class _Iterator(Generic[T]):
    """An async iterator over a stream that closes the stream when it ends or is dropped.

    A class, not an async generator: a generator left unfinished is closed by
    the event loop's finaliser, which trio reports as a ResourceWarning.
    """

    __slots__ = ("_done", "_stream")

    def __init__(self, stream: WorkerStream) -> None:
        self._stream = stream
        self._done = False

    def __aiter__(self) -> _Iterator[T]:
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


class _Events(_Iterator[Event]):
    __slots__ = ()

    async def __anext__(self) -> Event:
        # The hot path: a decoded event is handed over by index, without a call;
        # otherwise straight to the stream's loop (what _Iterator.__anext__ does, inlined).
        stream = self._stream
        head = stream._head
        if head < stream._limit:
            stream._head = head + 1
            return stream._queue[head]  # type: ignore[return-value]
        if self._done:
            raise StopAsyncIteration
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


class _Notices(_Iterator["Event | Reconnected"]):
    __slots__ = ()

    def _next(self) -> Coroutine[Any, Any, Event | Reconnected | None]:
        return self._stream._step(notices=True)


class _TextDeltas(_Iterator[str]):
    __slots__ = ()

    async def _next(self) -> str | None:
        stream = self._stream
        while True:
            queue, head, limit = stream._queue, stream._head, stream._limit
            while head < limit:
                event = queue[head]
                head += 1
                if type(event) is TextDeltaEvent:
                    stream._head = head
                    return event.delta
            stream._head = head
            taken = await stream._next()
            if taken is None:
                return None
            if type(taken) is TextDeltaEvent:
                return taken.delta

    def _ended(self) -> None:
        self._stream._raise_if_failed()


class _Snapshots(_Iterator[Worker]):
    __slots__ = ("_last_sent", "_min_interval", "_unsent")

    def __init__(self, stream: WorkerStream, min_interval: float | None) -> None:
        super().__init__(stream)
        self._min_interval = min_interval
        self._last_sent = -float("inf")
        self._unsent = False

    async def _next(self) -> Worker | None:
        stream = self._stream
        while await stream._next() is not None:
            if not stream._fold():
                continue
            if self._min_interval:
                now = anyio.current_time()
                if now - self._last_sent < self._min_interval:
                    self._unsent = True
                    continue
                self._last_sent = now
            self._unsent = False
            return stream._state.snapshot()
        if self._unsent:
            self._unsent = False
            return stream._state.snapshot()
        return None

    def _ended(self) -> None:
        self._stream._raise_if_failed()
