"""A worker's stored events, which every stream of the worker reads: replays, resumes, live.

An event's index in the log is its SSE id. A seed-generation worker has a
log of its own; a worker template has one for all its tasks, so that its
replay (``GET /api/workers/{id}?stream=true``) holds them all, in order.

>>> log = EventLog()
>>> log.append({"type": "start"})
>>> log.events
[(0, b'{"type":"start"}')]
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import msgspec

__all__ = ["EventLog"]

_encode = msgspec.json.Encoder().encode


@dataclass
class EventLog:
    """The events, a wake-up for readers waiting on the next one, and whether a turn runs."""

    # (sequence number, JSON payload); the sequence number is the SSE id.
    events: list[tuple[int, bytes]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    turn_active: bool = False

    def append(self, chunk: dict[str, Any]) -> None:
        """Store a chunk as the next event, and wake the readers."""
        self.events.append((len(self.events), _encode(chunk)))
        self.notify()

    def notify(self) -> None:
        """Wake every reader waiting now; later ones wait for the next change."""
        self.changed.set()
        self.changed = asyncio.Event()
