"""Tasks and their turns: the current generation's runs (``api-current.md``).

A task is a run against a worker template, started by the API, by e-mail, by a
schedule or from the web UI; each follow-up is a turn of the same task.
Wire names are the API's (``workerId``, ``triggeredBy``); attributes are Pythonic.

>>> raw = b'''{"task": {"id": "t1", "workerId": "w1", "title": "Hi", "status": "completed",
...   "triggeredBy": "api", "createdAt": "2026-05-01T10:00:00Z", "organizationId": "o",
...   "url": "https://handinger.com/t/t1", "totals": {"credits": 3, "durationMs": 1200,
...   "turnCount": 1}}, "turns": []}'''
>>> t = msgspec.json.decode(raw, type=TaskWithTurns)
>>> (t.task.worker_id, t.task.triggered_by, t.task.totals.turn_count, t.task.created.day)
('w1', 'api', 1, 1)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from .worker import timestamp

__all__ = [
    "DeleteTaskResponse",
    "Task",
    "TaskStatus",
    "TaskTotals",
    "TaskTrigger",
    "TaskWithTurns",
    "Turn",
]

TaskStatus = Literal["pending", "running", "completed", "error", "aborted"]
TaskTrigger = Literal["api", "email", "schedule", "ui"]


class TaskTotals(msgspec.Struct, kw_only=True, rename="camel"):
    """What a task's turns added up to (numbers: integers in newer servers, floats before)."""

    credits: int | float = 0
    duration_ms: int | float = 0
    turn_count: int | float = 0


class Task(msgspec.Struct, kw_only=True, rename="camel"):
    """A run against a worker template: one or more turns."""

    id: str
    worker_id: str
    title: str = ""
    status: TaskStatus = "pending"
    triggered_by: TaskTrigger = "api"
    created_at: str = ""
    completed_at: str | None = None
    created_by_user_id: str | None = None
    organization_id: str = ""
    url: str = ""
    totals: TaskTotals = msgspec.field(default_factory=TaskTotals)

    @property
    def created(self) -> datetime | None:
        """``created_at`` as an aware datetime."""
        return timestamp(self.created_at)

    @property
    def completed(self) -> datetime | None:
        """``completed_at`` as an aware datetime (``None`` while it runs)."""
        return timestamp(self.completed_at)


class Turn(msgspec.Struct, kw_only=True, rename="camel"):
    """One exchange of a task: its input, what the agent wrote, what it cost."""

    id: str
    task_id: str
    seq: int
    role: str = "user"
    status: str = "pending"
    input: str = ""
    output_text: str = ""
    structured_output: Any = None
    input_tokens: int = 0
    output_tokens: int = 0
    credits: int | float = 0
    duration_ms: int = 0
    started_at: str = ""
    completed_at: str | None = None

    @property
    def started(self) -> datetime | None:
        """``started_at`` as an aware datetime."""
        return timestamp(self.started_at)

    @property
    def completed(self) -> datetime | None:
        """``completed_at`` as an aware datetime (``None`` while it runs)."""
        return timestamp(self.completed_at)


class TaskWithTurns(msgspec.Struct, kw_only=True):
    """``tasks.retrieve``: the task and its turns, oldest first."""

    task: Task
    turns: list[Turn] = msgspec.field(default_factory=list)


class DeleteTaskResponse(msgspec.Struct, kw_only=True):
    """``tasks.delete``: whether the task left the task list (its turns and files stay)."""

    archived: bool
