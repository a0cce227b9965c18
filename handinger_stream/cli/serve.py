"""``handinger-stream serve``: the emulator, or a cassette's replay, until interrupted.

    handinger-stream serve --port 8787
    handinger-stream serve --cassette weather.json [--realtime]

The cassette is what ``handinger-stream record`` wrote (see ``record.py``).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from ..testing.cassette import Cassette, CassetteError
from ..testing.emulator import Emulator
from .arguments import EMULATOR_PACE, pace, port
from .connection import add_command
from .exit_codes import EXIT_CONNECTION, EXIT_USAGE, Stopping
from .printing import count, say

__all__ = ["add_parser", "command"]


def add_parser(sub: Any) -> None:
    """Register ``serve`` on the command line's subcommands."""
    serve = add_command(
        sub,
        "serve",
        help="run the emulator until interrupted",
        description=(
            "Run the emulator (a simulated agent, both generations of the API) on loopback\n"
            "until Ctrl-C (exit 130) or SIGTERM (exit 0), or replay a cassette that\n"
            "'handinger-stream record' wrote. A turn still playing when it stops ends with\n"
            "an error, never as a finished answer; uploads are removed on any stop."
        ),
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--port",
        type=port,
        default=8787,
        help="the port to listen on (default: %(default)s; 0: any free port)",
    )
    serve.add_argument("--api-key", default=None, help="require this key (default: any key)")
    serve.add_argument(
        "--tokens-per-second",
        type=pace,
        default=EMULATOR_PACE,
        help="the agent's pace (default: %(default)g, about a model's; 0: as fast as possible)",
    )
    serve.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the agent's text depends on the prompt and the seed (default: %(default)s)",
    )
    serve.add_argument(
        "--cassette",
        default=None,
        metavar="FILE",
        help="replay this recording instead of the agent",
    )
    serve.add_argument(
        "--realtime", action="store_true", help="replay at the recorded pace (default: at once)"
    )
    serve.add_argument(
        "--fleet",
        action="store_true",
        help="play a realistic fleet: varied lengths and tools, some workers failing",
    )


def command(args: argparse.Namespace) -> int:
    """Run ``handinger-stream serve`` with parsed arguments; the exit code."""
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    try:
        cassette = Cassette.load(args.cassette) if args.cassette else None
    except (CassetteError, OSError) as exc:
        say(f"error: {exc}")
        return EXIT_USAGE
    if cassette is not None and not cassette.interactions:
        # Every request would be answered 404: refused now, not one request at a time.
        say(
            f"error: {args.cassette} holds no recorded request: record one with "
            f"'handinger-stream record --out {args.cassette} \"PROMPT\"'"
        )
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
        say(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return EXIT_CONNECTION
    try:
        # Before the line that says it serves: from then on, any stop is a clean one (each
        # turn still playing ends with an error chunk, the upload folder is removed).
        stopping = Stopping()
        if cassette is not None:
            pace = "at the recorded pace" if args.realtime else "as fast as possible"
            say(
                f"Handinger emulator replaying {args.cassette} "
                f"({count(len(cassette.interactions), 'recorded request')}, {pace}) "
                f"on {emulator.base_url} (Ctrl-C to stop)"
            )
        else:
            say(f"Handinger emulator serving on {emulator.base_url} (Ctrl-C to stop)")
        code = await stopping.wait()
    finally:
        await emulator.stop()
    return code
