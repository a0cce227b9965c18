"""A sans-IO, bytes-level decoder for ``text/event-stream``.

It follows the WHATWG HTML standard, section 9.2 "Server-sent events",
"Interpreting an event stream": UTF-8 with one leading BOM stripped; CR, LF and
CRLF all end a line (a CRLF split across two reads still counts once); a blank
line dispatches the pending event; lines starting with ``:`` are comments;
``id`` is sticky and ignored when it contains NUL; ``retry`` is taken only when
it is all ASCII digits; an event with an empty data buffer is not dispatched;
an unterminated last event is dropped at end of stream.

It works on bytes and splits on ``b"\\n\\n"`` first, because framing is most of
a replay's cost and a bytes-level split is an order of magnitude cheaper than
decoding and walking each line. :meth:`SSEDecoder.feed` gives every event as
the standard defines it. :meth:`SSEDecoder.feed_runs` is for consumers that
decode the events' data and nothing else: it hands a read of the shapes
servers really send (one ``data:`` line per event, with or without an
``id:`` line each) over as one :class:`DataRun`, after dropping comments,
``event:`` names and ``retry:`` lines (whose value it keeps), which such a
consumer never reads.

The size bound, ``max_event_bytes``, applies to each event: the bytes of its
lines and of the line ends between them (each line end one byte, whether the
server sent LF, CR or CRLF), not counting the blank line that ends it. It
holds whether the event arrives whole in one read or grows over many.

>>> decoder = SSEDecoder()
>>> [e.data for e in decoder.feed(b"data: hel") + decoder.feed(b"lo\\n\\n")]
['hello']
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "DataRun",
    "EventTooLargeError",
    "SSEDecoder",
    "ServerSentEvent",
    "expand_runs",
]

DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"


class EventTooLargeError(ValueError):
    """An event grew past the decoder's size bound.

    ``events`` are the complete events that came before it in the same feed.
    """

    def __init__(
        self, size: int, limit: int, events: Sequence[ServerSentEvent | DataRun] = ()
    ) -> None:
        super().__init__(f"event exceeds {limit} bytes (at least {size} received)")
        self.size = size
        self.limit = limit
        self.events = events


class ServerSentEvent(msgspec.Struct, frozen=True, gc=False):
    """One dispatched event: its type, raw data, and the id and retry in force.

    ``raw`` holds the data as bytes (lines joined by LF) so that JSON can be
    decoded without a detour through ``str``; ``data`` is the standard's string.
    """

    raw: bytes
    event: str = "message"
    id: str | None = None
    retry: int | None = None

    @property
    def data(self) -> str:
        return self.raw.decode("utf-8", "replace")


class DataRun(msgspec.Struct, frozen=True, gc=False):
    """``count`` consecutive events of one ``data:`` line each, as they arrived.

    ``lines`` holds their data, one event a line. Either each event had an
    ``id:`` line of its own, first (``ids`` lists them), or none had one and
    all share the id in force, ``id``. ``id`` is always the id in force after
    the run, ``retry`` the reconnection time. A consumer that can take many
    events at once (see :func:`handinger_stream.protocol.wire.decode_run`) avoids
    building one object per event; :meth:`events` gives them one by one.

    >>> SSEDecoder().feed_runs(b"id: 1\\ndata: A\\n\\nid: 2\\ndata: B\\n\\n")[0].ids
    ['1', '2']
    """

    lines: bytes
    count: int
    id: str | None = None
    retry: int | None = None
    ids: list[str] | None = None

    def split_last(self) -> tuple[DataRun, ServerSentEvent]:
        """The run without its last event, and that event (for runs of two or more)."""
        cut = self.lines.rfind(b"\n")
        ids = self.ids
        last = ServerSentEvent(self.lines[cut + 1 :], "message", self.id, self.retry)
        head_id = ids[-2] if ids is not None else self.id
        head = DataRun(
            self.lines[:cut], self.count - 1, head_id, self.retry, ids[:-1] if ids else None
        )
        return head, last

    def events(self) -> list[ServerSentEvent]:
        """The run as separate events."""
        lines = self.lines.split(b"\n")
        if self.ids is None:
            return [ServerSentEvent(line, "message", self.id, self.retry) for line in lines]
        return [
            ServerSentEvent(line, "message", event_id, self.retry)
            for line, event_id in zip(lines, self.ids, strict=True)
        ]


def expand_runs(items: Sequence[ServerSentEvent | DataRun]) -> list[ServerSentEvent]:
    """Runs back into separate events, for consumers that take them one by one."""
    out: list[ServerSentEvent] = []
    for item in items:
        if isinstance(item, DataRun):
            out += item.events()
        else:
            out.append(item)
    return out


# Lines a consumer of data never reads: comments, event names, retry (kept aside).
_UNREAD_LINE = re.compile(rb"^(?::|event:|retry:)[^\n]*(?:\n|\Z)", re.MULTILINE)
_RETRY_LINE = re.compile(rb"^retry: ?([^\n]*)$", re.MULTILINE)
_BLANK_LINES = re.compile(rb"\n{3,}")
_RUN_BYTES = 24 * 1024


class SSEDecoder:
    """Feed bytes, get the events each chunk completes.

    >>> d = SSEDecoder()
    >>> d.feed(b"id: 7\\r\\ndata: a\\r\\ndata: b\\r\\n\\r\\n")
    [ServerSentEvent(raw=b'a\\nb', event='message', id='7', retry=None)]
    """

    __slots__ = (
        "_data",
        "_event",
        "_failed",
        "_has_data",
        "_last_id",
        "_max",
        "_pending_cr",
        "_retry",
        "_scan_from",
        "_started",
        "_tail",
    )

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._tail = b""  # the unfinished event so far
        self._scan_from = 0
        self._started = False
        self._pending_cr = False
        self._max = max_event_bytes
        self._data: list[bytes] = []
        self._has_data = False
        self._event: str | None = None
        self._last_id: str | None = None
        self._retry: int | None = None
        self._failed: EventTooLargeError | None = None

    @property
    def last_event_id(self) -> str | None:
        """The id in force now (what a reconnect sends as ``Last-Event-ID``)."""
        return self._last_id

    @property
    def retry(self) -> int | None:
        """The reconnection time, in milliseconds, last set by the server."""
        return self._retry

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Add bytes; return the events that they complete, in order.

        Raises :class:`EventTooLargeError` (carrying the complete events before
        it) when an event passes the size bound; the decoder stays failed.
        """
        region, too_large = self._frame(chunk)
        events = self._parse(region) if region else []
        if too_large is not None:
            raise EventTooLargeError(too_large.size, too_large.limit, events)
        return events

    def feed_runs(self, chunk: bytes) -> Sequence[ServerSentEvent | DataRun]:
        """As :meth:`feed`, for a consumer of data alone: runs of events as one :class:`DataRun`.

        Comments, ``event:`` names and ``retry:`` lines are dropped first (the
        retry value is kept), so the events of a run all say ``"message"``.
        """
        region, too_large = self._frame(chunk)
        if not region:
            items: Sequence[ServerSentEvent | DataRun] = []
        elif len(region) <= _RUN_BYTES and region.find(b"\n\n") < 0:
            # One event: the live case, a read per event. Its commonest shapes directly.
            event = self._one(region)
            items = [event] if event is not None else self._not_one_run(region)
        else:
            items = self._runs(region)
        if too_large is not None:
            raise EventTooLargeError(too_large.size, too_large.limit, items)
        return items

    def close(self) -> list[ServerSentEvent]:
        """End of stream: complete lines are interpreted, an unfinished event is dropped."""
        out: list[ServerSentEvent] = []
        if self._pending_cr:
            # The held-back CR was a line end after all.
            self._pending_cr = False
            out = self.feed(b"\n")
        tail, self._tail = self._tail, b""
        self._scan_from = 0
        if tail:
            # Only whole lines count; what follows the last line end is cut off.
            cut = tail.rfind(b"\n")
            if cut >= 0:
                for line in tail[:cut].split(b"\n"):
                    self._line(line, [])
        self._data = []
        self._has_data = False
        self._event = None
        return out

    # -- framing ------------------------------------------------------------

    def _frame(self, chunk: bytes) -> tuple[bytes, EventTooLargeError | None]:
        """The complete events the chunk finishes, as one region; and a size failure."""
        if self._failed is not None:
            return b"", self._failed
        if not chunk:
            return b"", None
        if not self._started:
            chunk = self._strip_bom(chunk)
            if not chunk:
                return b"", None
        if self._pending_cr:
            self._pending_cr = False
            chunk = b"\r" + chunk
        # bytes.find, not `in`: `in` tries the needle as an int first, at the cost of an exception.
        if chunk.find(b"\r") >= 0:
            # A CR as the last byte may be the first half of a CRLF: hold it back.
            if chunk[-1] == 13:
                self._pending_cr = True
                chunk = chunk[:-1]
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        data = self._tail + chunk if self._tail else chunk
        end = data.rfind(b"\n\n", self._scan_from)
        if end < 0:
            # Rescan one byte back next time: the "\n\n" may straddle reads.
            self._tail = data
            self._scan_from = max(len(data) - 1, 0)
            return b"", self._check_tail() if len(data) > self._max else None
        region = data[:end]
        self._tail = data[end + 2 :]
        self._scan_from = 0
        if len(region) > self._max:
            region, too_large = self._cut_at_too_large(region)
            if too_large is not None:
                return region, too_large
        return region, self._check_tail() if len(self._tail) > self._max else None

    def _check_tail(self) -> EventTooLargeError | None:
        """Fail if the unfinished event is already past the bound."""
        tail = self._tail
        if len(tail) <= self._max:
            return None
        # Not counted: blank lines before it, and the end of its last line so far.
        size = len(tail.lstrip(b"\n")) - (tail[-1:] == b"\n")
        if size > self._max:
            self._failed = EventTooLargeError(size, self._max)
        return self._failed

    def _cut_at_too_large(self, region: bytes) -> tuple[bytes, EventTooLargeError | None]:
        """The region up to its first event past the bound, and that failure (or the region)."""
        offset = 0
        for block in region.split(b"\n\n"):
            size = len(block.lstrip(b"\n"))
            if size > self._max:
                self._failed = EventTooLargeError(size, self._max)
                return region[: max(offset - 2, 0)], self._failed
            offset += len(block) + 2
        return region, None

    # -- runs ----------------------------------------------------------------

    def _runs(self, region: bytes) -> Sequence[ServerSentEvent | DataRun]:
        if len(region) <= _RUN_BYTES:
            run = self._run(region)
            return [run] if run is not None else self._not_one_run(region)
        # CPython searches a bytes object of 30,000 or more with an algorithm whose
        # set-up is paid at every match: keep runs shorter, cut between events.
        items: list[ServerSentEvent | DataRun] = []
        start = 0
        while len(region) - start > _RUN_BYTES:
            cut = region.rfind(b"\n\n", start, start + _RUN_BYTES)
            if cut <= start:
                break  # one event longer than a run: take the rest whole
            items += self._runs_of(region[start:cut])
            start = cut + 2
        items += self._runs_of(region[start:])
        return items

    def _runs_of(self, region: bytes) -> Sequence[ServerSentEvent | DataRun]:
        run = self._run(region)
        return [run] if run is not None else self._not_one_run(region)

    def _not_one_run(self, region: bytes) -> Sequence[ServerSentEvent | DataRun]:
        """A region that is not one run as it stands: without unread lines, or but its end."""
        if (
            region[:1] == b":"
            or region.find(b"\n:") >= 0
            or region.find(b"event:") >= 0
            or region.find(b"retry:") >= 0
        ):
            region = self._drop_unread_lines(region)
            if not region:
                return []
            run = self._run(region)
            if run is not None:
                return [run]
        # Often all is a run but the last event (the id-less `data: [DONE]` of a stream with ids).
        head, separator, last = region.rpartition(b"\n\n")
        if separator:
            run = self._run(head)
            if run is not None:
                return [run, *self._parse(last)]
        return self._parse(region)

    def _one(self, block: bytes) -> ServerSentEvent | None:
        """One event of a ``data:`` line, after an ``id:`` line or not; else ``None``."""
        if block[:6] == b"data: ":
            if block.find(b"\n") < 0:
                return ServerSentEvent(block[6:], "message", self._last_id, self._retry)
            return None
        if block[:4] == b"id: ":
            end = block.find(b"\n")
            if block[end + 1 : end + 7] == b"data: " and block.find(b"\n", end + 1) < 0:
                value = block[4:end]
                if value.find(b"\x00") < 0:
                    self._last_id = value.decode("utf-8", "replace")
                    return ServerSentEvent(block[end + 7 :], "message", self._last_id, self._retry)
        return None

    def _run(self, region: bytes) -> DataRun | None:
        """The region as one run, when it is one; updates the id in force."""
        if region[:6] == b"data: ":
            # Without the separators, the data lines: every line end must have been one.
            lines = region[6:].replace(b"\n\ndata: ", b"\n")
            separators = (len(region) - 6 - len(lines)) // 7
            if lines.count(b"\n") == separators:
                return DataRun(lines, separators + 1, self._last_id, self._retry)
            return None
        if region[:4] == b"id: ":
            # Lines by threes: an id line, a data line, a blank one (the last without it).
            split = region.split(b"\n")
            count = (len(split) + 1) // 3
            if len(split) != 3 * count - 1 or split[2::3].count(b"") != count - 1:
                return None
            id_lines = b"\n".join(split[::3])
            data_lines = b"\n".join(split[1::3])
            if (
                data_lines[:6] != b"data: "
                or id_lines.count(b"\nid: ") != count - 1
                or id_lines.find(b"\x00") >= 0
            ):
                return None
            lines = data_lines[6:].replace(b"\ndata: ", b"\n")
            if len(data_lines) - 6 - len(lines) != 6 * (count - 1):
                return None
            # Ids hold no line end, so splitting at "\nid: " gives each whole.
            ids = id_lines.decode("utf-8", "replace")[4:].split("\nid: ")
            self._last_id = ids[-1]
            return DataRun(lines, count, self._last_id, self._retry, ids)
        return None

    def _drop_unread_lines(self, region: bytes) -> bytes:
        for value in _RETRY_LINE.findall(region):
            if value.isdigit() and value.isascii():
                self._retry = int(value)
        region = _UNREAD_LINE.sub(b"", region)
        return _BLANK_LINES.sub(b"\n\n", region).strip(b"\n")

    # -- line by line ----------------------------------------------------------

    def _parse(self, region: bytes) -> list[ServerSentEvent]:
        """Every event of the region, by the standard's rules."""
        # Only one-line data events? Then every line end is half of a "\n\ndata: ".
        if region[:6] == b"data: " and not self._has_data:
            lines = region[6:].replace(b"\n\ndata: ", b"\n")
            if lines.count(b"\n") == (len(region) - 6 - len(lines)) // 7:
                last_id, retry = self._last_id, self._retry
                return [
                    ServerSentEvent(line, "message", last_id, retry) for line in lines.split(b"\n")
                ]
        out: list[ServerSentEvent] = []
        for block in region.split(b"\n\n"):
            # Fast path: a lone "data: ..." line, the shape of nearly every event.
            if block[:6] == b"data: " and not self._has_data and block.find(b"\n") < 0:
                out.append(ServerSentEvent(block[6:], "message", self._last_id, self._retry))
            else:
                for line in block.split(b"\n"):
                    self._line(line, out)
                self._dispatch(out)
        return out

    def _strip_bom(self, chunk: bytes) -> bytes:
        head = self._tail + chunk
        if len(head) < 3 and _BOM.startswith(head):
            self._tail = head
            return b""
        self._started = True
        self._tail = b""
        return head[3:] if head.startswith(_BOM) else head

    def _line(self, line: bytes, out: list[ServerSentEvent]) -> None:
        if not line:
            self._dispatch(out)
            return
        if line[0] == 58:  # ":" starts a comment
            return
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._has_data = True
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in value:
                self._last_id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit() and value.isascii():
                self._retry = int(value)

    def _dispatch(self, out: list[ServerSentEvent]) -> None:
        if self._has_data:
            out.append(
                ServerSentEvent(
                    b"\n".join(self._data), self._event or "message", self._last_id, self._retry
                )
            )
            self._data = []
            self._has_data = False
        self._event = None
