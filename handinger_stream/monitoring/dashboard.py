"""``handinger-stream watch``: many workers on one screen, or as JSON lines.

    handinger-stream watch wrk_1 wrk_2 ...          follow workers that exist
    handinger-stream watch --ids-from ids.txt       one id a line
    handinger-stream watch --create 30 "PROMPT"     start 30 workers and follow them
    handinger-stream watch --redis URL              what every relay on that Redis produces

On a terminal it draws a live table, one row per worker: id, status, elapsed
time, tokens in/out, cost, sources, the current step (the tool being called,
"reasoning", "writing", "waiting") and the last words written, with totals.
Failed and active workers sort first, so they stay in view on a small
terminal. Reading an event only marks its row as changed; the table is
rebuilt at most :data:`REFRESH_PER_SECOND` times a second, from the rows that
changed, so its cost does not grow with the token rate.

``--json`` prints one JSON line per status change and a final line per worker
instead. Either way one summary line ends it (on stderr). Exit codes: 0 all
completed, 1 a worker failed, 2 usage error (or an id that does not exist), 3
a connection or authentication problem, 130 interrupted (Ctrl-C stops
watching; the workers go on).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

import anyio
import msgspec

from ..cli.arguments import EMULATOR_PACE, pace, positive_int
from ..client.async_client import AsyncHandinger
from ..client.watch import WatchEvent
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
from ..testing.emulator import Emulator
from ..types.events import (
    AbortEvent,
    ErrorEvent,
    FinishEvent,
    StartEvent,
    WorkerSnapshotEvent,
)
from ..types.worker import BUDGETS, Worker

__all__ = ["REFRESH_PER_SECOND", "Board", "Watched", "add_watch_command", "run_watch"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONNECTION = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
REFRESH_PER_SECOND = 4
CREATE_AT_ONCE = 8  # creations in flight at once with --create
# Events after which a worker's status may have changed: only then is it looked at.
_STATUS_EVENTS = (WorkerSnapshotEvent, StartEvent, FinishEvent, ErrorEvent, AbortEvent)
_ORDER = {"failed": 0, "lost": 0, "running": 1, "pending": 2, "waiting": 2, "completed": 3}
_STYLE = {
    "failed": "bold red",
    "lost": "bold red",
    "running": "cyan",
    "pending": "yellow",
    "waiting": "dim",
    "completed": "green",
}
_json = msgspec.json.Encoder()


class Watched(Protocol):
    """What the dashboard shows: a ``Watch``, or the relays' fleet (``relay.FleetWatch``)."""

    @property
    def workers(self) -> Mapping[str, Worker]: ...

    @property
    def waiting(self) -> list[str]: ...

    def events(self, *, ends: bool = False) -> AsyncIterator[WatchEvent]: ...


def add_watch_command(sub: Any) -> None:
    """Register ``watch`` on the command line's subparsers."""
    watch = sub.add_parser("watch", help="follow many workers at once: a live table, or JSON lines")
    watch.add_argument("ids", nargs="*", metavar="ID", help="workers to watch")
    watch.add_argument("--ids-from", metavar="FILE", help="read worker ids from FILE, one a line")
    watch.add_argument(
        "--create",
        nargs=2,
        metavar=("N", "PROMPT"),
        help="create N workers on PROMPT, and watch them",
    )
    watch.add_argument("--budget", choices=BUDGETS, default=None, help="with --create")
    watch.add_argument(
        "--max-concurrency",
        type=positive_int,
        default=None,
        metavar="N",
        help="open at most N streams",
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
    watch.add_argument("--json", action="store_true", help="JSON lines instead of the table")
    watch.add_argument("--base-url", default=None, help="the API's base URL")
    watch.add_argument(
        "--tokens-per-second",
        type=pace,
        default=EMULATOR_PACE,
        help="the embedded emulator's pace (0: as fast as possible)",
    )


# -- the rows -------------------------------------------------------------------


@dataclass
class Row:
    """What one worker's line shows, worked out from its snapshot when it changed."""

    id: str
    status: str = "waiting"
    step: str = ""
    started: float | None = None  # wall-clock seconds
    seen: float | None = None  # when its first event was
    ended: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    total_tokens: int = 0
    cost: float = 0.0
    sources: int = 0
    last_words: str = ""
    error: str = ""

    def elapsed(self, now: float) -> float:
        if self.started is None:
            return 0.0
        return max((self.ended or now) - self.started, 0.0)


def status_of(worker: Worker, error: HandingerError | None = None) -> str:
    """``lost`` (its stream could not be read to the end), ``failed``, or the Worker's status."""
    if error is not None:
        return "lost"
    if worker.error is not None:
        return "failed"
    return worker.status


def current_step(worker: Worker) -> str:
    """What a running worker is doing, from the last part of its message being built."""
    for message in reversed(worker.messages):
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        for part in reversed(message.get("parts") or ()):
            kind = str(part.get("type", ""))
            state = part.get("state")
            if kind.startswith("tool-") or kind == "dynamic-tool":
                name = part.get("toolName") if kind == "dynamic-tool" else kind[5:]
                return str(name) if state in ("input-streaming", "input-available") else "waiting"
            if kind in ("reasoning", "text"):
                if state == "streaming":
                    return "reasoning" if kind == "reasoning" else "writing"
                return "waiting"
            if kind == "step-start":
                return "waiting"
        return "waiting"
    return "waiting"


class Board:
    """The rows of a watch, the summary, and the table drawn from them."""

    def __init__(self, started: float | None = None) -> None:
        self.started = time.time() if started is None else started
        self.rows: dict[str, Row] = {}
        self.dirty: set[str] = set()
        self.errors: dict[str, HandingerError] = {}
        self.interrupted = False
        self.summarised = False
        self.setup_error: HandingerError | None = None
        self.unreachable = False  # the watch could not go on (the fleet's Redis)

    def add(self, worker_id: str) -> None:
        self.rows.setdefault(worker_id, Row(worker_id))

    def touch(self, item: WatchEvent) -> None:
        """An item arrived: its row is redrawn at the next refresh. O(1), nothing drawn here."""
        worker_id = item.worker_id
        row = self.rows.get(worker_id)
        if row is None:
            self.rows[worker_id] = Row(worker_id)  # found by the fleet as it goes
        elif row.ended is not None and item.event is not None:
            # A later turn of a worker the fleet saw end: live again.
            row.ended = None
            self.errors.pop(worker_id, None)
        self.dirty.add(worker_id)
        if item.error is not None:
            self.errors[worker_id] = item.error

    def ended(self, worker_id: str, worker: Worker, now: float) -> None:
        row = self.rows.get(worker_id)
        if row is not None and row.ended is None:
            self.update(row, worker)
            row.ended = now

    def refresh(self, watch: Watched, now: float) -> None:
        """Work out the rows that changed since the last refresh."""
        dirty, self.dirty = self.dirty, set()
        for worker_id in dirty:
            row = self.rows.get(worker_id)
            if row is not None and worker_id in watch.workers and row.ended is None:
                if row.seen is None:
                    row.seen = now
                self.update(row, watch.workers[worker_id])

    def update(self, row: Row, worker: Worker) -> None:
        error = self.errors.get(row.id)
        row.status = status_of(worker, error)
        row.started = row.seen
        created = worker.created_at
        if created and (row.seen is None or not 0 <= row.seen - created < 1):
            # Since the worker was created, unless first seen within that (whole) second.
            row.started = float(created)
        usage = worker.usage
        if usage is not None:
            row.tokens_in, row.tokens_out = usage.input_tokens, usage.output_tokens
            row.total_tokens = usage.total_tokens or usage.input_tokens + usage.output_tokens
        row.cost = worker.cost_usd or 0.0
        row.sources = len(worker.sources)
        tail = worker.output_text[-200:]
        row.last_words = " ".join(tail.split())
        if error is not None:
            row.step, row.error = "stream lost", str(error)
        elif worker.error is not None:
            row.step, row.error = "failed", str(worker.error)
        elif row.status == "completed":
            row.step = "done"
        elif row.status == "pending":
            row.step = "starting"
        else:
            row.step = current_step(worker)

    # -- what it adds up to ---------------------------------------------------

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("completed", "failed", "lost", "running", "pending", "waiting"), 0)
        for row in self.rows.values():
            counts[row.status] = counts.get(row.status, 0) + 1
        return counts

    def summary(self, now: float | None = None) -> str:
        """One line: ``30 workers: 28 completed, 2 failed · 12,345 tokens · $0.1234 · 21.3s``."""
        now = time.time() if now is None else now
        counts = self.counts()
        n = len(self.rows)
        parts = [f"{counts['completed']} completed", f"{counts['failed']} failed"]
        if counts["lost"]:
            parts.append(f"{counts['lost']} lost")
        unfinished = counts["running"] + counts["pending"] + counts["waiting"]
        if unfinished:
            parts.append(f"{unfinished} not finished")
        tokens = sum(row.total_tokens for row in self.rows.values())
        cost = sum(row.cost for row in self.rows.values())
        line = (
            f"{n} worker{'s' * (n != 1)}: {', '.join(parts)} · {tokens:,} tokens · "
            f"${cost:.4f} · {now - self.started:.1f}s"
        )
        return ("interrupted · " if self.interrupted else "") + line

    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        errors = [*self.errors.values()]
        if self.setup_error is not None:
            errors.append(self.setup_error)
        if self.unreachable or any(_is_connection_problem(e) for e in errors):
            return EXIT_CONNECTION
        if errors:
            return EXIT_USAGE  # an id that does not exist, or was refused
        if any(row.status == "failed" for row in self.rows.values()):
            return EXIT_FAILED
        return EXIT_OK

    # -- the table ----------------------------------------------------------------

    def ordered(self) -> list[Row]:
        """Failed first, then the active ones, the ones still to start, and the finished."""
        rows = list(self.rows.values())
        rows.sort(key=lambda r: (_ORDER.get(r.status, 2), -(r.ended or 0) if r.ended else 0))
        return rows

    def table(self, *, height: int, width: int = 140, now: float | None = None) -> Any:
        """The table for a terminal of ``height`` x ``width`` (rows that do not fit are counted)."""
        from rich import box
        from rich.table import Table
        from rich.text import Text

        now = time.time() if now is None else now
        counts = self.counts()
        rows = self.ordered()
        room = max(height - 8, 1)  # title, header, rules, totals, summary
        shown, hidden = rows[:room], rows[room:]
        if hidden:
            shown = rows[: max(room - 1, 0)]
            hidden = rows[len(shown) :]
        title = " · ".join(
            f"{count} {status}"
            for status, count in counts.items()
            if count or status in ("completed", "failed")
        )
        table = Table(
            title=f"handinger-stream watch · {len(rows)} workers · {title}",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            show_footer=True,
            expand=True,
            pad_edge=False,
        )
        total_in = sum(r.tokens_in or 0 for r in rows)
        total_out = sum(r.tokens_out or 0 for r in rows)
        columns = _layout(width)
        words_width = columns.pop("words")
        footers = {
            "worker": f"{len(rows)} workers",
            "status": f"{counts['running']} running",
            "elapsed": f"{now - self.started:.0f}s",
            "tokens": f"{total_in:,}/{total_out:,}",
            "cost": f"${sum(r.cost for r in rows):.4f}",
            "src": str(sum(r.sources for r in rows)),
            "step": "",
        }
        for name, column_width in columns.items():
            table.add_column(
                _HEADERS[name],
                footer=footers[name],
                width=column_width,
                no_wrap=True,
                overflow="ellipsis",
                justify="left" if name in ("worker", "status", "step") else "right",
            )
        table.add_column("last words", width=words_width, no_wrap=True, overflow="crop")
        for row in shown:
            style = _STYLE.get(row.status, "")
            if row.error:  # what went wrong reads from its start
                words = Text(_head(row.error, words_width), style="red")
            else:  # what is being written, from its end
                words = Text(_tail(row.last_words, words_width), style="dim")
            step_style = "italic" if row.status == "running" else style
            if row.status == "running" and row.step not in _STEPS:
                step_style = "magenta"  # a tool being called
            cells: dict[str, str | Text] = {
                "worker": _head(row.id, columns["worker"]),
                "status": Text(row.status, style=style),
                "elapsed": f"{row.elapsed(now):.1f}s" if row.started is not None else "",
                "tokens": (
                    f"{row.tokens_in:,}/{row.tokens_out:,}" if row.tokens_in is not None else "—"
                ),
                "cost": f"${row.cost:.4f}" if row.cost else "",
                "src": str(row.sources) if row.sources else "",
                "step": Text(row.step, style=step_style),
            }
            table.add_row(*(cells[name] for name in columns), words)
        if hidden:
            what = ", ".join(
                f"{sum(r.status == s for r in hidden)} {s}"
                for s in ("running", "pending", "waiting", "completed")
                if any(r.status == s for r in hidden)
            )
            more: list[str | Text] = [Text(f"… {len(hidden)} more", style="dim")]
            more += [""] * (len(columns) - 1) + [Text(what, style="dim")]
            table.add_row(*more)
        return table


_HEADERS = {
    "worker": "worker",
    "status": "status",
    "elapsed": "elapsed",
    "tokens": "tokens in/out",
    "cost": "cost",
    "src": "src",
    "step": "step",
}
_STEPS = {"reasoning", "writing", "waiting", "queued", "starting", "done", "failed", "stream lost"}


def _layout(width: int) -> dict[str, int]:
    """Column widths for a terminal ``width`` wide; ``words`` (the last words) gets the rest.

    On a narrow terminal ids are shortened first, then sources, cost and tokens
    are left out, so that what each worker is doing stays readable.
    """
    columns = {
        "worker": 24,
        "status": 9,
        "elapsed": 7,
        "tokens": 13,
        "cost": 8,
        "src": 3,
        "step": 11,
    }

    def rest() -> int:
        # Each column has a space either side and a divider: three more characters.
        return width - sum(columns.values()) - 3 * (len(columns) + 1)

    for shrink in ("worker", "src", "cost", "tokens"):
        if rest() >= 20:
            break
        if shrink == "worker":
            columns["worker"] = 13
        else:
            del columns[shrink]
    columns["words"] = max(rest(), 8)
    return columns


def _tail(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _head(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _is_connection_problem(error: HandingerError) -> bool:
    if isinstance(error, (AuthenticationError, PermissionDeniedError, MissingAPIKeyError)):
        return True
    if isinstance(error, NotFoundError):
        return False
    return isinstance(error, (APIConnectionError, StreamError, APIStatusError))


# -- running it --------------------------------------------------------------------


def run_watch(args: argparse.Namespace) -> int:
    """The ``watch`` command; its exit code."""
    board = Board()
    try:
        ids = _ids(args)
        count, prompt = _create_args(args)
        if args.redis and (ids or count):
            raise InvalidRequestError(
                "--redis watches every turn the relays produce: give no IDs or --create with it"
            )
        if args.until_idle and not args.redis:
            raise InvalidRequestError("--until-idle goes with --redis")
    except (InvalidRequestError, OSError) as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    if not ids and not count and not args.redis:
        _say(
            "nothing to watch: give worker IDs, --ids-from FILE, --create N PROMPT, or --redis URL"
        )
        return EXIT_USAGE
    try:
        asyncio.run(_main(args, board, ids, count, prompt))
    except KeyboardInterrupt:
        board.interrupted = True
    except _UsageError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    if not board.summarised:
        _say(board.summary())
        board.summarised = True
    return board.exit_code()


class _UsageError(Exception):
    pass


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


async def _main(
    args: argparse.Namespace, board: Board, ids: list[str], count: int, prompt: str
) -> None:
    if args.redis:
        await _follow_fleet(args, board)
        return
    base_url = args.base_url or os.environ.get("HANDINGER_BASE_URL")
    api_key = os.environ.get("HANDINGER_API_KEY")
    if base_url is None and api_key is None:
        if ids:
            raise _UsageError(
                "watching IDs needs the service: set HANDINGER_API_KEY (or --base-url); "
                "without them, try --create N PROMPT on the embedded emulator"
            )
        pace = args.tokens_per_second
        async with Emulator(tokens_per_second=pace, fleet=True) as emulator:
            _say(
                f"No HANDINGER_API_KEY or base URL given: using the embedded emulator at "
                f"{emulator.base_url} (a fleet of simulated workers, {pace:g} tokens/s)"
            )
            await _follow(args, board, ids, count, prompt, "emulator", emulator.base_url)
        return
    await _follow(args, board, ids, count, prompt, api_key, base_url)


async def _follow(
    args: argparse.Namespace,
    board: Board,
    ids: list[str],
    count: int,
    prompt: str,
    api_key: str | None,
    base_url: str | None,
) -> None:
    async with AsyncHandinger(api_key=api_key, base_url=base_url) as client:
        try:
            ids = ids + await _create(client, count, prompt, args.budget)
        except HandingerError as exc:
            board.setup_error = exc
            where = f" ({base_url})" if base_url else ""
            _say(f"error{where}: cannot create workers: {exc}")
            return
        for worker_id in ids:
            board.add(worker_id)
        async with client.workers.watch(ids, max_concurrency=args.max_concurrency) as watch:
            await _display(args, board, watch)


async def _follow_fleet(args: argparse.Namespace, board: Board) -> None:
    """``--redis URL``: the turns of every relay process on that Redis, from the store alone.

    The relay sits on top of the client: imported only for this.
    """
    from ..relay import FleetWatch, RedisStore, StoreUnavailableError

    try:
        store = RedisStore(args.redis)
    except InvalidRequestError as exc:
        raise _UsageError(f"--redis: {exc}") from None
    async with store:
        try:
            async with FleetWatch(store, until_idle=args.until_idle) as fleet:
                until = "none is running" if args.until_idle else "Ctrl-C"
                _say(f"watching the turns relays produce into Redis {store.url} until {until}")
                await _display(args, board, fleet)
        except StoreUnavailableError as exc:
            board.setup_error = exc
            board.unreachable = True
            _say(f"error: {exc}")


async def _display(args: argparse.Namespace, board: Board, watch: Watched) -> None:
    """The table on a terminal, JSON lines with ``--json``, else the table once at the end."""
    live = _Live(board) if not args.json and sys.stdout.isatty() else None
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
        board.refresh(watch, time.time())
        if live is not None:
            live.close()
        elif not args.json and board.rows:
            _print_table(board)


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


async def _quietly(board: Board, watch: Watched) -> None:
    async for item in watch.events(ends=True):
        board.touch(item)
        if item.event is None:
            board.refresh(watch, time.time())
            board.ended(item.worker_id, item.snapshot, time.time())


async def _json_lines(board: Board, watch: Watched) -> None:
    out = sys.stdout
    status: dict[str, str] = {}
    async for item in watch.events(ends=True):
        board.touch(item)
        worker_id = item.worker_id
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
            line: dict[str, Any] = {"type": "status", "worker_id": worker_id, "status": state}
            line["at"] = round(now - board.started, 3)
            out.write(_json.encode(line).decode() + "\n")
        if item.event is None:
            board.refresh(watch, now)
            board.ended(worker_id, worker, now)
            final = {
                "type": "worker",
                "worker_id": worker_id,
                "status": state,
                "error": str(item.error) if item.error is not None else None,
                "worker": worker,
            }
            out.write(_json.encode(final).decode() + "\n")
        out.flush()


class _Live:
    """The live table on the terminal, redrawn a few times a second at most."""

    def __init__(self, board: Board) -> None:
        from rich.console import Console
        from rich.live import Live

        self.board = board
        self.console = Console()
        self.live = Live(
            console=self.console, auto_refresh=False, transient=False, redirect_stderr=False
        )
        self.closed = False

    async def run(self, watch: Watched) -> None:
        self.live.start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._paint, watch)
            async for item in watch.events(ends=True):
                self.board.touch(item)
                if item.event is None:
                    self.board.refresh(watch, time.time())
                    self.board.ended(item.worker_id, item.snapshot, time.time())
            tg.cancel_scope.cancel()
        self.paint(watch)

    async def _paint(self, watch: Watched) -> None:
        while True:
            self.paint(watch)
            await anyio.sleep(1 / REFRESH_PER_SECOND)

    def paint(self, watch: Watched | None = None) -> None:
        now = time.time()
        if watch is not None:
            self.board.refresh(watch, now)
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


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m handinger_stream.monitoring.dashboard`` is ``handinger-stream watch``."""
    parser = argparse.ArgumentParser(prog="handinger-stream")
    add_watch_command(parser.add_subparsers(dest="command", required=True))
    return run_watch(parser.parse_args(["watch", *(argv or sys.argv[1:])]))
