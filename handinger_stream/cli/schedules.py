"""``handinger-stream schedules``: tasks a worker template runs later or again.

    handinger-stream schedules create wrk_1 "Weekly report" --cron "0 9 * * 1"
    handinger-stream schedules create wrk_1 "Remind me" --in 3600 --budget low
    handinger-stream schedules list wrk_1
    handinger-stream schedules cancel wrk_1 sch_1

Each run is a task (``triggeredBy: schedule``): see it with ``tasks show``.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from ..client.async_client import AsyncHandinger
from ..errors import excerpt
from ..types.schedule import (
    CronWorkerSchedule,
    DelayedWorkerSchedule,
    IntervalWorkerSchedule,
    ScheduleListResponse,
    WorkerSchedule,
)
from ..types.worker import BUDGETS
from .arguments import positive_int
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
from .printing import count, say

__all__ = ["add_parser", "command", "instant", "schedules_table"]

_EXCERPT = 40


def instant(value: str) -> str:
    """A ``--at``: an ISO-8601 date and time with its time zone, as the API wants it.

    >>> instant("2026-12-07T09:00:00Z")
    '2026-12-07T09:00:00+00:00'
    """
    text = value.strip()
    try:
        # "Z" is what most people write; fromisoformat reads it only from Python 3.11.
        when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO-8601 date and time: {value!r} (e.g. 2026-12-07T09:00:00Z)"
        ) from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"give a time zone, so that the service runs it when you mean: {value!r} "
            "(e.g. 2026-12-07T09:00:00Z or 2026-12-07T10:00:00+01:00)"
        )
    return when.isoformat()


def add_parser(sub: Any) -> None:
    """Register ``schedules`` (``create``, ``list``, ``cancel``) on the subcommands."""
    schedules = add_command(
        sub,
        "schedules",
        help="run a worker template later or again (today's API)",
        description=(
            "A schedule runs a worker template's PROMPT at a time, after a delay, every\n"
            "so many seconds, or when a cron expression matches; each run is a task."
        ),
    )
    actions = schedules.add_subparsers(dest="action", required=True)
    create = add_command(
        actions,
        "create",
        help="schedule a prompt on a worker template",
        description=(
            "Schedule PROMPT on the worker template WORKER_ID: once --at a time or --in\n"
            "some seconds, or again --every some seconds or on a --cron expression.\n"
            "Prints the schedule's id on stdout."
        ),
    )
    create.add_argument("worker_id", metavar="WORKER_ID", help="the worker template's id")
    create.add_argument("prompt", metavar="PROMPT", help="the input of each run")
    when = create.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--at", type=instant, metavar="ISO", help="once, at this time (with its time zone)"
    )
    when.add_argument(
        "--in", dest="delay", type=positive_int, metavar="SECONDS", help="once, later"
    )
    when.add_argument(
        "--every", type=positive_int, metavar="SECONDS", help="again and again, this often"
    )
    when.add_argument(
        "--cron", metavar="EXPR", help='when the cron expression matches: "0 9 * * 1"'
    )
    create.add_argument("--budget", choices=BUDGETS, default=None, help="each run's budget")
    add_service_options(create, json_help="print the WorkerSchedule as one JSON object")

    listing = add_command(
        actions,
        "list",
        help="a worker template's schedules",
        description="List a worker template's schedules: id, type, when, next run, budget, input.",
    )
    listing.add_argument("worker_id", metavar="WORKER_ID", help="the worker template's id")
    add_service_options(
        listing, json_help='print the list as one JSON object: {"workerId", "schedules"}'
    )

    cancel = add_command(
        actions,
        "cancel",
        help="cancel a schedule's future runs",
        description=(
            "Cancel a schedule's future runs (tasks already started go on).\n"
            "Exit 1 when the service did not cancel it."
        ),
    )
    cancel.add_argument("worker_id", metavar="WORKER_ID", help="the worker template's id")
    cancel.add_argument("schedule_id", metavar="SCHEDULE_ID", help="the schedule's id")
    add_service_options(cancel, json_help='print the answer as one JSON object: {"cancelled": …}')


def command(args: argparse.Namespace) -> int:
    """Run ``handinger-stream schedules ...`` with parsed arguments; the exit code."""
    work = {"create": _create, "list": _list, "cancel": _cancel}[args.action]
    return call(args, lambda client: work(client, args))


def _when(args: argparse.Namespace) -> dict[str, Any]:
    if args.at is not None:
        return {"type": "scheduled", "date": args.at}
    if args.delay is not None:
        return {"type": "delayed", "delay_in_seconds": args.delay}
    if args.every is not None:
        return {"type": "interval", "interval_seconds": args.every}
    return {"type": "cron", "cron": args.cron}


async def _create(client: AsyncHandinger, args: argparse.Namespace) -> int:
    schedule = await client.workers.schedules.create(
        args.worker_id, input=args.prompt, when=_when(args), budget=args.budget
    )
    if args.json:
        print_json(schedule)
        return EXIT_OK
    print(schedule.id, flush=True)
    say(f"scheduled {schedule.id} on {args.worker_id}: {_describe(schedule)}")
    return EXIT_OK


async def _list(client: AsyncHandinger, args: argparse.Namespace) -> int:
    found = await client.workers.schedules.list(args.worker_id)
    if args.json:
        print_json(found)
        return EXIT_OK
    print(schedules_table(found))
    return EXIT_OK


async def _cancel(client: AsyncHandinger, args: argparse.Namespace) -> int:
    answer = await client.workers.schedules.cancel(args.schedule_id, worker_id=args.worker_id)
    what = f"schedule {args.schedule_id}"
    return done_or_not(args, answer, answer.cancelled, did="cancelled", do="cancel", what=what)


def _describe(schedule: WorkerSchedule) -> str:
    """When it runs, in words: ``every 3600s``, ``cron 0 9 * * 1``, ``at …``, ``in 60s``."""
    if isinstance(schedule, CronWorkerSchedule):
        return f"cron {schedule.cron}"
    if isinstance(schedule, IntervalWorkerSchedule):
        return f"every {schedule.interval_seconds}s"
    if isinstance(schedule, DelayedWorkerSchedule):
        return f"in {schedule.delay_in_seconds}s"
    return f"at {schedule.date.isoformat(timespec='seconds')}"


def schedules_table(found: ScheduleListResponse) -> str:
    """A line on how many, then one row a schedule.

    >>> print(schedules_table(ScheduleListResponse(worker_id="w1")))
    0 schedules on w1
    """
    lines = [f"{count(len(found.schedules), 'schedule')} on {found.worker_id}"]
    if not found.schedules:
        return lines[0]
    rows = [("id", "when", "next run", "budget", "input")]
    for s in found.schedules:
        following = (
            s.next_run_at.isoformat(timespec="seconds") if s.next_run_at is not None else "-"
        )
        text = excerpt(clean(s.input), _EXCERPT)
        rows.append((s.id, _describe(s), following, s.budget, text))
    return "\n".join([*lines, *table(rows)])
