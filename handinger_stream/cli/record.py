"""``handinger-stream record``: run a worker through a recording proxy, save a cassette.

    handinger-stream record --out weather.json "What's the weather in Barcelona?"
    handinger-stream serve --cassette weather.json      # replays it, offline

It is ``run`` (the same prompt, key and base URL rules, the same view) with a
:class:`~handinger_stream.testing.cassette.Recorder` between the client and
the API, so it sits on top of ``run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from ..client.async_client import DEFAULT_BASE_URL
from ..testing.cassette import Recorder
from ..testing.emulator import Emulator
from ..types.worker import BUDGETS
from .arguments import EMULATOR_PACE, pace
from .exit_codes import EXIT_CONNECTION, EXIT_OK, EXIT_USAGE
from .printing import count, say
from .run import create_and_show, settings

__all__ = ["add_parser", "command"]


def add_parser(sub: Any) -> None:
    """Register ``record`` on the command line's subcommands."""
    record = sub.add_parser(
        "record", help="run a worker through a recording proxy and save the session to a cassette"
    )
    record.add_argument(
        "prompt",
        nargs="?",
        default=None,
        help="the worker's input (required, except on the embedded emulator)",
    )
    record.add_argument("--out", required=True, metavar="FILE", help="the cassette to write")
    record.add_argument("--budget", choices=BUDGETS, default=None)
    record.add_argument("--base-url", default=None, help="the API to record (the upstream)")
    record.add_argument("--api-key", default=None, help="default: HANDINGER_API_KEY")
    record.add_argument(
        "--tokens-per-second",
        type=pace,
        default=EMULATOR_PACE,
        help="the embedded emulator's pace, when it is what gets recorded",
    )
    record.set_defaults(json=False)  # run's view, never its JSON lines


def command(args: argparse.Namespace) -> int:
    """Run ``handinger-stream record`` with parsed arguments; the exit code."""
    return asyncio.run(_record(args))


async def _record(args: argparse.Namespace) -> int:
    found = settings(args)
    if isinstance(found, int):
        return found
    prompt, api_key, base_url = found
    if base_url is None and api_key is None:
        async with Emulator(tokens_per_second=args.tokens_per_second) as emulator:
            say(
                f"No API key or base URL given: recording the embedded emulator at "
                f"{emulator.base_url}"
            )
            return await _record_through(
                args, prompt, api_key="emulator", upstream=emulator.base_url
            )
    return await _record_through(
        args, prompt, api_key=api_key, upstream=base_url or DEFAULT_BASE_URL
    )


async def _record_through(
    args: argparse.Namespace, prompt: str, *, api_key: str | None, upstream: str
) -> int:
    recorder = Recorder(None, upstream=upstream, secrets=[api_key] if api_key else ())
    try:
        await recorder.start()
        code = await create_and_show(args, prompt, api_key=api_key, base_url=recorder.base_url)
    finally:
        await recorder.stop()
    cassette = recorder.cassette
    if not cassette.interactions:
        say(f"error: nothing was recorded: {args.out} not written")
        return code if code != EXIT_OK else EXIT_CONNECTION
    try:
        cassette.save(args.out)
    except OSError as exc:
        say(f"error: cannot write {args.out}: {exc.strerror or exc}")
        return EXIT_USAGE
    say(f"recorded {count(len(cassette.interactions), 'request')} to {args.out}")
    return code
