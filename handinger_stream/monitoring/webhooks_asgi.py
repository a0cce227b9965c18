"""The webhook receiver as an ASGI app (FastAPI, Starlette, any ASGI server): a thin adapter.

It answers at whatever path routes to it. A Starlette ``Route`` names the
webhook's URL exactly; a ``Mount`` answers under its prefix with a slash and
redirects the path without one, which a sender may not follow:

>>> from fastapi import FastAPI  # doctest: +SKIP
>>> from starlette.routing import Route  # doctest: +SKIP
>>> app = FastAPI()  # doctest: +SKIP
>>> app.router.routes.append(Route("/hooks/handinger", WebhookASGI(receiver)))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .webhooks import WebhookReceiver, WebhookRejected, WebhookReply

__all__ = ["WebhookASGI"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class WebhookASGI:
    """An ASGI 3 application in front of a :class:`WebhookReceiver` (yours: the app
    neither starts nor closes it)."""

    def __init__(self, receiver: WebhookReceiver) -> None:
        self.receiver = receiver

    def __repr__(self) -> str:
        return f"WebhookASGI({self.receiver!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets: not ours (the server refuses them)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}

        async def read_body(limit: int) -> bytes:
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise WebhookRejected(400, "the body did not arrive", "invalid_request")
                chunk = message.get("body", b"")
                size += len(chunk)
                chunks.append(chunk)
                if size > limit or not message.get("more_body", False):
                    return b"".join(chunks)

        reply = await self.receiver.handle(scope["method"], headers, read_body)
        await _reply(send, reply)


async def _reply(send: Send, reply: WebhookReply) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": reply.status,
            "headers": [
                (k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()
            ],
        }
    )
    await send({"type": "http.response.body", "body": reply.body, "more_body": False})


async def _lifespan(receive: Receive, send: Send) -> None:
    # Run on its own (uvicorn module:app), the app has nothing to set up.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
