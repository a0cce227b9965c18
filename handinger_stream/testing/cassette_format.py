"""The cassette file: its format, how it is read and written, and how a request finds
its recording.

A cassette is JSON: the interactions of a recorded session, each a request
(method, path, a few headers, the body) and the response it got (status,
headers, and each :class:`BodyPiece` of the body with its time offset). Written by the
recorder (:mod:`handinger_stream.testing.cassette`), answered from by the
player (:mod:`handinger_stream.testing.cassette_player`), which the emulator
serves; both sides take from here, and this module from neither.

>>> cassette = Cassette(interactions=[])
>>> Cassette.loads(cassette.dumps()) == cassette
True
"""

from __future__ import annotations

import base64 as b64
import email.message
import email.utils
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import msgspec
import yarl

__all__ = [
    "CASSETTE_VERSION",
    "BodyPiece",
    "Cassette",
    "CassetteError",
    "CassetteNotFoundError",
    "Chunk",
    "FormReader",
    "Interaction",
    "RecordedFile",
    "RecordedForm",
    "RecordedRequest",
    "RecordedResponse",
    "body_excerpt",
    "describe_request",
    "request_key",
]

CASSETTE_VERSION = 1


class CassetteError(ValueError):
    """A cassette file that cannot be read: not JSON, another version, a wrong shape."""


class CassetteNotFoundError(FileNotFoundError):
    """A replay of a cassette file that does not exist; the message says how to record it."""


# -- the format --------------------------------------------------------------


class BodyPiece(msgspec.Struct, omit_defaults=True):
    """One piece of a response body as it arrived, ``at`` seconds after the request.

    The bytes are kept as ``text`` when they are valid UTF-8 (an event stream
    stays readable in the file), else as ``base64``.

    >>> BodyPiece.of(0.25, b"data: hi\\n\\n")
    BodyPiece(at=0.25, text='data: hi\\n\\n', base64=None)
    >>> BodyPiece.of(0.5, b"\\xff").data
    b'\\xff'
    """

    at: float
    text: str | None = None
    base64: str | None = None

    @classmethod
    def of(cls, at: float, data: bytes) -> BodyPiece:
        text, encoded = _text_or_base64(data)
        return cls(at=round(at, 6), text=text, base64=encoded)

    @property
    def data(self) -> bytes:
        return _bytes_of(self.text, self.base64)


# The earlier name of a body piece, kept importable for code written against it.
Chunk = BodyPiece


class RecordedFile(msgspec.Struct, omit_defaults=True):
    """One file of a recorded upload: its part's name, its file name, and its bytes by digest."""

    name: str
    filename: str
    size: int
    sha256: str
    media_type: str | None = None


class RecordedForm(msgspec.Struct, omit_defaults=True):
    """A ``multipart/form-data`` body (an upload): its text fields, and each file
    by name, size and SHA-256. A file's bytes are not kept: a cassette stays
    small and readable, and a replay matches the same files by their digest.

    >>> form = RecordedForm(fields=[("input", "Sum it")],
    ...     files=[RecordedFile("files", "q3.csv", 3, hashlib.sha256(b"a,b").hexdigest())])
    >>> form.describe()
    'form input=Sum it, files: q3.csv (3 bytes)'
    """

    fields: list[tuple[str, str]] = []
    files: list[RecordedFile] = []

    def key(self) -> str:
        """What a replay matches: the fields in any order, the files in order by name and digest."""
        files = [(f.name, f.filename, f.sha256) for f in self.files]
        return "form:" + msgspec.json.encode([sorted(self.fields), files]).decode()

    def describe(self) -> str:
        fields = ", ".join(f"{name}={value}" for name, value in self.fields)
        files = ", ".join(f"{f.filename} ({f.size} bytes)" for f in self.files)
        return "form " + ", ".join(part for part in (fields, files and f"files: {files}") if part)


class RecordedRequest(msgspec.Struct, omit_defaults=True):
    """What was asked: method, path with query, a few headers, and the body.

    A JSON body is kept parsed (``json``) so the file reads naturally; an
    upload as a :class:`RecordedForm` (``form``); any other body as ``text``
    or ``base64``.
    """

    method: str
    path: str
    headers: dict[str, str] = {}
    json: Any | msgspec.UnsetType = msgspec.UNSET
    form: RecordedForm | None = None
    text: str | None = None
    base64: str | None = None

    @classmethod
    def of(cls, method: str, path: str, headers: dict[str, str], body: bytes) -> RecordedRequest:
        """A request with its body as the file keeps it: parsed if JSON, else text or base64.

        >>> RecordedRequest.of("POST", "/api/workers", {}, b'{"input": "Hi"}').json
        {'input': 'Hi'}
        >>> RecordedRequest.of("PUT", "/blob", {}, b"\\xff").base64
        '/w=='
        """
        request = cls(method=method, path=path, headers=headers)
        if body:
            try:
                request.json = msgspec.json.decode(body)
            except msgspec.DecodeError:
                request.text, request.base64 = _text_or_base64(body)
        return request

    @property
    def body(self) -> bytes:
        """The body's bytes (a JSON body re-encoded compactly; none for a form).

        >>> RecordedRequest("POST", "/api/workers", json={"input": "Hi"}).body
        b'{"input":"Hi"}'
        """
        if self.json is not msgspec.UNSET:
            return msgspec.json.encode(self.json)
        return _bytes_of(self.text, self.base64)

    @property
    def content(self) -> bytes | RecordedForm:
        """What a replay matches the body on: the form of an upload, else the bytes."""
        return self.form if self.form is not None else self.body

    def describe(self, limit: int = 120) -> str:
        """One line: method, path and an excerpt of the body.

        >>> RecordedRequest("GET", "/api/workers/wrk_1").describe()
        'GET /api/workers/wrk_1'
        """
        return describe_request(self.method, self.path, self.content, limit)


class RecordedResponse(msgspec.Struct, omit_defaults=True):
    """What came back: status, headers (in order, repeats kept), body pieces with their timing.

    ``head_at`` is when the status line arrived, in seconds after the request.
    ``complete`` is false when the body ended early (the connection broke, or
    the client left): a replay then cuts the connection after the last piece. In the file, the
    pieces are under ``chunks`` (the format's first name for them).
    """

    status: int
    reason: str | None = None
    headers: list[tuple[str, str]] = []
    head_at: float = 0.0
    pieces: list[BodyPiece] = msgspec.field(default_factory=list, name="chunks")
    complete: bool = True

    @property
    def body(self) -> bytes:
        return b"".join(piece.data for piece in self.pieces)

    @property
    def duration(self) -> float:
        """Seconds from the request to the last byte.

        >>> RecordedResponse(200, head_at=0.1, pieces=[BodyPiece.of(0.3, b"x")]).duration
        0.3
        """
        return max([self.head_at, *(piece.at for piece in self.pieces)])


class Interaction(msgspec.Struct):
    """One request and the response it got."""

    request: RecordedRequest
    response: RecordedResponse


class Cassette(msgspec.Struct):
    """A recorded session: interactions in the order their requests arrived.

    >>> cassette = Cassette(interactions=[])
    >>> Cassette.loads(cassette.dumps()) == cassette
    True
    """

    version: int = CASSETTE_VERSION
    upstream: str | None = None
    interactions: list[Interaction] = []

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Cassette:
        """Read a cassette file (:class:`CassetteError` if it is not one)."""
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise CassetteNotFoundError(f"no cassette at {os.fspath(path)}") from None
        return cls.loads(data, source=os.fspath(path))

    @classmethod
    def loads(cls, data: bytes | str, *, source: str = "cassette") -> Cassette:
        """Parse a cassette from its JSON text."""
        try:
            head = msgspec.json.decode(data, type=_Head)
        except msgspec.DecodeError as exc:
            raise CassetteError(f"{source} is not a cassette: {exc}") from None
        if head.version != CASSETTE_VERSION:
            raise CassetteError(
                f"{source} is a version {head.version} cassette; this handinger-stream "
                f"reads version {CASSETTE_VERSION}"
            )
        try:
            return msgspec.json.decode(data, type=cls)
        except msgspec.DecodeError as exc:
            raise CassetteError(f"{source} is not a valid cassette: {exc}") from None

    def dumps(self) -> bytes:
        """The cassette as indented JSON, one body piece per line."""
        return _pretty(msgspec.to_builtins(self)).encode() + b"\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the file atomically (a temporary file, then a rename); make its folder."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(self.dumps())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class _Head(msgspec.Struct):
    version: int


def _text_or_base64(data: bytes) -> tuple[str | None, str | None]:
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, b64.b64encode(data).decode("ascii")


def _bytes_of(text: str | None, encoded: str | None) -> bytes:
    if text is not None:
        return text.encode("utf-8")
    if encoded is not None:
        return b64.b64decode(encoded)
    return b""


def body_excerpt(body: bytes | RecordedForm, limit: int) -> str:
    """A body as a message shows it: the text (or the form), cut to ``limit`` characters.

    >>> body_excerpt(b"0123456789", 5)
    '0123…'
    """
    shown = body.describe() if isinstance(body, RecordedForm) else body.decode("utf-8", "replace")
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def describe_request(method: str, path: str, body: bytes | RecordedForm, limit: int) -> str:
    """One line: method, path and an excerpt of the body.

    >>> describe_request("POST", "/api/workers", b'{"input":"Hi"}', 80)
    'POST /api/workers {"input":"Hi"}'
    """
    line = f"{method} {path}"
    return f"{line} {body_excerpt(body, limit)}" if body else line


class FormReader:
    """Reads a ``multipart/form-data`` body as it streams past, a piece at a time:
    keeps its text fields, and hashes its files (never held whole).

    The recording proxy feeds it what it relays, the replay what it receives:
    two bodies of the same upload give the same :class:`RecordedForm`, whatever
    their boundary, and however they were cut into pieces.

    >>> reader = FormReader.of("multipart/form-data; boundary=b")
    >>> reader.feed(b'--b\\r\\nContent-Disposition: form-data; name="input"\\r\\n\\r\\nHi')
    >>> reader.feed(b'\\r\\n--b--\\r\\n')  # in any pieces
    >>> reader.form().fields
    [('input', 'Hi')]
    """

    def __init__(self, boundary: str) -> None:
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        self._buffer = b"\r\n"  # the first delimiter has no line break of its own before it
        self._state: Literal["preamble", "head", "body", "end"] = "preamble"
        self._fields: list[tuple[str, str]] = []
        self._files: list[RecordedFile] = []
        self._name = ""
        self._filename: str | None = None
        self._media_type: str | None = None
        self._text = bytearray()
        self._hash = hashlib.sha256()
        self._size = 0

    @classmethod
    def of(cls, content_type: str | None) -> FormReader | None:
        """A reader for a body of this content type, if it is a multipart form with a boundary."""
        if not content_type:
            return None
        message = email.message.Message()
        message["content-type"] = content_type
        boundary = message.get_param("boundary")
        if message.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
            return None
        return cls(boundary)

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while self._step():
            pass

    def form(self) -> RecordedForm:
        """What was read (all of it, once the closing delimiter went past)."""
        return RecordedForm(fields=list(self._fields), files=list(self._files))

    def _step(self) -> bool:
        buffer, delimiter = self._buffer, self._delimiter
        if self._state == "head":
            if buffer.startswith(b"\r\n"):  # a part without headers
                head, rest = b"", buffer[2:]
            else:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return False
                head, rest = buffer[:end], buffer[end + 4 :]
            self._open_part(head)
            self._buffer, self._state = rest, "body"
            return True
        if self._state == "end":
            self._buffer = b""  # the epilogue: nothing to keep
            return False
        at = buffer.find(delimiter)
        if at < 0:
            # All but what could be the start of a delimiter belongs to the part.
            keep = len(delimiter) - 1
            if len(buffer) > keep:
                self._feed_part(buffer[:-keep])
                self._buffer = buffer[-keep:]
            return False
        after = buffer[at + len(delimiter) : at + len(delimiter) + 2]
        if len(after) < 2:
            self._feed_part(buffer[:at])
            self._buffer = buffer[at:]
            return False
        self._feed_part(buffer[:at])
        self._close_part()
        if after == b"--":
            self._buffer, self._state = b"", "end"
            return False
        line_end = buffer.find(b"\r\n", at + len(delimiter))  # after any padding
        if line_end < 0:
            self._buffer = buffer[at:]
            return False
        self._buffer, self._state = buffer[line_end + 2 :], "head"
        return True

    def _open_part(self, head: bytes) -> None:
        # The standard library's header parameters: quoted strings, escapes, RFC 2231.
        headers = email.message.Message()
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip()] = value.strip()
        field = headers.get_param("name", header="content-disposition")
        self._name = field if isinstance(field, str) else ""
        filename = headers.get_param("filename", header="content-disposition")
        self._filename = None if filename is None else email.utils.collapse_rfc2231_value(filename)
        self._media_type = headers.get("content-type")

    def _feed_part(self, data: bytes) -> None:
        if self._state != "body" or not data:
            return
        if self._filename is None:
            self._text += data
        else:
            self._hash.update(data)
            self._size += len(data)

    def _close_part(self) -> None:
        if self._state != "body":
            return
        if self._filename is None:
            self._fields.append((self._name, self._text.decode("utf-8", "replace")))
        else:
            self._files.append(
                RecordedFile(
                    name=self._name,
                    filename=self._filename,
                    size=self._size,
                    sha256=self._hash.hexdigest(),
                    media_type=self._media_type,
                )
            )
        self._text, self._hash, self._size = bytearray(), hashlib.sha256(), 0


def _pretty(value: Any, indent: str = "") -> str:
    # Objects and arrays of plain values (a body piece, a header) fit on one line:
    # a diff of two recordings then shows which pieces changed.
    encode = msgspec.json.encode
    nested = (dict, list, tuple)
    if isinstance(value, dict) and value:
        if all(not isinstance(v, nested) for v in value.values()):
            pairs = (f"{encode(k).decode()}: {encode(v).decode()}" for k, v in value.items())
            return "{" + ", ".join(pairs) + "}"
        inner = indent + "  "
        items = [f"{inner}{encode(k).decode()}: {_pretty(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, (list, tuple)) and value:
        if all(not isinstance(v, nested) for v in value):
            return "[" + ", ".join(encode(v).decode() for v in value) + "]"
        inner = indent + "  "
        return "[\n" + ",\n".join(inner + _pretty(v, inner) for v in value) + "\n" + indent + "]"
    return encode(value).decode()


# -- matching ------------------------------------------------------------------


def _target(path: str) -> str:
    # Compare decoded paths: two clients may percent-encode the same path differently.
    url = yarl.URL(path)
    return url.path + (f"?{url.query_string}" if url.query_string else "")


def _body_key(body: bytes | RecordedForm) -> str:
    if isinstance(body, RecordedForm):
        return body.key()
    if not body:
        return ""
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return "bytes:" + b64.b64encode(body).decode("ascii")
    # Sorted keys: two encodings of the same JSON match whatever their key order or spacing.
    return "json:" + msgspec.json.encode(value, order="sorted").decode()


def request_key(method: str, path: str, body: bytes | RecordedForm) -> tuple[str, str, str]:
    """What a replay matches on: the method, the path with its query, the body (as JSON if
    JSON; an upload by its fields and its files' names and digests).

    >>> request_key("POST", "/api/workers", b'{"stream": true, "input": "Hi"}') == (
    ...     request_key("post", "/api/workers", b'{"input":"Hi","stream":true}'))
    True
    """
    return method.upper(), _target(path), _body_key(body)
