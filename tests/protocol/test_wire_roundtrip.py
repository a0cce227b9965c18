"""Typed events go back to the wire as they came: every AI SDK fixture, every emulator event."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec
import pytest

from handinger_stream import AsyncHandinger, UnknownEvent, WorkerSnapshotEvent
from handinger_stream.emulator import Emulator
from handinger_stream.protocol.sse import ServerSentEvent, SSEDecoder
from handinger_stream.protocol.wire import DONE, decode_event, encode_event
from tests.conftest import API_KEY

FIXTURES = sorted((Path(__file__).parent.parent / "interop" / "fixtures").glob("*.sse"))


def events_of(body: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return [e for e in decoder.feed(body) + decoder.close() if e.raw != DONE]


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_every_ai_sdk_chunk_round_trips(fixture: Path) -> None:
    sses = events_of(fixture.read_bytes())
    for index, sse in enumerate(sses):
        encoded = encode_event(decode_event(sse, index))
        assert msgspec.json.decode(encoded) == msgspec.json.decode(sse.raw), sse.raw[:200]
        assert b"eventId" not in encoded


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
