"""Schedules: a template's input run again and again, or once later, each run a task.

``when`` is one of ``{type: "scheduled", date}`` (once, at an ISO-8601
date), ``{type: "delayed", delayInSeconds}`` (once, that long after it was
made), ``{type: "interval", intervalSeconds}`` (every so often, the first
run one interval after it was made) or ``{type: "cron", cron}`` (whenever
the cron expression matches, in UTC; parsed by the ``croniter`` library).
The :class:`Scheduler` arms each next run on the emulator's clock, and a run
arms the one after. A one-off schedule leaves the list once it ran;
cancelling one stops its future runs.

>>> from handinger_stream.testing.clock import EmulatorClock
>>> clock = EmulatorClock(start="2026-01-01T00:00:00Z")
>>> runs = []
>>> scheduler = Scheduler(clock, lambda schedule: runs.append(iso(clock.now())))
>>> schedule = scheduler.add("wrk_1", {"input": "Ping", "when": {"type": "interval",
...     "intervalSeconds": 60}})
>>> schedule.to_json()["nextRunAt"]
'2026-01-01T00:01:00.000Z'
>>> clock.advance(150), runs
(2, ['2026-01-01T00:01:00.000Z', '2026-01-01T00:02:00.000Z'])
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..errors import excerpt
from ..types.worker import BUDGETS
from .clock import Clock, Timer, iso, parse_iso
from .refusals import Refusal, require

__all__ = ["KINDS", "Schedule", "Scheduler", "next_cron_run"]

KINDS = ("scheduled", "delayed", "cron", "interval")
_LONGEST = 10 * 366 * 24 * 3600  # seconds: a delay or interval beyond ten years is a mistake
_INPUT_CHARS = 100_000
_CRON_CHARS = 256
_log = logging.getLogger(__name__)


def next_cron_run(expression: str, after: float) -> float:
    """The first instant after ``after`` that the cron ``expression`` matches (in UTC).

    >>> iso(next_cron_run("*/15 * * * *", parse_iso("2026-01-01T10:07:00Z")))
    '2026-01-01T10:15:00.000Z'
    """
    croniter = require("croniter", "a cron schedule").croniter
    start = datetime.fromtimestamp(after, timezone.utc)
    when: datetime = croniter(expression, start).get_next(datetime)
    return when.timestamp()


def _check_cron(expression: Any) -> str:
    if not isinstance(expression, str) or not expression.strip():
        raise Refusal(400, "when.cron: a cron expression is required (such as '0 9 * * 1')")
    if len(expression) > _CRON_CHARS:
        raise Refusal(400, f"when.cron: longer than {_CRON_CHARS} characters")
    croniter = require("croniter", "a cron schedule").croniter
    if not croniter.is_valid(expression):
        raise Refusal(
            400, f"when.cron: {excerpt(repr(expression), 80)} is not a valid cron expression"
        )
    return expression


def _check_seconds(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _LONGEST:
        raise Refusal(400, f"when.{name}: a whole number of seconds from 1 to {_LONGEST}")
    return value


@dataclass
class Schedule:
    """One schedule: what it runs, when, and its next run (``None`` once it has none left)."""

    id: str
    worker_id: str
    kind: str
    input: str
    budget: str
    next_run_at: float | None
    date: str | None = None
    delay_in_seconds: int | None = None
    cron: str | None = None
    interval_seconds: int | None = None
    runs: int = 0
    timer: Timer | None = field(default=None, repr=False)

    def following(self, ran_at: float) -> float | None:
        """When it runs next after a run due at ``ran_at`` (``None``: it was a one-off)."""
        if self.kind == "interval":
            assert self.interval_seconds is not None
            return ran_at + self.interval_seconds  # from when it was due: no drift
        if self.kind == "cron":
            assert self.cron is not None
            return next_cron_run(self.cron, ran_at)
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "type": self.kind,
            "input": self.input,
            "budget": self.budget,
            "nextRunAt": None if self.next_run_at is None else iso(self.next_run_at),
        }
        if self.kind == "scheduled":
            out["date"] = self.date
        elif self.kind == "delayed":
            out["delayInSeconds"] = self.delay_in_seconds
        elif self.kind == "cron":
            out["cron"] = self.cron
        else:
            out["intervalSeconds"] = self.interval_seconds
        return out


class Scheduler:
    """The schedules of every template, armed on ``clock``; ``run(schedule)`` starts a run's task.

    ``run`` is called on the emulator's loop at the run's instant (the
    clock's ``now()`` is that instant); what it raises is logged, and the
    schedule goes on.
    """

    def __init__(self, clock: Clock, run: Callable[[Schedule], None]) -> None:
        self.clock = clock
        self.run = run
        self.schedules: dict[str, Schedule] = {}
        self._ids = itertools.count(1)

    def add(self, worker_id: str, body: Any) -> Schedule:
        """A schedule from a request body (``input``, ``budget?``, ``when``), armed; or a 400."""
        schedule = self._parse(worker_id, body)
        self.schedules[schedule.id] = schedule
        self._arm(schedule)
        return schedule

    def of(self, worker_id: str) -> list[Schedule]:
        """A template's schedules still to run, oldest first."""
        return [s for s in self.schedules.values() if s.worker_id == worker_id]

    def cancel(self, schedule_id: str) -> Schedule | None:
        """Stop its future runs; the schedule, or None if there is none such."""
        schedule = self.schedules.pop(schedule_id, None)
        if schedule is not None:
            if schedule.timer is not None:
                schedule.timer.cancel()
            schedule.timer, schedule.next_run_at = None, None
        return schedule

    def cancel_all(self, worker_id: str | None = None) -> None:
        """Cancel a template's schedules (every schedule, without ``worker_id``)."""
        for schedule in list(self.schedules.values()):
            if worker_id is None or schedule.worker_id == worker_id:
                self.cancel(schedule.id)

    def _arm(self, schedule: Schedule) -> None:
        due = schedule.next_run_at
        if due is None:
            return
        schedule.timer = self.clock.call_at(due, lambda: self._fire(schedule, due))

    def _fire(self, schedule: Schedule, due: float) -> None:
        if self.schedules.get(schedule.id) is not schedule:
            return  # cancelled after its timer was taken
        schedule.runs += 1
        try:
            self.run(schedule)
        except Exception:
            _log.exception("schedule %s: its run could not start", schedule.id)
        try:
            schedule.next_run_at = schedule.following(due)
        except Exception:
            _log.exception("schedule %s: no next run", schedule.id)
            schedule.next_run_at = None
        if schedule.next_run_at is None:
            self.schedules.pop(schedule.id, None)
            schedule.timer = None
        else:
            self._arm(schedule)

    def _parse(self, worker_id: str, body: Any) -> Schedule:
        if not isinstance(body, dict):
            raise Refusal(400, "the body must be a JSON object with input and when")
        unknown = sorted(set(body) - {"input", "budget", "when"})
        if unknown:
            raise Refusal(400, f"unknown field {unknown[0]!r} (fields: input, budget, when)")
        text = body.get("input")
        if not isinstance(text, str) or not 1 <= len(text) <= _INPUT_CHARS:
            raise Refusal(400, "input: a string of at least 1 character is required")
        budget = body.get("budget", "standard")
        if budget not in BUDGETS:
            raise Refusal(400, f"budget: must be one of {', '.join(BUDGETS)}")
        when = body.get("when")
        if not isinstance(when, dict):
            raise Refusal(400, "when: an object with a type is required")
        kind = when.get("type")
        if kind not in KINDS:
            raise Refusal(
                400, f"when.type: must be one of {', '.join(KINDS)}; got {excerpt(repr(kind), 60)}"
            )
        now = self.clock.now()
        schedule = Schedule(
            id=f"sch_{next(self._ids):06d}",
            worker_id=worker_id,
            kind=kind,
            input=text,
            budget=budget,
            next_run_at=None,
        )
        if kind == "scheduled":
            date = when.get("date")
            try:
                if not isinstance(date, str):
                    raise ValueError(date)
                due = parse_iso(date)
            except ValueError:
                raise Refusal(
                    400,
                    f"when.date: an ISO-8601 date-time is required; got {excerpt(repr(date), 60)}",
                ) from None
            if due <= now:
                raise Refusal(400, f"when.date: {date} is not in the future (now: {iso(now)})")
            schedule.date, schedule.next_run_at = date, due
        elif kind == "delayed":
            delay = _check_seconds(when.get("delayInSeconds"), "delayInSeconds")
            schedule.delay_in_seconds, schedule.next_run_at = delay, now + delay
        elif kind == "interval":
            every = _check_seconds(when.get("intervalSeconds"), "intervalSeconds")
            schedule.interval_seconds, schedule.next_run_at = every, now + every
        else:
            schedule.cron = _check_cron(when.get("cron"))
            try:
                schedule.next_run_at = next_cron_run(schedule.cron, now)
            except Exception:  # croniter's own: a date that never comes (the 30th of February)
                raise Refusal(400, f"when.cron: {schedule.cron!r} never matches") from None
        return schedule
