"""The error a stream gives up with says the break and the last resume's failure once,
however many resumes failed."""

from __future__ import annotations

import anyio
import pytest
from aiohttp import web

from handinger_stream import AsyncHandinger, IncompleteStreamError
from handinger_stream.client.transport import TransportName


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_many_failed_resumes_are_told_once(transport: TransportName) -> None:
    resumes = 0

    async def create(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "x-handinger-worker-id": "w1"}
        )
        await response.prepare(request)
        await response.write(b'id: 1\ndata: {"type":"start"}\n\n')
        return response  # cut: no finish, no [DONE]

    async def replay(request: web.Request) -> web.Response:
        nonlocal resumes
        resumes += 1
        return web.json_response({"error": {"message": f"busy {resumes}"}}, status=503)

    app = web.Application()
    app.router.add_post("/api/workers", create)
    app.router.add_get("/api/workers/w1", replay)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with AsyncHandinger(
            api_key="k", base_url=base_url, transport=transport, max_reconnects=3
        ) as client:
            stream = await client.workers.create(input="x", stream=True)
            with anyio.fail_after(60), pytest.raises(IncompleteStreamError) as caught:
                await stream.get_final_worker()
    finally:
        await runner.cleanup()
    message = str(caught.value)
    assert resumes == 3
    assert message.count("resuming failed") == 1, message
    assert "busy 3" in message and "busy 1" not in message
    assert "gave up after 3 reconnect attempts" in message
