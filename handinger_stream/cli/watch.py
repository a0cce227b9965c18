"""``handinger-stream watch``: many workers on one screen, or as JSON lines.

    handinger-stream watch wrk_1 wrk_2 ...          follow workers that exist
    handinger-stream watch TEMPLATE tsk_1 ...       today's API: a template's tasks, a task
    handinger-stream watch TEMPLATE --follow        ... and each new task as it starts
    handinger-stream watch --ids-from ids.txt       one id a line
    handinger-stream watch --create 30 "PROMPT"     start 30 workers and follow them
    handinger-stream watch --redis URL              what every relay on that Redis produces

On a terminal it draws the dashboard's table (``monitoring/dashboard.py``)
live, rebuilt at most :data:`REFRESH_PER_SECOND` times a second from the rows
that changed. ``--json`` prints one JSON line per status change and a final
line per worker instead; elsewhere the table is printed once, at the end.
Either way one summary line ends it (on stderr). Exit codes: 0 all
completed, 1 a worker failed, 2 usage error (or an id that does not exist), 3
a connection or authentication problem, 130 interrupted (Ctrl-C stops
watching; the workers go on).

What it shows is a watch: the client's :class:`~handinger_stream.Watch` of
the workers it was given or created, or with ``--redis`` the relays'
:class:`~handinger_stream.relay.FleetWatch`.

Today's API: an ID may be a worker template (a row per task, with what
started it in a ``trigger`` column) or a task. With ``--follow`` the watch
stays attached to the templates, showing each task as it starts, until
Ctrl-C (exit 130); the template's stream is opened again whenever it closes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import ChainMap
from collections.abc import Mapping
from typing import Any, TextIO

import anyio
import msgspec

from ..client.async_client import AsyncHandinger
from ..client.watch import Watch
from ..errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    HandingerError,
    InvalidRequestError,
    MissingAPIKeyError,
    NotFoundError,
    PermissionDeniedError,
    StreamError,
)
from ..monitoring.dashboard import Board, status_of
from ..relay.errors import StoreUnavailableError
from ..relay.fleet import FleetWatch
from ..relay.redis_store import RedisStore
from ..testing.emulator import Emulator
from ..types.events import AbortEvent, ErrorEvent, FinishEvent, StartEvent, WorkerSnapshotEvent
from ..types.worker import BUDGETS, Worker
from .arguments import EMULATOR_PACE, pace, positive_int
from .connection import Service, add_command, add_service_options, failure, service
from .exit_codes import (
    EXIT_CONNECTION,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
)
from .printing import say

__all__ = ["REFRESH_PER_SECOND", "add_parser", "command"]

REFRESH_PER_SECOND = 4
CREATE_AT_ONCE = 8  # creations in flight at once with --create
# Events after which a worker's status may have changed: only then is it looked at.
_STATUS_EVENTS = (WorkerSnapshotEvent, StartEvent, FinishEvent, ErrorEvent, AbortEvent)
_json = msgspec.json.Encoder()


def add_parser(sub: Any) -> None:
    """Register ``watch`` on the command line's subcommands."""
    watch = add_command(
        sub,
        "watch",
        help="follow many workers at once: a live table, or JSON lines",
        description=(
            "Follow many workers at once: on a terminal a live table (a row each: status,\n"
            "elapsed, tokens, cost, sources, what it is doing, its last words), elsewhere\n"
            "the table once at the end, or with --json a line per status change and a\n"
            "final line per worker. Workers by id (today's API: templates and tasks too),\n"
            "--create N new ones (on the embedded emulator without a key or base URL), or\n"
            "with --redis every turn the relays on that Redis produce. Ctrl-C stops\n"
            "watching; the workers go on."
        ),
    )
    watch.add_argument(
        "ids", nargs="*", metavar="ID", help="workers to watch (today's API: templates or tasks)"
    )
    watch.add_argument(
        "--ids-from", metavar="FILE", help="read worker ids from FILE, one a line (- for stdin)"
    )
    watch.add_argument(
        "--create",
        nargs=2,
        metavar=("N", "PROMPT"),
        help="create N workers on PROMPT, and watch them",
    )
    watch.add_argument(
        "--budget", choices=BUDGETS, default=None, help="the budget of each worker --create makes"
    )
    watch.add_argument(
        "--max-concurrency",
        type=positive_int,
        default=None,
        metavar="N",
        help="open at most N streams at once (the others wait, shown as queued)",
    )
    watch.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help="watch every turn the relays sharing this Redis produce (needs no API key)",
    )
    watch.add_argument(
        "--until-idle",
        action="store_true",
        help="with --redis: stop once no relay is producing a turn (else: until Ctrl-C)",
    )
    watch.add_argument(
        "--follow",
        action="store_true",
        help="stay attached to worker templates: show each new task as it starts (until Ctrl-C)",
    )
    watch.add_argument(
        "--tokens-per-second",
        type=pace,
        default=None,
        metavar="N",
        help=f"the embedded emulator's pace (default {EMULATOR_PACE:g}; 0: as fast as "
        "possible); refused when a key or base URL is given",
    )
    add_service_options(
        watch,
        json_help="JSON lines instead of the table: one per status change, a final one per "
        "worker (each with outcome and error at its top level)",
    )


def command(args: argparse.Namespace) -> int:
    """Run ``handinger-stream watch`` with parsed arguments; the exit code."""
    try:
        ids = _ids(args)
        count, prompt = _create_args(args)
        if args.redis and (ids or count):
            raise InvalidRequestError(
                "--redis watches every turn the relays produce: give no IDs or --create with it"
            )
        if args.until_idle and not args.redis:
            raise InvalidRequestError("--until-idle goes with --redis")
        if args.follow and not ids:
            raise InvalidRequestError("--follow goes with IDs of worker templates")
        if args.budget is not None and not count:
            raise InvalidRequestError("--budget is the budget of the workers --create makes")
        if args.redis and (args.api_key or args.base_url or args.max_concurrency):
            raise InvalidRequestError(
                "--redis reads the relays' store, not the API: --api-key, --base-url and "
                "--max-concurrency do not apply"
            )
    except InvalidRequestError as exc:
        say(f"error: {exc}")
        return EXIT_USAGE
    except OSError as exc:
        say(f"error: --ids-from: cannot read {args.ids_from}: {exc.strerror or exc}")
        return EXIT_USAGE
    if not ids and not count and not args.redis:
        say(
            "error: nothing to watch: give worker IDs, --ids-from FILE, --create N PROMPT, "
            "or --redis URL"
        )
        return EXIT_USAGE
    found: Service | None = None
    if not args.redis:
        if ids and not (
            args.api_key
            or args.base_url
            or os.environ.get("HANDINGER_API_KEY")
            or os.environ.get("HANDINGER_BASE_URL")
        ):
            say(
                "error: watching IDs needs the service: set HANDINGER_API_KEY (or pass "
                "--api-key or --base-url); without them, try --create N PROMPT on the "
                "embedded emulator"
            )
            return EXIT_USAGE
        where = service(args, embedded_ok=True)
        if isinstance(where, int):
            return where
        found = where
        if args.tokens_per_second is not None and not found.embedded:
            say(
                "error: --tokens-per-second sets the embedded emulator's pace, and with a key "
                "or a base URL no emulator runs here: leave it out"
            )
            return EXIT_USAGE
    elif args.tokens_per_second is not None:
        say("error: --tokens-per-second goes with --create on the embedded emulator")
        return EXIT_USAGE
    board = Board()
    stopped: _Stopped | None = None
    try:
        asyncio.run(_main(args, board, ids, count, prompt, found))
    except KeyboardInterrupt:
        board.interrupted = True
    except _UsageError as exc:
        say(f"error: {exc}")
        return EXIT_USAGE
    except _Stopped as exc:
        stopped = exc
    if found is not None:
        _say_refused_key(board, found)
    say(board.summary())
    return stopped.code if stopped is not None else _exit_code(board)


def _say_refused_key(board: Board, found: Service) -> None:
    """A refused key stops every stream alike: said once, by where the key came from."""
    for error in board.errors.values():
        if isinstance(error, (AuthenticationError, PermissionDeniedError)):
            failure(error, found)
            return


class _UsageError(Exception):
    """Found only once running (a bad Redis URL, ids with no service): no summary follows."""


class _Stopped(Exception):
    """The watch could not start or go on, for the reason said already: ``code`` is its
    exit code, the summary of what was seen follows."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _exit_code(board: Board) -> int:
    if board.interrupted:
        return EXIT_INTERRUPTED
    errors = board.errors.values()
    if any(_is_connection_problem(e) for e in errors):
        return EXIT_CONNECTION
    if errors:
        return EXIT_USAGE  # an id that does not exist, or was refused
    if any(row.status == "failed" for row in board.rows.values()):
        return EXIT_FAILED
    return EXIT_OK


def _is_connection_problem(error: HandingerError) -> bool:
    if isinstance(error, (AuthenticationError, PermissionDeniedError, MissingAPIKeyError)):
        return True
    if isinstance(error, NotFoundError):
        return False
    return isinstance(error, (APIConnectionError, StreamError, APIStatusError))


def _ids(args: argparse.Namespace) -> list[str]:
    ids = list(args.ids)
    if args.ids_from:
        handle: TextIO
        with open(args.ids_from, encoding="utf-8") if args.ids_from != "-" else sys.stdin as handle:
            ids += [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    return list(dict.fromkeys(ids))  # once each, in order


def _create_args(args: argparse.Namespace) -> tuple[int, str]:
    if not args.create:
        return 0, ""
    n, prompt = args.create
    try:
        count = int(n)
    except ValueError:
        raise InvalidRequestError(f"--create N PROMPT: N must be a number, got {n!r}") from None
    if count < 1 or not prompt.strip():
        raise InvalidRequestError("--create N PROMPT: N at least 1, and a non-empty prompt")
    return count, prompt


# -- what it follows ----------------------------------------------------------------


async def _main(
    args: argparse.Namespace,
    board: Board,
    ids: list[str],
    count: int,
    prompt: str,
    found: Service | None,
) -> None:
    if found is None:
        await _follow_fleet(args, board)
        return
    if found.embedded:
        pace = EMULATOR_PACE if args.tokens_per_second is None else args.tokens_per_second
        async with Emulator(tokens_per_second=pace, fleet=True) as emulator:
            say(
                f"No HANDINGER_API_KEY or base URL given: using the embedded emulator at "
                f"{emulator.base_url} (a fleet of simulated workers, {pace:g} tokens/s)"
            )
            where = Service("emulator", emulator.base_url, "the embedded emulator")
            await _follow(args, board, ids, count, prompt, where)
        return
    await _follow(args, board, ids, count, prompt, found)


async def _follow(
    args: argparse.Namespace,
    board: Board,
    ids: list[str],
    count: int,
    prompt: str,
    where: Service,
) -> None:
    """Create ``count`` workers on ``prompt``, then show them and ``ids`` as they work."""
    async with AsyncHandinger(api_key=where.api_key, base_url=where.base_url) as client:
        try:
            ids = ids + await _create(client, count, prompt, args.budget)
        except HandingerError as exc:
            raise _Stopped(failure(exc, where)) from exc
        for worker_id in ids:
            board.add(worker_id)
        watching = client.workers.watch(
            ids, follow=args.follow, max_concurrency=args.max_concurrency
        )
        async with watching as watch:
            await _display(args, board, watch)


async def _follow_fleet(args: argparse.Namespace, board: Board) -> None:
    """``--redis URL``: the turns of every relay process on that Redis, from the store alone."""
    try:
        store = RedisStore(args.redis)
    except InvalidRequestError as exc:
        raise _UsageError(f"--redis: {exc}") from None
    async with store:
        try:
            async with FleetWatch(store, until_idle=args.until_idle) as fleet:
                until = "none is running" if args.until_idle else "Ctrl-C"
                say(f"watching the turns relays produce into Redis {store.url} until {until}")
                await _display(args, board, fleet)
        except StoreUnavailableError as exc:
            say(f"error: {exc}")
            raise _Stopped(EXIT_CONNECTION) from exc


async def _create(client: AsyncHandinger, count: int, prompt: str, budget: Any) -> list[str]:
    """Create ``count`` workers, a few at a time; their ids in order."""
    ids: list[str] = [""] * count
    failures: list[HandingerError] = []
    limiter = anyio.CapacityLimiter(CREATE_AT_ONCE)

    async def one(i: int, scope: anyio.CancelScope) -> None:
        async with limiter:
            try:
                worker = await client.workers.create(input=prompt, budget=budget)
            except HandingerError as exc:
                # The first failure stops the others (they would fail alike), ungrouped.
                failures.append(exc)
                scope.cancel()
                return
            ids[i] = worker.id

    async with anyio.create_task_group() as tg:
        for i in range(count):
            tg.start_soon(one, i, tg.cancel_scope)
    if failures:
        raise failures[0]
    return ids


# -- how it shows them -------------------------------------------------------------


def _snapshots(watch: Watch | FleetWatch) -> Mapping[str, Worker]:
    """The Workers the board's rows show, by row: tasks by their id, workers by theirs."""
    return ChainMap(watch.tasks, watch.workers)  # type: ignore[arg-type]


async def _display(args: argparse.Namespace, board: Board, watch: Watch | FleetWatch) -> None:
    """The table on a terminal, JSON lines with ``--json``, else the table once at the end."""
    live = _LiveTable(board) if not args.json and sys.stdout.isatty() else None
    try:
        if live is not None:
            await live.run(watch)
        elif args.json:
            await _json_lines(board, watch)
        else:
            await _quietly(board, watch)
    finally:
        # Interrupted or not: the rows as the watch left them, for the summary.
        board.dirty.update(board.rows)
        board.refresh(_snapshots(watch), time.time())
        if live is not None:
            live.close()
        elif not args.json and board.rows:
            _print_table(board)


async def _quietly(board: Board, watch: Watch | FleetWatch) -> None:
    async for item in watch.events(ends=True):
        board.touch(item)
        if item.event is None:
            board.refresh(_snapshots(watch), time.time())
            board.end(item, time.time())


async def _json_lines(board: Board, watch: Watch | FleetWatch) -> None:
    out = sys.stdout
    status: dict[str, str] = {}
    async for item in watch.events(ends=True):
        board.touch(item)
        worker_id = board.key(item)
        if (
            item.event is not None
            and worker_id in status
            and not isinstance(item.event, _STATUS_EVENTS)
        ):
            continue
        now = time.time()
        worker = item.snapshot
        state = status_of(worker, item.error)
        if status.get(worker_id) != state:
            status[worker_id] = state
            line: dict[str, Any] = {"type": "status", "worker_id": item.worker_id}
            if item.task_id is not None:  # today's API (a seed worker's lines stay as they were)
                line |= {"task_id": item.task_id, "trigger": item.trigger}
            line["status"] = state
            line |= _ending(worker, item.error)
            line["at"] = round(now - board.started, 3)
            out.write(_json.encode(line).decode() + "\n")
        if item.event is None:
            board.refresh(_snapshots(watch), now)
            board.end(item, now)
            final: dict[str, Any] = {"type": "worker", "worker_id": item.worker_id}
            if item.task_id is not None:
                final |= {"task_id": item.task_id, "trigger": item.trigger}
            final |= {"status": state, **_ending(worker, item.error), "worker": worker}
            out.write(_json.encode(final).decode() + "\n")
        out.flush()


def _ending(worker: Worker, lost: HandingerError | None) -> dict[str, Any]:
    """How the worker ended (``None`` while it runs) and the error's message, for the top
    level of a JSON line: a failed worker's own error, or why its stream was lost."""
    if lost is not None:
        return {"outcome": worker.outcome or "incomplete", "error": _message(lost)}
    return {"outcome": worker.outcome, "error": worker.error_message}


def _message(error: HandingerError) -> str:
    """A lost stream's reason in one line (the worker's own error is its message)."""
    return " ".join(str(error).split())


class _LiveTable:
    """The dashboard's table on the terminal, redrawn a few times a second at most."""

    def __init__(self, board: Board) -> None:
        from rich.console import Console
        from rich.live import Live

        self.board = board
        self.console = Console()
        self.live = Live(
            console=self.console, auto_refresh=False, transient=False, redirect_stderr=False
        )
        self.closed = False

    async def run(self, watch: Watch | FleetWatch) -> None:
        self.live.start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._paint, watch)
            async for item in watch.events(ends=True):
                self.board.touch(item)
                if item.event is None:
                    self.board.refresh(_snapshots(watch), time.time())
                    self.board.end(item, time.time())
            tg.cancel_scope.cancel()
        self.paint(watch)

    async def _paint(self, watch: Watch | FleetWatch) -> None:
        while True:
            self.paint(watch)
            await anyio.sleep(1 / REFRESH_PER_SECOND)

    def paint(self, watch: Watch | FleetWatch | None = None) -> None:
        now = time.time()
        if watch is not None:
            self.board.refresh(_snapshots(watch), now)
            for worker_id in watch.waiting:
                row = self.board.rows.get(worker_id)
                if row is not None:
                    row.step = "queued"  # for a connection slot (--max-concurrency)
        table = self.board.table(height=self.console.height, width=self.console.width, now=now)
        self.live.update(table, refresh=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.paint()
            self.live.stop()


def _print_table(board: Board) -> None:
    from rich.console import Console

    console = Console()
    console.print(board.table(height=len(board.rows) + 10, width=console.width))
