"""``client.workers.schedules``: tasks a worker template runs later or again.

``when`` is a dict with a ``type`` and its one field, under the official
SDK's names or the wire's: ``{"type": "scheduled", "date": datetime | ISO
string}``, ``{"type": "delayed", "delay_in_seconds": 60}``, ``{"type": "cron",
"cron": "0 9 * * 1"}``, ``{"type": "interval", "interval_seconds": 3600}``.

>>> schedule_when({"type": "delayed", "delay_in_seconds": 60})
{'type': 'delayed', 'delayInSeconds': 60}
>>> schedule_when({"type": "hourly"})
Traceback (most recent call last):
  ...
handinger_stream.errors.InvalidRequestError: when['type'] must be one of scheduled, delayed, \
cron, interval; got 'hourly'
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ...errors import InvalidRequestError
from ...types.schedule import ScheduleCancelResponse, ScheduleListResponse, WorkerSchedule
from ...types.worker import Budget
from ..base import AsyncAPIClient, Headers
from ..paths import path_segment
from ..sync_base import SyncAPIClient
from ._bodies import decode_body, input_body, today_only

__all__ = ["Schedules", "SyncSchedules", "schedule_when"]

# type -> (its field as the SDK names it, as the wire names it, what it must be)
_WHEN: dict[str, tuple[str, str, str]] = {
    "scheduled": ("date", "date", "a datetime or an ISO-8601 string"),
    "delayed": ("delay_in_seconds", "delayInSeconds", "a positive int"),
    "cron": ("cron", "cron", "a cron expression"),
    "interval": ("interval_seconds", "intervalSeconds", "a positive int"),
}


def schedule_when(when: Mapping[str, Any]) -> dict[str, Any]:
    """``when`` as the wire wants it, or :class:`InvalidRequestError` naming what is wrong."""
    if not isinstance(when, Mapping):
        raise InvalidRequestError(f"when must be a dict with a 'type'; got {when!r}")
    kind = when.get("type")
    if kind not in _WHEN:
        raise InvalidRequestError(f"when['type'] must be one of {', '.join(_WHEN)}; got {kind!r}")
    name, wire, what = _WHEN[kind]
    value = when.get(name, when.get(wire))
    if kind == "scheduled":
        if isinstance(value, datetime):
            value = value.isoformat()
        ok = isinstance(value, str) and bool(value)
    elif kind == "cron":
        ok = isinstance(value, str) and bool(value.strip())
    else:
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    if not ok:
        raise InvalidRequestError(
            f"when[{name!r}] must be {what} for a {kind} schedule; got {value!r}"
        )
    return {"type": kind, wire: value}


class Schedules:
    """``client.workers.schedules``: create, list and cancel a template's schedules."""

    def __init__(self, client: AsyncAPIClient) -> None:
        self._client = client

    async def create(
        self,
        worker_id: str,
        *,
        input: str,
        when: Mapping[str, Any],
        budget: Budget | None = None,
        extra_headers: Headers = None,
    ) -> WorkerSchedule:
        """Run ``input`` on the template later or again; each run is a task.

        >>> await client.workers.schedules.create(  # doctest: +SKIP
        ...     "wrk_1", input="Weekly report", when={"type": "cron", "cron": "0 9 * * 1"})
        """
        body = {**input_body(input, budget), "when": schedule_when(when)}
        raw = await today_only(
            self._client._json("POST", _path(worker_id), json=body, headers=extra_headers),
            "schedules",
        )
        return decode_body(raw, WorkerSchedule)  # type: ignore[arg-type]

    async def list(self, worker_id: str, *, extra_headers: Headers = None) -> ScheduleListResponse:
        """The template's schedules."""
        raw = await today_only(
            self._client._json("GET", _path(worker_id), headers=extra_headers), "schedules"
        )
        return decode_body(raw, ScheduleListResponse)

    async def cancel(
        self, schedule_id: str, *, worker_id: str, extra_headers: Headers = None
    ) -> ScheduleCancelResponse:
        """Cancel a schedule's future runs (tasks already started go on)."""
        path = f"{_path(worker_id)}/{path_segment(schedule_id, 'schedule_id')}"
        raw = await today_only(
            self._client._json("DELETE", path, headers=extra_headers), "schedules"
        )
        return decode_body(raw, ScheduleCancelResponse)


class SyncSchedules:
    """``client.workers.schedules`` for sync code: :class:`Schedules`' calls, without ``await``."""

    def __init__(self, client: SyncAPIClient, schedules: Schedules) -> None:
        self._client = client
        self._schedules = schedules

    def create(
        self,
        worker_id: str,
        *,
        input: str,
        when: Mapping[str, Any],
        budget: Budget | None = None,
        extra_headers: Headers = None,
    ) -> WorkerSchedule:
        """Run ``input`` on the template later or again."""
        return self._client._call(
            self._schedules.create,
            worker_id,
            input=input,
            when=when,
            budget=budget,
            extra_headers=extra_headers,
        )

    def list(self, worker_id: str, *, extra_headers: Headers = None) -> ScheduleListResponse:
        """The template's schedules."""
        return self._client._call(self._schedules.list, worker_id, extra_headers=extra_headers)

    def cancel(
        self, schedule_id: str, *, worker_id: str, extra_headers: Headers = None
    ) -> ScheduleCancelResponse:
        """Cancel a schedule's future runs."""
        return self._client._call(
            self._schedules.cancel, schedule_id, worker_id=worker_id, extra_headers=extra_headers
        )


def _path(worker_id: str) -> str:
    return f"/api/workers/{path_segment(worker_id, 'worker_id')}/schedules"
