"""The relay as an aiohttp.web sub-application: a thin adapter over :class:`RelayHTTP`.

>>> from aiohttp import web
>>> def mount(root: web.Application, relay: Relay) -> None:
...     root.add_subapp("/relay/", make_aiohttp_app(relay))   # the page at /relay/
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .core import Relay
from .http import RelayHTTP, Reply

__all__ = ["make_aiohttp_app"]

_HTTP_KEY: web.AppKey[RelayHTTP] = web.AppKey("handinger_relay_http", RelayHTTP)


def make_aiohttp_app(relay: Relay, **options: Any) -> web.Application:
    """An ``aiohttp.web.Application`` serving the relay: mount it with ``add_subapp``.

    ``options`` are :class:`RelayHTTP`'s (``keepalive``, ``write_timeout``,
    ``snapshots``). The relay is not closed with the app: it is yours.
    A request for the prefix without its trailing slash is redirected when
    the root app has ``web.normalize_path_middleware()``.
    """
    http = RelayHTTP(relay, **options)
    app = web.Application()
    app[_HTTP_KEY] = http

    async def handle(request: web.Request) -> web.StreamResponse:
        reply = await http.handle(
            request.method,
            "/" + request.match_info["tail"],
            request.query_string,
            {k.lower(): v for k, v in request.headers.items()},
            request.read,
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
