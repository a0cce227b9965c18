"""What the subcommands of today's API share: the service they talk to (``--api-key``,
``--base-url``, the embedded emulator), an error turned into its ``error:`` line and
exit code, and a ``--json`` line.

    def command(args: argparse.Namespace) -> int:
        return call(args, lambda client: _show(client, args.task_id))
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..client.async_client import DEFAULT_BASE_URL, AsyncHandinger, check_base_url
from ..errors import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    HandingerError,
    IncompleteStreamError,
    InvalidRequestError,
    MissingAPIKeyError,
    NotFoundError,
    PermissionDeniedError,
    StreamDecodeError,
    StreamTimeoutError,
    UnprocessableEntityError,
)
from ..testing.emulator import Emulator
from . import exit_codes
from .exit_codes import EXIT_CONNECTION, EXIT_FAILED, EXIT_OK, EXIT_PROTOCOL, EXIT_USAGE
from .printing import say

__all__ = [
    "NO_KEY",
    "Service",
    "add_command",
    "add_service_options",
    "call",
    "clean",
    "connect",
    "done_or_not",
    "failure",
    "print_json",
    "reason",
    "service",
    "table",
]

NO_KEY = "error: no API key: pass --api-key KEY or set HANDINGER_API_KEY"


@dataclass(frozen=True)
class Service:
    """Where requests go, and where the key came from (to name it, never to show it)."""

    api_key: str | None = field(repr=False)
    base_url: str | None
    key_source: str
    # The service named in messages when requests go elsewhere first (record's proxy).
    shown: str | None = None

    @property
    def embedded(self) -> bool:
        """Neither a key nor a base URL: the embedded emulator answers."""
        return self.api_key is None and self.base_url is None


def add_command(parent: Any, name: str, *, help: str, description: str) -> Any:
    """A subcommand's parser on ``parent`` (what ``add_subparsers`` gave): its
    description laid out as written, the exit codes after the options."""
    return parent.add_parser(
        name,
        help=help,
        description=description,
        epilog=exit_codes.HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_service_options(parser: argparse.ArgumentParser, *, json_help: str) -> None:
    """``--json``, ``--base-url`` and ``--api-key``, the same on every subcommand that
    talks to the API."""
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument(
        "--base-url",
        default=None,
        metavar="URL",
        help="the API's base URL (default: HANDINGER_BASE_URL, else the public service)",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="the API key (default: HANDINGER_API_KEY); neither a key nor a base URL: "
        "the embedded emulator, where the command can use one",
    )


def service(args: argparse.Namespace, *, embedded_ok: bool) -> Service | int:
    """The service ``args`` name; or, said on stderr already, an exit code.

    With neither a key nor a base URL, the embedded emulator answers when
    ``embedded_ok`` (what is made there is gone when the command ends); a
    command about something that already exists needs the service instead.
    """
    base_url = args.base_url or os.environ.get("HANDINGER_BASE_URL") or None
    api_key = getattr(args, "api_key", None) or os.environ.get("HANDINGER_API_KEY") or None
    source = "--api-key" if getattr(args, "api_key", None) else "HANDINGER_API_KEY"
    if base_url is None and api_key is None:
        if embedded_ok:
            return Service(None, None, "the embedded emulator")
        say(
            "error: this command works on what the service holds, and the embedded emulator "
            "holds nothing yet: set HANDINGER_API_KEY, or pass --api-key or --base-url"
        )
        return EXIT_USAGE
    if base_url is not None:
        try:
            base_url = check_base_url(
                base_url, source="--base-url" if args.base_url else "HANDINGER_BASE_URL"
            )
        except InvalidRequestError as exc:
            say(f"error: {exc}")
            return EXIT_USAGE
    if api_key is None:
        say(NO_KEY)
        return EXIT_CONNECTION
    return Service(api_key, base_url or DEFAULT_BASE_URL, source)


@asynccontextmanager
async def connect(found: Service) -> AsyncIterator[AsyncHandinger]:
    """A client of ``found``: the embedded emulator started (and said so) when it is that."""
    if found.embedded:
        async with Emulator(tokens_per_second=0) as emulator:
            say(f"No API key or base URL given: using the embedded emulator at {emulator.base_url}")
            async with AsyncHandinger(api_key="emulator", base_url=emulator.base_url) as client:
                yield client
        return
    async with AsyncHandinger(api_key=found.api_key, base_url=found.base_url) as client:
        yield client


def call(
    args: argparse.Namespace,
    work: Callable[[AsyncHandinger], Awaitable[int]],
    *,
    embedded_ok: bool = False,
) -> int:
    """Run ``work`` with a client of the service ``args`` name; its exit code, or the one
    of the error that stopped it (said on stderr)."""
    found = service(args, embedded_ok=embedded_ok)
    if isinstance(found, int):
        return found

    async def run() -> int:
        async with connect(found) as client:
            return await work(client)

    try:
        return asyncio.run(run())
    except HandingerError as exc:
        return failure(exc, found)


def failure(exc: HandingerError, found: Service) -> int:
    """Say what went wrong, on one ``error:`` line without the key; the exit code."""
    where = found.shown or found.base_url or "the embedded emulator"
    if isinstance(exc, MissingAPIKeyError):
        say(NO_KEY)
        return EXIT_CONNECTION
    if isinstance(exc, AuthenticationError):
        say(f"error: the API key from {found.key_source} was refused ({exc}, at {where})")
        return EXIT_CONNECTION
    if isinstance(exc, PermissionDeniedError):
        say(f"error: the API key from {found.key_source} may not do this ({exc}, at {where})")
        return EXIT_CONNECTION
    if isinstance(
        exc, (InvalidRequestError, BadRequestError, UnprocessableEntityError, NotFoundError)
    ):
        # A bad value, or an id the service does not know: the command was wrong.
        say(f"error: {exc}")
        return EXIT_USAGE
    if isinstance(exc, ConflictError):
        say(f"error: {exc}")
        return EXIT_FAILED
    if isinstance(exc, (StreamDecodeError, APIResponseValidationError)):
        say(f"error: the answer could not be decoded: {exc}")
        return EXIT_PROTOCOL
    if isinstance(exc, IncompleteStreamError):
        worker_id = exc.worker.id if exc.worker is not None and exc.worker.id else None
        whose = f"worker {worker_id}'s stream" if worker_id else "the stream"
        after = f"; follow it with: handinger-stream watch {worker_id}" if worker_id else ""
        say(f"error: {whose} broke and could not be resumed ({reason(exc)}, at {where}){after}")
        return EXIT_CONNECTION
    if isinstance(exc, APIConnectionError):
        say(f"error: cannot reach {where}: {reason(exc)}")
        return EXIT_CONNECTION
    if isinstance(exc, APIStatusError) and exc.status_code == 502 and found.shown:
        # record's proxy could not reach the service: that is what to say, not the proxy's
        # 502 and the library's words.
        say(f"error: cannot reach {where}: {reason(exc)}")
        return EXIT_CONNECTION
    if isinstance(exc, APIStatusError):
        say(f"error: {where} answered {exc.status_code}: {_first_line(exc)}")
        return EXIT_CONNECTION
    say(f"error: {_first_line(exc)} (at {where})")
    return EXIT_CONNECTION


def reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words (no reprs, said once): the root cause's.

    >>> reason(APIConnectionError("cannot connect"))
    'the connection failed'
    >>> error = APIConnectionError("cannot connect")
    >>> error.__cause__ = ConnectionRefusedError(111, "Connect call failed")
    >>> reason(error)
    'connection refused'
    """
    chain: list[BaseException] = [exc]
    while True:
        below = chain[-1].__cause__ or chain[-1].__context__
        if below is None or below in chain:
            break
        chain.append(below)
    if isinstance(exc, StreamTimeoutError):
        return f"no data for {exc.seconds:g}s ({exc.limit} limit)"
    for error in reversed(chain):  # the root cause first
        if isinstance(error, OSError) and error.errno is not None:
            return os.strerror(error.errno).lower()
        if isinstance(error, (APITimeoutError, TimeoutError)):
            return "timed out"
        # A library's error wrapped in words only: its errno is in its text.
        found = _ERRNO.search(str(error))
        if found:
            return os.strerror(int(found.group(1))).lower()
    return "the connection broke" if len(chain) > 1 else "the connection failed"


_ERRNO = re.compile(r"\[Errno (\d+)\]")


def _first_line(exc: BaseException) -> str:
    """The error's message on one line, cut short: a server's message may be a page."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:299] + "…"


def done_or_not(
    args: argparse.Namespace, answer: Any, done: bool, *, did: str, do: str, what: str
) -> int:
    """The end of a command that archives, deletes or cancels ``what``: the answer
    (``--json``) or a line saying it ``did``; exit 1 when the service did not ``do`` it."""
    if args.json:
        print_json(answer)
    elif done:
        say(f"{did} {what}")
    if not done:
        say(f"error: the service did not {do} {what}")
        return EXIT_FAILED
    return EXIT_OK


def print_json(value: Any) -> None:
    """One ``--json`` line: a model under its wire names, or any JSON value."""
    sys.stdout.buffer.write(msgspec.json.encode(value) + b"\n")
    sys.stdout.flush()


def clean(text: str) -> str:
    """On one line, without control characters: what the service holds came from anyone,
    and must not move the cursor or clear the terminal."""
    return "".join(c for c in " ".join(text.split()) if c.isprintable())


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows (the first one the heading) as aligned lines; the last column is not padded.

    >>> table([("id", "input"), ("s1", "Hi")])
    ['id  input', 's1  Hi']
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return lines
