"""The hand-over core of a worker's stream: its queue and its states, without I/O.

:class:`~handinger_stream.client.stream.WorkerStream` is two parts. This
module is the core: what has been decoded and not yet handed over, the
Worker folded from what has, and where the stream is in its life. The
driver on top (``client/stream.py``) reads, decodes, resumes and closes, and
tells the core what happened; the core touches no network, reads no clock
and never awaits, so it is tested with plain values.

**The queue.** One read's decoded events, in order: ``queue[head:limit]``
are plain events, handed over by index (``queue[head]``, then ``head += 1``:
the iterators do it inline, it is the hot path). ``limit`` stops early at
what needs a look first: a pending :class:`Reconnected` notice (``limit ==
head``), else a bad event (a :class:`StreamDecodeError` in its own slot,
listed in ``stops``), else the end of what was decoded, where the driver
reads again. Events are folded in batches, when the Worker is looked at and
before the next read, so the snapshot is exact whenever it is read.

**The states**, each transition allowed in :data:`TRANSITIONS` and nowhere
else; entering a state that is not allowed is a bug, and raises
:class:`TransitionError`::

              [DONE] decoded            all handed over, drained
    OPEN ───────────────────▶ DONE ─────────────────────────────▶ FINISHED
     │ ▲                                                             ▲
     │ │   reopened: a stream                reopened: a JSON answer │
     │ └──────────────────────┐ ┌────────────────────────────────────┤
     │ broke, ended early,    │ │                                    │
     ▼ or silent too long     │ │                                    │
    BROKEN ─────resume─────▶ RESUMING                                │
     │ ▲                      │                                      │
     │ └────interrupted───────┘                                      │
     └───────────── a clean end, and the worker completed ───────────┘

    From OPEN, DONE, BROKEN and RESUMING, also: ──▶ FAILED (an error is
    raised: a bad event, no resume possible, a stall limit) and ──▶ CLOSED
    (``aclose()``, or an iterator dropped early).

    state     what it means                                   may become
    --------  ----------------------------------------------  --------------------------------
    OPEN      a connection is being read                      DONE BROKEN FAILED CLOSED
    DONE      ``[DONE]`` arrived: what came before it is      FINISHED FAILED CLOSED
              handed over, then the connection drained
    BROKEN    the connection ended before the stream's end;   RESUMING FINISHED FAILED CLOSED
              once what it brought is handed over, the
              driver resumes, ends, or gives up
    RESUMING  waiting, then reopening the replay stream       OPEN FINISHED BROKEN FAILED CLOSED
    FINISHED  nothing more to read, no error                  (final)
    FAILED    an error ended it: no resume, a stall limit,    (final)
              a bad event raised
    CLOSED    its consumer closed it before its end           (final)

A JSON answer (no stream to read, only its events) starts FINISHED.

>>> from handinger_stream.types.events import TextDeltaEvent, TextStartEvent
>>> handover = Handover("w1")
>>> handover.queue += [TextStartEvent(id="t"), TextDeltaEvent(id="t", delta="Hi")]
>>> handover.set_limit()
>>> while handover.head < handover.limit:  # what an iterator does, inline
...     handover.head += 1
>>> handover.snapshot().output_text
'Hi'
>>> handover.enter(StreamState.DONE)
>>> handover.enter(StreamState.OPEN)
Traceback (most recent call last):
...
handinger_stream.protocol.handover.TransitionError: a stream cannot go from DONE to OPEN
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from ..errors import HandingerError, StreamDecodeError
from ..types.events import AISDKVersion, Event, Reconnected
from ..types.worker import Worker
from .reducer import WorkerState

__all__ = [
    "BROKEN",
    "CLOSED",
    "DONE",
    "FAILED",
    "FINAL",
    "FINISHED",
    "OPEN",
    "RESUMING",
    "TRANSITIONS",
    "Handover",
    "StreamState",
    "TooLarge",
    "TransitionError",
]


class StreamState(enum.Enum):
    """Where a stream is in its life (the table is in the module docstring)."""

    OPEN = "open"
    DONE = "done"
    BROKEN = "broken"
    RESUMING = "resuming"
    FINISHED = "finished"
    FAILED = "failed"
    CLOSED = "closed"


# The members under names of their own: a module global is read ten times faster
# than an Enum's attribute, and the driver checks the state at every read.
OPEN, DONE, BROKEN, RESUMING = (
    StreamState.OPEN,
    StreamState.DONE,
    StreamState.BROKEN,
    StreamState.RESUMING,
)
FINISHED, FAILED, CLOSED = StreamState.FINISHED, StreamState.FAILED, StreamState.CLOSED

TRANSITIONS: Mapping[StreamState, frozenset[StreamState]] = {
    OPEN: frozenset({DONE, BROKEN, FAILED, CLOSED}),
    DONE: frozenset({FINISHED, FAILED, CLOSED}),
    BROKEN: frozenset({RESUMING, FINISHED, FAILED, CLOSED}),
    RESUMING: frozenset({OPEN, FINISHED, BROKEN, FAILED, CLOSED}),
    FINISHED: frozenset(),
    FAILED: frozenset(),
    CLOSED: frozenset(),
}
"""The states each state may become: the one place a stream's life is written down."""

FINAL = frozenset(state for state, then in TRANSITIONS.items() if not then)
"""The states a stream ends in: nothing more is read or resumed."""


class TransitionError(RuntimeError):
    """A state change the table does not allow: a bug in the driver, never the server's doing."""


class TooLarge(StreamDecodeError):
    """An event past ``max_event_bytes``: raised in its turn even when skipping bad events."""


class Handover:
    """The queue of one stream, the Worker folded from what it handed over, and its state.

    ``skip_bad``: bad events are logged and skipped instead of raised
    (``on_decode_error="skip"``); an oversized one never is. ``ai_sdk``: the
    AI SDK major the Worker's messages are folded as (see :class:`WorkerState`).

    >>> Handover("w1", state=StreamState.FINISHED).state
    <StreamState.FINISHED: 'finished'>
    """

    __slots__ = (
        "base",
        "error",
        "folded",
        "head",
        "last_event_id",
        "limit",
        "notice",
        "queue",
        "reached_done",
        "skip_bad",
        "state",
        "stops",
        "worker_state",
    )

    def __init__(
        self,
        worker_id: str = "",
        *,
        events: list[Event] | None = None,
        skip_bad: bool = False,
        state: StreamState = OPEN,
        ai_sdk: AISDKVersion = 7,
    ) -> None:
        self.queue: list[Event | StreamDecodeError] = list(events or ())
        self.head = 0
        """The index in ``queue`` of the next item to hand over."""
        self.limit = len(self.queue)
        """Where the plain events end: ``queue[head:limit]`` need no look."""
        self.stops: list[int] = []
        """Indexes of the bad events in ``queue``, in order."""
        self.folded = 0  # queue[:folded] are in worker_state
        self.base = 0  # items handed over from earlier queues: an item's index is base + head
        self.notice: Reconnected | None = None
        self.last_event_id: str | None = None  # of the last event folded
        self.worker_state = WorkerState(worker_id, ai_sdk=ai_sdk)
        self.skip_bad = skip_bad
        self.state = state
        self.reached_done = False
        """Whether ``[DONE]`` arrived; true for good, whatever the stream became after."""
        self.error: HandingerError | None = None
        """What made the stream FAILED (told to its observer at the end)."""

    # -- the states ------------------------------------------------------------

    def enter(self, state: StreamState) -> None:
        """Move to ``state``; :class:`TransitionError` when the table does not allow it."""
        if state not in TRANSITIONS[self.state]:
            raise TransitionError(f"a stream cannot go from {self.state.name} to {state.name}")
        self.state = state
        if state is DONE:
            self.reached_done = True

    def fail(self, error: HandingerError) -> None:
        """FAILED, because of ``error`` (which the driver raises)."""
        self.enter(FAILED)
        self.error = error

    def close(self) -> None:
        """Its consumer closed the stream: fold what was handed over, drop the rest.

        CLOSED unless it had already ended (closing twice, or after the end,
        leaves the state as it was).
        """
        self.fold()
        if self.state not in FINAL:
            self.enter(CLOSED)
        del self.queue[self.head :]
        self.stops.clear()
        self.notice = None
        self.set_limit()

    # -- the queue -------------------------------------------------------------

    @property
    def index(self) -> int:
        """Items (events and bad events) handed over so far: the index the next one has."""
        return self.base + self.head

    def set_limit(self) -> None:
        """Where the plain events of the queue end: at a pending notice, or the next bad event."""
        if self.notice is not None:
            self.limit = self.head
        else:
            self.limit = self.stops[0] if self.stops else len(self.queue)

    def next_batch(self) -> None:
        """All that was decoded was handed over: fold it, and empty the queue for the next read."""
        self.fold()
        self.base += len(self.queue)
        self.queue = []
        self.head = self.limit = self.folded = 0

    def drop_taken(self) -> None:
        """Fold what was handed over and drop it, keeping what is still to be handed over.

        For a read ahead (``WorkerStream.read_ahead``): its events are appended
        after those not yet taken, so the queue holds only what is still owed,
        and :meth:`next_batch`, which drops everything, stays the single
        stream's step. Indexes shift; ``index`` stays what it was.
        """
        head = self.head
        if not head:
            return
        self.fold()
        del self.queue[:head]
        self.base += head
        self.head = self.folded = 0
        self.limit -= head
        if self.stops:
            self.stops = [at - head for at in self.stops]

    def add_too_large(self, message: str, event_id: str | None) -> None:
        """An oversized event ends what a read decoded: raised in its turn."""
        self.stops.append(len(self.queue))
        self.queue.append(TooLarge(message, index=0, event_id=event_id, data=b""))
        self.set_limit()

    def post_notice(self, notice: Reconnected, events: list[Event]) -> None:
        """A resume: the notice comes first, then the events the new connection brought."""
        self.notice = notice
        self.queue.extend(events)
        self.set_limit()

    def pop_notice(self) -> Reconnected | None:
        """The pending notice, now handed over (or dropped); the events after it are free."""
        notice, self.notice = self.notice, None
        self.set_limit()
        return notice

    def skips(self, at: int) -> bool:
        """Whether the bad event at ``queue[at]`` is skipped rather than raised."""
        return self.skip_bad and not isinstance(self.queue[at], TooLarge)

    def hand_over_bad(self, at: int) -> StreamDecodeError:
        """Hand over the bad event at ``queue[at]`` (the next item): its error, to raise or log.

        The error names the event's index in the stream and carries the
        Worker folded from the events before it.
        """
        self.fold()
        bad = self.queue[at]
        assert isinstance(bad, StreamDecodeError)
        error = StreamDecodeError(
            bad.reason,
            index=self.base + at,
            event_id=bad.event_id,
            data=bad.excerpt,
            worker=self.worker_state.snapshot(),
        )
        self.head = self.folded = at + 1
        self.stops.pop(0)
        self.set_limit()
        return error

    # -- the Worker ------------------------------------------------------------

    def fold(self) -> bool:
        """Fold the events handed over since the last fold; whether the Worker changed."""
        start, end = self.folded, self.head
        if start >= end:
            return False
        self.folded = end
        events: list[Event] = self.queue[start:end]  # type: ignore[assignment]
        for event in reversed(events):
            if event.event_id is not None:
                self.last_event_id = event.event_id
                break
        return self.worker_state.apply_all(events)

    @property
    def worker_id(self) -> str:
        """The worker's id, as far as the events handed over tell (``""`` until known)."""
        self.fold()
        return self.worker_state.id

    def snapshot(self) -> Worker:
        """The Worker as folded after the last event handed over."""
        self.fold()
        return self.worker_state.snapshot()
