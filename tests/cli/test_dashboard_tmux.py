"""``handinger-stream watch`` on a real terminal: tmux runs it, capture-pane reads the screen.

With ``HANDINGER_DASHBOARD_SHOT=FILE`` the table test also saves one frame,
with its colours, to FILE: ``scripts/dashboard-screenshot`` renders that to
``docs/dashboard.png``, so the picture in the docs is this run's screen.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.helpers import Pane, count, rows, wait_for

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")

WORKERS = 12
RUNNING_ROW = r"^ wrk_\w+\s+running\s"


def test_the_live_table_appears_updates_and_ends_with_the_summary(
    pane: Callable[..., Pane],
) -> None:
    term = pane(
        "--create", str(WORKERS), "What is new in battery research?",
        "--tokens-per-second", "60", "--max-concurrency", "10",
    )  # fmt: skip
    first = wait_for(term, r"last words")
    assert "handinger-stream watch" in first and "tokens in/out" in first
    assert len(rows(first)) == WORKERS
    # Rows update while the workers run: the same worker's row changes between frames.
    before = rows(wait_for(term, RUNNING_ROW))
    changed = False
    shot = os.environ.get("HANDINGER_DASHBOARD_SHOT")
    saved = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (changed and (saved or not shot)):
        time.sleep(0.3)
        screen = term.screen()
        if "EXIT=" in screen:
            break
        now = rows(screen)
        changed = changed or any(
            now.get(i) != row for i, row in before.items() if re.search(RUNNING_ROW, row)
        )
        if shot and not saved and count(screen, "running") >= 4 and count(screen, "completed") >= 4:
            Path(shot).write_text(term.screen(colours=True), encoding="utf-8")
            saved = True
    assert changed
    end = wait_for(term, r"^EXIT=\d+")
    summary = next(line for line in end.splitlines() if line.startswith(f"{WORKERS} workers:"))
    failed = int(re.search(r"(\d+) failed", summary).group(1))  # type: ignore[union-attr]
    assert re.search(
        rf"{WORKERS} workers: {WORKERS - failed} completed, {failed} failed · ", summary
    )
    assert re.search(r"^EXIT=(\d+)", end, re.M).group(1) == ("1" if failed else "0")  # type: ignore[union-attr]
    # The last frame stays above the summary: every worker finished in it.
    assert count(end, "completed") == WORKERS - failed and count(end, "running") == 0


def test_ctrl_c_stops_with_the_summary_so_far(pane: Callable[..., Pane]) -> None:
    term = pane("--create", "6", "A long research task", "--tokens-per-second", "15")
    wait_for(term, RUNNING_ROW)
    term.keys("C-c")
    end = wait_for(term, r"^EXIT=\d+", 30)
    assert re.search(r"^EXIT=130$", end, re.M), end
    summary = next(line for line in end.splitlines() if line.startswith("interrupted · "))
    assert "6 workers: " in summary and "not finished" in summary
    assert "Traceback" not in end
