"""Wire decoding: one SSE event's data becomes one typed event.

Known chunk types decode in one msgspec pass through a tagged union, built
once. ``data-*`` parts, Worker snapshots and unknown chunks take a slower
generic path; they are rare on a stream, so the common path pays nothing
for them.

>>> from handinger_stream.sse import ServerSentEvent
>>> decode_event(ServerSentEvent(b'{"type":"text-delta","id":"t","delta":"x"}', id="3"), 0)
TextDeltaEvent(id='t', delta='x', provider_metadata=UNSET, event_id='3')
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from .errors import StreamDecodeError
from .events import (
    CHUNK_TYPES,
    ChunkEvent,
    DataEvent,
    Event,
    UnknownEvent,
    WorkerSnapshotEvent,
)
from .models import WORKER_FIELDS, Worker
from .sse import DataRun, ServerSentEvent

__all__ = [
    "DONE",
    "decode_event",
    "decode_run",
    "decode_worker",
    "snapshot_event",
    "worker_from_object",
]

DONE: Final = b"[DONE]"

_chunk_decoder: Final = msgspec.json.Decoder(ChunkEvent)
_any_decoder: Final = msgspec.json.Decoder()
_run_decoder: Final = msgspec.json.Decoder(list[ChunkEvent])
_worker_decoder: Final = msgspec.json.Decoder(Worker, strict=False)
_DATA_PREFIX: Final = b'{"type":"data-'


def decode_event(sse: ServerSentEvent, index: int) -> Event:
    """Decode one SSE event into a typed event (``[DONE]`` is the caller's to check).

    Raises :class:`StreamDecodeError` naming ``index`` when the data is not JSON
    or a known chunk type has the wrong shape.
    """
    raw = sse.raw
    if not raw.startswith(_DATA_PREFIX):
        try:
            event: Event = _chunk_decoder.decode(raw)
        except msgspec.DecodeError:
            pass
        else:
            event.event_id = sse.id
            return event
    return _decode_generic(raw, sse.id, index)


def decode_run(run: DataRun) -> list[ChunkEvent] | None:
    """A run of one-line data events decoded in one pass, or ``None`` when it cannot be.

    The run's events become one JSON array by rewriting their separators, so
    msgspec decodes them in a single call. ``None`` (a data part, a snapshot,
    an unknown chunk, bad JSON, ``[DONE]``) means: decode them one by one.
    """
    region = run.region
    if b'"type":"data-' in region:
        return None
    try:
        events: list[ChunkEvent] = _run_decoder.decode(
            b"[" + region[6:].replace(b"\n\ndata: ", b",") + b"]"
        )
    except msgspec.DecodeError:
        return None
    if run.id is not None:
        for event in events:
            event.event_id = run.id
    return events


def _decode_generic(raw: bytes, event_id: str | None, index: int) -> Event:
    try:
        obj = _any_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        # The standard decodes invalid UTF-8 with replacement characters.
        try:
            obj = _any_decoder.decode(raw.decode("utf-8", "replace").encode())
        except msgspec.DecodeError:
            raise StreamDecodeError(
                f"invalid JSON ({exc})", index=index, event_id=event_id, data=raw
            ) from None
    if not isinstance(obj, dict):
        return UnknownEvent(type=None, data=obj, raw=_text(raw), event_id=event_id)
    kind = obj.get("type")
    try:
        if kind is None and obj.get("object") == "worker":
            return snapshot_event(obj, event_id)
        if kind == "data-worker" and isinstance(obj.get("data"), dict):
            return snapshot_event(obj["data"], event_id)
        if isinstance(kind, str) and kind.startswith("data-"):
            data_event = msgspec.convert(obj, DataEvent)
            data_event.event_id = event_id
            return data_event
        if kind in CHUNK_TYPES:
            event: Event = msgspec.convert(obj, ChunkEvent)
            event.event_id = event_id
            return event
    except msgspec.ValidationError as exc:
        raise StreamDecodeError(
            f"{kind or 'worker'} chunk has the wrong shape ({exc})",
            index=index,
            event_id=event_id,
            data=raw,
        ) from None
    return UnknownEvent(
        type=kind if isinstance(kind, str) else None, data=obj, raw=_text(raw), event_id=event_id
    )


def snapshot_event(obj: dict[str, Any], event_id: str | None = None) -> WorkerSnapshotEvent:
    """A snapshot event from a decoded Worker object; ``fields`` are the keys it carried."""
    return WorkerSnapshotEvent(
        worker=worker_from_object(obj),
        fields=frozenset(obj.keys() & WORKER_FIELDS),
        event_id=event_id,
    )


def worker_from_object(obj: dict[str, Any]) -> Worker:
    """A Worker from decoded JSON, tolerant of extra fields and int/float mixups."""
    return msgspec.convert(obj, Worker, strict=False)


def decode_worker(body: bytes) -> Worker:
    """A Worker from a JSON response body."""
    return _worker_decoder.decode(body)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")
