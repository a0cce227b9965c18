"""Shared fixtures: the emulator, a raw-bytes SSE server, and transport choice; and the
markers of the tests that start real servers or tools (``tests/helpers/markers.py``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from handinger_stream import AsyncHandinger
from handinger_stream.client.transport import TransportName
from handinger_stream.emulator import Emulator
from tests.helpers import markers
from tests.helpers.emulators import emulator_fixture

API_KEY = "sk-test-secret-key-123"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that start real servers or tools (pyproject.toml lists the markers)."""
    markers.mark(items)


# One emulator for the session, as fast as it goes.
emulator = emulator_fixture(
    "session", api_key=API_KEY, tokens_per_second=0, seed=0, keepalive_interval=0.2
)


@pytest.fixture(params=["aiohttp", "httpx"])
def transport(request: pytest.FixtureRequest) -> TransportName:
    name: TransportName = request.param
    return name


@pytest.fixture
async def client(emulator: Emulator, transport: TransportName) -> AsyncIterator[AsyncHandinger]:
    async with AsyncHandinger(
        api_key=API_KEY,
        base_url=emulator.base_url,
        transport=transport,
        max_retries=2,
    ) as c:
        yield c


async def until(predicate: Callable[[], bool], timeout: float = 1.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; its last value."""
    deadline = asyncio.get_running_loop().time() + timeout
    # The state watched lives in another thread (the server's): nothing to await, so poll.
    while not predicate() and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    return predicate()


@dataclass
class Canned:
    """A response the raw server sends: status, headers, and body pieces."""

    body: list[bytes]
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "text/event-stream"})
    delay: float = 0.0
    # Seconds to wait after piece i, instead of ``delay``.
    pauses: dict[int, float] = field(default_factory=dict)
    # Cut the connection after reading the request, before any answer.
    abort: bool = False


class RawServer:
    """A real aiohttp server, in a thread, that sends exactly the bytes it is given.

    Every request path answers with the next canned response (or the last one).
    """

    def __init__(self) -> None:
        self.responses: list[Canned] = []
        self.requests: list[dict[str, Any]] = []
        self.open_streams = 0
        self.finished = 0
        # serve() starts a new generation: a response of an earlier test, still
        # being written when the next test begins, counts in neither.
        self._generation = 0
        self._counting = (
            threading.Lock()
        )  # serve() runs in the test's thread, _handle in the server's
        self.base_url = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def serve(self, *responses: Canned) -> None:
        self.responses = list(responses)
        self.requests = []
        with self._counting:
            self.finished = 0
            self.open_streams = 0
            self._generation += 1

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            {
                "method": request.method,
                "path": request.path_qs,
                "headers": dict(request.headers),
                "body": await request.read(),
            }
        )
        canned = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if canned.abort and request.transport is not None:
            request.transport.abort()
            return web.Response()
        response = web.StreamResponse(status=canned.status, headers=canned.headers)
        await response.prepare(request)
        with self._counting:
            generation = self._generation
            self.open_streams += 1
        try:
            for i, piece in enumerate(canned.body):
                await response.write(piece)
                pause = canned.pauses.get(i, canned.delay)
                if pause:
                    await asyncio.sleep(pause)
            await response.write_eof()
            with self._counting:
                if generation == self._generation:
                    self.finished += 1
        except ConnectionError:
            pass  # the client left: tests check that it did
        finally:
            with self._counting:
                if generation == self._generation:
                    self.open_streams -= 1
        return response

    def __enter__(self) -> RawServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def main() -> None:
                app = web.Application()
                app.router.add_route("*", "/{tail:.*}", self._handle)
                runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
                await runner.setup()
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
                self.base_url = f"http://127.0.0.1:{port}"
                self._stop = asyncio.Event()
                ready.set()
                await self._stop.wait()
                await runner.cleanup()

            loop.run_until_complete(main())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        assert self._thread is not None
        self._thread.join(5)


@pytest.fixture(scope="session")
def raw_server() -> Iterator[RawServer]:
    with RawServer() as server:
        yield server
