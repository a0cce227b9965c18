"""The HTTP seam: one small interface, an aiohttp and an httpx implementation.

Both hand the stream raw body bytes as they arrive, so everything above this
module (SSE decoding, events, the reducer) behaves the same whichever is used.
aiohttp is the default: measured here it costs about half the CPU per live
read of httpx. httpx serves callers' own clients and trio, where aiohttp
cannot run.

Everything a server sends is treated as hostile, the same way on both:

- an error never shows the request's headers or a credential: the
  libraries' exceptions (aiohttp's ``repr`` shows every header, the API key
  among them) are retold through :func:`~handinger_stream.errors.redact`, and
  chained as a :class:`LibraryError` carrying that text, never themselves;
- a body read whole (:meth:`Response.read`) stops at ``max_body_bytes``
  (:data:`MAX_BODY_BYTES`), counted after decompression;
- the response headers must be complete within ``timeout`` seconds of the
  request being sent, however slowly they trickle in;
- redirects are not followed (the API key would go on with them): a 3xx is
  an :class:`~handinger_stream.errors.APIStatusError` naming where it pointed;
- a URL with ``user:password@``, or a header value that is not one line of
  ASCII, is refused before anything is sent.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import types
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol

import aiohttp
import anyio
import httpx
import sniffio

from .._loop_thread import under_trio
from ..errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    HandingerError,
    InvalidRequestError,
    ResponseTooLargeError,
    excerpt,
    redact,
    remember_secret,
)

__all__ = [
    "MAX_BODY_BYTES",
    "AiohttpTransport",
    "Body",
    "HttpxTransport",
    "LibraryError",
    "PerLoop",
    "Response",
    "Transport",
    "TransportName",
    "close_soon",
]

log = logging.getLogger("handinger_stream")

CONNECT_TIMEOUT = 5.0
MAX_BODY_BYTES = 32 * 1024 * 1024
"""The most :meth:`Response.read` takes (after decompression): twice a stream's
default event bound, so a Worker too big for this is too big as an event too."""
TransportName = Literal["aiohttp", "httpx"]


class Response(Protocol):
    """A response whose body is read piece by piece."""

    status: int
    headers: Mapping[str, str]

    async def read_chunk(self) -> bytes:
        """The next bytes of the body as they arrive; ``b""`` at its end."""
        ...

    async def read(self) -> bytes:
        """The whole (rest of the) body, at most ``max_body_bytes`` of it
        (else :class:`~handinger_stream.errors.ResponseTooLargeError`)."""
        ...

    async def aclose(self) -> None:
        """Release the connection; safe to call twice."""
        ...

    def abort(self) -> bool:
        """Close the connection at once, without awaiting, where the library can; whether it did."""
        ...


class Body(Protocol):
    """A request body sent piece by piece, never whole in memory (an upload).

    ``length`` is its size in bytes when known (sent as ``Content-Length``;
    otherwise the body goes chunked). Each ``chunks()`` starts from the beginning.
    """

    content_type: str
    length: int | None

    def chunks(self) -> AsyncIterator[bytes]: ...


class Transport(Protocol):
    @property
    def name(self) -> str: ...

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | Body | None,
        timeout: float | None,  # noqa: ASYNC109 (the request's own, passed on to the library)
        stream: bool,
    ) -> Response: ...

    async def aclose(self) -> None: ...


def _body_headers(headers: Mapping[str, str], body: bytes | Body | None) -> dict[str, str]:
    out = dict(headers)
    if body is not None and not isinstance(body, bytes):
        out["content-type"] = body.content_type
        if body.length is not None:
            out["content-length"] = str(body.length)
    return out


# -- what a request may carry, and what its errors may say ---------------------

# Headers whose values are credentials: remembered, so that no error shows them.
_CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "x-api-key", "api-key", "cookie")


def _checked(url: str, headers: Mapping[str, str]) -> None:
    """Refuse what cannot be sent safely; remember the credentials being sent.

    A URL's ``user:password@`` is refused: the libraries would turn it into an
    ``Authorization`` header (aiohttp refuses the pair; httpx replaces the API
    key with it). A header value must be one line of printable ASCII: httpx
    raises ``UnicodeEncodeError`` on anything else, and a line end would
    split the header.
    """
    _, sep, rest = url.partition("://")
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if sep and "@" in authority:
        raise InvalidRequestError(
            f"the URL {redact(url)} holds credentials (user:password@): the API key is "
            "sent as a header; give the base URL without them"
        )
    for name, value in headers.items():
        if not (value.isascii() and value.isprintable()):
            raise InvalidRequestError(
                f"the {name} header's value is not one line of printable ASCII; not sent"
            )
        if name.lower() in _CREDENTIAL_HEADERS:
            remember_secret(value)
            remember_secret(value.partition(" ")[2])


class LibraryError(Exception):
    """What aiohttp or httpx raised, retold without headers or credentials.

    The cause of our errors instead of the library's own exception, whose
    ``repr`` may show the request's headers (aiohttp's does, the API key
    among them). Its traceback is the original's.
    """


def _retold(exc: BaseException) -> LibraryError:
    kind = type(exc)
    cause = LibraryError(f"{kind.__module__}.{kind.__qualname__}: {_text_of(exc)}")
    return cause.with_traceback(exc.__traceback__)


def _text_of(exc: BaseException) -> str:
    """A library exception's text, safe to show: never its ``repr``, which may list headers."""
    if isinstance(exc, aiohttp.TooManyRedirects):
        return f"too many redirects ({len(exc.history)})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        exc = exc.os_error
    text = str(exc) or type(exc).__name__
    return redact(excerpt(text, 300))


def _redirected(status: int, headers: Mapping[str, str]) -> APIStatusError:
    location = headers.get("location")
    to = f" to {excerpt(redact(location), 200)!r}" if location else ""
    return APIStatusError(
        f"the server redirected{to}: redirects are not followed, so that the API key "
        "goes nowhere but to the base URL; give the base URL the API answers at",
        status_code=status,
    )


class _HeadersDeadline:
    """The time the response headers may take, counted from the request's last byte.

    A server that sends its headers a byte at a time never trips a read
    timeout (each read brings something); this bounds the whole wait. An
    upload's time does not count: the clock starts when its body ends.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.scope = anyio.CancelScope()

    def start(self) -> None:
        if self.seconds is not None:
            self.scope.deadline = anyio.current_time() + self.seconds

    def body(self, body: bytes | Body | None) -> bytes | AsyncIterator[bytes] | None:
        """The body to hand the library; the clock starts once it is all produced."""
        if body is None or isinstance(body, bytes):
            self.start()
            return body
        return _Produced(body.chunks(), self.start)

    def expired(self) -> APITimeoutError | None:
        if not self.scope.cancelled_caught:
            return None
        return APITimeoutError(
            f"the response headers did not arrive within {self.seconds} s of the request"
        )


class _Produced:
    """An upload's chunks, telling ``done`` when the last one has been taken."""

    def __init__(self, chunks: AsyncIterator[bytes], done: Callable[[], None]) -> None:
        self._chunks = chunks
        self._done = done

    def __aiter__(self) -> _Produced:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            self._done()
            raise

    async def aclose(self) -> None:
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            await close()


async def _read_whole(response: Response, limit: int, url: str) -> bytes:
    """The rest of ``response``'s body, read a piece at a time up to ``limit`` bytes."""
    length = response.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and (len(length) > 18 or int(length) > limit):
        raise ResponseTooLargeError(status_code=response.status, limit=limit, url=url)
    pieces: list[bytes] = []
    size = 0
    while chunk := await response.read_chunk():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLargeError(status_code=response.status, limit=limit, url=url)
        pieces.append(chunk)
    return b"".join(pieces)


# -- aiohttp -------------------------------------------------------------


def _aiohttp_read_failure(exc: BaseException) -> HandingerError:
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return APITimeoutError("timed out waiting for response data")
    return APIConnectionError(f"connection broke while reading: {_text_of(exc)}", request_sent=True)


class _AiohttpResponse:
    """A response body read as it arrives.

    A stream's read timeout is a watchdog of our own: aiohttp's ``sock_read``
    cancels and schedules a timer on every chunk received, which on a live
    stream (one event per read) cost about 15 µs per event; the watchdog is one
    timer per ``read_timeout`` seconds, and a read only notes when it started.
    """

    __slots__ = (
        "__weakref__",
        "_content",
        "_limit",
        "_loop",
        "_read_timeout",
        "_resp",
        "_url",
        "_waiting_since",
        "_watchdog",
        "headers",
        "status",
    )

    def __init__(
        self,
        resp: aiohttp.ClientResponse,
        read_timeout: float | None = None,
        *,
        limit: int = MAX_BODY_BYTES,
        url: str = "",
    ) -> None:
        self._resp = resp
        self._limit = limit
        self._url = redact(url)
        self._content = resp.content
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers
        self._loop = asyncio.get_running_loop()
        self._read_timeout = read_timeout
        self._waiting_since: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        connection = resp.connection
        if read_timeout and connection is not None and connection.protocol is not None:
            connection.protocol.read_timeout = None  # from the next chunk on: the watchdog's
            self._watchdog = self._loop.call_at(self._loop.time() + read_timeout, self._watch)

    def _watch(self) -> None:
        timeout = self._read_timeout
        assert timeout is not None
        now = self._loop.time()
        since = self._waiting_since
        if since is not None and now - since >= timeout:
            self._watchdog = None
            # What aiohttp's own sock_read timeout does: the waiting read raises.
            self._content.set_exception(
                aiohttp.ServerTimeoutError("Timeout on reading data from socket")
            )
            return
        if since is None and self._content.at_eof():
            self._watchdog = None  # read to its end: nothing left to wait for
            return
        # Not waiting: a read that starts later is checked at most one timeout late,
        # then exactly (at its start + timeout).
        start = now if since is None else since
        self._watchdog = self._loop.call_at(start + timeout, self._watch)

    def _stop_watching(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    async def read_chunk(self) -> bytes:
        # Once per read of a live stream: the error mapping is inlined, not a context manager.
        self._waiting_since = self._loop.time()
        try:
            return await self._content.readany()
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            if not isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
                received = self._salvage()
                if received:
                    return received  # the next read raises the error again
            failure, cause = _aiohttp_read_failure(exc), _retold(exc)
        finally:
            self._waiting_since = None
        # Raised outside the handler: the library's exception must not become its context.
        raise failure from cause

    def _salvage(self) -> bytes:
        """The bytes that arrived before the connection broke, if any were left unread.

        aiohttp's ``readany`` raises a broken connection's error before it hands
        over what it had already buffered: the last events before a cut would be
        lost, and a stream that resumes by event id would resume from too far
        back. The reader's buffer is private, so this is done with care: the
        error is set aside for one read and put back.
        """
        content = self._content
        if not getattr(content, "_buffer", None):
            return b""
        error = content.exception()
        content._exception = None
        try:
            return content.read_nowait(-1)
        finally:
            content._exception = error

    async def read(self) -> bytes:
        return await _read_whole(self, self._limit, self._url)

    async def aclose(self) -> None:
        self._stop_watching()
        # close(), not release(): an unfinished stream must not go back to the pool.
        if not self._resp.closed:
            if self._resp.content.at_eof():
                self._resp.release()
            else:
                self._resp.close()

    def abort(self) -> bool:
        self._stop_watching()
        self._resp.close()
        return True


class AiohttpTransport:
    """The default transport. Pass ``session`` to use your own (never closed by us)."""

    name = "aiohttp"

    def __init__(
        self, session: aiohttp.ClientSession | None = None, *, max_body_bytes: int | None = None
    ) -> None:
        self._session = session
        self._owns_session = session is None
        self.max_body_bytes = max_body_bytes or MAX_BODY_BYTES
        # Responses not yet closed: closing the transport closes them too (a stream
        # left half read when its event loop ends must not hold a connection).
        self._open: weakref.WeakSet[_AiohttpResponse] = weakref.WeakSet()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No overall limit: one process may follow a thousand streams.
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | Body | None,
        timeout: float | None,  # noqa: ASYNC109 (the request's own, passed on to the library)
        stream: bool,
    ) -> Response:
        _checked(url, headers)
        session = self._get_session()
        client_timeout = aiohttp.ClientTimeout(
            total=None if stream else timeout,
            sock_connect=CONNECT_TIMEOUT,
            sock_read=timeout,
        )
        deadline = _HeadersDeadline(timeout)
        with deadline.scope:
            data = deadline.body(body)
            try:
                resp = await session.request(
                    method,
                    url,
                    headers=_body_headers(headers, body),
                    data=data,
                    timeout=client_timeout,
                    allow_redirects=False,
                )
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError) as exc:
                failure: HandingerError | None = _aiohttp_send_failure(exc)
                cause: LibraryError | None = _retold(exc)
            else:
                failure, cause = None, None
        if (expired := deadline.expired()) is not None:
            raise expired
        if failure is not None:
            # Raised outside the handler: the library's exception must not become its context.
            raise failure from (None if isinstance(failure, InvalidRequestError) else cause)
        assert resp is not None
        if 300 <= resp.status < 400:
            resp.close()
            raise _redirected(resp.status, resp.headers)
        response = _AiohttpResponse(
            resp, timeout if stream else None, limit=self.max_body_bytes, url=url
        )
        self._open.add(response)
        return response

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            for response in list(self._open):
                response.abort()
            await session.close()


def _aiohttp_send_failure(exc: BaseException) -> HandingerError:
    """Our error for what ``session.request`` raised: nothing of it but safe text."""
    body_failure = _body_failure(exc)
    if body_failure is not None:
        return body_failure
    if isinstance(exc, aiohttp.ClientConnectorError):
        return APIConnectionError(f"cannot connect: {_text_of(exc)}")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return APITimeoutError("timed out connecting", request_sent=False)
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return APITimeoutError()
    if isinstance(exc, ValueError) and not isinstance(exc, aiohttp.ClientError):
        return InvalidRequestError(f"the request could not be made: {_text_of(exc)}")
    return APIConnectionError(f"connection error: {_text_of(exc)}", request_sent=True)


def _body_failure(exc: BaseException) -> InvalidRequestError | None:
    """The upload's own error (a file that changed as it was sent), which the
    libraries wrap in a connection error, if that is what this one is."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, InvalidRequestError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


# -- httpx ---------------------------------------------------------------


class _HttpxResponse:
    __slots__ = ("_chunks", "_limit", "_resp", "_url", "headers", "status")

    def __init__(self, resp: httpx.Response, *, limit: int = MAX_BODY_BYTES, url: str = "") -> None:
        self._resp = resp
        self._limit = limit
        self._url = redact(url)
        self.status = resp.status_code
        self.headers: Mapping[str, str] = resp.headers
        self._chunks: AsyncIterator[bytes] | None = None

    async def read_chunk(self) -> bytes:
        if self._chunks is None:
            self._chunks = self._resp.aiter_bytes()
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return b""
        except httpx.TimeoutException as exc:
            failure: HandingerError = APITimeoutError("timed out waiting for response data")
            cause = _retold(exc)
        except (httpx.HTTPError, httpx.StreamError) as exc:
            failure = APIConnectionError(
                f"connection broke while reading: {_text_of(exc)}", request_sent=True
            )
            cause = _retold(exc)
        # Raised outside the handler: the library's exception must not become its context.
        raise failure from cause

    async def read(self) -> bytes:
        return await _read_whole(self, self._limit, self._url)

    async def aclose(self) -> None:
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            # httpx reads a body through a chain of async generators; closing the
            # outermost leaves the inner ones to the garbage collector, which trio
            # reports as unfinished generators (httpx PR #3777). Close each one.
            for generator in _suspended_chain(chunks):
                await generator.aclose()
        await self._resp.aclose()

    def abort(self) -> bool:
        return False  # httpx closes only by awaiting


def _httpx_send_failure(exc: BaseException) -> HandingerError:
    """Our error for what ``client.send`` raised: nothing of it but safe text."""
    body_failure = _body_failure(exc)
    if body_failure is not None:
        return body_failure
    if isinstance(exc, httpx.ConnectTimeout):
        return APITimeoutError("timed out connecting", request_sent=False)
    if isinstance(exc, httpx.ConnectError):
        return APIConnectionError(f"cannot connect: {_text_of(exc)}")
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError()
    return APIConnectionError(f"connection error: {_text_of(exc)}", request_sent=True)


def _suspended_chain(outer: Any) -> list[Any]:
    """The async generators an iteration is suspended in, outermost first."""
    chain = []
    generator = outer
    while isinstance(generator, types.AsyncGeneratorType) and generator.ag_frame is not None:
        chain.append(generator)
        # A suspended generator holds the one it iterates on its frame's value stack.
        inner = (r for r in gc.get_referents(generator) if isinstance(r, types.AsyncGeneratorType))
        generator = next(inner, None)
    return chain


class HttpxTransport:
    """The httpx transport. Pass ``client`` to use your own (never closed by us)."""

    name = "httpx"

    def __init__(
        self, client: httpx.AsyncClient | None = None, *, max_body_bytes: int | None = None
    ) -> None:
        self._client = client
        self._owns_client = client is None
        self.max_body_bytes = max_body_bytes or MAX_BODY_BYTES

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=100)
            self._client = httpx.AsyncClient(limits=limits)
        return self._client

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | Body | None,
        timeout: float | None,  # noqa: ASYNC109 (the request's own, passed on to the library)
        stream: bool,
    ) -> Response:
        _checked(url, headers)
        client = self._get_client()
        deadline = _HeadersDeadline(timeout)
        with deadline.scope:
            request = client.build_request(
                method,
                url,
                headers=_body_headers(headers, body),
                content=deadline.body(body),
                timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
            )
            try:
                # Never followed, whatever the caller's client says: the key would go along.
                resp = await client.send(request, stream=True, follow_redirects=False)
            except (httpx.HTTPError, httpx.StreamError, OSError) as exc:
                failure: HandingerError | None = _httpx_send_failure(exc)
                cause: LibraryError | None = _retold(exc)
            else:
                failure, cause = None, None
        if (expired := deadline.expired()) is not None:
            raise expired
        if failure is not None:
            # Raised outside the handler: the library's exception must not become its context.
            raise failure from (None if isinstance(failure, InvalidRequestError) else cause)
        if 300 <= resp.status_code < 400:
            await resp.aclose()
            raise _redirected(resp.status_code, resp.headers)
        return _HttpxResponse(resp, limit=self.max_body_bytes, url=url)

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def transport_for(http_client: Any, transport: str | None, library: str) -> Transport:
    """Choose the transport from what the caller passed and the running event loop."""
    if isinstance(http_client, httpx.AsyncClient):
        return HttpxTransport(http_client)
    if http_client is not None and not isinstance(http_client, aiohttp.ClientSession):
        raise TypeError(
            "http_client must be an httpx.AsyncClient or an aiohttp.ClientSession, "
            f"not {type(http_client).__name__}"
        )
    if transport not in (None, "aiohttp", "httpx"):
        raise InvalidRequestError(f"unknown transport {transport!r}: use 'aiohttp' or 'httpx'")
    if http_client is None and (transport == "httpx" or (transport is None and library == "trio")):
        return HttpxTransport()
    if library == "trio":
        raise InvalidRequestError(
            "the aiohttp transport needs asyncio, and trio is running here: "
            "use transport='httpx' (the default under trio) or pass an httpx.AsyncClient"
        )
    return AiohttpTransport(http_client)


class PerLoop:
    """The transport a client makes itself: one per asyncio event loop, closed with it.

    A connection pool belongs to the event loop that opened it; used from the
    next ``asyncio.run`` it fails ("Event loop is closed") and leaks. So each
    loop gets its own transport, and an async generator parked on that loop
    closes it when the loop finalises its async generators (``asyncio.run``
    does, as does every runner that shuts down cleanly): nothing is left open
    and nothing warns. Under trio the one transport serves every run (its
    sockets are not tied to a run).

    >>> transports = PerLoop(lambda: HttpxTransport())
    >>> transports.get().name
    'httpx'
    """

    def __init__(self, make: Callable[[], Transport]) -> None:
        self._make = make
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[Transport, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()
        self._unbound: Transport | None = None  # trio's

    def get(self) -> Transport:
        """This loop's transport, made (and tied to the loop) on first use."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if not under_trio():
                return self._make()  # nothing to tie it to; it opens nothing until used
            if self._unbound is None:
                self._unbound = self._make()
            return self._unbound
        bound = self._by_loop.get(loop)
        if bound is None:
            transport = self._make()
            guard = self._close_with_loop(loop, transport)
            # Run the generator to its first yield, now: the loop's first-iteration
            # hook registers it, and its shutdown will close it (running the finally).
            try:
                guard.asend(None).send(None)
            except StopIteration:
                pass
            bound = self._by_loop[loop] = (transport, guard)
        return bound[0]

    async def _close_with_loop(
        self, loop: asyncio.AbstractEventLoop, transport: Transport
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if (entry := self._by_loop.get(loop)) is not None and entry[0] is transport:
                del self._by_loop[loop]
            await transport.aclose()

    async def aclose(self) -> None:
        """Close the running loop's transport (the others close as their loops end)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        bound = self._by_loop.get(loop) if loop is not None else None
        if bound is not None:
            await bound[1].aclose()
        unbound, self._unbound = self._unbound, None
        if unbound is not None:
            await unbound.aclose()


_closing: set[Any] = set()


def close_soon(close: Callable[[], Awaitable[None]]) -> None:
    """Run ``close()`` soon on the running event loop, from code that cannot await.

    For finalisers of dropped iterators; errors are logged at DEBUG, since
    nobody is left to report them to.
    """
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return

    async def run() -> None:
        try:
            await close()
        except Exception:
            log.debug("closing an abandoned response failed", exc_info=True)

    if library == "trio":
        import trio

        token = trio.lowlevel.current_trio_token()
        token.run_sync_soon(lambda: trio.lowlevel.spawn_system_task(run))
    else:
        task = asyncio.get_running_loop().create_task(run())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
