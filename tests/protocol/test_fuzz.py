"""Fuzzing the decoding path: bytes → SSE events → typed events → reducer.

Whatever arrives, the only errors are the documented ones
(``StreamDecodeError``, ``EventTooLargeError``), and a snapshot can always be
taken afterwards.
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handinger_stream.errors import EXCERPT_CHARS, StreamDecodeError, excerpt
from handinger_stream.protocol.reducer import WorkerState
from handinger_stream.protocol.sse import EventTooLargeError, SSEDecoder
from handinger_stream.protocol.wire import DONE, decode_event
from handinger_stream.types.events import CHUNK_TYPES, DataEvent, UnknownEvent, WorkerSnapshotEvent

FIELDS = [
    "id", "delta", "messageId", "messageMetadata", "toolCallId", "toolName", "input",
    "inputTextDelta", "output", "errorText", "sourceId", "url", "title", "mediaType", "data",
    "transient", "dynamic", "providerMetadata", "object", "status", "output_text", "messages",
    "sources", "files", "usage", "costs", "reason", "approvalId", "preliminary", "inputEncoding",
]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)

chunk_objects = st.fixed_dictionaries(
    {"type": st.sampled_from([*sorted(CHUNK_TYPES), "data-x", "data-worker", "nope", ""])},
    optional={f: json_values for f in FIELDS},
)


def run(pieces: list[bytes], max_event_bytes: int = 4096) -> WorkerState:
    decoder = SSEDecoder(max_event_bytes)
    state = WorkerState("w")
    index = 0
    try:
        for piece in [*pieces, b""]:
            events = decoder.feed(piece) if piece else decoder.close()
            for sse in events:
                if sse.raw == DONE:
                    continue
                try:
                    state.apply(decode_event(sse, index))
                except StreamDecodeError as exc:
                    # The excerpt is short, on one line, and from the event's own data.
                    assert len(exc.excerpt) <= EXCERPT_CHARS
                    assert "\n" not in exc.excerpt and "\r" not in exc.excerpt
                    assert exc.excerpt[:8] == excerpt(sse.raw)[:8]
                index += 1
    except EventTooLargeError:
        pass
    state.snapshot()  # and what was folded can always be read
    return state


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_arbitrary_bytes_raise_only_documented_errors(pieces: list[bytes]) -> None:
    run(pieces)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            chunk_objects.map(lambda o: b"data: " + msgspec.json.encode(o) + b"\n\n"),
            st.sampled_from([b"data: [DONE]\n\n", b": keep-alive\n\n", b"id: 7\n", b"retry: x\n"]),
            st.binary(max_size=16),
        ),
        max_size=30,
    )
)
def test_chunks_of_any_shape_raise_only_documented_errors(frames: list[bytes]) -> None:
    run(frames)


@given(st.lists(chunk_objects, max_size=15))
def test_every_wellformed_json_chunk_is_one_event_of_its_own_type_or_an_error(
    chunks: list[dict[str, Any]],
) -> None:
    body = b"".join(b"data: " + msgspec.json.encode(c) + b"\n\n" for c in chunks)
    sses = SSEDecoder().feed(body)
    # Nothing is lost or merged: one SSE event per chunk...
    assert len(sses) == len(chunks)
    for index, (sse, chunk) in enumerate(zip(sses, chunks, strict=True)):
        kind = chunk["type"]
        try:
            event = decode_event(sse, index)
        except StreamDecodeError as exc:
            # ...and an error names the chunk's type (or "worker" for a snapshot).
            assert kind in exc.reason or (kind == "data-worker" and "worker" in exc.reason)
            continue
        # ...and a decoded event is of the chunk's own type.
        if kind == "data-worker" and isinstance(chunk.get("data"), dict):
            assert isinstance(event, WorkerSnapshotEvent)
        elif kind.startswith("data-"):
            assert isinstance(event, DataEvent) and event.type == kind
        elif kind in CHUNK_TYPES:
            assert event.__struct_config__.tag == kind
        else:
            assert isinstance(event, UnknownEvent) and event.type == kind
