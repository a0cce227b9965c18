"""``handinger-stream watch``: run as a subprocess against loopback emulators, and its parts.

The live table on a real terminal is tested under tmux in test_dashboard_tmux.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console

from handinger_stream import AsyncHandinger, Worker
from handinger_stream.cli.watch import REFRESH_PER_SECOND, _LiveTable
from handinger_stream.emulator import Emulator
from handinger_stream.monitoring.dashboard import Board, Row, current_step
from tests.cli.helpers import cli, environment, json_lines
from tests.conftest import API_KEY
from tests.helpers.emulators import emulator_fixture

FAULT = "x-emulator-fault"


def make(emu: Emulator, n: int, headers: dict[str, str] | None = None) -> list[str]:
    async def main() -> list[str]:
        async with AsyncHandinger(api_key=API_KEY, base_url=emu.base_url) as client:
            return [
                (
                    await client.workers.create(
                        input=f"Dashboard {i}", budget="low", extra_headers=headers
                    )
                ).id
                for i in range(n)
            ]

    return anyio.run(main)


def retrieve(emu: Emulator, worker_id: str) -> Worker:
    async def main() -> Worker:
        async with AsyncHandinger(api_key=API_KEY, base_url=emu.base_url) as client:
            return await client.workers.retrieve(worker_id)

    return anyio.run(main)


slow = emulator_fixture(api_key=API_KEY, tokens_per_second=20, keepalive_interval=0.2)


def test_json_lines_a_status_per_change_and_a_final_line_per_worker(emulator: Emulator) -> None:
    done = cli("watch", "--create", "3", "What's new?", "--json", base_url=emulator.base_url)
    assert done.returncode == 0, done.stderr
    out = json_lines(done.stdout)
    finals = [line for line in out if line["type"] == "worker"]
    assert len(finals) == 3 and {f["status"] for f in finals} == {"completed"}
    for final in finals:
        worker_id = final["worker_id"]
        statuses = [
            line["status"]
            for line in out
            if line["type"] == "status" and line["worker_id"] == worker_id
        ]
        assert statuses == ["pending", "running", "completed"]
        # The final line comes after the worker's status lines, and is the whole Worker.
        assert out.index(final) > max(
            i
            for i, line in enumerate(out)
            if line.get("worker_id") == worker_id and line["type"] == "status"
        )
        worker = retrieve(emulator, worker_id)
        assert final["worker"]["output_text"] == worker.output_text
        assert final["worker"]["id"] == worker_id and final["error"] is None
    summary = done.stderr.strip().splitlines()[-1]
    assert summary.startswith("3 workers: 3 completed, 0 failed · ")
    assert " tokens · $" in summary and summary.endswith("s")
    assert API_KEY not in done.stdout + done.stderr


def test_watching_ids_and_ids_from_a_file(emulator: Emulator, tmp_path: Path) -> None:
    ids = make(emulator, 4)
    listed = tmp_path / "ids.txt"
    listed.write_text("\n".join([ids[2], "", "# a comment", ids[3], ids[0]]) + "\n")
    done = cli(
        "watch", ids[0], ids[1], "--ids-from", str(listed), "--json", base_url=emulator.base_url
    )
    assert done.returncode == 0, done.stderr
    finals = [line for line in json_lines(done.stdout) if line["type"] == "worker"]
    assert sorted(f["worker_id"] for f in finals) == sorted(ids)  # each id once
    assert done.stderr.strip().endswith("s") and "4 workers: 4 completed" in done.stderr


def test_a_failed_worker_exits_1(emulator: Emulator) -> None:
    good = make(emulator, 2)
    bad = make(emulator, 1, {FAULT: "error-after=10"})
    done = cli("watch", *good, *bad, "--json", base_url=emulator.base_url)
    assert done.returncode == 1, done.stderr
    finals = {
        line["worker_id"]: line for line in json_lines(done.stdout) if line["type"] == "worker"
    }
    assert finals[bad[0]]["status"] == "failed"
    assert finals[bad[0]]["worker"]["error"] == "injected fault: the agent failed"
    # Where a reader looks first: the top level says how it ended, and why.
    assert finals[bad[0]]["outcome"] == "failed"
    assert finals[bad[0]]["error"] == "injected fault: the agent failed"
    assert {finals[g]["outcome"] for g in good} == {"completed"}
    statuses = [line for line in json_lines(done.stdout) if line["type"] == "status"]
    assert all("outcome" in line and "error" in line for line in statuses)
    assert "3 workers: 2 completed, 1 failed" in done.stderr
    assert "Traceback" not in done.stderr


def test_connection_and_authentication_problems_exit_3(emulator: Emulator) -> None:
    closed = "http://127.0.0.1:9"  # nothing listens on the discard port
    done = cli("watch", "--create", "2", "Hi", base_url=closed)
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("error: cannot reach http://127.0.0.1:9")
    assert "Traceback" not in done.stderr
    with Emulator(api_key="the-right-key") as strict:
        done = cli("watch", "wrk_1", "wrk_2", "--json", key="a-wrong-key", base_url=strict.base_url)
    assert done.returncode == 3, done.stderr
    finals = [line for line in json_lines(done.stdout) if line["type"] == "worker"]
    assert {f["status"] for f in finals} == {"lost"} and len(finals) == 2
    assert "a-wrong-key" not in done.stdout + done.stderr
    assert "2 workers: 0 completed, 0 failed, 2 lost" in done.stderr


def test_an_unknown_id_is_a_usage_error_beside_the_others(emulator: Emulator) -> None:
    (good,) = make(emulator, 1)
    done = cli("watch", good, "wrk_nobody", "--json", base_url=emulator.base_url)
    assert done.returncode == 2, done.stderr
    finals = {
        line["worker_id"]: line for line in json_lines(done.stdout) if line["type"] == "worker"
    }
    assert finals[good]["status"] == "completed"
    assert (
        finals["wrk_nobody"]["status"] == "lost" and "wrk_nobody" in finals["wrk_nobody"]["error"]
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "nothing to watch"),
        (("--create", "many", "Hi"), "N must be a number"),
        (("--create", "0", "Hi"), "at least 1"),
        (("wrk_1", "--max-concurrency", "0"), "max-concurrency"),
        (("wrk_1", "--max-concurrency", "many"), "max-concurrency"),
    ],
)
def test_usage_errors_exit_2(emulator: Emulator, args: tuple[str, ...], says: str) -> None:
    done = cli("watch", *args, base_url=emulator.base_url)
    assert done.returncode == 2 and says in done.stderr, done.stderr


def test_ids_without_a_service_say_how_to_use_the_emulator() -> None:
    done = cli("watch", "wrk_1", key=None)
    assert done.returncode == 2
    assert "--create" in done.stderr


def test_the_embedded_emulator_plays_a_fleet() -> None:
    done = cli(
        "watch", "--create", "12", "Research", "--json", "--tokens-per-second", "0", key=None
    )
    assert done.returncode in (0, 1), done.stderr
    assert "embedded emulator" in done.stderr.splitlines()[0]
    finals = [line for line in json_lines(done.stdout) if line["type"] == "worker"]
    assert len(finals) == 12
    lengths = {len(f["worker"]["output_text"]) for f in finals if f["status"] == "completed"}
    assert len(lengths) > 3  # varied lengths, not twelve copies of one answer
    tools = {
        part["type"]
        for f in finals
        for message in f["worker"]["messages"]
        for part in message["parts"]
        if part["type"].startswith("tool-")
    }
    assert len(tools) > 1
    failed = sum(f["status"] == "failed" for f in finals)
    assert done.returncode == (1 if failed else 0)


def test_ctrl_c_stops_watching_prints_the_summary_so_far_and_exits_130(slow: Emulator) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "handinger_stream", "watch", "--create", "3", "Hi", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(API_KEY, slow.base_url),
    )
    assert process.stdout is not None and process.stderr is not None
    seen = [json.loads(process.stdout.readline()) for _ in range(3)]
    assert {line["type"] for line in seen} == {"status"}
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("interrupted · 3 workers: 0 completed, 0 failed, 3 not finished")
    assert "Traceback" not in err
    # Watching stopped; the workers did not: they finish on the server.
    ids = {line["worker_id"] for line in seen}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(retrieve(slow, i).status != "completed" for i in ids):
        time.sleep(0.5)
    assert all(retrieve(slow, i).status == "completed" for i in ids)


def test_a_closed_pipe_stops_watching_quietly_with_141(slow: Emulator) -> None:
    # As `watch --json | head -1`: the reader takes a line and leaves, as with `run`.
    with subprocess.Popen(
        [sys.executable, "-m", "handinger_stream", "watch", "--create", "3", "Hi", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(API_KEY, slow.base_url),
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        assert json.loads(process.stdout.readline())["type"] == "status"
        process.stdout.close()
        err = process.stderr.read().decode()
        assert process.wait(30) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_without_a_terminal_the_table_is_printed_once_at_the_end(emulator: Emulator) -> None:
    done = cli("watch", "--create", "2", "Plain", base_url=emulator.base_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("last words") == 1
    assert done.stdout.count("completed") >= 2 and "2 workers" in done.stdout


# -- the parts ----------------------------------------------------------------------


def _message(*parts: dict[str, Any]) -> Worker:
    return Worker(id="w", status="running", messages=[{"role": "assistant", "parts": list(parts)}])


def test_the_current_step_comes_from_the_last_part() -> None:
    assert current_step(_message({"type": "reasoning", "state": "streaming"})) == "reasoning"
    assert current_step(_message({"type": "text", "state": "streaming"})) == "writing"
    assert current_step(_message({"type": "text", "state": "done"})) == "waiting"
    tool = {"type": "tool-fetch_page", "state": "input-available"}
    assert current_step(_message({"type": "step-start"}, tool)) == "fetch_page"
    done = {**tool, "state": "output-available"}
    assert current_step(_message(done, {"type": "source-url"})) == "waiting"
    dynamic = {"type": "dynamic-tool", "toolName": "browse", "state": "input-streaming"}
    assert current_step(_message(dynamic)) == "browse"
    assert current_step(_message({"type": "step-start"})) == "waiting"
    assert current_step(Worker(id="w")) == "waiting"


def test_failed_and_active_rows_sort_first_and_the_rest_are_counted() -> None:
    board = Board(started=0)
    statuses = ["completed", "running", "waiting", "failed", "completed", "running", "lost"]
    for i, status in enumerate(statuses):
        board.rows[f"w{i}"] = Row(f"w{i}", status=status, ended=float(i) if i in (0, 4) else None)
    order = [row.status for row in board.ordered()]
    assert order == ["failed", "lost", "running", "running", "waiting", "completed", "completed"]
    assert [row.id for row in board.ordered()][-2:] == ["w4", "w0"]  # latest finished first
    console = Console(width=140, record=True, force_terminal=False)
    console.print(board.table(height=12, width=140, now=10))
    text = console.export_text()
    # Three rows fit, then what the others are.
    assert "w3" in text and "w6" in text and "w1" in text
    assert "… 4 more" in text and "1 running, 1 waiting, 2 completed" in text


def test_a_narrow_terminal_keeps_status_step_and_words() -> None:
    board = Board(started=0)
    board.rows["wrk_0123456789abcdef0123"] = Row(
        "wrk_0123456789abcdef0123", status="running", step="writing", last_words="hello there"
    )
    for width in (80, 100, 140):
        console = Console(width=width, record=True, force_terminal=False)
        console.print(board.table(height=20, width=width, now=1))
        text = console.export_text()
        assert "writing" in text and "hello there" in text and "running" in text
        assert max(len(line) for line in text.splitlines()) <= width


def test_the_table_is_redrawn_a_few_times_a_second_whatever_the_token_rate(
    emulator: Emulator,
) -> None:
    """Coalesced: 100 workers' thousands of events cost a handful of frames, not one each."""
    frames = 0
    events = 0

    async def main() -> None:
        nonlocal frames, events
        async with AsyncHandinger(api_key=API_KEY, base_url=emulator.base_url) as client:
            ids = [(await client.workers.create(input=f"Busy {i}")).id for i in range(100)]
            board = Board()
            for worker_id in ids:
                board.add(worker_id)
            live = _LiveTable(board)
            live.console = Console(width=140, height=40, record=True, force_terminal=True)
            live.live.console = live.console
            painted = live.paint

            def counting(watch: Any = None) -> None:
                nonlocal frames
                frames += 1
                painted(watch)

            live.paint = counting  # type: ignore[method-assign]
            touch = board.touch

            def counted(item: Any) -> None:
                nonlocal events
                events += 1
                touch(item)

            board.touch = counted  # type: ignore[method-assign]
            started = time.monotonic()
            async with client.workers.watch(ids) as watch:
                await live.run(watch)
            live.close()
            wall = time.monotonic() - started
            assert frames <= wall * REFRESH_PER_SECOND + 3
            assert board.counts()["completed"] == 100

    anyio.run(main)
    assert events > 100 * 60 and 2 <= frames < events / 50
