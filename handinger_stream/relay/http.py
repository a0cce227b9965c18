"""The relay's HTTP surface, framework-neutral: the AI SDK's chat transport, and the page.

The adapters (:mod:`.asgi`, :mod:`.aiohttp_app`) only move bytes between
their framework and :meth:`RelayHTTP.handle`. Paths are relative to where
the relay is mounted:

========================  ==================================================
``GET /``                 the chat page (and ``/app.js``, ``/app.css``)
``POST /api/chat``        ``DefaultChatTransport``'s body: the turn's stream
``GET /api/chat/{id}/stream``  204, or the running turn (or after ``Last-Event-ID``)
``GET /api/chat/{id}``    ``{"id", "messages"}``: the chat's finished messages
``GET /api/chat/ws``      a WebSocket (ai 7's ``WebSocketChatTransport``, :mod:`.ws`)
========================  ==================================================

>>> frame(Entry(7, b'{"type":"text-delta","id":"t","delta":"Hi"}'))
b'id: 7\\ndata: {"type":"text-delta","id":"t","delta":"Hi"}\\n\\n'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import msgspec

from ..errors import (
    APIConnectionError,
    APIStatusError,
    HandingerError,
    InvalidRequestError,
)
from ..protocol.headers import SSE_HEADERS, WORKER_ID_HEADER
from ..types.worker import BUDGETS
from .core import Reader, Relay
from .errors import RelayError
from .store import Entry

__all__ = [
    "PAGE",
    "SSE_HEADERS",
    "WS_PATH",
    "RelayHTTP",
    "Reply",
    "SSEBody",
    "chat_input",
    "frame",
]

log = logging.getLogger("handinger_stream.relay")

PAGE = Path(__file__).parent / "page" / "dist"
"""The chat page's built files (``index.html``, ``app.js``, ``app.css``)."""
MAX_BODY = 8 * 1024 * 1024  # the transport sends the whole conversation each time
WS_PATH = "/api/chat/ws"
"""The WebSocket endpoint (ai 7's ``WebSocketChatTransport``; see :mod:`.ws`)."""
_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
_json = msgspec.json.Encoder()
_DONE = b"data: [DONE]\n\n"
_KEEPALIVE = b": keep-alive\n\n"


def frame(entry: Entry) -> bytes:
    """One entry as an SSE event, with the relay's id (an end marker ends the stream)."""
    if entry.end:
        if entry.error is None:
            return b"id: %d\n%s" % (entry.seq, _DONE)
        error = _json.encode({"type": "error", "errorText": entry.error})
        return b"id: %d\ndata: %s\n\n%s" % (entry.seq, error, _DONE)
    return b"id: %d\ndata: %s\n\n" % (entry.seq, entry.data)


def error_body(status: int, message: str, kind: str) -> bytes:
    """The JSON of an error answer, shaped as the Handinger API's."""
    return _json.encode({"error": {"message": message, "type": kind, "status": status}})


@dataclass
class Reply:
    """What to answer: a status, headers, and a body or an event stream."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: SSEBody | None = None


class SSEBody:
    """A turn as SSE bytes: one write per batch of entries, keep-alives in quiet spells.

    An async iterator of ``bytes``; :meth:`aclose` when leaving early. A
    failure of the store after the response began is sent as an ``error``
    chunk (with no id, so a client resumes from the last event it got) and
    ends the response without ``[DONE]``.
    """

    def __init__(self, reader: Reader, *, keepalive: float, snapshots: bool) -> None:
        self.reader = reader
        self.keepalive = keepalive
        self.snapshots = snapshots
        self._finished = False

    def __aiter__(self) -> SSEBody:
        return self

    async def __anext__(self) -> bytes:
        while not self._finished:
            try:
                batch = await self.reader.next_batch(self.keepalive)
            except HandingerError as exc:
                self._finished = True
                log.warning("chat %s: a reader stopped: %s", self.reader.chat_id, exc)
                return b"data: %s\n\n" % _json.encode({"type": "error", "errorText": str(exc)})
            if batch is None:
                self._finished = True
                return _DONE
            if not batch:
                return _KEEPALIVE
            if self.snapshots:
                out = b"".join([frame(entry) for entry in batch])
            else:
                out = b"".join([frame(entry) for entry in batch if not entry.snapshot])
            if batch[-1].end:
                self._finished = True
            if out:
                return out
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._finished = True


class _Writing:
    """Marks one response's write in progress, for the slow-reader watch."""

    __slots__ = ("cut", "since")

    def __init__(self, cut: Callable[[], None]) -> None:
        self.cut = cut
        self.since: float | None = None


class RelayHTTP:
    """Routes a request to the relay; the adapters call :meth:`handle` and write the reply.

    ``keepalive``: seconds of silence before a ``: keep-alive`` comment.
    ``write_timeout``: a reader whose connection takes no bytes for this long
    is cut (it resumes with ``Last-Event-ID``); it never holds up the others.
    ``snapshots``: also send the worker's ``data-worker`` snapshots (the AI
    SDK ignores them, and they carry the whole Worker, growing with the chat;
    a request can ask for them with ``?snapshots=1``).
    """

    def __init__(
        self,
        relay: Relay,
        *,
        keepalive: float = 15.0,
        write_timeout: float = 30.0,
        snapshots: bool = False,
    ) -> None:
        self.relay = relay
        self.keepalive = keepalive
        self.write_timeout = write_timeout
        self.snapshots = snapshots
        self._writers: set[_Writing] = set()
        self._watch: asyncio.Task[None] | None = None
        self._assets: dict[str, bytes] = {}

    # -- the slow-reader watch ---------------------------------------------

    async def write_body(
        self,
        body: SSEBody,
        write: Callable[[bytes], Awaitable[None]],
        cut: Callable[[], None],
    ) -> None:
        """Write a reply's event stream with the framework's ``write``, watched: a reader
        that takes no bytes for ``write_timeout`` is ``cut()`` (its connection dropped).

        The adapters' one streaming loop (aiohttp's: ``await http.write_body(reply.stream,
        response.write, cut)``); starting, ending and closing the response are theirs.
        ``write`` raises when the reader is gone, as the framework does.
        """
        loop = asyncio.get_running_loop()
        with self.watching(cut) as mark:
            async for data in body:
                mark.since = loop.time()
                await write(data)
                mark.since = None

    @contextlib.contextmanager
    def watching(self, cut: Callable[[], None]) -> Any:
        """The slow-reader watch around a streaming loop (:meth:`write_body`'s):
        ``with http.watching(cut) as mark:`` then ``mark.since = loop.time()`` before
        each write and ``None`` after it."""
        writing = _Writing(cut)
        self._writers.add(writing)
        if self._watch is None or self._watch.done():
            self._watch = asyncio.get_running_loop().create_task(self._watch_writers())
        try:
            yield writing
        finally:
            self._writers.discard(writing)

    async def _watch_writers(self) -> None:
        loop = asyncio.get_running_loop()
        while self._writers:
            await asyncio.sleep(max(self.write_timeout / 4, 0.01))
            now = loop.time()
            for writing in list(self._writers):
                if writing.since is not None and now - writing.since > self.write_timeout:
                    log.info("cutting a reader that took no bytes for %.1f s", now - writing.since)
                    self._writers.discard(writing)
                    writing.cut()

    async def aclose(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    # -- routing --------------------------------------------------------------

    async def handle(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        read_body: Callable[[], Awaitable[bytes]],
    ) -> Reply:
        """Answer one request. ``path`` is relative to the mount point and starts with
        ``/``; ``headers`` has lower-case names. Never raises but for cancellation."""
        try:
            return await self._route(method, path, parse_qs(query), headers, read_body)
        except HandingerError as exc:
            return _error_reply(exc)
        except Exception:
            log.exception("relay: %s %s failed", method, path)
            return Reply(
                500,
                {"content-type": "application/json"},
                error_body(500, "internal error in the relay", "internal_error"),
            )

    async def _route(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: Mapping[str, str],
        read_body: Callable[[], Awaitable[bytes]],
    ) -> Reply:
        if path in _ASSETS:
            _allow(method, "GET", "HEAD")
            return self._asset(path)
        if path == "/api/chat":
            _allow(method, "POST")
            return await self._send(await read_body(), query)
        if path == WS_PATH:
            # The WebSocket endpoint: the adapters take its upgrades before routing here.
            _allow(method, "GET")
            return Reply(
                426,
                {"content-type": "application/json", "upgrade": "websocket"},
                error_body(426, f"{WS_PATH} is a WebSocket: upgrade to one", "upgrade_required"),
            )
        prefix = "/api/chat/"
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            if rest.endswith("/stream"):
                _allow(method, "GET")
                return await self._resume(rest[: -len("/stream")], headers, query)
            _allow(method, "GET")
            return await self._history(rest)
        return Reply(
            404,
            {"content-type": "application/json"},
            error_body(404, f"no route {path!r} in the relay", "not_found"),
        )

    def _asset(self, path: str) -> Reply:
        name, content_type = _ASSETS[path]
        data = self._assets.get(name)
        if data is None:
            data = self._assets[name] = (PAGE / name).read_bytes()
        return Reply(200, {"content-type": content_type, "cache-control": "no-cache"}, data)

    def _sse(self, reader: Reader, worker_id: str | None, query: dict[str, list[str]]) -> Reply:
        headers = dict(SSE_HEADERS)
        if worker_id:
            headers[WORKER_ID_HEADER] = worker_id
        snapshots = self.snapshots or query.get("snapshots", ["0"])[-1] in ("1", "true")
        return Reply(
            200, headers, stream=SSEBody(reader, keepalive=self.keepalive, snapshots=snapshots)
        )

    async def _send(self, raw: bytes, query: dict[str, list[str]]) -> Reply:
        chat_id, text, budget = parse_chat_request(raw)
        turn = await self.relay.send(chat_id, text, budget=budget)  # type: ignore[arg-type]
        return self._sse(self.relay.read(chat_id, after=turn.after), turn.worker_id, query)

    async def _resume(
        self, chat_id: str, headers: Mapping[str, str], query: dict[str, list[str]]
    ) -> Reply:
        last_event_id = headers.get("last-event-id", "").strip()
        after: int | None = None
        if last_event_id:
            if not last_event_id.isdigit():
                raise InvalidRequestError(
                    f"Last-Event-ID must be an id this relay sent (a number), got {last_event_id!r}"
                )
            after = int(last_event_id)
        reader = self.relay.read(chat_id, after=after)  # checks the chat id
        info = await self.relay.chat(chat_id)
        if info is None or (not info.active and (after is None or after >= info.last_seq)):
            return Reply(204)  # no turn running, and nothing after that id
        return self._sse(reader, info.worker_id, query)

    async def _history(self, chat_id: str) -> Reply:
        self.relay.read(chat_id)  # checks the chat id
        messages = await self.relay.messages(chat_id)
        return Reply(
            200,
            {"content-type": "application/json", "cache-control": "no-cache"},
            _json.encode({"id": chat_id, "messages": messages}),
        )


class _MethodNotAllowed(HandingerError):
    def __init__(self, allowed: tuple[str, ...]) -> None:
        super().__init__(f"method not allowed here (allowed: {', '.join(allowed)})")
        self.allowed = allowed


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise _MethodNotAllowed(allowed)


def parse_chat_request(raw: bytes) -> tuple[str, str, str | None]:
    """``DefaultChatTransport``'s body → (chat id, the last user message's text, budget).

    >>> body = b'{"id":"c1","messages":[{"role":"user","parts":[{"type":"text","text":"Hi"}]}]}'
    >>> parse_chat_request(body)
    ('c1', 'Hi', None)
    """
    if len(raw) > MAX_BODY:
        raise InvalidRequestError(f"the request body is larger than {MAX_BODY} bytes")
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise InvalidRequestError("the body must be JSON: the AI SDK chat transport's") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object")
    chat_id = body.get("id")
    if not isinstance(chat_id, str) or not chat_id:
        raise InvalidRequestError("id: the chat's id (a non-empty string) is required")
    text = chat_input(body.get("messages"))
    budget = body.get("budget")
    if budget is not None and budget not in BUDGETS:
        raise InvalidRequestError(f"budget must be one of {', '.join(BUDGETS)}")
    return chat_id, text, budget


def chat_input(messages: Any) -> str:
    """The worker's input in a chat's messages: the last one's text, which must be the user's.

    >>> chat_input([{"role": "user", "parts": [{"type": "text", "text": "Hi"}]}])
    'Hi'
    """
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages: a non-empty list is required")
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        raise InvalidRequestError("the last message must be the user's")
    parts = last.get("parts")
    if not isinstance(parts, list):
        raise InvalidRequestError("the last message has no parts")
    text = "".join(
        p["text"]
        for p in parts
        if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
    )
    if not text.strip():
        raise InvalidRequestError("the last message has no text")
    return text


def _error_reply(exc: HandingerError) -> Reply:
    headers = {"content-type": "application/json"}
    if isinstance(exc, _MethodNotAllowed):
        headers["allow"] = ", ".join(exc.allowed)
        return Reply(405, headers, error_body(405, str(exc), "method_not_allowed"))
    if isinstance(exc, InvalidRequestError):
        return Reply(400, headers, error_body(400, str(exc), "invalid_request"))
    if isinstance(exc, RelayError):
        kind = {409: "conflict", 410: "gone", 503: "unavailable"}.get(exc.status, "relay_error")
        return Reply(exc.status, headers, error_body(exc.status, str(exc), kind))
    if isinstance(exc, APIStatusError):
        # The worker API said no. Its client errors are the request's; anything about
        # the relay's own key or the API's health is a bad gateway to the browser.
        status = exc.status_code
        if status in (400, 404, 409, 422, 429):
            if status == 429 and exc.retry_after is not None:
                headers["retry-after"] = str(max(1, round(exc.retry_after)))
            return Reply(status, headers, error_body(status, f"the worker API: {exc}", "upstream"))
        return Reply(502, headers, error_body(502, f"the worker API: {exc}", "bad_gateway"))
    if isinstance(exc, APIConnectionError):
        return Reply(502, headers, error_body(502, f"the worker API: {exc}", "bad_gateway"))
    return Reply(502, headers, error_body(502, str(exc), "bad_gateway"))
