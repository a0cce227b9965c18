"""The stall limits of one stream, as a clock that is told the time.

Three limits, each ``None`` for none: ``first_event`` (from opening until
the first event), ``idle`` (between events) and ``total`` (the whole stream,
resumes included). Each new connection restarts the first-event or idle
allowance; keep-alive comments are not progress, only events are.

The clock reads no time itself, so the rules are tested with plain numbers.

>>> clock = StallClock(first_event=10.0, idle=30.0, total=None)
>>> clock.start(100.0)
>>> clock.next
Limit(name='first_event', seconds=10.0, expires=110.0)
>>> clock.progress(105.0)
>>> clock.next
Limit(name='idle', seconds=30.0, expires=135.0)
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Limit", "StallClock"]


class Limit(NamedTuple):
    """The stall limit that expires first: its name, its seconds, and when."""

    name: str
    seconds: float
    expires: float


class StallClock:
    """Which stall limit expires next, from the times it is told."""

    __slots__ = ("_first_event", "_idle", "_seen_event", "_since", "_total", "next")

    def __init__(self, *, first_event: float | None, idle: float | None, total: float | None):
        self._first_event = first_event
        self._idle = idle
        self._total: Limit | None = None
        if total is not None:
            self._total = Limit("total", total, float("inf"))
        self._seen_event = False
        self._since: float | None = None
        self.next: Limit | None = None
        """The limit that expires first, or ``None`` (no limit, or not started)."""

    def start(self, now: float) -> None:
        """The stream began reading (the total limit runs from here)."""
        if self._since is not None:
            return
        if self._total is not None:
            self._total = Limit("total", self._total.seconds, now + self._total.seconds)
        self._restart(now)

    def connected(self, now: float) -> None:
        """A new connection: it gets the whole first-event or idle allowance."""
        self._restart(now)

    def progress(self, now: float) -> None:
        """Events arrived."""
        self._seen_event = True
        self._restart(now)

    def _restart(self, now: float) -> None:
        self._since = now
        if self._seen_event:
            name, seconds = "idle", self._idle
        else:
            name, seconds = "first_event", self._first_event
        nearest = self._total
        if seconds is not None and (nearest is None or now + seconds < nearest.expires):
            nearest = Limit(name, seconds, now + seconds)
        self.next = nearest
