"""What the command line's tests share: running the command (in a process of its own, or
its ``main`` in this one) and reading a terminal that tmux runs it in.

    done = cli("watch", "--create", "2", "Hi", "--json", base_url=emulator.base_url)
    assert done.returncode == 0, done.stderr
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from typing import Any
from unittest import mock

from handinger_stream.cli import main
from tests.conftest import API_KEY

__all__ = [
    "HEIGHT",
    "WIDTH",
    "Pane",
    "cli",
    "cli_here",
    "count",
    "environment",
    "json_lines",
    "rows",
    "wait_for",
    "watch_command",
]

WIDTH, HEIGHT = 140, 40  # the terminal tmux gives a Pane


def environment(key: str | None = None, base_url: str | None = None) -> dict[str, str]:
    """This process's environment without HANDINGER_*, then with the key and base URL given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDINGER_")}
    if key is not None:
        env["HANDINGER_API_KEY"] = key
    if base_url is not None:
        env["HANDINGER_BASE_URL"] = base_url
    return env


def cli(
    *args: str,
    key: str | None = API_KEY,
    base_url: str | None = None,
    timeout: float = 120,
    stdin: str = "",
) -> subprocess.CompletedProcess[str]:
    """``python -m handinger_stream ARGS``: the real entry point, in a process of its own,
    reading ``stdin`` (piped: empty unless given, never this process's own)."""
    return subprocess.run(
        [sys.executable, "-m", "handinger_stream", *args],
        capture_output=True,
        text=True,
        env=environment(key, base_url),
        timeout=timeout,
        input=stdin,
    )


def cli_here(
    *args: str, key: str | None = API_KEY, base_url: str | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """The same command, its ``main`` run in this process: what it prints and returns,
    without a new interpreter's start-up (half a second a call). For what does not
    depend on the process itself (signals, closed pipes and terminals use ``cli``).
    ``stdin`` is what a pipe into it holds."""
    out, err = io.TextIOWrapper(io.BytesIO()), io.TextIOWrapper(io.BytesIO())
    with (
        mock.patch.dict(os.environ, environment(key, base_url), clear=True),
        mock.patch.object(sys, "stdin", io.StringIO(stdin)),
        redirect_stdout(out),
        redirect_stderr(err),
    ):
        try:
            code = main(list(args))
        except SystemExit as exit:  # argparse: --help, and usage errors
            code = exit.code if isinstance(exit.code, int) else 2
    printed = []
    for stream in (out, err):
        stream.flush()
        assert isinstance(stream.buffer, io.BytesIO)
        printed.append(stream.buffer.getvalue().decode())
    return subprocess.CompletedProcess(["handinger-stream", *args], code, *printed)


def json_lines(output: str) -> list[dict[str, Any]]:
    """What ``--json`` printed, a dict a line."""
    return [json.loads(line) for line in output.splitlines()]


# -- a real terminal ----------------------------------------------------------------


class Pane:
    """One tmux session on a server of its own, running one command."""

    def __init__(self, name: str, command: str) -> None:
        self.socket = f"handinger-test-{os.getpid()}-{name}"
        self.name = name
        self._tmux("new-session", "-d", "-s", name, "-x", str(WIDTH), "-y", str(HEIGHT), command)

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30
        )
        return done.stdout

    def screen(self, *, colours: bool = False) -> str:
        return self._tmux("capture-pane", "-p", *(["-e"] if colours else []), "-t", self.name)

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", self.name, *keys)

    def close(self) -> None:
        self._tmux("kill-server")


def watch_command(*args: str) -> str:
    """The shell command a Pane runs: ``handinger-stream watch ARGS``, then its exit code."""
    # The tmux server does not pass on this process's environment: say it in the command.
    python = shlex.quote(sys.executable)
    argv = " ".join(shlex.quote(a) for a in args)
    return (
        "env -u HANDINGER_API_KEY -u HANDINGER_BASE_URL COLUMNS= LINES= "
        f"{python} -m handinger_stream watch {argv}; echo EXIT=$?; sleep 600"
    )


def wait_for(pane: Pane, pattern: str, seconds: float = 90) -> str:
    """The screen once ``pattern`` is on it (polled, for at most ``seconds``)."""
    deadline = time.monotonic() + seconds
    screen = pane.screen()
    while not re.search(pattern, screen, re.M) and time.monotonic() < deadline:
        time.sleep(0.2)
        screen = pane.screen()
    assert re.search(pattern, screen, re.M), screen
    return screen


def rows(screen: str) -> dict[str, str]:
    """Worker id → its row, as the table shows it."""
    return {m.group(1): m.group(0) for m in re.finditer(r"^ (wrk_\w+)\s.*$", screen, re.M)}


def count(screen: str, status: str) -> int:
    """How many workers the table's title counts with ``status``."""
    title = next(line for line in screen.splitlines() if "handinger-stream watch" in line)
    found = re.search(rf"(\d+) {status}\b", title)
    return int(found.group(1)) if found else 0
