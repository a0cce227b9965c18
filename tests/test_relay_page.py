"""The relay's chat page in headless Chromium, end to end over a Handinger emulator.

The page is the committed bundle (handinger_stream/relay/page/dist); it talks to
whatever ``chat_server`` serves. Until handinger_stream.relay exists that is a
stand-in below; pointing these tests at the real relay means replacing that one
fixture. To refresh the screenshots in the docs:

    RELAY_PAGE_SCREENSHOTS=docs .venv/bin/python -m pytest tests/test_relay_page.py -k streams
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import handinger_stream
from handinger_stream import AsyncHandinger, Worker
from handinger_stream.emulator import Emulator
from handinger_stream.transport import Response

from .browser import Page, launch

pytestmark = pytest.mark.browser

DIST = Path(handinger_stream.__file__).parent / "relay" / "page" / "dist"
PROMPT = "What's the weather in Barcelona?"

STATUS = "document.getElementById('status').textContent"
# What a reader sees: each message's role, id, and its text parts run together.
MESSAGES = """[...document.querySelectorAll('#messages .message')].map((m) => ({
  role: m.dataset.role,
  id: m.dataset.id,
  text: [...m.querySelectorAll('.text')].map((t) => t.textContent).join(''),
}))"""
ANSWER = f"({MESSAGES}).filter((m) => m.role === 'assistant').map((m) => m.text).join('')"


@pytest.fixture
async def handinger() -> AsyncIterator[AsyncHandinger]:
    # A pace a person can watch; short keep-alives, so that comments reach the page too.
    async with Emulator(tokens_per_second=20, keepalive_interval=0.04) as emulator:
        async with AsyncHandinger(api_key="any", base_url=emulator.base_url) as client:
            yield client


# -- stand-in until handinger_stream.relay exists ----------------------------------
#
# The least server that keeps the relay's HTTP contract, over the emulator: the
# page and its bundle, POST api/chat (a new worker, or a new turn of the chat's
# worker; the worker's UI message stream forwarded byte for byte),
# GET api/chat/{id}/stream (204, or the running turn replayed from its first
# event) and GET api/chat/{id} (the worker's messages, which hold no message for
# a turn still running). A browser that leaves stops only its own copy of the
# stream: the turn runs on in the emulator.


@dataclass
class _StubChat:
    worker_id: str
    turn_start: int  # the SSE id of the latest turn's first event


_SSE_HEADERS = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    "x-vercel-ai-ui-message-stream": "v1",
    "x-accel-buffering": "no",
}


class _StubRelay:
    def __init__(self, client: AsyncHandinger) -> None:
        self.client = client
        self.chats: dict[str, _StubChat] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.index)
        app.router.add_get("/{name:app\\.(?:js|css)}", self.asset)
        app.router.add_post("/api/chat", self.send)
        app.router.add_get("/api/chat/{id}/stream", self.resume)
        app.router.add_get("/api/chat/{id}", self.history)
        return app

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(DIST / "index.html")

    async def asset(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(DIST / request.match_info["name"])

    async def send(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        last = body["messages"][-1]
        text = "".join(p["text"] for p in last["parts"] if p["type"] == "text")
        chat = self.chats.get(body["id"])
        path = "/api/workers" if chat is None else f"/api/workers/{chat.worker_id}"
        upstream = await self.client.request(
            "POST", path, json={"input": text, "stream": True}, stream=True
        )
        # The turn's first event (its opening snapshot) is written as the turn starts:
        # its id is where a resume will replay from.
        first = await upstream.read_chunk()
        start = re.search(rb"^id: (\d+)$", first, re.M)
        assert start is not None, first
        self.chats[body["id"]] = _StubChat(
            upstream.headers["x-handinger-worker-id"], int(start.group(1))
        )
        return await self._forward(request, upstream, first)

    async def resume(self, request: web.Request) -> web.StreamResponse:
        chat = self.chats.get(request.match_info["id"])
        if chat is None:
            return web.Response(status=204)
        worker = await self.client.workers.retrieve(chat.worker_id)
        if worker.status == "completed":
            return web.Response(status=204)
        after = {"last-event-id": str(chat.turn_start - 1)} if chat.turn_start else {}
        upstream = await self.client.request(
            "GET", f"/api/workers/{chat.worker_id}?stream=true", stream=True, headers=after
        )
        return await self._forward(request, upstream, b"")

    async def history(self, request: web.Request) -> web.Response:
        chat_id = request.match_info["id"]
        chat = self.chats.get(chat_id)
        messages: list[Any] = []
        if chat is not None:
            messages = (await self.client.workers.retrieve(chat.worker_id)).messages
        return web.json_response({"id": chat_id, "messages": messages})

    async def _forward(
        self, request: web.Request, upstream: Response, first: bytes
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        try:
            chunk = first or await upstream.read_chunk()
            while chunk:
                await response.write(chunk)
                chunk = await upstream.read_chunk()
            await response.write_eof()
        except ConnectionError:
            pass  # the browser left (reload, stop): the worker is not ours to stop
        finally:
            await upstream.aclose()
        return response


@pytest.fixture
async def chat_server(handinger: AsyncHandinger) -> AsyncIterator[str]:
    """The page's base URL. A stand-in until handinger_stream.relay exists: swap it then."""
    root = web.Application()
    # Under a prefix, as a relay mounted in a bigger app would be: the page must not
    # assume it lives at /.
    root.add_subapp("/relay/", _StubRelay(handinger).app())
    runner = web.AppRunner(root, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/relay/"
    finally:
        await runner.cleanup()


# -- the tests ----------------------------------------------------------------------


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: a temporary directory, or $RELAY_PAGE_SCREENSHOTS."""
    return Path(os.environ.get("RELAY_PAGE_SCREENSHOTS") or tmp_path)


async def chat_ready(page: Page) -> str:
    """Wait until the page has its history and its chat mounted; the chat id."""
    await page.wait_for("document.body.dataset.ready === '1'")
    chat_id: str = await page.evaluate("decodeURIComponent(location.hash.slice(1))")
    assert chat_id
    return chat_id


async def watch_answer_grow(page: Page, times: int = 2, timeout: float = 30.0) -> str:
    """Wait until the answer has appeared and then grown ``times`` times; its text then."""
    seen: list[str] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(seen) <= times:
        text: str = await page.evaluate(ANSWER)
        if text and (not seen or len(text) > len(seen[-1])):
            assert not seen or text.startswith(seen[-1]), (seen[-1], text)
            seen.append(text)
        assert asyncio.get_running_loop().time() < deadline, f"the answer did not grow: {seen}"
        await asyncio.sleep(0.02)
    return seen[-1]


async def answering_worker(url: str, chat_id: str, client: AsyncHandinger) -> Worker | None:
    """The worker behind the chat's last finished answer (None before there is one).

    The chat's history names it: the emulator's stream puts ``workerId`` in the
    message metadata, and the relay's history keeps it.
    """
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}api/chat/{chat_id}") as response:
            assert response.status == 200
            history = await response.json()
    assert history["id"] == chat_id
    answers = [m for m in history["messages"] if m["role"] == "assistant"]
    if not answers:
        return None
    return await client.workers.retrieve(answers[-1]["metadata"]["workerId"])


async def test_a_turn_streams_into_the_page(
    chat_server: str, handinger: AsyncHandinger, shots: Path
) -> None:
    async with launch() as browser:
        page = await browser.new_page()
        await page.goto(chat_server)
        chat_id = await chat_ready(page)
        assert await page.evaluate(STATUS) == "ready"
        assert await page.evaluate(MESSAGES) == []

        await page.type("#prompt", PROMPT)
        await page.click("#send")
        await watch_answer_grow(page)
        # Some way into the answer, for a screenshot that shows it being written.
        await page.wait_for(f"({ANSWER}).length > 150")
        partial: str = await page.evaluate(ANSWER)
        assert await page.evaluate(STATUS) == "streaming"
        assert await page.evaluate(
            "!!document.querySelector('#stop') && !document.querySelector('#send')"
        )
        await page.screenshot(shots / "relay-page.png")

        await page.wait_for(f"{STATUS} === 'ready'", timeout=60)
        await page.screenshot(shots / "relay-page-done.png")
        shown = await page.evaluate(MESSAGES)
        worker = await answering_worker(chat_server, chat_id, handinger)
        assert worker is not None
        assert [(m["role"], m["text"]) for m in shown] == [
            ("user", PROMPT),
            ("assistant", worker.output_text),
        ]
        assert worker.output_text.startswith(partial) and partial != worker.output_text
        # The page's message is the worker's, as the stream's start chunk named it.
        assert shown[1]["id"] == worker.messages[-1]["id"]
        assert await page.evaluate("document.querySelectorAll('.sources a').length") == len(
            worker.sources
        )
        tool = "document.querySelector('.tool[data-tool=\"web_search\"]').dataset.state"
        assert await page.evaluate(tool) == "output-available"
        assert await page.evaluate("document.querySelectorAll('.text.streaming').length") == 0
        assert await page.evaluate("document.getElementById('prompt').value") == ""
        assert page.console_errors == []


async def test_a_reload_mid_stream_resumes_the_turn_once(
    chat_server: str, handinger: AsyncHandinger
) -> None:
    async with launch() as browser:
        page = await browser.new_page()
        await page.goto(chat_server)
        chat_id = await chat_ready(page)
        await page.type("#prompt", PROMPT)
        await page.press_enter("#prompt")
        before = await watch_answer_grow(page)

        await page.reload()
        assert await chat_ready(page) == chat_id
        # The question comes from the history; the answer only from the resumed stream.
        await page.wait_for(f"{STATUS} === 'streaming'")
        await page.wait_for(f"{STATUS} === 'ready'", timeout=60)

        shown = await page.evaluate(MESSAGES)
        worker = await answering_worker(chat_server, chat_id, handinger)
        assert worker is not None
        assert [(m["role"], m["text"]) for m in shown] == [
            ("user", PROMPT),
            ("assistant", worker.output_text),
        ]
        assert worker.output_text.startswith(before) and before != worker.output_text
        assert page.console_errors == []


async def test_stop_leaves_the_worker_running_and_a_reload_shows_its_answer(
    chat_server: str, handinger: AsyncHandinger
) -> None:
    async with launch() as browser:
        page = await browser.new_page()
        await page.goto(chat_server)
        chat_id = await chat_ready(page)
        await page.type("#prompt", PROMPT)
        await page.click("#send")
        await watch_answer_grow(page, times=1)
        await page.click("#stop")
        await page.wait_for(f"{STATUS} === 'ready'")
        stopped: str = await page.evaluate(ANSWER)
        await asyncio.sleep(0.3)
        assert await page.evaluate(ANSWER) == stopped

        # The worker was not ours to stop: it finishes, and the chat's history has it.
        for _ in range(600):
            worker = await answering_worker(chat_server, chat_id, handinger)
            if worker is not None:
                break
            await asyncio.sleep(0.1)
        assert worker is not None
        assert worker.output_text.startswith(stopped) and stopped != worker.output_text

        await page.reload()
        assert await chat_ready(page) == chat_id
        shown = await page.evaluate(MESSAGES)
        assert [(m["role"], m["text"]) for m in shown] == [
            ("user", PROMPT),
            ("assistant", worker.output_text),
        ]
        # Nothing to resume: the turn is over, and the history already holds it.
        await asyncio.sleep(0.3)
        assert await page.evaluate(STATUS) == "ready"
        assert await page.evaluate(MESSAGES) == shown
        assert page.console_errors == []
