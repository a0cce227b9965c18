"""An emulator closed in-process mid-turn: the turn fails out loud, it does not complete
(issue 23, item 1); and ``Worker.outcome`` says how each turn ended (item 2)."""

from __future__ import annotations

import asyncio

import pytest

from handinger_stream import AsyncHandinger, WorkerFailedError
from handinger_stream.emulator import FAULT_HEADER, STOPPED_MID_TURN, Emulator
from handinger_stream.types.events import TextDeltaEvent
from handinger_stream.types.worker import Worker


@pytest.mark.slow  # paced (half a second), so that the turn is still writing when stopped
async def test_an_emulator_closed_mid_turn_fails_the_turn() -> None:
    async with Emulator(tokens_per_second=50) as emu:
        client = AsyncHandinger(**emu.client_options(), max_reconnects=0)
        stream = await client.workers.create(input="A long answer", stream=True)
        writing = asyncio.Event()

        async def read() -> Worker:
            async for event in stream:
                if isinstance(event, TextDeltaEvent):
                    writing.set()
            return await stream.get_final_worker()

        reading = asyncio.ensure_future(read())
        await writing.wait()
        await emu.stop()  # mid-turn: the answer so far is a fragment
        with pytest.raises(WorkerFailedError) as raised:
            await reading
        await client.aclose()
    worker = raised.value.worker
    assert worker is not None
    assert worker.error == STOPPED_MID_TURN
    assert worker.failed and worker.outcome == "failed"
    assert worker.output_text  # what was written is kept, and said to be cut off


async def test_an_aborted_turn_s_final_snapshot_keeps_the_abort() -> None:
    # The abort chunk folds into incomplete_details; the snapshot after it must not undo it.
    async with Emulator() as emu, AsyncHandinger(**emu.client_options()) as client:
        stream = await client.workers.create(
            input="Hi", stream=True, extra_headers={FAULT_HEADER: "abort-after=5"}
        )
        worker = await stream.get_final_worker()
    assert worker.incomplete_details == {"reason": "aborted"}
    assert worker.outcome == "aborted" and not worker.failed


@pytest.mark.parametrize(
    ("worker", "outcome"),
    [
        (Worker(id="w", status="pending"), None),
        (Worker(id="w", status="running", running=True), None),
        (Worker(id="w", status="completed"), "completed"),
        (Worker(id="w", status="completed", error="boom"), "failed"),
        (Worker(id="w", status="completed", incomplete_details={"reason": "aborted"}), "aborted"),
        (
            Worker(id="w", status="completed", incomplete_details={"reason": "max_output_tokens"}),
            "incomplete",
        ),
    ],
)
def test_outcome_is_told_by_the_worker_s_fields(worker: Worker, outcome: str | None) -> None:
    assert worker.outcome == outcome
    assert worker.failed is (outcome == "failed")
