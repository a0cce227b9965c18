"""The markers of the tests that start real servers or tools (tests/helpers/markers.py).

What these tests inspect is kept in dicts: the walk follows the functions and
classes a test names, not a dict's values, so these tests are not marked by it.
"""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import browser, nodejs, relay_helpers
from tests.helpers import leaks
from tests.helpers.markers import PROGRAMS, SLOW, markers_for, reach

ROOT = Path(__file__).resolve().parents[1]


def _through_a_helper_and_a_nested_function() -> None:
    async def main() -> None:
        relay_helpers.RedisServer(Path("/nonexistent")).start()

    asyncio.run(main())


def _names_a_program_it_does_not_run(node: str = "tmux") -> str:
    return node


def _starts_a_process() -> None:
    subprocess.run([sys.executable, "-c", "pass"], check=True)


CODE: dict[str, Callable[..., object]] = {
    "redis_server": relay_helpers.redis_server,
    "launch": browser.launch,
    "npm_project": nodejs.npm_project,
    "connections_to": leaks.connections_to,
    "nested": _through_a_helper_and_a_nested_function,
    "no program run": _names_a_program_it_does_not_run,
    "a process": _starts_a_process,
}


@pytest.mark.parametrize(
    ("code", "marks"),
    [
        ("redis_server", {"redis", "slow"}),
        ("launch", {"browser", "slow"}),
        ("npm_project", {"node", "slow"}),
        ("connections_to", set()),
        ("nested", {"redis", "slow"}),
        ("no program run", set()),
        ("a process", {"slow"}),
    ],
)
def test_the_code_a_test_runs_gives_its_markers(code: str, marks: set[str]) -> None:
    assert markers_for(reach(CODE[code])) == marks


def test_these_tests_are_not_marked(request: pytest.FixtureRequest) -> None:
    assert [m.name for m in request.node.iter_markers() if m.name in {*PROGRAMS, "slow"}] == []


def test_every_marker_is_declared_in_pyproject() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    for marker in [*PROGRAMS, "slow"]:
        assert f'"{marker}: ' in text, marker


@pytest.mark.parametrize("entry", sorted(SLOW))
def test_every_test_listed_as_slow_exists(entry: str) -> None:
    path, function = entry.split("::")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    assert callable(getattr(module, function, None)), f"{entry}: no such test; update SLOW"
