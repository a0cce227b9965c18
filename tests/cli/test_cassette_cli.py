"""``handinger-stream record`` and ``serve --cassette``: as subprocesses, and errors in this process."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from handinger_stream.cassette import Cassette
from handinger_stream.emulator import Emulator
from tests.cli.helpers import cli_here, environment
from tests.conftest import API_KEY

PROMPT = "What's the weather in Barcelona?"


@contextmanager
def serving(*args: str) -> Iterator[str]:
    """``handinger-stream serve ARGS --port 0`` in the background; its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "handinger_stream", "serve", "--port", "0", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=environment(),
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None
    stderr = process.stderr

    def read() -> None:
        for line in stderr:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        first = lines.get(timeout=30)
        found = re.search(r"on (http://\S+)", first)
        assert found, first
        assert "replaying" in first, first
        yield found.group(1)
    finally:
        process.terminate()
        process.wait(timeout=10)
        stderr.close()


def test_record_through_the_proxy_then_serve_the_cassette(
    emulator: Emulator, tmp_path: Path
) -> None:
    out = tmp_path / "cassettes" / "weather.json"
    args = ("record", "--out", str(out), PROMPT, "--budget", "low")
    recorded = cli_here(*args, key=API_KEY, base_url=emulator.base_url)
    assert recorded.returncode == 0, recorded.stderr
    assert "weather in Barcelona" in recorded.stdout
    assert f"to {out}" in recorded.stderr
    text = out.read_text()
    assert API_KEY not in text and "authorization" not in text.lower()
    (create,) = Cassette.load(out).interactions
    assert create.request.json == {"input": PROMPT, "budget": "low", "stream": True}

    with serving("--cassette", str(out)) as base_url:
        replayed = cli_here("run", PROMPT, "--budget", "low", key="any", base_url=base_url)
        other = cli_here("run", "Something else", key="any", base_url=base_url)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == recorded.stdout
    # A request the cassette does not hold: a usage error, its message said once.
    assert other.returncode == 2
    assert other.stderr.count("no recorded interaction matches POST /api/workers") == 1
    assert other.stderr.startswith("error: ") and len(other.stderr.splitlines()) == 1
    assert "Something else" in other.stderr


def test_record_the_embedded_emulator_then_replay_at_the_recorded_pace(tmp_path: Path) -> None:
    out = tmp_path / "paced.json"
    pace = ("--budget", "low", "--tokens-per-second", "150")
    recorded = cli_here("record", "--out", str(out), "Pace me", *pace, key=None)
    assert recorded.returncode == 0, recorded.stderr
    assert "recording the embedded emulator" in recorded.stderr.splitlines()[0]
    duration = Cassette.load(out).interactions[0].response.duration
    assert duration > 0.1

    with serving("--cassette", str(out), "--realtime") as base_url:
        started = time.monotonic()
        replayed = cli_here("run", "Pace me", "--budget", "low", key="any", base_url=base_url)
        elapsed = time.monotonic() - started
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == recorded.stdout
    assert elapsed >= duration


def test_serve_a_missing_or_broken_cassette_is_a_usage_error(tmp_path: Path) -> None:
    missing = cli_here("serve", "--port", "0", "--cassette", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "no cassette at" in missing.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("not json")
    bad = cli_here("serve", "--port", "0", "--cassette", str(broken))
    assert bad.returncode == 2 and "is not a cassette" in bad.stderr
    assert "Traceback" not in missing.stderr + bad.stderr


def test_record_needs_an_out_file() -> None:
    result = cli_here("record", PROMPT)
    assert result.returncode == 2 and "--out" in result.stderr


def test_nothing_recorded_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "empty.json"
    result = cli_here("record", "--out", str(out), PROMPT, key="k", base_url="http://127.0.0.1:9")
    assert result.returncode == 3
    assert "cannot reach http://127.0.0.1:9" in result.stderr
    assert "not written" in result.stderr and not out.exists()
