"""WorkerStream: a live worker, as typed events and a growing snapshot.

The stream is a thin I/O shell: bytes from the transport go through the
sans-IO :class:`~handinger_stream.sse.SSEDecoder`, then
:func:`~handinger_stream.wire.decode_event`, then
:func:`~handinger_stream.reducer.apply_event`. The HTTP response is released
as soon as the stream ends, fails, is left early or is cancelled.

When the connection breaks or stalls before the end, the stream resumes by
itself from the worker's replay stream (see ``docs/resilience.md``): the
consumer sees each event once, and the Worker ends as if nothing happened.

>>> async def show(client):  # doctest: +SKIP
...     stream = await client.workers.create(input="Hi", stream=True)
...     async for text in stream.text_deltas():
...         print(text, end="", flush=True)
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from time import monotonic
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

import anyio
import msgspec
import sniffio

from .errors import (
    APIConnectionError,
    APIStatusError,
    HandingerError,
    IncompleteStreamError,
    StreamDecodeError,
    StreamTimeoutError,
    WorkerFailedError,
)
from .events import Event, Reconnected, TextDeltaEvent
from .models import Worker
from .reducer import WorkerState, apply_event
from .sse import (
    DEFAULT_MAX_EVENT_BYTES,
    DataRun,
    EventTooLargeError,
    ServerSentEvent,
    SSEDecoder,
    expand_runs,
)
from .transport import Response
from .wire import DONE, decode_event, decode_run

__all__ = ["Checkpoint", "StreamPolicy", "WorkerStream"]

log = logging.getLogger("handinger_stream")

OnDecodeError = Literal["raise", "skip"]
Opened = tuple["Response | None", list[Event]]
"""What opening a stream gives: a streaming response, or events from a JSON answer."""
Reopen = Callable[[str, "str | None"], Awaitable[Opened]]
"""Opens the worker's replay stream: ``(worker_id, last_event_id)``."""

_DONE_TAIL = b"\n\ndata: " + DONE
_DRAIN_BYTES = 64 * 1024
_DRAIN_SECONDS = 1.0
_FIRST_RECONNECT_DELAY = 0.5
_MAX_RECONNECT_DELAY = 8.0
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """How hard a stream tries to reach its end.

    ``max_reconnects`` bounds consecutive resume attempts (the count resets
    when events flow again). The limits are in seconds, ``None`` for none:
    ``first_event_timeout`` until the first event, ``idle_timeout`` between
    events (keep-alive comments do not count), ``total_timeout`` for the
    whole stream.

    >>> StreamPolicy(max_reconnects=0).max_reconnects
    0
    """

    max_reconnects: int = 5
    first_event_timeout: float | None = 60.0
    idle_timeout: float | None = 300.0
    total_timeout: float | None = None
    # The transport's timeout for one read, if it has one (the client's ``timeout``).
    read_timeout: float | None = None


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


class _Break(Exception):
    """Why a connection ended before the stream's end: a reason, and its cause."""

    def __init__(
        self,
        reason: str,
        cause: BaseException | None = None,
        limit: str = "",
        seconds: float = 0.0,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause
        self.limit = limit
        self.seconds = seconds


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
    ) -> None:
        self._response = response
        self._max_event_bytes = max_event_bytes
        self._decoder = SSEDecoder(max_event_bytes)
        self._pending: deque[ServerSentEvent | DataRun] = deque()
        # Decoded, not yet delivered; a decode error waits here for its turn.
        self._ready: deque[Event | Reconnected | StreamDecodeError] = deque(initial or ())
        self._state = WorkerState(worker_id)
        self._on_decode_error = on_decode_error
        self._reopen = reopen
        self._policy = policy or StreamPolicy()
        # Positions line up with the worker's replay stream only if we began at its start.
        self._from_start = from_start
        self._index = 0  # SSE events taken from the queue (the index errors name)
        self._received = 0  # SSE events received, across connections
        self._received_id: str | None = None
        self._skip = 0  # replayed events still to skip after a resume by position
        self._skip_through: str | None = None  # ...or up to and including this id
        self._first_id: str | None = None
        self._resumed_from: str | None = None
        self._resyncing = False
        self._quiet_until: tuple[str | None, int] | None = None
        self._attempts = 0
        self._reconnects = 0
        self._retry_ms: int | None = None
        self._started: float | None = None
        self._last_activity: float | None = None
        self._seen_event = False
        self._break: _Break | None = None
        # A JSON answer (no response) is complete in ``initial``: nothing more to read.
        self._finished = response is None
        self._done_marker = False
        self._last_event_id: str | None = None
        self._changed = False

    # -- state ----------------------------------------------------------

    @property
    def snapshot(self) -> Worker:
        """The Worker as folded after the last event delivered."""
        return self._state.snapshot()

    @property
    def worker_id(self) -> str:
        return self._state.id

    @property
    def last_event_id(self) -> str | None:
        """The SSE id of the last event delivered (what a resume starts after)."""
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
        return self._done_marker or (self._response is None and self._state.status == "completed")

    def checkpoint(self) -> Checkpoint:
        """Where this consumer got to; ``client.workers.resume(cp)`` continues from it.

        >>> cp = stream.checkpoint()  # doctest: +SKIP
        >>> open("cp.json", "wb").write(msgspec.json.encode(cp))  # doctest: +SKIP
        """
        return Checkpoint(
            worker_id=self.worker_id,
            last_event_id=self._last_event_id,
            position=self._index if self._from_start else None,
            snapshot=self._state.snapshot(),
        )

    # -- iteration ------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        return _Iterator(self, self._next, self._pop_ready)

    async def __anext__(self) -> Event:
        event = await self._next()
        if event is None:
            raise StopAsyncIteration
        return event

    def events(self, *, reconnects: bool = False) -> AsyncIterator[Event | Reconnected]:
        """The events; with ``reconnects=True`` a :class:`Reconnected` marks each resume."""
        if not reconnects:
            return _Iterator(self, self._next, self._pop_ready)
        return _Iterator(self, self._next_notice)

    def text_deltas(self) -> AsyncIterator[str]:
        """Only the answer's text, piece by piece: for live token display."""

        async def step() -> str | None:
            while (event := await self._next()) is not None:
                if type(event) is TextDeltaEvent:
                    return event.delta
            return None

        return _Iterator(self, step)

    def snapshots(self, min_interval: float | None = None) -> AsyncIterator[Worker]:
        """The Worker after each event that changed it.

        With ``min_interval`` (seconds) snapshots are coalesced so a display
        refreshing a few times a second does not pay per token; the last one
        is always delivered.
        """
        last_sent = -float("inf")
        unsent = False

        async def step() -> Worker | None:
            nonlocal last_sent, unsent
            while await self._next_changed() is not None:
                if min_interval:
                    now = anyio.current_time()
                    if now - last_sent < min_interval:
                        unsent = True
                        continue
                    last_sent = now
                unsent = False
                return self._state.snapshot()
            if unsent:
                unsent = False
                return self._state.snapshot()
            return None

        return _Iterator(self, step)

    async def get_final_worker(self) -> Worker:
        """Read to the end; the whole Worker.

        Raises :class:`WorkerFailedError` when the worker reported an error and
        :class:`IncompleteStreamError` when the stream ended before its end.
        """
        pop = self._pop_ready
        try:
            while True:
                while pop() is not None:
                    pass
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

    # -- the core loop --------------------------------------------------

    async def _next_changed(self) -> Event | None:
        while (event := await self._next()) is not None:
            if self._changed:
                return event
        return None

    async def _next(self) -> Event | None:
        while (item := await self._next_notice()) is not None:
            if not isinstance(item, Reconnected):
                return item
        return None

    async def _next_notice(self, *, catch_up: bool = False) -> Event | Reconnected | None:
        ready = self._ready
        while True:
            if catch_up and self._quiet_until is None:
                return None
            if ready:
                event = self._pop_ready()
                if event is not None:
                    return event
                # Not a plain event: a resume notice, a decode error, or a catch-up.
                item = ready.popleft()
                if type(item) is Reconnected:
                    return item
                index = self._index
                self._index = index + 1
                if type(item) is StreamDecodeError:
                    if self._on_decode_error == "skip":
                        log.warning("skipping undecodable event: %s", item)
                        continue
                    item.worker = self._state.snapshot()
                    await self._finish()
                    raise item
                # Replaying up to a checkpoint: folded, not yielded.
                folded: Event = item  # type: ignore[assignment]
                self._deliver(folded)
                self._check_caught_up(folded, index)
                continue
            if self._pending:
                if self._decode_pending():
                    self._done_marker = True
                    self._index += 1
                    self._pending.clear()
                    await self._drain()
                    self._finished = True
                continue
            if self._finished:
                return None
            if self._response is not None:
                await self._fill()
            else:
                await self._after_connection()

    def _pop_ready(self) -> Event | None:
        """The next event if one is decoded and plain to hand over: the loop's fast path."""
        ready = self._ready
        if not ready or self._quiet_until is not None:
            return None
        item = ready[0]
        kind = type(item)
        if kind is Reconnected or kind is StreamDecodeError:
            return None
        ready.popleft()
        self._index += 1
        event: Event = item  # type: ignore[assignment]
        self._deliver(event)
        return event

    def _decode_pending(self) -> bool:
        """Decode what arrived into ``_ready`` (errors in place); True at ``[DONE]``."""
        item = self._pending.popleft()
        if type(item) is DataRun:
            if item.count > 1 and item.region.endswith(_DONE_TAIL):
                # The last read of a stream: the run before [DONE] still decodes at once.
                self._pending.appendleft(ServerSentEvent(DONE, "message", item.id, item.retry))
                item = DataRun(item.region[: -len(_DONE_TAIL)], item.count - 1, item.id, item.retry)
            events = decode_run(item)
            if events is not None:
                self._ready.extend(events)
            else:
                self._pending.extendleft(reversed(item.events()))
            return False
        sse: ServerSentEvent = item  # type: ignore[assignment]
        if sse.raw == DONE:
            return True
        try:
            self._ready.append(decode_event(sse, self._index + len(self._ready)))
        except StreamDecodeError as exc:
            self._ready.append(exc)  # raised in its turn, after the events before it
        return False

    def _deliver(self, event: Event) -> None:
        self._changed = apply_event(self._state, event)
        if event.event_id is not None:
            self._last_event_id = event.event_id

    def _check_caught_up(self, event: Event, index: int) -> None:
        assert self._quiet_until is not None
        target_id, target_position = self._quiet_until
        if (target_id is not None and event.event_id == target_id) or index + 1 >= target_position:
            self._quiet_until = None

    async def _fill(self) -> None:
        response = self._response
        assert response is not None
        now = monotonic()
        if self._started is None:
            self._started = now
        limit, seconds, deadline = self._deadline(now)
        if deadline is not None and deadline <= now:
            chunk: bytes | None = None
        else:
            try:
                chunk = await self._read(response, now, deadline)
            except APIConnectionError as exc:
                await self._release()
                self._break = _Break(f"connection broke ({exc.message})", exc)
                return
            except BaseException:
                # Cancelled: release now, keep what was folded.
                await self._release()
                raise
        if chunk is None:
            await self._release()
            self._break = _Break(
                f"no event for {seconds:g} s ({limit} limit)", limit=limit, seconds=seconds
            )
            if limit == "total":
                raise self._give_up(self._break)
            return
        try:
            events = self._decoder.feed_runs(chunk) if chunk else self._decoder.close()
        except EventTooLargeError as exc:
            await self._finish()
            raise StreamDecodeError(
                str(exc),
                index=self._index + len(self._pending),
                event_id=self._decoder.last_event_id,
                data=b"",
                worker=self._state.snapshot(),
            ) from None
        if self._decoder.retry is not None:
            self._retry_ms = self._decoder.retry
        if events:
            self._take(events)
        if not chunk:
            await self._release()
            self._break = _Break("the connection ended before the stream's end")

    async def _read(self, response: Response, now: float, deadline: float | None) -> bytes | None:
        """The next bytes, or ``None`` if the stall deadline came first."""
        read_timeout = self._policy.read_timeout
        if deadline is None or (read_timeout is not None and deadline - now > read_timeout):
            # The transport's own read timeout fires first: no scope needed, and
            # a live stream saves a timer per read.
            return await response.read_chunk()
        with anyio.move_on_after(deadline - now):
            return await response.read_chunk()
        return None

    def _take(self, items: Sequence[ServerSentEvent | DataRun]) -> None:
        self._last_activity = monotonic()
        if self._resyncing or self._skip or self._skip_through is not None:
            # Resuming: work event by event until the replay has caught up.
            self._take_events(expand_runs(items))
            return
        received = 0
        last_id = None
        for item in items:
            if type(item) is DataRun:
                received += item.count - item.region.endswith(b"data: [DONE]")
            else:
                received += item.raw != DONE  # type: ignore[union-attr]
            last_id = item.id if item.id is not None else last_id
        self._pending.extend(items)
        self._took(received, last_id, items)

    def _take_events(self, events: list[ServerSentEvent]) -> None:
        if self._resyncing and events:
            self._resync(events[0])
        if self._skip:
            # Resumed by position: the first events replay what we already have.
            skipped = min(self._skip, len(events))
            self._skip -= skipped
            events = events[skipped:]
        if self._skip_through is not None and events:
            last, i = self._skip_through, 0
            while i < len(events) and _not_after(events[i].id, last):
                i += 1
            if i < len(events):
                self._skip_through = None
            events = events[i:]
        if not events:
            return
        self._pending.extend(events)
        self._took(len(events) - (events[-1].raw == DONE), events[-1].id, events)

    def _took(
        self, received: int, last_id: str | None, items: Sequence[ServerSentEvent | DataRun]
    ) -> None:
        self._received += received
        if last_id is not None:
            self._received_id = last_id
            if self._first_id is None:
                self._first_id = next(i.id for i in items if i.id is not None)
        self._seen_event = True
        self._attempts = 0

    def _resync(self, first: ServerSentEvent) -> None:
        """From a resumed connection's first event, tell where the server restarted.

        A server that honours Last-Event-ID continues after it. One that
        replays the worker from the start instead shows it by the first id:
        the first one we ever saw (skip what we have, by count), or one not
        after our last (skip through our last id).
        """
        self._resyncing = False
        last = self._resumed_from
        if last is None or first.id is None:
            return
        if first.id == self._first_id:
            self._skip = self._received
        elif _not_after(first.id, last):
            self._skip_through = last

    def _deadline(self, now: float) -> tuple[str, float, float | None]:
        """The nearest stall limit: its name, its seconds, and when it expires."""
        policy = self._policy
        best: tuple[str, float, float | None] = ("", 0.0, None)
        candidates: list[tuple[str, float | None, float | None]] = [
            ("total", policy.total_timeout, self._started),
            (
                "idle" if self._seen_event else "first_event",
                policy.idle_timeout if self._seen_event else policy.first_event_timeout,
                self._last_activity if self._last_activity is not None else self._started,
            ),
        ]
        for name, seconds, since in candidates:
            if seconds is None or since is None:
                continue
            expires = since + seconds
            if best[2] is None or expires < best[2]:
                best = (name, seconds, expires)
        return best

    async def _after_connection(self) -> None:
        """The connection is gone and all it brought was delivered: end, resume or fail."""
        brk = self._break or _Break("the stream was closed")
        if self._done_marker:
            self._finished = True
            return
        clean_end = brk.cause is None and not brk.limit
        if clean_end and self._state.status == "completed":
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
        if self._received_id is None and not self._from_start:
            return (
                "the server sent no event ids and the stream did not start at the "
                "worker's first event, so there is nowhere exact to resume from"
            )
        return ""

    def _give_up(self, brk: _Break, why_not: str = "") -> IncompleteStreamError:
        self._finished = True
        worker = self._state.snapshot()
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
        return error

    async def _resume(self, brk: _Break) -> None:
        assert self._reopen is not None
        while True:
            self._attempts += 1
            delay = _reconnect_delay(self._attempts, self._retry_ms)
            await anyio.sleep(delay)
            last_id = self._received_id
            try:
                response, initial = await self._reopen(self.worker_id, last_id)
            except (APIConnectionError, APIStatusError) as exc:
                retryable = isinstance(exc, APIConnectionError) or exc.status_code in (
                    408,
                    409,
                    429,
                    500,
                    502,
                    503,
                    504,
                )
                brk = _Break(f"{brk.reason}; resuming failed ({exc})", exc, brk.limit, brk.seconds)
                if not retryable or self._attempts >= self._policy.max_reconnects:
                    raise self._give_up(brk) from exc
                continue
            break
        self._reconnects += 1
        skipped = 0
        self._resumed_from, self._resyncing = last_id, last_id is not None
        self._skip_through = None
        if last_id is None:
            skipped = self._skip = self._received
        log.info(
            "resumed worker %s after: %s (attempt %d, from %s)",
            self.worker_id,
            brk.reason,
            self._attempts,
            f"id {last_id}" if last_id is not None else f"the start, skipping {skipped}",
        )
        self._decoder = SSEDecoder(self._max_event_bytes)
        self._break = None
        # Each connection gets the whole idle allowance.
        self._last_activity = monotonic()
        self._response = response
        if response is None:
            # A JSON answer: one snapshot, and nothing more to follow.
            self._finished = True
        self._ready.append(
            Reconnected(
                attempt=self._attempts,
                reason=brk.reason,
                delay=delay,
                last_event_id=last_id,
                skipped=skipped,
            )
        )
        self._ready.extend(initial)

    async def _catch_up_to(self, checkpoint: Checkpoint) -> None:
        """Fold the replay silently through the checkpoint's last event (``workers.resume``)."""
        if checkpoint.last_event_id is None and not checkpoint.position:
            return
        position = checkpoint.position if checkpoint.position is not None else 1 << 62
        self._quiet_until = (checkpoint.last_event_id, position)
        await self._next_notice(catch_up=True)

    async def _drain(self) -> None:
        """After ``[DONE]``: read the (normally empty) rest of the body, then release.

        Reading to the end lets the connection go back to the pool, and lets
        the transport's readers finish instead of being abandoned mid-body.
        """
        response = self._response
        if response is not None:
            left = _DRAIN_BYTES
            with anyio.move_on_after(_DRAIN_SECONDS):
                try:
                    while left > 0 and (chunk := await response.read_chunk()):
                        left -= len(chunk)
                except HandingerError:
                    pass
        await self._release()

    # -- closing --------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the stream and release the HTTP response. Idempotent; what was
        folded stays readable on :attr:`snapshot`."""
        await self._finish()

    async def _finish(self) -> None:
        self._finished = True
        self._pending.clear()
        self._ready.clear()
        await self._release()

    async def _release(self) -> None:
        response = self._response
        if response is not None:
            try:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
            finally:
                # Only now is it closed: `closed` never runs ahead of the transport.
                self._response = None

    def _abandon(self) -> None:
        """Left without ``aclose()`` (a loop exited early): close as soon as possible."""
        self._finished = True
        self._pending.clear()
        self._ready.clear()
        response = self._response
        if response is None:
            return
        if response.abort():
            self._response = None
            return
        _close_later(self)

    async def __aenter__(self) -> WorkerStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<WorkerStream worker={self.worker_id or '?'} {state} events={self._index}>"


class _Iterator(Generic[T]):
    """An async iterator over a stream that closes the stream when it ends or is dropped.

    A class, not an async generator: a generator left unfinished is closed by
    the event loop's finaliser, which trio reports as a ResourceWarning.
    """

    __slots__ = ("_done", "_fast", "_step", "_stream")

    def __init__(
        self,
        stream: WorkerStream,
        step: Callable[[], Awaitable[T | None]],
        fast: Callable[[], T | None] | None = None,
    ) -> None:
        self._stream = stream
        self._step = step
        # Takes an already decoded event without awaiting, when there is one.
        self._fast = fast
        self._done = False

    def __aiter__(self) -> _Iterator[T]:
        return self

    async def __anext__(self) -> T:
        fast = self._fast
        if fast is not None and (ready := fast()) is not None:
            return ready
        if self._done:
            raise StopAsyncIteration
        try:
            item = await self._step()
        except BaseException:
            self._done = True
            await self._stream.aclose()
            raise
        if item is None:
            self._done = True
            await self._stream.aclose()
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        self._done = True
        await self._stream.aclose()

    def __del__(self) -> None:
        if not self._done:
            self._stream._abandon()


def _not_after(event_id: str | None, last: str) -> bool:
    """Whether an event with this id comes no later than the event with id ``last``.

    Ids are opaque, so only equality is sure; decimal ids also compare as numbers.
    """
    if event_id is None:
        return False
    if event_id == last:
        return True
    return event_id.isdigit() and last.isdigit() and int(event_id) <= int(last)


def _reconnect_delay(attempt: int, retry_ms: int | None) -> float:
    # The server's retry: is the first wait; repeated failures back off from it.
    base = retry_ms / 1000 if retry_ms is not None else _FIRST_RECONNECT_DELAY
    delay = min(base * 2.0 ** (attempt - 1), max(_MAX_RECONNECT_DELAY, base))
    return delay * (1 - 0.25 * random.random()) if attempt > 1 else delay


_closing: set[Any] = set()


def _close_later(stream: WorkerStream) -> None:
    """Schedule ``stream.aclose()`` on the running loop, from a synchronous context."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return

    async def close() -> None:
        try:
            await stream.aclose()
        except Exception:  # nobody is left to report it to
            log.debug("closing an abandoned stream failed", exc_info=True)

    if library == "trio":
        import trio

        token = trio.lowlevel.current_trio_token()
        token.run_sync_soon(lambda: trio.lowlevel.spawn_system_task(close))
    else:
        task = asyncio.get_running_loop().create_task(close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
