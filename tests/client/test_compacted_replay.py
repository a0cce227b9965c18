"""Compacted replays over loopback: a client with ``compact_replays`` asks the emulator
for them (``x-handinger-compact: 1``) on a worker's replay and on every resume, and
folds the same Worker from far fewer events; a cut after any event of a compacted
replay resumes exactly."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from handinger_stream import AsyncHandinger, Worker
from handinger_stream.client.stream import WorkerStream
from handinger_stream.client.transport import TransportName
from handinger_stream.emulator import Emulator
from handinger_stream.protocol.compact import COMPACT_HEADER
from handinger_stream.types.events import Event, Reconnected, TextDeltaEvent
from tests.conftest import API_KEY, Canned, RawServer
from tests.helpers.emulators import emulator_fixture

emu = emulator_fixture(api_key=API_KEY, seed=3, retry_ms=5, keepalive_interval=0.05)
paced = emulator_fixture(api_key=API_KEY, seed=3, retry_ms=5, tokens_per_second=400)
SSE = {"content-type": "text/event-stream", "x-handinger-worker-id": "w1"}


@pytest.fixture
async def client(emu: Emulator, transport: TransportName) -> AsyncIterator[AsyncHandinger]:
    async with AsyncHandinger(api_key=API_KEY, base_url=emu.base_url, transport=transport) as c:
        yield c


async def drain(stream: WorkerStream) -> tuple[list[Event], list[Reconnected], Worker]:
    events: list[Event] = []
    notices: list[Reconnected] = []
    async for item in stream.events(reconnects=True):
        (notices if isinstance(item, Reconnected) else events).append(item)  # type: ignore[arg-type]
    return events, notices, await stream.get_final_worker()


def text(events: list[Event]) -> str:
    return "".join(e.delta for e in events if isinstance(e, TextDeltaEvent))


async def test_a_compacted_replay_folds_the_same_worker_from_fewer_events(
    client: AsyncHandinger,
) -> None:
    worker = await (
        await client.workers.create(input="Hi", budget="high", stream=True)
    ).get_final_worker()
    whole, _, reference = await drain(await client.workers.retrieve(worker.id, stream=True))
    compacting = client.with_options(compact_replays=True)
    compacted, _, final = await drain(await compacting.workers.retrieve(worker.id, stream=True))
    assert final == reference == worker
    assert len(compacted) * 3 < len(whole)
    assert text(compacted) == text(whole)
    # Each merged event carries the id of the last event it holds; none is repeated.
    ids = [int(str(e.event_id)) for e in compacted]
    assert ids == sorted(set(ids)) and ids[-1] == int(str(whole[-1].event_id))


async def test_a_cut_after_any_event_of_a_compacted_replay_resumes_exactly(
    emu: Emulator, client: AsyncHandinger
) -> None:
    worker = await (
        await client.workers.create(input="Hi", budget="low", stream=True)
    ).get_final_worker()
    compacting = client.with_options(compact_replays=True)
    uncut, _, _ = await drain(await compacting.workers.retrieve(worker.id, stream=True))
    for k in range(len(uncut)):
        emu.inject_fault(f"drop-after={k}")
        stream = await compacting.workers.retrieve(worker.id, stream=True)
        events, notices, final = await drain(stream)
        assert final == worker, k
        assert text(events) == text(uncut), k
        assert [n.last_event_id for n in notices] == [uncut[k - 1].event_id if k else None], k


async def test_a_turn_cut_mid_stream_resumes_compacted_to_the_same_worker(
    emu: Emulator, client: AsyncHandinger
) -> None:
    compacting = client.with_options(compact_replays=True)
    first = await client.workers.create(input="Hi", budget="high", stream=True)
    total = len([e async for e in first])
    for k in (1, 5, 20, total // 2, total - 3):
        emu.inject_fault(f"drop-after={k}")
        stream = await compacting.workers.create(input="Hi", budget="high", stream=True)
        events, notices, final = await drain(stream)
        _, _, reference = await drain(await client.workers.retrieve(stream.worker_id, stream=True))
        assert final == reference, k
        assert [n.last_event_id for n in notices] == [str(k - 1)], k
        # The resume's replay after the cut was compacted: fewer events than the turn's.
        assert len(events) < total or k > total - 5, k


async def test_watching_a_running_worker_starts_from_a_compacted_backlog(
    paced: Emulator, transport: TransportName
) -> None:
    async with AsyncHandinger(
        api_key=API_KEY, base_url=paced.base_url, transport=transport
    ) as client:
        worker = await client.workers.create(input="Hi", budget="high")
        await anyio.sleep(0.3)  # the turn runs: a backlog of deltas, and more to come
        compacting = client.with_options(compact_replays=True)
        live = await compacting.workers.retrieve(worker.id, stream=True)
        events, _, final = await drain(live)
        whole, _, reference = await drain(await client.workers.retrieve(worker.id, stream=True))
    assert final == reference
    assert final.status == "completed"
    assert len(events) < len(whole)
    assert text(events) == text(whole)


async def test_the_callers_header_wins_and_no_ids_means_no_compaction(
    emu: Emulator, client: AsyncHandinger
) -> None:
    worker = await (
        await client.workers.create(input="Hi", budget="low", stream=True)
    ).get_final_worker()
    whole, _, _ = await drain(await client.workers.retrieve(worker.id, stream=True))
    compacting = client.with_options(compact_replays=True)
    assert compacting.with_options(timeout=5).compact_replays
    asked_whole = await compacting.workers.retrieve(
        worker.id, stream=True, extra_headers={COMPACT_HEADER: "0"}
    )
    assert len((await drain(asked_whole))[0]) == len(whole)
    emu.inject_fault("no-ids=1")
    without_ids, _, final = await drain(await compacting.workers.retrieve(worker.id, stream=True))
    assert len(without_ids) == len(whole) and final == worker


@pytest.mark.parametrize("ids", [True, False], ids=["ids", "no-ids"])
async def test_only_a_replay_or_a_resume_after_an_id_asks_for_compaction(
    raw_server: RawServer, transport: TransportName, ids: bool
) -> None:
    """The create's POST never asks; a resume asks when it resumes after an id (one
    without skips by count, which a compacted replay would shift)."""
    start, finish = b'{"type":"start"}', b'{"type":"finish"}'
    first = (b"id: 0\n" if ids else b"") + b"data: " + start + b"\n\n"
    again = b"" if ids else b"data: " + start + b"\n\n"
    rest = (b"id: 1\n" if ids else b"") + b"data: " + finish + b"\n\ndata: [DONE]\n\n"
    raw_server.serve(Canned([first], headers=SSE), Canned([again + rest], headers=SSE))
    async with AsyncHandinger(
        api_key="k", base_url=raw_server.base_url, transport=transport
    ) as plain:
        client = plain.with_options(compact_replays=True)
        stream = await client.workers.create(input="Hi", stream=True)
        assert (await stream.get_final_worker()).status == "completed"
    create, resume = raw_server.requests
    assert COMPACT_HEADER not in create["headers"]
    assert resume["path"] == "/api/workers/w1?stream=true"
    assert resume["headers"].get(COMPACT_HEADER) == ("1" if ids else None)
