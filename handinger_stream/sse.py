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
decoding and walking each line.

>>> decoder = SSEDecoder()
>>> [e.data for e in decoder.feed(b"data: hel") + decoder.feed(b"lo\\n\\n")]
['hello']
"""

from __future__ import annotations

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
        super().__init__(f"event exceeds {limit} bytes (at least {size} buffered)")
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
    """``count`` consecutive one-line ``data:`` events, as the bytes they arrived in.

    ``region`` is ``b"data: A\\n\\ndata: B"``: a consumer that can take many
    events at once (see :func:`handinger_stream.wire.decode_run`) avoids
    building one object per event. All share the ``id`` and ``retry`` in force.

    >>> SSEDecoder().feed_runs(b"data: 1\\n\\ndata: 2\\n\\n")
    [DataRun(region=b'data: 1\\n\\ndata: 2', count=2, id=None, retry=None)]
    """

    region: bytes
    count: int
    id: str | None = None
    retry: int | None = None

    def events(self) -> list[ServerSentEvent]:
        """The run as separate events."""
        return [
            ServerSentEvent(block[6:], "message", self.id, self.retry)
            for block in self.region.split(b"\n\n")
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


class SSEDecoder:
    """Feed bytes, get the events each chunk completes.

    >>> d = SSEDecoder()
    >>> d.feed(b"id: 7\\r\\ndata: a\\r\\ndata: b\\r\\n\\r\\n")
    [ServerSentEvent(raw=b'a\\nb', event='message', id='7', retry=None)]
    """

    __slots__ = (
        "_buf",
        "_data",
        "_event",
        "_has_data",
        "_last_id",
        "_max",
        "_pending_cr",
        "_retry",
        "_scan_from",
        "_started",
    )

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._buf = bytearray()
        self._scan_from = 0
        self._started = False
        self._pending_cr = False
        self._max = max_event_bytes
        self._data: list[bytes] = []
        self._has_data = False
        self._event: str | None = None
        self._last_id: str | None = None
        self._retry: int | None = None

    @property
    def last_event_id(self) -> str | None:
        """The id in force now (what a reconnect sends as ``Last-Event-ID``)."""
        return self._last_id

    @property
    def retry(self) -> int | None:
        """The reconnection time, in milliseconds, last set by the server."""
        return self._retry

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Add bytes; return the events that they complete, in order."""
        try:
            return expand_runs(self.feed_runs(chunk))
        except EventTooLargeError as exc:
            raise EventTooLargeError(exc.size, exc.limit, expand_runs(exc.events)) from None

    def feed_runs(self, chunk: bytes) -> Sequence[ServerSentEvent | DataRun]:
        """As :meth:`feed`, but a chunk of only one-line data events is one :class:`DataRun`."""
        if not chunk:
            return []
        if not self._started:
            chunk = self._strip_bom(chunk)
            if not chunk:
                return []
        if self._pending_cr:
            self._pending_cr = False
            chunk = b"\r" + chunk
        if b"\r" in chunk:
            # A CR as the last byte may be the first half of a CRLF: hold it back.
            if chunk[-1] == 13:
                self._pending_cr = True
                chunk = chunk[:-1]
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf
        buf += chunk
        end = buf.rfind(b"\n\n", self._scan_from)
        if end < 0:
            # Rescan one byte back next time: the "\n\n" may straddle reads.
            self._scan_from = max(len(buf) - 1, 0)
            if len(buf) > self._max:
                raise EventTooLargeError(len(buf), self._max)
            return []
        region = bytes(buf[:end])
        del buf[: end + 2]
        self._scan_from = 0
        items = self._events(region)
        if len(buf) > self._max:
            raise EventTooLargeError(len(buf), self._max, items)
        return items

    def _events(self, region: bytes) -> Sequence[ServerSentEvent | DataRun]:
        # Only one-line data events? Then every line end is half of a "\n\ndata: ".
        separators = region.count(b"\n\ndata: ")
        if region.startswith(b"data: ") and region.count(b"\n") == 2 * separators:
            return [DataRun(region, separators + 1, self._last_id, self._retry)]
        blocks = region.split(b"\n\n")
        out: list[ServerSentEvent] = []
        append = out.append
        for block in blocks:
            # Fast path: a lone "data: ..." line, the shape of nearly every event.
            if block.startswith(b"data: ") and not self._has_data and block.find(b"\n") < 0:
                append(ServerSentEvent(block[6:], "message", self._last_id, self._retry))
            else:
                for line in block.split(b"\n"):
                    self._line(line, out)
                self._dispatch(out)
        return out

    def close(self) -> list[ServerSentEvent]:
        """End of stream: complete lines are interpreted, an unfinished event is dropped."""
        out: list[ServerSentEvent] = []
        if self._pending_cr:
            # The held-back CR was a line end after all.
            self._pending_cr = False
            out = self.feed(b"\n")
        tail = bytes(self._buf)
        self._buf.clear()
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

    def _strip_bom(self, chunk: bytes) -> bytes:
        head = bytes(self._buf) + chunk
        if len(head) < 3 and _BOM.startswith(head):
            self._buf = bytearray(head)
            return b""
        self._started = True
        self._buf = bytearray()
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
