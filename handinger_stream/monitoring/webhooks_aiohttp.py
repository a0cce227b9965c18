"""The webhook receiver in aiohttp.web: a handler, an app, and :func:`listen` for the CLI.

>>> from aiohttp import web
>>> def mount(app: web.Application, receiver: WebhookReceiver) -> None:
...     app.router.add_route("*", "/hooks/handinger", webhook_handler(receiver))
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .webhooks import DeliveryHandler, WebhookReceiver, WebhookReply

__all__ = ["listen", "make_webhook_app", "webhook_handler"]


def webhook_handler(
    receiver: WebhookReceiver,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler for every method (the receiver answers 405 itself):
    ``app.router.add_route("*", path, webhook_handler(receiver))``."""

    async def handle(request: web.Request) -> web.Response:
        async def read_body(limit: int) -> bytes:
            # Not request.read(): its own limit (client_max_size) would answer first.
            chunks: list[bytes] = []
            size = 0
            while size <= limit:
                chunk = await request.content.read(limit + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks)

        reply = await receiver.handle(
            request.method, {k.lower(): v for k, v in request.headers.items()}, read_body
        )
        return _response(reply)

    return handle


def make_webhook_app(receiver: WebhookReceiver, path: str = "/") -> web.Application:
    """An ``aiohttp.web.Application`` receiving deliveries at ``path``: run it, or mount
    it with ``add_subapp``. The receiver is yours: the app does not close it."""
    app = web.Application()
    app.router.add_route("*", path, webhook_handler(receiver))
    return app


def _response(reply: WebhookReply) -> web.Response:
    return web.Response(status=reply.status, headers=reply.headers, body=reply.body or None)


async def listen(
    host: str,
    port: int,
    token: str,
    on_delivery: DeliveryHandler,
    *,
    path: str = "/",
    ready: Callable[[str], object] | None = None,
    **options: Any,
) -> None:
    """Receive deliveries at ``http://host:port/path`` until cancelled, each handed to
    ``on_delivery`` once; ``ready(url)`` is called once listening (with the real port
    when ``port`` is 0). ``options`` are :class:`WebhookReceiver`'s.

    Handinger posts to an HTTPS URL only: put a TLS-terminating proxy or tunnel in front.
    """
    receiver = WebhookReceiver(token, on_delivery, **options)
    # A short grace at the end: a delivery cut off is retried by its sender.
    runner = web.AppRunner(
        make_webhook_app(receiver, path),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=2.0,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        if ready is not None:
            bound = runner.addresses[0]
            shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
            ready(f"http://{shown}:{bound[1]}{path}")
        await asyncio.Event().wait()  # until cancelled
    finally:
        receiver.close()
        await runner.cleanup()
