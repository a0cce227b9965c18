"""Every ending told truthfully: a server stopped mid-turn is not a finished answer, and a
stop by SIGINT or SIGTERM is a clean one (issue 23, item 1)."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from handinger_stream.emulator import STOPPED_MID_TURN, Emulator
from tests.cli.helpers import Pane, environment, wait_for
from tests.conftest import API_KEY
from tests.helpers.emulators import emulator_fixture

PYTHON = [sys.executable, "-m", "handinger_stream"]


def _serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """``serve`` in a process of its own (uploads under ``tmp_path``); it and its URL."""
    env = environment() | {"TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [*PYTHON, "serve", "--port", "0", *args],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert " on http://" in line, line
    return proc, line.split(" on ")[1].split()[0]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_serve_does_not_pass_a_cut_off_answer_for_a_finished_one(
    tmp_path: Path, signum: signal.Signals
) -> None:
    serve, url = _serve(tmp_path, "--tokens-per-second", "5")
    upload = tmp_path / "notes.txt"
    upload.write_text("fiscal year 2025")
    env = environment(API_KEY, url)
    with subprocess.Popen(
        [*PYTHON, "run", "--json", "A long answer, please"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as run:
        assert run.stdout is not None
        # Once the answer is being written, the server is stopped.
        while json.loads(run.stdout.readline())["type"] != "text-delta":
            pass
        # An upload spooled to the server's folder, which any stop must remove.
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from handinger_stream import Handinger\n"
                "with Handinger(max_retries=0) as c:\n"
                "    print(c.workers.create(input='x', files=[sys.argv[1]]).id)",
                str(upload),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert list(tmp_path.glob("handinger-emulator-*")), "the upload was spooled"
        serve.send_signal(signum)
        assert serve.wait(30) == (130 if signum == signal.SIGINT else 0)
        # Read through the same buffered file (communicate() would skip what it holds).
        rest = run.stdout.read()
        assert run.stderr is not None
        err = run.stderr.read()
        run.wait(60)
    assert serve.stderr is not None
    serve.stderr.close()
    lines = [json.loads(line) for line in rest.splitlines()]
    final = lines[-1]
    assert final["type"] == "data-worker"
    assert final["outcome"] == "failed" and final["error"] == STOPPED_MID_TURN
    assert final["data"]["error"] == STOPPED_MID_TURN
    assert run.returncode == 1, err
    assert not list(tmp_path.glob("handinger-emulator-*")), "serve removes its upload folder"


# -- Ctrl-C tells what is still running (item 3) ------------------------------------------


slow_emulator = emulator_fixture(api_key=API_KEY, tokens_per_second=20)


def test_ctrl_c_says_which_worker_goes_on_and_how_to_follow_it(slow_emulator: Emulator) -> None:
    env = environment(API_KEY, slow_emulator.base_url)
    with subprocess.Popen(
        [*PYTHON, "run", "a long answer"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.read(20)  # writing
        proc.send_signal(signal.SIGINT)
        answer = proc.stdout.read()
        err = proc.stderr.read()
        assert proc.wait(30) == 130, err
    found = re.search(r"interrupted: worker (wrk_\w+) goes on at the service", err)
    assert found, err
    worker_id = found.group(1)
    assert f"follow it with: handinger-stream watch {worker_id}" in err
    lines = err.splitlines()
    label = next(i for i, line in enumerate(lines) if line.startswith("interrupted: "))
    summary = next(i for i, line in enumerate(lines) if line.startswith("— interrupted · "))
    assert label < summary  # the label before the fragment, the summary after it
    assert f"  worker {worker_id}" in lines[summary:]
    assert "Traceback" not in err and answer is not None


def test_ctrl_c_in_the_live_view_keeps_its_token_count(slow_emulator: Emulator) -> None:
    python = shlex.quote(sys.executable)
    command = (
        f"env -u HANDINGER_API_KEY HANDINGER_BASE_URL={slow_emulator.base_url} COLUMNS= LINES= "
        f"{python} -m handinger_stream run --api-key {API_KEY} 'a long answer'; "
        "echo EXIT=$?; sleep 600"
    )
    pane = Pane("ctrl-c-view", command)
    try:
        wait_for(pane, r"running · [1-9]\d* tokens")
        pane.keys("C-c")
        screen = wait_for(pane, r"^EXIT=130")
    finally:
        pane.close()
    lines = screen.splitlines()
    label = next(i for i, line in enumerate(lines) if line.startswith("interrupted: worker wrk_"))
    summary = next(i for i, line in enumerate(lines) if line.startswith("— interrupted · "))
    fragment = " ".join(lines[label + 2 : summary])  # after "partial answer:"
    tokens = int(re.search(r"· (\d+) tokens? ·", lines[summary]).group(1))  # type: ignore[union-attr]
    # The count the view showed (one a word written), not a guess from the Worker's usage.
    assert tokens == len(fragment.split()) > 0, screen
    assert "handinger-stream watch wrk_" in lines[label]
