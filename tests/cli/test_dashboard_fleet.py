"""``handinger-stream watch --redis URL``: every turn that relay processes produce into one
Redis, on one terminal, with no API key.

A real redis-server, relay processes of their own (``handinger-stream relay --redis``)
in front of an emulator in this process, and the watch command in a subprocess
(``--json``) and under tmux (the table).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
import pytest

from handinger_stream import AsyncHandinger
from handinger_stream.emulator import Emulator
from tests.cli.helpers import Pane, cli, count, environment, rows, wait_for
from tests.relay_helpers import (
    RedisServer,
    RelayProcess,
    chat_body,
    free_port,
    http,
    paced,
    read_sse,
    redis,
    relays,
)

__all__ = ["http", "paced", "redis", "relays"]  # fixtures of other modules, used here

PROMPT = "What's the weather in Barcelona?"


async def start_turns(
    http: aiohttp.ClientSession, chats: list[tuple[RelayProcess, str]]
) -> dict[str, str]:
    """Post a message to each chat at its relay and leave: the turns go on. Chat → worker id."""
    workers: dict[str, str] = {}
    for relay, chat in chats:
        first = await read_sse(
            http, "POST", f"{relay.url}api/chat", json=chat_body(chat, PROMPT), stop_after=2
        )
        assert first.status == 200
        workers[chat] = first.headers["x-handinger-worker-id"]
    return workers


async def as_the_api_says(paced: Emulator, worker_id: str) -> Any:
    async with AsyncHandinger(api_key="any", base_url=paced.base_url) as client:
        return msgspec.to_builtins(await client.workers.retrieve(worker_id))


async def test_json_lines_follow_every_relay_s_turns_even_when_a_producer_dies(
    relays: Callable[[], RelayProcess],
    redis: RedisServer,
    paced: Emulator,
    http: aiohttp.ClientSession,
) -> None:
    a, b = relays(), relays()
    workers = await start_turns(http, [(a, "dash-a"), (b, "dash-b1"), (b, "dash-b2")])
    watcher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "handinger_stream", "watch",
        "--redis", redis.url, "--json", "--until-idle",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment(),  # no API key, no base URL: Redis is all it reads
    )  # fmt: skip
    assert watcher.stdout is not None
    lines: list[dict[str, Any]] = []
    # Once the watcher follows the turn relay A produces, A dies; a reader at B takes over.
    while not any(
        line["worker_id"] == workers["dash-a"] and line.get("status") == "running" for line in lines
    ):
        raw = await asyncio.wait_for(watcher.stdout.readline(), 60)
        assert raw, "the watcher ended before it saw relay A's turn running"
        lines.append(json.loads(raw))
    a.kill()
    resumed = asyncio.ensure_future(read_sse(http, "GET", f"{b.url}api/chat/dash-a/stream"))
    out, err = await asyncio.wait_for(watcher.communicate(), 120)
    lines += [json.loads(line) for line in out.decode().splitlines()]
    assert watcher.returncode == 0, err.decode()
    assert (await resumed).complete
    finals = {line["worker_id"]: line for line in lines if line["type"] == "worker"}
    assert set(finals) == set(workers.values())
    for worker_id, final in finals.items():
        assert final["status"] == "completed" and final["error"] is None
        # Folded from what the relays stored, across the producer's death: the worker itself.
        assert final["worker"] == await as_the_api_says(paced, worker_id)
    summary = err.decode().strip().splitlines()[-1]
    assert summary.startswith("3 workers: 3 completed, 0 failed · ")
    assert "Traceback" not in err.decode()


def test_without_until_idle_it_watches_until_ctrl_c(redis: RedisServer) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "handinger_stream", "watch", "--redis", redis.url, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    assert process.stderr is not None
    assert "until Ctrl-C" in process.stderr.readline()  # Redis answered: watching
    time.sleep(1)  # nothing running: it goes on looking
    assert process.poll() is None
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("interrupted · 0 workers: ")
    assert out == "" and "Traceback" not in err


def test_an_unreachable_redis_exits_3_and_says_so() -> None:
    redis_url = f"redis://:pw-secret@127.0.0.1:{free_port()}/0"
    done = cli("watch", "--redis", redis_url, "--until-idle", key=None)
    assert done.returncode == 3, done.stderr
    assert "Redis" in done.stderr and "unavailable" in done.stderr
    assert "pw-secret" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--redis", "redis://127.0.0.1:1/0", "wrk_1"), "no IDs"),
        (("--until-idle", "wrk_1"), "--until-idle goes with --redis"),
        (("--redis", "notaurl"), "not a Redis URL"),
    ],
)
def test_redis_usage_errors_exit_2(args: tuple[str, ...], says: str) -> None:
    done = cli("watch", *args, key=None)
    assert done.returncode == 2 and says in done.stderr, done.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
async def test_the_table_shows_what_every_relay_produces_on_a_real_terminal(
    relays: Callable[[], RelayProcess],
    redis: RedisServer,
    http: aiohttp.ClientSession,
    pane: Callable[..., Pane],
) -> None:
    a, b = relays(), relays()
    workers = await start_turns(http, [(a, "tmux-a1"), (a, "tmux-a2"), (b, "tmux-b1")])
    term = pane("--redis", redis.url, "--until-idle")
    first = await asyncio.to_thread(wait_for, term, r"last words")
    assert "handinger-stream watch" in first
    # A row for each turn, whichever relay produces it, and they finish in the table.
    end = await asyncio.to_thread(wait_for, term, r"^EXIT=\d+")
    assert set(workers.values()) <= set(rows(end))
    assert count(end, "completed") == 3 and count(end, "running") == 0
    assert any(line.startswith("3 workers: 3 completed, 0 failed · ") for line in end.splitlines())
    assert "EXIT=0" in end
