"""The batch path and the per-event path are the same, event for event.

Random streams mix every shape a server sends (ids on every event or none,
event names, retry lines, keep-alive comments, CRLF and CR line ends, data
parts and snapshots) with malformed events (two objects on one line, cut
JSON, wrong field types, invalid UTF-8, oversized events, unusual ids), cut
into random reads. Fed through ``feed_runs`` + ``decode_items`` (what the
stream does) and through ``feed`` + ``decode_event`` (the standard, one event
at a time), they must give the same events with the same ids, the same errors
at the same indices, and the same Worker. Over loopback, the stream itself
must deliver exactly that, at the same positions.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handinger_stream import (
    AsyncHandinger,
    IncompleteStreamError,
    StreamDecodeError,
    WorkerStream,
)
from handinger_stream.protocol.reducer import WorkerState
from handinger_stream.protocol.sse import EventTooLargeError, SSEDecoder, expand_runs
from handinger_stream.protocol.wire import DONE, decode_event, decode_items
from handinger_stream.types.events import Event
from tests.conftest import Canned, RawServer

MAX_EVENT_BYTES = 400

Item = tuple[
    str, Any
]  # ("event", Event) | ("error", (reason, event_id, excerpt)) | ("too-large", None)

GOOD = [
    {"type": "start", "messageId": "m1"},
    {"type": "start-step"},
    {"type": "text-start", "id": "t"},
    {"type": "text-delta", "id": "t", "delta": "Hello "},
    {"type": "text-delta", "id": "t", "delta": "wörld ✓ \u2028 "},
    {"type": "text-delta", "id": "t", "delta": 'quote " and \\ back'},
    {"type": "reasoning-delta", "id": "r", "delta": "hmm"},
    {"type": "source-url", "sourceId": "s1", "url": "https://a.example", "title": "A"},
    {"type": "tool-input-start", "toolCallId": "c", "toolName": "search"},
    {"type": "tool-input-delta", "toolCallId": "c", "inputTextDelta": '{"q":'},
    {"type": "tool-output-available", "toolCallId": "c", "output": None},
    {"type": "data-weather", "id": "d1", "data": {"temp": 21}},
    {"type": "data-worker", "data": {"id": "w", "status": "running"}, "transient": True},
    {"type": "message-metadata", "messageMetadata": {"usage": {"inputTokens": 3}}},
    {"type": "text-end", "id": "t"},
    {"type": "finish-step"},
    {"type": "future-chunk", "x": 1},
    {"type": "finish"},
]
GOOD_RAW = [msgspec.json.encode(c) for c in GOOD]
BAD_RAW = [
    b'{"type":"start-step"},{"type":"finish-step"}',  # two objects on one line
    b'{"type":"text-delta","id":"t","del',  # cut short
    b'{"type":"text-delta","id":1,"delta":2}',  # wrong field types
    b'{"type":"text-delta","id":"t","delta":"\xff\xfe"}',  # invalid UTF-8
    b'{"type":"text-delta","eventId":"x","id":"t","delta":"y"}',  # a key like ours
    b'{"type":"start","event\\u0049d":"x"}',  # the same key, escaped
    b"{}",
    b"[1,2]",
    b"",
    b"   ",
    b"[DONE]x",
    b'{"type":"text-delta","id":"t","delta":"' + b"z" * 500 + b'"}',  # past the bound
]

payloads = st.one_of(st.sampled_from(GOOD_RAW), st.sampled_from(BAD_RAW))
ids = st.one_of(
    st.integers(0, 10**6).map(lambda n: b"%d" % n),
    st.sampled_from([b"evt-a1", b"", b'x"y', b"a\\nb", b"n\x00ul", b"\xe2\x9c\x93"]),
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One event with the lines a server might put around it, or a lone extra."""
    kind = draw(st.sampled_from(["event", "event", "event", "event", "comment", "retry", "id"]))
    if kind == "comment":
        return b": keep-alive\n\n"
    if kind == "retry":
        return b"retry: %d\n\n" % draw(st.integers(0, 5000))
    if kind == "id":
        return b"id: " + draw(ids) + b"\n\n"
    data = draw(payloads)
    lines = []
    if draw(st.booleans()):
        lines.append(b"event: " + draw(st.sampled_from([b"message", b"update"])))
    if draw(st.integers(0, 3)):  # mostly an id on every event, as the emulator sends
        lines.append(b"id: " + draw(ids))
    if draw(st.integers(0, 9)) == 0:
        lines.append(b": a comment inside")
    if draw(st.integers(0, 9)) == 0 and len(data) > 4:
        cut = draw(st.integers(1, len(data) - 1))
        lines += [b"data: " + data[:cut], b"data: " + data[cut:]]  # multi-line data
    else:
        lines.append(b"data: " + data)
    return b"\n".join(lines) + b"\n\n"


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    body = b"".join(draw(st.lists(frames(), max_size=25)))
    if draw(st.booleans()):
        body += b"data: [DONE]\n\n" if draw(st.booleans()) else b"id: 99\ndata: [DONE]\n\n"
    ending = draw(st.sampled_from(["lf", "lf", "crlf", "cr"]))
    if ending == "crlf":
        body = body.replace(b"\n", b"\r\n")
    elif ending == "cr":
        body = body.replace(b"\n", b"\r")
    return body


def reads(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True) if b > a]


def as_item(event_or_error: Event | StreamDecodeError) -> Item:
    if isinstance(event_or_error, StreamDecodeError):
        e = event_or_error
        return ("error", (e.reason, e.event_id, e.excerpt))
    return ("event", event_or_error)


def one_by_one(chunks: list[bytes]) -> tuple[list[Item], bool]:
    """The reference: the standard's events, each decoded on its own."""
    decoder = SSEDecoder(MAX_EVENT_BYTES)
    sses = []
    too_large = False
    try:
        for chunk in chunks:
            sses += decoder.feed(chunk)
        sses += decoder.close()
    except EventTooLargeError as exc:
        sses += expand_runs(exc.events)
        too_large = True
    out: list[Item] = []
    for index, sse in enumerate(sses):
        if sse.raw == DONE:
            return out, True
        try:
            out.append(as_item(decode_event(sse, index)))
        except StreamDecodeError as exc:
            out.append(as_item(exc))
    if too_large:
        out.append(("too-large", None))
    return out, False


def in_batches(chunks: list[bytes]) -> tuple[list[Item], bool]:
    """What the stream does: runs of events, decoded at once where they can be."""
    decoder = SSEDecoder(MAX_EVENT_BYTES)
    out: list[Event | StreamDecodeError] = []
    bad: list[int] = []
    for chunk in [*chunks, b""]:
        try:
            items = decoder.feed_runs(chunk) if chunk else decoder.close()
        except EventTooLargeError as exc:
            done = decode_items(exc.events, out, bad)
            return [as_item(x) for x in out] + ([] if done else [("too-large", None)]), done
        if decode_items(items, out, bad):
            return [as_item(x) for x in out], True
    # Every bad event is in its own slot, listed where it is.
    assert bad == [i for i, x in enumerate(out) if isinstance(x, StreamDecodeError)]
    return [as_item(x) for x in out], False


def folded(items: list[Item]) -> Any:
    state = WorkerState("w")
    state.apply_all(x for kind, x in items if kind == "event")
    return state.snapshot()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.lists(st.integers(0, 10**6), max_size=12))
def test_runs_decode_exactly_as_events_one_by_one(body: bytes, cuts: list[int]) -> None:
    chunks = reads(body, cuts)
    expected, expected_done = one_by_one(chunks)
    got, done = in_batches(chunks)
    assert got == expected
    assert done == expected_done
    assert folded(got) == folded(expected)


def test_the_generator_reaches_every_shape() -> None:
    # The property above is only as good as what it is fed: check the mix.
    seen: set[str] = set()

    @settings(max_examples=400, deadline=None)
    @given(streams())
    def look(body: bytes) -> None:
        items, _ = one_by_one([body])
        for kind, x in items:
            seen.add(kind if kind != "event" else type(x).__name__)
        if b"id: " in body:
            seen.add("ids")
        if b"\r" in body:
            seen.add("cr")

    look()
    assert {"error", "too-large", "TextDeltaEvent", "DataEvent", "ids", "cr"} <= seen
    assert {"WorkerSnapshotEvent", "UnknownEvent"} <= seen


# -- the stream itself, over loopback --------------------------------------------


async def through_the_stream(raw_server: RawServer, chunks: list[bytes]) -> tuple[list[Item], Any]:
    """Every event the stream delivers (bad ones skipped), and where a fatal error stopped it."""
    raw_server.serve(Canned(chunks))
    got: list[Item] = []
    async with AsyncHandinger(
        api_key="k",
        base_url=raw_server.base_url,
        on_decode_error="skip",
        max_event_bytes=MAX_EVENT_BYTES,
        # The canned server answers a resume with the same body again: a stream that
        # ended early would wait out five backoffs (12 s) to learn nothing new here.
        max_reconnects=0,
    ) as client:
        stream = await client.workers.create(input="x", stream=True)
        try:
            async for event in stream:
                position = stream.checkpoint().position
                assert position is not None
                got.append(("event", (position - 1, event)))
                assert stream.last_event_id == (
                    event.event_id
                    if event.event_id is not None
                    else next(
                        (e.event_id for _, (_, e) in reversed(got) if e.event_id is not None), None
                    )
                )
        except StreamDecodeError as exc:
            got.append(("too-large", exc.index))
        except IncompleteStreamError:
            pass  # no [DONE] and no worker id to resume with: the end, as far as the test goes
        return got, stream.snapshot


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(streams(), st.lists(st.integers(0, 10**6), max_size=6))
def test_the_stream_delivers_the_same_events_at_the_same_positions(
    raw_server: RawServer, body: bytes, cuts: list[int]
) -> None:
    chunks = reads(body, cuts) or [b""]
    expected, _ = one_by_one(chunks)
    positioned = [
        ("event", (i, x)) if kind == "event" else ("too-large", i)
        for i, (kind, x) in enumerate(expected)
        if kind != "error"
    ]
    got, snapshot = asyncio.run(through_the_stream(raw_server, chunks))
    assert got == positioned
    assert snapshot == msgspec.structs.replace(folded(expected), id=snapshot.id)


# -- the edges, one by one ---------------------------------------------------------


async def delivered(
    raw_server: RawServer, chunks: list[bytes], **options: Any
) -> tuple[list[Event], BaseException | None, WorkerStream]:
    raw_server.serve(Canned(chunks))
    events: list[Event] = []
    error: BaseException | None = None
    async with AsyncHandinger(api_key="k", base_url=raw_server.base_url, **options) as client:
        stream = await client.workers.create(input="x", stream=True)
        try:
            async for event in stream:
                events.append(event)
        except (StreamDecodeError, IncompleteStreamError) as exc:
            error = exc
    return events, error, stream


START = b'data: {"type":"start-step"}\n\n'


async def test_two_objects_on_one_line_are_one_bad_event(raw_server: RawServer) -> None:
    joined = b'data: {"type":"start-step"},{"type":"finish-step"}\n\n'
    for chunks in ([START * 3 + joined + START], [joined]):
        events, error, stream = await delivered(raw_server, chunks)
        assert isinstance(error, StreamDecodeError) and error.index == len(events)
        assert [type(e).__name__ for e in events] == ["StartStepEvent"] * len(events)
        assert stream.checkpoint().position == len(events) + 1


async def test_an_event_past_the_bound_names_its_own_index_after_the_ones_before(
    raw_server: RawServer,
) -> None:
    big = b'data: {"type":"text-delta","id":"t","delta":"' + b"x" * 3000 + b'"}\n\n'
    # Complete within one read, or still growing when the bound is crossed.
    for chunks in ([START * 5 + big + START], [START * 5 + big[:2000]]):
        events, error, _ = await delivered(raw_server, chunks, max_event_bytes=1000)
        assert len(events) == 5
        assert isinstance(error, StreamDecodeError) and error.index == 5
        assert "exceeds 1000 bytes" in str(error)


async def test_an_event_exactly_at_the_bound_passes(raw_server: RawServer) -> None:
    line = b'data: {"type":"text-delta","id":"t","delta":"'
    body = line + b"x" * (1000 - len(line) - 2) + b'"}'
    assert len(body) == 1000
    for chunks in ([body + b"\n\n"], [body[:600], body[600:] + b"\n\n"]):
        events, error, _ = await delivered(
            raw_server, [START, *chunks, b"data: [DONE]\n\n"], max_event_bytes=1000
        )
        assert error is None and len(events) == 2


@pytest.mark.parametrize("crlf", [False, True])
async def test_ids_names_retry_and_comments_keep_each_event_id(
    raw_server: RawServer, crlf: bool
) -> None:
    body = (
        b"retry: 250\n\n: keep-alive\n\n"
        + b"".join(
            b'id: %d\nevent: message\ndata: {"type":"start-step"}\n\n: ka\n\n' % i
            for i in range(50)
        )
        + b"data: [DONE]\n\n"
    )
    if crlf:
        body = body.replace(b"\n", b"\r\n")
    events, error, stream = await delivered(raw_server, [body[:700], body[700:]])
    assert error is None and [e.event_id for e in events] == [str(i) for i in range(50)]
    assert stream.last_event_id == "49"
