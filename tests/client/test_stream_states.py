"""The states a real stream goes through, over loopback HTTP: the driver keeps to the table.

``protocol/handover.py`` holds the table (tested without a network in
``tests/protocol/test_handover.py``); here the raw-bytes server plays exact
scripts and each test reads the path of states the stream took, and what a
consumer saw.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from handinger_stream import AsyncHandinger, IncompleteStreamError, StreamDecodeError
from handinger_stream.client.transport import TransportName
from handinger_stream.protocol.handover import (
    BROKEN,
    CLOSED,
    DONE,
    FAILED,
    FINISHED,
    OPEN,
    RESUMING,
    Handover,
    StreamState,
)
from handinger_stream.types.events import Reconnected
from tests.conftest import Canned, RawServer, until

SSE = {"content-type": "text/event-stream", "x-handinger-worker-id": "w1"}
JSON = {"content-type": "application/json", "x-handinger-worker-id": "w1"}
START = b'id: 1\ndata: {"type":"start"}\n\nid: 2\ndata: {"type":"start-step"}\n\n'
REST = b'id: 3\ndata: {"type":"finish-step"}\n\nid: 4\ndata: {"type":"finish"}\n\n'
DONE_MARKER = b"data: [DONE]\n\n"
BAD = b'id: 3\ndata: {"type":\n\n'
COMPLETED = b'{"object":"worker","id":"w1","status":"completed"}'
COMPLETED_PART = b'{"type":"data-worker","data":' + COMPLETED + b"}"
# The SSE retry: field, the first wait of a resume: the tests wait little.
QUICK = b"retry: 5\n\n"


@pytest.fixture
def path(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[StreamState]]:
    """The states every stream of the test entered, in order."""
    entered: list[StreamState] = []
    enter = Handover.enter

    def recording(self: Handover, state: StreamState) -> None:
        enter(self, state)
        entered.append(state)

    monkeypatch.setattr(Handover, "enter", recording)
    yield entered


def raw_client(raw_server: RawServer, transport: TransportName, **options: Any) -> AsyncHandinger:
    return AsyncHandinger(api_key="k", base_url=raw_server.base_url, transport=transport, **options)


# (what the server answers, client options, the states entered, how a full read ends)
CASES: dict[str, tuple[list[Canned], dict[str, Any], list[StreamState], str]] = {
    "to the end": (
        [Canned([START, REST, DONE_MARKER], headers=SSE)],
        {},
        [DONE, FINISHED],
        "completed",
    ),
    "broken, resumed": (
        [Canned([QUICK + START], headers=SSE), Canned([REST, DONE_MARKER], headers=SSE)],
        {},
        [BROKEN, RESUMING, OPEN, DONE, FINISHED],
        "completed",
    ),
    "broken, resumed with a JSON answer": (
        [
            Canned([QUICK + START], headers=SSE),
            Canned([COMPLETED], headers=JSON),
        ],
        {},
        [BROKEN, RESUMING, FINISHED],
        "completed",
    ),
    "a completed worker's clean end without [DONE]": (
        [
            Canned(
                [START, b"id: 3\ndata: " + COMPLETED_PART + b"\n\n"],
                headers=SSE,
            )
        ],
        {},
        [BROKEN, FINISHED],
        "completed",
    ),
    "broken, no resume allowed": (
        [Canned([START], headers=SSE)],
        {"max_reconnects": 0},
        [BROKEN, FAILED],
        "IncompleteStreamError",
    ),
    "broken, resuming fails for good": (
        [Canned([QUICK + START], headers=SSE), Canned([b"{}"], status=404, headers=JSON)],
        {},
        [BROKEN, RESUMING, FAILED],
        "IncompleteStreamError",
    ),
    "a bad event": (
        [Canned([START + BAD, REST, DONE_MARKER], headers=SSE, delay=0.05)],
        {},
        [FAILED],
        "StreamDecodeError",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_stream_moves_through_the_states_its_script_calls_for(
    raw_server: RawServer, transport: TransportName, path: list[StreamState], case: str
) -> None:
    responses, options, states, outcome = CASES[case]
    raw_server.serve(*responses)
    async with raw_client(raw_server, transport, **options) as client:
        stream = await client.workers.create(input="x", stream=True)
        try:
            await stream.get_final_worker()
            ended = "completed"
        except (IncompleteStreamError, StreamDecodeError) as exc:
            ended = type(exc).__name__
    assert (path, ended) == (states, outcome)
    assert stream.closed


async def test_closing_early_leaves_a_stream_closed_and_closing_again_changes_nothing(
    raw_server: RawServer, transport: TransportName, path: list[StreamState]
) -> None:
    raw_server.serve(Canned([START, REST, DONE_MARKER], headers=SSE, delay=0.05))
    async with raw_client(raw_server, transport) as client:
        stream = await client.workers.create(input="x", stream=True)
        async for _ in stream:
            break  # the iterator closes the stream
        await stream.aclose()
    assert path == [CLOSED] and stream.closed and not stream.completed


async def test_a_resume_cut_short_by_cancellation_is_taken_up_by_the_next_step(
    raw_server: RawServer, transport: TransportName, path: list[StreamState]
) -> None:
    raw_server.serve(
        Canned([b"retry: 300\n\n" + START], headers=SSE),  # ends early; resumes wait 0.3 s
        Canned([REST, DONE_MARKER], headers=SSE),
    )
    async with raw_client(raw_server, transport) as client:
        stream = await client.workers.create(input="x", stream=True)
        assert await stream.ready() == 2
        ids = [(await stream.__anext__()).event_id for _ in range(2)]
        with anyio.move_on_after(0.1) as waiting:
            await stream.ready()  # the break, then the first wait of the resume
        assert waiting.cancelled_caught and path == [BROKEN, RESUMING, BROKEN]
        assert len(raw_server.requests) == 1  # it never reopened
        notices: list[Reconnected] = []
        async for item in stream.events(reconnects=True):
            if isinstance(item, Reconnected):
                notices.append(item)
            else:
                ids.append(item.event_id)
    assert ids == ["1", "2", "3", "4"] and stream.completed
    # The attempt that was cut short counts: attempts are counted in a row.
    assert [n.attempt for n in notices] == [2]
    assert notices[0].reason == "the connection ended before the stream's end"
    assert path == [BROKEN, RESUMING, BROKEN, RESUMING, OPEN, DONE, FINISHED]


async def test_a_stream_closed_while_it_resumes_lets_the_new_connection_go(
    raw_server: RawServer, transport: TransportName, path: list[StreamState]
) -> None:
    raw_server.serve(
        Canned([b"retry: 200\n\n" + START], headers=SSE),
        Canned([REST, DONE_MARKER], headers=SSE, delay=0.5),
    )
    got: list[str | None] = []
    async with raw_client(raw_server, transport) as client:
        stream = await client.workers.create(input="x", stream=True)

        async def consume() -> None:
            async for event in stream:
                got.append(event.event_id)

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            assert await until(lambda: RESUMING in path, timeout=2.0)
            await stream.aclose()  # from another task, during the resume's wait
    # The consumer ended quietly with what it had; the reopened connection was let go.
    assert got == ["1", "2"]
    assert path == [BROKEN, RESUMING, CLOSED]
    assert stream.closed
