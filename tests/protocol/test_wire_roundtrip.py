"""Typed events go back to the wire as they came: every AI SDK fixture, every emulator event.

Keys a chunk carries that its Struct does not declare (ai 7's schemas are
loose objects) come back byte for byte; everything else as the same JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from handinger_stream import AsyncHandinger, DataEvent, UnknownEvent, WorkerSnapshotEvent
from handinger_stream.emulator import Emulator
from handinger_stream.protocol.sse import DataRun, ServerSentEvent, SSEDecoder
from handinger_stream.protocol.wire import DONE, decode_event, decode_items, encode_event
from handinger_stream.types.events import ChunkEvent, TextDeltaEvent, TextEndEvent
from tests.conftest import API_KEY

# Both majors' fixtures (tests/interop/ai6/fixtures, ai7/...), and the older flat folder.
INTEROP = Path(__file__).parent.parent / "interop"
FIXTURES = sorted(INTEROP.glob("**/fixtures/*.sse"))
FIXTURE_IDS = [str(f.relative_to(INTEROP).parent.parent / f.stem) for f in FIXTURES]
# The JSON keys each chunk type declares (not the SSE id's, nor the kept bytes').
DECLARED = {
    cls.__struct_config__.tag: {"type", *cls.__struct_encode_fields__} - {"~eventId", "~original"}
    for cls in ChunkEvent.__args__
}
DATA_DECLARED = {"type", "id", "data", "transient"}


def events_of(body: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return [e for e in decoder.feed(body) + decoder.close() if e.raw != DONE]


@pytest.mark.parametrize("fixture", FIXTURES, ids=FIXTURE_IDS)
def test_every_ai_sdk_chunk_round_trips(fixture: Path) -> None:
    sses = events_of(fixture.read_bytes())
    for index, sse in enumerate(sses):
        event = decode_event(sse, index)
        encoded = encode_event(event)
        assert msgspec.json.decode(encoded) == msgspec.json.decode(sse.raw), sse.raw[:200]
        assert b"eventId" not in encoded
        chunk = msgspec.json.decode(sse.raw)
        declared = DECLARED.get(chunk.get("type"))
        if declared is not None and not chunk.keys() <= declared:
            # What no field models comes back as it came, byte for byte.
            assert encode_event(event) == sse.raw


def test_the_fixtures_of_both_majors_are_found() -> None:
    assert len(FIXTURES) >= 25
    names = {f.stem for f in FIXTURES}
    if (INTEROP / "ai7" / "fixtures").is_dir():
        assert {"reset-step", "custom", "citations", "tool-approval"} <= names


def undeclared_keys(fixture: Path) -> list[bytes]:
    raws = []
    for sse in events_of(fixture.read_bytes()):
        chunk = msgspec.json.decode(sse.raw)
        kind = chunk.get("type") if isinstance(chunk, dict) else None
        declared = DATA_DECLARED if str(kind).startswith("data-") else DECLARED.get(kind)
        if declared is not None and not chunk.keys() <= declared:
            raws.append(sse.raw)
    return raws


@pytest.mark.parametrize("fixture", FIXTURES, ids=FIXTURE_IDS)
def test_chunks_with_undeclared_keys_survive_the_fast_path_too(fixture: Path) -> None:
    # The whole fixture as the stream decodes it: runs of events in one msgspec call.
    data = fixture.read_bytes()
    decoder = SSEDecoder()
    out: list[Any] = []
    decode_items([*decoder.feed_runs(data), *decoder.close()], out, [])
    wanted = undeclared_keys(fixture)
    kept = [e.original for e in out if not isinstance(e, (UnknownEvent, WorkerSnapshotEvent))]
    assert [raw for raw in kept if raw is not None] == wanted
    assert [encode_event(e) for e in out if getattr(e, "original", None)] == wanted


UNDECLARED = [
    b'{"type":"text-delta","id":"t","delta":"x","logprob":-0.25}',
    b'{"type":"text-delta","seq":2,"id":"t","delta":"x"}',
    b'{"type":"text-end","id":"t","checksum":"e3","\\u00fcn\\u00ef":"c\\u00f6d\\u00e9"}',
    b'{"type":"text-end","id":"t","citations":[],"x":{"deep":[1,2.50,null]}}',
    b'{ "type" : "finish" , "finishReason" : "interrupted" , "region" : "eu" }',
    b'{"type":"reset-step","attempt":2}',
    b'{"type":"custom","kind":"k","payload":{"a":1}}',
    b'{"type":"tool-approval-response","approvalId":"a","approved":true,"by":"ops"}',
    b'{"type":"text-delta","id":"t","delta":"x","eventId":"not the SSE id"}',
    b'{"type":"text-delta","id":"t","delta":"x","~original":"not ours"}',
    b'{"type":"data-row","id":"r","data":1,"extra":{"kept":true}}',
]


@pytest.mark.parametrize("raw", UNDECLARED)
def test_undeclared_keys_round_trip_byte_for_byte(raw: bytes) -> None:
    event = decode_event(ServerSentEvent(raw, id="4"), 0)
    assert not isinstance(event, (UnknownEvent, WorkerSnapshotEvent))
    assert event.original == raw
    assert event.event_id == "4"
    assert encode_event(event) == raw


def test_a_changed_chunk_keeps_its_undeclared_keys_where_they_were() -> None:
    raw = b'{"type":"text-delta","seq":2,"id":"t","delta":"x","logprob":-0.25}'
    event = decode_event(ServerSentEvent(raw), 0)
    assert isinstance(event, TextDeltaEvent)
    changed = msgspec.structs.replace(event, delta="y")
    assert (
        encode_event(changed)
        == b'{"type":"text-delta","seq":2,"id":"t","delta":"y","logprob":-0.25}'
    )
    event.delta = "z"  # changed in place, too
    assert b'"delta":"z"' in encode_event(event)
    assert b'"seq":2' in encode_event(event)


def test_a_changed_data_part_keeps_its_other_keys() -> None:
    raw = b'{"type":"data-row","note":"n","id":"r","data":1}'
    event = decode_event(ServerSentEvent(raw), 0)
    assert isinstance(event, DataEvent) and event.extra == {"note": "n"}
    assert msgspec.json.decode(encode_event(msgspec.structs.replace(event, data=2))) == {
        "type": "data-row",
        "note": "n",
        "id": "r",
        "data": 2,
    }


def test_a_chunk_without_undeclared_keys_keeps_nothing() -> None:
    # The common case costs nothing: no bytes kept, the fields are written back.
    run = DataRun(b'{"type":"text-delta","id":"t","delta":"x"}\n{"type":"text-end","id":"t"}', 2)
    out: list[Any] = []
    decode_items([run], out, [])
    assert [e.original for e in out] == [None, None]
    assert out[1] == TextEndEvent(id="t")


def test_data_spanning_lines_is_written_back_on_one() -> None:
    # SSE writers put an event's data on one line: a line end inside JSON is whitespace,
    # so it is written again as a space, and the undeclared key stays.
    sse = ServerSentEvent(b'{"type":"text-end",\n"id":"t","x":1}')
    event = decode_event(sse, 0)
    assert encode_event(event) == b'{"type":"text-end", "id":"t","x":1}'


def test_msgspec_alone_refuses_undeclared_keys() -> None:
    # Why the one-pass decoder costs nothing here: it refuses, and the wire module keeps.
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(b'{"type":"text-end","id":"t","x":1}', type=ChunkEvent)


async def test_every_emulator_event_round_trips(emulator: Emulator) -> None:
    async with AsyncHandinger(api_key=API_KEY, base_url=emulator.base_url) as client:
        worker = await (
            await client.workers.create(input="A report on tides", budget="high", stream=True)
        ).get_final_worker()
        await (
            await client.workers.continue_(worker.id, input="And tomorrow?", stream=True)
        ).get_final_worker()
    async with httpx.AsyncClient() as http:
        replay = await http.get(
            f"{emulator.base_url}/api/workers/{worker.id}?stream=true",
            headers={"authorization": f"Bearer {API_KEY}"},
        )
    sses = events_of(replay.content)
    kinds = set()
    for index, sse in enumerate(sses):
        event = decode_event(sse, index)
        kinds.add(type(event).__name__)
        assert msgspec.json.decode(encode_event(event)) == msgspec.json.decode(sse.raw)
    assert {"WorkerSnapshotEvent", "ToolInputDeltaEvent", "SourceUrlEvent", "FileEvent"} <= kinds


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"future-chunk","x":[1,2,{"y":null}]}',
        b'{ "type" : "spaced",  "n": 1.50 }',
        b"[1, 2, 3]",
        b'"just a string"',
        b'{"no":"type"}',
    ],
)
def test_unknown_chunks_round_trip_byte_for_byte(raw: bytes) -> None:
    event = decode_event(ServerSentEvent(raw, id="4"), 0)
    assert isinstance(event, UnknownEvent)
    assert encode_event(event) == raw


def test_snapshots_keep_their_wrapper_and_only_the_fields_they_carried() -> None:
    part = (
        b'{"type":"data-worker","id":"snap","data":{"id":"w1","status":"running"},"transient":true}'
    )
    bare = b'{"id":"w1","object":"worker","output_text":"hi"}'
    for raw in (part, bare):
        event = decode_event(ServerSentEvent(raw), 0)
        assert isinstance(event, WorkerSnapshotEvent)
        assert msgspec.json.decode(encode_event(event)) == msgspec.json.decode(raw)


def test_absent_optional_fields_stay_absent_and_nulls_stay_null() -> None:
    raw = b'{"type":"tool-output-available","toolCallId":"c","output":null}'
    event = decode_event(ServerSentEvent(raw, id="1"), 0)
    assert msgspec.json.decode(encode_event(event)) == {
        "type": "tool-output-available",
        "toolCallId": "c",
        "output": None,
    }


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"start","~eventId":"x"}',
        b'{"type":"text-delta","id":"t","delta":"x","~original":"e30="}',
        b'{"type":"text-delta","id":"t","delta":"\\"~ is only text here"}',
        b'{"type":"text-delta","id":"t","delta":"x","\\u007eoriginal":"eHh4"}',
    ],
)
def test_a_chunk_cannot_write_our_bookkeeping(raw: bytes) -> None:
    """Keys named like our own fields (``~eventId``, ``~original``) are the chunk's, kept
    as any undeclared key: they neither set the SSE id nor choose the bytes encoded."""
    one = decode_event(ServerSentEvent(raw, id="7"), 0)
    [run] = SSEDecoder().feed_runs(b"id: 6\ndata: " + raw + b"\n\nid: 7\ndata: " + raw + b"\n\n")
    out: list[Any] = []
    decode_items([run], out, [])
    for event in (one, *out):
        assert encode_event(event) == raw
    assert [e.event_id for e in (one, *out)] == ["7", "6", "7"]

