"""``handinger-stream webhooks``: where a worker template announces its finished tasks,
and a receiver that prints each announcement.

    handinger-stream webhooks set wrk_1 https://example.com/hook
    handinger-stream webhooks show wrk_1 --show-token
    handinger-stream webhooks executions wrk_1 --page 2
    HANDINGER_WEBHOOK_TOKEN=whsec-... handinger-stream webhooks listen --port 8790 --json

The token is a secret: ``set`` and ``show`` print it only with ``--show-token``.
``listen`` is :func:`~handinger_stream.monitoring.webhooks_aiohttp.listen`, a
line per delivery on stdout (``render_line``; ``--json``: ``render_json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from ..client.async_client import AsyncHandinger
from ..monitoring.webhooks import WebhookDelivery, render_json, render_line
from ..types.webhook import Webhook, WebhookExecutionList
from .arguments import port, positive_int
from .connection import add_command, add_service_options, call, clean, print_json, table
from .exit_codes import EXIT_CONNECTION, EXIT_OK, EXIT_USAGE, Stopping
from .printing import say

__all__ = ["TOKEN_VARIABLE", "add_parser", "command", "executions_table"]

TOKEN_VARIABLE = "HANDINGER_WEBHOOK_TOKEN"
_WEBHOOK_JSON = (
    'print the webhook as one JSON object: {"url", "token", "hasToken"}, '
    "the token null unless --show-token"
)


def add_parser(sub: Any) -> None:
    """Register ``webhooks`` (``set``, ``show``, ``executions``, ``listen``)."""
    webhooks = add_command(
        sub,
        "webhooks",
        help="a worker template's webhook, its deliveries, and a receiver (today's API)",
        description=(
            "When a task of a worker template finishes, the service POSTs to the\n"
            "template's webhook with its token in X-Handinger-Token. Set the URL, see\n"
            "the delivery attempts, or receive deliveries here with `listen`."
        ),
    )
    actions = webhooks.add_subparsers(dest="action", required=True)
    _add_set(actions)
    _add_show(actions)
    _add_executions(actions)
    _add_listen(actions)


def _add_set(actions: Any) -> None:
    put = add_command(
        actions,
        "set",
        help="set (or, with --clear, remove) a template's webhook URL",
        description=(
            "Set the worker template's webhook URL (HTTPS on the real service); a token\n"
            "is made the first time and kept after. --clear removes the webhook and its\n"
            "token. The token is printed only with --show-token."
        ),
    )
    put.add_argument("worker_id", metavar="WORKER_ID", help="the worker template's id")
    put.add_argument("url", metavar="URL", nargs="?", help="where deliveries are POSTed")
    put.add_argument("--clear", action="store_true", help="remove the webhook and its token")
    put.add_argument("--show-token", action="store_true", help="print the token (a secret)")
    add_service_options(put, json_help=_WEBHOOK_JSON)


def _add_show(actions: Any) -> None:
    show = add_command(
        actions,
        "show",
        help="a template's webhook URL (and, with --show-token, its token)",
        description=(
            "Show the worker template's webhook URL, and whether it has a token; the\n"
            "token itself only with --show-token."
        ),
    )
    show.add_argument("worker_id", metavar="WORKER_ID", help="the worker template's id")
    show.add_argument("--show-token", action="store_true", help="print the token (a secret)")
    add_service_options(show, json_help=_WEBHOOK_JSON)


def _add_executions(actions: Any) -> None:
    executions = add_command(
        actions,
        "executions",
        help="a template's webhook delivery attempts, newest first",
        description=(
            "List one page of the webhook's delivery attempts, newest first: when, how\n"
            "it went, the receiver's status, how long, the task, the error."
        ),
    )
    executions.add_argument("worker_id", metavar="WORKER_ID", help="the worker template's id")
    executions.add_argument(
        "--page", type=positive_int, default=None, metavar="N", help="the page, from 1"
    )
    add_service_options(
        executions,
        json_help='print the page as one JSON object: {"logs", "page", "pageCount", "totalCount"}',
    )


def _add_listen(actions: Any) -> None:
    listen = add_command(
        actions,
        "listen",
        help="receive deliveries here and print each",
        description=(
            f"Receive webhook deliveries at http://HOST:PORT/PATH and print a line for\n"
            f"each (--json: one JSON object a line), until Ctrl-C. The token comes from\n"
            f"{TOKEN_VARIABLE} or --token-file; a request without it is refused (401).\n"
            "Handinger posts to HTTPS URLs only: put a TLS-terminating proxy or a\n"
            "tunnel in front. A missing token exits 2; a port that cannot be had, 3;\n"
            "Ctrl-C, 130."
        ),
    )
    listen.add_argument("--port", type=port, required=True, help="the port (0: any free one)")
    listen.add_argument("--host", default="127.0.0.1", help="the address (default: 127.0.0.1)")
    listen.add_argument("--path", default="/", help="the URL path deliveries come to (default: /)")
    listen.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"a file holding the webhook's token (default: ${TOKEN_VARIABLE})",
    )
    listen.add_argument(
        "--json",
        action="store_true",
        help='one JSON object a delivery: {"type": "delivery", "delivery_id", "received_at", '
        '"event", "task_id", "worker_id", "status", "body"}',
    )


def command(args: argparse.Namespace) -> int:
    """Run ``handinger-stream webhooks ...`` with parsed arguments; the exit code."""
    if args.action == "listen":
        return _listen_command(args)
    if args.action == "set":
        if args.clear == (args.url is not None):
            say("error: give a URL, or --clear to remove the webhook (not both)")
            return EXIT_USAGE
        return call(args, lambda client: _set(client, args))
    if args.action == "show":
        return call(args, lambda client: _show(client, args))
    return call(args, lambda client: _executions(client, args))


async def _set(client: AsyncHandinger, args: argparse.Namespace) -> int:
    hook = await client.workers.webhooks.update(args.worker_id, url=args.url)
    _print_webhook(args, hook)
    return EXIT_OK


async def _show(client: AsyncHandinger, args: argparse.Namespace) -> int:
    hook = await client.workers.webhooks.retrieve(args.worker_id)
    _print_webhook(args, hook)
    return EXIT_OK


def _print_webhook(args: argparse.Namespace, hook: Webhook) -> None:
    token = hook.token if args.show_token else None
    if args.json:
        print_json({"url": hook.url, "token": token, "hasToken": hook.token is not None})
        return
    if hook.url is None:
        print(f"{args.worker_id}: no webhook")
        return
    print(f"url: {clean(hook.url)}")  # what the service holds: shown, never obeyed
    if token is not None:
        print(f"token: {token}")
    elif hook.token is not None:
        print("token: set (print it with --show-token)")
    else:
        print("token: none")


async def _executions(client: AsyncHandinger, args: argparse.Namespace) -> int:
    page = await client.workers.webhooks.list_executions(args.worker_id, page=args.page)
    if args.json:
        print_json(page)
        return EXIT_OK
    print(executions_table(page))
    return EXIT_OK


def executions_table(page: WebhookExecutionList) -> str:
    """A line on the page, then one row an attempt.

    >>> print(executions_table(WebhookExecutionList()))
    no delivery attempts yet
    """
    if not page.total_count and not page.logs:
        return "no delivery attempts yet"
    lines = [f"page {page.page} of {page.page_count} · {page.total_count} attempts in all"]
    if not page.logs:
        return lines[0]
    rows = [("at", "result", "status", "time", "task", "error")]
    for log in page.logs:
        rows.append(
            (
                log.created_at.isoformat(timespec="seconds"),
                log.request_status,
                "-" if log.response_status is None else str(log.response_status),
                f"{log.duration_ms}ms",
                log.task_id or "-",
                clean(log.error_message or ""),
            )
        )
    return "\n".join([*lines, *table(rows)])


# -- listen ---------------------------------------------------------------------------


def _listen_command(args: argparse.Namespace) -> int:
    token = _token(args)
    if isinstance(token, int):
        return token
    path = args.path if args.path.startswith("/") else "/" + args.path
    try:
        with _receiver_log_said():
            return asyncio.run(_listen(args, token, path))
    except OSError as exc:
        say(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return EXIT_CONNECTION


def _token(args: argparse.Namespace) -> str | int:
    """The webhook's token, from --token-file or the environment; or, said, exit 2."""
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as exc:
            say(f"error: --token-file {args.token_file}: {exc.strerror or exc}")
            return EXIT_USAGE
        if not token:
            say(f"error: --token-file {args.token_file} is empty")
            return EXIT_USAGE
        return token
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        say(
            f"error: no webhook token: set {TOKEN_VARIABLE} or pass --token-file FILE "
            "(see it with: handinger-stream webhooks show WORKER_ID --show-token)"
        )
        return EXIT_USAGE
    return token


async def _listen(args: argparse.Namespace, token: str, path: str) -> int:
    # Imported here: aiohttp's server is needed by this subcommand only.
    from ..monitoring.webhooks_aiohttp import listen

    render = render_json if args.json else render_line
    gone = asyncio.Event()  # the reader of stdout left

    def on_delivery(delivery: WebhookDelivery) -> None:
        try:
            print(render(delivery), flush=True)
        except BrokenPipeError:
            gone.set()
            raise  # not acknowledged: the sender retries it, to a receiver that reads

    def ready(url: str) -> None:
        say(f"listening for webhook deliveries at {url} (Ctrl-C to stop)")

    # Stopped as serve and relay are: Ctrl-C exits 130, SIGTERM 0, at once and cleanly.
    stopping = Stopping()
    receiving = asyncio.ensure_future(
        listen(args.host, args.port, token, on_delivery, path=path, ready=ready)
    )
    closed = asyncio.ensure_future(gone.wait())
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({receiving, closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (receiving, closed, stopped):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiving
    if gone.is_set():
        raise BrokenPipeError  # main() stops quietly, exit 141
    return stopping.code  # EXIT_OK unless a signal stopped it


class _Say(logging.Handler):
    """The receiver's log as lines for the person: a refused request is worth knowing;
    a traceback is not (the token never appears in them)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and isinstance(record.exc_info[1], BrokenPipeError):
            return  # the reader left: said by the exit code
        kind = "error" if record.levelno >= logging.ERROR else "warning"
        say(f"{kind}: {record.getMessage()}")


@contextlib.contextmanager
def _receiver_log_said() -> Iterator[None]:
    logger = logging.getLogger("handinger_stream.webhooks")
    handler = _Say(logging.WARNING)
    before = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = before
