"""Compaction of a turn's history: fewer, larger events that fold exactly the same.

A replay of a long turn repeats every delta as it streamed, often a few
characters each. :func:`compact` merges each run of *adjacent* deltas of one
part (``text-delta``, ``reasoning-delta``, ``tool-input-delta`` of one id)
into one delta, and each run of adjacent data parts of one type and id into
the last of them; every other event is kept whole, in order. A merged event
carries the SSE id of the last event it holds, so every event of the result
stands for exactly the events of the history up to its id: a reader that
resumes with ``Last-Event-ID`` from any event of a compacted replay continues
exactly where it was, from the full history or a compacted one.

Only adjacent events merge, never across another: parts interleave (a text
part and a tool input stream at once), ``finish-step`` closes open parts
under ai 6, ``reset-step`` discards a step's parts under ai 7, a snapshot
restarts a text. An event merged with nothing between it and its neighbour
cannot be told from its neighbour by any of those rules, so the AI SDK's
``readUIMessageStream`` (either major) and :class:`WorkerState` fold the
compacted history into the same message as the whole one. What could change
a fold is never merged: a delta with keys its chunk does not declare, a delta
whose text is not plain valid JSON (a surrogate escape that the next delta
might complete, invalid UTF-8, a bad escape), a transient data part, the
``data-worker`` snapshot.

The relay and the emulator store each event's JSON bytes with its id;
:func:`compact` works on those bytes (the common delta is recognised by its
prefix and its text joined as bytes, nothing decoded). :func:`compact_events`
does the same on typed events.

>>> history = [
...     (b'{"type":"text-start","id":"t"}', "1"),
...     (b'{"type":"text-delta","id":"t","delta":"Hel"}', "2"),
...     (b'{"type":"text-delta","id":"t","delta":"lo"}', "3"),
...     (b'{"type":"text-end","id":"t"}', "4"),
... ]
>>> [(data.decode(), i) for data, i in compact(history)]  # doctest: +NORMALIZE_WHITESPACE
[('{"type":"text-start","id":"t"}', '1'),
 ('{"type":"text-delta","id":"t","delta":"Hello"}', '3'),
 ('{"type":"text-end","id":"t"}', '4')]
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final, TypeVar

import msgspec
from msgspec import UNSET

from ..types.events import (
    DataEvent,
    Event,
    ReasoningDeltaEvent,
    TextDeltaEvent,
    ToolInputDeltaEvent,
)

__all__ = ["COMPACT_HEADER", "compact", "compact_events"]

COMPACT_HEADER: Final = "x-handinger-compact"
"""The request header asking a replay for its compacted form (``1``): an extension of
the emulator's, not of the service's contract. See docs/emulator.md."""

Entry = tuple[bytes, str | None]
"""An event's JSON bytes and the SSE id it was sent with."""
_Id = TypeVar("_Id")  # whatever names an event: its SSE id, or a store's own entry

# The canonical form the AI SDK (and this package's encoder) writes a delta in:
# prefix, id, separator, text, '"}'. The byte path recognises only this form.
_SHAPES: Final = (
    (b'{"type":"text-delta","id":"', b'","delta":"'),
    (b'{"type":"reasoning-delta","id":"', b'","delta":"'),
    (b'{"type":"tool-input-delta","toolCallId":"', b'","inputTextDelta":"'),
)
_DELTA_HEAD: Final = re.compile(rb'\{"type":"(?:text|reasoning|tool-input)-delta"')
# A character that needs a closer look: a quote, an escape, a control character.
_SPECIAL: Final = re.compile(rb'[\x00-\x1f"\\]')
# A surrogate escape: half of a character the next delta may complete.
_SURROGATE: Final = re.compile(rb"\\u[dD][89a-fA-F]")
_ID_BAD: Final = re.compile(rb'["\\\x00-\x1f]')
_DATA_HEAD: Final = b'{"type":"data-'
_DATA_KEYS: Final = frozenset(("type", "id", "data"))

_delta_decoder: Final = msgspec.json.Decoder(
    TextDeltaEvent | ReasoningDeltaEvent | ToolInputDeltaEvent
)
_any_decoder: Final = msgspec.json.Decoder()
_str_decoder: Final = msgspec.json.Decoder(str)
_encode: Final = msgspec.json.Encoder().encode


class _Delta:
    """A delta as the byte path sees it: which part, its escaped text, its metadata."""

    __slots__ = ("head", "meta", "pieces")

    def __init__(self, head: bytes, text: bytes, meta: Any) -> None:
        self.head = head  # everything before the text: type and id (the part's key)
        self.pieces = [text]  # JSON string contents, escaped, joined when written
        self.meta = meta  # providerMetadata as JSON bytes, or UNSET

    def encode(self) -> bytes:
        body = self.head + b"".join(self.pieces) + b'"'
        if self.meta is not UNSET:
            body += b',"providerMetadata":' + self.meta
        return body + b"}"


def _plain_text(text: bytes) -> bool:
    """Whether ``text`` (a JSON string's contents) is valid and safe to join to others."""
    if _SPECIAL.search(text) is None:
        if text.isascii():
            return True
        try:
            text.decode()
        except UnicodeDecodeError:
            return False  # invalid UTF-8 joined to its neighbour could become valid
        return True
    if _SURROGATE.search(text) is not None:
        return False
    try:
        _str_decoder.decode(b'"' + text + b'"')
    except msgspec.DecodeError:
        return False
    return True


# What _as_delta found in a stored event's bytes, by the bytes object: a relay's
# readers share one log, so a thousand readers catching up through one event parse it
# once. The bytes are kept in the value, so that their id is not reused while cached.
_parsed: dict[int, tuple[bytes, _Delta | None]] = {}
_PARSED_MAX = 8192


def _delta_of(data: bytes) -> _Delta | None:
    """:func:`_as_delta`, remembered for the same bytes object; a fresh ``_Delta`` each
    time (a merge appends to it)."""
    found = _parsed.get(id(data))
    if found is None or found[0] is not data:
        if len(_parsed) >= _PARSED_MAX:
            _parsed.clear()
        found = _parsed[id(data)] = (data, _as_delta(data))
    delta = found[1]
    return None if delta is None else _Delta(delta.head, delta.pieces[0], delta.meta)


def _as_delta(data: bytes) -> _Delta | None:
    """The delta ``data`` holds, or ``None`` when it is no delta that may be merged."""
    shape = next((shape for shape in _SHAPES if data.startswith(shape[0])), None)
    if shape is None:
        return _decoded_delta(data)  # another key order
    prefix, sep = shape
    at = data.find(sep, len(prefix))
    if at >= 0 and data.endswith(b'"}') and _ID_BAD.search(data, len(prefix), at) is None:
        text = data[at + len(sep) : -2]
        if _plain_text(text):  # one JSON string's contents, and nothing after it
            return _Delta(data[: at + len(sep)], text, UNSET)
    return _decoded_delta(data)


def _decoded_delta(data: bytes) -> _Delta | None:
    """The slow path: a delta in another form (``providerMetadata``, escapes, another
    key order), decoded, and written back in the canonical form."""
    try:
        event = _delta_decoder.decode(data)
    except msgspec.DecodeError:
        return None  # not JSON, keys the chunk does not declare, a wrong shape
    if isinstance(event, ToolInputDeltaEvent):
        prefix, sep = _SHAPES[2]
        part_id, text = event.tool_call_id, event.input_text_delta
        meta: Any = UNSET
    else:
        prefix, sep = _SHAPES[0] if isinstance(event, TextDeltaEvent) else _SHAPES[1]
        part_id, text, meta = event.id, event.delta, event.provider_metadata
        if meta is None:
            return None  # null: the SDK keeps the metadata before it (`??`); never merged
    try:
        escaped = _encode(text)[1:-1]
    except (msgspec.EncodeError, UnicodeEncodeError):
        return None  # a lone surrogate: joined to the next delta it might pair up
    if not _plain_text(escaped):
        return None
    head = prefix[:-1] + _encode(part_id)[:-1] + sep  # sep closes the id's quote
    return _Delta(head, escaped, UNSET if meta is UNSET else _encode(meta))


def _data_key(data: bytes) -> tuple[str, str] | None:
    """The (type, id) of a stored data part that a later one of the same key replaces
    whole, or ``None`` (a transient part, a snapshot, extra keys, no id)."""
    if not data.startswith(_DATA_HEAD) or data.startswith(b'{"type":"data-worker"'):
        return None
    try:
        obj = _any_decoder.decode(data)
    except msgspec.DecodeError:
        return None
    # A "transient" key, even false, stays on the part the SDK keeps (the first chunk,
    # whose data a later one replaces): such parts are never merged into the last.
    if (
        not isinstance(obj, dict)
        or not obj.keys() <= _DATA_KEYS
        or "data" not in obj
        or "transient" in obj
    ):
        return None
    kind, part_id = obj.get("type"), obj.get("id")
    if not isinstance(kind, str) or kind == "data-worker" or not isinstance(part_id, str):
        return None
    return kind, part_id


def compact(history: Iterable[tuple[bytes, _Id]]) -> list[tuple[bytes, _Id]]:
    """The compacted history: each run of adjacent deltas of one part as one delta,
    each run of adjacent data parts of one type and id as its last; the rest as it is.

    ``history`` is (JSON bytes, SSE id) per event, as stored; a merged event has the
    id of the last event it holds (an "id" may be anything: it is passed through).
    Use it to serve a replay::

        for data, event_id in compact(log_after(last_event_id)):
            write(f"id: {event_id}\\ndata: ".encode() + data + b"\\n\\n")
    """
    out: list[tuple[bytes, _Id]] = []
    pending: _Delta | None = None  # the run of deltas being merged (its id: last_id)
    last_id: Any = None
    data_key: tuple[str, str] | None = None  # the data part just written, replaceable
    for data, event_id in history:
        delta = _delta_of(data) if _DELTA_HEAD.match(data) else None
        if delta is not None:
            if pending is not None and delta.head == pending.head:
                pending.pieces.append(delta.pieces[0])
                if delta.meta is not UNSET:
                    pending.meta = delta.meta  # the SDK keeps the last metadata given
            else:
                if pending is not None:
                    out.append((pending.encode(), last_id))
                pending = delta
            last_id = event_id
            data_key = None
            continue
        if pending is not None:
            out.append((pending.encode(), last_id))
            pending = None
        key = _data_key(data) if data.startswith(_DATA_HEAD) else None
        if key is not None and key == data_key:
            out[-1] = (data, event_id)  # it replaces the one before it whole
        else:
            out.append((data, event_id))
        data_key = key
    if pending is not None:
        out.append((pending.encode(), last_id))
    return out


_DeltaEvent = TextDeltaEvent | ReasoningDeltaEvent | ToolInputDeltaEvent


def compact_events(events: Iterable[Event]) -> list[Event]:
    """:func:`compact` on typed events (each with its ``event_id``), for code that
    holds events rather than bytes; the events are not changed, merged ones are new.

    >>> from handinger_stream.types.events import TextDeltaEvent as D
    >>> compact_events([D(id="t", delta="a", event_id="1"), D(id="t", delta="b", event_id="2")])
    [TextDeltaEvent(id='t', delta='ab', provider_metadata=UNSET, event_id='2')]
    """
    out: list[Event] = []
    run: list[Any] = []  # adjacent deltas of one part, merged when the run ends
    for event in events:
        if (
            isinstance(event, _DeltaEvent)
            and event.original is None
            and getattr(event, "provider_metadata", UNSET) is not None  # as compact()
        ):
            if run and type(run[0]) is type(event) and _part(run[0]) == _part(event):
                run.append(event)
                continue
            if run:
                out.append(_merged(run))
            run = [event]
            continue
        if run:
            out.append(_merged(run))
            run = []
        last = out[-1] if out else None
        if type(event) is DataEvent and type(last) is DataEvent and _replaces(last, event):
            out[-1] = event
        else:
            out.append(event)
    if run:
        out.append(_merged(run))
    return out


def _part(event: Any) -> str:
    return str(event.tool_call_id if type(event) is ToolInputDeltaEvent else event.id)


def _merged(run: list[Any]) -> Event:
    """One delta holding a run's texts, with the last event's id (and the last
    providerMetadata given, which is the one the SDK keeps)."""
    last = run[-1]
    if len(run) == 1:
        return last  # type: ignore[no-any-return]
    if type(last) is ToolInputDeltaEvent:
        text = "".join([e.input_text_delta for e in run])
        return msgspec.structs.replace(last, input_text_delta=text)
    meta = next(
        (e.provider_metadata for e in reversed(run) if e.provider_metadata is not UNSET), UNSET
    )
    text = "".join([e.delta for e in run])
    merged: Event = msgspec.structs.replace(last, delta=text, provider_metadata=meta)
    return merged


def _replaces(last: DataEvent, event: DataEvent) -> bool:
    """Whether data part ``event`` replaces ``last`` whole, right after it."""
    return (
        event.type == last.type
        and event.id is not None
        and event.id == last.id
        and last.transient is None  # even false, it stays on the part (see _data_key)
        and event.transient is None
        and not last.extra
        and not event.extra
    )
