"""The relay's WebSocket endpoint, framework-neutral: ai 7's ``WebSocketChatTransport``.

One socket carries many requests at once, each named by the client's
``requestId``: ``send`` starts a turn of a chat and streams it, ``resume``
streams the chat's running turn (all of it, or after ``lastSequence``),
``abort`` stops one request's stream. Answers are ``start``, then
``chunk`` frames numbered from 0 (``sequence``, without gaps, counting the
chunks of the turn), then ``end``; or ``no-active`` (a resume with no turn
running) or ``error``. The adapters (:mod:`.aiohttp_app`, :mod:`.asgi`)
check the upgrade with :meth:`RelayWS.check_upgrade`, then give
:meth:`RelayWS.serve` a :class:`Socket`.

Everything from the network is hostile: a frame is bounded in size, a
socket in requests running (each holding at most one batch of frames for
it), a silent or stuck socket is closed; a frame that is not a request is
answered with an ``error`` frame, never a traceback.

>>> decode_request(b'{"type":"abort","requestId":"r1"}')
AbortRequest(request_id='r1')
>>> origin_allowed({"host": "127.0.0.1:8788", "origin": "http://127.0.0.1:8788"}, ())
True
>>> origin_allowed({"host": "relay.example", "origin": "https://evil.example"}, ())
False

With an :class:`~.access.Access` on the ``http``, an upgrade passes its checks
(``Host`` and ``Origin`` allow-lists, then ``authenticate``) before it is accepted
(:meth:`RelayWS.check_upgrade`), each ``send`` is admitted by its policy and limits,
and a ``resume`` finds only the principal's own chats.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import urlsplit

import msgspec

from ..errors import HandingerError, InvalidRequestError
from .access import WS_BEARER_PROTOCOL, Forbidden, RequestInfo, TooManyRequests, _origin
from .core import Reader
from .http import RelayHTTP, parse_chat, public_error
from .store import Entry

__all__ = [
    "AbortRequest",
    "RelayWS",
    "ResumeRequest",
    "SendRequest",
    "Socket",
    "WSLimits",
    "decode_request",
    "origin_allowed",
    "text_frames",
]

log = logging.getLogger("handinger_stream.relay")

# Close codes (RFC 6455 and its IANA registry): the peer broke a rule of ours; a frame
# was too big; over a limit of the principal's, to be tried again later.
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
TRY_AGAIN_LATER = 1013
NORMAL = 1000

_Id = Annotated[str, msgspec.Meta(max_length=256)]
_ChatId = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
# The transport's isSequence: a safe integer, not negative.
_Sequence = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]


class SendRequest(msgspec.Struct, tag="send", tag_field="type", rename="camel"):
    """``send``: a new user message (``trigger``) of chat ``id``; ``messages`` is the chat."""

    request_id: _Id
    id: _ChatId
    trigger: Literal["submit-message", "regenerate-message"]
    messages: list[Any]
    headers: dict[str, str]
    body: dict[str, Any]
    message_id: str | None = None
    metadata: Any = None


class ResumeRequest(msgspec.Struct, tag="resume", tag_field="type", rename="camel"):
    """``resume``: chat ``id``'s running turn, all of it or after ``last_sequence``."""

    request_id: _Id
    id: _ChatId
    headers: dict[str, str]
    body: dict[str, Any]
    last_sequence: _Sequence | None = None
    metadata: Any = None


class AbortRequest(msgspec.Struct, tag="abort", tag_field="type", rename="camel"):
    """``abort``: stop answering request ``request_id`` (the turn goes on)."""

    request_id: _Id


Request = SendRequest | ResumeRequest | AbortRequest
_decoder = msgspec.json.Decoder(Request)
_json = msgspec.json.Encoder()


class BadFrame(InvalidRequestError):
    """A frame that is not a request of the protocol; ``request_id`` if one could be read."""

    def __init__(self, message: str, request_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id


def decode_request(raw: str | bytes) -> Request:
    """One frame from the client → its request; :class:`BadFrame` if it is none."""
    try:
        return _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        # Say which request was bad, when the frame names one the client could match.
        # (RecursionError: JSON nested past what the decoder takes, a bad frame too.)
        request_id = ""
        with contextlib.suppress(msgspec.DecodeError, RecursionError):
            value = msgspec.json.decode(raw)
            found = value.get("requestId") if isinstance(value, dict) else None
            if isinstance(found, str) and len(found) <= 256:
                request_id = found
        said = "nested too deep" if isinstance(exc, RecursionError) else str(exc)
        raise BadFrame(f"not a WebSocket chat request: {said}", request_id) from None


def _host_port(netloc: str, scheme: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    default = 443 if scheme in ("https", "wss") else 80
    return parts.hostname.lower(), port if port is not None else default


def _literal_host(host: str) -> bool:
    """An IP literal or ``localhost``: a name no other site's page can be served under."""
    bare = host.strip("[]")
    if bare == "localhost":
        return True
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        return False
    return True


def origin_allowed(headers: Mapping[str, str], allowed: Collection[str]) -> bool:
    """Whether a WebSocket upgrade may go on, for a relay with no :class:`~.access.Access`:
    its ``Origin`` is in ``allowed`` (``"*"``: any origin), or is the relay's own where
    the ``Host`` is an IP address or ``localhost``.

    Browsers do not apply CORS to WebSockets, so without this any page could
    open a socket with the visitor's cookies. A ``Host`` that is a domain name
    proves nothing: a site's name pointed at the relay's address (DNS rebinding)
    makes its page's origin equal the ``Host`` it sends; name such origins in
    ``allowed``, or give the relay an ``Access`` with :class:`~.access.Origins`.
    A request without ``Origin`` comes from no browser and is let through.
    An http(s) origin matches in any spelling :class:`~.access.Origins` takes as the
    same (case, default port, trailing slash); any other is let in only as listed.
    ``headers`` has lower-case names.
    """
    origin = headers.get("origin")
    if origin is None or "*" in allowed or origin.strip() in allowed:
        return True  # listed as sent: an app's own scheme (chrome-extension://...) too
    # One spelling for both sides, the one access.Origins uses: a default port, a
    # trailing slash or a capital letter is not a different site.
    canonical = _origin(origin)
    if canonical is None:
        return False  # "null" (a sandboxed page, a file) and the like: nobody's own
    if canonical in {_origin(o) for o in allowed}:
        return True
    parts = urlsplit(canonical)
    own = _host_port(headers.get("host", ""), parts.scheme)
    if own is None or not _literal_host(own[0]):
        return False
    return _host_port(parts.netloc, parts.scheme) == own


@dataclass(frozen=True, slots=True)
class WSLimits:
    """What one WebSocket may cost the relay.

    ``max_frame``: bytes in one frame from the client (the transport sends
    the whole conversation with each message; a larger frame closes the
    socket with 1009). ``max_requests``: requests running at once on one
    socket (one more is answered with an ``error``); each request writes
    its own frames and waits for the socket, holding only its position in
    the turn and one batch. ``handshake_timeout``: seconds from the upgrade
    to the first frame. ``idle_timeout``: seconds with no frame from the
    client and no request running. ``ping_interval``: seconds between pings
    (aiohttp; ASGI servers ping on their own).
    """

    max_frame: int = 8 * 1024 * 1024
    max_requests: int = 32
    handshake_timeout: float = 10.0
    idle_timeout: float = 300.0
    ping_interval: float = 20.0


class Socket(Protocol):
    """One accepted WebSocket, as an adapter gives it to :meth:`RelayWS.serve`."""

    async def receive(self, timeout: float) -> str | bytes | None:
        """The next message's data; ``None`` once the peer closed; ``TimeoutError``
        after ``timeout`` seconds with none."""
        ...

    async def send(self, texts: list[bytes]) -> None:
        """Send a text frame for each of ``texts`` (UTF-8 JSON), in order, at once if it can
        (:func:`text_frames`); wait while the socket's buffer is full; raise when the
        peer is gone."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close the socket (never raises)."""
        ...


class RelayWS:
    """The WebSocket endpoint (``GET {mount}/api/chat/ws``) of a :class:`RelayHTTP`.

    ``allowed_origins``: origins (``"https://app.example"``) besides the
    relay's own whose pages may open the socket; ``("*",)`` allows any.
    ``limits``: :class:`WSLimits`. The slow-reader cut (``write_timeout``)
    and ``snapshots`` are the ``http``'s.

    >>> from handinger_stream import AsyncHandinger
    >>> from handinger_stream.relay import Relay
    >>> ws = RelayWS(RelayHTTP(Relay(AsyncHandinger(api_key="k"))), allowed_origins=["https://app.example"])
    >>> ws.limits.max_requests
    32
    """

    def __init__(
        self,
        http: RelayHTTP,
        *,
        allowed_origins: Collection[str] = (),
        limits: WSLimits | None = None,
    ) -> None:
        if isinstance(allowed_origins, str):
            raise TypeError("allowed_origins is a collection of origins, not one string")
        self.http = http
        self.allowed_origins = frozenset(allowed_origins)
        self.limits = limits or WSLimits()

    async def check_upgrade(self, info: RequestInfo) -> tuple[str | None, str | None]:
        """Check an upgrade before accepting it: ``(principal, subprotocol)``, the
        subprotocol to accept with (``handinger.bearer`` when the client offered its
        token that way: never the token itself), or raise :class:`~.access.AccessRefused`
        (answer it as its ``answer()`` says, without upgrading)."""
        offered = [
            name.strip()
            for line in info.headers.get_all("sec-websocket-protocol")
            for name in line.split(",")
        ]
        protocol = WS_BEARER_PROTOCOL if offered[:1] == [WS_BEARER_PROTOCOL] else None
        access = self.http.access
        if access is None or access.origins is None:
            # Browsers apply no CORS to WebSockets: without an origin list of its own,
            # the relay's rule (same host, or allowed_origins) still stands.
            plain = {
                name: values[0]
                for name in info.headers
                if len(values := info.headers.get_all(name)) == 1
            }
            if not origin_allowed(plain, self.allowed_origins):
                raise Forbidden("this origin may not open the relay's WebSocket")
            if access is None:
                return None, protocol
        elif not access.origins.credentials:
            origin = info.headers.single("origin")
            if origin is not None and not access.origins.is_own(origin):
                # A listed site may open it, but not with the visitor's cookies: CORS
                # would have kept them from its fetches, nothing keeps them from a socket.
                info = info.without_cookies()
        return await self.http.principal(info), protocol

    async def serve(
        self,
        socket: Socket,
        query: Mapping[str, str] | None = None,
        *,
        principal: str | None = None,
        info: RequestInfo | None = None,
    ) -> None:
        """Speak the protocol on an accepted socket until either side closes it.

        ``query``: the upgrade's query parameters (``snapshots=1`` sends the
        worker's snapshots too, numbered like any chunk). Never raises but
        for cancellation; a socket that takes no bytes for the ``http``'s
        ``write_timeout`` is closed. ``principal`` and ``info``: what
        :meth:`check_upgrade` found, for the policy, the limits and the owners; a
        principal holding its ``max_streams`` answers already is closed with 1013.
        """
        snapshots = self.http.snapshots or (query or {}).get("snapshots") in ("1", "true")
        upgrade = info or RequestInfo.of("GET", "/api/chat/ws", {})
        try:
            release = self.http.hold_stream(principal)  # a socket is one of its answers
        except TooManyRequests as exc:
            await socket.close(TRY_AGAIN_LATER, str(exc))
            return
        try:
            await _Session(self, socket, snapshots, principal, upgrade).run()
        finally:
            if release is not None:
                release()


class _Gone(Exception):
    """The socket can take no more: its peer left, or it was cut for being too slow."""


class _Session:
    """One socket: its reading loop and its requests, each writing its own frames."""

    def __init__(
        self,
        ws: RelayWS,
        socket: Socket,
        snapshots: bool,
        principal: str | None,
        info: RequestInfo,
    ) -> None:
        self.ws = ws
        self.principal = principal
        self.info = info
        self.relay = ws.http.relay
        self.limits = ws.limits
        self.socket = socket
        self.snapshots = snapshots
        self.requests: dict[str, asyncio.Task[None]] = {}
        self.closing: tuple[int, str] | None = None
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        reading = asyncio.get_running_loop().create_task(self._read())
        try:
            # Either the client is done (or broke a rule), or its socket is gone (or was cut).
            await asyncio.wait({reading, self.gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            tasks = [reading, *self.requests.values()]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            code, reason = self.closing or (NORMAL, "")
            await self.socket.close(code, reason)

    def _end(self) -> None:
        if not self.gone.done():
            self.gone.set_result(None)

    async def _emit(self, frames: list[bytes], mark: Any = None) -> None:
        """Send frames in order, each request its own: nothing queues between a request
        and the socket, so a slow socket holds each request at its position, and the
        slow-reader watch (``mark``) cuts a socket that takes nothing."""
        if mark is not None:
            mark.since = asyncio.get_running_loop().time()
        try:
            await self.socket.send(frames)
        except Exception as exc:
            self._end()
            raise _Gone from exc
        if mark is not None:
            mark.since = None

    async def _read(self) -> None:
        limits = self.limits
        timeout = limits.handshake_timeout
        heard = False
        while True:
            try:
                data = await self.socket.receive(timeout)
            except (TimeoutError, asyncio.TimeoutError):
                if not heard:
                    self.closing = (POLICY_VIOLATION, "no request within the handshake timeout")
                    return
                if self.requests:
                    continue  # quiet, but answering: not idle
                self.closing = (NORMAL, "idle")
                return
            if data is None:
                return
            heard = True
            timeout = limits.idle_timeout
            if len(data) > limits.max_frame:
                self.closing = (MESSAGE_TOO_BIG, f"a frame is limited to {limits.max_frame} bytes")
                return
            try:
                await self._dispatch(data)
            except _Gone:
                return

    async def _dispatch(self, data: str | bytes) -> None:
        try:
            request = decode_request(data)
        except BadFrame as exc:
            await self._error(exc.request_id, str(exc))
            return
        if isinstance(request, AbortRequest):
            task = self.requests.pop(request.request_id, None)
            if task is not None:
                task.cancel()  # the client forgot the request: nothing more is said of it
            return
        if request.request_id in self.requests:
            await self._error(request.request_id, "this requestId is already running")
            return
        if len(self.requests) >= self.limits.max_requests:
            await self._error(
                request.request_id,
                f"too many requests running on this socket (at most {self.limits.max_requests})",
            )
            return
        task = asyncio.get_running_loop().create_task(self._answer(request))
        self.requests[request.request_id] = task
        task.add_done_callback(lambda t: self._forget(request.request_id, t))

    def _forget(self, request_id: str, task: asyncio.Task[None]) -> None:
        if self.requests.get(request_id) is task:
            del self.requests[request_id]

    async def _answer(self, request: SendRequest | ResumeRequest) -> None:
        rid = _json.encode(request.request_id)
        with self.ws.http.watching(self._end) as mark:
            try:
                if isinstance(request, SendRequest):
                    reader = await self._send(request)
                    skip = -1
                else:
                    found = await self._resume(request)
                    if found is None:
                        await self._emit([b'{"type":"no-active","requestId":%s}' % rid], mark)
                        return
                    reader = found
                    skip = request.last_sequence if request.last_sequence is not None else -1
                await self._emit([b'{"type":"start","requestId":%s}' % rid], mark)
                await self._stream(reader, rid, skip, mark)
            except _Gone:
                return
            except HandingerError as exc:
                if not isinstance(exc, InvalidRequestError):
                    log.info("relay: a WebSocket request failed: %s", exc)
                await self._error(request.request_id, public_error(exc))
            except Exception:
                log.exception("relay: a WebSocket %s request failed", type(request).__name__)
                await self._error(request.request_id, "internal error in the relay")

    async def _send(self, request: SendRequest) -> Reader:
        body = {
            "id": request.id,
            "messages": request.messages,
            "budget": request.body.get("budget"),
        }
        parsed = parse_chat(body)
        # Shielded: an abort stops this request's answer, never the turn it started.
        http = self.ws.http
        starting = asyncio.ensure_future(http.start_turn(self.info, self.principal, parsed))
        starting.add_done_callback(_retrieved)
        turn = await asyncio.shield(starting)
        return self.relay.read(request.id, after=turn.after)

    async def _resume(self, request: ResumeRequest) -> Reader | None:
        # Another's chat looks like one never seen: nothing running.
        info = await self.ws.http.owned_chat(self.principal, request.id)
        if info is None or not info.active:
            return None
        # From the running turn's first entry, whatever turn starts meanwhile.
        return self.relay.read(request.id, after=info.turn_start - 1, info=info)

    async def _stream(self, reader: Reader, rid: bytes, skip: int, mark: Any) -> None:
        """The turn's chunks as frames: ``sequence`` counts them from 0; those up to
        ``skip`` (the resume's ``lastSequence``) are counted, not sent."""
        sequence = 0
        keep_snapshots = self.snapshots
        # Built as bytes around the stored JSON: nothing is decoded or re-encoded per reader.
        head = b'{"type":"chunk","requestId":%s,"sequence":' % rid
        while True:
            batch = await reader.next_batch(None)
            if batch is None:
                break
            frames: list[bytes] = []
            for entry in batch:
                if entry.snapshot and not keep_snapshots:
                    continue
                if entry.end and entry.error is None:
                    break
                if sequence > skip:
                    frames.append(b'%s%d,"chunk":%s}' % (head, sequence, _chunk(entry)))
                sequence += 1
            if frames:
                await self._emit(frames, mark)
        await self._emit([b'{"type":"end","requestId":%s}' % rid], mark)

    async def _error(self, request_id: str, text: str) -> None:
        frame = _json.encode({"type": "error", "requestId": request_id, "errorText": text})
        # Under the slow-reader watch as every other write: a peer that sends a bad
        # frame and then reads nothing must not hold the session forever.
        with self.ws.http.watching(self._end) as mark:
            await self._emit([frame], mark)


_HEAD1 = struct.Struct("!BB").pack
_HEAD2 = struct.Struct("!BBH").pack
_HEAD8 = struct.Struct("!BBQ").pack


def text_frames(texts: list[bytes]) -> bytes:
    """Server-to-client text frames (RFC 6455: final, unmasked, uncompressed), joined:
    a batch of chunks is one write to the socket, not one system call per chunk.

    >>> text_frames([b'{"a":1}', b"{}"])
    b'\\x81\\x07{"a":1}\\x81\\x02{}'
    """
    parts: list[bytes] = []
    for text in texts:
        size = len(text)
        if size < 126:
            parts.append(_HEAD1(0x81, size))
        elif size < 1 << 16:
            parts.append(_HEAD2(0x81, 126, size))
        else:
            parts.append(_HEAD8(0x81, 127, size))
        parts.append(text)
    return b"".join(parts)


def _retrieved(task: asyncio.Future[Any]) -> None:
    # A turn's start whose request was aborted meanwhile: its failure was nobody's to hear.
    if not task.cancelled():
        task.exception()


def _chunk(entry: Entry) -> bytes:
    if entry.end:  # a turn that failed: the error as a chunk, as the SSE stream has it
        return _json.encode({"type": "error", "errorText": entry.error})
    return entry.data
