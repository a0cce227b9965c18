"""Uploads: ``files=`` on create and continue, multipart streamed from disk, on both transports."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from handinger_stream import (
    AsyncHandinger,
    Handinger,
    InternalServerError,
    InvalidRequestError,
)
from handinger_stream.client.transport import TransportName
from handinger_stream.client.upload import FileInput
from handinger_stream.emulator import Emulator
from tests.conftest import API_KEY, Canned, RawServer

WORKER_JSON = b'{"id":"wrk_1","object":"worker","status":"pending"}'


class OneWay(io.RawIOBase):
    """A binary file object that cannot seek (a pipe, a socket): read once only."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        return self._data.readinto(buffer)


NOTES = b"# Notes\n\nthree things\n"


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    path = tmp_path / "notes.md"
    path.write_bytes(NOTES)
    return path


async def test_paths_bytes_and_file_objects_reach_the_workspace(
    client: AsyncHandinger, notes: Path
) -> None:
    blob = os.urandom(700_000)  # several pieces of the stream
    with open(notes, "rb") as handle:  # noqa: ASYNC230 (a small local file)
        handle.read(2)  # a file object is sent from where it stands
        worker = await client.workers.create(
            input="Read these",
            files=[
                notes,
                ("data/blob.bin", blob, "application/x-blob"),
                ("été.txt", handle),
            ],
        )
    listed = {f.filename: f for f in worker.files}
    assert set(listed) == {"notes.md", "data/blob.bin", "été.txt"}
    assert listed["notes.md"].media_type == "text/markdown"
    assert listed["data/blob.bin"].media_type == "application/x-blob"
    assert listed["notes.md"].url.endswith(f"/api/workers/{worker.id}/files/notes.md")
    read = client.workers.retrieve_file
    assert await read(worker.id, "notes.md").read() == NOTES
    assert await read(worker.id, "data/blob.bin").read() == blob
    assert await read(worker.id, "été.txt").read() == NOTES[2:]


async def test_continue_with_files_and_a_stream(client: AsyncHandinger, notes: Path) -> None:
    worker = await client.workers.create(input="first")
    stream = await client.workers.continue_(
        worker.id, input="now with a file", files=[("more.csv", b"a,b\n1,2\n")], stream=True
    )
    first = await stream.__anext__()  # the turn's first snapshot already lists the file
    assert "more.csv" in {f.filename for f in stream.snapshot.files}, first
    final = await stream.get_final_worker()
    assert final.status == "completed"
    assert await client.workers.retrieve_file(worker.id, "more.csv").read() == b"a,b\n1,2\n"


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_the_multipart_shape(raw_server: RawServer, transport: TransportName) -> None:
    raw_server.serve(Canned([WORKER_JSON], headers={"content-type": "application/json"}))
    async with AsyncHandinger(
        api_key=API_KEY, base_url=raw_server.base_url, transport=transport
    ) as client:
        await client.workers.create(
            input="Sum it", budget="low", files=[("q3.csv", b"x,y\n", "text/csv")]
        )
    (request,) = raw_server.requests
    headers = {k.lower(): v for k, v in request["headers"].items()}
    body: bytes = request["body"]
    match = re.fullmatch(r"multipart/form-data; boundary=(\S+)", headers["content-type"])
    assert match is not None
    boundary = match.group(1).encode()
    # A known length, not chunked: some servers and proxies refuse chunked uploads.
    assert int(headers["content-length"]) == len(body)
    assert "transfer-encoding" not in headers
    parts = body.split(b"--" + boundary)
    assert parts[0] == b"" and parts[-1] == b"--\r\n"
    fields = [p for p in parts[1:-1]]
    assert fields[0] == b'\r\nContent-Disposition: form-data; name="input"\r\n\r\nSum it\r\n'
    assert fields[1] == b'\r\nContent-Disposition: form-data; name="budget"\r\n\r\nlow\r\n'
    assert fields[2] == (
        b'\r\nContent-Disposition: form-data; name="files"; filename="q3.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\nx,y\n\r\n"
    )
    assert len(fields) == 3  # no stream field when not streaming


def as_path(path: Path) -> FileInput:
    return path


def as_bytes(path: Path) -> FileInput:
    return ("notes.md", path.read_bytes())


def as_seekable_file(path: Path) -> FileInput:
    return ("notes.md", io.BytesIO(path.read_bytes()))


@pytest.mark.parametrize("content", [as_path, as_bytes, as_seekable_file])
async def test_a_503_before_the_body_was_read_sends_it_again_whole(
    client: AsyncHandinger, emulator: Emulator, notes: Path, content: Callable[[Path], FileInput]
) -> None:
    # The emulator answers 503 before reading the body; the retry must send it whole.
    emulator.inject_fault("status=503;retry-after=0.01")
    stream = await client.workers.create(input="again", files=[content(notes)], stream=True)
    worker = await stream.get_final_worker()
    assert await client.workers.retrieve_file(worker.id, "notes.md").read() == NOTES


async def test_an_upload_that_cannot_be_read_again_is_not_retried(
    client: AsyncHandinger, raw_server: RawServer
) -> None:
    raw_server.serve(
        Canned([b'{"error":{"message":"busy"}}'], status=503, headers={"retry-after": "0"}),
        Canned([WORKER_JSON], headers={"content-type": "application/json"}),
    )
    async with AsyncHandinger(api_key=API_KEY, base_url=raw_server.base_url) as raw:
        with pytest.raises(InternalServerError, match="cannot be rewound") as refused:
            await raw.workers.create(input="once", files=[("pipe.bin", OneWay(b"z" * 100_000))])
    assert refused.value.status_code == 503
    assert len(raw_server.requests) == 1  # never re-sent with a truncated body


class Shrinking(io.BytesIO):
    """A file that says it holds 1,000 bytes, then gives 50: it changed as it was sent."""

    def read(self, size: int | None = -1) -> bytes:
        return super().read(10) if self.tell() < 50 else b""


async def test_a_file_that_changes_as_it_is_sent_fails_the_request(
    client: AsyncHandinger,
) -> None:
    with pytest.raises(InvalidRequestError, match="950 bytes early"):
        await client.with_options(max_retries=0).workers.create(
            input="x", files=[("s.bin", Shrinking(b"x" * 1000))]
        )


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ("notes.md", "wrap it in a list"),
        (("a.txt", b"x"), "wrap it in a list"),
        (["/no/such/file.txt"], r"files\[0\]: cannot read"),
        ([("a.txt", "text, not bytes")], "binary file object"),
        ([("a.txt", io.StringIO("text"))], "binary file object"),
        ([("", b"x")], "non-empty"),
        ([("a\nb", b"x")], "line breaks"),
        ([42], "expected a path"),
    ],
)
async def test_bad_files_are_refused_before_sending(
    raw_server: RawServer, files: object, message: str
) -> None:
    raw_server.serve(Canned([WORKER_JSON], headers={"content-type": "application/json"}))
    async with AsyncHandinger(api_key=API_KEY, base_url=raw_server.base_url) as client:
        with pytest.raises(InvalidRequestError, match=message):
            await client.workers.create(input="x", files=files)  # type: ignore[call-overload]
    assert raw_server.requests == []


def test_the_emulator_refuses_bad_forms(emulator: Emulator) -> None:
    url = f"{emulator.base_url}/api/workers"
    auth = {"authorization": f"Bearer {API_KEY}"}
    escape = httpx.post(url, headers=auth, data={"input": "x"}, files={"files": ("../x", b"1")})
    assert escape.status_code == 400 and "bad file name" in escape.text
    unknown = httpx.post(url, headers=auth, data={"input": "x", "colour": "red"}, files={})
    assert unknown.status_code == 400
    no_input = httpx.post(url, headers=auth, files={"files": ("a.txt", b"1")})
    assert no_input.status_code == 400 and "input" in no_input.text
    ok = httpx.post(
        url, headers=auth, data={"input": "x", "stream": "false"}, files={"files": ("a", b"1")}
    )
    assert ok.status_code == 200 and ok.json()["files"][0]["filename"] == "a"


def test_the_sync_client_uploads_too(emulator: Emulator, notes: Path) -> None:
    with Handinger(api_key=API_KEY, base_url=emulator.base_url) as client:
        stream = client.workers.create(input="sync upload", files=[notes], stream=True)
        worker = stream.get_final_worker()
        assert client.workers.retrieve_file(worker.id, "notes.md").read() == notes.read_bytes()


# -- a 100 MiB file, with the memory it takes measured --------------------------

MIB = 1024 * 1024
BIG = 100 * MIB

MEASURE = """
import asyncio, hashlib, resource, sys
from handinger_stream import AsyncHandinger

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

async def main(path, transport):
    async with AsyncHandinger(transport=transport) as client:
        # Warm up every code path on a small file first, so the baseline includes them.
        small = await client.workers.create(input="warm up", files=[("w.bin", b"w" * 300_000)])
        await client.workers.retrieve_file(small.id, "w.bin").read()
        before = peak_mib()
        worker = await client.workers.create(input="a big file", files=[path])
        digest = hashlib.sha256()
        size = 0
        async for chunk in client.workers.retrieve_file(worker.id, "big.bin"):
            digest.update(chunk)
            size += len(chunk)
        print(before, peak_mib(), size, digest.hexdigest())

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    import hashlib

    path = tmp_path_factory.mktemp("upload") / "big.bin"
    digest = hashlib.sha256()
    block = os.urandom(MIB)
    with open(path, "wb") as out:
        for i in range(BIG // MIB):
            piece = i.to_bytes(8, "big") + block[8:]  # no two blocks alike
            digest.update(piece)
            out.write(piece)
    yield path, digest.hexdigest()
    path.unlink()


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_100_mib_file_uploads_without_being_held_in_memory(
    emulator: Emulator, big_file: tuple[Path, str], transport: str
) -> None:
    # The client runs in a process of its own, so that its peak memory is its own;
    # the emulator (in this process) spools the upload to disk and serves it back.
    path, expected = big_file
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDINGER_")}
    env.update(HANDINGER_API_KEY=API_KEY, HANDINGER_BASE_URL=emulator.base_url)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MEASURE), str(path), transport],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    before, after, size, digest = result.stdout.split()
    assert int(size) == BIG and digest == expected  # every byte went there and came back
    growth = float(after) - float(before)
    print(f"{transport}: peak RSS {float(before):.0f} -> {float(after):.0f} MiB")
    # Held whole, the file alone would add 100 MiB; streamed, a few pieces at a time.
    assert growth < 25, f"peak RSS grew by {growth:.0f} MiB for a 100 MiB upload"


# -- issue 21: a file that changes while it is sent is refused, never cut -------------


class Growing(io.BytesIO):
    """A file object that gains bytes as it is read: a log still being written."""

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if chunk:
            end = self.tell()
            self.seek(0, io.SEEK_END)
            self.write(b"+" * 100)
            self.seek(end)
        return chunk


async def test_a_file_object_that_grows_as_it_is_sent_is_refused(
    raw_server: RawServer, transport: TransportName
) -> None:
    raw_server.serve(Canned([WORKER_JSON], headers={"content-type": "application/json"}))
    async with AsyncHandinger(
        api_key=API_KEY, base_url=raw_server.base_url, transport=transport, max_retries=0
    ) as client:
        with pytest.raises(InvalidRequestError, match=r"'log\.txt' grew while being sent"):
            await client.workers.create(input="x", files=[("log.txt", Growing(b"x" * 1000))])
    # The server never got a whole request: before the fix it got the first 1,000 bytes
    # as if they were the file, and answered.
    assert raw_server.requests == [] or not raw_server.requests[0]["body"].endswith(b"--\r\n")


@pytest.mark.parametrize("change", ["append", "rewrite"])
async def test_a_file_on_disk_written_to_while_it_is_sent_is_refused(
    raw_server: RawServer,
    transport: TransportName,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: str,
) -> None:
    """Another process writes to the file while its first piece goes out: the upload
    notices by the bytes past its size (append) or by the file's stamp (rewrite)."""
    from handinger_stream.client import upload

    path = tmp_path / "live.log"
    path.write_bytes(b"a" * 300_000)  # two pieces of the stream
    read = upload._read

    def read_then_write(file: upload.BinaryReader, size: int) -> bytes:
        chunk = read(file, size)
        if chunk[:1] == b"a":  # the first piece, once
            with open(path, "r+b") as other:
                if change == "append":
                    other.seek(0, io.SEEK_END)
                    other.write(b"b" * 10)
                else:
                    other.seek(299_990)
                    other.write(b"c" * 10)
                    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 1_000_000))
        return chunk

    monkeypatch.setattr(upload, "_read", read_then_write)
    raw_server.serve(Canned([WORKER_JSON], headers={"content-type": "application/json"}))
    async with AsyncHandinger(
        api_key=API_KEY, base_url=raw_server.base_url, transport=transport, max_retries=0
    ) as client:
        with pytest.raises(
            InvalidRequestError, match=r"'live\.log' (grew|changed) while being sent"
        ):
            await client.workers.create(input="x", files=[path])


async def test_a_file_changed_between_two_passes_is_refused(tmp_path: Path) -> None:
    """A 503 makes the body be produced again: from a file that changed meanwhile it
    would be another upload under the same request. The second pass refuses."""
    from handinger_stream.client.upload import files_form

    path = tmp_path / "notes.md"
    path.write_bytes(NOTES)
    form = files_form([path], [("input", "x")])
    first = b"".join([chunk async for chunk in form.chunks()])
    assert first.count(NOTES) == 1
    path.write_bytes(NOTES + b"more\n")
    with pytest.raises(InvalidRequestError, match=r"'notes\.md' changed since it was given"):
        b"".join([chunk async for chunk in form.chunks()])
