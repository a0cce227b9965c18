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
from .connection import Service, add_command, add_service_options
from .exit_codes import EXIT_CONNECTION, EXIT_OK, EXIT_USAGE
from .printing import count, say
from .run import add_run_options, create_and_show, emulator_pace, settings

__all__ = ["add_parser", "command"]


def add_parser(sub: Any) -> None:
    """Register ``record`` on the command line's subcommands."""
    record = add_command(
        sub,
        "record",
        help="run a worker through a recording proxy and save the session to a cassette",
        description=(
            "Run a worker as 'run' does, through a recording proxy, and save what the API\n"
            "said to a cassette (the key is never written). Replay it offline with\n"
            "'handinger-stream serve --cassette FILE', or the pytest fixture\n"
            "handinger_cassette."
        ),
    )
    record.add_argument(
        "prompt",
        nargs="?",
        default=None,
        help="the worker's input; - reads it from stdin (required, except on the embedded "
        "emulator)",
    )
    record.add_argument("--out", required=True, metavar="FILE", help="the cassette to write")
    add_run_options(record)
    add_service_options(
        record,
        json_help="print run's JSON lines (each event, then the final Worker) while recording",
    )


def command(args: argparse.Namespace) -> int:
    """Run ``handinger-stream record`` with parsed arguments; the exit code."""
    return asyncio.run(_record(args))


async def _record(args: argparse.Namespace) -> int:
    found = settings(args)
    if isinstance(found, int):
        return found
    prompt, where = found
    if where.embedded:
        async with Emulator(tokens_per_second=emulator_pace(args)) as emulator:
            say(
                f"No API key or base URL given: recording the embedded emulator at "
                f"{emulator.base_url}"
            )
            upstream = Service("emulator", emulator.base_url, "the embedded emulator")
            return await _record_through(args, prompt, upstream)
    return await _record_through(args, prompt, where)


async def _record_through(args: argparse.Namespace, prompt: str, upstream: Service) -> int:
    api_key = upstream.api_key
    recorder = Recorder(
        None,
        upstream=upstream.base_url or DEFAULT_BASE_URL,
        secrets=[api_key] if api_key else (),
    )
    try:
        await recorder.start()
        # The requests go to the proxy; errors still name the upstream and the key's source.
        through = Service(api_key, recorder.base_url, upstream.key_source, shown=recorder.upstream)
        code = await create_and_show(args, prompt, through)
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
