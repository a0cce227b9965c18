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

With ``access``, a stream is ``429`` while its principal holds ``max_streams``
answers open (:meth:`~.access.Access.hold_stream`).

>>> frame(Entry(7, b'{"type":"text-delta","id":"t","delta":"Hi"}'))
b'id: 7\\ndata: {"type":"text-delta","id":"t","delta":"Hi"}\\n\\n'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
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
from ..protocol.compact import compact
from ..protocol.headers import SSE_HEADERS, WORKER_ID_HEADER
from ..types.worker import BUDGETS
from .access import (
    MAX_BODY,
    Access,
    AccessRefused,
    ChatRequest,
    Headers,
    NotFound,
    RequestInfo,
    TooLarge,
    check_length,
    count_files,
    is_owner,
    require_json,
)
from .core import Reader, Relay, check_chat_id
from .errors import EntriesGoneError, RelayError, StoreUnavailableError
from .store import ChatInfo, Entry

__all__ = [
    "MAX_BODY",
    "PAGE",
    "SSE_HEADERS",
    "WS_PATH",
    "ParsedChat",
    "RelayHTTP",
    "Reply",
    "SSEBody",
    "chat_input",
    "compacted",
    "frame",
    "parse_chat",
    "public_error",
]

log = logging.getLogger("handinger_stream.relay")

PAGE = Path(__file__).parent / "page" / "dist"
"""The chat page's built files (``index.html``, ``app.js``, ``app.css``)."""
WS_PATH = "/api/chat/ws"
"""The WebSocket endpoint (ai 7's ``WebSocketChatTransport``; see :mod:`.ws`)."""
_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
_json = msgspec.json.Encoder()
_DONE = b"data: [DONE]\n\n"
_JSON = "application/json"
_MAX_MESSAGE_ID = 256
RawHeaders = Headers | Iterable[tuple[str | bytes, str | bytes]] | Mapping[str, str]
"""A request's headers as a framework has them: pairs (ASGI's, aiohttp's raw ones) or a map."""
_KEEPALIVE = b": keep-alive\n\n"
# A batch this long is compacted: a reader joining or resuming (its history), or one
# that fell behind (its backlog). Compacting costs each reader its own pass: a live
# reader a few events behind (a thousand readers of one turn are, by tens) would pay
# it for nothing, since a batch goes out in one write whatever its length.
COMPACT_FROM = 64


def frame(entry: Entry) -> bytes:
    """One entry as an SSE event, with the relay's id (an end marker ends the stream)."""
    if entry.end:
        if entry.error is None:
            return b"id: %d\n%s" % (entry.seq, _DONE)
        error = _json.encode({"type": "error", "errorText": entry.error})
        return b"id: %d\ndata: %s\n\n%s" % (entry.seq, error, _DONE)
    return b"id: %d\ndata: %s\n\n" % (entry.seq, entry.data)


def compacted(entries: list[Entry]) -> list[Entry]:
    """``entries`` with each run of adjacent deltas of one part merged into one, and each
    run of one data part into its last (:func:`~handinger_stream.protocol.compact.compact`).

    A merged entry is the last entry it holds, with the merged data: its seq is the id
    a reader resumes from, exactly where the whole log would have had it.

    >>> delta = b'{"type":"text-delta","id":"t","delta":"%s"}'
    >>> [(e.seq, e.data) for e in compacted([Entry(1, delta % b"Hel"), Entry(2, delta % b"lo")])]
    [(2, b'{"type":"text-delta","id":"t","delta":"Hello"}')]
    """
    end = entries[-1] if entries and entries[-1].end else None
    events = entries[:-1] if end is not None else entries
    out = [
        entry if data is entry.data else msgspec.structs.replace(entry, data=data)
        for data, entry in compact([(entry.data, entry) for entry in events])
    ]
    if end is not None:
        out.append(end)
    return out


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

    An async iterator of ``bytes``; :meth:`aclose` when leaving early (its end, or
    ``aclose``, calls ``on_close`` once: the stream's place in its principal's count). A
    failure of the store after the response began is sent as an ``error``
    chunk (with no id, so a client resumes from the last event it got) and
    ends the response without ``[DONE]``. ``compact``: a batch of
    ``COMPACT_FROM`` entries or more is sent :func:`compacted` (a history, a
    backlog), so that a reader that joins late or falls behind catches up in
    fewer, larger events that fold the same.
    """

    def __init__(
        self,
        reader: Reader,
        *,
        keepalive: float,
        snapshots: bool,
        compact: bool = True,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.reader = reader
        self.keepalive = keepalive
        self.snapshots = snapshots
        self.compact = compact
        self._finished = False
        self._on_close = on_close  # called once, at the end or by aclose (a count's release)

    def __aiter__(self) -> SSEBody:
        return self

    async def __anext__(self) -> bytes:
        while not self._finished:
            try:
                batch = await self.reader.next_batch(self.keepalive)
            except HandingerError as exc:
                self._finished = True
                log.warning("chat %s: a reader stopped: %s", self.reader.chat_id, exc)
                text = public_error(exc)
                return b"data: %s\n\n" % _json.encode({"type": "error", "errorText": text})
            if batch is None:
                self._finished = True
                return _DONE
            if not batch:
                return _KEEPALIVE
            if batch[-1].end:
                self._finished = True
            if self.compact and len(batch) >= COMPACT_FROM:
                if not self.snapshots:
                    batch = [entry for entry in batch if not entry.snapshot]
                if len(batch) >= COMPACT_FROM:
                    batch = compacted(batch)
                out = b"".join([frame(entry) for entry in batch])
            elif self.snapshots:
                out = b"".join([frame(entry) for entry in batch])
            else:  # a live reader's batch: filtered and framed in one pass
                out = b"".join([frame(entry) for entry in batch if not entry.snapshot])
            if out:
                return out
        self._closed()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._finished = True
        self._closed()

    def _closed(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()


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
    ``compact``: send a history or a backlog compacted (:class:`SSEBody`; a
    request can ask for every event as stored with ``?compact=0``).
    ``body_timeout``: seconds a request's body may take to arrive (``408`` after).
    ``access``: who may use the relay, from where, how much (:class:`Access`);
    ``None`` checks nothing: an app that authenticates and limits on its own,
    or a single-user development server on loopback.
    """

    def __init__(
        self,
        relay: Relay,
        *,
        keepalive: float = 15.0,
        write_timeout: float = 30.0,
        snapshots: bool = False,
        compact: bool = True,
        access: Access | None = None,
        body_timeout: float = 30.0,
    ) -> None:
        self.relay = relay
        self.access = access
        self.body_timeout = body_timeout
        self.max_body = access.max_body if access is not None else MAX_BODY
        self.keepalive = keepalive
        self.write_timeout = write_timeout
        self.snapshots = snapshots
        self.compact = compact
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
        headers: RawHeaders,
        read_body: Callable[[], Awaitable[bytes]],
        client: str | None = None,
    ) -> Reply:
        """Answer one request. ``path`` is relative to the mount point and starts with
        ``/``; ``headers`` as the framework has them, every value of a repeated header
        kept (pairs of bytes, or a mapping); ``client``: the peer's address. Never raises
        but for cancellation; every answer to an allowed origin carries its CORS headers."""
        try:
            info = RequestInfo.of(method, path, headers, client)
        except AccessRefused as exc:
            return _refusal(exc)
        cors = self.access.cors_headers(info) if self.access is not None else {}
        try:
            reply = await self._checked(info, parse_qs(query), read_body)
        except AccessRefused as exc:
            reply = _refusal(exc)
        except HandingerError as exc:
            reply = _error_reply(exc)
        except RecursionError:
            # msgspec's bound on nesting: a body made to exhaust the decoder's stack.
            reply = _error_reply(InvalidRequestError("the body is nested too deeply"))
        except Exception:
            log.exception("relay: %s %s failed", method, path)
            reply = Reply(
                500,
                {"content-type": _JSON},
                error_body(500, "internal error in the relay", "internal_error"),
            )
        for name, value in cors.items():
            reply.headers.setdefault(name, value)  # a preflight's own Vary is the longer one
        return reply

    async def principal(self, info: RequestInfo) -> str | None:
        """The request's principal after every access check (``None`` without ``access``);
        raises :class:`AccessRefused`. The WebSocket's upgrade is checked with it too."""
        if self.access is None:
            return None
        return await self.access.request(info)

    async def _checked(
        self,
        info: RequestInfo,
        query: dict[str, list[str]],
        read_body: Callable[[], Awaitable[bytes]],
    ) -> Reply:
        access = self.access
        if info.method == "OPTIONS":
            if access is None:
                return Reply(204, {"allow": "GET, HEAD, POST, OPTIONS"})
            answer = access.preflight(info)
            return Reply(answer.status, dict(answer.headers), answer.body)
        if info.path in _ASSETS:
            # The page loads without credentials (its token is in the URL's fragment,
            # which no browser sends); its Host is still checked (DNS rebinding).
            if access is not None and access.origins is not None:
                access.origins.check(info)
            _allow(info.method, "GET", "HEAD")
            return self._asset(info.path)
        principal = await self.principal(info)
        return await self._route(info, principal, query, read_body)

    async def _route(
        self,
        info: RequestInfo,
        principal: str | None,
        query: dict[str, list[str]],
        read_body: Callable[[], Awaitable[bytes]],
    ) -> Reply:
        method, path = info.method, info.path
        if path == "/api/chat":
            _allow(method, "POST")
            return await self._send(info, principal, read_body, query)
        if path == WS_PATH:
            # The WebSocket endpoint: the adapters take its upgrades before routing here.
            _allow(method, "GET")
            return Reply(
                426,
                {"content-type": _JSON, "upgrade": "websocket"},
                error_body(426, f"{WS_PATH} is a WebSocket: upgrade to one", "upgrade_required"),
            )
        prefix = "/api/chat/"
        if path.startswith(prefix):
            rest = path[len(prefix) :]
            if rest.endswith("/stream"):
                _allow(method, "GET")
                return await self._resume(rest[: -len("/stream")], principal, info, query)
            _allow(method, "GET")
            return await self._history(rest, principal)
        return Reply(
            404,
            {"content-type": _JSON},
            error_body(404, "no such route in the relay", "not_found"),
        )

    async def owns(self, principal: str | None, chat_id: str) -> bool:
        """Whether the principal may read the chat (always, without ``access``)."""
        return self.access is None or await self.access.owns(principal or "", chat_id)

    async def owned_chat(self, principal: str | None, chat_id: str) -> ChatInfo | None:
        """The chat's record if the principal may read it, else ``None`` (as for a chat
        never seen): one look at the store, its owner read from the record."""
        check_chat_id(chat_id)
        access = self.access
        if access is not None and access.limits.store is not self.relay.store:
            # Owners kept elsewhere than the chats (an unusual setup): asked there.
            return await self.relay.chat(chat_id) if await self.owns(principal, chat_id) else None
        info = await self.relay.chat(chat_id)
        if info is not None and access is not None and not is_owner(info.owner, principal or ""):
            return None
        return info

    def _asset(self, path: str) -> Reply:
        name, content_type = _ASSETS[path]
        data = self._assets.get(name)
        if data is None:
            data = self._assets[name] = (PAGE / name).read_bytes()
        return Reply(200, {"content-type": content_type, "cache-control": "no-cache"}, data)

    def hold_stream(self, principal: str | None) -> Callable[[], None] | None:
        """Count an answer against the principal's ``max_streams`` (:meth:`Access.hold_stream`;
        ``None`` without ``access``). Shared with the WebSocket."""
        access = self.access
        return None if access is None or principal is None else access.hold_stream(principal)

    def _sse(
        self,
        reader: Reader,
        worker_id: str | None,
        query: dict[str, list[str]],
        release: Callable[[], None] | None,
    ) -> Reply:
        headers = dict(SSE_HEADERS)
        if worker_id:
            headers[WORKER_ID_HEADER] = worker_id
        snapshots = self.snapshots or query.get("snapshots", ["0"])[-1] in ("1", "true")
        compact = self.compact and query.get("compact", ["1"])[-1] not in ("0", "false")
        body = SSEBody(
            reader, keepalive=self.keepalive, snapshots=snapshots, compact=compact, on_close=release
        )
        return Reply(200, headers, stream=body)

    async def _send(
        self,
        info: RequestInfo,
        principal: str | None,
        read_body: Callable[[], Awaitable[bytes]],
        query: dict[str, list[str]],
    ) -> Reply:
        if self.access is None:
            # JSON only, with or without access control (Access.request checked both
            # already): a page of another site can send a form or text/plain without a
            # preflight (and start a turn on the key), never JSON.
            require_json(info)
            check_length(info, self.max_body)
        try:
            # A body trickled in a byte at a time holds a connection and a buffer: bounded.
            raw = await asyncio.wait_for(read_body(), self.body_timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise _BodyTimeout() from None
        if len(raw) > self.max_body:
            raise TooLarge()
        request = parse_chat(raw)
        # Counted before the turn starts: a principal over its streams starts none.
        release = self.hold_stream(principal)
        try:
            turn = await self.start_turn(info, principal, request)
        except BaseException:
            if release is not None:
                release()
            raise
        reader = self.relay.read(request.chat_id, after=turn.after)
        return self._sse(reader, turn.worker_id, query, release)

    async def start_turn(
        self, info: RequestInfo, principal: str | None, request: ParsedChat
    ) -> Any:
        """Start a turn for a principal: the policy and the limits first (``access``), its
        slot released if the turn did not start. The browser's ``budget`` is the policy's to
        read; without ``access`` it is ignored (the API's default). Shared with the WebSocket."""
        access = self.access
        if access is None:
            return await self.relay.send(
                request.chat_id, request.text, message_id=request.message_id
            )
        assert principal is not None
        chat = ChatRequest(request.chat_id, request.text, request.budget, request.files)
        admitted = await access.admit(principal, info, chat)
        try:
            template = admitted.options.worker_id
            if template is not None and template != self.relay.worker_id:
                # A relay runs one template: its chats' task ids, take-overs and histories
                # are that template's. Refused loudly (500, logged), never run elsewhere.
                raise ValueError(
                    "the policy named a worker template other than the relay's own: "
                    "TurnOptions.worker_id must be None or Relay(worker_id=...)"
                )
            return await self.relay.send(
                request.chat_id,
                request.text,
                budget=admitted.options.budget,
                owner=principal,
                message_id=request.message_id,
            )
        except BaseException:
            with contextlib.suppress(HandingerError):
                await asyncio.shield(access.release(admitted))
            raise

    async def _resume(
        self,
        chat_id: str,
        principal: str | None,
        info: RequestInfo,
        query: dict[str, list[str]],
    ) -> Reply:
        last_event_id = (info.headers.single("last-event-id") or "").strip()
        after: int | None = None
        if last_event_id:
            # ASCII digits only: str.isdigit() takes Unicode digits int() would read.
            if not (last_event_id.isascii() and last_event_id.isdigit()) or len(last_event_id) > 18:
                raise InvalidRequestError("Last-Event-ID must be an id this relay sent (a number)")
            after = int(last_event_id)
        info_ = await self.owned_chat(principal, chat_id)
        if info_ is None:
            # Never seen, another's, or forgotten (a store restarted without persistence):
            # one answer for all three, so it tells nothing. Without an id, nothing runs;
            # with one, the client saw events the relay cannot give: its answer is cut.
            if after is None:
                return Reply(204)
            raise EntriesGoneError("this chat's answer is no longer kept")
        if not info_.active and (after is None or after >= info_.last_seq):
            return Reply(204)  # no turn running, and nothing after that id
        start = after if after is not None else info_.turn_start - 1
        store = self.relay.store
        try:
            # Still kept? A store that has the entry at hand answers without a round trip.
            if store.read_ready(chat_id, start, 1) is None:
                await store.read(chat_id, start, 1)
        except EntriesGoneError:
            # The record lives on, its entries do not: the browser must know its answer
            # would be incomplete, not be given a stream with a hole.
            raise EntriesGoneError("this chat's answer is no longer kept") from None
        release = self.hold_stream(principal)
        reader = self.relay.read(chat_id, after=after, info=info_)
        return self._sse(reader, info_.worker_id, query, release)

    async def _history(self, chat_id: str, principal: str | None) -> Reply:
        check_chat_id(chat_id)
        if not await self.owns(principal, chat_id):
            raise NotFound()
        if await self.relay.chat(chat_id) is None:
            raise NotFound()
        messages = await self.relay.messages(chat_id)
        return Reply(
            200,
            {"content-type": _JSON, "cache-control": "no-store"},
            _json.encode({"id": chat_id, "messages": messages}),
        )


class _MethodNotAllowed(HandingerError):
    def __init__(self, allowed: tuple[str, ...]) -> None:
        super().__init__(f"method not allowed here (allowed: {', '.join(allowed)})")
        self.allowed = allowed


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise _MethodNotAllowed(allowed)


@dataclass(frozen=True, slots=True)
class ParsedChat:
    """A chat request's body, as the relay uses it: the chat, the user's text, what the
    browser asked for (``budget``: the policy's to honour or not), its file parts, and
    the sender's id for its message (``None`` when absent or unfit)."""

    chat_id: str
    text: str
    budget: str | None = None
    files: int = 0
    message_id: str | None = None


def parse_chat(raw: bytes | dict[str, Any]) -> ParsedChat:
    """``DefaultChatTransport``'s body (or a WebSocket ``send``'s fields) → :class:`ParsedChat`.

    >>> user = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]}
    >>> parse_chat({"id": "c1", "messages": [user]})
    ParsedChat(chat_id='c1', text='Hi', budget=None, files=0, message_id='m1')
    """
    if isinstance(raw, dict):
        body: Any = raw
    else:
        try:
            body = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise InvalidRequestError(
                "the body must be JSON: the AI SDK chat transport's"
            ) from None
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object")
    chat_id = body.get("id")
    if not isinstance(chat_id, str) or not chat_id:
        raise InvalidRequestError("id: the chat's id (a non-empty string) is required")
    messages = body.get("messages")
    text = chat_input(messages)
    budget = body.get("budget")
    if budget is not None and budget not in BUDGETS:
        raise InvalidRequestError(f"budget must be one of {', '.join(BUDGETS)}")
    assert isinstance(messages, list)  # chat_input refused anything else
    last = messages[-1]
    message_id = last.get("id")
    if not isinstance(message_id, str) or not 0 < len(message_id) <= _MAX_MESSAGE_ID:
        message_id = None
    return ParsedChat(chat_id, text, budget, count_files(last), message_id)


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


class _BodyTimeout(AccessRefused):
    """408: the body did not arrive within ``body_timeout``."""

    status = 408
    kind = "request_timeout"
    message = "the request body took too long to arrive"


def _refusal(exc: AccessRefused) -> Reply:
    answer = exc.answer()
    return Reply(answer.status, dict(answer.headers), answer.body)


_UPSTREAM_REFUSED = "the worker API refused this request"
_UPSTREAM_FAILED = "the worker API failed: try again later"
_STORE_DOWN = "the relay's store is unavailable: try again later"
STORE_RETRY_AFTER = 5
"""Seconds a client is told to wait (``Retry-After``) while the store is unavailable."""


def public_error(exc: BaseException) -> str:
    """What a browser is told of an error: a short public sentence. An upstream error's
    text can carry the API's reply (a key echoed back, a redirect's URL) and a store's its
    address: those are logged on the server, never sent. The relay's own request errors
    (a bad body, a busy chat) are the caller's to read.

    >>> public_error(StoreUnavailableError("Redis at redis://:pw@db:6379 is unavailable"))
    "the relay's store is unavailable: try again later"
    """
    if isinstance(exc, AccessRefused):
        return str(exc)
    if isinstance(exc, StoreUnavailableError):
        return _STORE_DOWN
    if isinstance(exc, (InvalidRequestError, RelayError)) and not isinstance(
        exc, (APIStatusError, APIConnectionError)
    ):
        return str(exc)
    if isinstance(exc, APIStatusError) and exc.status_code in (400, 404, 409, 422, 429):
        return _UPSTREAM_REFUSED
    return _UPSTREAM_FAILED


def _error_reply(exc: HandingerError) -> Reply:
    headers = {"content-type": _JSON}
    if isinstance(exc, _MethodNotAllowed):
        headers["allow"] = ", ".join(exc.allowed)
        return Reply(405, headers, error_body(405, str(exc), "method_not_allowed"))
    if isinstance(exc, InvalidRequestError):
        return Reply(400, headers, error_body(400, str(exc), "invalid_request"))
    if isinstance(exc, StoreUnavailableError):
        log.warning("relay: %s", exc)
        headers["retry-after"] = str(STORE_RETRY_AFTER)
        return Reply(503, headers, error_body(503, _STORE_DOWN, "unavailable"))
    if isinstance(exc, RelayError):
        kind = {409: "conflict", 410: "gone", 503: "unavailable"}.get(exc.status, "relay_error")
        return Reply(exc.status, headers, error_body(exc.status, str(exc), kind))
    # The worker API said no, or failed: the detail (which may quote the API's reply, or
    # a URL it redirected to) goes to the log; the browser gets a fixed sentence.
    log.warning("relay: the worker API: %s", exc)
    if isinstance(exc, APIStatusError) and exc.status_code in (400, 404, 409, 422, 429):
        status = exc.status_code
        if status == 429 and exc.retry_after is not None:
            headers["retry-after"] = str(max(1, round(exc.retry_after)))
        return Reply(status, headers, error_body(status, _UPSTREAM_REFUSED, "upstream"))
    return Reply(502, headers, error_body(502, _UPSTREAM_FAILED, "bad_gateway"))
