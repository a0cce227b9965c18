"""The command line's rough edges: pipes and Ctrl-C in subprocesses, the live view under tmux,
options and errors through ``main`` in this process."""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from handinger_stream.cli.run import DEFAULT_PROMPT
from handinger_stream.emulator import Emulator
from handinger_stream.testing.agent import plan_turn
from tests.cli.helpers import cli_here, environment
from tests.conftest import API_KEY, Canned, RawServer
from tests.helpers.emulators import emulator_fixture

RUN = [sys.executable, "-m", "handinger_stream", "run"]


# Writes at 20 tokens a second: a run lasts a few seconds, long enough to cut.
slow_emulator = emulator_fixture(api_key=API_KEY, tokens_per_second=20)


# -- a closed pipe, and Ctrl-C ------------------------------------------------


@pytest.mark.parametrize("json_lines", [True, False], ids=["json", "text"])
def test_a_closed_pipe_exits_quietly_with_141(slow_emulator: Emulator, json_lines: bool) -> None:
    # As `run ... | head -5`: the reader takes what it wants and leaves.
    args = [*RUN, "a long answer", *(["--json"] if json_lines else [])]
    env = environment(API_KEY, slow_emulator.base_url)
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        if json_lines:
            taken = [proc.stdout.readline() for _ in range(5)]
            assert all(json.loads(line) for line in taken)
        else:
            assert proc.stdout.read(10)
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        assert proc.wait(30) == 141
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
    assert "Exception ignored" not in stderr


@pytest.mark.parametrize("json_lines", [True, False], ids=["json", "text"])
def test_ctrl_c_into_a_pipe_exits_130(slow_emulator: Emulator, json_lines: bool) -> None:
    args = [*RUN, "a long answer", *(["--json"] if json_lines else [])]
    env = environment(API_KEY, slow_emulator.base_url)
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() if json_lines else proc.stdout.read(10)
        # Ctrl-C reaches every process of the pipeline: we get SIGINT, and the reader dies.
        os.killpg(proc.pid, signal.SIGINT)
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        assert proc.wait(30) == 130, stderr
    assert "interrupted" in stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


def test_json_on_interrupt_prints_no_stray_line(slow_emulator: Emulator) -> None:
    env = environment(API_KEY, slow_emulator.base_url)
    with subprocess.Popen(
        [*RUN, "a long answer", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    ) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    for line in (first + rest).decode().splitlines():
        assert json.loads(line)["type"]  # every line an event: no blank line, no bare Worker


# -- options and errors ----------------------------------------------------------


def test_api_key_option(emulator: Emulator) -> None:
    result = cli_here("run", "keyed", "--api-key", API_KEY, key=None, base_url=emulator.base_url)
    assert result.returncode == 0, result.stderr
    assert API_KEY not in result.stdout + result.stderr
    wrong = cli_here(
        "run", "keyed", "--api-key", "sk-nope", key=API_KEY, base_url=emulator.base_url
    )
    assert wrong.returncode == 3 and "401" in wrong.stderr  # the option wins over the variable


def test_a_prompt_is_required_except_on_the_embedded_emulator(emulator: Emulator) -> None:
    result = cli_here("run", key=API_KEY, base_url=emulator.base_url)
    assert result.returncode == 2
    assert result.stderr.startswith("error: a prompt is required")
    only_key = cli_here("run", key="sk-real-service")  # would be the real service: refused too
    assert only_key.returncode == 2 and "prompt is required" in only_key.stderr
    demo = cli_here("run", "--tokens-per-second", "0", key=None)
    assert demo.returncode == 0, demo.stderr
    assert "embedded emulator" in demo.stderr and "Barcelona" in demo.stdout


def test_json_lines_use_the_wire_keys_and_end_with_a_worker_chunk(emulator: Emulator) -> None:
    result = cli_here("run", "one style", "--json", base_url=emulator.base_url)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(isinstance(line, dict) and "type" in line for line in lines)
    keys = {key for line in lines for key in line}
    assert not keys & {"event_id", "eventId", "message_id", "tool_call_id"}
    assert "messageId" in keys  # the wire's camelCase, everywhere
    *events, final = lines
    assert not any(value is None for line in events for value in line.values())
    # One final line (the wire's last snapshot is not printed before it as well), with how
    # the worker ended at its top level.
    assert events[-1]["type"] != "data-worker"
    assert set(final) == {"type", "data", "transient", "outcome", "error"}
    assert final["type"] == "data-worker" and final["data"]["status"] == "completed"
    assert final["outcome"] == "completed" and final["error"] is None


def test_json_on_failure_ends_with_the_failed_worker(raw_server: RawServer) -> None:
    raw_server.serve(
        Canned(
            [
                b'data: {"type":"start"}\n\ndata: {"type":"text-start","id":"t"}\n\n',
                b'data: {"type":"text-delta","id":"t","delta":"half"}\n\n',
                b'data: {"type":"error","errorText":"gave up"}\n\ndata: [DONE]\n\n',
            ]
        )
    )
    result = cli_here("run", "x", "--json", base_url=raw_server.base_url)
    assert result.returncode == 1
    final = json.loads(result.stdout.splitlines()[-1])
    assert final["type"] == "data-worker" and final["data"]["error"] == "gave up"
    assert final["outcome"] == "failed" and final["error"] == "gave up"
    assert result.stderr.startswith("error: ")


def test_the_cost_parts_add_up_and_counts_are_singular_when_one(emulator: Emulator) -> None:
    result = cli_here("run", "What's the weather in Barcelona?", base_url=emulator.base_url)
    assert result.returncode == 0, result.stderr
    (cost,) = [line for line in result.stderr.splitlines() if "cost: $" in line]
    total, *parts = [float(x) for x in re.findall(r"\$([0-9.]+)", cost)]
    assert re.findall(r"([a-z]+) \$", cost) == ["model", "tools", "sandbox", "internal"]
    assert parts[-1] > 0  # the emulator charges an internal cost: it must show
    assert total == pytest.approx(sum(parts), abs=0.0003)  # each shown to 4 decimals
    assert "1 steps" not in result.stderr and "1 sources" not in result.stderr


def test_counts_in_the_summary() -> None:
    from handinger_stream.cli.run import summary
    from handinger_stream.types.worker import Source, Usage, Worker

    worker = Worker(
        id="w",
        status="completed",
        usage=Usage(output_tokens=1, steps=1),
        sources=[Source(id="s", url="https://example.com")],
    )
    text = summary(worker, 1.0)
    assert "1 step" in text and "1 steps" not in text
    assert "1 token " in text and "1 source" in text and "1 sources" not in text


@pytest.mark.parametrize(
    "args",
    [
        ("run", "x", "--tokens-per-second", "-5"),
        ("run", "x", "--tokens-per-second", "nan"),
        ("run", "x", "--tokens-per-second", "fast"),
        ("serve", "--tokens-per-second", "-1"),
        ("serve", "--port", "70000"),
        ("record", "--out", "x.json", "x", "--tokens-per-second", "-5"),
        ("watch", "--create", "2", "x", "--tokens-per-second", "inf"),
        ("watch", "wrk_1", "--max-concurrency", "0"),
        ("relay", "--port", "99999"),
        ("relay", "--tokens-per-second", "-1"),
        ("relay", "--lease-seconds", "0"),
    ],
)
def test_options_are_validated(args: tuple[str, ...]) -> None:
    result = cli_here(*args)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("error: argument")


def test_every_error_line_starts_with_error(emulator: Emulator) -> None:
    cases = [
        cli_here("run", "", base_url=emulator.base_url),
        cli_here("run", "x", "--budget", "huge"),
        cli_here("run", "x", key=None, base_url=emulator.base_url),
        cli_here("run", "x", key="sk-wrong", base_url=emulator.base_url),
        cli_here("fly"),
    ]  # (nothing listening: test_connection_and_auth_problems_exit_3)
    for result in cases:
        assert result.returncode != 0
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: "), result.stderr


def test_an_invalid_base_url_is_a_usage_error() -> None:
    for flag in (True, False):
        if flag:
            result = cli_here("run", "x", "--base-url", "not-a-url")
        else:
            result = cli_here("run", "x", base_url="not-a-url")
        assert result.returncode == 2
        assert "must be an http:// or https:// URL" in result.stderr
        assert "request was sent" not in result.stderr


def test_the_missing_key_message_speaks_of_the_command_line(emulator: Emulator) -> None:
    result = cli_here("run", "x", key=None, base_url=emulator.base_url)
    assert result.returncode == 3
    assert "--api-key" in result.stderr and "HANDINGER_API_KEY" in result.stderr
    assert "api_key=" not in result.stderr and "Handinger(" not in result.stderr


def test_help_says_what_json_prints_and_the_exit_codes() -> None:
    result = cli_here("run", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "one JSON object per line" in text and "data-worker" in text
    assert "141" in text and "130" in text


def test_help_says_the_defaults_and_fits_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    for command in ("run", "serve", "record"):
        result = cli_here(command, "--help")
        assert result.returncode == 0
        widest = max(result.stdout.splitlines(), key=len)
        assert len(widest) <= 80, widest
    serve = " ".join(cli_here("serve", "--help").stdout.split())
    # The emulator's pace differs here (a model's) from Emulator()'s (0): say so.
    assert "(default: 25" in serve and "0: as fast as possible" in serve
    assert "(default: 8787" in serve and "(default: 0" in serve  # the port, the seed


# -- the live view, on a real terminal ------------------------------------------


def capture(session: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (scripts/test installs it)")
def test_the_live_view_on_a_terminal() -> None:
    # 24 tokens a second: the reasoning (19 tokens) stays on screen for most of a second,
    # some ten repaints, while the whole run takes under four.
    session = f"handinger-view-{os.getpid()}"
    command = (
        f"{sys.executable} -m handinger_stream run --tokens-per-second 24; echo EXIT=$?; sleep 60"
    )
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", command],
        check=True,
        env=environment(),  # no key, no URL: the embedded emulator and its demo prompt
    )
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen.append(capture(session))
            if "EXIT=" in seen[-1]:
                break
            time.sleep(0.05)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    final = seen[-1]
    assert "EXIT=0" in final, final
    # While it worked without writing: the tail of its reasoning, then the tool and its input.
    thinking = [n for n, screen in enumerate(seen) if "thinking: The user asks" in screen]
    tool = [n for n, screen in enumerate(seen) if '⚙ web_search {"query":' in screen]
    assert thinking and tool and thinking[0] < tool[0]
    assert "running ·" in seen[tool[0]]  # live, before the end

    # Then the answer, wrapped at word boundaries by a greedy fill of the 100 columns.
    lines = final.splitlines()
    end = next(n for n, line in enumerate(lines) if line.startswith("— completed"))
    answer = [line.rstrip() for line in lines[1:end]]
    plan = plan_turn(DEFAULT_PROMPT, "standard", seed=0, turn=0)
    assert " ".join(answer) == " ".join("".join(plan.answer_tokens).split())
    assert len(answer) >= 3
    for line, following in itertools.pairwise(answer):
        assert len(line) <= 100
        assert len(line) + 1 + len(following.split()[0]) > 100, (line, following)


def test_the_view_shows_sources_as_they_arrive() -> None:
    from rich.console import Console

    from handinger_stream.cli.run import _View
    from handinger_stream.types.events import SourceUrlEvent, ToolInputStartEvent
    from handinger_stream.types.worker import Worker

    view = _View(time.monotonic())
    view._console = Console(width=80, height=20, record=True, file=io.StringIO())
    view.see(ToolInputStartEvent(tool_call_id="c1", tool_name="fetch_page"))
    view.see(SourceUrlEvent(source_id="s1", url="https://example.com/a", title="Example A"))
    view._console.print(view.render(Worker(id="w", status="running")))
    shown = view._console.export_text()
    assert "+ source: Example A <https://example.com/a>" in shown
    assert "⚙ fetch_page" in shown and "running · 0 tokens" in shown
