"""``Handinger.workers.watch``: the merged watch from plain sync code, over loopback."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest

from handinger_stream import (
    Handinger,
    InvalidRequestError,
    NotFoundError,
    TextDeltaEvent,
    WatchEvent,
)
from handinger_stream.client.transport import TransportName
from handinger_stream.emulator import Emulator
from tests.conftest import API_KEY
from tests.helpers.emulators import emulator_fixture
from tests.helpers.leaks import connections_to, loop_threads

# Workers that take a second or two: still running when a loop is left.
paced = emulator_fixture("function", api_key=API_KEY, tokens_per_second=100, keepalive_interval=0.2)


def eventually(predicate: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def replay_count(client: Handinger, worker_id: str) -> int:
    return sum(1 for _ in client.workers.retrieve(worker_id, stream=True))


def test_every_event_once_with_its_snapshot_from_sync_code(
    emulator: Emulator, transport: TransportName
) -> None:
    with Handinger(api_key=API_KEY, base_url=emulator.base_url, transport=transport) as client:
        ids = [client.workers.create(input=f"Sync {i}", budget="low").id for i in range(3)]
        streamed = client.workers.create(input="Sync streamed", budget="low", stream=True)
        counts: Counter[str] = Counter()
        text: dict[str, str] = {}
        errors: list[WatchEvent] = []
        for item in client.workers.watch([*ids, streamed, "wrk_nobody"], max_concurrency=2):
            if item.error is not None:
                errors.append(item)
                continue
            counts[item.worker_id] += 1
            if isinstance(item.event, TextDeltaEvent):
                text[item.worker_id] = text.get(item.worker_id, "") + item.event.delta
                # Folded on the client's loop, through this item and no further.
                assert item.snapshot.output_text == text[item.worker_id]
        assert set(counts) == {*ids, streamed.worker_id}
        for worker_id in counts:
            assert counts[worker_id] == replay_count(client, worker_id)
            assert text[worker_id] == client.workers.retrieve(worker_id).output_text
        # A lost stream is one item of its own; the others went on.
        (lost,) = errors
        assert lost.worker_id == "wrk_nobody" and isinstance(lost.error, NotFoundError)
        assert streamed.closed


@pytest.mark.parametrize("how", ["break", "with"])
def test_leaving_early_leaves_no_stream_connection_or_thread(paced: Emulator, how: str) -> None:
    threads = len(loop_threads())
    client = Handinger(api_key=API_KEY, base_url=paced.base_url)
    try:
        ids = [client.workers.create(input=f"Leave {i}").id for i in range(4)]
        if how == "break":
            for _ in client.workers.watch(ids):
                if paced.open_streams >= 4:
                    break  # no with, no close(): leaving the loop is enough
        else:
            with client.workers.watch(ids) as items:
                for _ in items:
                    if paced.open_streams >= 4:
                        break
                assert paced.open_streams >= 4  # still open inside the block
        assert eventually(lambda: paced.open_streams == 0), paced.open_streams
        # At most one idle connection stays in the pool, for the next call.
        assert connections_to(paced.port) <= 1
        # Watching stopped; the workers did not.
        assert eventually(
            lambda: all(client.workers.retrieve(i).status == "completed" for i in ids)
        )
    finally:
        client.close()
    assert len(loop_threads()) == threads
    assert connections_to(paced.port) == 0


def test_bad_arguments_are_refused_when_called(emulator: Emulator) -> None:
    with Handinger(api_key=API_KEY, base_url=emulator.base_url) as client:
        with pytest.raises(InvalidRequestError, match="iterable"):
            client.workers.watch("wrk_1")
        with pytest.raises(InvalidRequestError, match="max_concurrency"):
            client.workers.watch(["wrk_1"], max_concurrency=0)
