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

from handinger_stream.errors import StreamDecodeError
from handinger_stream.events import CHUNK_TYPES
from handinger_stream.reducer import WorkerState, apply_event
from handinger_stream.sse import EventTooLargeError, SSEDecoder
from handinger_stream.wire import DONE, decode_event

FIELDS = [
    "id", "delta", "messageId", "messageMetadata", "toolCallId", "toolName", "input",
    "inputTextDelta", "output", "errorText", "sourceId", "url", "title", "mediaType", "data",
    "transient", "dynamic", "providerMetadata", "object", "status", "output_text", "messages",
    "sources", "files", "usage", "costs", "reason", "approvalId", "preliminary", "inputEncoding",
]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
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
                    apply_event(state, decode_event(sse, index))
                except StreamDecodeError as exc:
                    assert exc.index == index and len(exc.excerpt) <= 200
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
def test_every_wellformed_json_chunk_is_an_event_or_an_error_naming_it(
    chunks: list[dict[str, Any]],
) -> None:
    body = b"".join(b"data: " + msgspec.json.encode(c) + b"\n\n" for c in chunks)
    decoder = SSEDecoder()
    failed: list[int] = []
    decoded = 0
    for index, sse in enumerate(decoder.feed(body)):
        try:
            decode_event(sse, index)
            decoded += 1
        except StreamDecodeError as exc:
            failed.append(exc.index)
    # Nothing is lost or merged: each chunk is exactly one event or one error, in order.
    assert decoded + len(failed) == len(chunks)
    assert failed == sorted(set(failed))
