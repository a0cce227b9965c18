"""The HTTP seam: one small interface, an aiohttp and an httpx implementation.

Both hand the stream raw body bytes as they arrive, so everything above this
module (SSE decoding, events, the reducer) behaves the same whichever is used.
aiohttp is the default: measured here it costs about half the CPU per live
read of httpx. httpx serves callers' own clients and trio, where aiohttp
cannot run.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import types
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, Protocol

import aiohttp
import httpx
import sniffio

from .._loop_thread import under_trio
from ..errors import APIConnectionError, APITimeoutError, InvalidRequestError

__all__ = [
    "AiohttpTransport",
    "Body",
    "HttpxTransport",
    "PerLoop",
    "Response",
    "Transport",
    "TransportName",
    "close_soon",
]

log = logging.getLogger("handinger_stream")

CONNECT_TIMEOUT = 5.0
TransportName = Literal["aiohttp", "httpx"]


class Response(Protocol):
    """A response whose body is read piece by piece."""

    status: int
    headers: Mapping[str, str]

    async def read_chunk(self) -> bytes:
        """The next bytes of the body as they arrive; ``b""`` at its end."""
        ...

    async def read(self) -> bytes:
        """The whole (rest of the) body."""
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
        timeout: float | None,
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


# -- aiohttp -------------------------------------------------------------


@contextmanager
def _aiohttp_read_errors() -> Iterator[None]:
    try:
        yield
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise APITimeoutError("timed out waiting for response data") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise APIConnectionError(
            f"connection broke while reading: {exc!r}", request_sent=True
        ) from exc


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
        "_loop",
        "_read_timeout",
        "_resp",
        "_waiting_since",
        "_watchdog",
        "headers",
        "status",
    )

    def __init__(self, resp: aiohttp.ClientResponse, read_timeout: float | None = None) -> None:
        self._resp = resp
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
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise APITimeoutError("timed out waiting for response data") from exc
        except (aiohttp.ClientError, OSError) as exc:
            received = self._salvage()
            if received:
                return received  # the next read raises the error again
            raise APIConnectionError(
                f"connection broke while reading: {exc!r}", request_sent=True
            ) from exc
        finally:
            self._waiting_since = None

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
        with _aiohttp_read_errors():
            return await self._resp.read()

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

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._owns_session = session is None
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
        timeout: float | None,
        stream: bool,
    ) -> Response:
        session = self._get_session()
        client_timeout = aiohttp.ClientTimeout(
            total=None if stream else timeout,
            sock_connect=CONNECT_TIMEOUT,
            sock_read=timeout,
        )
        data = body if body is None or isinstance(body, bytes) else body.chunks()
        try:
            resp = await session.request(
                method, url, headers=_body_headers(headers, body), data=data, timeout=client_timeout
            )
        except aiohttp.ClientConnectorError as exc:
            raise APIConnectionError(f"cannot connect: {exc.os_error!r}") from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise APITimeoutError("timed out connecting", request_sent=False) from exc
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise APITimeoutError() from exc
        except (aiohttp.ClientError, OSError) as exc:
            _raise_body_failure(exc)
            raise APIConnectionError(f"connection error: {exc!r}", request_sent=True) from exc
        response = _AiohttpResponse(resp, timeout if stream else None)
        self._open.add(response)
        return response

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            for response in list(self._open):
                response.abort()
            await session.close()


def _raise_body_failure(exc: BaseException) -> None:
    """Raise the upload's own error (a file that changed as it was sent), which
    aiohttp wraps in a connection error, if that is what this one is."""
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, InvalidRequestError):
            raise cause from None
        cause = cause.__cause__ or cause.__context__


# -- httpx ---------------------------------------------------------------


@contextmanager
def _httpx_read_errors() -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        raise APITimeoutError("timed out waiting for response data") from exc
    except (httpx.HTTPError, httpx.StreamError) as exc:
        raise APIConnectionError(
            f"connection broke while reading: {exc!r}", request_sent=True
        ) from exc


class _HttpxResponse:
    __slots__ = ("_chunks", "_resp", "headers", "status")

    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp
        self.status = resp.status_code
        self.headers: Mapping[str, str] = resp.headers
        self._chunks: AsyncIterator[bytes] | None = None

    async def read_chunk(self) -> bytes:
        if self._chunks is None:
            self._chunks = self._resp.aiter_bytes()
        with _httpx_read_errors():
            try:
                return await self._chunks.__anext__()
            except StopAsyncIteration:
                return b""

    async def read(self) -> bytes:
        with _httpx_read_errors():
            return await self._resp.aread()

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

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._client = client
        self._owns_client = client is None

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
        timeout: float | None,
        stream: bool,
    ) -> Response:
        client = self._get_client()
        request = client.build_request(
            method,
            url,
            headers=_body_headers(headers, body),
            content=body if body is None or isinstance(body, bytes) else body.chunks(),
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
        )
        try:
            resp = await client.send(request, stream=True)
        except httpx.ConnectTimeout as exc:
            raise APITimeoutError("timed out connecting", request_sent=False) from exc
        except httpx.ConnectError as exc:
            raise APIConnectionError(f"cannot connect: {exc!r}") from exc
        except httpx.TimeoutException as exc:
            raise APITimeoutError() from exc
        except httpx.HTTPError as exc:
            raise APIConnectionError(f"connection error: {exc!r}", request_sent=True) from exc
        return _HttpxResponse(resp)

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
