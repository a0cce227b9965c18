"""The watch benchmark scenario runs (as a tiny smoke: 20 workers for 2 s), so that it does not rot.

Its numbers are not asserted here (shared, noisy machines): only that every
event reached each consumer once. ``python -m benchmarks watch`` measures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def benchmark(*args: str) -> Any:
    """``python -m benchmarks ARGS``: what it printed, as JSON."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_watch_scenario_runs_and_delivers_every_event_once() -> None:
    result = benchmark("watch", "--smoke")
    for consumer in ("streams", "watch"):
        body = result["consumers"][consumer]
        assert body["every_event_once"] and body["events"] == 20 * (100 + 4)
    assert result["targets"]["every event delivered once"]
    assert set(result["targets"]) == {
        "every event delivered once",
        "lag p50 <= 50 ms",
        "CPU per event within 1.2x of one WorkerStream each",
    }
