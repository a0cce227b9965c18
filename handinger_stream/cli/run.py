"""``handinger-stream run``: create a worker and show its answer as it is written.

    handinger-stream run "What's the weather in Barcelona?" --budget low
    handinger-stream run "..." --json | jq .type

On a terminal a live view (stderr) shows what the worker is doing while it is
not writing: the tail of its reasoning, the tool it calls, the sources as
they arrive. Elsewhere the answer goes to stdout as it streams, or with
``--json`` one line per event and a last one holding the Worker.
``record`` runs a worker the same way, through a recording proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from typing import IO, TYPE_CHECKING, Any

import msgspec

from ..client.async_client import DEFAULT_BASE_URL, AsyncHandinger
from ..client.stream import WorkerStream
from ..errors import (
    HandingerError,
    NotFoundError,
    StreamDecodeError,
    StreamError,
    WorkerFailedError,
    excerpt,
)
from ..protocol.wire import encode_event
from ..testing.emulator import Emulator
from ..types.events import (
    Event,
    FileEvent,
    ReasoningDeltaEvent,
    ReasoningEndEvent,
    ReasoningStartEvent,
    SourceDocumentEvent,
    SourceUrlEvent,
    TextDeltaEvent,
    TextStartEvent,
    ToolInputAvailableEvent,
    ToolInputDeltaEvent,
    ToolInputErrorEvent,
    ToolInputStartEvent,
    ToolOutputAvailableEvent,
    ToolOutputErrorEvent,
    WorkerSnapshotEvent,
)
from ..types.worker import BUDGETS, Worker
from .arguments import EMULATOR_PACE, pace
from .connection import Service, add_command, add_service_options, failure, reason, service
from .exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .printing import count, discard_stdout, say

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.text import Text

__all__ = [
    "DEFAULT_PROMPT",
    "add_parser",
    "add_run_options",
    "command",
    "create_and_show",
    "emulator_pace",
    "settings",
    "summary",
]

DEFAULT_PROMPT = "What's the weather in Barcelona?"
_JSON_HELP = (
    "print one JSON object per line: each event as the wire carried it (an AI SDK UI "
    "message chunk), then a final data-worker chunk holding the Worker as folded, with "
    "outcome and error at its top level"
)


def add_parser(sub: Any) -> None:
    """Register ``run`` on the command line's subcommands."""
    run = add_command(
        sub,
        "run",
        help="create a worker and show its answer as it is written",
        description=(
            "Create a worker and show its answer as it is written: on a terminal, with a\n"
            "live view of what it is doing (reasoning, tool calls, sources). Without\n"
            "HANDINGER_API_KEY, --api-key or a base URL, it runs against the embedded\n"
            "emulator, and PROMPT defaults to a demo question. With --worker ID (a\n"
            "worker template) or --task ID (a follow-up turn) it is a task of today's API.\n"
            "Ctrl-C stops reading (the worker goes on) and says how to follow it."
        ),
    )
    run.add_argument(
        "prompt",
        nargs="?",
        default=None,
        help="the worker's input; - reads it from stdin, as does a piped stdin when "
        "PROMPT is left out (required, except on the embedded emulator)",
    )
    add_run_options(run)
    run.add_argument(
        "--worker",
        metavar="ID",
        default=None,
        help="run PROMPT as a task on this worker template (today's API: POST /api/tasks)",
    )
    run.add_argument(
        "--task",
        metavar="ID",
        default=None,
        help="add PROMPT as a turn to this task (a new id starts a task of that id); "
        "with --worker too when the task's worker is needed",
    )
    add_service_options(run, json_help=_JSON_HELP)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """What ``run`` and ``record`` share besides the service: the budget, the embedded
    emulator's pace."""
    parser.add_argument("--budget", choices=BUDGETS, default=None, help="the run's budget")
    parser.add_argument(
        "--tokens-per-second",
        type=pace,
        default=None,
        metavar="N",
        help=f"the embedded emulator's pace (default {EMULATOR_PACE:g}; 0: as fast as "
        "possible); refused when a key or base URL is given (no emulator runs then)",
    )


def command(args: argparse.Namespace) -> int:
    """Run ``handinger-stream run`` with parsed arguments; the exit code."""
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    found = settings(args)
    if isinstance(found, int):
        return found
    prompt, where = found
    if where.embedded:
        if args.worker is not None:
            # The embedded emulator starts empty: no template of that id is on it.
            say(
                "error: --worker runs a template the service holds: set HANDINGER_API_KEY "
                "(or pass --api-key or --base-url)"
            )
            return EXIT_USAGE
        async with Emulator(tokens_per_second=emulator_pace(args)) as emulator:
            say(f"No API key or base URL given: using the embedded emulator at {emulator.base_url}")
            return await create_and_show(
                args, prompt, Service("emulator", emulator.base_url, "the embedded emulator")
            )
    return await create_and_show(args, prompt, where)


def emulator_pace(args: argparse.Namespace) -> float:
    """The embedded emulator's pace: ``--tokens-per-second``, else a model's."""
    given: float | None = args.tokens_per_second
    return EMULATOR_PACE if given is None else given


def settings(args: argparse.Namespace) -> tuple[str, Service] | int:
    """The prompt and the service of ``run`` and ``record``; or an exit code (said already).

    A prompt is required unless the embedded emulator answers (no key and no
    base URL): a worker on the real service costs money, so none starts
    from a default. ``-``, or a piped stdin when no prompt is given, is read.
    """
    embedded = not (
        args.base_url
        or os.environ.get("HANDINGER_BASE_URL")
        or args.api_key
        or os.environ.get("HANDINGER_API_KEY")
    )
    if args.tokens_per_second is not None and not embedded:
        say(
            "error: --tokens-per-second sets the embedded emulator's pace, and with a key or "
            "a base URL no emulator runs here: leave it out (or start one with "
            "'handinger-stream serve --tokens-per-second N')"
        )
        return EXIT_USAGE
    prompt = _read_prompt(args.prompt)
    if prompt is None:
        if not embedded:
            say(
                "error: a prompt is required: handinger-stream "
                f'{args.command} "PROMPT" (or - to read it from stdin; a default one is '
                "used only on the embedded emulator)"
            )
            return EXIT_USAGE
        prompt = DEFAULT_PROMPT
    if not prompt.strip():
        say("error: the prompt must not be empty")
        return EXIT_USAGE
    where = service(args, embedded_ok=True)
    if isinstance(where, int):
        return where
    return prompt, where


def _read_prompt(given: str | None) -> str | None:
    """``given``; or stdin's text for ``-``, or when stdin is piped and no prompt given
    (``None`` if that pipe brought nothing)."""
    stdin = sys.stdin
    if given is not None and given != "-":
        return given
    if stdin is None or (given is None and _is_terminal(stdin)):
        return None
    try:
        text = stdin.read()
    except (OSError, ValueError):
        text = ""
    if given == "-":
        return text.strip()
    return text.strip() or None


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return True  # cannot tell: not read, as a terminal would not be


class _Seen:
    """What the reading saw as it went: the text tokens (the live count, kept by the
    summary after Ctrl-C), and the JSON line held back (a snapshot the final line may
    supersede)."""

    def __init__(self) -> None:
        self.tokens = 0
        self.held: bytes | None = None

    def flush_held(self) -> None:
        if self.held is not None:
            held, self.held = self.held, None
            sys.stdout.buffer.write(held)
            sys.stdout.flush()


async def create_and_show(args: argparse.Namespace, prompt: str, where: Service) -> int:
    """Create a worker on ``prompt`` at ``where`` and show it as it works (``args.json``: as
    JSON lines); the exit code. Ctrl-C shows the answer so far and how to follow the
    worker, then raises KeyboardInterrupt."""
    started = time.monotonic()
    stream: WorkerStream | None = None
    seen = _Seen()
    view = _View(started) if not args.json and sys.stderr.isatty() else None
    # Today's API (run's --worker and --task; record has neither): a task, not a run.
    worker_id: str | None = getattr(args, "worker", None)
    task_id: str | None = getattr(args, "task", None)
    base_url = where.base_url or DEFAULT_BASE_URL
    try:
        async with AsyncHandinger(api_key=where.api_key, base_url=base_url) as client:
            if worker_id is None and task_id is None:
                stream = await client.workers.create(input=prompt, budget=args.budget, stream=True)
            else:
                # Today's API: a task on a template, or a turn of a task.
                stream = await client.tasks.create(
                    input=prompt,
                    worker_id=worker_id,
                    task_id=task_id,
                    budget=args.budget,
                    stream=True,
                )
            async with stream:
                if args.json:
                    await _print_json(stream, seen)
                elif view is not None:
                    await view.show(stream)
                else:
                    await _print_text(stream, seen)
            worker = await stream.get_final_worker()
    except asyncio.CancelledError:
        _interrupted(args, stream, started, view, seen, where)
        raise KeyboardInterrupt from None
    except WorkerFailedError as exc:
        failed = exc.worker or Worker(id="")
        _finish(args, failed, started, view, outcome="failed", error=failed.error_message)
        say(f"error: {exc}")
        return EXIT_FAILED
    except HandingerError as exc:
        _close_view(view)
        if isinstance(exc, NotFoundError):
            # An id (--worker, --task) the service does not know, a path it does not
            # serve, a cassette without this request: the command was wrong.
            say(f"error: {exc}")
            return EXIT_USAGE
        if isinstance(exc, StreamError) and not isinstance(exc, StreamDecodeError) and args.json:
            # The last line still says how it ended: not completed.
            cut = exc.worker or (stream.snapshot if stream is not None else Worker(id=""))
            broke = f"the stream broke and could not be resumed ({reason(exc)})"
            sys.stdout.buffer.write(_final_chunk(cut, "incomplete", broke))
            sys.stdout.flush()
        return failure(exc, where)
    except BrokenPipeError:
        _close_view(view)
        raise
    outcome = worker.outcome or "incomplete"
    _finish(args, worker, started, view, outcome=outcome, error=worker.error_message)
    if outcome != "completed":
        # Aborted, or ended short for a reason the service gave: not an answer.
        details = worker.incomplete_details
        # An abort's own words (its detail) say more than its reason, "aborted".
        if isinstance(details, dict):
            why = details.get("detail") or details.get("reason")
        else:
            why = details
        said = f" ({why})" if why and why != outcome else ""
        say(f"error: {_ident(worker)} did not complete: {outcome}{said}")
        return EXIT_FAILED
    return EXIT_OK


async def _print_text(stream: WorkerStream, seen: _Seen) -> None:
    out = _Wrapped(sys.stdout)
    try:
        async for event in stream:
            if type(event) is TextDeltaEvent:
                seen.tokens += 1
                out.write(event.delta)
        out.end()
    except BrokenPipeError:
        await _interrupt_first()
        raise


async def _print_json(stream: WorkerStream, seen: _Seen) -> None:
    out = sys.stdout.buffer
    try:
        async for event in stream:
            line = encode_event(event) + b"\n"
            if seen.held is not None:
                out.write(seen.held)
                seen.held = None
            kind = type(event)
            if kind is TextDeltaEvent:
                seen.tokens += 1
            elif kind is WorkerSnapshotEvent:
                # Held back: the stream's last snapshot is superseded by the final line
                # (the Worker as folded, with its outcome), so that it is not printed twice.
                seen.held = line
                continue
            out.write(line)
            out.flush()
    except BrokenPipeError:
        await _interrupt_first()
        raise


async def _interrupt_first() -> None:
    """Let a pending Ctrl-C cancel us before a closed pipe is reported.

    Ctrl-C reaches the whole pipeline: ``head`` dies of it too, and our next
    write fails. The interrupt is what happened (exit 130), not a closed output.
    """
    await asyncio.sleep(0)


def _final_chunk(worker: Worker, outcome: str | None, error: str | None) -> bytes:
    """The last ``--json`` line: the folded Worker, as a ``data-worker`` chunk like the
    wire's, with how it ended (``outcome``) and the error's message beside it, at the top
    level where ``jq .outcome`` finds them."""
    chunk = {
        "type": "data-worker",
        "data": worker,  # every field, under its wire name
        "transient": True,
        "outcome": outcome,
        "error": error,
    }
    return msgspec.json.encode(chunk) + b"\n"


def _finish(
    args: argparse.Namespace,
    worker: Worker,
    started: float,
    view: _View | None,
    *,
    outcome: str,
    error: str | None,
) -> None:
    if view is not None:
        view.close()
        out = _Wrapped(sys.stdout)
        out.write(worker.output_text)
        out.end()
    if args.json:
        sys.stdout.buffer.write(_final_chunk(worker, outcome, error))
        sys.stdout.flush()
        return
    say(summary(worker, time.monotonic() - started, state=outcome))


def _interrupted(
    args: argparse.Namespace,
    stream: WorkerStream | None,
    started: float,
    view: _View | None,
    seen: _Seen,
    where: Service,
) -> None:
    _close_view(view)
    if stream is None:
        say("interrupted before the worker started (it may have been created all the same)")
        return
    worker = stream.snapshot
    if args.json:
        seen.flush_held()
    ident = _ident(worker) or f"worker {stream.worker_id}"
    # The label first, then the answer so far: what follows is a fragment.
    if where.embedded:
        say(f"interrupted: {ident} stopped with the embedded emulator; partial answer:")
    else:
        follow = "handinger-stream watch " + ident.split()[-1]
        if args.base_url:
            follow += f" --base-url {args.base_url}"
        say(f"interrupted: {ident} goes on at the service; follow it with: {follow}")
        if not args.json:
            say("partial answer:")
    if not args.json:
        # The reader may be gone too (Ctrl-C reaches `| head` as well).
        try:
            out = _Wrapped(sys.stdout)
            if view is not None:
                out.write(worker.output_text)
            out.end()
        except BrokenPipeError:
            discard_stdout()
    tokens = view.tokens if view is not None else seen.tokens
    say(summary(worker, time.monotonic() - started, state="interrupted", tokens=tokens))


def _close_view(view: _View | None) -> None:
    if view is not None:
        view.close()


def _ident(worker: Worker) -> str:
    """``task tsk_…`` for a task of today's API (what ``watch`` follows), else ``worker wrk_…``."""
    task_id = worker.metadata.get("taskId") if isinstance(worker.metadata, dict) else None
    if isinstance(task_id, str) and task_id:
        return f"task {task_id}"
    return f"worker {worker.id}" if worker.id else ""


def summary(
    worker: Worker, elapsed: float, *, state: str | None = None, tokens: int | None = None
) -> str:
    """A few lines on how the worker ended: status, usage, cost, sources, files, its id.

    >>> print(summary(Worker(id="w", status="completed"), 2.0))
    — completed · 0 tokens · $0.0000 · 2.0s · 0 sources
      worker w
    """
    lines = [f"— {status_line(worker, elapsed, tokens=tokens, state=state)}"]
    if worker.usage is not None:
        u = worker.usage
        lines.append(
            f"  usage: {u.input_tokens} in, {u.output_tokens} out "
            f"({u.reasoning_tokens} reasoning), {u.total_tokens} total, {count(u.steps, 'step')}"
        )
    if worker.costs is not None:
        c = worker.costs
        # Every part of the total, so that they add up to it.
        lines.append(
            f"  cost: ${c.total_usd:.4f} (model ${c.model_cost_usd:.4f}, "
            f"tools ${c.tool_cost_usd:.4f}, sandbox ${c.sandbox_cost_usd:.4f}, "
            f"internal ${c.internal_cost_usd:.4f})"
        )
    for i, source in enumerate(worker.sources, 1):
        lines.append(f"  [{i}] {source.title or source.url} <{source.url}>")
    for file in worker.files:
        lines.append(f"  file: {file.filename or file.url} ({file.media_type}) <{file.url}>")
    ident = _ident(worker)
    if ident:
        lines.append(f"  {ident}")
    return "\n".join(lines)


def status_line(
    worker: Worker, elapsed: float, *, tokens: int | None = None, state: str | None = None
) -> str:
    """One line: how it stands (``state``, else its outcome or status), tokens so far,
    cost, elapsed time and sources."""
    if tokens is None:
        tokens = worker.usage.output_tokens if worker.usage else len(worker.output_text.split())
    cost = (
        worker.costs.total_usd if worker.costs else (worker.usage.cost_usd if worker.usage else 0.0)
    )
    if state is None:
        state = worker.outcome or worker.status
    return (
        f"{state} · {count(tokens, 'token')} · ${cost:.4f} · {elapsed:.1f}s · "
        f"{count(len(worker.sources), 'source')}"
    )


class _Wrapped:
    """Text written to a terminal wraps at word boundaries, as it streams; elsewhere
    (a pipe, a file) it goes out exactly as written.

    Greedy: a word that would cross the right edge starts a new line.
    """

    def __init__(self, out: IO[str], width: int | None = None) -> None:
        self._out = out
        self._width = width
        if width is None and out.isatty():
            self._width = max(shutil.get_terminal_size().columns, 20)
        self._column = 0
        self._word = ""  # a word not yet placed: it may still grow

    def write(self, text: str) -> None:
        if self._width is None:
            self._out.write(text)
            self._out.flush()
            return
        pieces: list[str] = []
        for char in text:
            if char == "\n":
                pieces.append(self._place() + "\n")
                self._column = 0
            elif char == " ":
                pieces.append(self._place())
                if self._column < self._width:
                    pieces.append(" ")
                    self._column += 1
            else:
                self._word += char
        self._out.write("".join(pieces))
        self._out.flush()

    def _place(self) -> str:
        from rich.cells import cell_len

        word, self._word = self._word, ""
        if not word:
            return ""
        assert self._width is not None
        size = cell_len(word)
        if self._column and self._column + size > self._width:
            self._column = size
            return "\n" + word
        self._column += size
        return word

    def end(self) -> None:
        """Place what is left, and end the line."""
        if self._width is None:
            self._out.write("\n")
        else:
            self._out.write(self._place() + "\n")
        self._out.flush()


_MARKS = {"calling": "…", "running": "…", "done": "✓", "failed": "✗"}


class _View:
    """On a terminal: what the worker is doing, and the answer as it grows (stderr).

    While the worker is not writing, the view shows what it does instead: the
    tail of its reasoning, the tool it calls with its input, the sources as
    they arrive. The last tool call stays in view while the answer is written;
    a status line sits at the bottom. The answer wraps at word boundaries.
    """

    REFRESH = 12  # times a second, at most

    def __init__(self, started: float) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = Console(file=sys.stderr, highlight=False)
        self._started = started
        self._live = Live(
            console=self._console,
            transient=True,
            refresh_per_second=self.REFRESH,
            auto_refresh=True,
        )
        self._closed = False
        self.tokens = 0
        self._writing = False  # the last thing the worker did was write the answer
        self._reasoning: str | None = None  # the current reasoning, while it lasts
        self._tool: tuple[str, str, str] | None = None  # name, input, state
        self._tool_input = ""
        self._sources: list[str] = []
        self._files: list[str] = []

    async def show(self, stream: WorkerStream) -> None:
        self._live.start()
        next_paint = 0.0
        async for event in stream:
            self.see(event)
            now = time.monotonic()
            if now >= next_paint:
                next_paint = now + 1 / self.REFRESH
                self._live.update(self.render(stream.snapshot))
        self._live.update(self.render(stream.snapshot))

    def see(self, event: Event) -> None:
        """Note what the event says the worker is doing."""
        kind = type(event)
        if kind is TextDeltaEvent:
            self.tokens += 1
            self._writing = True
            return
        if kind is TextStartEvent:
            self._writing = True
        elif kind is ReasoningStartEvent:
            self._writing, self._reasoning = False, ""
        elif kind is ReasoningDeltaEvent:
            assert isinstance(event, ReasoningDeltaEvent)
            self._writing = False
            self._reasoning = ((self._reasoning or "") + event.delta)[-2000:]
        elif kind is ReasoningEndEvent:
            self._reasoning = None
        elif kind is SourceUrlEvent:
            assert isinstance(event, SourceUrlEvent)
            self._writing = False
            self._sources.append(f"{event.title or event.url} <{event.url}>")
        elif kind is SourceDocumentEvent:
            assert isinstance(event, SourceDocumentEvent)
            self._writing = False
            self._sources.append(event.title)
        elif kind is FileEvent:
            assert isinstance(event, FileEvent)
            self._files.append(event.url.rsplit("/", 1)[-1] or event.url)
        else:
            self._see_tool(event)

    def _see_tool(self, event: Event) -> None:
        """A tool call's progress: its name, its input as it streams, then how it ended."""
        kind = type(event)
        if kind is ToolInputStartEvent:
            assert isinstance(event, ToolInputStartEvent)
            self._writing, self._reasoning = False, None
            self._tool_input = ""
            self._tool = (event.tool_name, "", "calling")
        elif kind is ToolInputDeltaEvent and self._tool is not None:
            assert isinstance(event, ToolInputDeltaEvent)
            self._tool_input = (self._tool_input + event.input_text_delta)[-2000:]
            self._tool = (self._tool[0], self._tool_input, "calling")
        elif kind is ToolInputAvailableEvent:
            assert isinstance(event, ToolInputAvailableEvent)
            self._writing = False
            shown = _one_line(event.input) if event.input is not msgspec.UNSET else ""
            self._tool = (event.tool_name, shown, "running")
        elif kind is ToolOutputAvailableEvent and self._tool is not None:
            self._tool = (self._tool[0], self._tool[1], "done")
        elif kind in (ToolOutputErrorEvent, ToolInputErrorEvent) and self._tool is not None:
            self._tool = (self._tool[0], self._tool[1], "failed")

    def render(self, worker: Worker) -> RenderableType:
        from rich.console import Group
        from rich.text import Text

        console = self._console
        width = max(console.width, 20)
        below = self._doing(width)
        elapsed = time.monotonic() - self._started
        below.append(Text(status_line(worker, elapsed, tokens=self.tokens), style="dim"))
        if worker.output_text:
            lines = Text(worker.output_text).wrap(console, width)
            keep = max(console.height - len(below) - 1, 1)
            return Group(Text("\n").join(lines[-keep:]), *below)
        if not below[:-1]:
            below.insert(0, Text("starting…", style="italic dim"))
        return Group(*below)

    def _doing(self, width: int) -> list[Text]:
        """The lines under the answer: the reasoning and sources (while not writing),
        the last tool call, the files."""
        from rich.text import Text

        lines: list[Text] = []
        if not self._writing:
            if self._reasoning:
                lines.extend(_tail_lines(f"thinking: {self._reasoning}", width, 2, self._console))
            for source in self._sources[-3:]:
                lines.append(Text(_clip(f"+ source: {source}", width), style="cyan"))
        if self._tool is not None:
            name, shown, state = self._tool
            line = f"⚙ {name} {shown} {_MARKS[state]}"
            lines.append(Text(_clip(line, width), style="yellow"))
        if self._files:
            lines.append(Text(_clip(f"file: {', '.join(self._files)}", width), style="dim"))
        return lines

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._live.stop()


def _one_line(value: Any) -> str:
    """A tool's input on one line, as JSON."""
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(value)


def _clip(text: str, width: int) -> str:
    return excerpt(" ".join(text.split()), width)


def _tail_lines(text: str, width: int, keep: int, console: Console) -> list[Text]:
    """The last ``keep`` lines of ``text`` wrapped to ``width``, dim and italic."""
    from rich.text import Text

    lines = Text(" ".join(text.split()), style="italic dim").wrap(console, width)
    tail = list(lines[-keep:])
    if len(lines) > keep:
        tail[0] = Text("…", style="italic dim") + tail[0]
    return tail
