"""A sans-IO, bytes-level decoder for ``text/event-stream``.

It follows the WHATWG HTML standard, section 9.2 "Server-sent events",
"Interpreting an event stream": UTF-8 with one leading BOM stripped; CR, LF and
CRLF all end a line (a CRLF split across two reads still counts once); a blank
line dispatches the pending event; lines starting with ``:`` are comments;
``id`` is sticky and ignored when it contains NUL; ``retry`` is taken only when
it is all ASCII digits (and capped at :data:`MAX_RETRY_MS`, read without
converting more than a few digits); an event with an empty data buffer is
not dispatched; an unterminated last event is dropped at end of stream.

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
holds whether the event arrives whole in one read or grows over many, and so
bounds every line and field. An unfinished event is kept as the pieces it
arrived in and searched for its end only in the new bytes: the decoder's
work stays linear in what it is fed however many reads an event takes (a
line without end, fed in small pieces, used to be copied whole at each read).

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
    "MAX_RETRY_MS",
    "DataRun",
    "EventTooLargeError",
    "SSEDecoder",
    "ServerSentEvent",
    "expand_runs",
    "retry_value",
]

DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024
MAX_RETRY_MS = 2**31 - 1
"""The largest ``retry:`` taken (what a browser's timer accepts); longer is this."""
_RETRY_DIGITS = len(str(MAX_RETRY_MS))
_BOM = b"\xef\xbb\xbf"
_HEAD_BYTES = 60  # how much of an oversized event its error shows


class EventTooLargeError(ValueError):
    """An event grew past the decoder's size bound.

    ``events`` are the complete events that came before it in the same feed
    (nothing received before it is lost). ``offset`` is where the event
    starts in the stream (in bytes, each line end counted as one, after a
    BOM), ``head`` its first bytes, ``unfinished`` whether its last line had
    no end yet (a line too long, not only an event).
    """

    def __init__(
        self,
        size: int,
        limit: int,
        events: Sequence[ServerSentEvent | DataRun] = (),
        *,
        offset: int | None = None,
        head: bytes = b"",
        unfinished: bool = False,
    ) -> None:
        message = f"event exceeds {limit} bytes (at least {size} received)"
        if offset is not None:
            what = "a line with no end yet" if unfinished else "it"
            shown = head[:_HEAD_BYTES].decode("utf-8", "replace")
            message += f"; it starts at byte {offset} of the stream, {what}: {shown!r}"
        super().__init__(message)
        self.size = size
        self.limit = limit
        self.events = events
        self.offset = offset
        self.head = head[:_HEAD_BYTES]
        self.unfinished = unfinished

    def after(self, events: Sequence[ServerSentEvent | DataRun]) -> EventTooLargeError:
        """The same failure, carrying the complete events that came before it."""
        return EventTooLargeError(
            self.size,
            self.limit,
            events,
            offset=self.offset,
            head=self.head,
            unfinished=self.unfinished,
        )


def retry_value(value: bytes) -> int | None:
    """A ``retry:`` field's milliseconds: ASCII digits only (else ``None``: ignored, as the
    standard says), capped at :data:`MAX_RETRY_MS`; a value of any length is read
    without converting more than ten digits (Python refuses ``int`` of 4,300).

    >>> retry_value(b"3000"), retry_value(b"9" * 5000), retry_value(b"1e3"), retry_value(b"-1")
    (3000, 2147483647, None, None)
    """
    if not (value.isdigit() and value.isascii()):
        return None
    digits = value.lstrip(b"0") or b"0"
    if len(digits) > _RETRY_DIGITS:
        return MAX_RETRY_MS
    return min(int(digits), MAX_RETRY_MS)


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
        "_held",
        "_last_id",
        "_max",
        "_offset",
        "_pending_cr",
        "_retry",
        "_started",
        "_tail",
        "copied",
    )

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        # The unfinished event so far, as the pieces it came in (never "\n\n" inside).
        self._tail: list[bytes] = []
        self._held = 0  # its length
        self._offset = 0  # where it starts in the stream (line ends as one byte each)
        self.copied = 0
        """Bytes of unfinished events copied so far: each once, when its event ends."""
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
            raise too_large.after(events)
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
            raise too_large.after(items)
        return items

    def close(self) -> list[ServerSentEvent]:
        """End of stream: complete lines are interpreted, an unfinished event is dropped."""
        out: list[ServerSentEvent] = []
        if self._pending_cr:
            # The held-back CR was a line end after all.
            self._pending_cr = False
            out = self.feed(b"\n")
        tail = b"".join(self._tail)
        self._tail, self._held = [], 0
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
                if not chunk:
                    return b"", None
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        tail = self._tail
        if not tail:
            data = chunk  # the live case: no event left unfinished by the last read
        elif chunk.find(b"\n\n") < 0 and not (chunk[0] == 10 and tail[-1][-1] == 10):
            # Still unfinished: set the piece aside. Searching and joining only the
            # new bytes keeps the work linear however many reads the event takes.
            tail.append(chunk)
            self._held += len(chunk)
            return b"", self._check_tail() if self._held > self._max else None
        else:
            tail.append(chunk)
            data = b"".join(tail)
            self.copied += len(data)
        end = data.rfind(b"\n\n")
        if end < 0:
            self._tail, self._held = [data], len(data)
            return b"", self._check_tail() if len(data) > self._max else None
        start = self._offset
        self._offset = start + end + 2
        region = data[:end]
        rest = data[end + 2 :]
        if rest:
            self._tail = [rest]
            self._held = len(rest)
        elif tail:
            self._tail = []
            self._held = 0
        if len(region) > self._max:
            region, too_large = self._cut_at_too_large(region, start)
            if too_large is not None:
                return region, too_large
        return region, self._check_tail() if self._held > self._max else None

    def _check_tail(self) -> EventTooLargeError | None:
        """Fail if the unfinished event is already past the bound."""
        if self._held <= self._max:
            return None
        tail = self._tail
        # Not counted: a blank line before it (it holds no "\n\n", so one at most),
        # and the end of its last line so far.
        leading = tail[0][0] == 10
        unfinished = tail[-1][-1] != 10
        size = self._held - leading - (not unfinished)
        if size > self._max:
            self._failed = EventTooLargeError(
                size,
                self._max,
                offset=self._offset + leading,
                head=tail[0][leading : leading + _HEAD_BYTES],
                unfinished=unfinished,
            )
        return self._failed

    def _cut_at_too_large(
        self, region: bytes, start: int
    ) -> tuple[bytes, EventTooLargeError | None]:
        """The region up to its first event past the bound, and that failure (or the region)."""
        offset = 0
        for block in region.split(b"\n\n"):
            event = block.lstrip(b"\n")
            size = len(event)
            if size > self._max:
                self._failed = EventTooLargeError(
                    size,
                    self._max,
                    offset=start + offset + len(block) - size,
                    head=event[:_HEAD_BYTES],
                )
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
            # The "data: " prefixes go first, in one pass over the region: a line
            # starts with "data: " only after a line end, so each one removed was one.
            # (Joining the data lines and then cutting their prefixes copied them twice:
            # framing was 200 of the 470 ns an event took, decoded and folded.)
            body = region.replace(b"\ndata: ", b"\n")
            # Lines by threes: an id line, a data line, a blank one (the last without it).
            split = body.split(b"\n")
            count = (len(split) + 1) // 3
            if (
                len(split) != 3 * count - 1
                or len(region) - len(body) != 6 * count
                or split[2::3].count(b"") != count - 1
                # Every block starts with an id line in the region itself, so the
                # count prefixes removed were those of the count second lines: each
                # data line had its own (not a "data: id: ..." line posing as an id).
                or region.count(b"\n\nid: ") != count - 1
            ):
                return None
            id_lines = b"\n".join(split[::3])
            if id_lines.count(b"\nid: ") != count - 1 or id_lines.find(b"\x00") >= 0:
                return None
            # Ids hold no line end, so splitting at "\nid: " gives each whole.
            ids = id_lines.decode("utf-8", "replace").split("\nid: ")
            ids[0] = ids[0][4:]
            self._last_id = ids[-1]
            return DataRun(b"\n".join(split[1::3]), count, self._last_id, self._retry, ids)
        return None

    def _drop_unread_lines(self, region: bytes) -> bytes:
        for value in _RETRY_LINE.findall(region):
            retry = retry_value(value)
            if retry is not None:
                self._retry = retry
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
        head = b"".join(self._tail) + chunk  # at most two bytes held: a BOM's start
        if len(head) < 3 and _BOM.startswith(head):
            self._tail, self._held = [head], len(head)
            return b""
        self._started = True
        self._tail, self._held = [], 0
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
            retry = retry_value(value)
            if retry is not None:
                self._retry = retry

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
