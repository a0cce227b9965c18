"""The pytest plugin in users' fresh projects: each run is a new pytest process in an empty folder.

``runpytest_subprocess`` starts pytest the way a user's project would, so the
plugin loads from its ``pytest11`` entry point, with no configuration of ours.
ResourceWarnings, and anything left for the garbage collector to complain
about, are errors: a client opened or closed on the wrong event loop fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from handinger_stream.emulator import Emulator
from tests.conftest import API_KEY

pytest_plugins = ["pytester"]

STRICT = ("-W", "error::ResourceWarning", "-W", "error::pytest.PytestUnraisableExceptionWarning")
# A user's project has no hypothesis; our dev environment does, and its plugin takes a
# second to import in every run.
FRESH = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")


@pytest.fixture
def project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> Iterator[pytest.Pytester]:
    """An empty project folder, and an environment without HANDINGER_* settings."""
    for name in [n for n in os.environ if n.startswith("HANDINGER_")]:
        monkeypatch.delenv(name)
    yield pytester


def run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    return project.runpytest_subprocess(*STRICT, *FRESH, *args, timeout=120)


ASYNCIO_TESTS = """
import httpx
import pytest
from handinger_stream import AsyncHandinger
from handinger_stream.emulator import Emulator

SESSION_EMULATORS: set[int] = set()


@pytest.mark.asyncio
async def test_function_emulator(handinger_emulator: Emulator) -> None:
    async with AsyncHandinger(**handinger_emulator.client_options()) as client:
        stream = await client.workers.create(input="Hi", stream=True)
        assert (await stream.get_final_worker()).status == "completed"


@pytest.mark.asyncio
async def test_client_talks_to_the_function_emulator(
    handinger_client: AsyncHandinger, handinger_emulator: Emulator
) -> None:
    handinger_emulator.inject_fault("drop-after=3")
    stream = await handinger_client.workers.create(input="Hi", stream=True)
    worker = await stream.get_final_worker()
    assert worker.status == "completed" and stream.reconnects == 1
    assert handinger_client.transport.name == "aiohttp"


@pytest.mark.asyncio(loop_scope="module")
async def test_client_on_a_module_loop(handinger_client: AsyncHandinger) -> None:
    stream = await handinger_client.workers.create(input="Hi", stream=True)
    assert (await stream.get_final_worker()).status == "completed"


@pytest.mark.asyncio(loop_scope="module")
async def test_another_client_on_the_same_module_loop(handinger_client: AsyncHandinger) -> None:
    assert (await handinger_client.workers.create(input="Hi")).object == "worker"


def test_session_emulator_from_sync_code(handinger_emulator_session: Emulator) -> None:
    SESSION_EMULATORS.add(id(handinger_emulator_session))
    response = httpx.post(
        handinger_emulator_session.base_url + "/api/workers",
        json={"input": "sync"},
        headers={"authorization": "Bearer any"},
    )
    assert response.status_code == 200


@pytest.mark.asyncio
async def test_session_emulator_from_async_code(handinger_emulator_session: Emulator) -> None:
    SESSION_EMULATORS.add(id(handinger_emulator_session))
    assert len(SESSION_EMULATORS) == 1
    async with AsyncHandinger(**handinger_emulator_session.client_options()) as client:
        assert (await client.workers.create(input="Hi")).object == "worker"


def test_a_sync_test_cannot_have_the_async_client(handinger_client: AsyncHandinger) -> None:
    pass
"""

ANYIO_TESTS = """
import pytest
import sniffio
from handinger_stream import AsyncHandinger
from handinger_stream.emulator import Emulator


@pytest.mark.anyio
async def test_client(handinger_client: AsyncHandinger, anyio_backend_name: str) -> None:
    assert sniffio.current_async_library() == anyio_backend_name
    stream = await handinger_client.workers.create(input="Hi", stream=True)
    assert (await stream.get_final_worker()).status == "completed"
    expected = "httpx" if anyio_backend_name == "trio" else "aiohttp"
    assert handinger_client.transport.name == expected


@pytest.mark.anyio
async def test_async_with_emulator(anyio_backend_name: str) -> None:
    async with Emulator() as emu:
        async with AsyncHandinger(**emu.client_options()) as client:
            stream = await client.workers.create(input="Hi", stream=True)
            assert (await stream.get_final_worker()).status == "completed"


@pytest.mark.anyio
async def test_function_emulator(handinger_emulator: Emulator) -> None:
    async with AsyncHandinger(**handinger_emulator.client_options()) as client:
        assert (await client.workers.create(input="Hi")).object == "worker"
"""


def test_pytest_asyncio_strict_mode_and_anyio_side_by_side(project: pytest.Pytester) -> None:
    # pytest-asyncio's default (strict) mode: tests say @pytest.mark.asyncio, nothing else is set.
    project.makepyfile(test_asyncio_app=ASYNCIO_TESTS, test_anyio_app=ANYIO_TESTS)
    result = run(project)
    result.assert_outcomes(passed=6 + 3 * 2, errors=1)
    result.stdout.fnmatch_lines(["*handinger_client is an async client*@pytest.mark.asyncio*"])


def test_anyio_plugin_alone_on_asyncio_and_trio(project: pytest.Pytester) -> None:
    project.makepyfile(test_anyio_app=ANYIO_TESTS)
    result = run(project, "-p", "no:asyncio")  # a project without pytest-asyncio installed
    result.assert_outcomes(passed=3 * 2)
    result.stdout.no_fnmatch_line("*asyncio-*")  # pytest-asyncio really was absent


def test_pytest_asyncio_auto_mode_needs_no_marker(project: pytest.Pytester) -> None:
    project.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    project.makepyfile(
        test_auto="""
from handinger_stream import AsyncHandinger
from handinger_stream.emulator import Emulator


async def test_client(handinger_client: AsyncHandinger, handinger_emulator: Emulator) -> None:
    stream = await handinger_client.workers.create(input="Hi", stream=True)
    assert (await stream.get_final_worker()).status == "completed"
    assert handinger_client.base_url == handinger_emulator.base_url
"""
    )
    run(project).assert_outcomes(passed=1)


def test_the_checks_do_catch_a_client_left_open(project: pytest.Pytester) -> None:
    # The control: without this failing, the runs above would prove nothing about closing.
    project.makepyfile(
        test_leak="""
import aiohttp
import pytest
from handinger_stream import AsyncHandinger


@pytest.mark.asyncio
async def test_leaks(handinger_emulator) -> None:
    # A session of our own is never closed by the client (the client's own
    # transport would be closed with the test's loop), so this one leaks.
    session = aiohttp.ClientSession()
    client = AsyncHandinger(**handinger_emulator.client_options(), http_client=session)
    stream = await client.workers.create(input="Hi", stream=True)
    await stream.get_final_worker()
"""
    )
    result = run(project)
    assert result.ret != 0
    # The leak is found when the garbage collector meets the session, as late as the run's end.
    # Which of the session and its connector it finalises first depends on allocation order;
    # a connector finalised first closes itself, so then only it reports the leak.
    output = result.stdout.str() + result.stderr.str()
    assert "Unclosed client session" in output or "Unclosed connector" in output


CASSETTE_TESTS = """
import os

import httpx
import pytest
from handinger_stream import AsyncHandinger
from handinger_stream.cassette import CassetteSession


@pytest.mark.asyncio
@pytest.mark.handinger_cassette("cassettes/weather.json")
async def test_weather(handinger_cassette: CassetteSession) -> None:
    assert handinger_cassette.mode == os.environ["EXPECTED_MODE"]
    async with AsyncHandinger(**handinger_cassette.client_options()) as client:
        stream = await client.workers.create(input="Weather in Barcelona?", stream=True)
        worker = await stream.get_final_worker()
    assert worker.status == "completed" and "Barcelona" in worker.output_text


@pytest.mark.handinger_cassette("cassettes/failing.json")
def test_fails_while_recording(handinger_cassette: CassetteSession) -> None:
    response = httpx.post(
        handinger_cassette.base_url + "/api/workers",
        json={"input": "doomed"},
        headers={"authorization": f"Bearer {handinger_cassette.api_key}"},
    )
    assert response.status_code == 200
    assert handinger_cassette.mode != "record", "a failure while recording"


def test_sync_code_and_the_default_path(handinger_cassette: CassetteSession) -> None:
    assert handinger_cassette.mode == os.environ["EXPECTED_MODE"]
    response = httpx.post(
        handinger_cassette.base_url + "/api/workers",
        json={"input": "sync"},
        headers={"authorization": f"Bearer {handinger_cassette.api_key}"},
    )
    assert response.status_code == 200
"""


def test_cassette_fixture_records_with_a_key_then_replays_offline(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    project.makepyfile(test_app=CASSETTE_TESTS)
    weather = project.path / "cassettes" / "weather.json"
    default = project.path / "cassettes" / "test_app" / "test_sync_code_and_the_default_path.json"

    # A fake key, and the emulator standing in for the real service.
    monkeypatch.setenv("HANDINGER_API_KEY", API_KEY)
    monkeypatch.setenv("HANDINGER_BASE_URL", emulator.base_url)
    monkeypatch.setenv("EXPECTED_MODE", "record")
    run(project).assert_outcomes(passed=2, failed=1)
    assert weather.exists() and default.exists()
    assert not (project.path / "cassettes" / "failing.json").exists()  # a failed test's recording
    assert API_KEY not in weather.read_text() + default.read_text()
    recorded = weather.read_bytes()

    # CI: no key, and nothing reachable upstream.
    monkeypatch.delenv("HANDINGER_API_KEY")
    monkeypatch.setenv("HANDINGER_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("EXPECTED_MODE", "replay")
    result = run(project)
    # failing.json was never written: with nothing to replay, the test fails saying how
    # to record it.
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*no cassette at*failing.json*HANDINGER_API_KEY*"])
    assert weather.read_bytes() == recorded


README_TEST = """
import pytest

from handinger_stream import AsyncHandinger


@pytest.mark.asyncio
async def test_my_app(handinger_client: AsyncHandinger) -> None:
    stream = await handinger_client.workers.create(input="Hi", stream=True)
    assert (await stream.get_final_worker()).status == "completed"
"""


def test_without_pytest_asyncio_the_readme_test_says_what_to_install(
    project: pytest.Pytester,
) -> None:
    # A fresh project that installed handinger-stream alone: pytest-asyncio is not there.
    project.makepyfile(test_readme=README_TEST)
    result = run(project, "-p", "no:asyncio")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*pip install pytest-asyncio*@pytest.mark.anyio*"])
    # Not the advice to add the marker the test already has.
    result.stdout.no_fnmatch_line("*ask for it from an async test marked*")
