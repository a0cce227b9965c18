"""The tests' emulator fixtures, made by one factory.

A module writes the pace and faults it needs on one line; the fixture is
named by the variable it is assigned to::

    paced = emulator_fixture(api_key=API_KEY, tokens_per_second=100)

    def test_something(paced: Emulator) -> None: ...
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest

from handinger_stream.emulator import Emulator

Scope = Literal["function", "class", "module", "package", "session"]


def emulator_fixture(scope: Scope = "module", **options: Any) -> object:
    """A fixture: an :class:`Emulator` with these options, in a background thread, for ``scope``.

    In a thread, it serves asyncio, trio and sync tests alike, whatever loop each runs.
    """

    def emulator() -> Iterator[Emulator]:
        with Emulator(**options) as emu:
            yield emu

    return pytest.fixture(scope=scope)(emulator)
