"""Wire decoding: one SSE event's data becomes one typed event.

Known chunk types decode in one msgspec pass through a tagged union, built
once. ``data-*`` parts, Worker snapshots and unknown chunks take a slower
generic path; they are rare on a stream, so the common path pays nothing
for them.

A known chunk with keys its Struct does not declare (ai 7's chunk schemas
are loose objects) keeps its JSON in ``original``, and :func:`encode_event`
gives those bytes back while the event is unchanged. The one-pass decoder
finds such a chunk for free: the Structs forbid unknown keys, so it refuses
the chunk, which then takes the generic path. Other chunks are written back
from their fields: the same JSON, in the Struct's key order. (Keeping every
chunk's bytes, or checking each against its re-encoding, cost 45 to 150 ns
an event on 300 ns of decoding, measured on 200,000 text deltas; this costs
under 10.)

>>> from handinger_stream.protocol.sse import ServerSentEvent
>>> decode_event(ServerSentEvent(b'{"type":"text-delta","id":"t","delta":"x"}', id="3"), 0)
TextDeltaEvent(id='t', delta='x', provider_metadata=UNSET, event_id='3')
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from itertools import repeat
from typing import Any, Final

import msgspec

from ..errors import APIResponseValidationError, StreamDecodeError, excerpt
from ..types.events import (
    CHUNK_TYPES,
    ChunkEvent,
    DataEvent,
    Event,
    UnknownEvent,
    WorkerSnapshotEvent,
)
from ..types.worker import WORKER_FIELDS, Worker
from .sse import DataRun, ServerSentEvent

__all__ = [
    "DONE",
    "decode_event",
    "decode_items",
    "decode_run",
    "decode_worker",
    "encode_event",
    "snapshot_event",
    "worker_from_object",
]

DONE: Final = b"[DONE]"
_DONE_TAIL: Final = b"\n" + DONE

_chunk_decoder: Final = msgspec.json.Decoder(ChunkEvent)
_any_decoder: Final = msgspec.json.Decoder()
_encode: Final = msgspec.json.Encoder().encode
# "~" escaped: how a key could spell one of our bookkeeping names without a plain "~".
_ESCAPED_TILDE: Final = re.compile(rb"\\u007[eE]")
_worker_decoder: Final = msgspec.json.Decoder(Worker, strict=False)
_DATA_PREFIX: Final = b'{"type":"data-'
# The JSON keys each chunk type declares. Not ~eventId (the SSE id's, never the
# JSON's) nor ~original: in a chunk's JSON they are undeclared keys like any other.
_CHUNK_KEYS: Final = {
    cls.__struct_config__.tag: frozenset(
        ("type", *(k for k in cls.__struct_encode_fields__ if k not in ("~eventId", "~original")))
    )
    for cls in ChunkEvent.__args__
}
_DATA_KEYS: Final = frozenset(("type", "data", "id", "transient"))


def decode_event(sse: ServerSentEvent, index: int) -> Event:
    """Decode one SSE event into a typed event (``[DONE]`` is the caller's to check).

    Raises :class:`StreamDecodeError` naming ``index`` when the data is not JSON
    or a known chunk type has the wrong shape.
    """
    raw = sse.raw
    if not raw.startswith(_DATA_PREFIX) and not _may_name_ours(raw):
        try:
            event: ChunkEvent = _chunk_decoder.decode(raw)
        except msgspec.DecodeError:
            pass
        else:
            event.event_id = sse.id
            return event
    return _decode_generic(raw, sse.id, index)


def decode_items(
    items: Sequence[ServerSentEvent | DataRun],
    out: list[Event | StreamDecodeError],
    bad: list[int],
) -> bool:
    """Typed events of what the SSE decoder gave, appended to ``out``; True at ``[DONE]``.

    A bad event takes its own place in ``out`` as its :class:`StreamDecodeError`
    (its position is appended to ``bad``), so the events before it can be
    delivered first. What follows ``[DONE]`` is dropped.

    >>> from handinger_stream.protocol.sse import SSEDecoder
    >>> out, bad = [], []
    >>> items = SSEDecoder().feed_runs(b'data: {"type":"start"}\\n\\ndata: [DONE]\\n\\n')
    >>> decode_items(items, out, bad)
    True
    >>> out, bad
    ([StartEvent(message_id=None, message_metadata=UNSET, event_id=None)], [])
    """
    for item in items:
        if type(item) is DataRun:
            if item.count > 1 and item.lines.endswith(_DONE_TAIL):
                # The last read of a stream: the run before [DONE] still decodes at once.
                return decode_items(item.split_last(), out, bad)
            events = decode_run(item)
            if events is not None:
                out += events
                continue
            singles: Sequence[ServerSentEvent] = item.events()
        else:
            singles = (item,)  # type: ignore[assignment]
        for sse in singles:
            if sse.raw == DONE:
                return True
            try:
                out.append(decode_event(sse, len(out)))
            except StreamDecodeError as exc:
                bad.append(len(out))
                out.append(exc)
    return False


def decode_run(run: DataRun) -> list[Event] | None:
    """A run of events decoded in one pass, or ``None`` when it cannot be.

    The run's data are JSON lines, one event a line, so msgspec decodes them
    in a single call and no line can run into the next; each event then gets
    its SSE id. Data parts and snapshots (``"type":"data-...``) are decoded on
    their own in between. ``None`` (an unknown chunk, bad JSON, a wrong shape,
    ``[DONE]``) means: decode them one by one, which then raises for the bad
    event in its turn. Either way the events are exactly what
    :func:`decode_event` gives for each.
    """
    text = run.lines
    if _may_name_ours(text):
        return None  # a key that would decode into our bookkeeping: one by one, kept whole
    events: list[Event]
    try:
        hit = text.find(_DATA_PART)
        if hit >= 0:
            events = _decode_around_data_parts(text, hit)
        else:
            events = _chunk_decoder.decode_lines(text)  # type: ignore[assignment]
    except (msgspec.DecodeError, StreamDecodeError):
        return None
    if len(events) != run.count:
        return None  # a blank line, or an event without data: not what it seemed
    # Each event's id is the SSE id it came with, whatever its data says.
    if run.ids is not None:
        deque(map(setattr, events, repeat("event_id"), run.ids), maxlen=0)
    elif run.id is not None:
        for event in events:
            event.event_id = run.id
    return events


_DATA_PART = b'"type":"data-'


def _may_name_ours(text: bytes) -> bool:
    """Whether JSON text may hold a key that decodes into one of our bookkeeping fields
    (``~eventId``, ``~original``), plainly or with its "~" escaped.

    Their JSON names start with "~" so that no chunk key decodes into them; a chunk
    that has such a key anyway takes the generic path, which keeps it as an
    undeclared key. (A `\"~` inside a string is found too: that chunk only takes
    the slower path.)
    """
    # bytes.find, not `in`: `in` tries the needle as an int first, at the cost of an exception.
    return text.find(b'"~') >= 0 or (
        text.find(b"\\u00") >= 0 and _ESCAPED_TILDE.search(text) is not None
    )


def _decode_around_data_parts(text: bytes, hit: int) -> list[Event]:
    """JSON lines with data parts among them (the first at ``hit``): runs between
    them in one call each."""
    out: list[Event] = []
    at = 0
    while hit >= 0:
        start = text.rfind(b"\n", 0, hit) + 1  # the line it is on (at is a line start)
        end = text.find(b"\n", hit)
        end = len(text) if end < 0 else end
        if start > at:
            out += _chunk_decoder.decode_lines(text[at : start - 1])
        out.append(_decode_generic(text[start:end], None, 0))
        at = end + 1
        hit = text.find(_DATA_PART, at)
    if at < len(text):
        out += _chunk_decoder.decode_lines(text[at:])
    return out


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
            return snapshot_event(obj, event_id, bare=True)
        if kind == "data-worker" and isinstance(obj.get("data"), dict):
            part_id, transient = obj.get("id"), obj.get("transient")
            return msgspec.structs.replace(
                snapshot_event(obj["data"], event_id),
                part_id=part_id if isinstance(part_id, str) else None,
                transient=transient if isinstance(transient, bool) else None,
            )
        if isinstance(kind, str) and kind.startswith("data-"):
            if obj.keys() <= _DATA_KEYS:
                data_event = msgspec.convert(obj, DataEvent)
            else:
                # The AI SDK keeps a data part's other keys on the message part.
                data_event = msgspec.convert(
                    {k: v for k, v in obj.items() if k in _DATA_KEYS}, DataEvent
                )
                data_event.extra = {k: v for k, v in obj.items() if k not in _DATA_KEYS}
                data_event.original = _kept(raw)
            data_event.event_id = event_id
            return data_event
        if kind in CHUNK_TYPES:
            keys = _CHUNK_KEYS[kind]
            if obj.keys() <= keys:
                chunk: ChunkEvent = msgspec.convert(obj, ChunkEvent)
            else:
                chunk = msgspec.convert({k: v for k, v in obj.items() if k in keys}, ChunkEvent)
                chunk.original = _kept(raw)
            chunk.event_id = event_id
            return chunk
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


def _kept(raw: bytes) -> bytes:
    """What ``original`` holds: the data, on one line (SSE writers put an event's data
    on one ``data:`` line; a line end inside JSON can only be whitespace, so a space
    for it is the same JSON)."""
    return raw if raw.find(b"\n") < 0 else raw.replace(b"\n", b" ")


def snapshot_event(
    obj: dict[str, Any], event_id: str | None = None, *, bare: bool = False
) -> WorkerSnapshotEvent:
    """A snapshot event from a decoded Worker object; ``fields`` are the keys it carried."""
    return WorkerSnapshotEvent(
        worker=worker_from_object(obj),
        fields=frozenset(obj.keys() & WORKER_FIELDS),
        event_id=event_id,
        bare=bare,
    )


def encode_event(event: Event) -> bytes:
    """The event's chunk as JSON, as the wire carried it: what the AI SDK's client accepts.

    No ``eventId``, no field the chunk did not have, a snapshot in its own
    wrapper (the fields it carried), an unknown chunk byte for byte, and a
    chunk with keys its Struct does not declare byte for byte too (while it
    is as decoded; changed, with those keys where they were). With
    :func:`decode_event` it round-trips.

    >>> raw = b'{"type":"text-delta","id":"t","delta":"x","future":[1]}'
    >>> encode_event(decode_event(ServerSentEvent(raw, id="9"), 0)) == raw
    True
    """
    if isinstance(event, UnknownEvent):
        return event.raw.encode()
    if not isinstance(event, WorkerSnapshotEvent) and event.original is not None:
        came = _as_it_came(event)
        if came is not None:
            return came
    if isinstance(event, WorkerSnapshotEvent):
        whole = msgspec.to_builtins(event.worker)
        worker = {key: whole[key] for key in whole if key in event.fields}
        if event.bare:
            return _encode(worker)
        part: dict[str, Any] = {"type": event.type}
        if event.part_id is not None:
            part["id"] = event.part_id
        part["data"] = worker
        if event.transient is not None:
            part["transient"] = event.transient
        return _encode(part)
    if isinstance(event, DataEvent):
        data_part: dict[str, Any] = {"type": event.type}
        if event.id is not None:
            data_part["id"] = event.id
        data_part["data"] = event.data
        if event.transient is not None:
            data_part["transient"] = event.transient
        if event.extra:
            data_part.update((k, v) for k, v in event.extra.items() if k not in _DATA_KEYS)
        return _encode(data_part)
    if event.event_id is not None or event.original is not None:
        event = msgspec.structs.replace(event, event_id=None, original=None)
    return _encode(event)


def _as_it_came(event: ChunkEvent | DataEvent) -> bytes | None:
    """``original`` while the event is what it was decoded from; changed since, its
    fields with the undeclared keys where they stood (a chunk's; a data part's
    fields and ``extra`` are :func:`encode_event`'s to write: ``None``).
    """
    original = event.original
    assert original is not None
    again: Event | None = None
    if type(event) is not DataEvent:
        try:  # the one-pass decoder first, as decode_event
            again = _chunk_decoder.decode(original)
        except msgspec.DecodeError:
            pass
    if again is None:
        try:
            again = _decode_generic(original, None, 0)
        except StreamDecodeError:
            return None  # not JSON of a chunk (set by hand): the fields alone go
    if type(again) is not type(event):
        return None
    # Compared as they stand, save what is not the chunk's.
    again.event_id, again.original = event.event_id, original
    if again == event:
        return original
    if type(event) is DataEvent:
        return None
    try:
        obj = _any_decoder.decode(original)
    except msgspec.DecodeError:
        return None  # bytes that are not UTF-8: the fields alone go
    # Changed since: its fields, and the undeclared keys where they stood.
    fields = msgspec.to_builtins(msgspec.structs.replace(event, event_id=None, original=None))
    declared = _CHUNK_KEYS[fields["type"]]
    merged = {
        k: fields[k] if k in declared else v
        for k, v in obj.items()
        if k in fields or k not in declared
    }
    merged.update((k, v) for k, v in fields.items() if k not in merged)
    return _encode(merged)


def worker_from_object(obj: dict[str, Any]) -> Worker:
    """A Worker from decoded JSON, tolerant of extra fields and int/float mixups."""
    return msgspec.convert(obj, Worker, strict=False)


def decode_worker(body: bytes) -> Worker:
    """A Worker from a JSON response body; :class:`APIResponseValidationError` if it is not one."""
    try:
        return _worker_decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise APIResponseValidationError(
            f"the response is not a Worker: {exc} (body: {excerpt(body)!r})", status_code=200
        ) from None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")
