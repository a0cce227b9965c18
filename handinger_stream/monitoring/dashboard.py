"""The dashboard of many workers: a row each, the summary they add up to, and the table.

One row per worker: id, status, elapsed time, tokens in/out, cost, sources,
the current step (the tool being called, "reasoning", "writing", "waiting")
and the last words written, with totals. Today's API: one row per task (a
template's tasks each get theirs, keyed by the task's id), and a ``trigger``
column (api, email, schedule, ui) appears once a task is shown; without one
the table is exactly what it was. Failed and active workers sort
first, so they stay in view on a small terminal. An item of a watch only
marks its row as changed (:meth:`Board.touch`); :meth:`Board.refresh` works
out the changed rows from the workers' snapshots, so what the table costs
does not grow with the token rate. ``handinger-stream watch`` (``cli/watch.py``)
draws it::

    >>> board = Board(started=0)
    >>> board.add("wrk_1")
    >>> board.summary(now=2)
    '1 worker: 0 completed, 0 failed, 1 not finished · 0 tokens · $0.0000 · 2.0s'
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..client.watch import WatchEvent
from ..errors import HandingerError
from ..types.events import ReasoningDeltaEvent, TextDeltaEvent
from ..types.worker import Worker

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

__all__ = ["Board", "Row", "current_step", "status_of"]

_ORDER = {"failed": 0, "lost": 0, "running": 1, "pending": 2, "waiting": 2, "completed": 3}
_STYLE = {
    "failed": "bold red",
    "lost": "bold red",
    "running": "cyan",
    "pending": "yellow",
    "waiting": "dim",
    "completed": "green",
}
_HEADERS = {
    "worker": "worker",
    "status": "status",
    "trigger": "trigger",
    "elapsed": "elapsed",
    "tokens": "tokens in/out",
    "cost": "cost",
    "src": "src",
    "step": "step",
}
# The steps that are not a tool's name (a tool being called is shown in its own colour).
_STEPS = {"reasoning", "writing", "waiting", "queued", "starting", "done", "failed", "stream lost"}


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
    worker: str = ""  # a task's row: the template it runs on
    trigger: str = ""  # a task's row: what started it, once known
    # Tokens streamed (text and reasoning deltas) since the row was last worked out: the
    # usage comes in metadata now and then, the tokens all the time.
    streamed: int = 0

    @property
    def is_task(self) -> bool:
        return bool(self.worker)

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
    """The rows of many workers, the summary, and the table drawn from them."""

    def __init__(self, started: float | None = None) -> None:
        self.started = time.time() if started is None else started
        self.rows: dict[str, Row] = {}
        self.dirty: set[str] = set()
        self.errors: dict[str, HandingerError] = {}  # why a worker's stream was lost
        self.interrupted = False  # stopped before every worker ended (the summary says so)

    def add(self, worker_id: str) -> None:
        self.rows.setdefault(worker_id, Row(worker_id))

    @staticmethod
    def key(item: WatchEvent) -> str:
        """The row an item goes to: its task's, else its worker's."""
        return item.task_id if item.task_id is not None else item.worker_id

    def touch(self, item: WatchEvent) -> None:
        """An item arrived: its row is redrawn at the next refresh. O(1), nothing drawn here."""
        worker_id = self.key(item)
        row = self.rows.get(worker_id)
        if item.task_id is not None:
            placeholder = self.rows.get(item.worker_id)
            if placeholder is not None and placeholder.seen is None and not placeholder.ended:
                # A template given to watch: its tasks' rows take the place of its own.
                del self.rows[item.worker_id]
                self.dirty.discard(item.worker_id)
            if row is None:
                row = self.rows[worker_id] = Row(worker_id)
            row.worker = item.worker_id
            if item.trigger is not None:
                row.trigger = item.trigger
        if row is None:
            self.rows[worker_id] = Row(worker_id)  # found by the fleet as it goes
        elif row.ended is not None and item.event is not None:
            # A later turn of a worker the fleet saw end: live again.
            row.ended = None
            self.errors.pop(worker_id, None)
        self.dirty.add(worker_id)
        if item.error is not None:
            self.errors[worker_id] = item.error
        kind = type(item.event)
        if kind is TextDeltaEvent or kind is ReasoningDeltaEvent:
            (row or self.rows[worker_id]).streamed += 1

    def ended(self, worker_id: str, worker: Worker, now: float) -> None:
        row = self.rows.get(worker_id)
        if row is not None and row.ended is None:
            self.update(row, worker)
            row.ended = now

    def end(self, item: WatchEvent, now: float) -> None:
        """An end item: its row (its task's, or its worker's) ends."""
        self.ended(self.key(item), item.snapshot, now)

    def refresh(self, snapshots: Mapping[str, Worker], now: float) -> None:
        """Work out the rows that changed since the last refresh, from the workers'
        ``snapshots`` by id (a watch's ``workers``)."""
        dirty, self.dirty = self.dirty, set()
        for worker_id in dirty:
            row = self.rows.get(worker_id)
            if row is not None and worker_id in snapshots and row.ended is None:
                if row.seen is None:
                    row.seen = now
                self.update(row, snapshots[worker_id])
                if row.is_task and row.status in ("completed", "failed"):
                    # A template's stream ends once for all of its tasks: each task's
                    # row ends with its turn (a later turn makes it live again).
                    row.ended = now

    def update(self, row: Row, worker: Worker) -> None:
        error = self.errors.get(row.id)
        row.status = status_of(worker, error)
        row.started = row.seen
        created_at = worker.created  # seconds (the seed's) or an ISO string (today's)
        created = created_at.timestamp() if created_at is not None else None
        if created and (row.seen is None or not 0 <= row.seen - created < 1):
            # Since the worker was created, unless first seen within that (whole) second.
            row.started = created
        usage = worker.usage
        said = usage.output_tokens if usage is not None else 0
        if usage is not None or row.streamed:
            row.tokens_in = usage.input_tokens if usage is not None else row.tokens_in or 0
            if worker.running or worker.status != "completed":
                # While the worker writes, its output grows with each token, not only
                # when its next usage arrives (the usage may be behind: the larger wins).
                row.tokens_out = max(said, (row.tokens_out or 0) + row.streamed)
            else:
                row.tokens_out = said  # at its end the usage is the count
        row.streamed = 0
        total = (usage.total_tokens or usage.input_tokens + said) if usage is not None else 0
        row.total_tokens = max(total, (row.tokens_in or 0) + (row.tokens_out or 0))
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
            f"${cost:.4f} · {self.elapsed(now):.1f}s"
        )
        return ("interrupted · " if self.interrupted else "") + line

    def elapsed(self, now: float) -> float:
        """The time the rows span, from the first one's start to the last one's end (or
        ``now``): the rows' own elapsed times fit in it, so the totals agree with them.
        Before any row started, the time since watching began.

        >>> board = Board(started=0)
        >>> board.rows["a"] = Row("a", started=2.0, ended=5.0)
        >>> board.rows["b"] = Row("b", started=3.0)
        >>> board.elapsed(now=10.0), board.rows["b"].elapsed(10.0)
        (8.0, 7.0)
        """
        rows = [row for row in self.rows.values() if row.started is not None]
        if not rows:
            return max(now - self.started, 0.0)
        first = min(row.started for row in rows if row.started is not None)
        last = max(row.ended if row.ended is not None else now for row in rows)
        return max(last - first, 0.0)

    # -- the table ----------------------------------------------------------------

    def ordered(self) -> list[Row]:
        """Failed first, then the active ones, the ones still to start, and the finished."""
        rows = list(self.rows.values())
        rows.sort(key=lambda r: (_ORDER.get(r.status, 2), -(r.ended or 0) if r.ended else 0))
        return rows

    def table(self, *, height: int, width: int = 140, now: float | None = None) -> Table:
        """The table for a terminal of ``height`` x ``width`` (rows that do not fit are counted)."""
        now = time.time() if now is None else now
        counts = self.counts()
        rows = self.ordered()
        shown, hidden = _fit(rows, height)
        # The same format as the rows' times, over the span they cover: they agree.
        footers = _footers(rows, counts, f"{self.elapsed(now):.1f}s")
        # Every id whole, every total whole: the other columns give way instead.
        need = {name: len(text) for name, text in footers.items()}
        need["worker"] = max([need["worker"], *(len(row.id) for row in shown)])
        columns = _layout(width, trigger=any(row.is_task for row in rows), need=need)
        words_width = columns.pop("words")
        table = _frame(_title(counts, len(rows)))
        for name, column_width in columns.items():
            table.add_column(
                _HEADERS[name],
                footer=footers[name],
                width=column_width,
                min_width=column_width,
                no_wrap=True,
                overflow="ellipsis",
                justify="left" if name in ("worker", "status", "trigger", "step") else "right",
            )
        table.add_column("last words", width=words_width, no_wrap=True, overflow="crop")
        for row in shown:
            cells = _cells(row, columns["worker"], now)
            table.add_row(*(cells[name] for name in columns), _words(row, words_width))
        if hidden:
            table.add_row(*_more(hidden, len(columns)))
        return table


def _fit(rows: list[Row], height: int) -> tuple[list[Row], list[Row]]:
    """The rows a terminal ``height`` lines high shows, and the rest: when some are left
    out, the last line that fits counts them instead."""
    room = max(height - 8, 1)  # title, header, rules, totals, summary
    shown, hidden = rows[:room], rows[room:]
    if hidden:
        shown = rows[: max(room - 1, 0)]
        hidden = rows[len(shown) :]
    return shown, hidden


def _title(counts: dict[str, int], workers: int) -> str:
    """``handinger-stream watch · 3 workers · 1 completed · 0 failed · 2 running``."""
    by_status = " · ".join(
        f"{count} {status}"
        for status, count in counts.items()
        if count or status in ("completed", "failed")
    )
    return f"handinger-stream watch · {workers} workers · {by_status}"


def _frame(title: str) -> Table:
    """An empty table, its title at the left and its totals at the foot."""
    from rich import box
    from rich.table import Table

    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_footer=True,
        expand=True,
        pad_edge=False,
    )


def _footers(rows: list[Row], counts: dict[str, int], elapsed: str) -> dict[str, str]:
    """The totals under each column, by column name."""
    total_in = sum(r.tokens_in or 0 for r in rows)
    total_out = sum(r.tokens_out or 0 for r in rows)
    return {
        "worker": f"{len(rows)} workers",
        "status": f"{counts['running']} running",
        "trigger": "",
        "elapsed": elapsed,
        "tokens": f"{total_in:,}/{total_out:,}",
        "cost": f"${sum(r.cost for r in rows):.4f}",
        "src": str(sum(r.sources for r in rows)),
        "step": "",
    }


def _cells(row: Row, id_width: int, now: float) -> dict[str, str | Text]:
    """One worker's cells, by column name (a narrow table leaves some of them out)."""
    from rich.text import Text

    style = _STYLE.get(row.status, "")
    step_style = "italic" if row.status == "running" else style
    if row.status == "running" and row.step not in _STEPS:
        step_style = "magenta"  # a tool being called
    return {
        "worker": _head(row.id, id_width),
        "status": Text(row.status, style=style),
        "trigger": row.trigger,
        "elapsed": f"{row.elapsed(now):.1f}s" if row.started is not None else "",
        "tokens": f"{row.tokens_in:,}/{row.tokens_out:,}" if row.tokens_in is not None else "—",
        "cost": f"${row.cost:.4f}" if row.cost else "",
        "src": str(row.sources) if row.sources else "",
        "step": Text(row.step, style=step_style),
    }


def _words(row: Row, width: int) -> Text:
    """The last cell: what went wrong, read from its start; else what is being written,
    from its end."""
    from rich.text import Text

    if row.error:
        return Text(_head(row.error, width), style="red")
    return Text(_tail(row.last_words, width), style="dim")


def _more(hidden: list[Row], columns: int) -> list[str | Text]:
    """The line that counts the rows left out: ``… 4 more`` and what they are."""
    from rich.text import Text

    what = ", ".join(
        f"{sum(r.status == s for r in hidden)} {s}"
        for s in ("running", "pending", "waiting", "completed")
        if any(r.status == s for r in hidden)
    )
    more: list[str | Text] = [Text(f"… {len(hidden)} more", style="dim")]
    return more + [""] * (columns - 1) + [Text(what, style="dim")]


def _layout(
    width: int, *, trigger: bool = False, need: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Column widths for a terminal ``width`` wide; ``words`` (the last words) gets the rest.

    ``need``: the width a column's content takes (the longest id, each total), which it
    gets: ids and totals are never cut. On a narrow terminal sources, cost and tokens are
    left out instead (the summary line still totals them), then the elapsed time and the
    trigger, so that each worker's id, status, step and words stay readable.
    ``trigger``: tasks are shown, and what started each.

    >>> _layout(80, need={"worker": 24})
    {'worker': 24, 'status': 9, 'elapsed': 7, 'step': 11, 'words': 14}
    >>> _layout(140, need={"worker": 24})
    {'worker': 24, 'status': 9, 'elapsed': 7, 'tokens': 13, 'cost': 8, 'src': 3, 'step': 11, \
'words': 41}
    """
    columns = {"worker": 13, "status": 9}
    if trigger:
        columns["trigger"] = 8  # "schedule", the longest
    columns |= {"elapsed": 7, "tokens": 13, "cost": 8, "src": 3, "step": 11}
    for name, size in (need or {}).items():
        if name in columns:
            columns[name] = max(columns[name], size)
    # An id wider than half the terminal is the one thing that may still be cut.
    columns["worker"] = min(columns["worker"], max(width // 2, 13))

    def rest() -> int:
        # Each column has a space either side and a divider: three more characters.
        return width - sum(columns.values()) - 3 * (len(columns) + 1)

    for drop, room in (("src", 20), ("cost", 20), ("tokens", 20), ("elapsed", 8), ("trigger", 8)):
        if rest() >= room:
            break
        columns.pop(drop, None)
    columns["words"] = max(rest(), 8)
    return columns


def _tail(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _head(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
