"""An ``error`` chunk, then the connection ends: the turn failed, and a ``finish``
may still have been on its way.

The AI SDK can send ``finish`` (with metadata) after an ``error`` chunk; a cut
between the two looks like a clean end. The client asks once, by resuming, for
what followed; a server with nothing to resume leaves the error as the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from aiohttp import web

from handinger_stream import AsyncHandinger, WorkerFailedError
from handinger_stream.client.transport import TransportName

HEAD = b'id: 1\ndata: {"type":"start","messageId":"m"}\n\nid: 2\ndata: {"type":"error","errorText":"boom"}\n\n'
TAIL = b'id: 3\ndata: {"type":"finish","messageMetadata":{"c":3}}\n\ndata: [DONE]\n\n'


@asynccontextmanager
async def serving(resume: str) -> AsyncIterator[tuple[str, list[str]]]:
    """POST: the head of a turn, cut after its error chunk. GET (a resume): the tail
    after ``Last-Event-ID`` (``resume="tail"``) or 404 (``"gone"``)."""
    seen: list[str] = []

    async def create(request: web.Request) -> web.StreamResponse:
        seen.append("POST")
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "x-handinger-worker-id": "w1"}
        )
        await response.prepare(request)
        await response.write(HEAD)
        return response  # ends without [DONE]

    async def replay(request: web.Request) -> web.StreamResponse:
        seen.append(f"GET after {request.headers.get('last-event-id')}")
        if resume == "gone":
            return web.json_response({"error": {"message": "no such worker"}}, status=404)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(TAIL)
        return response

    app = web.Application()
    app.router.add_post("/api/workers", create)
    app.router.add_get("/api/workers/w1", replay)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_the_finish_after_an_error_is_fetched_by_one_resume(transport: TransportName) -> None:
    async with serving("tail") as (base_url, seen):
        async with AsyncHandinger(api_key="k", base_url=base_url, transport=transport) as client:
            stream = await client.workers.create(input="x", stream=True)
            with anyio.fail_after(20), pytest.raises(WorkerFailedError):
                await stream.get_final_worker()
            worker = stream.snapshot
    assert seen == ["POST", "GET after 2"]
    assert worker.error == "boom" and worker.outcome == "failed"
    assert worker.messages[-1]["metadata"] == {"c": 3}  # what the finish carried


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_with_nothing_to_resume_the_error_is_the_end(transport: TransportName) -> None:
    async with serving("gone") as (base_url, seen):
        async with AsyncHandinger(
            api_key="k", base_url=base_url, transport=transport, max_retries=0
        ) as client:
            stream = await client.workers.create(input="x", stream=True)
            with anyio.fail_after(20), pytest.raises(WorkerFailedError):
                await stream.get_final_worker()
            worker = stream.snapshot
    assert seen == ["POST", "GET after 2"]  # asked once, not again
    assert worker.error == "boom" and worker.outcome == "failed"
