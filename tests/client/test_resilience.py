"""Streams that survive: resume, retries, stall limits, checkpoints, bad input.

Everything runs over real loopback HTTP: the emulator (with faults queued by
``Emulator.inject_fault``) or the raw-bytes server for exact scripts.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest

from handinger_stream import (
    APIConnectionError,
    APIStatusError,
    AsyncHandinger,
    IncompleteStreamError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    StreamDecodeError,
    TextDeltaEvent,
    Worker,
)
from handinger_stream.client.stream import Checkpoint, WorkerStream
from handinger_stream.client.transport import TransportName
from handinger_stream.emulator import Emulator
from handinger_stream.types.events import Event, Reconnected
from tests.conftest import API_KEY, Canned, RawServer, until
from tests.helpers.emulators import emulator_fixture

PROMPT = "Hi"  # 69 events at budget "low": cut after each one in turn
SSE = {"content-type": "text/event-stream", "x-handinger-worker-id": "w1"}


# retry: 5 ms, so that resuming costs the tests almost nothing.
emu = emulator_fixture(api_key=API_KEY, seed=1, retry_ms=5, keepalive_interval=0.05)


@pytest.fixture(autouse=True)
def no_leftover_faults(emu: Emulator) -> Iterator[None]:
    yield
    emu.clear_faults()


@pytest.fixture
async def rclient(emu: Emulator, transport: TransportName) -> AsyncIterator[AsyncHandinger]:
    async with AsyncHandinger(
        api_key=API_KEY,
        base_url=emu.base_url,
        transport=transport,
    ) as client:
        yield client


def raw_client(raw_server: RawServer, transport: TransportName, **options: Any) -> AsyncHandinger:
    """A client of the raw-bytes server."""
    return AsyncHandinger(
        api_key="k",
        base_url=raw_server.base_url,
        transport=transport,
        **options,
    )


def plain(event: Event) -> bytes:
    """An event without its SSE id, for comparing streams with and without ids."""
    return msgspec.json.encode(
        [type(event).__name__, msgspec.structs.replace(event, event_id=None)]
    )


async def drain(stream: WorkerStream) -> tuple[list[Event], list[Reconnected]]:
    events: list[Event] = []
    notices: list[Reconnected] = []
    async for item in stream.events(reconnects=True):
        if isinstance(item, Reconnected):
            notices.append(item)
        else:
            events.append(item)
    return events, notices


async def uninterrupted(client: AsyncHandinger, worker_id: str) -> tuple[list[Event], Worker]:
    stream = await client.workers.retrieve(worker_id, stream=True)
    events = [e async for e in stream]
    return events, await stream.get_final_worker()


# -- resume -------------------------------------------------------------------


@pytest.mark.parametrize("ids", [True, False], ids=["ids", "no-ids"])
async def test_a_cut_after_any_event_resumes_to_the_same_worker(
    emu: Emulator, rclient: AsyncHandinger, ids: bool
) -> None:
    first = await rclient.workers.create(input=PROMPT, budget="low", stream=True)
    total = len([e async for e in first])
    assert total >= 50
    for k in range(total):
        emu.inject_fault(f"drop-after={k}" + ("" if ids else ";no-ids=1"))
        if not ids:
            emu.inject_fault("no-ids=1")
        stream = await rclient.workers.create(input=PROMPT, budget="low", stream=True)
        events, notices = await drain(stream)
        reference, final = await uninterrupted(rclient, stream.worker_id)
        assert [n.last_event_id for n in notices] == [str(k - 1) if ids and k else None], k
        if not ids:
            assert notices[0].skipped == k
        # Each event exactly once, in order; the Worker as if nothing had happened.
        assert [plain(e) for e in events] == [plain(e) for e in reference], k
        if ids:
            assert [e.event_id for e in events] == [e.event_id for e in reference]
        assert stream.snapshot == final, k
        assert stream.completed and stream.closed and stream.reconnects == 1


async def test_default_iteration_never_shows_reconnects(
    emu: Emulator, rclient: AsyncHandinger
) -> None:
    emu.inject_fault("drop-after=7")
    stream = await rclient.workers.create(input=PROMPT, stream=True)
    kinds: set[type[object]] = {type(e) async for e in stream}
    assert Reconnected not in kinds and stream.reconnects == 1
    emu.inject_fault("drop-after=7")
    stream = await rclient.workers.create(input=PROMPT, stream=True)
    text = "".join([t async for t in stream.text_deltas()])
    assert text == stream.snapshot.output_text and stream.reconnects == 1


async def test_a_failing_replay_is_retried_with_backoff(
    emu: Emulator, rclient: AsyncHandinger
) -> None:
    emu.inject_fault("drop-after=5")
    emu.inject_fault("status=503")
    emu.inject_fault("status=429; retry-after=0")
    stream = await rclient.workers.create(input=PROMPT, stream=True)
    _events, notices = await drain(stream)
    assert [n.attempt for n in notices] == [3]
    # Repeated failures wait longer than the server's retry: of 5 ms.
    assert notices[0].delay > 0.005
    assert stream.snapshot == (await uninterrupted(rclient, stream.worker_id))[1]


async def test_giving_up_after_max_reconnects_keeps_the_partial_worker(
    emu: Emulator, rclient: AsyncHandinger
) -> None:
    client = rclient.with_options(max_reconnects=2)
    emu.inject_fault("drop-after=12")
    emu.inject_fault("drop-after=0", times=3)
    stream = await client.workers.create(input=PROMPT, stream=True)
    seen = 0
    with pytest.raises(IncompleteStreamError) as info:
        async for _ in stream:
            seen += 1
    assert seen == 12
    assert "gave up after 2 reconnect attempts" in str(info.value)
    assert isinstance(info.value.__cause__, APIConnectionError)
    assert info.value.worker is not None and info.value.worker.id == stream.worker_id
    assert info.value.worker == stream.snapshot and stream.closed


async def test_the_attempt_count_resets_when_events_flow(
    emu: Emulator, rclient: AsyncHandinger
) -> None:
    client = rclient.with_options(max_reconnects=1)
    emu.inject_fault("drop-after=10", times=12)
    stream = await client.workers.create(input=PROMPT, budget="low", stream=True)
    worker = await stream.get_final_worker()
    assert stream.reconnects >= 6  # far more breaks than max_reconnects allows in a row
    assert worker == (await uninterrupted(rclient, worker.id))[1]


async def test_a_404_while_resuming_is_not_retried(emu: Emulator, rclient: AsyncHandinger) -> None:
    emu.inject_fault("drop-after=5")
    emu.inject_fault("status=404", times=3)
    stream = await rclient.workers.create(input=PROMPT, stream=True)
    with pytest.raises(IncompleteStreamError) as info:
        await stream.get_final_worker()
    assert isinstance(info.value.__cause__, NotFoundError)
    assert len(emu._faults) == 2  # one 404, then it stopped asking


async def test_resume_sends_last_event_id_and_the_callers_headers(
    raw_server: RawServer, transport: TransportName
) -> None:
    raw_server.serve(
        Canned(
            [b'id: 1\ndata: {"type":"start"}\n\nid: 2\ndata: {"type":"start-step"}\n\n'],
            headers=SSE,
        ),
        Canned([b'id: 3\ndata: {"type":"finish"}\n\ndata: [DONE]\n\n'], headers=SSE),
    )
    async with raw_client(raw_server, transport) as client:
        stream = await client.workers.create(
            input="x", stream=True, extra_headers={"x-trace": "t-1"}
        )
        kinds = [type(e).__name__ async for e in stream]
    assert kinds == ["StartEvent", "StartStepEvent", "FinishEvent"]
    create, replay = raw_server.requests
    assert (create["method"], replay["method"]) == ("POST", "GET")
    assert replay["path"] == "/api/workers/w1?stream=true"
    assert replay["headers"]["Last-Event-ID"] == "2"
    assert replay["headers"]["x-trace"] == "t-1"


async def test_a_replay_that_ignores_last_event_id_is_not_delivered_twice(
    raw_server: RawServer, transport: TransportName
) -> None:
    start = b'id: 1\ndata: {"type":"start"}\n\nid: 2\ndata: {"type":"start-step"}\n\n'
    rest = b'id: 3\ndata: {"type":"finish-step"}\n\nid: 4\ndata: {"type":"finish"}\n\n'
    raw_server.serve(
        Canned([start], headers=SSE),  # ends early, without its end
        Canned([start, rest, b"data: [DONE]\n\n"], headers=SSE),  # replays from the start
    )
    async with raw_client(raw_server, transport) as client:
        stream = await client.workers.create(input="x", stream=True)
        ids = [e.event_id async for e in stream]
    assert ids == ["1", "2", "3", "4"]
    assert raw_server.requests[1]["headers"]["Last-Event-ID"] == "2"


async def test_a_continued_stream_skips_a_full_replay_by_numeric_id(
    raw_server: RawServer, transport: TransportName
) -> None:
    def events(*ids: int) -> bytes:
        return b"".join(b'id: %d\ndata: {"type":"start-step"}\n\n' % i for i in ids)

    raw_server.serve(
        Canned([events(5, 6)], headers=SSE),
        Canned(
            [events(1, 2, 3, 4, 5, 6, 7), b'id: 8\ndata: {"type":"finish"}\n\ndata: [DONE]\n\n'],
            headers=SSE,
        ),
    )
    async with raw_client(raw_server, transport) as client:
        stream = await client.workers.continue_("w1", input="x", stream=True)
        ids = [e.event_id async for e in stream]
    assert ids == ["5", "6", "7", "8"]


async def test_a_create_cut_before_its_worker_id_is_known_is_not_sent_again(
    raw_server: RawServer, transport: TransportName
) -> None:
    raw_server.serve(Canned([b'data: {"type":"start"}\n\n']))  # no id header, no snapshot
    async with raw_client(raw_server, transport) as client:
        stream = await client.workers.create(input="x", stream=True)
        with pytest.raises(IncompleteStreamError, match="worker id was not known"):
            await stream.get_final_worker()
    assert [r["method"] for r in raw_server.requests] == ["POST"]


async def test_a_sent_create_without_an_answer_is_not_retried_but_a_get_is(
    raw_server: RawServer, transport: TransportName
) -> None:
    raw_server.serve(Canned([], abort=True))
    async with raw_client(raw_server, transport, max_retries=2) as client:
        with pytest.raises(APIConnectionError, match="not retried") as info:
            await client.workers.create(input="x", stream=True)
        assert info.value.request_sent
        assert len(raw_server.requests) == 1
        raw_server.serve(Canned([], abort=True))
        with pytest.raises(APIConnectionError):
            await client.workers.retrieve("w1")
        # 1 + max_retries attempts (aiohttp may add its own retry of an idempotent GET).
        assert len(raw_server.requests) >= 3


async def test_retry_after_is_honoured_before_the_first_byte(
    raw_server: RawServer, transport: TransportName
) -> None:
    error = b'{"error":{"message":"slow down"}}'
    json = {"content-type": "application/json"}
    raw_server.serve(
        Canned([error], status=429, headers={**json, "retry-after-ms": "20"}),
        Canned([error], status=503, headers={**json, "retry-after": "0"}),
        Canned([b'data: {"type":"finish"}\n\ndata: [DONE]\n\n'], headers=SSE),
    )
    async with raw_client(raw_server, transport) as client:
        stream = await client.workers.create(input="x", stream=True)
        assert (await stream.get_final_worker()).status == "completed"
    assert [r["method"] for r in raw_server.requests] == ["POST"] * 3


# -- stall limits ------------------------------------------------------------


def keepalives(n: int) -> list[bytes]:
    return [b": keep-alive\n\n"] * n


async def test_keepalives_are_not_progress_an_idle_stream_resumes(
    raw_server: RawServer, transport: TransportName
) -> None:
    raw_server.serve(
        Canned([b'id: 1\ndata: {"type":"start"}\n\n', *keepalives(60)], headers=SSE, delay=0.02),
        Canned([b'id: 2\ndata: {"type":"finish"}\n\ndata: [DONE]\n\n'], headers=SSE),
    )
    async with raw_client(
        raw_server,
        transport,
        idle_timeout=0.2,
    ) as client:
        stream = await client.workers.create(input="x", stream=True)
        events, notices = await drain(stream)
    assert [type(e).__name__ for e in events] == ["StartEvent", "FinishEvent"]
    assert "idle limit" in notices[0].reason and notices[0].last_event_id == "1"
    assert raw_server.requests[1]["headers"]["Last-Event-ID"] == "1"


async def test_a_silent_connection_times_out_at_the_read_timeout_and_resumes(
    raw_server: RawServer, transport: TransportName
) -> None:
    # No stall limit is shorter than the client's timeout here: the transport's own
    # read timeout (on aiohttp, the response's watchdog) must notice the silence,
    # which starts after a comment (so after aiohttp's timer from the headers is gone).
    body = [b'id: 1\ndata: {"type":"start"}\n\n', b": ping\n\n", b": late\n\n"]
    raw_server.serve(
        Canned(body, headers=SSE, delay=0.1, pauses={1: 6.0}),
        Canned([b'id: 2\ndata: {"type":"finish"}\n\ndata: [DONE]\n\n'], headers=SSE),
    )
    async with raw_client(
        raw_server, transport, timeout=0.4, first_event_timeout=None, idle_timeout=None
    ) as client:
        started = time.monotonic()
        stream = await client.workers.create(input="x", stream=True)
        events, notices = await drain(stream)
        waited = time.monotonic() - started
    assert [type(e).__name__ for e in events] == ["StartEvent", "FinishEvent"]
    assert len(notices) == 1 and "timed out" in notices[0].reason
    assert raw_server.requests[1]["headers"]["Last-Event-ID"] == "1"
    assert 0.4 <= waited < 4.0  # the timeout, not the server's six seconds of silence


async def test_a_slow_first_event_resumes_from_the_start(
    raw_server: RawServer, transport: TransportName
) -> None:
    raw_server.serve(
        Canned(keepalives(60), headers=SSE, delay=0.02),
        Canned(
            [b'data: {"type":"start"}\n\ndata: {"type":"finish"}\n\ndata: [DONE]\n\n'], headers=SSE
        ),
    )
    async with raw_client(
        raw_server,
        transport,
        first_event_timeout=0.2,
    ) as client:
        stream = await client.workers.create(input="x", stream=True)
        events, notices = await drain(stream)
    assert len(events) == 2 and "first_event limit" in notices[0].reason
    assert "Last-Event-ID" not in raw_server.requests[1]["headers"]


async def test_stalls_that_do_not_heal_say_which_limit(
    raw_server: RawServer, transport: TransportName
) -> None:
    raw_server.serve(
        Canned([b'id: 1\ndata: {"type":"start"}\n\n', *keepalives(40)], headers=SSE, delay=0.02)
    )
    async with raw_client(
        raw_server,
        transport,
        idle_timeout=0.1,
        max_reconnects=2,
    ) as client:
        stream = await client.workers.create(input="x", stream=True)
        with pytest.raises(IncompleteStreamError) as info:
            await stream.get_final_worker()
    error = info.value
    assert type(error).__name__ == "StreamTimeoutError"
    assert (error.limit, error.seconds) == ("idle", 0.1)  # type: ignore[attr-defined]
    assert error.worker is not None and error.worker.status == "running"
    assert len(raw_server.requests) == 3


async def test_the_total_deadline_is_final(raw_server: RawServer, transport: TransportName) -> None:
    delta = b'data: {"type":"text-delta","id":"t","delta":"x"}\n\n'
    raw_server.serve(
        Canned(
            [b'data: {"type":"text-start","id":"t"}\n\n'] + [delta] * 200, headers=SSE, delay=0.01
        )
    )
    async with raw_client(
        raw_server,
        transport,
        total_timeout=0.3,
    ) as client:
        stream = await client.workers.create(input="x", stream=True)
        with pytest.raises(IncompleteStreamError) as info:
            await stream.get_final_worker()
    assert info.value.limit == "total"  # type: ignore[attr-defined]
    assert info.value.worker is not None and 0 < len(info.value.worker.output_text) < 200
    assert len(raw_server.requests) == 1  # resuming cannot beat a deadline


async def test_a_stalled_emulator_stream_resumes(emu: Emulator, transport: TransportName) -> None:
    emu.inject_fault("stall-after=8; stall-seconds=5")
    async with AsyncHandinger(
        api_key=API_KEY,
        base_url=emu.base_url,
        transport=transport,
        idle_timeout=0.3,
    ) as client:
        stream = await client.workers.create(input=PROMPT, stream=True)
        worker = await stream.get_final_worker()
        assert stream.reconnects == 1
        assert worker == (await uninterrupted(client, worker.id))[1]


# -- checkpoints -------------------------------------------------------------


@pytest.mark.parametrize("ids", [True, False], ids=["ids", "no-ids"])
@pytest.mark.parametrize("at", [0, 1, 17, 40])
async def test_a_checkpoint_resumes_in_a_fresh_client(
    emu: Emulator, transport: TransportName, ids: bool, at: int
) -> None:
    options: dict[str, Any] = {"api_key": API_KEY, "base_url": emu.base_url, "transport": transport}
    if not ids:
        emu.inject_fault("no-ids=1", times=2)
    async with AsyncHandinger(**options) as first:
        stream = await first.workers.create(input=PROMPT, stream=True)
        before = [await stream.__anext__() for _ in range(at)]
        saved = msgspec.json.encode(stream.checkpoint())
        await stream.aclose()
    checkpoint = msgspec.json.decode(saved, type=Checkpoint)
    assert checkpoint.position == at and (checkpoint.last_event_id is not None) == (ids and at > 0)
    async with AsyncHandinger(**options) as second:
        resumed = await second.workers.resume(checkpoint)
        assert resumed.snapshot == checkpoint.snapshot
        after = [e async for e in resumed]
        reference, final = await uninterrupted(second, checkpoint.worker_id)
    assert [plain(e) for e in before + after] == [plain(e) for e in reference]
    assert resumed.snapshot == final


async def test_a_checkpoint_without_a_place_is_refused(rclient: AsyncHandinger) -> None:
    with pytest.raises(ValueError, match="cannot be resumed exactly"):
        await rclient.workers.resume(
            Checkpoint(worker_id="w", last_event_id=None, position=None, snapshot=Worker(id="w"))
        )


# -- bad input ---------------------------------------------------------------


async def test_an_oversized_event_fails_without_reading_it_all(
    raw_server: RawServer, transport: TransportName
) -> None:
    piece = b"x" * 65536
    raw_server.serve(
        Canned(
            [
                b'id: 1\ndata: {"type":"start"}\n\ndata: {"type":"text-delta","delta":"',
                *[piece] * 200,
            ],
            headers=SSE,
            delay=0.002,
        )
    )
    async with raw_client(
        raw_server,
        transport,
        max_event_bytes=256 * 1024,
    ) as client:
        stream = await client.workers.create(input="x", stream=True)
        with pytest.raises(StreamDecodeError) as info:
            async for _ in stream:
                pass
    assert "256" in str(info.value) or "262144" in str(info.value)
    assert info.value.index == 1 and info.value.event_id == "1"
    assert info.value.worker is not None and info.value.worker.status == "running"
    assert stream.closed
    assert await until(lambda: raw_server.open_streams == 0, 2.0)
    assert raw_server.finished == 0  # the server never got to write the whole 12.5 MiB


@pytest.mark.parametrize(
    ("status", "body", "content_type", "error", "text"),
    [
        (
            502,
            b"<html><body><h1>502 Bad Gateway</h1>nginx</body></html>",
            "text/html",
            InternalServerError,
            "Bad Gateway",
        ),
        (
            200,
            b"<!doctype html><title>Sign in</title>" + b"x" * 5000,
            "text/html",
            APIStatusError,
            "Sign in",
        ),
        (
            200,
            b'{"error":{"message":"quota exhausted","type":"rate_limit_error"}}',
            "application/json",
            APIStatusError,
            "quota exhausted",
        ),
        (
            429,
            b'{"error":{"message":"quota exhausted"}}',
            "application/json",
            RateLimitError,
            "quota exhausted",
        ),
    ],
)
async def test_a_stream_request_answered_otherwise_is_a_clear_status_error(
    raw_server: RawServer,
    transport: TransportName,
    status: int,
    body: bytes,
    content_type: str,
    error: type[Exception],
    text: str,
) -> None:
    raw_server.serve(Canned([body], status=status, headers={"content-type": content_type}))
    async with raw_client(raw_server, transport, max_retries=0) as client:
        with pytest.raises(error) as info:
            await client.workers.create(input="x", stream=True)
    assert isinstance(info.value, APIStatusError) and info.value.status_code == status
    assert text in str(info.value) and len(str(info.value)) < 400


async def test_invalid_utf8_becomes_replacement_characters(
    raw_server: RawServer, transport: TransportName
) -> None:
    raw_server.serve(
        Canned(
            [
                b'data: {"type":"text-start","id":"t"}\n\n',
                b'data: {"type":"text-delta","id":"t","delta":"caf\xc3\xa9 \xff\xfe ok"}\n\n',
                b'data: {"type":"finish"}\n\ndata: [DONE]\n\n',
            ],
            headers=SSE,
        )
    )
    async with raw_client(raw_server, transport) as client:
        stream = await client.workers.create(input="x", stream=True)
        worker = await stream.get_final_worker()
    assert worker.output_text == "café \ufffd\ufffd ok"


async def test_a_stream_ending_early_without_resume_raises_with_the_partial_worker(
    raw_server: RawServer, transport: TransportName
) -> None:
    raw_server.serve(
        Canned(
            [
                b'data: {"type":"text-start","id":"t"}\n\ndata: {"type":"text-delta","id":"t","delta":"half"}\n\n'
            ],
            headers=SSE,
        )
    )
    async with raw_client(raw_server, transport, max_reconnects=0) as client:
        stream = await client.workers.create(input="x", stream=True)
        deltas: list[str] = []
        with pytest.raises(IncompleteStreamError) as info:
            async for event in stream:
                if isinstance(event, TextDeltaEvent):
                    deltas.append(event.delta)
    assert deltas == ["half"]
    assert info.value.worker is not None and info.value.worker.output_text == "half"


async def test_a_bad_event_inside_a_run_is_raised_in_its_turn(
    raw_server: RawServer, transport: TransportName
) -> None:
    # One read of plain data events decodes in one call; a bad one among them must
    # still arrive after the good ones before it, with its own index.
    good = b'data: {"type":"text-delta","id":"t","delta":"ok"}\n\n'
    body = b'data: {"type":"text-start","id":"t"}\n\n' + good * 3 + b"data: {oops\n\n" + good
    raw_server.serve(Canned([body + b"data: [DONE]\n\n"], headers=SSE))
    async with raw_client(raw_server, transport) as client:
        stream = await client.workers.create(input="x", stream=True)
        seen: list[str] = []
        with pytest.raises(StreamDecodeError) as info:
            async for event in stream:
                seen.append(type(event).__name__)
    assert seen == ["TextStartEvent"] + ["TextDeltaEvent"] * 3
    assert info.value.index == 4 and "oops" in info.value.excerpt
    assert info.value.worker is not None and info.value.worker.output_text == "okokok"
