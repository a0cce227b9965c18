"""The ``handinger-stream`` command: watch a worker write, or serve the emulator.

    handinger-stream run "What's the weather in Barcelona?" --budget low
    handinger-stream run "..." --json | jq .type
    handinger-stream serve --port 8787
    handinger-stream record --out weather.json "What's the weather in Barcelona?"
    handinger-stream serve --cassette weather.json [--realtime]
    handinger-stream watch --create 30 "Research one topic"   (see dashboard.py)

Exit codes: 0 completed, 1 the worker failed, 2 usage error, 3 connection or
authentication problem, 4 the server's stream could not be decoded, 130
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from .cassette import Cassette, CassetteError, Recorder
from .client import DEFAULT_BASE_URL, AsyncHandinger
from .dashboard import add_watch_command, run_watch
from .emulator import Emulator
from .errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    HandingerError,
    InvalidRequestError,
    MissingAPIKeyError,
    StreamDecodeError,
    StreamError,
    UnprocessableEntityError,
    WorkerFailedError,
)
from .events import TextDeltaEvent
from .models import BUDGETS, Worker
from .stream import WorkerStream

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONNECTION, EXIT_PROTOCOL = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130
DEFAULT_PROMPT = "What's the weather in Barcelona?"
EMULATOR_PACE = 25.0  # tokens per second: about a real model's pace
_json = msgspec.json.Encoder()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="handinger-stream",
        description="Watch Handinger workers as they work, or run the offline emulator.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="create a worker and show its answer as it is written")
    run.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT, help="the worker's input")
    run.add_argument("--budget", choices=BUDGETS, default=None)
    run.add_argument("--json", action="store_true", help="print one JSON object per event")
    run.add_argument("--base-url", default=None, help="the API's base URL")
    run.add_argument(
        "--tokens-per-second",
        type=float,
        default=EMULATOR_PACE,
        help="the embedded emulator's pace (0: as fast as possible)",
    )
    serve = sub.add_parser("serve", help="run the emulator until interrupted")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8787)
    serve.add_argument("--api-key", default=None, help="require this key (default: any key)")
    serve.add_argument("--tokens-per-second", type=float, default=EMULATOR_PACE)
    serve.add_argument("--seed", type=int, default=0)
    _add_cassette_options(serve)
    serve.add_argument("--fleet", action="store_true", help="play a realistic fleet of workers")
    _add_record_command(sub)
    add_watch_command(sub)
    return parser


def _add_cassette_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--cassette",
        default=None,
        metavar="FILE",
        help="replay this recording instead of the agent",
    )
    serve.add_argument(
        "--realtime", action="store_true", help="replay at the recorded pace (default: at once)"
    )


def _add_record_command(sub: Any) -> None:
    record = sub.add_parser(
        "record", help="run a worker through a recording proxy and save the session to a cassette"
    )
    record.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT, help="the worker's input")
    record.add_argument("--out", required=True, metavar="FILE", help="the cassette to write")
    record.add_argument("--budget", choices=BUDGETS, default=None)
    record.add_argument("--base-url", default=None, help="the API to record (the upstream)")
    record.add_argument("--api-key", default=None, help="default: HANDINGER_API_KEY")
    record.add_argument(
        "--tokens-per-second",
        type=float,
        default=EMULATOR_PACE,
        help="the embedded emulator's pace, when it is what gets recorded",
    )
    record.set_defaults(json=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "watch":
        return run_watch(args)
    try:
        if args.command == "serve":
            return asyncio.run(_serve(args))
        if args.command == "record":
            return asyncio.run(_record(args))
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def entry() -> None:
    sys.exit(main())


async def _serve(args: argparse.Namespace) -> int:
    try:
        cassette = Cassette.load(args.cassette) if args.cassette else None
    except (CassetteError, OSError) as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    emulator = Emulator(
        api_key=args.api_key,
        tokens_per_second=args.tokens_per_second,
        seed=args.seed,
        host=args.host,
        port=args.port,
        cassette=cassette,
        realtime=args.realtime,
        fleet=args.fleet,
    )
    try:
        await emulator.start()
    except OSError as exc:
        _say(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return EXIT_CONNECTION
    if cassette is not None:
        pace = "at the recorded pace" if args.realtime else "as fast as possible"
        _say(
            f"Handinger emulator replaying {args.cassette} ({len(cassette.interactions)} "
            f"recorded requests, {pace}) on {emulator.base_url} (Ctrl-C to stop)"
        )
    else:
        _say(f"Handinger emulator serving on {emulator.base_url} (Ctrl-C to stop)")
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.stop()
    return EXIT_OK


async def _run(args: argparse.Namespace) -> int:
    base_url = args.base_url or os.environ.get("HANDINGER_BASE_URL")
    api_key = os.environ.get("HANDINGER_API_KEY")
    if not args.prompt.strip():
        _say("the prompt must not be empty")
        return EXIT_USAGE
    if base_url is None and api_key is None:
        async with Emulator(tokens_per_second=args.tokens_per_second) as emulator:
            _say(
                f"No HANDINGER_API_KEY or base URL given: using the embedded emulator at "
                f"{emulator.base_url}"
            )
            return await _watch(args, api_key="emulator", base_url=emulator.base_url)
    return await _watch(args, api_key=api_key, base_url=base_url)


async def _record(args: argparse.Namespace) -> int:
    if not args.prompt.strip():
        _say("the prompt must not be empty")
        return EXIT_USAGE
    base_url = args.base_url or os.environ.get("HANDINGER_BASE_URL")
    api_key = args.api_key or os.environ.get("HANDINGER_API_KEY")
    if base_url is None and api_key is None:
        async with Emulator(tokens_per_second=args.tokens_per_second) as emulator:
            _say(
                f"No HANDINGER_API_KEY or base URL given: recording the embedded emulator at "
                f"{emulator.base_url}"
            )
            return await _record_through(args, api_key="emulator", upstream=emulator.base_url)
    return await _record_through(args, api_key=api_key, upstream=base_url or DEFAULT_BASE_URL)


async def _record_through(args: argparse.Namespace, *, api_key: str | None, upstream: str) -> int:
    recorder = Recorder(None, upstream=upstream, secrets=[api_key] if api_key else ())
    try:
        await recorder.start()
        code = await _watch(args, api_key=api_key, base_url=recorder.base_url)
    finally:
        await recorder.stop()
    cassette = recorder.cassette
    if not cassette.interactions:
        _say(f"nothing was recorded: {args.out} not written")
        return code if code != EXIT_OK else EXIT_CONNECTION
    try:
        cassette.save(args.out)
    except OSError as exc:
        _say(f"error: cannot write {args.out}: {exc.strerror or exc}")
        return EXIT_USAGE
    _say(f"recorded {len(cassette.interactions)} request(s) to {args.out}")
    return code


async def _watch(args: argparse.Namespace, *, api_key: str | None, base_url: str | None) -> int:
    started = time.monotonic()
    stream: WorkerStream | None = None
    view = _View(started) if not args.json and sys.stderr.isatty() else None
    try:
        async with AsyncHandinger(api_key=api_key, base_url=base_url) as client:
            stream = await client.workers.create(input=args.prompt, budget=args.budget, stream=True)
            async with stream:
                if args.json:
                    await _print_json(stream)
                elif view is not None:
                    await view.show(stream)
                else:
                    await _print_text(stream)
            worker = await stream.get_final_worker()
    except asyncio.CancelledError:
        _interrupted(stream, started, view)
        raise KeyboardInterrupt from None
    except WorkerFailedError as exc:
        _finish(args, exc.worker or Worker(id=""), started, view)
        _say(f"error: {exc}")
        return EXIT_FAILED
    except MissingAPIKeyError as exc:
        _close_view(view)
        _say(f"error: {exc}")
        return EXIT_CONNECTION
    except (InvalidRequestError, BadRequestError, UnprocessableEntityError) as exc:
        _close_view(view)
        _say(f"error: {exc}")
        return EXIT_USAGE
    except StreamDecodeError as exc:
        # Not the network's fault: the server sent something that is not the protocol.
        _close_view(view)
        _say(f"error: the stream could not be decoded: {exc}")
        return EXIT_PROTOCOL
    except (APIConnectionError, AuthenticationError, APIStatusError, StreamError) as exc:
        _close_view(view)
        where = f" ({base_url})" if base_url else ""
        _say(f"error{where}: {exc}")
        return EXIT_CONNECTION
    except HandingerError as exc:
        _close_view(view)
        _say(f"error: {exc}")
        return EXIT_CONNECTION
    _finish(args, worker, started, view)
    return EXIT_OK


async def _print_text(stream: WorkerStream) -> None:
    out = sys.stdout
    async for event in stream:
        if type(event) is TextDeltaEvent:
            out.write(event.delta)
            out.flush()
    out.write("\n")
    out.flush()


async def _print_json(stream: WorkerStream) -> None:
    out = sys.stdout.buffer
    async for event in stream:
        out.write(_json.encode(event) + b"\n")
        out.flush()


def _finish(args: argparse.Namespace, worker: Worker, started: float, view: _View | None) -> None:
    if view is not None:
        view.close()
        sys.stdout.write(worker.output_text + "\n")
        sys.stdout.flush()
    if args.json:
        sys.stdout.buffer.write(_json.encode(worker) + b"\n")
        sys.stdout.flush()
        return
    _say(summary(worker, time.monotonic() - started))


def _interrupted(stream: WorkerStream | None, started: float, view: _View | None) -> None:
    _close_view(view)
    if stream is None:
        _say("interrupted before the worker started")
        return
    worker = stream.snapshot
    if view is not None:
        sys.stdout.write(worker.output_text + "\n")
    else:
        sys.stdout.write("\n")
    sys.stdout.flush()
    _say("interrupted; partial answer:")
    _say(summary(worker, time.monotonic() - started))


def _close_view(view: _View | None) -> None:
    if view is not None:
        view.close()


def summary(worker: Worker, elapsed: float) -> str:
    """A few lines on how the worker ended: status, usage, cost, sources, files."""
    lines = [f"— {status_line(worker, elapsed)}"]
    if worker.usage is not None:
        u = worker.usage
        lines.append(
            f"  usage: {u.input_tokens} in, {u.output_tokens} out "
            f"({u.reasoning_tokens} reasoning), {u.total_tokens} total, {u.steps} steps"
        )
    if worker.costs is not None:
        c = worker.costs
        lines.append(
            f"  cost: ${c.total_usd:.4f} (model ${c.model_cost_usd:.4f}, "
            f"tools ${c.tool_cost_usd:.4f}, sandbox ${c.sandbox_cost_usd:.4f})"
        )
    for i, source in enumerate(worker.sources, 1):
        lines.append(f"  [{i}] {source.title or source.url} <{source.url}>")
    for file in worker.files:
        lines.append(f"  file: {file.filename or file.url} ({file.media_type}) <{file.url}>")
    if worker.error is not None:
        lines.append(f"  error: {worker.error}")
    return "\n".join(lines)


def status_line(worker: Worker, elapsed: float, *, tokens: int | None = None) -> str:
    """One line: status, tokens so far, cost, elapsed time and sources."""
    if tokens is None:
        tokens = worker.usage.output_tokens if worker.usage else len(worker.output_text.split())
    cost = (
        worker.costs.total_usd if worker.costs else (worker.usage.cost_usd if worker.usage else 0.0)
    )
    state = "failed" if worker.error is not None else worker.status
    return (
        f"{state} · {tokens} tokens · ${cost:.4f} · {elapsed:.1f}s · "
        f"{len(worker.sources)} source{'s' * (len(worker.sources) != 1)}"
    )


class _View:
    """On a terminal: the answer as it grows, with a status line below it (stderr)."""

    def __init__(self, started: float) -> None:
        from rich.console import Console, Group
        from rich.live import Live
        from rich.text import Text

        self._Group, self._Text = Group, Text
        self._console = Console(file=sys.stderr)
        self._started = started
        self._live = Live(
            console=self._console, transient=True, refresh_per_second=12, auto_refresh=True
        )
        self._closed = False

    async def show(self, stream: WorkerStream) -> None:
        self._live.start()
        tokens = 0
        next_paint = 0.0
        async for event in stream:
            if type(event) is TextDeltaEvent:
                tokens += 1
            now = time.monotonic()
            if now >= next_paint:
                next_paint = now + 1 / 12
                self._live.update(self._render(stream.snapshot, tokens))
        self._live.update(self._render(stream.snapshot, tokens))

    def _render(self, worker: Worker, tokens: int) -> Any:
        console = self._console
        elapsed = time.monotonic() - self._started
        status = self._Text(status_line(worker, elapsed, tokens=tokens), style="dim")
        if not worker.output_text:
            return self._Group(self._Text("thinking…", style="italic dim"), status)
        lines = self._Text(worker.output_text).wrap(console, console.width)
        keep = max(console.height - 3, 1)
        return self._Group(self._Text("\n").join(lines[-keep:]), status)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._live.stop()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":  # pragma: no cover
    entry()
