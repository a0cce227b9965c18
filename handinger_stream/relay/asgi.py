"""The relay as an ASGI app (FastAPI, Starlette, any ASGI server): a thin adapter.

Mount it under a prefix; the page is then at ``/prefix/`` (a request for
``/prefix`` is redirected there):

>>> from fastapi import FastAPI  # doctest: +SKIP
>>> app = FastAPI()  # doctest: +SKIP
>>> app.mount("/relay", RelayASGI(relay))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from ..errors import InvalidRequestError
from .access import AccessRefused, RequestInfo, TooLarge
from .core import Relay
from .http import WS_PATH, RelayHTTP, Reply
from .ws import RelayWS, WSLimits

__all__ = ["RelayASGI"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RelayASGI:
    """An ASGI 3 application serving the relay.

    ``options`` are :class:`RelayHTTP`'s (``keepalive``, ``write_timeout``,
    ``snapshots``, ``access``); ``allowed_origins`` and ``ws_limits`` are the WebSocket
    endpoint's (:class:`RelayWS`; the server needs WebSocket support, e.g.
    uvicorn with ``wsproto`` or ``websockets``). The relay is not closed
    with the app: it is yours (open and close it in your app's lifespan).
    """

    def __init__(
        self,
        relay: Relay,
        *,
        allowed_origins: Collection[str] = (),
        ws_limits: WSLimits | None = None,
        **options: Any,
    ) -> None:
        self.relay = relay
        self.http = RelayHTTP(relay, **options)
        self.ws = RelayWS(self.http, allowed_origins=allowed_origins, limits=ws_limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, self.http)
            return
        root = scope.get("root_path", "")
        path: str = scope["path"]
        # Starlette's Mount keeps the whole path and names the prefix in root_path.
        if root and path.startswith(root):
            path = path[len(root) :]
        if scope["type"] == "websocket":
            await self._websocket(scope, path, receive, send)
            return
        if scope["type"] != "http":
            return
        if not path:
            query = scope.get("query_string", b"").decode("latin-1")
            location = root + "/" + (f"?{query}" if query else "")
            await _reply(send, Reply(307, {"location": location}))
            return
        limit = self.http.max_body

        async def read_body() -> bytes:
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise InvalidRequestError("the client left before its request body arrived")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise TooLarge()
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)

        reply = await self.http.handle(
            scope["method"],
            path,
            scope.get("query_string", b"").decode("latin-1"),
            scope["headers"],
            read_body,
            _client(scope),
        )
        if reply.stream is None:
            await _reply(send, reply)
            return
        await self._stream(reply, receive, send)

    async def _stream(self, reply: Reply, receive: Receive, send: Send) -> None:
        body = reply.stream
        assert body is not None
        loop = asyncio.get_running_loop()

        def cut() -> None:
            writer.cancel()

        async def send_part(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        async def write() -> None:
            await send(_start(reply))
            await self.http.write_body(body, send_part, cut)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        writer = loop.create_task(write())
        listener = loop.create_task(disconnected())
        try:
            # The reader leaving does not stop the turn: only this response.
            await asyncio.wait({writer, listener}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (writer, listener):
                task.cancel()
            for task in (writer, listener):
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await task
            await body.aclose()

    async def _websocket(self, scope: Scope, path: str, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        if path != WS_PATH:
            await send({"type": "websocket.close", "code": 1008})  # the server answers 403
            return
        try:
            headers = list(scope["headers"])
            offered = scope.get("subprotocols") or []
            if offered and not any(k.lower() == b"sec-websocket-protocol" for k, _ in headers):
                # Some servers (uvicorn with wsproto) give the offered subprotocols apart.
                headers.append((b"sec-websocket-protocol", ", ".join(offered).encode("latin-1")))
            info = RequestInfo.of("GET", path, headers, _client(scope))
            principal, protocol = await self.ws.check_upgrade(info)
        except AccessRefused as exc:
            answer = exc.answer()
            if "websocket.http.response" in scope.get("extensions", {}):
                start = _start(Reply(answer.status, dict(answer.headers)))
                await send({**start, "type": "websocket.http.response.start"})
                await send({"type": "websocket.http.response.body", "body": answer.body})
            else:
                await send({"type": "websocket.close", "code": 1008})  # a bare 403
            return
        accept: Message = {"type": "websocket.accept"}
        if protocol is not None:
            accept["subprotocol"] = protocol  # the name alone, never the token offered after it
        await send(accept)
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        await self.ws.serve(_Socket(receive, send), query, principal=principal, info=info)


class _Socket:
    """An ASGI ``websocket`` connection as :class:`RelayWS` reads and writes it."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._closed = False

    async def receive(self, timeout: float) -> str | bytes | None:
        if self._closed:
            return None
        message = await asyncio.wait_for(self._receive(), timeout)
        if message["type"] == "websocket.receive":
            text = message.get("text")
            data: str | bytes = text if text is not None else message.get("bytes") or b""
            return data
        self._closed = True  # websocket.disconnect
        return None

    async def send(self, texts: list[bytes]) -> None:
        for text in texts:  # ASGI sends one message at a time
            await self._send({"type": "websocket.send", "text": text.decode()})

    async def close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self._send({"type": "websocket.close", "code": code, "reason": reason}), 1.0
            )


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def _start(reply: Reply) -> Message:
    return {
        "type": "http.response.start",
        "status": reply.status,
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()],
    }


async def _reply(send: Send, reply: Reply) -> None:
    await send(_start(reply))
    await send({"type": "http.response.body", "body": reply.body, "more_body": False})


async def _lifespan(receive: Receive, send: Send, http: RelayHTTP) -> None:
    # Run on its own (uvicorn module:app), the app has nothing to set up.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await http.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
