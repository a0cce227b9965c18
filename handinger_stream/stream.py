"""WorkerStream: a live worker, as typed events and a growing snapshot.

The stream is a thin I/O shell: bytes from the transport go through the
sans-IO :class:`~handinger_stream.sse.SSEDecoder`, then
:func:`~handinger_stream.wire.decode_event`, then
:func:`~handinger_stream.reducer.apply_event`. The HTTP response is released
as soon as the stream ends, fails, is left early or is cancelled.

>>> async def show(client):  # doctest: +SKIP
...     stream = await client.workers.create(input="Hi", stream=True)
...     async for text in stream.text_deltas():
...         print(text, end="", flush=True)
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Literal

import anyio

from .errors import HandingerError, IncompleteStreamError, StreamDecodeError, WorkerFailedError
from .events import Event, TextDeltaEvent
from .models import Worker
from .reducer import WorkerState, apply_event
from .sse import DEFAULT_MAX_EVENT_BYTES, EventTooLargeError, ServerSentEvent, SSEDecoder
from .transport import Response
from .wire import DONE, decode_event

__all__ = ["WorkerStream"]

log = logging.getLogger("handinger_stream")

OnDecodeError = Literal["raise", "skip"]
_DRAIN_BYTES = 64 * 1024
_DRAIN_SECONDS = 1.0


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
    ) -> None:
        self._response = response
        self._decoder = SSEDecoder(max_event_bytes)
        self._pending: deque[ServerSentEvent] = deque()
        self._ready: deque[Event] = deque(initial or ())
        self._state = WorkerState(worker_id)
        self._on_decode_error = on_decode_error
        self._index = 0
        self._eof = response is None
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
    def closed(self) -> bool:
        """True once the HTTP response has been released."""
        return self._response is None

    @property
    def completed(self) -> bool:
        """True when the stream reached its end marker, or the worker completed."""
        return self._done_marker or (self._eof and self._state.status == "completed")

    # -- iteration ------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        # A fresh generator per loop: when the loop is left early the generator
        # is finalised and its ``finally`` releases the response.
        return self._events()

    async def __anext__(self) -> Event:
        event = await self._next()
        if event is None:
            raise StopAsyncIteration
        return event

    async def _events(self) -> AsyncIterator[Event]:
        try:
            while (event := await self._next()) is not None:
                yield event
        finally:
            await self.aclose()

    async def text_deltas(self) -> AsyncIterator[str]:
        """Only the answer's text, piece by piece: for live token display."""
        try:
            while (event := await self._next()) is not None:
                if type(event) is TextDeltaEvent:
                    yield event.delta
        finally:
            await self.aclose()

    async def snapshots(self, min_interval: float | None = None) -> AsyncIterator[Worker]:
        """The Worker after each event that changed it.

        With ``min_interval`` (seconds) snapshots are coalesced so a display
        refreshing a few times a second does not pay per token; the last one
        is always delivered.
        """
        last_sent = -float("inf")
        unsent = False
        try:
            while (event := await self._next_changed()) is not None:
                del event
                if min_interval:
                    now = anyio.current_time()
                    if now - last_sent < min_interval:
                        unsent = True
                        continue
                    last_sent = now
                unsent = False
                yield self._state.snapshot()
            if unsent:
                yield self._state.snapshot()
        finally:
            await self.aclose()

    async def get_final_worker(self) -> Worker:
        """Read to the end; the whole Worker.

        Raises :class:`WorkerFailedError` when the worker reported an error and
        :class:`IncompleteStreamError` when the stream ended before its end.
        """
        try:
            while await self._next() is not None:
                pass
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
        ready = self._ready
        pending = self._pending
        while True:
            if ready:
                event = ready.popleft()
                self._deliver(event)
                return event
            if pending:
                sse = pending.popleft()
                index = self._index
                self._index = index + 1
                if sse.raw == DONE:
                    self._done_marker = True
                    pending.clear()
                    await self._drain()
                    continue
                try:
                    event = decode_event(sse, index)
                except StreamDecodeError as exc:
                    if self._on_decode_error == "skip":
                        log.warning("skipping undecodable event: %s", exc)
                        continue
                    exc.worker = self._state.snapshot()
                    await self._release()
                    raise
                self._deliver(event)
                return event
            if self._eof:
                return None
            await self._fill()

    def _deliver(self, event: Event) -> None:
        self._changed = apply_event(self._state, event)
        if event.event_id is not None:
            self._last_event_id = event.event_id

    async def _fill(self) -> None:
        response = self._response
        if response is None:
            self._eof = True
            return
        try:
            chunk = await response.read_chunk()
            if chunk:
                self._pending.extend(self._decoder.feed(chunk))
            else:
                self._pending.extend(self._decoder.close())
                await self._release()
        except EventTooLargeError as exc:
            await self._release()
            raise StreamDecodeError(
                str(exc),
                index=self._index,
                event_id=self._decoder.last_event_id,
                data=b"",
                worker=self._state.snapshot(),
            ) from None
        except BaseException:
            # Cancelled, or the connection broke: release now, keep what was folded.
            await self._release()
            raise

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
        self._pending.clear()
        self._ready.clear()
        await self._release()

    async def _release(self) -> None:
        response, self._response = self._response, None
        self._eof = True
        if response is not None:
            with anyio.CancelScope(shield=True):
                await response.aclose()

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
