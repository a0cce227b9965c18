"""``handinger-stream relay``: the relay and its chat page, on aiohttp, until interrupted.

    handinger-stream relay                                  # the embedded emulator, MemoryStore
    handinger-stream relay --redis redis://127.0.0.1:6379/0 --port 8788
    HANDINGER_API_KEY=... handinger-stream relay --base-url https://handinger.com
    HANDINGER_API_KEY=... handinger-stream relay --worker wrk_...  # every chat a task of it
    handinger-stream relay --host 0.0.0.0 --token-file /run/secrets/relay-token \
        --public-origin https://chat.example      # on a network: a token, and its origin

Several processes given the same ``--redis`` serve the same chats: put them
behind any load balancer (no stickiness needed). Without a token (``--token-file``,
or ``HANDINGER_RELAY_TOKEN``) the relay is a single-user development server and
listens on a loopback address only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
from typing import Any

from aiohttp import web

from ..client.async_client import AsyncHandinger
from ..errors import HandingerError, InvalidRequestError, NotFoundError
from ..relay.access import (
    MAX_STREAMS,
    TOKEN_ENV,
    Access,
    Limits,
    Origins,
    bearer_token,
    load_token,
)
from ..relay.aiohttp_app import make_aiohttp_app
from ..relay.core import Relay
from ..relay.errors import StoreUnavailableError
from ..relay.memory import MemoryStore
from ..relay.redis_store import RedisStore
from ..relay.store import Store
from ..testing.emulator import Emulator
from .arguments import EMULATOR_PACE, pace, port, positive, positive_int
from .connection import (
    Service,
    add_command,
    add_service_options,
    failure,
    print_json,
    service,
)
from .exit_codes import EXIT_CONNECTION, EXIT_USAGE, Stopping
from .printing import say

__all__ = ["DEFAULT_PORT", "add_parser", "command", "serve"]

DEFAULT_PORT = 8788
# aiohttp listens with a backlog of 128: a thousand browsers reconnecting at once (a
# relay restarted, a page opened by a crowd) overflow it, the kernel drops their SYNs,
# and they retry 1, 3, 7 s later. Measured: 1,000 joins on Redis took 4.7-11 s with
# 128, against 0.3 s on an event loop free enough to accept them as they came.
BACKLOG = 4096
_LIMITS = Limits()  # the defaults the flags show


def add_parser(sub: Any) -> None:
    """Register ``relay`` on the command line's subcommands."""
    relay = add_command(
        sub,
        "relay",
        help="relay workers' streams to browsers (the AI SDK chat transport) and a page",
        description=(
            "Serve the relay between the API and web pages: each turn is read once from\n"
            "the API and stored; any number of browsers read it (the AI SDK's chat\n"
            "transport, useChat with resume: true), and a chat page at /. Without a key\n"
            "or base URL it relays the embedded emulator. Ctrl-C or SIGTERM stops it;\n"
            "running turns go on in their workers."
        ),
    )
    relay.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default: %(default)s)"
    )
    relay.add_argument(
        "--port",
        type=port,
        default=DEFAULT_PORT,
        help="the port to listen on (default: %(default)s; 0: any free port)",
    )
    relay.add_argument(
        "--backlog",
        type=positive_int,
        default=BACKLOG,
        metavar="N",
        help="connections the kernel holds until they are accepted (default: %(default)s; "
        "capped by net.core.somaxconn)",
    )
    relay.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="share chats with other relay processes through this Redis (default: in memory)",
    )
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
        help="a producer's lease: how soon another process resumes a turn whose producer "
        "died (default: %(default)g)",
    )
    relay.add_argument(
        "--tokens-per-second",
        type=pace,
        default=None,
        metavar="N",
        help=f"the embedded emulator's pace (default {EMULATOR_PACE:g}; 0: as fast as "
        "possible); refused when a key or base URL is given",
    )
    relay.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help=f"require 'Authorization: Bearer <token>' with the token in this file (its "
        f"first line; else {TOKEN_ENV}); the page takes it as #token=... in its URL",
    )
    relay.add_argument(
        "--public-origin",
        action="append",
        default=[],
        metavar="URL",
        help="the origin browsers reach the relay at (https://chat.example), through a "
        "proxy; repeatable. Requests for another Host are refused",
    )
    relay.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="URL",
        help="another site whose pages may call the relay (CORS); repeatable",
    )
    relay.add_argument(
        "--max-concurrent-turns",
        type=positive_int,
        default=_LIMITS.concurrent_turns,
        metavar="N",
        help="turns one principal may have running at once (default: %(default)s)",
    )
    relay.add_argument(
        "--turns-per-minute",
        type=positive_int,
        default=_LIMITS.turns_per_minute,
        metavar="N",
        help="turns one principal may start per minute (default: %(default)s)",
    )
    relay.add_argument(
        "--max-chats",
        type=positive_int,
        default=_LIMITS.chats,
        metavar="N",
        help="chats one principal may keep (default: %(default)s)",
    )
    relay.add_argument(
        "--max-streams",
        type=positive_int,
        default=MAX_STREAMS,
        metavar="N",
        help="answers (event streams, WebSockets) one principal may hold open at once, "
        "with a token (default: %(default)s)",
    )
    add_service_options(
        relay,
        json_help='print where it listens as one JSON object on stdout ({"url", "store", '
        '"upstream"}), for scripts that start it on --port 0',
    )


def command(args: argparse.Namespace) -> int:
    """Run ``handinger-stream relay`` with parsed arguments; the exit code."""
    return asyncio.run(serve(args))


async def serve(args: argparse.Namespace) -> int:
    """Serve the relay until SIGINT or SIGTERM; the exit code (said on stderr if not 0)."""
    if args.worker is not None and not args.worker.strip():
        say("error: --worker: give a worker template's id")
        return EXIT_USAGE
    token = _token(args)
    if isinstance(token, int):
        return token
    found = _service(args)
    if isinstance(found, int):
        return found
    if args.worker is not None and found.embedded:
        say(
            "error: --worker names a template of the API: set HANDINGER_API_KEY (or pass "
            "--api-key, or --base-url of an emulator that has it, e.g. 'handinger-stream serve')"
        )
        return EXIT_USAGE
    async with contextlib.AsyncExitStack() as stack:
        base_url, api_key = await _upstream(args, found, stack)
        store = await _open_store(args, stack)
        if isinstance(store, int):
            return store
        client = await stack.enter_async_context(AsyncHandinger(api_key=api_key, base_url=base_url))
        if args.worker is not None:
            problem = await _check_template(client, args.worker, found)
            if problem is not None:
                return problem
        relay = Relay(client, store, lease_seconds=args.lease_seconds, worker_id=args.worker)
        stack.push_async_callback(relay.aclose)
        access = _make_access(args, store, token)
        app = make_aiohttp_app(relay, access=access)
        # An idle keep-alive connection is closed after 75 s (aiohttp's default is an
        # hour); headers are bounded by aiohttp (128 lines of 8 KiB). aiohttp has no
        # deadline for the headers themselves: a proxy in front must (docs/relay.md).
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, keepalive_timeout=75.0)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, args.host, args.port, backlog=args.backlog)
        try:
            await site.start()
        except OSError as exc:
            say(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
            return EXIT_CONNECTION
        # The Host and Origin lists need the port, known only now (--port 0).
        try:
            access.origins = Origins.for_bind(
                args.host,
                runner.addresses[0][1],
                public=args.public_origin,
                allow=args.allow_origin,
            )
        except InvalidRequestError as exc:
            say(f"error: {exc}")
            return EXIT_USAGE

        # Before the line that says it serves: from then on, any stop is a clean one.
        stopping = Stopping()
        where = f"Redis {store.url}" if isinstance(store, RedisStore) else "memory"
        on = f"; each chat a task of worker {args.worker}" if args.worker is not None else ""
        url = f"http://{args.host}:{runner.addresses[0][1]}/"
        if args.json:
            print_json({"url": url, "store": where, "upstream": client.base_url})
        say(
            f"handinger-stream relay on {url} "
            f"(chats in {where}; workers at {client.base_url}{on}; Ctrl-C to stop)"
        )
        if token is None:
            # After the line scripts wait for: said, never in their way.
            say(
                "warning: no access control (no --token-file, no "
                f"{TOKEN_ENV}): a single-user development server; anyone who reaches "
                f"{args.host} may use it, and spend what the API key allows"
            )
        code = await stopping.wait()
        say("relay stopping: running turns go on in their workers, and resume at the next reader")
    return code


def _make_access(args: argparse.Namespace, store: Store, token: str | None) -> Access:
    """The relay's access control: the token (if any) and the per-principal limits; the
    origins are set once the port is known."""
    limits = Limits(
        concurrent_turns=args.max_concurrent_turns,
        turns_per_minute=args.turns_per_minute,
        chats=args.max_chats,
    )
    return Access(
        store,
        authenticate=bearer_token(token) if token is not None else None,
        limits=limits,
        max_streams=args.max_streams,
    )


def _token(args: argparse.Namespace) -> str | int | None:
    """The bearer token (``--token-file``, else ``HANDINGER_RELAY_TOKEN``), ``None`` without
    one; or an exit code (said). A non-loopback ``--host`` needs one."""
    try:
        if args.token_file is not None:
            token: str | None = load_token(file=args.token_file)
        elif os.environ.get(TOKEN_ENV):
            token = load_token(env=TOKEN_ENV)
        else:
            token = None
    except InvalidRequestError as exc:
        say(f"error: {exc}")
        return EXIT_USAGE
    if token is None and not _loopback(args.host):
        say(
            f"error: --host {args.host} is reachable from the network: give access control, "
            f"--token-file PATH (or {TOKEN_ENV}), to listen there"
        )
        return EXIT_USAGE
    for name in ("public_origin", "allow_origin"):
        for origin in getattr(args, name):
            try:
                Origins([origin])
            except InvalidRequestError:
                flag = "--" + name.replace("_", "-")
                say(f"error: {flag}: {origin[:80]!r} is not an origin (scheme://host[:port])")
                return EXIT_USAGE
    return token


def _loopback(host: str) -> bool:
    bare = host.strip("[]").lower()
    if bare == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


async def _check_template(client: AsyncHandinger, worker_id: str, found: Service) -> int | None:
    """Whether ``--worker`` names a worker the API knows (said before serving, not at the
    first chat); ``None``, or the exit code."""
    try:
        await client.workers.retrieve(worker_id)
    except NotFoundError:
        say(f"error: --worker: the API has no worker {worker_id!r}")
        return EXIT_USAGE
    except HandingerError as exc:
        return failure(exc, found)
    return None


def _service(args: argparse.Namespace) -> Service | int:
    """The API the relay reads workers from; or an exit code (said already)."""
    if not (args.base_url or os.environ.get("HANDINGER_BASE_URL")) and not (
        args.api_key or os.environ.get("HANDINGER_API_KEY")
    ):
        return Service(None, None, "the embedded emulator")
    if args.tokens_per_second is not None:
        say(
            "error: --tokens-per-second sets the embedded emulator's pace, and with a key or "
            "a base URL no emulator runs here: leave it out"
        )
        return EXIT_USAGE
    found = service(args, embedded_ok=False)
    if found == EXIT_CONNECTION:  # no key for that base URL: the command was incomplete
        return EXIT_USAGE
    return found


async def _upstream(
    args: argparse.Namespace, found: Service, stack: contextlib.AsyncExitStack
) -> tuple[str | None, str | None]:
    """The API's base URL and key: the embedded emulator's (started on ``stack``) when
    neither was given."""
    if found.embedded:
        pace = EMULATOR_PACE if args.tokens_per_second is None else args.tokens_per_second
        emulator = Emulator(tokens_per_second=pace)
        await stack.enter_async_context(emulator)
        say(
            "No HANDINGER_API_KEY or base URL given: using the embedded emulator at "
            f"{emulator.base_url}"
        )
        return emulator.base_url, "emulator"
    return found.base_url, found.api_key


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
