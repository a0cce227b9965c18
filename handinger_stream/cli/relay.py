"""``handinger-stream relay``: the relay and its chat page, on aiohttp, until interrupted.

    handinger-stream relay                                  # the embedded emulator, MemoryStore
    handinger-stream relay --redis redis://127.0.0.1:6379/0 --port 8788
    HANDINGER_API_KEY=... handinger-stream relay --base-url https://handinger.com
    HANDINGER_API_KEY=... handinger-stream relay --worker wrk_...  # every chat a task of it

Several processes given the same ``--redis`` serve the same chats: put them
behind any load balancer (no stickiness needed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from typing import Any

from aiohttp import web

from ..client.async_client import AsyncHandinger
from ..errors import HandingerError, InvalidRequestError, NotFoundError
from ..relay.aiohttp_app import make_aiohttp_app
from ..relay.core import Relay
from ..relay.errors import StoreUnavailableError
from ..relay.memory import MemoryStore
from ..relay.redis_store import RedisStore
from ..relay.store import Store
from ..testing.emulator import Emulator
from .arguments import EMULATOR_PACE, pace, port, positive
from .exit_codes import EXIT_CONNECTION, EXIT_OK, EXIT_USAGE
from .printing import say

__all__ = ["DEFAULT_PORT", "add_parser", "command", "serve"]

DEFAULT_PORT = 8788


def add_parser(sub: Any) -> None:
    """Register ``relay`` on the command line's subcommands."""
    relay = sub.add_parser(
        "relay", help="relay workers' streams to browsers (the AI SDK chat transport) and a page"
    )
    relay.add_argument("--host", default="127.0.0.1")
    relay.add_argument("--port", type=port, default=DEFAULT_PORT, help="0: any free port")
    relay.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="share chats with other relay processes through this Redis (default: in memory)",
    )
    relay.add_argument("--base-url", default=None, help="the API's base URL")
    relay.add_argument(
        "--worker",
        default=None,
        metavar="ID",
        help="run every chat on this worker template (today's API): a chat is a task of it",
    )
    relay.add_argument(
        "--lease-seconds",
        type=positive,
        default=10.0,
        help="a producer's lease: how soon another process resumes a turn whose producer died",
    )
    relay.add_argument(
        "--tokens-per-second",
        type=pace,
        default=EMULATOR_PACE,
        help="the embedded emulator's pace (0: as fast as possible)",
    )


def command(args: argparse.Namespace) -> int:
    """Run ``handinger-stream relay`` with parsed arguments; the exit code."""
    return asyncio.run(serve(args))


async def serve(args: argparse.Namespace) -> int:
    """Serve the relay until SIGINT or SIGTERM; the exit code (said on stderr if not 0)."""
    if args.worker is not None and not args.worker.strip():
        say("error: --worker: give a worker template's id")
        return EXIT_USAGE
    if args.worker is not None and not (args.base_url or os.environ.get("HANDINGER_BASE_URL")):
        if os.environ.get("HANDINGER_API_KEY") is None:
            say(
                "error: --worker names a template of the API: set HANDINGER_API_KEY (or "
                "--base-url of an emulator that has it, e.g. 'handinger-stream serve')"
            )
            return EXIT_USAGE
    async with contextlib.AsyncExitStack() as stack:
        upstream = await _upstream(args, stack)
        if isinstance(upstream, int):
            return upstream
        base_url, api_key = upstream
        store = await _open_store(args, stack)
        if isinstance(store, int):
            return store
        client = await stack.enter_async_context(AsyncHandinger(api_key=api_key, base_url=base_url))
        if args.worker is not None:
            problem = await _check_template(client, args.worker)
            if problem is not None:
                return problem
        relay = Relay(client, store, lease_seconds=args.lease_seconds, worker_id=args.worker)
        stack.push_async_callback(relay.aclose)
        runner = web.AppRunner(make_aiohttp_app(relay), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, args.host, args.port)
        try:
            await site.start()
        except OSError as exc:
            say(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
            return EXIT_CONNECTION
        stop = _stop_on_signals()  # before the line that says it serves: from then on, clean
        where = f"Redis {store.url}" if isinstance(store, RedisStore) else "memory"
        on = f"; each chat a task of worker {args.worker}" if args.worker is not None else ""
        say(
            f"handinger-stream relay on http://{args.host}:{runner.addresses[0][1]}/ "
            f"(chats in {where}; workers at {client.base_url}{on}; Ctrl-C to stop)"
        )
        await stop.wait()
        say("relay stopping: running turns go on in their workers, and resume at the next reader")
    return EXIT_OK


async def _check_template(client: AsyncHandinger, worker_id: str) -> int | None:
    """Whether ``--worker`` names a worker the API knows (said before serving, not at the
    first chat); ``None``, or the exit code."""
    try:
        await client.workers.retrieve(worker_id)
    except NotFoundError:
        say(f"error: --worker: the API has no worker {worker_id!r}")
        return EXIT_USAGE
    except HandingerError as exc:
        say(f"error: --worker: cannot reach the API to check {worker_id!r}: {exc}")
        return EXIT_CONNECTION
    return None


async def _upstream(
    args: argparse.Namespace, stack: contextlib.AsyncExitStack
) -> tuple[str | None, str] | int:
    """The API the relay reads workers from, and its key: the embedded emulator (started
    on ``stack``) when neither is given; or an exit code."""
    base_url = args.base_url or os.environ.get("HANDINGER_BASE_URL")
    api_key = os.environ.get("HANDINGER_API_KEY")
    if base_url is None and api_key is None:
        emulator = Emulator(tokens_per_second=args.tokens_per_second)
        await stack.enter_async_context(emulator)
        say(
            "No HANDINGER_API_KEY or base URL given: using the embedded emulator at "
            f"{emulator.base_url}"
        )
        return emulator.base_url, "emulator"
    if api_key is None:
        say(f"error: HANDINGER_API_KEY is needed to relay {base_url}")
        return EXIT_USAGE
    return base_url, api_key  # no base URL: the client's default, the real service


async def _open_store(args: argparse.Namespace, stack: contextlib.AsyncExitStack) -> Store | int:
    """``--redis URL`` once it answers (closed with ``stack``), else a MemoryStore; or an
    exit code."""
    if not args.redis:
        return MemoryStore()
    try:
        store = RedisStore(args.redis)
    except InvalidRequestError as exc:
        say(f"error: --redis: {exc}")
        return EXIT_USAGE
    stack.push_async_callback(store.aclose)
    try:
        await store.ping()
    except StoreUnavailableError as exc:
        say(f"error: {exc}")
        return EXIT_CONNECTION
    return store


def _stop_on_signals() -> asyncio.Event:
    """An event that SIGINT or SIGTERM sets: either stops the relay cleanly (exit 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    return stop
