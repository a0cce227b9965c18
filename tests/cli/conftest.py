"""The command line's fixtures: a terminal (tmux) running ``handinger-stream watch``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.cli.helpers import Pane, watch_command


@pytest.fixture
def pane(request: pytest.FixtureRequest) -> Iterator[Callable[..., Pane]]:
    """Start ``handinger-stream watch ARGS`` in a terminal; every one is stopped at the end."""
    made: list[Pane] = []

    def make(*args: str) -> Pane:
        made.append(Pane(f"{request.node.name[5:25]}-{len(made)}", watch_command(*args)))
        return made[-1]

    yield make
    for p in made:
        p.close()
