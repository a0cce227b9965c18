"""Recorded sessions (cassettes): what a Handinger service said, replayed offline byte for byte.

A :class:`Recorder` is a small HTTP proxy on loopback. Point any client at its
``base_url`` (ours on either transport, curl, your app): every request goes on
to the upstream service and every response comes back piece by piece as it
arrives, so event streams stay live. Each exchange is kept: the request's
method, path, body and a few headers; the response's status, headers and
every piece of its body with its time offset. The cassette is written as JSON when
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
import bisect
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiohttp
from aiohttp import web

from .._redact import redact_url
from ..client.base import DEFAULT_BASE_URL
from .cassette_format import (
    CASSETTE_VERSION,
    BodyPiece,
    Cassette,
    CassetteError,
    CassetteNotFoundError,
    Chunk,
    FormReader,
    Interaction,
    RecordedFile,
    RecordedForm,
    RecordedRequest,
    RecordedResponse,
    request_key,
)
from .emulator import ClientOptions, Emulator
from .loopback import LoopbackServer

__all__ = [
    "CASSETTE_VERSION",
    "BodyPiece",
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

DEFAULT_UPSTREAM = DEFAULT_BASE_URL
# The only request headers kept: they change what the service answers.
RECORDED_REQUEST_HEADERS = ("accept", "content-type", "last-event-id")
# Hop-by-hop headers belong to one connection, not to the exchange (RFC 9110 §7.6.1);
# content-length goes too, since the body is relayed in pieces as it comes.
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


# -- recording -----------------------------------------------------------------


@dataclass
class _Exchange:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    form: FormReader | None = None  # an upload's body, read as it was relayed
    status: int = 0
    reason: str | None = None
    response_headers: list[tuple[str, str]] | None = None
    head_at: float = 0.0
    pieces: list[tuple[float, bytes]] | None = None
    complete: bool = False


class Recorder(LoopbackServer):
    """A recording proxy on loopback: point clients at ``base_url``; the file is written on exit.

    ``upstream`` defaults to ``HANDINGER_BASE_URL``, else the public service.
    ``path`` may be ``None`` to keep the recording in memory only
    (:attr:`cassette`). ``async with`` runs the proxy on the current asyncio
    loop; ``with`` (and ``async with`` under trio) in a background thread.

    Never written: the ``authorization``, ``proxy-authorization``, ``cookie``,
    ``set-cookie`` and ``x-api-key`` headers, any header whose value holds a
    key the proxy has seen (or one given in ``secrets``, or
    ``HANDINGER_API_KEY``), and any occurrence of such a key of 8 characters
    or more in a body or a path (replaced by ``<redacted>``), even one that
    arrived split across two pieces of a response.

    >>> rec = Recorder(None, upstream="http://127.0.0.1:8787")
    >>> rec.upstream
    'http://127.0.0.1:8787'
    """

    _kind, _usage = "recorder", "Recorder(...)"

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        upstream: str | None = None,
        *,
        secrets: Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.path = Path(path) if path is not None else None
        chosen = upstream or os.environ.get("HANDINGER_BASE_URL") or DEFAULT_UPSTREAM
        self.upstream = chosen.rstrip("/")
        self._secrets = {s for s in secrets if s}
        env_key = os.environ.get("HANDINGER_API_KEY")
        if env_key:
            self._secrets.add(env_key)
        self._exchanges: list[_Exchange] = []
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"Recorder(upstream={redact_url(self.upstream)!r}, path={self.path!r})"

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
        return Cassette(upstream=redact_url(self.upstream), interactions=interactions)

    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        """Write the cassette to ``path`` (default: the recorder's own path)."""
        target = path if path is not None else self.path
        if target is None:
            raise ValueError("no path to save the cassette to")
        self.cassette.save(target)

    # -- serving (the lifecycle is LoopbackServer's) ---------------------------

    async def _app(self) -> web.Application:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            # Relay the bytes as they are: a compressed body stays compressed.
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._proxy)
        return app

    async def _stopped(self) -> None:
        # Responses still being relayed are kept as they stand.
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _finished(self) -> None:
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
        exchange, forwarded, payload = await _exchange_of(request)
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
            # str, not repr: an aiohttp exception's repr may show what was sent.
            problem = f"{type(exc).__name__}: {exc}"
            message = f"recording proxy: cannot reach {redact_url(self.upstream)}: {problem}"
            return web.json_response(
                {"error": {"message": message, "type": "proxy_error", "status": 502}},
                status=502,
            )
        return await _pass_on(request, upstream, exchange, started)


async def _exchange_of(
    request: web.Request,
) -> tuple[_Exchange, dict[str, str], bytes | AsyncIterator[bytes] | None]:
    """The exchange to record for ``request``, and the headers and body to send upstream."""
    forwarded = _forwarded_request_headers(request.headers)
    form = FormReader.of(request.headers.get("content-type"))
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
    return exchange, forwarded, payload


async def _pass_on(
    request: web.Request, upstream: aiohttp.ClientResponse, exchange: _Exchange, started: float
) -> web.StreamResponse:
    """Send the upstream response on to the client as it arrives, recording it; close it."""
    exchange.status, exchange.reason = upstream.status, upstream.reason
    exchange.head_at = time.monotonic() - started
    headers = [
        (str(name), value)  # a plain str: aiohttp's header names are a str subclass
        for name, value in upstream.headers.items()
        if name.lower() not in _HOP_BY_HOP
    ]
    exchange.response_headers = headers
    exchange.pieces = []
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    for name, value in headers:
        response.headers.add(name, value)
    try:
        await response.prepare(request)
        await _relay(upstream, response, exchange, started)
    except ConnectionError:
        pass  # the client left; what it was sent is recorded
    finally:
        upstream.close()
    if not exchange.complete and request.transport is not None:
        # The upstream body broke off: so does ours, as it would without the proxy.
        request.transport.abort()
    return response


async def _relay(
    upstream: aiohttp.ClientResponse,
    response: web.StreamResponse,
    exchange: _Exchange,
    started: float,
) -> None:
    assert exchange.pieces is not None
    while True:
        try:
            data = await upstream.content.readany()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return
        if not data:
            break
        exchange.pieces.append((time.monotonic() - started, data))
        await response.write(data)
    exchange.complete = True
    await response.write_eof()


async def _relayed(content: aiohttp.StreamReader, form: FormReader) -> AsyncIterator[bytes]:
    async for piece in content.iter_any():
        form.feed(piece)
        yield piece


def _forwarded_request_headers(headers: Mapping[str, str]) -> dict[str, str]:
    dropped = _HOP_BY_HOP | {"host", "accept-encoding", "expect"}
    out = {name: value for name, value in headers.items() if name.lower() not in dropped}
    # Uncompressed bodies keep the cassette readable; a service that compresses
    # anyway is relayed (and recorded) as it is.
    out["Accept-Encoding"] = "identity"
    return out


def _holds_secret(value: str, secrets: set[str], long_secrets: list[str]) -> bool:
    if value in secrets or value.partition(" ")[2].strip() in secrets:
        return True
    return any(secret in value for secret in long_secrets)


def _redact(data: bytes, long_secrets: list[str]) -> bytes:
    for secret in long_secrets:
        data = data.replace(secret.encode(), _REDACTED.encode())
    return data


def _redact_pieces(
    pieces: list[tuple[float, bytes]], long_secrets: list[str]
) -> list[tuple[float, bytes]]:
    """A body's pieces with every secret replaced, wherever the pieces cut it.

    Each piece searched alone would keep a key that arrived in two reads, half
    in each. The secrets are found in the whole body; a piece keeps its time
    and its bytes outside them, the piece where a secret starts gets the
    ``<redacted>`` mark, and the rest of the secret leaves the pieces after it.

    >>> _redact_pieces([(0.0, b'{"k": "sk-ab'), (0.1, b'cdefgh"}')], ["sk-abcdefgh"])
    [(0.0, b'{"k": "<redacted>'), (0.1, b'"}')]
    """
    whole = b"".join(data for _, data in pieces)
    spans = _secret_spans(whole, long_secrets)
    if not spans:
        return pieces
    out: list[tuple[float, bytes]] = []
    mark = _REDACTED.encode()
    i = position = 0
    for at, data in pieces:
        start, end = position, position + len(data)
        position = end
        kept: list[bytes] = []
        cursor = start
        while i < len(spans) and spans[i][0] < end:
            span_start, span_end = spans[i]
            if span_start >= start:  # it starts here: the mark goes here
                kept += [whole[cursor:span_start], mark]
            cursor = max(cursor, min(span_end, end))
            if span_end > end:
                break  # it goes on into the next piece
            i += 1
        kept.append(whole[cursor:end])
        out.append((at, b"".join(kept)))
    return out


def _secret_spans(data: bytes, long_secrets: list[str]) -> list[tuple[int, int]]:
    """Where the secrets are in ``data``: sorted, never overlapping, longest secrets first."""
    starts: list[int] = []
    spans: list[tuple[int, int]] = []
    for secret in long_secrets:  # longest first: a key containing another is hidden whole
        needle = secret.encode()
        found = data.find(needle)
        while found >= 0:
            end = found + len(needle)
            at = bisect.bisect(starts, found)
            clear_before = at == 0 or spans[at - 1][1] <= found
            clear_after = at == len(spans) or spans[at][0] >= end
            if clear_before and clear_after:
                starts.insert(at, found)
                spans.insert(at, (found, end))
            found = data.find(needle, found + 1)
    return spans


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
    form: RecordedForm | None = None
    if exchange.form is not None:
        read = exchange.form.form()
        form = RecordedForm(
            fields=[(name, _redact_text(value, long_secrets)) for name, value in read.fields],
            files=read.files,
        )
        # The boundary changes with every upload, and no body is kept to need it.
        headers["content-type"] = "multipart/form-data"
    body = _redact(exchange.body, long_secrets)
    request = RecordedRequest.of(exchange.method, path, headers, b"" if form is not None else body)
    request.form = form
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
        pieces=[
            BodyPiece.of(at, data)
            for at, data in _redact_pieces(exchange.pieces or [], long_secrets)
        ],
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
