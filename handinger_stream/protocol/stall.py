"""The stall limits of one stream, as a clock that is told the time.

Three limits, each ``None`` for none: ``first_event`` (from opening until
the first event), ``idle`` (between events) and ``total`` (the whole stream,
resumes included). Each new connection restarts the first-event or idle
allowance; keep-alive comments are not progress, only events are.

The clock reads no time itself, so the rules are tested with plain numbers.

>>> clock = StallClock(first_event=10.0, idle=30.0, total=None)
>>> clock.start(100.0)
>>> clock.limit
Limit(name='first_event', seconds=10.0, expires=110.0)
>>> clock.progress(105.0)
>>> clock.limit
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
    """Which stall limit expires next, from the times it is told.

    The stream reads :attr:`expires` (a plain float: it is checked at every
    read); :attr:`next` names the limit.
    """

    __slots__ = (
        "_first_event",
        "_idle",
        "_seen_event",
        "_total",
        "_total_at",
        "expires",
        "next",
        "started",
    )

    def __init__(self, *, first_event: float | None, idle: float | None, total: float | None):
        self._first_event = first_event
        self._idle = idle
        self._total = total
        self.started = False
        self._seen_event = False
        self._total_at = float("inf")
        self.expires = float("inf")
        """When the nearest limit expires (``inf``: none is running)."""
        self.next: Limit | None = None
        """The limit that expires first, or ``None`` (no limit, or not started)."""

    def start(self, now: float) -> None:
        """The stream began reading (the total limit runs from here)."""
        if self.started:
            return
        self.started = True
        if self._total is not None:
            self._total_at = now + self._total
        self._restart(now)

    def connected(self, now: float) -> None:
        """A new connection: it gets the whole first-event or idle allowance."""
        self._restart(now)

    def progress(self, now: float) -> None:
        """Events arrived."""
        limit = self.next
        if limit is not None and limit.name == "idle" and now + limit.seconds < self._total_at:
            # The hot case (a live stream): only the idle deadline moves.
            self.expires = now + limit.seconds
            return
        self._seen_event = True
        self._restart(now)

    def _restart(self, now: float) -> None:
        if self._seen_event:
            name, seconds = "idle", self._idle
        else:
            name, seconds = "first_event", self._first_event
        if seconds is not None and now + seconds < self._total_at:
            self.expires, self.next = now + seconds, Limit(name, seconds, now + seconds)
        elif self._total is not None:
            self.expires, self.next = self._total_at, Limit("total", self._total, self._total_at)
        else:
            self.expires, self.next = float("inf"), None

    @property
    def limit(self) -> Limit | None:
        """The limit that expires first, as of now."""
        if self.next is not None and self.next.expires != self.expires:
            self.next = self.next._replace(expires=self.expires)
        return self.next
