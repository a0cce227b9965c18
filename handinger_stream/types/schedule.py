"""Schedules: tasks a worker template runs later or again (``api-current.md``).

A schedule is a tagged union on ``type``: ``scheduled`` (a date), ``delayed``
(seconds from now), ``cron`` (a cron expression) or ``interval`` (every so
many seconds). Each run is a task with ``triggeredBy: "schedule"``.

>>> raw = b'{"id": "s1", "type": "cron", "cron": "0 9 * * 1", "input": "Report",'
>>> raw += b' "budget": "low", "nextRunAt": "2026-12-07T09:00:00Z"}'
>>> s = msgspec.json.decode(raw, type=WorkerSchedule)
>>> (type(s).__name__, s.type, s.cron, s.next_run_at.year)
('CronWorkerSchedule', 'cron', '0 9 * * 1', 2026)
"""

from __future__ import annotations

from datetime import datetime
from typing import Union

import msgspec

from .worker import Budget

__all__ = [
    "CronWorkerSchedule",
    "DelayedWorkerSchedule",
    "IntervalWorkerSchedule",
    "ScheduleCancelResponse",
    "ScheduleListResponse",
    "ScheduledWorkerSchedule",
    "WorkerSchedule",
]


class _Schedule(msgspec.Struct, kw_only=True, rename="camel", tag_field="type"):
    id: str
    input: str
    budget: Budget = "standard"
    next_run_at: datetime | None = None

    @property
    def type(self) -> str:
        """The kind of schedule, as the wire's ``type`` says (the union's tag)."""
        return str(self.__struct_config__.tag)


class ScheduledWorkerSchedule(_Schedule, tag="scheduled"):
    """Runs once, at ``date``."""

    date: datetime


class DelayedWorkerSchedule(_Schedule, tag="delayed"):
    """Runs once, ``delay_in_seconds`` after it was made."""

    delay_in_seconds: int


class CronWorkerSchedule(_Schedule, tag="cron"):
    """Runs whenever the cron expression ``cron`` matches."""

    cron: str


class IntervalWorkerSchedule(_Schedule, tag="interval"):
    """Runs every ``interval_seconds``."""

    interval_seconds: int


# Union, not |: the alias is evaluated at import time on Python 3.10 too.
WorkerSchedule = Union[  # noqa: UP007
    ScheduledWorkerSchedule, DelayedWorkerSchedule, CronWorkerSchedule, IntervalWorkerSchedule
]


class ScheduleListResponse(msgspec.Struct, kw_only=True, rename="camel"):
    """``workers.schedules.list``: a template's schedules."""

    worker_id: str
    schedules: list[WorkerSchedule] = msgspec.field(default_factory=list)


class ScheduleCancelResponse(msgspec.Struct, kw_only=True):
    """``workers.schedules.cancel``: whether future runs were cancelled."""

    cancelled: bool
