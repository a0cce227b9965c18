"""The webhook receiver over real loopback HTTP: in aiohttp (a route, its own app, and
``listen``) and as an ASGI app in FastAPI under uvicorn (a route and a mount)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
import uvicorn
from aiohttp import web
from fastapi import FastAPI
from starlette.routing import Route

from handinger_stream.monitoring.webhooks import WebhookDelivery, WebhookReceiver
from handinger_stream.monitoring.webhooks_aiohttp import listen, make_webhook_app, webhook_handler
from handinger_stream.monitoring.webhooks_asgi import WebhookASGI
from tests.helpers.webhooks import TASK, TOKEN, WORKER


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def served(kind: str, receiver: WebhookReceiver) -> AsyncIterator[str]:
    """The receiver's URL, mounted as ``kind`` says, on a loopback port."""
    if kind.startswith("aiohttp"):
        if kind == "aiohttp-route":
            app = web.Application()
            app.router.add_route("*", "/hooks/handinger", webhook_handler(receiver))
        else:
            app = web.Application()
            app.add_subapp("/hooks/", make_webhook_app(receiver, "/handinger"))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            yield f"http://127.0.0.1:{runner.addresses[0][1]}/hooks/handinger"
        finally:
            await runner.cleanup()
        return
    api = FastAPI()
    if kind == "asgi-route":
        api.router.routes.append(Route("/hooks/handinger", WebhookASGI(receiver)))
    elif kind == "asgi-mount":
        api.mount("/hooks/handinger", WebhookASGI(receiver))
    port = free_port()
    # On its own, the app answers uvicorn's lifespan messages (and any path).
    alone = kind == "asgi-alone"
    server = uvicorn.Server(
        uvicorn.Config(
            WebhookASGI(receiver) if alone else api,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on" if alone else "off",
        )
    )
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        # A mount answers under its prefix; a route at its exact path.
        yield f"http://127.0.0.1:{port}/hooks/handinger" + ("/" if kind == "asgi-mount" else "")
    finally:
        server.should_exit = True
        await task


KINDS = ["aiohttp-route", "aiohttp-app", "asgi-route", "asgi-mount", "asgi-alone"]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def send(
    http: aiohttp.ClientSession,
    url: str,
    body: object,
    *,
    token: str | None = TOKEN,
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    sent = {"content-type": "application/json"}
    if token is not None:
        sent["X-Handinger-Token"] = token
    sent.update(headers or {})
    data = body if isinstance(body, bytes) else msgspec.json.encode(body)
    async with http.request(method, url, data=data, headers=sent, allow_redirects=False) as r:
        raw = await r.read()
        return r.status, dict(r.headers), json.loads(raw) if raw else None


@pytest.mark.parametrize("kind", KINDS)
async def test_deliveries_over_http(kind: str, http: aiohttp.ClientSession) -> None:
    got: list[WebhookDelivery] = []
    receiver = WebhookReceiver(TOKEN, got.append, max_body=64 * 1024)
    async with served(kind, receiver) as url:
        status, _, answer = await send(http, url, {"type": "task.completed", "task": TASK})
        assert status == 200 and answer["ok"] is True
        assert (await send(http, url, WORKER))[0] == 200
        assert (await send(http, url, {"something": ["else"]}))[0] == 200
        # The same delivery again (a retry): acknowledged, not handed on.
        status, _, answer = await send(http, url, {"type": "task.completed", "task": TASK})
        assert status == 200 and answer["duplicate"] is True

        status, _, answer = await send(http, url, {"a": 1}, token="whsec-wrong")
        assert (status, answer) == (
            401,
            {"error": {"message": "unauthorized", "type": "unauthorized"}},
        )
        assert (await send(http, url, {"a": 1}, token=None))[0] == 401
        status, headers, _ = await send(http, url, b"", method="GET")
        assert status == 405 and headers["Allow"] == "POST"
        assert (await send(http, url, b"a=1", headers={"content-type": "text/plain"}))[0] == 415
        assert (await send(http, url, b"[1, 2]"))[0] == 400
        assert (await send(http, url, b"{nope"))[0] == 400
        deep = b'{"a":' + b"[" * 100 + b"]" * 100 + b"}"
        assert (await send(http, url, deep))[0] == 400
        assert (await send(http, url, {"big": "x" * 70_000}))[0] == 413

    assert [d.task_id for d in got] == ["tsk_1", None, None]
    assert got[0].worker is None and got[0].task is not None and got[0].type == "task.completed"
    assert got[1].worker is not None and got[1].worker.output_text == "All done."
    assert got[2].raw == {"something": ["else"]}


@pytest.mark.parametrize("kind", KINDS)
async def test_a_chunked_oversize_body_is_413(kind: str, http: aiohttp.ClientSession) -> None:
    receiver = WebhookReceiver(TOKEN, lambda d: None, max_body=1000)

    async def pieces() -> AsyncIterator[bytes]:
        yield b'{"big": "'
        for _ in range(50):
            yield b"x" * 100
        yield b'"}'

    async with served(kind, receiver) as url:
        headers = {"X-Handinger-Token": TOKEN, "content-type": "application/json"}
        async with http.post(url, data=pieces(), headers=headers) as response:
            assert response.status == 413
    assert receiver.handed == 0


@pytest.mark.parametrize("kind", ["aiohttp-route", "asgi-route"])
async def test_many_deliveries_are_handed_on_in_order_and_read_with_async_for(
    kind: str, http: aiohttp.ClientSession
) -> None:
    receiver = WebhookReceiver(TOKEN, queue_size=8)
    sent = [{"n": n, "task": {**TASK, "id": f"tsk_{n}"}} for n in range(60)]
    async with served(kind, receiver) as url:

        async def sender() -> None:
            for body in sent:
                assert (await send(http, url, body))[0] == 200
            assert (await send(http, url, sent[5]))[0] == 200  # a late retry
            receiver.close()

        task = asyncio.ensure_future(sender())
        read = [delivery async for delivery in receiver]
        await task
    assert [d.task_id for d in read] == [f"tsk_{n}" for n in range(60)]
    assert [d.raw for d in read] == sent


@pytest.mark.parametrize("kind", ["aiohttp-route", "asgi-mount"])
async def test_a_failing_handler_shows_no_detail_and_its_retry_is_handed_on(
    kind: str, http: aiohttp.ClientSession
) -> None:
    calls: list[str] = []

    def handler(delivery: WebhookDelivery) -> None:
        calls.append(delivery.delivery_id)
        if len(calls) == 1:
            raise RuntimeError("secret internals at /srv/app.py line 3")

    receiver = WebhookReceiver(TOKEN, handler)
    async with served(kind, receiver) as url:
        headers = {"X-Handinger-Delivery-Id": "del_1"}
        async with http.post(
            url,
            data=b'{"a": 1}',
            headers={"X-Handinger-Token": TOKEN, "content-type": "application/json", **headers},
        ) as response:
            text = await response.text()
            assert response.status == 500
        assert "secret" not in text and "Traceback" not in text and "RuntimeError" not in text
        status, _, answer = await send(http, url, {"a": 1}, headers=headers)
        assert (status, answer) == (200, {"ok": True, "delivery_id": "del_1"})
    assert calls == ["del_1", "del_1"]


async def test_listen_serves_until_cancelled(http: aiohttp.ClientSession) -> None:
    urls: list[str] = []
    got: list[WebhookDelivery] = []
    ready = asyncio.Event()

    def on_ready(url: str) -> None:
        urls.append(url)
        ready.set()

    async def on_delivery(delivery: WebhookDelivery) -> None:
        got.append(delivery)

    task = asyncio.ensure_future(
        listen("127.0.0.1", 0, TOKEN, on_delivery, path="/hooks", ready=on_ready)
    )
    await asyncio.wait_for(ready.wait(), 5)
    [url] = urls
    assert url.startswith("http://127.0.0.1:") and url.endswith("/hooks")
    assert (await send(http, url, TASK))[0] == 200
    assert (await send(http, url, TASK, token="nope"))[0] == 401
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [d.task_id for d in got] == ["tsk_1"]
    with pytest.raises(aiohttp.ClientConnectionError):
        await send(http, url, TASK)
