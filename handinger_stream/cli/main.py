"""The ``handinger-stream`` command: its parser, and the dispatch to each subcommand.

    handinger-stream run "What's the weather in Barcelona?" --budget low   (run.py)
    handinger-stream serve --port 8787                                     (serve.py)
    handinger-stream record --out weather.json "What's the weather?"       (record.py)
    handinger-stream relay --redis redis://127.0.0.1:6379/0                (relay.py)
    handinger-stream watch --create 30 "Research one topic"                (watch.py)
    handinger-stream tasks show tsk_1                                      (tasks.py)
    handinger-stream workers create --instructions "Answer in Catalan"     (templates.py)
    handinger-stream schedules create wrk_1 "Report" --cron "0 9 * * 1"    (schedules.py)
    handinger-stream webhooks listen --port 8790                           (webhooks.py)

Each subcommand's module registers its options (``add_parser``) and runs it
(``command``); here are what they share: one parser whose errors exit 2, and
one answer to Ctrl-C and to a closed output. Exit codes (``exit_codes.py``):
0 completed, 1 the worker failed, 2 usage error, 3 connection or
authentication problem (a missing API key too), 4 the server's stream could
not be decoded, 130 interrupted (Ctrl-C), 141 the output was closed early
(``| head``: quietly, as a program stopped by SIGPIPE).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .._version import __version__
from . import (
    exit_codes,
    record,
    relay,
    run,
    schedules,
    serve,
    tasks,
    templates,
    watch,
    webhooks,
)
from .exit_codes import EXIT_CLOSED_OUTPUT, EXIT_INTERRUPTED, EXIT_USAGE
from .printing import discard_stdout

__all__ = ["entry", "main"]

# Each subcommand, in the order the help lists them: how it registers its options on the
# subparsers, and how it runs (parsed arguments in, exit code out).
_SUBCOMMANDS: dict[str, tuple[Callable[[Any], None], Callable[[argparse.Namespace], int]]] = {
    "run": (run.add_parser, run.command),
    "serve": (serve.add_parser, serve.command),
    "record": (record.add_parser, record.command),
    "relay": (relay.add_parser, relay.command),
    "watch": (watch.add_parser, watch.command),
    "tasks": (tasks.add_parser, tasks.command),
    "workers": (templates.add_parser, templates.command),
    "schedules": (schedules.add_parser, schedules.command),
    "webhooks": (webhooks.add_parser, webhooks.command),
}


class _Parser(argparse.ArgumentParser):
    """argparse, with its error lines starting ``error:`` like every other."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="handinger-stream",
        description="Watch Handinger workers as they work, or run the offline emulator.",
        epilog=exit_codes.HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"handinger-stream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser, _ in _SUBCOMMANDS.values():
        add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); return the exit code::

    code = main(["run", "--json", "What's new in battery research?"])
    """
    args = _parser().parse_args(argv)
    try:
        _, command = _SUBCOMMANDS[args.command]
        return command(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader left (`| head`): stop quietly, as a program stopped by SIGPIPE.
        discard_stdout()
        return EXIT_CLOSED_OUTPUT


def entry() -> None:
    """The ``handinger-stream`` script: :func:`main` on ``sys.argv``, its code the exit status."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
