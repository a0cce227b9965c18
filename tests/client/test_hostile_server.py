"""A server that misbehaves on purpose: every answer is hostile (issue 21).

Each test runs a real loopback server, mostly one that writes raw bytes
(so that it can do what no framework lets it: trickle headers, send a body
without end), on both transports. Hang guards (``anyio.fail_after``) only
turn a hang into a failure; nothing asserts on how long anything took.
"""

from __future__ import annotations

import asyncio
import gzip
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from handinger_stream import (
    APIResponseValidationError,
    APITimeoutError,
    AsyncHandinger,
    HandingerError,
    InternalServerError,
    InvalidRequestError,
)
from handinger_stream.client import transport as transport_module
from handinger_stream.client.transport import TransportName
from handinger_stream.errors import ResponseTooLargeError

KEY = "sk-test-hostile-0123456789"
LIMIT = 256 * 1024  # the body bound in these tests

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawHTTP:
    """A loopback TCP server whose handler writes whatever bytes it likes."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.tasks: set[asyncio.Task[None]] = set()
        self.requests: list[bytes] = []  # each request's head
        self.sent = 0  # body bytes written, over all connections
        self.base_url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client left: what the tests are about
        finally:
            writer.close()

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.sent += len(data)


@asynccontextmanager
async def raw_http(handler: Callable[[RawHTTP], Handler]) -> AsyncIterator[RawHTTP]:
    server = RawHTTP(handler=lambda r, w: asyncio.sleep(0))
    server.handler = handler(server)
    listening = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    server.base_url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        listening.close()
        for task in server.tasks:
            task.cancel()
        await asyncio.gather(*server.tasks, return_exceptions=True)
        await listening.wait_closed()


def client_for(server: RawHTTP, transport: TransportName, **options: Any) -> AsyncHandinger:
    return AsyncHandinger(
        api_key=KEY, base_url=server.base_url, transport=transport, max_retries=0, **options
    )


@pytest.fixture
def small_bound(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(transport_module, "MAX_BODY_BYTES", LIMIT)
    return LIMIT


# -- finding 2: bodies read whole are bounded -----------------------------------


def endless(status: str, headers: bytes = b"") -> Callable[[RawHTTP], Handler]:
    """A response whose body never ends (chunked, 64 KiB a chunk)."""

    def make(server: RawHTTP) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            await server.write(
                writer, head.encode() + headers + b"transfer-encoding: chunked\r\n\r\n"
            )
            piece = b"[" + b"1," * 32767 + b"1"
            while True:
                await server.write(writer, b"%x\r\n%s\r\n" % (len(piece), piece))

        return handle

    return make


async def test_an_endless_body_stops_at_the_bound(
    transport: TransportName, small_bound: int
) -> None:
    async with raw_http(endless("200 OK")) as server, client_for(server, transport) as client:
        with anyio.fail_after(30), pytest.raises(ResponseTooLargeError) as caught:
            await client.workers.retrieve("wrk_1")
    error = caught.value
    assert error.limit == small_bound and error.status_code == 200
    assert f"larger than {small_bound} bytes" in str(error)
    assert f"{server.base_url}/api/workers/wrk_1" in str(error)
    # The client stopped reading: what the server managed to write stays near the bound.
    assert server.sent < 64 * small_bound


async def test_an_endless_error_body_stops_at_the_bound(
    transport: TransportName, small_bound: int
) -> None:
    endless_500 = endless("500 Internal Server Error")
    async with raw_http(endless_500) as server, client_for(server, transport) as client:
        with anyio.fail_after(30), pytest.raises(InternalServerError) as caught:
            await client.workers.retrieve("wrk_1")
    # The status's own error (what a caller catches), its endless body dropped unread.
    assert caught.value.status_code == 500
    assert caught.value.body is None
    assert server.sent < 64 * small_bound


async def test_a_gzip_bomb_is_bounded_after_decompression(
    transport: TransportName, small_bound: int
) -> None:
    bomb = gzip.compress(b"0" * (64 * small_bound))  # 16 MiB of zeros in a few KiB

    def make(server: RawHTTP) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = (
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                f"content-encoding: gzip\r\ncontent-length: {len(bomb)}\r\n\r\n"
            )
            await server.write(writer, head.encode() + bomb)

        return handle

    async with raw_http(make) as server, client_for(server, transport) as client:
        with pytest.raises(ResponseTooLargeError) as caught:
            await client.workers.retrieve("wrk_1")
    assert len(bomb) < small_bound and caught.value.limit == small_bound


async def test_a_content_length_past_the_bound_is_refused_unread(
    transport: TransportName, small_bound: int
) -> None:
    def make(server: RawHTTP) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            await server.write(writer, head + b"content-length: 999999999999\r\n\r\n{")
            await asyncio.sleep(30)  # never sends the rest

        return handle

    async with raw_http(make) as server, client_for(server, transport) as client:
        with anyio.fail_after(30), pytest.raises(ResponseTooLargeError):
            await client.workers.retrieve("wrk_1")


async def test_a_body_within_the_bound_is_read_whole(
    transport: TransportName, small_bound: int
) -> None:
    def make(server: RawHTTP) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            body = b'{"id": "wrk_1", "object": "worker", "status": "completed", "pad": "%s"}' % (
                b"x" * (small_bound - 100)
            )
            head = (
                f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
            )
            await server.write(writer, head.encode() + b"\r\n\r\n" + body)

        return handle

    async with raw_http(make) as server, client_for(server, transport) as client:
        worker = await client.workers.retrieve("wrk_1")
    assert worker.id == "wrk_1"


# -- finding 9: headers must be complete in time ---------------------------------


def trickling_headers(server: RawHTTP) -> Handler:
    """A status line, then one header byte every 50 ms, never the blank line."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.write(writer, b"HTTP/1.1 200 OK\r\n")
        while True:
            await server.write(writer, b"x")
            await asyncio.sleep(0.05)

    return handle


@pytest.mark.parametrize("stream", [False, True])
async def test_headers_that_trickle_in_time_out(transport: TransportName, stream: bool) -> None:
    # Each byte comes well within the read timeout: only a deadline on the whole head helps.
    async with (
        raw_http(trickling_headers) as server,
        client_for(server, transport, timeout=0.5) as client,
    ):
        with anyio.fail_after(30), pytest.raises(APITimeoutError) as caught:
            await client.workers.retrieve("wrk_1", stream=stream)
    # (aiohttp's own total timeout may say it first, for a request that does not stream)
    assert "timed out" in str(caught.value) or "did not arrive within 0.5 s" in str(caught.value)


# -- finding 6: a 200 that is not what the call returns --------------------------


def answering(body: bytes, content_type: str = "application/json") -> Callable[[RawHTTP], Handler]:
    def make(server: RawHTTP) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = (
                f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            await server.write(writer, head.encode() + body)

        return handle

    return make


@pytest.mark.parametrize(
    "body",
    [b'{"object": "worker", "id": 5}', b'{"object": "worker", "id": "w", "status": [1]}'],
)
async def test_a_200_that_is_not_a_worker_is_a_validation_error(
    transport: TransportName, body: bytes
) -> None:
    """A stream request answered with JSON that claims to be a Worker and is not one
    raised msgspec's ValidationError as it was."""
    calls: list[Callable[[AsyncHandinger], Awaitable[object]]] = [
        lambda c: c.workers.create(input="x", stream=True),
        lambda c: c.workers.retrieve("w", stream=True),
        lambda c: c.workers.subscribe("w"),
        lambda c: c.workers.continue_("w", input="x", stream=True),
        lambda c: c.tasks.create(worker_id="w", input="x", stream=True),
        lambda c: c.workers.create(input="x"),
        lambda c: c.workers.retrieve("w"),
    ]
    async with raw_http(answering(body)) as server, client_for(server, transport) as client:
        for call in calls:
            with pytest.raises(APIResponseValidationError, match="not a Worker"):
                await call(client)


# -- finding 5: ids and names stay inside their path segment ---------------------


@pytest.mark.parametrize("path", ["..", "../../tasks/tsk_1", "a/../../b", "./x", "a/./b", "/"])
async def test_a_file_path_cannot_reach_other_api_paths(
    transport: TransportName, path: str
) -> None:
    async with raw_http(answering(b"{}")) as server, client_for(server, transport) as client:
        with pytest.raises(InvalidRequestError):
            await client.workers.retrieve_file("wrk_1", path).read()
    assert server.requests == []  # nothing was sent, the key least of all


@pytest.mark.parametrize("worker_id", [".", ".."])
async def test_an_id_of_dots_is_refused(transport: TransportName, worker_id: str) -> None:
    calls: list[Callable[[AsyncHandinger], Awaitable[object]]] = [
        lambda c: c.workers.retrieve(worker_id),
        lambda c: c.workers.retrieve(worker_id, stream=True),
        lambda c: c.workers.subscribe(worker_id),
        lambda c: c.workers.continue_(worker_id, input="x"),
        lambda c: c.workers.retrieve_email(worker_id),
        lambda c: c.workers.retrieve_file(worker_id, "a.txt").read(),
        lambda c: c.workers.delete(worker_id),
        lambda c: c.tasks.retrieve(worker_id),
        lambda c: c.workers.schedules.list(worker_id),
        lambda c: c.workers.webhooks.retrieve(worker_id),
    ]
    async with raw_http(answering(b"{}")) as server, client_for(server, transport) as client:
        for call in calls:
            with pytest.raises(InvalidRequestError, match=re.escape("must not be '.' or '..'")):
                await call(client)
    assert server.requests == []


async def test_an_id_with_slashes_and_dots_stays_one_segment(transport: TransportName) -> None:
    worker = b'{"id": "w", "object": "worker", "status": "completed"}'
    async with raw_http(answering(worker)) as server, client_for(server, transport) as client:
        await client.workers.retrieve("../tasks")
        await client.workers.retrieve_file("w", "dir/..x/%2e%2e").read()
    heads = [request.split(b"\r\n", 1)[0] for request in server.requests]
    assert heads == [
        b"GET /api/workers/..%2Ftasks HTTP/1.1",
        b"GET /api/workers/w/files/dir/..x/%252e%252e HTTP/1.1",
    ]


# -- a resume is steered by what the first answer said -----------------------------


def cut_then(second: bytes, worker_id: bytes = b"w") -> Callable[[RawHTTP], Handler]:
    """First request: a stream naming ``worker_id`` in its header, cut after one event.
    Any later request (the resume): ``second``, as JSON."""

    def make(server: RawHTTP) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if len(server.requests) == 1:
                head = (
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"x-handinger-worker-id: " + worker_id + b"\r\nconnection: close\r\n\r\n"
                )
                await server.write(writer, head + b'id: 1\ndata: {"type":"start"}\n\n')
                return  # closed without [DONE]: the client resumes
            head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            await server.write(writer, head % len(second) + second)

        return handle

    return make


async def test_a_resume_cannot_be_steered_to_another_api_path(transport: TransportName) -> None:
    """The resume URL takes its id from the first answer's header: ``..`` would make it
    ``/api/?stream=true`` with the key."""
    async with raw_http(cut_then(b"{}", worker_id=b"..")) as server:
        async with client_for(server, transport, max_reconnects=2) as client:
            stream = await client.workers.create(input="x", stream=True)
            with anyio.fail_after(20), pytest.raises(HandingerError) as caught:
                await stream.get_final_worker()
    assert "'.' or '..'" in str(caught.value) or "'.' or '..'" in str(caught.value.__cause__)
    assert len(server.requests) == 1  # the resume was never sent


async def test_a_resume_answered_with_a_false_worker_is_a_validation_error(
    transport: TransportName,
) -> None:
    async with raw_http(cut_then(b'{"object": "worker", "id": 5}')) as server:
        async with client_for(server, transport, max_reconnects=1) as client:
            stream = await client.workers.create(input="x", stream=True)
            with anyio.fail_after(20), pytest.raises(HandingerError) as caught:
                await stream.get_final_worker()
    chain = [caught.value, caught.value.__cause__, caught.value.__context__]
    assert any(isinstance(e, APIResponseValidationError) for e in chain), chain
    assert len(server.requests) == 2
