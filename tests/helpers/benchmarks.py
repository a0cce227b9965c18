"""The benchmarks, run from the tests as a user runs them: ``python -m benchmarks ARGS``."""

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
