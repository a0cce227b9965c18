"""No error shows a credential, whatever the server does (issue 21, finding 1).

Each test runs a real loopback server that misbehaves (a redirect loop, a
401 that echoes the key, a credential in a URL) on both transports, and
looks at everything an error carries: ``str``, ``repr``, ``args``, the body,
every exception down the ``__cause__``/``__context__`` chain, and every
record logged meanwhile.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import httpx
import pytest
from aiohttp import web

from handinger_stream import (
    APIConnectionError,
    APIStatusError,
    AsyncHandinger,
    AuthenticationError,
    HandingerError,
    InvalidRequestError,
)
from handinger_stream.client.transport import LibraryError, TransportName
from handinger_stream.errors import EXCERPT_CHARS, excerpt, redact, remember_secret

KEY = "sk-live-0123456789abcdef"
PASSWORD = "hunter2-correct-horse"
SECRETS = (KEY, PASSWORD)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """A loopback aiohttp server answering every path with ``handler``; its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def texts_of(error: BaseException) -> list[str]:
    """Every text an error and its chain can show."""
    out: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        exc = pending.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        out += [str(exc), repr(exc), *(repr(arg) for arg in exc.args)]
        out += [repr(value) for value in vars(exc).values()] if hasattr(exc, "__dict__") else []
        pending += [exc.__cause__, exc.__context__]
    out.append("".join(traceback.format_exception(error)))
    return out


def assert_clean(error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    texts = texts_of(error)
    formatter = logging.Formatter()
    # Ours: httpcore's own DEBUG trace prints response headers verbatim, which is the
    # library's business (and a server that echoes the key in a header is seen there).
    for record in caplog.records:
        if not record.name.startswith("handinger_stream"):
            continue
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append(formatter.formatException(record.exc_info))
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} shown in: {text[:300]}"


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


async def test_a_redirect_loop_shows_no_key(
    transport: TransportName, caplog: pytest.LogCaptureFixture
) -> None:
    async def loop(request: web.Request) -> web.Response:
        # Where it points carries credentials too: a password and the key itself.
        raise web.HTTPFound(f"{request.path}?password={PASSWORD}&key={KEY}")

    async with (
        serving(loop) as base_url,
        AsyncHandinger(api_key=KEY, base_url=base_url, transport=transport) as client,
    ):
        with pytest.raises(APIStatusError) as caught:
            await client.workers.retrieve("wrk_1")
    assert caught.value.status_code == 302
    assert "redirect" in str(caught.value) and "password=***" in str(caught.value)
    assert_clean(caught.value, caplog)


@pytest.mark.parametrize("library", ["aiohttp", "httpx"])
async def test_a_redirect_loop_followed_by_your_own_client_shows_no_key(
    library: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client of yours that follows redirects meets the loop; its library's
    exception (aiohttp's ``repr`` lists the request headers) is retold, never chained."""

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{request.path}?password={PASSWORD}")

    async with serving(loop) as base_url:
        own: aiohttp.ClientSession | httpx.AsyncClient = (
            httpx.AsyncClient(follow_redirects=True, max_redirects=3)
            if library == "httpx"
            else aiohttp.ClientSession()
        )
        async with own, AsyncHandinger(api_key=KEY, base_url=base_url, http_client=own) as client:
            with pytest.raises(HandingerError) as caught:
                await client.workers.retrieve("wrk_1")
    assert isinstance(caught.value, (APIConnectionError, APIStatusError))
    cause = caught.value.__cause__
    assert cause is None or isinstance(cause, LibraryError)
    assert_clean(caught.value, caplog)


async def test_your_own_httpx_client_set_to_follow_redirects_does_not_follow_ours() -> None:
    """The key is not sent after a redirect, even where the caller's client would go."""
    followed: list[str] = []

    async def moved(request: web.Request) -> web.Response:
        if request.path == "/elsewhere":
            followed.append(request.headers.get("authorization", ""))
            return web.json_response({"id": "w", "object": "worker", "status": "completed"})
        raise web.HTTPFound("/elsewhere")

    async with serving(moved) as base_url:
        own = httpx.AsyncClient(follow_redirects=True)
        async with own, AsyncHandinger(api_key=KEY, base_url=base_url, http_client=own) as client:
            with pytest.raises(APIStatusError) as caught:
                await client.workers.retrieve("wrk_1")
    assert followed == []
    assert "/elsewhere" in str(caught.value)


async def test_a_401_that_echoes_the_key_shows_no_key(
    transport: TransportName, caplog: pytest.LogCaptureFixture
) -> None:
    async def echo(request: web.Request) -> web.Response:
        sent = request.headers["authorization"]
        # Plainly, and JSON-escaped (which a bytes-level search would miss).
        escaped = "".join(f"\\u{ord(c):04x}" for c in KEY)
        body = (
            f'{{"error": {{"message": "invalid key: {sent}", "type": "auth", "key": "{escaped}"}},'
            f' "{KEY}": 1}}'
        )
        return web.Response(
            status=401,
            body=body.encode(),
            content_type="application/json",
            headers={"x-request-id": f"req_{KEY}"},
        )

    async with (
        serving(echo) as base_url,
        AsyncHandinger(api_key=KEY, base_url=base_url, transport=transport) as client,
    ):
        with pytest.raises(AuthenticationError) as caught:
            await client.workers.retrieve("wrk_1")
    error = caught.value
    assert "invalid key: ***" in str(error)
    assert KEY not in json.dumps(error.body) and error.request_id == "req_***"
    assert_clean(error, caplog)


async def test_a_retried_status_logs_no_key(
    transport: TransportName, caplog: pytest.LogCaptureFixture
) -> None:
    async def busy(request: web.Request) -> web.Response:
        body = {"error": f"overloaded, key {KEY}"}
        return web.json_response(body, status=503, headers={"retry-after": "0.01"})

    async with (
        serving(busy) as base_url,
        AsyncHandinger(api_key=KEY, base_url=base_url, transport=transport, max_retries=1) as c,
    ):
        with pytest.raises(APIStatusError) as caught:
            await c.workers.retrieve("wrk_1")
    assert any("retrying" in record.getMessage() for record in caplog.records)
    assert_clean(caught.value, caplog)


async def test_a_base_url_with_a_password_is_refused_without_showing_it(
    transport: TransportName, caplog: pytest.LogCaptureFixture
) -> None:
    async def never(request: web.Request) -> web.Response:
        raise AssertionError("nothing may be sent to a URL with credentials")

    async with serving(never) as base_url:
        with_password = base_url.replace("http://", f"http://user:{PASSWORD}@")
        # Refused when the client is made, before anything could be sent or shown.
        with pytest.raises(InvalidRequestError) as caught:
            AsyncHandinger(api_key=KEY, base_url=with_password, transport=transport)
    assert "http://***@127.0.0.1" in str(caught.value)
    assert_clean(caught.value, caplog)


async def test_a_connection_cut_while_reading_shows_no_key(
    transport: TransportName, caplog: pytest.LogCaptureFixture
) -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-length": "1000"})
        response.content_type = "application/json"
        await response.prepare(request)
        await response.write(b'{"id": "')
        assert request.transport is not None
        request.transport.abort()
        return response

    async with (
        serving(cut) as base_url,
        AsyncHandinger(api_key=KEY, base_url=base_url, transport=transport, max_retries=0) as c,
    ):
        with pytest.raises(APIConnectionError) as caught:
            await c.workers.retrieve("wrk_1")
    assert isinstance(caught.value.__cause__, LibraryError)
    assert caught.value.__context__ is None or isinstance(caught.value.__context__, LibraryError)
    assert_clean(caught.value, caplog)


def test_redact_hides_every_shape_of_credential() -> None:
    from handinger_stream.errors import remember_secret

    remember_secret(KEY)
    text = (
        f"GET http://user:{PASSWORD}@h/x?api_key={PASSWORD}&page=2 "
        f"{{'authorization': 'Bearer {KEY}'}} Basic dXNlcjpwYXNzd29yZA=="
    )
    shown = redact(text)
    assert PASSWORD not in shown and KEY not in shown and "dXNlcjpw" not in shown
    assert "page=2" in shown and "http://***@h/x" in shown


def test_a_key_cut_by_an_excerpt_is_hidden_whole() -> None:
    """Excerpts are redacted before they are cut: a key crossing the cut showed its start."""
    key = "hk_live_0123456789abcdefghij"
    remember_secret(key)
    for pad in range(EXCERPT_CHARS - len(key) - 2, EXCERPT_CHARS + 2):
        for raw in (b"x" * pad + key.encode(), "x" * pad + key):
            shown = excerpt(raw)
            assert not any(key[:n] in shown for n in range(6, len(key) + 1)), (pad, shown)
