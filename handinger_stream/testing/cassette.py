"""Recorded sessions (cassettes): what a Handinger service said, replayed offline byte for byte.

A :class:`Recorder` is a small HTTP proxy on loopback. Point any client at its
``base_url`` (ours on either transport, curl, your app): every request goes on
to the upstream service and every response comes back chunk by chunk as it
arrives, so event streams stay live. Each exchange is kept: the request's
method, path, body and a few headers; the response's status, headers and
every body chunk with its time offset. The cassette is written as JSON when
the recorder closes. Credentials are never written.

:class:`~handinger_stream.testing.emulator.Emulator` replays one
(``Emulator(cassette="weather.json")``, or ``handinger-stream serve --cassette``),
and :func:`use_cassette` records when it can and replays otherwise.

>>> async def record() -> None:  # doctest: +SKIP
...     async with Recorder("weather.json", upstream="https://v3.handinger.com") as rec:
...         async with AsyncHandinger(base_url=rec.base_url) as client:
...             stream = await client.workers.create(input="Weather in Barcelona?", stream=True)
...             await stream.get_final_worker()
"""

from __future__ import annotations

import asyncio
import base64 as b64
import email.message
import email.utils
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
import anyio.to_thread
import msgspec
import yarl
from aiohttp import web

from .._background import LoopThread, under_trio

if TYPE_CHECKING:
    from .emulator import ClientOptions, Emulator

__all__ = [
    "CASSETTE_VERSION",
    "Cassette",
    "CassetteError",
    "CassetteNotFoundError",
    "CassetteSession",
    "Chunk",
    "Interaction",
    "RecordedFile",
    "RecordedForm",
    "RecordedRequest",
    "RecordedResponse",
    "Recorder",
    "request_key",
    "use_cassette",
]

CASSETTE_VERSION = 1
DEFAULT_UPSTREAM = "https://v3.handinger.com"
# The only request headers kept: they change what the service answers.
RECORDED_REQUEST_HEADERS = ("accept", "content-type", "last-event-id")
# Hop-by-hop headers belong to one connection, not to the exchange (RFC 9110 §7.6.1);
# content-length goes too, since the body is relayed in chunks as it comes.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
_CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
# A secret shorter than this is only recognised as a whole header value: a
# test key such as "k" must not blank every "k" in a cassette.
_MIN_SECRET_LENGTH = 8
_REDACTED = "<redacted>"
_MAX_BODY = 256 * 1024 * 1024


class CassetteError(ValueError):
    """A cassette file that cannot be read: not JSON, another version, a wrong shape."""


class CassetteNotFoundError(FileNotFoundError):
    """A replay of a cassette file that does not exist; the message says how to record it."""


# -- the format --------------------------------------------------------------


class Chunk(msgspec.Struct, omit_defaults=True):
    """One piece of a response body as it arrived, ``at`` seconds after the request.

    The bytes are kept as ``text`` when they are valid UTF-8 (an event stream
    stays readable in the file), else as ``base64``.

    >>> Chunk.of(0.25, b"data: hi\\n\\n")
    Chunk(at=0.25, text='data: hi\\n\\n', base64=None)
    >>> Chunk.of(0.5, b"\\xff").data
    b'\\xff'
    """

    at: float
    text: str | None = None
    base64: str | None = None

    @classmethod
    def of(cls, at: float, data: bytes) -> Chunk:
        text, encoded = _text_or_base64(data)
        return cls(at=round(at, 6), text=text, base64=encoded)

    @property
    def data(self) -> bytes:
        return _bytes_of(self.text, self.base64)


class RecordedFile(msgspec.Struct, omit_defaults=True):
    """One file of a recorded upload: its part's name, its file name, and its bytes by digest."""

    name: str
    filename: str
    size: int
    sha256: str
    media_type: str | None = None


class RecordedForm(msgspec.Struct, omit_defaults=True):
    """A ``multipart/form-data`` body (an upload): its text fields, and each file
    by name, size and SHA-256. A file's bytes are not kept: a cassette stays
    small and readable, and a replay matches the same files by their digest.

    >>> form = RecordedForm(fields=[("input", "Sum it")],
    ...     files=[RecordedFile("files", "q3.csv", 3, hashlib.sha256(b"a,b").hexdigest())])
    >>> form.describe()
    'form input=Sum it, files: q3.csv (3 bytes)'
    """

    fields: list[tuple[str, str]] = []
    files: list[RecordedFile] = []

    def key(self) -> str:
        """What a replay matches: the fields in any order, the files in order by name and digest."""
        files = [(f.name, f.filename, f.sha256) for f in self.files]
        return "form:" + msgspec.json.encode([sorted(self.fields), files]).decode()

    def describe(self) -> str:
        fields = ", ".join(f"{name}={value}" for name, value in self.fields)
        files = ", ".join(f"{f.filename} ({f.size} bytes)" for f in self.files)
        return "form " + ", ".join(part for part in (fields, files and f"files: {files}") if part)


class RecordedRequest(msgspec.Struct, omit_defaults=True):
    """What was asked: method, path with query, a few headers, and the body.

    A JSON body is kept parsed (``json``) so the file reads naturally; an
    upload as a :class:`RecordedForm` (``form``); any other body as ``text``
    or ``base64``.
    """

    method: str
    path: str
    headers: dict[str, str] = {}
    json: Any | msgspec.UnsetType = msgspec.UNSET
    form: RecordedForm | None = None
    text: str | None = None
    base64: str | None = None

    @property
    def body(self) -> bytes:
        """The body's bytes (a JSON body re-encoded compactly; none for a form).

        >>> RecordedRequest("POST", "/api/workers", json={"input": "Hi"}).body
        b'{"input":"Hi"}'
        """
        if self.json is not msgspec.UNSET:
            return msgspec.json.encode(self.json)
        return _bytes_of(self.text, self.base64)

    @property
    def content(self) -> bytes | RecordedForm:
        """What a replay matches the body on: the form of an upload, else the bytes."""
        return self.form if self.form is not None else self.body

    def describe(self, limit: int = 120) -> str:
        """One line: method, path and an excerpt of the body.

        >>> RecordedRequest("GET", "/api/workers/wrk_1").describe()
        'GET /api/workers/wrk_1'
        """
        return _describe(self.method, self.path, self.content, limit)


class RecordedResponse(msgspec.Struct, omit_defaults=True):
    """What came back: status, headers (in order, repeats kept), body chunks with their timing.

    ``head_at`` is when the status line arrived, in seconds after the request.
    ``complete`` is false when the body ended early (the connection broke, or
    the client left): a replay then cuts the connection after the last chunk.
    """

    status: int
    reason: str | None = None
    headers: list[tuple[str, str]] = []
    head_at: float = 0.0
    chunks: list[Chunk] = []
    complete: bool = True

    @property
    def body(self) -> bytes:
        return b"".join(chunk.data for chunk in self.chunks)

    @property
    def duration(self) -> float:
        """Seconds from the request to the last byte.

        >>> RecordedResponse(200, head_at=0.1, chunks=[Chunk.of(0.3, b"x")]).duration
        0.3
        """
        return max([self.head_at, *(chunk.at for chunk in self.chunks)])


class Interaction(msgspec.Struct):
    """One request and the response it got."""

    request: RecordedRequest
    response: RecordedResponse


class Cassette(msgspec.Struct):
    """A recorded session: interactions in the order their requests arrived.

    >>> cassette = Cassette(interactions=[])
    >>> Cassette.loads(cassette.dumps()) == cassette
    True
    """

    version: int = CASSETTE_VERSION
    upstream: str | None = None
    interactions: list[Interaction] = []

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Cassette:
        """Read a cassette file (:class:`CassetteError` if it is not one)."""
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise CassetteNotFoundError(f"no cassette at {os.fspath(path)}") from None
        return cls.loads(data, source=os.fspath(path))

    @classmethod
    def loads(cls, data: bytes | str, *, source: str = "cassette") -> Cassette:
        """Parse a cassette from its JSON text."""
        try:
            head = msgspec.json.decode(data, type=_Head)
        except msgspec.DecodeError as exc:
            raise CassetteError(f"{source} is not a cassette: {exc}") from None
        if head.version != CASSETTE_VERSION:
            raise CassetteError(
                f"{source} is a version {head.version} cassette; this handinger-stream "
                f"reads version {CASSETTE_VERSION}"
            )
        try:
            return msgspec.json.decode(data, type=cls)
        except msgspec.DecodeError as exc:
            raise CassetteError(f"{source} is not a valid cassette: {exc}") from None

    def dumps(self) -> bytes:
        """The cassette as indented JSON, one body chunk per line."""
        return _pretty(msgspec.to_builtins(self)).encode() + b"\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the file atomically (a temporary file, then a rename); make its folder."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(self.dumps())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class _Head(msgspec.Struct):
    version: int


def _text_or_base64(data: bytes) -> tuple[str | None, str | None]:
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, b64.b64encode(data).decode("ascii")


def _bytes_of(text: str | None, encoded: str | None) -> bytes:
    if text is not None:
        return text.encode("utf-8")
    if encoded is not None:
        return b64.b64decode(encoded)
    return b""


def _excerpt(body: bytes | RecordedForm, limit: int) -> str:
    shown = body.describe() if isinstance(body, RecordedForm) else body.decode("utf-8", "replace")
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _describe(method: str, path: str, body: bytes | RecordedForm, limit: int) -> str:
    line = f"{method} {path}"
    return f"{line} {_excerpt(body, limit)}" if body else line


class _FormReader:
    """Reads a ``multipart/form-data`` body as it streams past, a chunk at a time:
    keeps its text fields, and hashes its files (never held whole).

    The recording proxy feeds it what it relays, the replay what it receives:
    two bodies of the same upload give the same :class:`RecordedForm`, whatever
    their boundary, and however they were cut into chunks.

    >>> reader = _FormReader.of("multipart/form-data; boundary=b")
    >>> reader.feed(b'--b\\r\\nContent-Disposition: form-data; name="input"\\r\\n\\r\\nHi')
    >>> reader.feed(b'\\r\\n--b--\\r\\n')  # in any pieces
    >>> reader.form().fields
    [('input', 'Hi')]
    """

    def __init__(self, boundary: str) -> None:
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        self._buffer = b"\r\n"  # the first delimiter has no line break of its own before it
        self._state: Literal["preamble", "head", "body", "end"] = "preamble"
        self._fields: list[tuple[str, str]] = []
        self._files: list[RecordedFile] = []
        self._name = ""
        self._filename: str | None = None
        self._media_type: str | None = None
        self._text = bytearray()
        self._hash = hashlib.sha256()
        self._size = 0

    @classmethod
    def of(cls, content_type: str | None) -> _FormReader | None:
        """A reader for a body of this content type, if it is a multipart form with a boundary."""
        if not content_type:
            return None
        message = email.message.Message()
        message["content-type"] = content_type
        boundary = message.get_param("boundary")
        if message.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
            return None
        return cls(boundary)

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while self._step():
            pass

    def form(self) -> RecordedForm:
        """What was read (all of it, once the closing delimiter went past)."""
        return RecordedForm(fields=list(self._fields), files=list(self._files))

    def _step(self) -> bool:
        buffer, delimiter = self._buffer, self._delimiter
        if self._state == "head":
            if buffer.startswith(b"\r\n"):  # a part without headers
                head, rest = b"", buffer[2:]
            else:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return False
                head, rest = buffer[:end], buffer[end + 4 :]
            self._begin(head)
            self._buffer, self._state = rest, "body"
            return True
        if self._state == "end":
            self._buffer = b""  # the epilogue: nothing to keep
            return False
        at = buffer.find(delimiter)
        if at < 0:
            # All but what could be the start of a delimiter belongs to the part.
            keep = len(delimiter) - 1
            if len(buffer) > keep:
                self._take(buffer[:-keep])
                self._buffer = buffer[-keep:]
            return False
        after = buffer[at + len(delimiter) : at + len(delimiter) + 2]
        if len(after) < 2:
            self._take(buffer[:at])
            self._buffer = buffer[at:]
            return False
        self._take(buffer[:at])
        self._end()
        if after == b"--":
            self._buffer, self._state = b"", "end"
            return False
        line_end = buffer.find(b"\r\n", at + len(delimiter))  # after any padding
        if line_end < 0:
            self._buffer = buffer[at:]
            return False
        self._buffer, self._state = buffer[line_end + 2 :], "head"
        return True

    def _begin(self, head: bytes) -> None:
        # The standard library's header parameters: quoted strings, escapes, RFC 2231.
        headers = email.message.Message()
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip()] = value.strip()
        field = headers.get_param("name", header="content-disposition")
        self._name = field if isinstance(field, str) else ""
        filename = headers.get_param("filename", header="content-disposition")
        self._filename = None if filename is None else email.utils.collapse_rfc2231_value(filename)
        self._media_type = headers.get("content-type")

    def _take(self, data: bytes) -> None:
        if self._state != "body" or not data:
            return
        if self._filename is None:
            self._text += data
        else:
            self._hash.update(data)
            self._size += len(data)

    def _end(self) -> None:
        if self._state != "body":
            return
        if self._filename is None:
            self._fields.append((self._name, self._text.decode("utf-8", "replace")))
        else:
            self._files.append(
                RecordedFile(
                    name=self._name,
                    filename=self._filename,
                    size=self._size,
                    sha256=self._hash.hexdigest(),
                    media_type=self._media_type,
                )
            )
        self._text, self._hash, self._size = bytearray(), hashlib.sha256(), 0


def _pretty(value: Any, indent: str = "") -> str:
    # Objects and arrays of plain values (a chunk, a header) fit on one line:
    # a diff of two recordings then shows which chunks changed.
    encode = msgspec.json.encode
    nested = (dict, list, tuple)
    if isinstance(value, dict) and value:
        if all(not isinstance(v, nested) for v in value.values()):
            pairs = (f"{encode(k).decode()}: {encode(v).decode()}" for k, v in value.items())
            return "{" + ", ".join(pairs) + "}"
        inner = indent + "  "
        items = [f"{inner}{encode(k).decode()}: {_pretty(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, (list, tuple)) and value:
        if all(not isinstance(v, nested) for v in value):
            return "[" + ", ".join(encode(v).decode() for v in value) + "]"
        inner = indent + "  "
        return "[\n" + ",\n".join(inner + _pretty(v, inner) for v in value) + "\n" + indent + "]"
    return encode(value).decode()


# -- matching ------------------------------------------------------------------


def _target(path: str) -> str:
    # Compare decoded paths: two clients may percent-encode the same path differently.
    url = yarl.URL(path)
    return url.path + (f"?{url.query_string}" if url.query_string else "")


def _body_key(body: bytes | RecordedForm) -> str:
    if isinstance(body, RecordedForm):
        return body.key()
    if not body:
        return ""
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return "bytes:" + b64.b64encode(body).decode("ascii")
    # Sorted keys: two encodings of the same JSON match whatever their key order or spacing.
    return "json:" + msgspec.json.encode(value, order="sorted").decode()


def request_key(method: str, path: str, body: bytes | RecordedForm) -> tuple[str, str, str]:
    """What a replay matches on: the method, the path with its query, the body (as JSON if
    JSON; an upload by its fields and its files' names and digests).

    >>> request_key("POST", "/api/workers", b'{"stream": true, "input": "Hi"}') == (
    ...     request_key("post", "/api/workers", b'{"input":"Hi","stream":true}'))
    True
    """
    return method.upper(), _target(path), _body_key(body)


class _Player:
    """Answers requests from a cassette: a matching request gets its recorded response."""

    def __init__(self, cassette: Cassette, *, realtime: bool) -> None:
        self.cassette = cassette
        self.realtime = realtime
        self._by_key: dict[tuple[str, str, str], list[Interaction]] = {}
        for interaction in cassette.interactions:
            req = interaction.request
            self._by_key.setdefault(request_key(req.method, req.path, req.content), []).append(
                interaction
            )
        self._served: dict[tuple[str, str, str], int] = {}

    def next_for(self, method: str, path: str, body: bytes | RecordedForm) -> Interaction | None:
        """The next recorded answer to this request; the last one again once all were used."""
        key = request_key(method, path, body)
        candidates = self._by_key.get(key)
        if not candidates:
            return None
        served = self._served.get(key, 0)
        self._served[key] = served + 1
        return candidates[min(served, len(candidates) - 1)]

    def recorded(self) -> list[str]:
        seen: dict[str, None] = {}
        for interaction in self.cassette.interactions:
            seen.setdefault(interaction.request.describe(80), None)
        return list(seen)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        body: bytes | RecordedForm
        reader = _FormReader.of(request.headers.get("content-type"))
        if reader is None:
            body = await request.read()
        else:
            # An upload: read as it arrives, its files hashed, never whole in memory.
            async for piece in request.content.iter_any():
                reader.feed(piece)
            body = reader.form()
        interaction = self.next_for(request.method, request.raw_path, body)
        if interaction is None:
            return self._unmatched(request, body)
        recorded = interaction.response
        response = web.StreamResponse(status=recorded.status, reason=recorded.reason)
        for name, value in recorded.headers:
            response.headers.add(name, value)
        try:
            if self.realtime:
                await _sleep_until(started + recorded.head_at)
            await response.prepare(request)
            for chunk in recorded.chunks:
                if self.realtime:
                    await _sleep_until(started + chunk.at)
                await response.write(chunk.data)
            if not recorded.complete:
                # The recorded body ended early: end this one the same way.
                if request.transport is not None:
                    request.transport.abort()
                return response
            await response.write_eof()
        except ConnectionError:
            pass  # the client left
        return response

    def _unmatched(self, request: web.Request, body: bytes | RecordedForm) -> web.Response:
        asked = _describe(request.method, request.raw_path, body, 200)
        recorded = self.recorded()
        listing = "; ".join(recorded[:10]) + ("; …" if len(recorded) > 10 else "")
        message = (
            f"no recorded interaction matches {asked} "
            f"(matched on method, path with query, and body); "
            f"the cassette holds {len(self.cassette.interactions)} recorded "
            f"request{'' if len(self.cassette.interactions) == 1 else 's'}: "
            f"{listing or 'none'}"
        )
        payload = {
            "error": {
                "message": message,
                "type": "not_found_error",
                "status": 404,
                "request": {
                    "method": request.method,
                    "path": request.raw_path,
                    "body": _excerpt(body, 200),
                },
                "recorded": recorded[:100],
            }
        }
        return web.json_response(payload, status=404)


async def _sleep_until(deadline: float) -> None:
    # Loop until the clock says so: a timer may fire a hair early, and a
    # replay "at the recorded pace" must never run ahead of the recording.
    while (remaining := deadline - time.monotonic()) > 0:  # noqa: ASYNC110
        await asyncio.sleep(remaining)


# -- recording -----------------------------------------------------------------


@dataclass
class _Exchange:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    form: _FormReader | None = None  # an upload's body, read as it was relayed
    status: int = 0
    reason: str | None = None
    response_headers: list[tuple[str, str]] | None = None
    head_at: float = 0.0
    chunks: list[tuple[float, bytes]] | None = None
    complete: bool = False


class Recorder:
    """A recording proxy on loopback: point clients at ``base_url``; the file is written on exit.

    ``upstream`` defaults to ``HANDINGER_BASE_URL``, else the public service.
    ``path`` may be ``None`` to keep the recording in memory only
    (:attr:`cassette`). ``async with`` runs the proxy on the current asyncio
    loop; ``with`` (and ``async with`` under trio) in a background thread.

    Never written: the ``authorization``, ``proxy-authorization``, ``cookie``,
    ``set-cookie`` and ``x-api-key`` headers, any header whose value holds a
    key the proxy has seen (or one given in ``secrets``, or
    ``HANDINGER_API_KEY``), and any occurrence of such a key of 8 characters
    or more in a body or a path (replaced by ``<redacted>``).

    >>> rec = Recorder(None, upstream="http://127.0.0.1:8787")
    >>> rec.upstream
    'http://127.0.0.1:8787'
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        upstream: str | None = None,
        *,
        secrets: Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.path = Path(path) if path is not None else None
        chosen = upstream or os.environ.get("HANDINGER_BASE_URL") or DEFAULT_UPSTREAM
        self.upstream = chosen.rstrip("/")
        self.host = host
        self.port = port
        self._secrets = {s for s in secrets if s}
        env_key = os.environ.get("HANDINGER_API_KEY")
        if env_key:
            self._secrets.add(env_key)
        self._exchanges: list[_Exchange] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._thread: LoopThread | None = None

    def __repr__(self) -> str:
        return f"Recorder(upstream={_public_url(self.upstream)!r}, path={self.path!r})"

    @property
    def base_url(self) -> str:
        """Where clients send their requests while recording."""
        if not self.port:
            raise RuntimeError("the recorder is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def cassette(self) -> Cassette:
        """What was recorded so far, credentials removed."""
        secrets = self._secrets
        long_secrets = sorted((s for s in secrets if len(s) >= _MIN_SECRET_LENGTH), key=len)[::-1]
        interactions = [
            _interaction(exchange, secrets, long_secrets)
            for exchange in list(self._exchanges)
            if exchange.response_headers is not None
        ]
        return Cassette(upstream=_public_url(self.upstream), interactions=interactions)

    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        """Write the cassette to ``path`` (default: the recorder's own path)."""
        target = path if path is not None else self.path
        if target is None:
            raise ValueError("no path to save the cassette to")
        self.cassette.save(target)

    # -- serving -----------------------------------------------------------

    async def start(self) -> None:
        """Start the proxy on the current asyncio loop."""
        if under_trio():
            raise RuntimeError("under trio, use 'async with Recorder(...)' or 'with Recorder(...)'")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            # Relay the bytes as they are: a compressed body stays compressed.
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._proxy)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop the proxy (responses still being relayed are kept as they stand)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> Recorder:
        if under_trio():
            await anyio.to_thread.run_sync(self.__enter__)
        else:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._thread is not None:
            await anyio.to_thread.run_sync(self.__exit__, exc_type, exc, tb)
            return
        await self.stop()
        if self.path is not None:
            self.save()

    def __enter__(self) -> Recorder:
        self._thread = LoopThread("handinger-recorder")
        self._thread.start(self.start, self.stop)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None
        if self.path is not None:
            self.save()

    # -- the proxy -------------------------------------------------------------

    def _learn_secrets(self, headers: Mapping[str, str]) -> None:
        for name in ("authorization", "proxy-authorization"):
            value = headers.get(name)
            if value:
                self._secrets.add(value)
                credential = value.partition(" ")[2]
                if credential.strip():
                    self._secrets.add(credential.strip())
        for name in ("x-api-key", "cookie"):
            value = headers.get(name)
            if value:
                self._secrets.add(value)

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        self._learn_secrets(request.headers)
        forwarded = _forwarded_request_headers(request.headers)
        form = _FormReader.of(request.headers.get("content-type"))
        payload: bytes | AsyncIterator[bytes] | None
        if form is None:
            body = await request.read()
            payload = body or None
        else:
            # An upload goes on as it arrives, read on the way: never whole in memory.
            body, payload = b"", _relayed(request.content, form)
            if "content-length" in request.headers:
                forwarded["Content-Length"] = request.headers["content-length"]
        exchange = _Exchange(
            method=request.method,
            path=request.raw_path,
            headers={
                name: request.headers[name]
                for name in RECORDED_REQUEST_HEADERS
                if name in request.headers
            },
            body=body,
            form=form,
        )
        # The slot is taken on arrival: interactions keep the order requests came in.
        self._exchanges.append(exchange)
        assert self._session is not None
        try:
            upstream = await self._session.request(
                request.method,
                self.upstream + request.raw_path,
                headers=forwarded,
                data=payload,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            self._exchanges.remove(exchange)
            message = f"recording proxy: cannot reach {_public_url(self.upstream)}: {exc!r}"
            return web.json_response(
                {"error": {"message": message, "type": "proxy_error", "status": 502}},
                status=502,
            )
        exchange.status, exchange.reason = upstream.status, upstream.reason
        exchange.head_at = time.monotonic() - started
        headers = [
            (str(name), value)  # a plain str: aiohttp's header names are a str subclass
            for name, value in upstream.headers.items()
            if name.lower() not in _HOP_BY_HOP
        ]
        exchange.response_headers = headers
        exchange.chunks = []
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in headers:
            response.headers.add(name, value)
        try:
            await response.prepare(request)
            await self._relay(upstream, response, exchange, started)
        except ConnectionError:
            pass  # the client left; what it was sent is recorded
        finally:
            upstream.close()
        if not exchange.complete and request.transport is not None:
            # The upstream body broke off: so does ours, as it would without the proxy.
            request.transport.abort()
        return response

    @staticmethod
    async def _relay(
        upstream: aiohttp.ClientResponse,
        response: web.StreamResponse,
        exchange: _Exchange,
        started: float,
    ) -> None:
        assert exchange.chunks is not None
        while True:
            try:
                data = await upstream.content.readany()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return
            if not data:
                break
            exchange.chunks.append((time.monotonic() - started, data))
            await response.write(data)
        exchange.complete = True
        await response.write_eof()


async def _relayed(content: aiohttp.StreamReader, form: _FormReader) -> AsyncIterator[bytes]:
    async for chunk in content.iter_any():
        form.feed(chunk)
        yield chunk


def _forwarded_request_headers(headers: Mapping[str, str]) -> dict[str, str]:
    dropped = _HOP_BY_HOP | {"host", "accept-encoding", "expect"}
    out = {name: value for name, value in headers.items() if name.lower() not in dropped}
    # Uncompressed bodies keep the cassette readable; a service that compresses
    # anyway is relayed (and recorded) as it is.
    out["Accept-Encoding"] = "identity"
    return out


def _public_url(url: str) -> str:
    # A base URL may carry user:password@; that is a credential too.
    parsed = yarl.URL(url)
    if parsed.user is None and parsed.password is None:
        return url
    return str(parsed.with_user(None))


def _holds_secret(value: str, secrets: set[str], long_secrets: list[str]) -> bool:
    if value in secrets or value.partition(" ")[2].strip() in secrets:
        return True
    return any(secret in value for secret in long_secrets)


def _redact(data: bytes, long_secrets: list[str]) -> bytes:
    for secret in long_secrets:
        data = data.replace(secret.encode(), _REDACTED.encode())
    return data


def _redact_text(text: str, long_secrets: list[str]) -> str:
    for secret in long_secrets:
        text = text.replace(secret, _REDACTED)
    return text


def _interaction(exchange: _Exchange, secrets: set[str], long_secrets: list[str]) -> Interaction:
    headers = {
        name: value
        for name, value in exchange.headers.items()
        if not _holds_secret(value, secrets, long_secrets)
    }
    path = _redact_text(exchange.path, long_secrets)
    request = RecordedRequest(method=exchange.method, path=path, headers=headers)
    body = _redact(exchange.body, long_secrets)
    if exchange.form is not None:
        form = exchange.form.form()
        request.form = RecordedForm(
            fields=[(name, _redact_text(value, long_secrets)) for name, value in form.fields],
            files=form.files,
        )
        # The boundary changes with every upload, and no body is kept to need it.
        headers["content-type"] = "multipart/form-data"
    elif body:
        try:
            request.json = msgspec.json.decode(body)
        except msgspec.DecodeError:
            request.text, request.base64 = _text_or_base64(body)
    response = RecordedResponse(
        status=exchange.status,
        reason=exchange.reason,
        headers=[
            (name, value)
            for name, value in exchange.response_headers or []
            if name.lower() not in _CREDENTIAL_HEADERS
            and not _holds_secret(value, secrets, long_secrets)
        ],
        head_at=round(exchange.head_at, 6),
        chunks=[Chunk.of(at, _redact(data, long_secrets)) for at, data in exchange.chunks or []],
        complete=exchange.complete,
    )
    return Interaction(request=request, response=response)


# -- record when possible, replay otherwise --------------------------------------


@dataclass(repr=False)
class CassetteSession:
    """Where to point a client while a cassette records or replays.

    ``mode`` is ``"record"`` or ``"replay"``; ``client_options()`` gives the
    keyword arguments for :class:`~handinger_stream.AsyncHandinger`.
    """

    mode: Literal["record", "replay"]
    path: Path
    base_url: str
    api_key: str
    _keep: bool = field(default=True, init=False, compare=False)

    def __repr__(self) -> str:
        return (
            f"CassetteSession(mode={self.mode!r}, path={str(self.path)!r}, "
            f"base_url={self.base_url!r})"
        )

    def client_options(self) -> ClientOptions:
        """Keyword arguments for ``AsyncHandinger(**session.client_options())``."""
        return {"api_key": self.api_key, "base_url": self.base_url}

    def discard(self) -> None:
        """Do not write what this session recorded (the test failed, say); a replay ignores it.

        >>> session = CassetteSession("replay", Path("c.json"), "http://127.0.0.1:1", "k")
        >>> session.discard()
        """
        self._keep = False


REPLAY_API_KEY = "cassette-replay"


def _how_to_record(path: str | os.PathLike[str]) -> str:
    """The message for a missing cassette: how to make it."""
    return (
        f"no cassette at {os.fspath(path)}: to record it, run this once with HANDINGER_API_KEY "
        f"set (and HANDINGER_BASE_URL for a service other than {DEFAULT_UPSTREAM}); "
        "the recording is written there, and later runs replay it offline"
    )


@contextmanager
def use_cassette(
    path: str | os.PathLike[str],
    *,
    api_key: str | None = None,
    upstream: str | None = None,
    realtime: bool = False,
) -> Iterator[CassetteSession]:
    """Record to ``path`` when an API key is at hand and the file is missing; replay it otherwise.

    ``api_key`` defaults to ``HANDINGER_API_KEY``, ``upstream`` to
    ``HANDINGER_BASE_URL`` or the public service. Both the recording proxy and
    the replaying emulator run in a background thread, so this serves sync,
    asyncio and trio code. Replaying a file that does not exist raises
    :class:`CassetteNotFoundError` saying how to record it.

    A recording is written only when the block ends without an exception,
    something was recorded, and :meth:`CassetteSession.discard` was not
    called: a failed attempt is recorded again next time rather than replayed.

    >>> with use_cassette("cassettes/weather.json") as session:  # doctest: +SKIP
    ...     client = AsyncHandinger(**session.client_options())
    """
    from .emulator import Emulator

    target = Path(path)
    key = api_key if api_key is not None else os.environ.get("HANDINGER_API_KEY")
    if key and not target.exists():
        with Recorder(None, upstream=upstream, secrets=[key]) as recorder:
            session = CassetteSession("record", target, recorder.base_url, key)
            yield session
        cassette = recorder.cassette
        if session._keep and cassette.interactions:
            cassette.save(target)
        return
    if not target.exists():
        raise CassetteNotFoundError(_how_to_record(target))
    emulator: Emulator
    with Emulator(cassette=target, realtime=realtime) as emulator:
        yield CassetteSession("replay", target, emulator.base_url, REPLAY_API_KEY)
