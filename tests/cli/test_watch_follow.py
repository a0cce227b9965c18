"""``handinger-stream watch`` on today's API: templates and tasks, ``--follow``, the trigger column.

Against loopback emulators; the command runs in a process of its own where
signals matter, else in this one (``cli_here``).
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys

import anyio
from rich.console import Console

from handinger_stream import AsyncHandinger, WatchEvent, Worker
from handinger_stream.emulator import Emulator
from handinger_stream.monitoring.dashboard import Board
from handinger_stream.types.events import StartEvent
from tests.cli.helpers import cli_here, environment, json_lines
from tests.conftest import API_KEY
from tests.helpers.emulators import emulator_fixture

fast = emulator_fixture(api_key=API_KEY, tokens_per_second=0)
paced = emulator_fixture(api_key=API_KEY, tokens_per_second=100, keepalive_interval=0.2)


def template_with_tasks(emu: Emulator) -> tuple[str, str, str]:
    """A template, a task by the API and one by e-mail, both finished."""

    async def main() -> tuple[str, str, str]:
        async with AsyncHandinger(api_key=API_KEY, base_url=emu.base_url) as client:
            template = await client.workers.create(instructions="Be brief")
            stream = await client.tasks.create(input="Hi", worker_id=template.id, stream=True)
            by_api = (await stream.get_final_worker()).metadata["taskId"]
            by_mail = emu.start_task(template.id, "An e-mail", triggered_by="email")
            await emu.idle()
            return template.id, by_api, by_mail

    return anyio.run(main)


def test_a_template_is_a_row_per_task_with_its_trigger(fast: Emulator) -> None:
    template_id, by_api, by_mail = template_with_tasks(fast)
    done = cli_here("watch", template_id, "--json", base_url=fast.base_url)
    assert done.returncode == 0, done.stderr
    finals = [line for line in json_lines(done.stdout) if line["type"] == "worker"]
    # A template's stream ends once: its last task's final line.
    assert [(f["task_id"], f["trigger"], f["status"]) for f in finals] == [
        (by_mail, "email", "completed")
    ]
    statuses = {(line["task_id"], line["trigger"]) for line in json_lines(done.stdout)}
    assert {(by_api, "api"), (by_mail, "email")} <= statuses
    assert "2 workers: 2 completed, 0 failed" in done.stderr  # a row each


def test_a_task_id_is_its_own_row(fast: Emulator) -> None:
    _, by_api, _ = template_with_tasks(fast)
    done = cli_here("watch", by_api, base_url=fast.base_url)
    assert done.returncode == 0, done.stderr
    assert "trigger" in done.stdout and by_api[:10] in done.stdout
    assert "1 worker: 1 completed" in done.stderr


def test_follow_shows_each_new_task_until_ctrl_c(paced: Emulator) -> None:
    template_id, by_api, _ = template_with_tasks(paced)
    process = subprocess.Popen(
        [sys.executable, "-m", "handinger_stream", "watch", template_id, "--follow", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(API_KEY, paced.base_url),
    )
    assert process.stdout is not None
    try:
        seen: list[tuple[str, str]] = []

        def until(task_id: str) -> None:
            while (task_id, "completed") not in seen:
                line = json.loads(process.stdout.readline())  # type: ignore[union-attr]
                assert line["type"] == "status", line  # a followed template does not end
                seen.append((line["task_id"], line["status"]))

        until(by_api)
        later = paced.start_task(template_id, "Sent by a schedule?", triggered_by="ui")
        until(later)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, err
    # Each task shown once: one run of statuses each, the later one after the others.
    tasks = list(dict.fromkeys(task for task, _ in seen))
    assert tasks[0] == by_api and tasks[-1] == later and len(tasks) == 3
    assert seen.count((later, "completed")) == 1 and seen.count((by_api, "completed")) == 1
    assert "interrupted · 3 workers" in err.splitlines()[-1]


def test_follow_needs_ids() -> None:
    done = cli_here("watch", "--follow", "--create", "1", "Hi")
    assert done.returncode == 2
    assert "error: --follow goes with IDs" in done.stderr


def _render(board: Board) -> str:
    out = io.StringIO()
    Console(width=140, file=out).print(board.table(height=20, width=140, now=10))
    return out.getvalue()


def test_the_trigger_column_shows_only_with_tasks() -> None:
    board = Board(started=0)
    board.add("wrk_seed")
    assert "trigger" not in _render(board)
    board.add("wrk_template")
    item = WatchEvent(
        "wrk_template", None, Worker(id="wrk_template"), task_id="tsk_1", trigger="schedule"
    )
    board.touch(item)
    board.refresh({"tsk_1": Worker(id="wrk_template", status="running")}, now=1)
    table = _render(board)
    assert "trigger" in table and "schedule" in table and "tsk_1" in table
    # The template's own row gave way to its task's; the seed worker's stays.
    assert set(board.rows) == {"wrk_seed", "tsk_1"}


def test_a_task_row_ends_with_its_turn_and_alone() -> None:
    board = Board(started=0)

    def item(task_id: str, event: bool = True) -> WatchEvent:
        worker = Worker(id="wrk_t")
        return WatchEvent("wrk_t", StartEvent() if event else None, worker, task_id=task_id)

    board.touch(item("tsk_a"))
    board.touch(item("tsk_b"))
    snapshots = {
        "tsk_a": Worker(id="wrk_t", status="completed"),
        "tsk_b": Worker(id="wrk_t", status="running"),
    }
    board.refresh(snapshots, now=5)
    assert board.rows["tsk_a"].ended == 5 and board.rows["tsk_b"].ended is None
    board.end(item("tsk_a", event=False), now=7)  # chats of a relay end one by one
    assert board.rows["tsk_b"].ended is None
    board.touch(item("tsk_a"))  # a later turn: live again
    assert board.rows["tsk_a"].ended is None
