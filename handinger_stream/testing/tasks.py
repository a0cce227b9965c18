"""Tasks and their turns, as today's API shows them (``Task``, ``Turn``, ``TaskWithTurns``).

A task is a run against a worker template; each input on it is a turn. The
emulator plays each turn with the same agent as a seed-generation run and
writes down here what the turn became: its status, tokens, credits,
duration and structured output. Times are seconds since the epoch inside,
ISO-8601 strings on the wire.

>>> task = Task(id="tsk_1", worker_id="wrk_1", title="Hi", triggered_by="api",
...     created_at=0.0, url="http://127.0.0.1/dashboard/workers/wrk_1/tasks/tsk_1")
>>> task.add_turn("Hi", "low", started_at=0.0).seq
1
>>> task.to_json()["status"], task.to_json()["totals"]
('pending', {'credits': 0, 'durationMs': 0, 'turnCount': 1})
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .clock import iso
from .refusals import Refusal

__all__ = [
    "ORGANIZATION_ID",
    "TRIGGERS",
    "TURN_OUTCOMES",
    "USER_ID",
    "Task",
    "Turn",
    "check_task_id",
    "check_trigger",
]

TRIGGERS = ("api", "email", "schedule", "ui")
"""What may start a task (``triggeredBy``)."""

TURN_OUTCOMES = ("completed", "error", "aborted")
"""How a turn may end: its answer whole, the agent failed, or the turn was stopped."""

ORGANIZATION_ID = "org_emulator"
USER_ID = "usr_emulator"
"""The one organization and user the emulator has (it accepts any key)."""

# A task id is chosen by the client: it must stay one segment of a URL path.
_TASK_ID = re.compile(r"[A-Za-z0-9._:~-]{1,128}")


def check_task_id(value: Any) -> str:
    """``value`` as a client-chosen task id, or a 400 saying what an id may hold.

    >>> check_task_id("chat-42")
    'chat-42'
    >>> check_task_id("a/b")
    Traceback (most recent call last):
      ...
    handinger_stream.testing.refusals.Refusal: taskId: 1 to 128 letters, digits or ._:~- \
(it goes in URLs)
    """
    if not isinstance(value, str) or not _TASK_ID.fullmatch(value):
        raise Refusal(400, "taskId: 1 to 128 letters, digits or ._:~- (it goes in URLs)")
    return value


def check_trigger(value: Any) -> str:
    """``value`` as a ``triggeredBy``, or a 400 naming the choices."""
    if value not in TRIGGERS:
        raise Refusal(400, f"triggeredBy: must be one of {', '.join(TRIGGERS)}")
    return str(value)


@dataclass
class Turn:
    """One input on a task, and what the agent made of it."""

    id: str
    task_id: str
    seq: int  # 1 for the task's first turn
    input: str
    budget: str
    started_at: float
    status: str = "pending"  # then running, then one of TURN_OUTCOMES
    output_text: str = ""
    structured_output: dict[str, Any] | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    credits: int = 0
    duration_ms: int = 0
    completed_at: float | None = None
    # Where its events are in the template's log (first and last index), once it played.
    first_event: int | None = None
    last_event: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in TURN_OUTCOMES

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "taskId": self.task_id,
            "seq": self.seq,
            "role": "user",
            "status": self.status,
            "input": self.input,
            "outputText": self.output_text,
            "structuredOutput": self.structured_output,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "credits": self.credits,
            "durationMs": self.duration_ms,
            "startedAt": iso(self.started_at),
            "completedAt": None if self.completed_at is None else iso(self.completed_at),
        }


@dataclass
class Task:
    """A run against a worker template: its turns, oldest first, and what started it."""

    id: str
    worker_id: str
    title: str
    triggered_by: str
    created_at: float
    url: str
    # A person started it (the API, the web UI); nobody did for a schedule or an e-mail.
    created_by_user_id: str | None = USER_ID
    archived: bool = False
    turns: list[Turn] = field(default_factory=list)

    def add_turn(self, input: str, budget: str, *, started_at: float) -> Turn:
        """The next turn, pending (it plays when the template's earlier turns are done)."""
        seq = len(self.turns) + 1
        turn = Turn(f"{self.id}-turn-{seq}", self.id, seq, input, budget, started_at)
        self.turns.append(turn)
        return turn

    @property
    def status(self) -> str:
        """The latest turn's: a follow-up that is running makes the task running again."""
        return self.turns[-1].status if self.turns else "pending"

    def to_json(self) -> dict[str, Any]:
        last = self.turns[-1] if self.turns else None
        return {
            "id": self.id,
            "workerId": self.worker_id,
            "title": self.title,
            "status": self.status,
            "triggeredBy": self.triggered_by,
            "createdAt": iso(self.created_at),
            "completedAt": (
                iso(last.completed_at)
                if last is not None and last.completed_at is not None
                else None
            ),
            "createdByUserId": self.created_by_user_id,
            "organizationId": ORGANIZATION_ID,
            "url": self.url,
            "totals": {
                "credits": sum(t.credits for t in self.turns),
                "durationMs": sum(t.duration_ms for t in self.turns),
                "turnCount": len(self.turns),
            },
        }

    def with_turns(self) -> dict[str, Any]:
        """``TaskWithTurns``: what ``GET /api/tasks/{id}`` answers."""
        return {"task": self.to_json(), "turns": [t.to_json() for t in self.turns]}
