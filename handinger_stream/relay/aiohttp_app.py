"""The relay as an aiohttp.web sub-application: a thin adapter over :class:`RelayHTTP`.

>>> from aiohttp import web
>>> def mount(root: web.Application, relay: Relay) -> None:
...     root.add_subapp("/relay/", make_aiohttp_app(relay))   # the page at /relay/
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from typing import Any

from aiohttp import WSMsgType, web

from .access import AccessRefused, RequestInfo, TooLarge
from .core import Relay
from .http import WS_PATH, RelayHTTP, Reply
from .ws import RelayWS, WSLimits, text_frames

__all__ = ["make_aiohttp_app"]

_HTTP_KEY: web.AppKey[RelayHTTP] = web.AppKey("handinger_relay_http", RelayHTTP)
_DRAIN_POLL = 0.01  # seconds between looks at a full socket buffer


def make_aiohttp_app(
    relay: Relay,
    *,
    allowed_origins: Collection[str] = (),
    ws_limits: WSLimits | None = None,
    **options: Any,
) -> web.Application:
    """An ``aiohttp.web.Application`` serving the relay: mount it with ``add_subapp``.

    ``options`` are :class:`RelayHTTP`'s (``keepalive``, ``write_timeout``,
    ``snapshots``, ``access``); ``allowed_origins`` and ``ws_limits`` are the WebSocket
    endpoint's (:class:`RelayWS`). The relay is not closed with the app: it is yours.
    A request for the prefix without its trailing slash is redirected when
    the root app has ``web.normalize_path_middleware()``.
    """
    http = RelayHTTP(relay, **options)
    ws = RelayWS(http, allowed_origins=allowed_origins, limits=ws_limits)
    # The relay bounds bodies itself (413, the same bound as over ASGI); aiohttp's own
    # bound (1 MiB by default) would answer a larger body with an error of its own.
    app = web.Application(client_max_size=http.max_body + 1)
    app[_HTTP_KEY] = http

    async def handle(request: web.Request) -> web.StreamResponse:
        tail = "/" + request.match_info["tail"]
        if tail == WS_PATH and request.headers.get("upgrade", "").lower() == "websocket":
            return await _websocket(ws, request, tail)

        async def read_body() -> bytes:
            # Chunk by chunk, bounded: a body without Content-Length (chunked) too.
            chunks: list[bytes] = []
            size = 0
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > http.max_body:
                    raise TooLarge()
                chunks.append(chunk)
            return b"".join(chunks)

        reply = await http.handle(
            request.method,
            tail,
            request.query_string,
            request.raw_headers,
            read_body,
            request.remote,
        )
        return await _respond(http, request, reply)

    async def cleanup(app: web.Application) -> None:
        await http.aclose()

    app.router.add_route("*", "/{tail:.*}", handle)
    app.on_cleanup.append(cleanup)
    return app


async def _respond(http: RelayHTTP, request: web.Request, reply: Reply) -> web.StreamResponse:
    if reply.stream is None:
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body or None)
    response = web.StreamResponse(status=reply.status, headers=reply.headers)
    body = reply.stream

    def cut() -> None:
        if request.transport is not None:
            request.transport.abort()

    try:
        await response.prepare(request)
        await http.write_body(body, response.write, cut)
        await response.write_eof()
    except ConnectionError:
        pass  # the reader left (or was cut): the turn goes on without it
    finally:
        await body.aclose()
    return response


class _Socket:
    """An aiohttp ``WebSocketResponse`` as :class:`RelayWS` reads and writes it."""

    def __init__(self, request: web.Request, response: web.WebSocketResponse) -> None:
        self.request = request
        self.response = response

    async def receive(self, timeout: float) -> str | bytes | None:
        message = await self.response.receive(timeout=timeout)
        if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            data: str | bytes = message.data
            return data
        return None  # closed, or broken (too big: aiohttp closed it with 1009)

    async def send(self, texts: list[bytes]) -> None:
        # The batch's frames in one write (send_frame would make a system call of each),
        # on the connection's transport, beside aiohttp's own pings and close frame.
        transport = self.request.transport
        if transport is None or transport.is_closing() or self.response.closed:
            raise ConnectionResetError("the WebSocket is closed")
        transport.write(text_frames(texts))
        # Backpressure: the transport's buffer past its high-water mark waits to drain
        # (a socket that never drains is cut by the slow-reader watch).
        high = transport.get_write_buffer_limits()[1]
        while transport.get_write_buffer_size() > high:
            if transport.is_closing():
                raise ConnectionResetError("the WebSocket is closed")
            await asyncio.sleep(_DRAIN_POLL)

    async def close(self, code: int, reason: str) -> None:
        try:
            # A reader too slow to take a close frame is not waited for.
            await asyncio.wait_for(self.response.close(code=code, message=reason.encode()), 1.0)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            if self.request.transport is not None:
                self.request.transport.abort()


async def _websocket(ws: RelayWS, request: web.Request, path: str) -> web.StreamResponse:
    try:
        info = RequestInfo.of("GET", path, request.raw_headers, request.remote)
        principal, protocol = await ws.check_upgrade(info)
    except AccessRefused as exc:
        answer = exc.answer()
        return web.Response(status=answer.status, headers=answer.headers, body=answer.body)
    limits = ws.limits
    response = web.WebSocketResponse(
        max_msg_size=limits.max_frame,
        heartbeat=limits.ping_interval,
        compress=False,  # small frames, many readers: deflating each costs more than it saves
        # aiohttp accepts the first offered name it knows: this one, never the token after it.
        protocols=(protocol,) if protocol else (),
    )
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        await ws.serve(
            _Socket(request, response), dict(request.query), principal=principal, info=info
        )
    return response
