"""client.workers.watch on today's API: task ids, templates, triggers, following.

Over loopback HTTP against the emulator (in a thread), under asyncio and trio.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest

from handinger_stream import (
    AsyncHandinger,
    Handinger,
    InvalidRequestError,
    NotFoundError,
    TextDeltaEvent,
)
from handinger_stream.client.watch import WatchEvent
from handinger_stream.emulator import Emulator, EmulatorClock
from handinger_stream.types.events import StartEvent
from tests.conftest import API_KEY, Canned, RawServer
from tests.helpers.emulators import emulator_fixture

BACKENDS = ["asyncio", "trio"]

fast = emulator_fixture(api_key=API_KEY, tokens_per_second=0)
paced = emulator_fixture(api_key=API_KEY, tokens_per_second=200, keepalive_interval=0.2)


def run(backend: str, main: Callable[[], Awaitable[None]]) -> None:
    anyio.run(main, backend=backend)


def client_for(emu: Emulator) -> AsyncHandinger:
    return AsyncHandinger(api_key=API_KEY, base_url=emu.base_url)


async def template_with_tasks(client: AsyncHandinger, emu: Emulator) -> tuple[str, list[str]]:
    """A template with three finished tasks: two turns by the API, one by e-mail."""
    template = await client.workers.create(instructions="Answer in one paragraph")
    stream = await client.tasks.create(input="First", worker_id=template.id, stream=True)
    first = (await stream.get_final_worker()).metadata["taskId"]
    again = await client.tasks.create(
        input="Again", task_id=first, worker_id=template.id, stream=True
    )
    await again.get_final_worker()
    mailed = emu.start_task(template.id, "Reply to this e-mail", triggered_by="email")
    await emu.idle()
    stream = await client.tasks.create(input="Third", worker_id=template.id, stream=True)
    third = (await stream.get_final_worker()).metadata["taskId"]
    return template.id, [first, mailed, third]


async def drain(watch: AsyncIterator[WatchEvent]) -> list[WatchEvent]:
    return [item async for item in watch]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_template_shows_each_task_with_its_trigger(fast: Emulator, backend: str) -> None:
    async def main() -> None:
        async with client_for(fast) as client:
            template_id, task_ids = await template_with_tasks(client, fast)
            async with client.workers.watch([template_id]) as watch:
                items = await drain(watch)
                tasks = dict(watch.tasks)
        assert {item.worker_id for item in items} == {template_id}
        order = list(dict.fromkeys(item.task_id for item in items))
        assert order == task_ids
        triggers = {item.task_id: item.trigger for item in items}
        assert triggers == dict(zip(task_ids, ["api", "email", "api"], strict=True))
        # Each task's Worker as its turns left it: its own answer, not the next task's.
        for task_id in task_ids:
            assert tasks[task_id].metadata["taskId"] == task_id
            assert tasks[task_id].status == "completed"
            text = "".join(
                i.event.delta
                for i in items
                if i.task_id == task_id and isinstance(i.event, TextDeltaEvent)
            )
            assert text.endswith(tasks[task_id].output_text[-40:])

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_task_id_shows_only_that_task(fast: Emulator, backend: str) -> None:
    async def main() -> None:
        async with client_for(fast) as client:
            template_id, (first, mailed, _) = await template_with_tasks(client, fast)
            # Given as a worker id (tried as a worker first, then as a task) and as a task.
            async with client.workers.watch([first], tasks=[mailed]) as watch:
                items = await drain(watch.events(ends=True))
                snapshots = dict(watch.workers)
                found = await client.tasks.retrieve(first)
        by_task: dict[str | None, list[WatchEvent]] = {}
        for item in items:
            by_task.setdefault(item.task_id, []).append(item)
        assert set(by_task) == {first, mailed}
        assert all(item.worker_id == template_id for item in items)
        assert {item.trigger for item in by_task[first]} == {"api"}
        assert {item.trigger for item in by_task[mailed]} == {"email"}
        # Two turns of the first task, one of the e-mailed one; an end item each.
        assert sum(isinstance(i.event, StartEvent) for i in by_task[first]) == 2
        assert sum(isinstance(i.event, StartEvent) for i in by_task[mailed]) == 1
        assert [i.event for i in items if i.event is None and i.error is None] == [None, None]
        assert snapshots[first].metadata["taskId"] == first
        assert snapshots[first].output_text.endswith(found.turns[-1].output_text[-40:])
        assert snapshots[mailed].metadata["taskId"] == mailed

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_id_that_is_neither_is_one_error_item(fast: Emulator, backend: str) -> None:
    async def main() -> None:
        async with client_for(fast) as client, client.workers.watch(["nope"]) as watch:
            items = await drain(watch)
        assert len(items) == 1
        assert isinstance(items[0].error, NotFoundError)
        assert items[0].task_id is None

    run(backend, main)


def test_a_seed_worker_carries_no_task(fast: Emulator) -> None:
    async def main() -> None:
        async with client_for(fast) as client:
            worker = await client.workers.create(input="Hi", budget="low")
            async with client.workers.watch([worker.id], follow=True) as watch:
                items = await drain(watch)  # follow: a seed run's stream still ends
        assert items and {(i.task_id, i.trigger) for i in items} == {(None, None)}

    run("asyncio", main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_follow_shows_tasks_started_later_once_each(paced: Emulator, backend: str) -> None:
    async def main() -> None:
        async with client_for(paced) as client:
            template = await client.workers.create(instructions="Be brief")
            first = paced.start_task(template.id, "Scheduled-like", triggered_by="ui")
            starts: list[tuple[str | None, str | None]] = []
            with anyio.fail_after(30):
                async with client.workers.watch([template.id], follow=True) as watch:
                    async for item in watch:
                        if isinstance(item.event, StartEvent):
                            starts.append((item.task_id, item.trigger))
                            if len(starts) == 1:
                                # Its stream closes after this turn; a later task still shows.
                                await paced.idle()
                                await anyio.sleep(0.6)
                                later = paced.start_task(
                                    template.id, "By mail", triggered_by="email"
                                )
                                again = await client.tasks.create(
                                    input="Direct", worker_id=template.id
                                )
                        if (
                            len(starts) == 3
                            and watch.tasks[starts[-1][0] or ""].status == "completed"
                        ):
                            break
        assert starts == [
            (first, "ui"),
            (later, "email"),
            (again.metadata["taskId"], "api"),
        ]

    run(backend, main)


def test_sync_watch_takes_tasks_too(fast: Emulator) -> None:
    async def make() -> tuple[str, list[str]]:
        async with client_for(fast) as client:
            return await template_with_tasks(client, fast)

    template_id, (first, mailed, _) = anyio.run(make)
    with Handinger(api_key=API_KEY, base_url=fast.base_url) as client:
        items = list(client.workers.watch(tasks=[mailed]))
    assert items and {(i.worker_id, i.task_id, i.trigger) for i in items} == {
        (template_id, mailed, "email")
    }
    assert first not in {i.task_id for i in items}


def test_follow_shows_a_cron_schedules_runs_as_they_fire() -> None:
    clock = EmulatorClock(start="2026-03-02T08:00:00Z")

    async def main() -> None:
        async with (
            Emulator(api_key=API_KEY, tokens_per_second=0, clock=clock) as emu,
            client_for(emu) as client,
        ):
            template = await client.workers.create(instructions="Morning brief")
            when = {"type": "cron", "cron": "0 9 * * *"}
            await client.workers.schedules.create(template.id, input="Brief me", when=when)
            starts: list[tuple[str | None, str | None]] = []
            with anyio.fail_after(30):
                async with client.workers.watch([template.id], follow=True) as watch:
                    fired = clock.advance(2 * 24 * 3600)  # two mornings, while attached
                    async for item in watch:
                        if isinstance(item.event, StartEvent):
                            starts.append((item.task_id, item.trigger))
                        if len(starts) == fired and all(
                            watch.tasks[t].status == "completed" for t, _ in starts if t
                        ):
                            break
        assert fired == 2
        assert [trigger for _, trigger in starts] == ["schedule", "schedule"]
        assert len({task for task, _ in starts}) == 2

    anyio.run(main)


def _turn(task_id: str, first: int) -> bytes:
    """A task's turn as a template's stream sends it, its events' ids from ``first``."""
    chunks = [
        {"type": "start", "messageId": f"msg_{task_id}", "messageMetadata": {"taskId": task_id}},
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": f"answer of {task_id}"},
        {"type": "text-end", "id": "t"},
        {"type": "finish"},
    ]
    return b"".join(
        b"id: %d\ndata: %s\n\n" % (first + i, json.dumps(c).encode()) for i, c in enumerate(chunks)
    )


def _task(task_id: str, trigger: str) -> Canned:
    body = {
        "task": {"id": task_id, "workerId": "wrk_t", "triggeredBy": trigger},
        "turns": [],
    }
    return Canned([json.dumps(body).encode()], headers={"content-type": "application/json"})


def test_follow_skips_what_a_server_ignoring_last_event_id_replays(raw_server: RawServer) -> None:
    done = b"data: [DONE]\n\n"
    everything = Canned([_turn("t1", 1) + _turn("t2", 6), done])
    raw_server.serve(
        Canned([_turn("t1", 1), done]),  # the template's stream, closing after t1
        _task("t1", "api"),  # t1's trigger
        everything,  # reopened: the server replays t1 again, then t2
        _task("t2", "schedule"),
        everything,  # and again, with nothing new, as long as it is followed
    )
    seen: list[tuple[str | None, str | None, str]] = []

    async def main() -> None:
        async with AsyncHandinger(api_key=API_KEY, base_url=raw_server.base_url) as client:
            async with client.workers.watch(["wrk_t"], follow=True) as watch:
                items = watch.__aiter__()
                with anyio.fail_after(20):
                    while len(seen) < 10:
                        item = await items.__anext__()
                        seen.append((item.task_id, item.trigger, type(item.event).__name__))
                with anyio.move_on_after(1.5):  # reopened again and again: nothing new
                    item = await items.__anext__()
                    seen.append((item.task_id, item.trigger, type(item.event).__name__))

    anyio.run(main)
    kinds = ["StartEvent", "TextStartEvent", "TextDeltaEvent", "TextEndEvent", "FinishEvent"]
    assert seen == [("t1", "api", k) for k in kinds] + [("t2", "schedule", k) for k in kinds]
    reopens = [r for r in raw_server.requests if "stream=true" in r["path"]][1:]
    assert reopens and all(
        {k.lower(): v for k, v in r["headers"].items()}["last-event-id"] in ("5", "10")
        for r in reopens
    )


def test_a_task_added_and_one_removed_while_watching(fast: Emulator) -> None:
    async def main() -> None:
        async with client_for(fast) as client:
            _, (first, mailed, third) = await template_with_tasks(client, fast)
            async with client.workers.watch(tasks=[first, mailed]) as watch:
                watch.add(third, task=True)
                watch.remove(mailed)
                items = await drain(watch)
                assert set(watch.tasks) == {first, third}
        assert {item.task_id for item in items} == {first, third}
        with pytest.raises(RuntimeError, match="closed"):
            watch.add(third, task=True)
        with pytest.raises(InvalidRequestError, match="is watched already"):
            client.workers.watch(tasks=[first, first])

    anyio.run(main)
