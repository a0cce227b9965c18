"""client.workers.watch: many workers merged, over loopback against the emulator.

Each test runs under asyncio (the aiohttp transport) and trio (httpx) where
the behaviour is the core API's. Emulators run in threads, so one serves both.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable

import anyio
import pytest
import trio

from handinger_stream import (
    AsyncHandinger,
    Event,
    IncompleteStreamError,
    InvalidRequestError,
    NotFoundError,
    StreamDecodeError,
    TextDeltaEvent,
    Worker,
)
from handinger_stream.client.stream import OnDecodeError
from handinger_stream.client.watch import Watch, WatchEvent
from handinger_stream.emulator import Emulator
from handinger_stream.protocol.reducer import WorkerState
from tests.conftest import API_KEY, Canned, RawServer
from tests.helpers.emulators import emulator_fixture
from tests.helpers.leaks import connections_to, open_fds, settle

BACKENDS = ["asyncio", "trio"]
FAULT = "x-emulator-fault"


def run(backend: str, main: Callable[[], Awaitable[None]]) -> None:
    anyio.run(main, backend=backend)


# Workers that take a while (0.4 to 2 s each), to watch them live.
paced = emulator_fixture(api_key=API_KEY, tokens_per_second=100, keepalive_interval=0.2)


def client_for(emu: Emulator, **options: object) -> AsyncHandinger:
    return AsyncHandinger(api_key=API_KEY, base_url=emu.base_url, **options)  # type: ignore[arg-type]


async def create(client: AsyncHandinger, n: int, prompt: str = "Hi", **kw: object) -> list[str]:
    ids: list[str] = []
    for i in range(n):
        worker = await client.workers.create(input=f"{prompt} {i}", budget="low", **kw)  # type: ignore[call-overload]
        ids.append(worker.id)
    return ids


async def replay_count(client: AsyncHandinger, worker_id: str) -> int:
    stream = await client.workers.retrieve(worker_id, stream=True)
    return len([e async for e in stream])


@pytest.mark.parametrize("backend", BACKENDS)
def test_200_workers_by_id_every_event_once_and_the_final_snapshots(
    emulator: Emulator, backend: str
) -> None:
    async def main() -> None:
        async with client_for(emulator) as client:
            ids = await create(client, 200, "Watch me")
            counts: Counter[str] = Counter()
            deltas: dict[str, list[str]] = {i: [] for i in ids}
            async with client.workers.watch(ids) as watch:
                async for item in watch:
                    assert item.error is None and item.event is not None
                    counts[item.worker_id] += 1
                    if isinstance(item.event, TextDeltaEvent):
                        deltas[item.worker_id].append(item.event.delta)
            assert set(counts) == set(ids)
            for worker_id in ids:
                final = await client.workers.retrieve(worker_id)
                assert final.status == "completed"
                assert watch.workers[worker_id] == final
                assert counts[worker_id] == await replay_count(client, worker_id)
                assert "".join(deltas[worker_id]) == final.output_text
            assert watch.done and set(watch.done) == set(ids) and not watch.errors

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_live_workers_interleave_and_snapshots_follow_the_events(
    paced: Emulator, backend: str
) -> None:
    async def main() -> None:
        async with client_for(paced) as client:
            ids = await create(client, 6, "Live")
            order: list[str] = []
            text: dict[str, str] = dict.fromkeys(ids, "")
            async with client.workers.watch(ids) as watch:
                async for item in watch:
                    order.append(item.worker_id)
                    if isinstance(item.event, TextDeltaEvent):
                        text[item.worker_id] += item.event.delta
                        # Live at this pace: the snapshot is the fold through this event.
                        assert item.snapshot.output_text == text[item.worker_id]
            # Merged in arrival order: the workers' events are interleaved, not one after another.
            switches = sum(a != b for a, b in itertools.pairwise(order))
            assert switches > 6 * 5
            for worker_id in ids:
                assert watch.workers[worker_id].output_text == text[worker_id]

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_stream_passed_in_is_watched_from_where_it_is(emulator: Emulator, backend: str) -> None:
    async def main() -> None:
        async with client_for(emulator) as client:
            stream = await client.workers.create(input="Streamed", budget="low", stream=True)
            (other,) = await create(client, 1)
            items: list[WatchEvent] = []
            async with client.workers.watch([stream, other]) as watch:
                items = [item async for item in watch]
            mine = [i for i in items if i.worker_id == stream.worker_id]
            assert len(mine) == await replay_count(client, stream.worker_id)
            assert stream.closed
            assert watch.workers[stream.worker_id] == await client.workers.retrieve(
                stream.worker_id
            )

    run(backend, main)


def test_a_stream_read_partly_before_is_watched_from_there(emulator: Emulator) -> None:
    async def main() -> None:
        async with client_for(emulator) as client:
            stream = await client.workers.create(input="Half read", budget="low", stream=True)
            iterator = stream.__aiter__()
            for _ in range(10):
                await iterator.__anext__()
            async with client.workers.watch([stream]) as watch:
                rest = [item async for item in watch]
            total = await replay_count(client, stream.worker_id)
            assert len(rest) == total - 10
            assert watch.workers[stream.worker_id] == await client.workers.retrieve(
                stream.worker_id
            )

    run("asyncio", main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_add_and_remove_while_watching(paced: Emulator, backend: str) -> None:
    async def main() -> None:
        async with client_for(paced) as client:
            first, gone, late = await create(client, 3, "Add remove")
            seen: Counter[str] = Counter()
            async with client.workers.watch([first, gone]) as watch:
                async for item in watch:
                    seen[item.worker_id] += 1
                    if seen[gone] == 5 and item.worker_id == gone:
                        watch.remove(gone)
                        watch.add(late)
                        assert gone not in watch.workers and late in watch.workers
                    assert not (item.worker_id == gone and seen[gone] > 5)
            assert seen[gone] == 5
            assert seen[first] == await replay_count(client, first)
            # Added mid-watch by id: seen whole, from its first event.
            assert seen[late] == await replay_count(client, late)
            assert set(watch.done) == {first, late}
            with pytest.raises(InvalidRequestError):
                watch.remove(gone)

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failed_worker_and_a_lost_stream_beside_healthy_ones(
    paced: Emulator, backend: str
) -> None:
    async def main() -> None:
        async with client_for(paced) as client:
            healthy = await create(client, 4, "Healthy")
            failing = (
                await client.workers.create(
                    input="Doomed", budget="low", extra_headers={FAULT: "error-after=12"}
                )
            ).id
            (running,) = await create(client, 1, "Cut off")
            # A live subscription without ids cannot be resumed exactly once it breaks.
            lost = await client.workers.subscribe(
                running, extra_headers={FAULT: "no-ids=1; drop-after=5"}
            )
            items: list[WatchEvent] = []
            async with client.workers.watch([*healthy, failing, lost, "wrk_missing"]) as watch:
                items = [item async for item in watch]
            errors = [i for i in items if i.error is not None]
            assert {i.worker_id for i in errors} == {running, "wrk_missing"}
            for item in errors:
                assert item.event is None
                assert [i for i in items if i.worker_id == item.worker_id][-1] is item
            by_id = {i.worker_id: i for i in errors}
            assert isinstance(by_id[running].error, IncompleteStreamError)
            assert by_id[running].snapshot.id == running  # the partial Worker
            # The lead snapshot, the 5 events before the cut, and the error.
            assert len([i for i in items if i.worker_id == running]) == 1 + 5 + 1
            assert isinstance(by_id["wrk_missing"].error, NotFoundError)
            assert set(watch.errors) == {running, "wrk_missing"}
            # The failed worker's events are all there, and it ends failed.
            assert watch.workers[failing].failed
            assert watch.workers[failing] == await client.workers.retrieve(failing)
            for worker_id in healthy:
                assert watch.workers[worker_id] == await client.workers.retrieve(worker_id)
                assert not watch.workers[worker_id].failed

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_concurrency_is_respected_at_the_server(backend: str) -> None:
    async def main() -> None:
        with Emulator(api_key=API_KEY, tokens_per_second=150) as emu:
            async with client_for(emu) as client:
                ids = await create(client, 10, "Bounded")
                waited = 0
                counts: Counter[str] = Counter()
                async with client.workers.watch(ids, max_concurrency=3) as watch:
                    async for item in watch:
                        counts[item.worker_id] += 1
                        assert emu.open_streams <= 3
                        waited = max(waited, len(watch.waiting))
                assert 2 <= emu.peak_open_streams <= 3
                assert waited >= 5
                # The last ones completed while they waited: still seen whole, through the replay.
                for worker_id in ids:
                    assert counts[worker_id] == await replay_count(client, worker_id)
                    assert watch.workers[worker_id] == await client.workers.retrieve(worker_id)

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_completed_yields_final_workers_in_completion_order(paced: Emulator, backend: str) -> None:
    async def main() -> None:
        async with client_for(paced) as client:
            # Longest first: created in the reverse of the order they will finish in.
            ids = []
            for budget in ("unlimited", "high", "standard", "low"):
                worker = await client.workers.create(input="Race", budget=budget)
                ids.append(worker.id)
            async with client.workers.watch(ids) as watch:
                finals = [worker async for worker in watch.completed()]
            assert [w.id for w in finals] == ids[::-1]
            assert watch.done == ids[::-1]
            for worker in finals:
                assert worker == await client.workers.retrieve(worker.id)

    run(backend, main)


def test_events_with_ends_mark_each_worker_s_end_once(emulator: Emulator) -> None:
    async def main() -> None:
        async with client_for(emulator) as client:
            ids = await create(client, 3, "Ends")
            ends: list[WatchEvent] = []
            events = 0
            async with client.workers.watch([*ids, "wrk_absent"]) as watch:
                async for item in watch.events(ends=True):
                    if item.event is None:
                        ends.append(item)
                    else:
                        events += 1
            assert sorted(e.worker_id for e in ends) == sorted([*ids, "wrk_absent"])
            assert [e.worker_id for e in ends if e.error is None] == [
                i for i in watch.done if i != "wrk_absent"
            ]
            for end in ends:
                if end.error is None:
                    assert end.snapshot == await client.workers.retrieve(end.worker_id)
                else:
                    assert isinstance(end.error, NotFoundError)
            assert events == sum([await replay_count(client, i) for i in ids])

    run("asyncio", main)


def test_completed_includes_failed_and_lost_workers(emulator: Emulator) -> None:
    async def main() -> None:
        async with client_for(emulator) as client:
            ids = await create(client, 3)
            async with client.workers.watch([*ids, "wrk_nobody"]) as watch:
                finals = [worker async for worker in watch.completed()]
            assert sorted(w.id for w in finals) == sorted([*ids, "wrk_nobody"])
            assert isinstance(watch.errors["wrk_nobody"], NotFoundError)

    run("asyncio", main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_slow_consumer_slows_the_reads(emulator: Emulator, backend: str) -> None:
    async def main() -> None:
        async with client_for(emulator) as client:
            ids = await create(client, 5, "Slow reader", extra_headers=None)
            async with client.workers.watch(ids, buffer=4) as watch:
                async for _ in watch:
                    # A reader reads again only once its worker's events were taken:
                    # never more than one hand-over per worker (and its end) waits.
                    assert len(watch._queue) <= 5 * 2
                    await anyio.sleep(0.001)

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_stream_is_read_by_the_consumer_alone_and_folds_once(
    paced: Emulator, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its stream's own snapshot and position are exact for what the watch handed out."""
    folded = 0
    apply_all = WorkerState.apply_all

    def counting(state: WorkerState, events: list[Event]) -> bool:
        nonlocal folded
        folded += len(events)
        return apply_all(state, events)

    async def main() -> None:
        async with client_for(paced) as client:
            streams = [
                await client.workers.create(input=f"Once {i}", budget="low", stream=True)
                for i in range(4)
            ]
            by_id = {stream.worker_id: stream for stream in streams}
            monkeypatch.setattr(WorkerState, "apply_all", counting)
            events = 0
            async with client.workers.watch(streams) as watch:
                async for item in watch:
                    events += 1
                    assert item.event is not None
                    stream = by_id[item.worker_id]
                    # The stream never ran ahead of what the watch gave out.
                    assert stream.last_event_id == item.event.event_id
                    assert stream.snapshot == item.snapshot
            assert folded == events  # one fold of each event: the stream's
            monkeypatch.undo()
            for worker_id, stream in by_id.items():
                assert stream.snapshot == await client.workers.retrieve(worker_id)

    run(backend, main)


def test_buffer_is_how_many_of_one_worker_s_events_come_before_the_others_turn(
    emulator: Emulator,
) -> None:
    async def main() -> None:
        async with client_for(emulator) as client:
            ids = await create(client, 3, "Turns")
            order: list[str] = []
            async with client.workers.watch(ids, buffer=3) as watch:
                async for item in watch:
                    if not order:
                        await anyio.sleep(0.5)  # meanwhile every reader has events ready
                    order.append(item.worker_id)
            first = order[0]
            # The first worker finishes its turn of 3, then each of the others has one.
            assert order[:3] == [first] * 3
            runs = [list(g) for _, g in itertools.groupby(order[3:12])]
            assert [len(r) for r in runs] == [3, 3, 3]
            assert {r[0] for r in runs[:2]} == set(ids) - {first} and runs[2][0] == first

    run("asyncio", main)


BAD_EVENT = [
    b'data: {"type":"start","messageId":"m"}\n\n',
    b'data: {"type":"text-start","id":"t"}\n\n',
    b'data: {"type":"text-delta","id":"t","delta":"Hel"}\n\n',
    b"data: {not json\n\n",
    b'data: {"type":"text-delta","id":"t","delta":"lo"}\n\n',
    b'data: {"type":"text-end","id":"t"}\n\n',
    b'data: {"type":"finish"}\n\n',
    b"data: {broken at the end\n\n",
    b"data: [DONE]\n\n",
]


@pytest.mark.parametrize("on_decode_error", ["raise", "skip"])
def test_a_bad_event_is_the_worker_s_error_item_or_skipped(
    raw_server: RawServer, on_decode_error: OnDecodeError
) -> None:
    """The consumer takes events from the stream, so it meets a bad one: as a watch's lost stream."""
    raw_server.serve(Canned(BAD_EVENT))

    async def main() -> None:
        async with AsyncHandinger(
            api_key=API_KEY, base_url=raw_server.base_url, on_decode_error=on_decode_error
        ) as client:
            async with client.workers.watch(["wrk_bad"]) as watch:
                items = [item async for item in watch.events(ends=True)]
        kinds = [type(i.event).__name__ for i in items]
        if on_decode_error == "raise":
            assert kinds == ["StartEvent", "TextStartEvent", "TextDeltaEvent", "NoneType"]
            assert isinstance(items[-1].error, StreamDecodeError)
            assert watch.errors["wrk_bad"] is items[-1].error
        else:  # both skipped, the last one just before the end
            assert kinds[-4:] == ["TextDeltaEvent", "TextEndEvent", "FinishEvent", "NoneType"]
            assert items[-1].error is None and not watch.errors
            assert watch.workers["wrk_bad"].output_text == "Hello"
        assert watch.stage("wrk_bad") == "ended"

    run("asyncio", main)


async def leaves_nothing(emu: Emulator, backend: str, how: str) -> None:
    port = int(emu.base_url.rsplit(":", 1)[1])
    fds = open_fds()
    tasks = _tasks(backend)
    async with client_for(emu) as client:
        ids = await create(client, 8, "Leave early")
        if how == "break":
            async with client.workers.watch(ids) as watch:
                async for _ in watch:
                    if emu.open_streams >= 8:
                        break
        elif how == "cancel":
            with anyio.CancelScope() as scope:
                async with client.workers.watch(ids) as watch:
                    async for _ in watch:
                        if emu.open_streams >= 8:
                            scope.cancel()
                            await anyio.sleep(1)  # the cancellation lands here
            assert scope.cancelled_caught
        else:  # an error in the body
            with pytest.raises(ZeroDivisionError):
                async with client.workers.watch(ids) as watch:
                    async for _ in watch:
                        if emu.open_streams >= 8:
                            raise ZeroDivisionError
        assert watch.stage(ids[0]) == "ended"
        assert await settle(lambda: emu.open_streams == 0), emu.open_streams
        # The watch's connections are closed; at most one idle one stays in the pool.
        assert await settle(lambda: connections_to(port) <= 1)
    assert await settle(lambda: connections_to(port) == 0), connections_to(port)
    assert await settle(lambda: open_fds() <= fds), (open_fds(), fds)
    assert _tasks(backend) == tasks


def _tasks(backend: str) -> int:
    if backend == "trio":
        return trio.lowlevel.current_statistics().tasks_living
    return len(asyncio.all_tasks())


@pytest.mark.parametrize("how", ["break", "cancel", "error"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_leaving_early_closes_every_connection_and_task(
    paced: Emulator, backend: str, how: str
) -> None:
    run(backend, lambda: leaves_nothing(paced, backend, how))


def test_bad_arguments_are_refused_clearly(emulator: Emulator) -> None:
    client = client_for(emulator)
    with pytest.raises(InvalidRequestError, match="iterable"):
        client.workers.watch("wrk_1")
    with pytest.raises(InvalidRequestError, match="watched already"):
        client.workers.watch(["wrk_1", "wrk_1"])
    with pytest.raises(InvalidRequestError, match="max_concurrency"):
        client.workers.watch(["wrk_1"], max_concurrency=0)
    with pytest.raises(InvalidRequestError, match="non-empty id"):
        client.workers.watch([""])
    watch = client.workers.watch(["wrk_1"])
    with pytest.raises(InvalidRequestError, match="not watching"):
        watch.remove("wrk_2")

    async def iterate_unentered() -> None:
        with pytest.raises(RuntimeError, match="async with"):
            await watch.__anext__()

    run("asyncio", iterate_unentered)


def test_an_empty_watch_ends_at_once_and_workers_can_be_added_before_entering(
    emulator: Emulator,
) -> None:
    async def main() -> None:
        async with client_for(emulator) as client:
            (worker_id,) = await create(client, 1)
            async with client.workers.watch([]) as watch:
                assert [item async for item in watch] == []
                watch.add(worker_id)
                assert len([item async for item in watch]) == await replay_count(client, worker_id)
            pending = client.workers.watch([])
            pending.add(worker_id)
            assert pending.stage(worker_id) == "waiting"
            async with pending:
                assert [w.id async for w in pending.completed()] == [worker_id]
            with pytest.raises(RuntimeError, match="closed"):
                pending.add("wrk_other")

    run("asyncio", main)


def test_watch_event_shape() -> None:
    worker = Worker(id="w1", status="running")
    error = NotFoundError("gone", status_code=404, body=None)
    item = WatchEvent("w1", None, worker, error)
    assert (item.worker_id, item.event, item.snapshot, item.error) == ("w1", None, worker, error)
    assert "w1" in repr(item) and isinstance(Watch, type)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_blocking_portal_can_drive_a_watch_from_sync_code(
    emulator: Emulator, backend: str
) -> None:
    """What a sync wrapper will do: enter in one task, take items from others, add and remove."""
    from anyio.from_thread import start_blocking_portal

    with start_blocking_portal(backend) as portal:
        client = client_for(emulator)
        ids = portal.call(create, client, 3)
        watch = client.workers.watch(ids[:2])
        counts: Counter[str] = Counter()
        with portal.wrap_async_context_manager(watch):
            portal.call(watch.add, ids[2])
            while True:
                try:
                    item = portal.call(watch.__anext__)
                except StopAsyncIteration:
                    break
                counts[item.worker_id] += 1
        assert set(counts) == set(ids)
        for worker_id in ids:
            assert counts[worker_id] == portal.call(replay_count, client, worker_id)
        portal.call(client.aclose)
