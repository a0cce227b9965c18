"""A pytest plugin for your own test suite: emulator, client and cassette fixtures.

Installed with the package (entry point ``pytest11``); nothing to configure.

- ``handinger_emulator``: a running :class:`~handinger_stream.testing.emulator.Emulator`
  for one test (any key, pace 0, seed 0), in a background thread, so it
  serves sync, asyncio and trio tests alike.
- ``handinger_emulator_session``: the same, one for the whole session.
- ``handinger_client``: an :class:`~handinger_stream.AsyncHandinger` talking to
  ``handinger_emulator``, opened and closed on the test's own event loop.
  Ask for it from an async test that your async plugin runs:
  ``@pytest.mark.asyncio`` (pytest-asyncio; implied in its auto mode) or
  ``@pytest.mark.anyio`` (anyio's plugin, asyncio or trio).
- ``handinger_cassette``: records what the real service says when
  ``HANDINGER_API_KEY`` is set and the cassette file is missing, and replays
  it otherwise. Name the file with ``@pytest.mark.handinger_cassette("path")``
  (relative to the test file's folder).

    import pytest
    from handinger_stream import AsyncHandinger

    @pytest.mark.asyncio
    async def test_my_app(handinger_client: AsyncHandinger) -> None:
        stream = await handinger_client.workers.create(input="Hi", stream=True)
        assert (await stream.get_final_worker()).status == "completed"
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Literal, cast

import pytest

from ..client.async_client import AsyncHandinger
from .cassette import CassetteNotFoundError, CassetteSession, use_cassette
from .emulator import Emulator

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - pytest-asyncio is optional
    pytest_asyncio = None  # type: ignore[assignment]

__all__ = [
    "MISSING_PYTEST_ASYNCIO",
    "handinger_cassette",
    "handinger_client",
    "handinger_emulator",
    "handinger_emulator_session",
]

_LoopScope = Literal["function", "class", "module", "package", "session"]
_LOOP_SCOPES: tuple[_LoopScope, ...] = ("function", "class", "module", "package", "session")


_TEST_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # The cassette fixture keeps a recording only if the test that made it passed.
    outcome: Any = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item.stash[_TEST_FAILED] = True


MISSING_PYTEST_ASYNCIO = (
    "this test is marked @pytest.mark.asyncio, but pytest-asyncio is not installed, so "
    "no plugin runs it: pip install pytest-asyncio (or mark the test @pytest.mark.anyio "
    "instead: anyio's plugin comes with handinger-stream)"
)


def _has_pytest_asyncio(config: pytest.Config) -> bool:
    return bool(config.pluginmanager.has_plugin("asyncio"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # An async test of ours marked for pytest-asyncio, which is not there: pytest would
    # only say the marker is unknown, and that async tests need "a suitable plugin".
    # Said here, before any fixture, with what to install.
    uses_ours = any(name.startswith("handinger_") for name in getattr(item, "fixturenames", ()))
    if (
        uses_ours
        and item.get_closest_marker("asyncio") is not None
        and inspect.iscoroutinefunction(getattr(item, "obj", None))
        and not _has_pytest_asyncio(item.config)
    ):
        pytest.fail(MISSING_PYTEST_ASYNCIO, pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "handinger_cassette(path=None, *, realtime=False): the cassette the handinger_cassette "
        "fixture records or replays (relative to the test file; default "
        "cassettes/<module>/<test>.json)",
    )


@pytest.fixture
def handinger_emulator() -> Iterator[Emulator]:
    """A running emulator for one test (any API key accepted, pace 0, seed 0).

    def test_sync(handinger_emulator):
        httpx.post(handinger_emulator.base_url + "/api/workers", ...)
    """
    with Emulator(tokens_per_second=0, seed=0) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def handinger_emulator_session() -> Iterator[Emulator]:
    """One running emulator for the whole session (any key, pace 0, seed 0).

    Faults queued with ``inject_fault`` stay queued across tests until used;
    ``clear_faults()`` forgets them.
    """
    with Emulator(tokens_per_second=0, seed=0) as emulator:
        yield emulator


@pytest.fixture
def handinger_client(request: pytest.FixtureRequest) -> AsyncHandinger:
    """An ``AsyncHandinger`` connected to ``handinger_emulator``, closed after the test.

    The client must open and close on the event loop that runs the test, so
    the fixture is run by whichever plugin runs the test: pytest-asyncio for
    a test marked ``@pytest.mark.asyncio`` (in strict or auto mode, at any
    ``loop_scope``), anyio for one marked ``@pytest.mark.anyio``.
    """
    marked = request.node.get_closest_marker("asyncio") is not None
    asyncio_test = marked and _has_pytest_asyncio(request.config)
    if "anyio_backend" in request.fixturenames:
        name = "_handinger_client_anyio"
    elif asyncio_test and _ASYNCIO_CLIENTS:
        name = f"_handinger_client_asyncio_{_asyncio_loop_scope(request)}"
    elif asyncio_test:
        pytest.fail(
            "handinger_client needs pytest-asyncio 0.24 or later (its fixtures' loop_scope): "
            "pip install -U pytest-asyncio; or mark the test @pytest.mark.anyio instead",
            pytrace=False,
        )
    elif marked:
        pytest.fail(MISSING_PYTEST_ASYNCIO, pytrace=False)
    elif inspect.iscoroutinefunction(getattr(request.node, "obj", None)):
        pytest.fail(
            "handinger_client: this async test has no marker a plugin runs it by: mark it "
            "@pytest.mark.anyio (anyio's plugin, installed with handinger-stream), or "
            "pip install pytest-asyncio and mark it @pytest.mark.asyncio",
            pytrace=False,
        )
    else:
        pytest.fail(
            "handinger_client is an async client: ask for it from an async test marked "
            "@pytest.mark.asyncio (pytest-asyncio) or @pytest.mark.anyio (anyio's plugin); "
            "a sync test can use handinger_emulator.base_url instead",
            pytrace=False,
        )
    return cast(AsyncHandinger, request.getfixturevalue(name))


def _asyncio_loop_scope(request: pytest.FixtureRequest) -> str:
    # The loop pytest-asyncio runs the test on: the marker's loop_scope, else the ini default.
    marker = request.node.get_closest_marker("asyncio")
    scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope") if marker else None
    if scope is None:
        try:
            scope = request.config.getini("asyncio_default_test_loop_scope")
        except ValueError:
            scope = None
    return str(scope) if scope in _LOOP_SCOPES else "function"


async def _client_for(emulator: Emulator) -> AsyncIterator[AsyncHandinger]:
    async with AsyncHandinger(**emulator.client_options()) as client:
        yield client


@pytest.fixture
async def _handinger_client_anyio(
    handinger_emulator: Emulator,
) -> AsyncIterator[AsyncHandinger]:
    # Run by anyio's plugin, on the test's backend (asyncio or trio).
    async for client in _client_for(handinger_emulator):
        yield client


def _asyncio_client_fixture(loop_scope: _LoopScope) -> Callable[..., Any]:
    assert pytest_asyncio is not None

    @pytest_asyncio.fixture(name=f"_handinger_client_asyncio_{loop_scope}", loop_scope=loop_scope)
    async def fixture(handinger_emulator: Emulator) -> AsyncIterator[AsyncHandinger]:
        async for client in _client_for(handinger_emulator):
            yield client

    return cast(Callable[..., Any], fixture)


_ASYNCIO_CLIENTS = False
if pytest_asyncio is not None:
    # One per loop scope: a client used by a test on a module-scoped loop is
    # opened and closed on that loop, not on a loop of its own.
    try:
        for _scope in _LOOP_SCOPES:
            globals()[f"_handinger_client_asyncio_{_scope}_fixture"] = _asyncio_client_fixture(
                _scope
            )
        _ASYNCIO_CLIENTS = True
    except TypeError:
        pass  # pytest-asyncio before 0.24 has no loop_scope: the client fixture says so when asked


@pytest.fixture
def handinger_cassette(request: pytest.FixtureRequest) -> Iterator[CassetteSession]:
    """Record the test's Handinger traffic to a cassette, or replay it.

    Records (through a proxy to ``HANDINGER_BASE_URL`` or the public service)
    when ``HANDINGER_API_KEY`` is set and the file is missing; replays it
    otherwise, failing with instructions when there is nothing to replay. A
    recording is written only if the test passed and something was recorded.

        @pytest.mark.handinger_cassette("cassettes/weather.json")
        def test_weather(handinger_cassette):
            client = AsyncHandinger(**handinger_cassette.client_options())
    """
    marker = request.node.get_closest_marker("handinger_cassette")
    args = marker.args if marker else ()
    kwargs = marker.kwargs if marker else {}
    name = args[0] if args else kwargs.get("path")
    folder = Path(str(request.node.path)).parent
    if name is None:
        test = re.sub(r"[^\w.-]+", "_", request.node.name).strip("_")
        path = folder / "cassettes" / Path(str(request.node.path)).stem / f"{test}.json"
    else:
        path = folder / Path(name)
    try:
        with use_cassette(path, realtime=bool(kwargs.get("realtime", False))) as session:
            yield session
            if request.node.stash.get(_TEST_FAILED, False):
                session.discard()
    except CassetteNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
