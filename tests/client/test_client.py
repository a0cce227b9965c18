"""The client end to end over loopback HTTP, once per transport."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handinger_stream import (
    APIConnectionError,
    AsyncHandinger,
    AuthenticationError,
    BadRequestError,
    IncompleteStreamError,
    InternalServerError,
    InvalidRequestError,
    MissingAPIKeyError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    StreamDecodeError,
    TextDeltaEvent,
    UnprocessableEntityError,
    Worker,
    WorkerFailedError,
    WorkerSnapshotEvent,
    WorkerStream,
)
from handinger_stream.client.transport import TransportName
from handinger_stream.emulator import FAULT_HEADER, Emulator
from handinger_stream.types.events import Event, FinishEvent, StartEvent, StartStepEvent
from tests.conftest import API_KEY, Canned, RawServer, until


async def faulted_stream(
    client: AsyncHandinger, input: str, fault: str, **options: Any
) -> WorkerStream:
    """A streamed create whose response carries an emulator fault."""
    response = await client.request(
        "POST",
        "/api/workers",
        json={"input": input, "stream": True},
        stream=True,
        headers={FAULT_HEADER: fault},
    )
    return WorkerStream(response, **options)


async def test_create_json_returns_a_worker(client: AsyncHandinger) -> None:
    worker = await client.workers.create(input="Hello there", budget="low")
    assert isinstance(worker, Worker)
    assert worker.id.startswith("wrk_") and worker.object == "worker"
    assert worker.status in ("pending", "running")


async def test_streamed_create_folds_to_the_servers_final_worker(client: AsyncHandinger) -> None:
    stream = await client.workers.create(input="What's the weather in Barcelona?", stream=True)
    assert isinstance(stream, WorkerStream)
    seen_ids: list[str | None] = []
    texts: list[str] = []
    async with stream:
        async for event in stream:
            seen_ids.append(event.event_id)
            if isinstance(event, TextDeltaEvent):
                texts.append(event.delta)
                # the snapshot grows with every delta
                assert stream.snapshot.output_text.endswith(event.delta)
    final = await stream.get_final_worker()
    assert final.output_text == "".join(texts) and len(texts) > 10
    assert seen_ids == [str(i) for i in range(len(seen_ids))]
    assert final.status == "completed" and final.running is False
    assert len(final.sources) >= 2 and final.usage is not None and final.costs is not None
    assert final.usage.output_tokens > 0 and final.costs.total_usd > 0
    assert final == await client.workers.retrieve(final.id)
    assert stream.closed


async def test_the_fold_without_snapshots_matches_the_server(client: AsyncHandinger) -> None:
    """The chunks alone, without the authoritative snapshots, give the same Worker content."""
    stream = await client.workers.create(input="Compare three laptops", budget="high", stream=True)
    from handinger_stream.protocol.reducer import WorkerState, apply_event

    state = WorkerState()
    async for event in stream:
        if not isinstance(event, WorkerSnapshotEvent):
            apply_event(state, event)
    folded, server = state.snapshot(), stream.snapshot
    assert folded.output_text == server.output_text
    assert [(s.id, s.url, s.title) for s in folded.sources] == [
        (s.id, s.url, s.title) for s in server.sources
    ]
    assert [f.url for f in folded.files] == [f.url for f in server.files]
    assert folded.usage is not None and server.usage is not None
    assert (folded.usage.input_tokens, folded.usage.output_tokens, folded.usage.total_tokens) == (
        server.usage.input_tokens,
        server.usage.output_tokens,
        server.usage.total_tokens,
    )
    assert folded.costs == server.costs
    assert folded.messages[-1] == server.messages[-1]


async def test_text_deltas_and_snapshots(client: AsyncHandinger) -> None:
    stream = await client.workers.create(input="Tell me about tides", stream=True)
    text = "".join([t async for t in stream.text_deltas()])
    assert text == stream.snapshot.output_text and stream.closed

    stream = await client.workers.create(input="Tell me about tides", stream=True)
    snaps = [s async for s in stream.snapshots()]
    assert len(snaps) > 10 and snaps[-1] == await stream.get_final_worker()

    stream = await client.workers.create(input="Tell me about tides", stream=True)
    coalesced = [s async for s in stream.snapshots(min_interval=10)]
    assert len(coalesced) == 2  # the first, then the last, always delivered
    assert coalesced[-1].status == "completed"


async def test_replay_continue_subscribe_email_and_file(client: AsyncHandinger) -> None:
    first = await (
        await client.workers.create(input="Write a report", budget="high", stream=True)
    ).get_final_worker()
    replay = await client.workers.retrieve(first.id, stream=True)
    assert await replay.get_final_worker() == first

    turn2 = await client.workers.continue_(first.id, input="And tomorrow?", stream=True)
    second = await turn2.get_final_worker()
    assert len(second.output) == 2 and second.output_text.startswith(first.output_text)
    assert [m["role"] for m in second.messages] == ["user", "assistant", "user", "assistant"]

    whole = await (await client.workers.retrieve(first.id, stream=True)).get_final_worker()
    assert whole == second

    live = await client.workers.subscribe(first.id)
    assert (await live.get_final_worker()).id == first.id

    assert (await client.workers.retrieve_email(first.id)).startswith(first.id + "@")

    [file] = first.files
    assert file.filename == "report.md" and file.media_type == "text/markdown"
    body = b"".join([c async for c in client.workers.retrieve_file(first.id, "report.md")])
    assert body.startswith(b"# Report") and first.sources[0].url.encode() in body


async def test_subscribe_sees_a_running_worker_to_its_end(
    emulator: Emulator, transport: TransportName
) -> None:
    async with (
        Emulator(api_key=API_KEY, tokens_per_second=400) as slow,
        AsyncHandinger(
            api_key=API_KEY,
            base_url=slow.base_url,
            transport=transport,
        ) as client,
    ):
        worker = await client.workers.create(input="Slowly, please")
        live = await client.workers.subscribe(worker.id)
        final = await live.get_final_worker()
        assert final.status == "completed" and final.output_text
        assert final == await client.workers.retrieve(worker.id)


async def test_validation_before_any_request(client: AsyncHandinger) -> None:
    with pytest.raises(InvalidRequestError, match="input"):
        await client.workers.create(input="")
    with pytest.raises(ValueError, match="budget must be one of"):
        await client.workers.create(input="x", budget="huge")  # type: ignore[call-overload]


async def test_missing_key_names_both_ways(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HANDINGER_API_KEY", raising=False)
    async with AsyncHandinger(base_url=emulator.base_url) as client:
        with pytest.raises(MissingAPIKeyError, match=r"api_key=.*HANDINGER_API_KEY"):
            await client.workers.create(input="x")


async def test_env_configuration(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDINGER_API_KEY", API_KEY)
    monkeypatch.setenv("HANDINGER_BASE_URL", emulator.base_url)
    async with AsyncHandinger() as client:
        assert client.base_url == emulator.base_url
        assert (await client.workers.create(input="x")).id
    monkeypatch.delenv("HANDINGER_BASE_URL")
    assert AsyncHandinger().base_url == "https://handinger.com"


async def test_wrong_key_is_401_and_key_never_leaks(
    emulator: Emulator, transport: TransportName
) -> None:
    secret = "sk-wrong-and-secret"
    async with AsyncHandinger(
        api_key=secret, base_url=emulator.base_url, transport=transport
    ) as client:
        assert secret not in repr(client)
        with pytest.raises(AuthenticationError) as info:
            await client.workers.create(input="x", stream=True)
        assert info.value.status_code == 401
        assert secret not in str(info.value) and secret not in repr(info.value.body)


async def test_unknown_worker_is_404(client: AsyncHandinger) -> None:
    with pytest.raises(NotFoundError):
        await client.workers.retrieve("wrk_nope")
    with pytest.raises(NotFoundError):
        await client.workers.retrieve("wrk_nope", stream=True)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (422, UnprocessableEntityError),
        (429, RateLimitError),
        (500, InternalServerError),
        (503, InternalServerError),
    ],
)
async def test_each_status_error_class(
    raw_server: RawServer, transport: TransportName, status: int, cls: type[Exception]
) -> None:
    raw_server.serve(
        Canned(
            [b'{"error": {"message": "nope"}}'],
            status=status,
            headers={"content-type": "application/json", "x-request-id": "req_1"},
        )
    )
    async with AsyncHandinger(
        api_key="k", base_url=raw_server.base_url, transport=transport, max_retries=0
    ) as client:
        with pytest.raises(cls) as info:
            await client.workers.create(input="x", stream=True)
    err = info.value
    assert err.status_code == status and err.request_id == "req_1"  # type: ignore[attr-defined]
    assert err.body == {"error": {"message": "nope"}} and "nope" in str(err)  # type: ignore[attr-defined]


async def test_429_and_503_are_retried_then_succeed(client: AsyncHandinger) -> None:
    for fault in ("status=429; status-times=2; retry-after=0.01", "status=503; status-times=1"):
        response = await client.request(
            "POST", "/api/workers", json={"input": f"retry {fault}"}, headers={FAULT_HEADER: fault}
        )
        assert response.status == 200
        await response.aclose()


async def test_401_is_not_retried(raw_server: RawServer, transport: TransportName) -> None:
    raw_server.serve(Canned([b"{}"], status=401, headers={"content-type": "application/json"}))
    async with AsyncHandinger(
        api_key="k", base_url=raw_server.base_url, transport=transport
    ) as client:
        with pytest.raises(AuthenticationError):
            await client.workers.retrieve("w")
    assert len(raw_server.requests) == 1


async def test_malformed_event_raises_with_index_and_keeps_the_snapshot(
    client: AsyncHandinger,
) -> None:
    stream = await faulted_stream(client, "malformed", "malformed-at=12")
    delivered = 0
    with pytest.raises(StreamDecodeError) as info:
        async for _ in stream:
            delivered += 1
    assert delivered == 12 and info.value.index == 12 and info.value.event_id == "12"
    assert "oops" in str(info.value)
    assert info.value.worker is not None and info.value.worker == stream.snapshot
    assert stream.snapshot.status == "running" and stream.closed


async def test_skip_on_decode_error(emulator: Emulator, transport: TransportName) -> None:
    async with AsyncHandinger(
        api_key=API_KEY,
        base_url=emulator.base_url,
        transport=transport,
        on_decode_error="skip",
    ) as client:
        stream = await faulted_stream(client, "skip me", "malformed-at=3", on_decode_error="skip")
        worker = await stream.get_final_worker()
        assert worker.status == "completed"


async def test_worker_error_raises_worker_failed_with_the_whole_worker(
    client: AsyncHandinger,
) -> None:
    stream = await faulted_stream(client, "fail", "error-after=20")
    with pytest.raises(WorkerFailedError) as info:
        await stream.get_final_worker()
    assert info.value.worker is not None and info.value.worker.error == info.value.message
    assert info.value.worker.status == "completed"


async def test_dropped_connection_is_an_incomplete_stream(client: AsyncHandinger) -> None:
    stream = await faulted_stream(client, "drop", "drop-after=10")
    with pytest.raises((IncompleteStreamError, APIConnectionError)):
        await stream.get_final_worker()
    assert stream.snapshot.status == "running" and stream.closed


async def test_unknown_chunks_are_surfaced(raw_server: RawServer, transport: TransportName) -> None:
    raw_server.serve(
        Canned(
            [
                b'data: {"type":"start"}\n\ndata: {"type":"brand-new","x":1}\n\n',
                b'data: {"type":"finish"}\n\ndata: [DONE]\n\n',
            ]
        )
    )
    async with AsyncHandinger(
        api_key="k", base_url=raw_server.base_url, transport=transport
    ) as client:
        stream = await client.workers.create(input="x", stream=True)
        kinds = [type(e).__name__ for e in [e async for e in stream]]
    assert kinds == ["StartEvent", "UnknownEvent", "FinishEvent"]


async def test_a_json_answer_to_a_stream_request_is_one_snapshot(
    raw_server: RawServer, transport: TransportName
) -> None:
    body = msgspec.json.encode(
        {"id": "w5", "object": "worker", "status": "completed", "output_text": "done"}
    )
    raw_server.serve(Canned([body], headers={"content-type": "application/json"}))
    async with AsyncHandinger(
        api_key="k", base_url=raw_server.base_url, transport=transport
    ) as client:
        stream = await client.workers.create(input="x", stream=True)
        [event] = [e async for e in stream]
        assert isinstance(event, WorkerSnapshotEvent)
        assert (await stream.get_final_worker()).output_text == "done"


# -- closing ------------------------------------------------------------------


async def test_leaving_the_loop_early_closes_the_connection(
    raw_server: RawServer, transport: TransportName
) -> None:
    body = [b'data: {"type":"text-start","id":"t"}\n\n'] + [
        b'data: {"type":"text-delta","id":"t","delta":"x"}\n\n'
    ] * 200
    raw_server.serve(Canned(body, delay=0.005))
    async with AsyncHandinger(
        api_key="k", base_url=raw_server.base_url, transport=transport
    ) as client:
        stream = await client.workers.create(input="x", stream=True)
        async for event in stream:
            if isinstance(event, TextDeltaEvent):
                break
        assert await until(lambda: stream.closed, 0.2)
        assert await until(lambda: raw_server.open_streams == 0)
        with pytest.raises(IncompleteStreamError):
            await stream.get_final_worker()


async def test_cancelling_the_task_closes_the_connection(
    raw_server: RawServer, transport: TransportName
) -> None:
    raw_server.serve(Canned([b'data: {"type":"start"}\n\n'] * 500, delay=0.01))
    async with AsyncHandinger(
        api_key="k", base_url=raw_server.base_url, transport=transport
    ) as client:
        stream = await client.workers.create(input="x", stream=True)
        task = asyncio.create_task(stream.get_final_worker())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert stream.closed
        assert await until(lambda: raw_server.open_streams == 0)


async def test_callers_http_client_is_not_closed(emulator: Emulator) -> None:
    import aiohttp
    import httpx

    async with aiohttp.ClientSession() as session, httpx.AsyncClient() as hx:
        for own in (session, hx):
            async with AsyncHandinger(
                api_key=API_KEY, base_url=emulator.base_url, http_client=own
            ) as client:
                assert client.transport.name == ("aiohttp" if own is session else "httpx")
                await (await client.workers.create(input="x", stream=True)).get_final_worker()
        assert not session.closed and not hx.is_closed
    gc.collect()


# -- any chunking of the same bytes: the same events, the same Worker ---------


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.integers(1, 64), min_size=1, max_size=40))
def test_any_chunking_gives_the_same_worker(raw_server: RawServer, sizes: list[int]) -> None:
    body = _recorded_stream()
    pieces: list[bytes] = []
    i = 0
    while i < len(body):
        n = sizes[len(pieces) % len(sizes)]
        pieces.append(body[i : i + n])
        i += n

    async def fold(chunks: list[bytes]) -> tuple[list[Event], Worker]:
        raw_server.serve(Canned(chunks))
        async with AsyncHandinger(api_key="k", base_url=raw_server.base_url) as client:
            stream = await client.workers.create(input="x", stream=True)
            evs = [e async for e in stream]
            return evs, await stream.get_final_worker()

    whole = asyncio.run(fold([body]))
    assert asyncio.run(fold(pieces)) == whole


_RECORDED: list[bytes] = []


def _recorded_stream() -> bytes:
    """A real emulator stream, with unicode, recorded once."""
    if not _RECORDED:

        async def record() -> bytes:
            async with (
                Emulator() as emu,
                AsyncHandinger(api_key="k", base_url=emu.base_url) as client,
            ):
                response = await client.request(
                    "POST",
                    "/api/workers",
                    json={"input": "Café ☕ 東京 — ümlaut?", "stream": True, "budget": "high"},
                    stream=True,
                )
                data = await response.read()
                await response.aclose()
                return data

        _RECORDED.append(asyncio.run(record()))
    return _RECORDED[0]


async def test_text_deltas_and_snapshots_raise_after_the_last_item_when_the_worker_failed(
    client: AsyncHandinger,
) -> None:
    stream = await faulted_stream(client, "fail", "error-after=40")
    pieces: list[str] = []
    with pytest.raises(WorkerFailedError) as info:
        async for piece in stream.text_deltas():
            pieces.append(piece)
    # Everything the worker wrote was shown before the failure.
    assert pieces and "".join(pieces) == stream.snapshot.output_text
    assert info.value.worker is not None and info.value.worker.error is not None

    stream = await faulted_stream(client, "fail", "error-after=40")
    snaps: list[Worker] = []
    with pytest.raises(WorkerFailedError):
        async for snap in stream.snapshots(min_interval=10):
            snaps.append(snap)
    assert snaps[-1].error is not None and snaps[-1] == stream.snapshot


async def test_every_workers_call_sends_extra_headers(
    raw_server: RawServer, transport: TransportName
) -> None:
    json_headers = {"content-type": "application/json"}
    raw_server.serve(
        Canned([b'"w1@workers.handinger.invalid"'], headers=json_headers),
        Canned([b"file ", b"bytes"], headers={"content-type": "text/plain"}),
    )
    async with AsyncHandinger(
        api_key="k", base_url=raw_server.base_url, transport=transport
    ) as client:
        extra = {"x-trace": "t-1"}
        assert await client.workers.retrieve_email("w1", extra_headers=extra) == (
            "w1@workers.handinger.invalid"
        )
        download = client.workers.retrieve_file("w1", "dir/a b.txt", extra_headers=extra)
        assert await download.read() == b"file bytes"
    assert [r["headers"].get("x-trace") for r in raw_server.requests] == ["t-1", "t-1"]
    assert raw_server.requests[1]["path"] == "/api/workers/w1/files/dir/a%20b.txt"


async def test_a_file_download_closes_its_response_when_left(
    raw_server: RawServer, transport: TransportName
) -> None:
    raw_server.serve(
        # 10 s to write it all, twice the wait below: a slow machine cannot finish it.
        Canned([b"x" * 1000] * 200, headers={"content-type": "text/plain"}, delay=0.05)
    )
    async with AsyncHandinger(
        api_key="k", base_url=raw_server.base_url, transport=transport
    ) as client:
        async with client.workers.retrieve_file("w1", "big.bin") as download:
            async for _chunk in download:
                break
        assert await until(lambda: raw_server.open_streams == 0, timeout=5)
    assert raw_server.finished == 0  # the server never got to write it all


def test_the_public_names_are_exported() -> None:
    import handinger_stream
    from handinger_stream import errors

    assert set(errors.__all__) - {"status_error"} <= set(handinger_stream.__all__)
    for name in handinger_stream.__all__:
        assert hasattr(handinger_stream, name), name


def test_the_version_has_one_source() -> None:
    from importlib.metadata import version

    import handinger_stream

    assert handinger_stream.__version__ == version("handinger-stream")


async def test_ready_waits_for_events_without_handing_them_over(client: AsyncHandinger) -> None:
    stream = await client.workers.create(input="Ready when you are", stream=True)
    taken: list[Event] = []
    while n := await stream.ready():
        before = stream.snapshot
        assert await stream.ready() == n  # asking again reads nothing more
        assert stream.snapshot == before  # nothing handed over, nothing folded
        for _ in range(n):
            taken.append(await stream.__anext__())
    assert stream.completed and await stream.ready() == 0
    replay = await client.workers.retrieve(stream.worker_id, stream=True)
    assert [e.event_id for e in taken] == [e.event_id async for e in replay]
    assert stream.snapshot == await client.workers.retrieve(stream.worker_id)
    await stream.aclose()


async def test_ready_skips_a_bad_event_it_would_not_hand_over(
    raw_server: RawServer, transport: TransportName
) -> None:
    # With on_decode_error="skip", a bad event is nothing to hand over: ready() must
    # not count it, or a consumer trusting the count (watch) blocks in __anext__
    # on a stream with nothing to give while its other streams have plenty.
    body = [
        b'data: {"type":"start"}\n\ndata: {"type":"start-step"},{"type":1}\n\n',
        b'data: {"type":"start-step"}\n\n',
        b'data: {"type":"finish"}\n\ndata: [DONE]\n\n',
    ]
    raw_server.serve(Canned(body, headers={"content-type": "text/event-stream"}, delay=1.0))
    async with AsyncHandinger(
        api_key="k", base_url=raw_server.base_url, transport=transport, on_decode_error="skip"
    ) as client:
        stream = await client.workers.create(input="x", stream=True)
        assert await stream.ready() == 1
        assert isinstance(await stream.__anext__(), StartEvent)
        assert await stream.ready() == 1  # the next good event, a second later
        with anyio.fail_after(0.5):  # handed over at once, without reading
            assert isinstance(await stream.__anext__(), StartStepEvent)
        assert [type(e) async for e in stream] == [FinishEvent]


async def test_a_stream_dropped_after_anext_lets_its_connection_go(
    raw_server: RawServer, transport: TransportName
) -> None:
    body = [b'data: {"type":"start"}\n\n'] + [b'data: {"type":"start-step"}\n\n'] * 200
    # 10 s to write it all, twice the wait below: on a slow machine the server must
    # still be writing when the stream is dropped, or finished == 0 proves nothing.
    raw_server.serve(Canned(body, headers={"content-type": "text/event-stream"}, delay=0.05))
    async with AsyncHandinger(
        api_key="k", base_url=raw_server.base_url, transport=transport
    ) as client:
        stream = await client.workers.create(input="x", stream=True)
        await stream.__anext__()
        del stream
        gc.collect()
        # Closed by the finaliser (at once on aiohttp, by a task scheduled then on httpx).
        assert await until(lambda: raw_server.open_streams == 0, timeout=5)
    assert raw_server.finished == 0
