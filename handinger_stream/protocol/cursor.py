"""Where a stream is in its worker's replay: the rules of an exact resume.

Sans-IO and clock-free: the stream tells the cursor what arrived and when it
reconnected; the cursor says what ``Last-Event-ID`` to send, whether a
resume can be exact at all, and which events a replay repeats (to skip).

A resumed connection may honour ``Last-Event-ID`` (it continues after it),
or replay the worker from its first event anyway: the API promises only that
the replay stream "replays every stored event". The first event of the new
connection tells which:

- its id is the first id this stream ever saw: the server started over at
  our first event, so skip as many events as we received;
- its id is our last id, or a decimal id not after it: skip through our last id;
- anything else: the server continued after our last id, nothing to skip.

Without ids the stream replays from the start and skips by count, which is
exact only when the stream itself began at the worker's first event.

>>> from handinger_stream.protocol.sse import ServerSentEvent as E
>>> cursor = ReplayCursor(from_start=True)
>>> cursor.take(3, "0", "2")
>>> cursor.resumed()
0
>>> replay = [E(b"{}", id=str(i)) for i in range(4)]  # this server ignores Last-Event-ID
>>> [e.id for e in cursor.admit(replay)]
['3']
"""

from __future__ import annotations

from collections.abc import Sequence

from .sse import ServerSentEvent
from .wire import DONE

__all__ = ["ReplayCursor", "not_after", "reached"]


class ReplayCursor:
    """What a stream received, and what a replay after a resume must skip.

    ``from_start``: the stream began at the worker's first event, so
    positions line up with the worker's replay stream.
    """

    __slots__ = (
        "_resumed_from",
        "_resyncing",
        "_skip",
        "_skip_through",
        "first_id",
        "from_start",
        "last_id",
        "received",
        "resuming",
    )

    def __init__(self, *, from_start: bool) -> None:
        self.from_start = from_start
        self.received = 0  # events kept, across connections ([DONE] is not an event)
        self.first_id: str | None = None
        self.last_id: str | None = None
        self._skip = 0  # replayed events still to skip, by count...
        self._skip_through: str | None = None  # ...or up to and including this id
        self._resumed_from: str | None = None
        self._resyncing = False  # the next event tells how the server resumed
        self.resuming = False
        """True while events must pass :meth:`admit` (a replay may repeat some)."""

    def _update(self) -> None:
        # An attribute, not a property: the stream reads it at every read.
        self.resuming = self._resyncing or self._skip > 0 or self._skip_through is not None

    def take(self, count: int, first_id: str | None, last_id: str | None) -> None:
        """Count events kept without filtering (when not :attr:`resuming`)."""
        self.received += count
        if last_id is not None:
            self.last_id = last_id
            if self.first_id is None:
                self.first_id = first_id

    def admit(self, events: Sequence[ServerSentEvent]) -> list[ServerSentEvent]:
        """Drop what a replay repeats; count and return the rest, in order."""
        kept = list(events)
        if self._resyncing and kept:
            self._resync(kept[0].id)
        if self._skip:
            # Never skip [DONE]: it is not one of the events being counted.
            skip = min(self._skip, sum(1 for e in kept if e.raw != DONE))
            self._skip -= skip
            kept = kept[skip:]
        if self._skip_through is not None and kept:
            last, i = self._skip_through, 0
            while i < len(kept) and not_after(kept[i].id, last):
                i += 1
            if i < len(kept):
                self._skip_through = None
            kept = kept[i:]
        if kept:
            ids = [e.id for e in kept if e.id is not None]
            count = len(kept) - (kept[-1].raw == DONE)
            self.take(count, ids[0] if ids else None, ids[-1] if ids else None)
        self._update()
        return kept

    @classmethod
    def resuming_after(cls, last_id: str) -> ReplayCursor:
        """A cursor for a connection opened with ``Last-Event-ID: last_id`` by a stream
        that started elsewhere (a relay taking over a turn another process read).

        Nothing is known of that stream's start, so a replay is recognised by its
        first event only: repeated ids are skipped through ``last_id``.

        >>> cursor = ReplayCursor.resuming_after("5")
        >>> [cursor.admit_id(i) for i in ("4", "5", "6", "7")]
        [False, False, True, True]
        """
        cursor = cls(from_start=False)
        cursor.last_id = last_id
        cursor.resumed()
        return cursor

    def admit_id(self, event_id: str | None) -> bool:
        """:meth:`admit` for one event known by its id alone (a decoded event, say):
        whether to keep it (it is then counted) or skip it as a repeat."""
        if not self.resuming:
            self.take(1, event_id, event_id)
            return True
        return bool(self.admit([ServerSentEvent(b"", id=event_id)]))

    def unresumable(self) -> str:
        """Why a resume could not be exact ("" when it can be)."""
        if self.last_id is None and not self.from_start:
            return (
                "the server sent no event ids and the stream did not start at the "
                "worker's first event, so there is nowhere exact to resume from"
            )
        return ""

    def resumed(self) -> int:
        """A new connection was opened with ``Last-Event-ID`` = :attr:`last_id`.

        Returns how many events it will skip by count when there was no id to
        send (the replay then starts at the worker's first event).
        """
        self._resumed_from = self.last_id
        self._resyncing = self.last_id is not None
        self._skip_through = None
        self._skip = 0 if self.last_id is not None else self.received
        self._update()
        return self._skip

    def _resync(self, first: str | None) -> None:
        self._resyncing = False
        last = self._resumed_from
        if last is None or first is None:
            return
        if first == self.first_id:
            self._skip = self.received
        elif not_after(first, last):
            self._skip_through = last


def not_after(event_id: str | None, last: str) -> bool:
    """Whether an event with this id comes no later than the event with id ``last``.

    Ids are opaque, so only equality is sure; ids of ASCII digits also compare
    as numbers. Only ASCII: ``str.isdigit`` takes other scripts' digits too
    (``"٣"`` would be 3), and a server's ids are not to be read that loosely.
    Compared as text (length, then digits), never through ``int``, which
    refuses 4,300 digits and costs quadratic time on fewer.

    >>> not_after("9", "10"), not_after("b", "a"), not_after("a", "a")
    (True, False, True)
    >>> not_after("\u0663", "5"), not_after("007", "10"), not_after("9" * 5000, "1" + "0" * 5000)
    (False, True, True)
    """
    if event_id is None:
        return False
    if event_id == last:
        return True
    ours, theirs = _decimal(event_id), _decimal(last)
    if ours is None or theirs is None:
        return False
    return (len(ours), ours) <= (len(theirs), theirs)


def _decimal(event_id: str) -> str | None:
    """An id of ASCII digits without its leading zeros ("0" for zero); else ``None``."""
    if not (event_id.isascii() and event_id.isdigit()):
        return None
    return event_id.lstrip("0") or "0"


def reached(target_id: str | None, target_position: int, event_id: str | None, index: int) -> bool:
    """Whether event ``index`` (with ``event_id``) is a checkpoint's last event, or past it.

    >>> reached("41", 42, "41", 41), reached(None, 42, None, 40), reached(None, 42, None, 41)
    (True, False, True)
    """
    return (target_id is not None and event_id == target_id) or index + 1 >= target_position
