"""The relay on a worker template (today's API): a chat is a task, each message a turn.

Over loopback HTTP against the emulator, with the MemoryStore: a chat over the
aiohttp app, late joiners, a take-over while other tasks share the template's
stream, and the command's ``--worker``.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest
from aiohttp import web

from handinger_stream import AsyncHandinger, InvalidRequestError
from handinger_stream.emulator import Emulator
from handinger_stream.relay import FleetWatch, MemoryStore, Relay, make_aiohttp_app, task_id_for
from handinger_stream.relay.core import _TaskTurn
from handinger_stream.types.events import (
    Event,
    FinishEvent,
    StartEvent,
    TextDeltaEvent,
    WorkerSnapshotEvent,
)
from handinger_stream.types.task import TaskWithTurns
from handinger_stream.types.worker import Worker
from tests.cli.helpers import cli_here
from tests.relay_helpers import (
    RedisServer,
    SSEReply,
    chat_body,
    emulator_replay,
    read_sse,
    redis,
)

__all__ = ["redis"]  # a fixture of tests/relay_helpers.py, used here

PROMPT = "What's the weather in Barcelona?"
KEY = "sk-relay-key"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(tokens_per_second=150, keepalive_interval=0.2) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[AsyncHandinger]:
    async with AsyncHandinger(api_key=KEY, base_url=emu.base_url) as c:
        yield c


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def serve(relay: Relay) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(make_aiohttp_app(relay, keepalive=0.05), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/"


def task_turns(replay: list[Any], task_id: str) -> list[list[Any]]:
    """The template's stored chunks, cut into the turns of one task (each from its opening
    snapshot to the next turn's)."""
    turns: list[list[Any]] = []
    mine = False
    for chunk in replay:
        named = None
        if chunk.get("type") == "data-worker":
            named = chunk["data"].get("metadata", {}).get("taskId")
            if named is not None and chunk["data"]["status"] == "pending":
                mine = named == task_id
                if mine:
                    turns.append([])
        if mine:
            turns[-1].append(chunk)
    return turns


def without_snapshots(chunks: list[Any]) -> list[Any]:
    return [c for c in chunks if c.get("type") != "data-worker"]


async def test_a_chat_is_a_task_and_each_message_a_turn(
    emu: Emulator, client: AsyncHandinger, http: aiohttp.ClientSession
) -> None:
    template = await client.workers.create(instructions="Answer briefly")
    async with Relay(client, MemoryStore(), worker_id=template.id) as relay:
        runner, base = await serve(relay)
        try:
            first = await read_sse(http, "POST", base + "api/chat", json=chat_body("c1", PROMPT))
            assert first.status == 200 and first.complete
            assert first.headers["x-handinger-worker-id"] == template.id
            # Another task on the template in between: none of it reaches this chat.
            emu.start_task(template.id, "An e-mail meanwhile", triggered_by="email")
            second = await read_sse(
                http, "POST", base + "api/chat", json=chat_body("c1", "And tomorrow?")
            )
            assert second.complete
            async with http.get(base + "api/chat/c1") as history:
                messages = (await history.json())["messages"]
        finally:
            await runner.cleanup()
    task_id = task_id_for(template.id, "c1")
    assert relay.task_id("c1") == task_id
    found = await client.tasks.retrieve(task_id)
    assert found.task.worker_id == template.id and found.task.triggered_by == "api"
    assert [turn.input for turn in found.turns] == [PROMPT, "And tomorrow?"]
    turns = task_turns(await emulator_replay(emu.base_url, template.id), task_id)
    assert len(turns) == 2
    assert first.chunks == without_snapshots(turns[0])
    assert second.chunks == without_snapshots(turns[1])
    assert [(m["role"], m["parts"][0]["text"]) for m in messages] == [
        ("user", PROMPT),
        ("assistant", found.turns[0].output_text),
        ("user", "And tomorrow?"),
        ("assistant", found.turns[1].output_text),
    ]


async def test_late_joiners_and_resumers_read_the_running_turn(
    client: AsyncHandinger, http: aiohttp.ClientSession
) -> None:
    template = await client.workers.create(instructions="Answer briefly")
    async with Relay(client, worker_id=template.id) as relay:
        runner, base = await serve(relay)
        try:
            first = await read_sse(
                http, "POST", base + "api/chat", json=chat_body("late", PROMPT), stop_after=4
            )
            readers = [read_sse(http, "GET", base + "api/chat/late/stream") for _ in range(5)]
            resumed = read_sse(
                http,
                "GET",
                base + "api/chat/late/stream",
                headers={"last-event-id": first.events[1][0] or ""},
            )
            *late, rest = await asyncio.gather(*readers, resumed)
        finally:
            await runner.cleanup()
    for reply in late:
        assert reply.complete and reply.events == late[0].events
    assert late[0].data[:4] == first.data
    assert rest.data == late[0].data[2:]


async def test_a_turn_taken_over_keeps_to_its_task_in_the_templates_stream(
    emu: Emulator, client: AsyncHandinger
) -> None:
    template = await client.workers.create(instructions="Answer briefly")
    store = MemoryStore()
    async with Relay(client, store, worker_id=template.id, lease_seconds=1.0) as first:
        turn = await first.send("c", PROMPT)
        taken = []
        async for entry in first.read("c", after=turn.after):
            taken.append(entry)
            if len(taken) == 5:
                break
        # A task queued behind this turn: the template's stream plays it next.
        emu.start_task(template.id, "An e-mail after", triggered_by="email")
    # The first relay stopped (its lease released): another takes the turn over.
    async with Relay(client, store, worker_id=template.id, lease_seconds=1.0) as second:
        with anyio.fail_after(30):
            entries = [entry async for entry in second.read("c", after=turn.after)]
    assert entries[-1].end and entries[-1].error is None
    await emu.idle()
    turns = task_turns(await emulator_replay(emu.base_url, template.id), relay_task(template.id))
    got = [msgspec.json.decode(e.data) for e in entries[:-1]]
    # Exactly this task's turn, none of the e-mail's after it. (Snapshots compared by what
    # they say of the task: a relayed Worker is re-encoded, its usage with the seed's fields.)
    assert len(got) == len(turns[0])
    assert without_snapshots(got) == without_snapshots(turns[0])
    snapshots = [(c["data"]["status"], c["data"]["metadata"]) for c in got if c not in turns[0]]
    assert snapshots in (
        [],
        [("completed", {"budget": "standard", "taskId": relay_task(template.id)})],
    )
    assert [e.data for e in entries[:5]] == [e.data for e in taken]


def relay_task(template_id: str) -> str:
    return task_id_for(template_id, "c")


async def test_a_relay_on_a_template_refuses_an_empty_id(client: AsyncHandinger) -> None:
    with pytest.raises(InvalidRequestError):
        Relay(client, worker_id="")
    relay = Relay(client)
    with pytest.raises(InvalidRequestError):
        relay.task_id("c")


def test_the_command_wants_a_service_and_a_template_for_worker() -> None:
    done = cli_here("relay", "--worker", "wrk_1", "--port", "0", key=None)
    assert done.returncode == 2
    assert "error: --worker names a template of the API" in done.stderr
    with Emulator() as emulator:
        done = cli_here("relay", "--worker", "wrk_nope", "--port", "0", base_url=emulator.base_url)
    assert done.returncode == 2
    assert "error: --worker: the API has no worker 'wrk_nope'" in done.stderr


def test_the_command_runs_each_chat_as_a_task_of_the_worker() -> None:
    with Emulator(tokens_per_second=0) as emulator:

        async def template() -> str:
            async with AsyncHandinger(api_key=KEY, base_url=emulator.base_url) as c:
                return (await c.workers.create(instructions="Be brief")).id

        template_id = asyncio.run(template())
        env = {k: v for k, v in os.environ.items() if not k.startswith("HANDINGER_")}
        env["HANDINGER_API_KEY"] = KEY
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "handinger_stream", "relay", "--port", "0"),
                *("--base-url", emulator.base_url, "--worker", template_id),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        try:
            assert process.stderr is not None
            said = process.stderr.readline()
            found = re.search(r"relay on (http://\S+/)", said)
            assert found and f"each chat a task of worker {template_id}" in said, said

            async def chat() -> SSEReply:
                async with aiohttp.ClientSession() as http:
                    return await read_sse(
                        http, "POST", found.group(1) + "api/chat", json=chat_body("cli", "Hi")
                    )

            turn = asyncio.run(chat())
        finally:
            process.terminate()
            assert process.wait(10) == 0
            assert process.stderr is not None
            process.stderr.close()

        async def task() -> TaskWithTurns:
            async with AsyncHandinger(api_key=KEY, base_url=emulator.base_url) as c:
                return await c.tasks.retrieve(task_id_for(template_id, "cli"))

        found_task = asyncio.run(task())
    assert turn.complete and turn.headers["x-handinger-worker-id"] == template_id
    assert [t.input for t in found_task.turns] == ["Hi"]
    assert KEY not in said


# -- several relay processes over Redis ---------------------------------------------


class _Relay:
    """``handinger-stream relay --worker ID --redis URL`` in a process of its own."""

    def __init__(self, base_url: str, redis_url: str, worker_id: str, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HANDINGER_")}
        env |= {"HANDINGER_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "handinger_stream", "relay", "--port", "0"),
                    *("--base-url", base_url, "--redis", redis_url, "--worker", worker_id),
                    *("--lease-seconds", "1"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.search(r"relay on (http://\S+/)", log.read_text(errors="replace"))
            if found:
                self.url = found.group(1)
                return
            assert self.process.poll() is None, log.read_text(errors="replace")
            time.sleep(0.05)
        pytest.fail("the relay did not start")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def test_on_redis_a_killed_producers_turn_resumes_on_another_relay(
    redis: RedisServer, tmp_path: Path
) -> None:
    with Emulator(tokens_per_second=40, keepalive_interval=0.5) as emulator:

        async def template() -> str:
            async with AsyncHandinger(api_key=KEY, base_url=emulator.base_url) as c:
                return (await c.workers.create(instructions="Be brief")).id

        template_id = asyncio.run(template())
        relays = [
            _Relay(emulator.base_url, redis.url, template_id, tmp_path / f"relay-{i}.log")
            for i in range(2)
        ]
        try:

            async def chat() -> tuple[SSEReply, SSEReply, list[Any]]:
                async with aiohttp.ClientSession() as http:
                    first = await read_sse(
                        http,
                        "POST",
                        relays[0].url + "api/chat?compact=0",  # every event, as sent
                        json=chat_body("r1", PROMPT),
                        stop_after=5,
                    )
                    # Another task queued on the template: its turn follows this one.
                    emulator.start_task(template_id, "An e-mail", triggered_by="email")
                    relays[0].kill()  # the producer, without a goodbye: its lease expires
                    rest = await read_sse(
                        http,
                        "GET",
                        relays[1].url + "api/chat/r1/stream?compact=0",
                        headers={"last-event-id": first.last_id or ""},
                    )
                # The template's replay ends once no turn plays: the e-mail's too.
                return first, rest, await emulator_replay(emulator.base_url, template_id)

            first, rest, replay = asyncio.run(chat())
        finally:
            for relay in relays:
                relay.stop()
    assert rest.status == 200 and rest.complete
    turns = task_turns(replay, task_id_for(template_id, "r1"))
    assert first.chunks + rest.chunks == without_snapshots(turns[0])


async def test_the_fleet_view_tells_chats_on_one_template_apart(client: AsyncHandinger) -> None:
    template = await client.workers.create(instructions="Answer briefly")
    store = MemoryStore()
    async with Relay(client, store, worker_id=template.id) as relay:
        for chat_id in ("a", "b"):  # the template plays them one after the other
            await relay.send(chat_id, PROMPT)
        async with FleetWatch(store, until_idle=True, interval=0.02) as fleet:
            with anyio.fail_after(30):
                items = [item async for item in fleet.events(ends=True)]
            tasks = dict(fleet.tasks)
    expected = {relay.task_id("a"), relay.task_id("b")}
    assert {item.task_id for item in items} == expected
    assert {item.worker_id for item in items} == {template.id}
    assert set(tasks) == expected
    for task_id in expected:
        assert tasks[task_id].status == "completed"
        assert tasks[task_id].metadata["taskId"] == task_id


def _events(task_id: str) -> list[Event]:
    """One turn of a task, as a template's stream has it: snapshot, start, text, finish."""
    worker = Worker(id="wrk_t", metadata={"taskId": task_id})
    return [
        WorkerSnapshotEvent(worker=worker, fields=frozenset({"id", "metadata"})),
        StartEvent(message_id=f"m-{task_id}", message_metadata={"taskId": task_id}),
        TextDeltaEvent(id="t", delta=task_id),
        FinishEvent(),
    ]


def _admitted(turn: _TaskTurn, events: list[Event]) -> list[Event]:
    kept: list[Event] = []
    for event in events:
        verdict = turn.admit(event)
        if verdict is None:
            break
        if verdict:
            kept.append(event)
    return kept


def test_a_task_turn_is_told_from_the_others_in_a_templates_stream() -> None:
    a1, b, a2 = _events("a"), _events("b"), _events("a")
    # From its start: its own events, up to where another task's turn begins.
    assert _admitted(_TaskTurn("a"), a1 + b) == a1
    # A replay from the template's start: other tasks skipped, earlier turns passed.
    assert _admitted(_TaskTurn("a", skip=1, inside=False), b + a1 + b + a2) == a2
    assert _admitted(_TaskTurn("a", skip=0, inside=False), b + a1 + b) == a1
    # A later turn of the same task ends it at its start (a snapshot between the two
    # turns is the task's, and kept: it can only say what the task is now).
    assert _admitted(_TaskTurn("a", inside=False), a1 + a2[1:]) == a1
    # Resumed inside the turn (after its last event stored): the rest, then stop.
    assert _admitted(_TaskTurn("a"), a1[2:] + b) == a1[2:]
