"""Uploads: the ``files=`` of create and continue, as a multipart body streamed from disk.

Each file is one ``files`` part of a ``multipart/form-data`` body beside
the ``input``, ``budget`` and ``stream`` fields. The body is produced in
pieces of at most :data:`CHUNK_BYTES` as the transport sends it, so a file
is never whole in memory; its length is computed up front, so it goes with a
``Content-Length`` (servers and proxies that refuse chunked uploads accept it).

A body may have to be sent again (the server answered 429 or 503 before
acting on it): a path is opened again, ``bytes`` are sent again, a seekable
file object is rewound to where it stood; a file object that cannot seek
and was read cannot be sent again, and the request is not retried.

A file that changes while it is sent is refused, never cut to fit: one that
ends early, one with bytes past the size it had when given (it grew), and
one whose size or modification time on disk moved (written to in place)
fail the request with :class:`~handinger_stream.errors.InvalidRequestError`
before its body is complete, so the server never gets a whole request.

>>> form = files_form([("notes.txt", b"hello")], [("input", "Summarise this")])
>>> form.content_type.startswith("multipart/form-data; boundary=")
True
>>> async def body() -> bytes:
...     return b"".join([chunk async for chunk in form.chunks()])
>>> form.length == len(anyio.run(body))
True
"""

from __future__ import annotations

import io
import mimetypes
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from stat import S_ISREG
from typing import Any, Protocol, Union

import anyio
import anyio.to_thread

from ..errors import InvalidRequestError

__all__ = [
    "CHUNK_BYTES",
    "BinaryReader",
    "FileContent",
    "FileInput",
    "FilePart",
    "Form",
    "file_part",
    "files_form",
]

CHUNK_BYTES = 256 * 1024
"""The most a read from one file takes at once (what an upload holds in memory)."""


class BinaryReader(Protocol):
    """What a file object must do to be uploaded: ``read(size)`` giving bytes.

    ``seekable()``, ``tell()``, ``seek()`` and ``fileno()`` are used when it has them.
    """

    def read(self, size: int = ..., /) -> bytes | None: ...


FileContent = bytes | BinaryReader
"""A file's bytes: in memory, or a binary file object read as it is sent."""

FileInput = Union[
    str,
    "os.PathLike[str]",
    tuple[str, FileContent],
    tuple[str, FileContent, str],
]
"""One entry of ``files=``: a path, ``(name, content)`` or ``(name, content, media_type)``."""

FIELD = "files"


@dataclass
class FilePart:
    """One file of an upload: its name in the workspace, its type, and where its bytes are."""

    filename: str
    media_type: str
    data: bytes | None = None
    path: str | None = None
    file: Any = None  # a BinaryReader; its optional methods are looked up as needed
    size: int | None = None  # bytes to send; None: unknown (a file object that cannot tell)
    start: int | None = None  # a seekable file object's position when it was given
    read: bool = False  # whether a file object has been read from
    # The file's (size, modification time in ns) on disk when it was given, if it is on disk.
    stamp: tuple[int, int] | None = None

    @property
    def repeatable(self) -> bool:
        """Whether its bytes can be produced again from the start."""
        return self.file is None or self.start is not None or not self.read

    def open(self) -> tuple[Any, bool]:
        """A file to read from, at the start of this part's bytes, and whether we must close it."""
        if self.path is not None:
            return open(self.path, "rb"), True
        if self.file is not None and self.start is not None:
            self.file.seek(self.start)
        return self.file, False


def file_part(entry: FileInput, index: int = 0) -> FilePart:
    """Check one ``files=`` entry and describe it, without reading it.

    >>> file_part(("report.csv", b"a,b")).media_type
    'text/csv'
    """
    where = f"files[{index}]"
    if isinstance(entry, (str, os.PathLike)):
        path = os.fsdecode(entry)
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise InvalidRequestError(
                f"{where}: cannot read {path!r}: {exc.strerror or exc}"
            ) from None
        if not os.path.isfile(path):
            raise InvalidRequestError(f"{where}: {path!r} is not a file")
        name = os.path.basename(path)
        return FilePart(name, _guess(name), path=path, size=stat.st_size, stamp=_stamp(stat))
    if not isinstance(entry, tuple) or len(entry) not in (2, 3):
        raise InvalidRequestError(
            f"{where}: expected a path, (name, content) or (name, content, media_type); "
            f"got {type(entry).__name__}"
        )
    name, content = entry[0], entry[1]
    media_type = entry[2] if len(entry) == 3 else None
    if not isinstance(name, str) or not name.strip("/"):
        raise InvalidRequestError(f"{where}: the name must be a non-empty string")
    if any(c in name for c in "\r\n\0"):
        raise InvalidRequestError(f"{where}: the name must not contain line breaks or NUL")
    if media_type is None:
        media_type = _guess(name)
    elif not isinstance(media_type, str) or not media_type or any(c in media_type for c in "\r\n"):
        raise InvalidRequestError(f"{where}: the media type must be a one-line string")
    if isinstance(content, (bytes, bytearray, memoryview)):
        data = bytes(content)
        return FilePart(name, media_type, data=data, size=len(data))
    if isinstance(content, io.TextIOBase) or not callable(getattr(content, "read", None)):
        raise InvalidRequestError(
            f"{where}: the content must be bytes or a binary file object "
            f"(open(path, 'rb')); got {type(content).__name__}"
        )
    start, size = _position_and_size(content)
    return FilePart(
        name, media_type, file=content, start=start, size=size, stamp=_file_stamp(content)
    )


def _guess(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _stamp(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_size, stat.st_mtime_ns


def _file_stamp(file: Any) -> tuple[int, int] | None:
    """A file object's stamp, when it is a regular file on disk (else ``None``)."""
    try:
        stat = os.fstat(file.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return _stamp(stat) if S_ISREG(stat.st_mode) else None


def _changed(part: FilePart, file: Any, when: str) -> InvalidRequestError | None:
    """The error for a part whose file on disk is not as it was when given, if it is not."""
    if part.stamp is None:
        return None
    now = _file_stamp(file)
    if now is None or now == part.stamp:
        return None
    size, _ = part.stamp
    what = f"its size went from {size} to {now[0]} bytes" if now[0] != size else "it was written to"
    return InvalidRequestError(
        f"{part.filename!r} changed {when} ({what}): refused rather than sent as it stands"
    )


def _position_and_size(file: Any) -> tuple[int | None, int | None]:
    """Where a file object stands, if it can seek back there, and how many bytes are left."""
    try:
        seekable = file.seekable()
    except (AttributeError, OSError, ValueError):
        seekable = False
    if not seekable:
        return None, None
    start = file.tell()
    try:
        # A regular file says its size without a seek.
        size = os.fstat(file.fileno()).st_size
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        size = file.seek(0, io.SEEK_END)
        file.seek(start)
    return start, max(size - start, 0)


class Form:
    """A ``multipart/form-data`` body: text fields, then files, produced piece by piece.

    It is a :class:`~handinger_stream.client.transport.Body`: ``content_type``,
    ``length`` and ``chunks()``.
    """

    def __init__(self, fields: Sequence[tuple[str, str]], files: Sequence[FilePart]) -> None:
        self.fields = list(fields)
        self.files = list(files)
        self.boundary = "handinger-" + secrets.token_hex(16)
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        # Each file: its head, its bytes, and the CRLF that ends them.
        parts = [len(self._file_head(p)) + p.size + 2 for p in self.files if p.size is not None]
        self.length: int | None = None
        if len(parts) == len(self.files):
            self.length = len(self._fields_bytes()) + sum(parts) + len(self._tail())

    @property
    def repeatable(self) -> bool:
        """Whether the whole body can be sent again (see the module's docstring)."""
        return all(part.repeatable for part in self.files)

    def chunks(self) -> AsyncIterator[bytes]:
        """The body from its start, as it is to be sent."""
        return _Chunks(self)

    def _fields_bytes(self) -> bytes:
        out = []
        for name, value in self.fields:
            out.append(
                f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"'
                "\r\n\r\n".encode()
                + value.encode()
                + b"\r\n"
            )
        return b"".join(out)

    def _file_head(self, part: FilePart) -> bytes:
        return (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{FIELD}"; filename="{_quote(part.filename)}"'
            f"\r\nContent-Type: {part.media_type}\r\n\r\n"
        ).encode()

    def _tail(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()

    def __repr__(self) -> str:
        names = ", ".join(repr(part.filename) for part in self.files)
        return f"<Form {len(self.fields)} fields, files [{names}], {self.length} bytes>"


def _quote(value: str) -> str:
    # As browsers do (the HTML standard's form encoding): UTF-8, with ", CR and LF escaped.
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _read(file: BinaryReader, size: int) -> bytes:
    chunk = file.read(size)
    if chunk is None:  # a non-blocking file with nothing ready: not something we can stream
        raise InvalidRequestError("a file object gave no bytes (non-blocking files cannot be sent)")
    if not isinstance(chunk, bytes):
        raise InvalidRequestError(f"a file object read {type(chunk).__name__}, not bytes")
    return chunk


class _Chunks:
    """One pass over a :class:`Form`'s bytes. Files are read in a worker thread, a
    piece at a time; a file it opened is closed when its part ends, or when the
    pass is closed or dropped (a request that failed midway).

    A class, not an async generator: a generator dropped unfinished is
    finalised by the event loop, which trio reports as a ResourceWarning.
    """

    def __init__(self, form: Form) -> None:
        self._form = form
        self._pending: list[bytes] = [form._fields_bytes()]
        self._next_part = 0
        self._file: Any = None
        self._ours = False
        self._left: int | None = None  # bytes still to send from the current file
        self._part: FilePart | None = None

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._pending:
                return self._pending.pop(0)
            part = self._part
            if part is not None:
                chunk = await self._read_more(part)
                if chunk:
                    return chunk
                self._end_part()
                continue
            form = self._form
            if self._next_part >= len(form.files):
                if self._next_part == len(form.files):
                    self._next_part += 1
                    return form._tail()
                raise StopAsyncIteration
            part = form.files[self._next_part]
            self._next_part += 1
            head = form._file_head(part)
            if part.data is not None:
                self._pending += [part.data, b"\r\n"]
                return head
            self._file, self._ours = part.open()
            self._part, self._left = part, part.size
            changed = _changed(part, self._file, "since it was given")
            if changed is not None:
                raise changed
            return head

    async def _read_more(self, part: FilePart) -> bytes:
        file = self._file
        assert file is not None
        want = CHUNK_BYTES if self._left is None else min(CHUNK_BYTES, self._left)
        if want == 0:
            await self._check_unchanged(part, file)
            return b""
        part.read = True
        chunk = await anyio.to_thread.run_sync(_read, file, want)
        if self._left is not None:
            if not chunk:
                raise InvalidRequestError(
                    f"{part.filename!r} ended {self._left} bytes early: it changed while being sent"
                )
            self._left -= len(chunk)
        return chunk

    async def _check_unchanged(self, part: FilePart, file: Any) -> None:
        """All the bytes the part was to have are sent: refuse it if the file has more
        (it grew: sending what was promised would cut it silently) or was written to."""
        more = await anyio.to_thread.run_sync(_read, file, 1)
        if more:
            raise InvalidRequestError(
                f"{part.filename!r} grew while being sent: it has more than the {part.size} "
                "bytes it had when given; refused rather than cut"
            )
        changed = _changed(part, file, "while being sent")
        if changed is not None:
            raise changed

    def _end_part(self) -> None:
        self.close()
        self._part = None
        self._pending.append(b"\r\n")

    def close(self) -> None:
        """Close the file this pass opened (not one you gave)."""
        file, self._file = self._file, None
        if file is not None and self._ours:
            file.close()

    async def aclose(self) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def files_form(files: Sequence[FileInput], fields: Sequence[tuple[str, str]]) -> Form:
    """Check ``files=`` and build the form, reading nothing yet.

    >>> files_form([("a.txt", b"x")], [("input", "hi")]).files[0].filename
    'a.txt'
    """
    if isinstance(files, (str, bytes, os.PathLike)):
        raise InvalidRequestError(
            f"files must be a list of files; got a single {type(files).__name__} "
            "(wrap it in a list: files=[...])"
        )
    if (
        isinstance(files, tuple)
        and len(files) in (2, 3)
        and isinstance(files[0], str)
        and (isinstance(files[1], (bytes, bytearray, memoryview)) or hasattr(files[1], "read"))
    ):
        raise InvalidRequestError(
            "files must be a list of files; got one (name, content) tuple "
            "(wrap it in a list: files=[(name, content)])"
        )
    try:
        entries = list(files)
    except TypeError:
        raise InvalidRequestError(
            f"files must be a list of files; got {type(files).__name__}"
        ) from None
    return Form(fields, [file_part(entry, i) for i, entry in enumerate(entries)])
