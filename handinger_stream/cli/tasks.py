"""``handinger-stream tasks``: a task of today's API and its turns, shown or archived.

    handinger-stream tasks show tsk_1            # the task, then a table of its turns
    handinger-stream tasks show tsk_1 --json     # the TaskWithTurns, one JSON line
    handinger-stream tasks delete tsk_1          # archive it (turns and files are kept)

A task is started (and continued) by ``run --worker ID`` / ``run --task ID``.
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from ..client.async_client import AsyncHandinger
from ..errors import excerpt
from ..types.task import TaskWithTurns
from .connection import (
    add_command,
    add_service_options,
    call,
    clean,
    done_or_not,
    print_json,
    table,
)
from .exit_codes import EXIT_OK
from .printing import count

__all__ = ["add_parser", "command", "turns_table"]

_EXCERPT = 48  # characters of a turn's input and output in the table


def add_parser(sub: Any) -> None:
    """Register ``tasks`` (``show``, ``delete``) on the command line's subcommands."""
    tasks = add_command(
        sub,
        "tasks",
        help="show or archive a task (today's API)",
        description=(
            "A task is a run against a worker template: one or more turns. Start one\n"
            'with: handinger-stream run --worker ID "PROMPT"; add a turn with --task ID.'
        ),
    )
    actions = tasks.add_subparsers(dest="action", required=True)
    show = add_command(
        actions,
        "show",
        help="the task and its turns",
        description=(
            "Show a task and a table of its turns: seq, status, input, an excerpt of the\n"
            "output, credits and duration."
        ),
    )
    show.add_argument("task_id", metavar="ID", help="the task's id")
    add_service_options(show, json_help="print the TaskWithTurns as one JSON object")
    delete = add_command(
        actions,
        "delete",
        help="archive a task",
        description=(
            "Archive a task: it leaves the task list; its turns and files are kept.\n"
            "Exit 1 when the service did not archive it."
        ),
    )
    delete.add_argument("task_id", metavar="ID", help="the task's id")
    add_service_options(delete, json_help='print the answer as one JSON object: {"archived": …}')


def command(args: argparse.Namespace) -> int:
    """Run ``handinger-stream tasks ...`` with parsed arguments; the exit code."""
    if args.action == "show":
        return call(args, lambda client: _show(client, args))
    return call(args, lambda client: _delete(client, args))


async def _show(client: AsyncHandinger, args: argparse.Namespace) -> int:
    found = await client.tasks.retrieve(args.task_id)
    if args.json:
        # The model as the API gave it, and how its latest turn ended at the top level.
        print_json({**msgspec.to_builtins(found), **task_ending(found)})
        return EXIT_OK
    print(turns_table(found))
    return EXIT_OK


async def _delete(client: AsyncHandinger, args: argparse.Namespace) -> int:
    answer = await client.tasks.delete(args.task_id)
    return done_or_not(
        args, answer, answer.archived, did="archived", do="archive", what=f"task {args.task_id}"
    )


# A task's status (its latest turn's), as the outcome a Worker of that turn would have.
_OUTCOMES = {"completed": "completed", "error": "failed", "aborted": "aborted"}


def task_ending(found: TaskWithTurns) -> dict[str, Any]:
    """``outcome`` (``None`` while pending or running) and ``error`` for a task's ``--json``.

    The API's task holds no error text: a failed turn is named instead.

    >>> from handinger_stream.types.task import Task, Turn
    >>> task = Task(id="t1", worker_id="w1", status="error")
    >>> task_ending(TaskWithTurns(task=task, turns=[Turn(id="u", task_id="t1", seq=2)]))
    {'outcome': 'failed', 'error': 'turn 2 of task t1 ended in error'}
    """
    task = found.task
    outcome = _OUTCOMES.get(task.status)
    error = None
    if outcome == "failed":
        seq = found.turns[-1].seq if found.turns else None
        error = (f"turn {seq} of " if seq is not None else "") + f"task {task.id} ended in error"
    return {"outcome": outcome, "error": error}


def turns_table(found: TaskWithTurns) -> str:
    """The task on a line, its totals on another, then its turns as a table.

    >>> from handinger_stream.types.task import Task, Turn
    >>> task = Task(id="t1", worker_id="w1", title="Hi", status="completed")
    >>> turn = Turn(id="u1", task_id="t1", seq=1, status="completed", input="Hi",
    ...             output_text="Hello!", credits=2, duration_ms=1500)
    >>> print(turns_table(TaskWithTurns(task=task, turns=[turn])))
    task t1 · completed · worker w1 · 'Hi' · by api
      0 turns · 0 credits · 0.0s
    seq  status     credits  time  input  output
    1    completed  2        1.5s  Hi     Hello!
    """
    task = found.task
    head = f"task {task.id} · {task.status} · worker {task.worker_id}"
    if task.title:
        head += f" · {clean(task.title)!r}"
    head += f" · by {task.triggered_by}"
    if task.url:
        head += f" · {task.url}"
    totals = task.totals
    lines = [
        head,
        f"  {count(int(totals.turn_count), 'turn')} · {totals.credits:g} credits · "
        f"{totals.duration_ms / 1000:.1f}s",
    ]
    rows = [("seq", "status", "credits", "time", "input", "output")]
    for turn in found.turns:
        rows.append(
            (
                str(turn.seq),
                turn.status,
                f"{turn.credits:g}",
                f"{turn.duration_ms / 1000:.1f}s",
                excerpt(clean(turn.input), _EXCERPT),
                excerpt(clean(turn.output_text), _EXCERPT),
            )
        )
    return "\n".join([*lines, *table(rows)])
