"""The relay's chat page in headless Chromium, end to end over a Handinger emulator.

The page is the committed bundle (handinger_stream/relay/page/dist), served by the
relay itself: in this process (``chat_server``), and by relay processes sharing a
real redis-server, one of them killed mid-answer; over SSE and over the relay's
WebSocket (the page's transport switch). To refresh the screenshots in the docs:

    RELAY_PAGE_SCREENSHOTS=docs .venv/bin/python -m pytest tests/relay/test_relay_page.py -k streams
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from handinger_stream import AsyncHandinger, Worker
from handinger_stream.emulator import Emulator
from handinger_stream.relay import MemoryStore, Relay, make_aiohttp_app
from handinger_stream.relay.access import Access, bearer_token
from tests.browser import Page, launch
from tests.helpers.emulators import emulator_fixture
from tests.relay_helpers import RelayProcess, redis_server

pytestmark = pytest.mark.browser

PROMPT = "What's the weather in Barcelona?"

STATUS = "document.getElementById('status').textContent"
# What a reader sees: each message's role, id, and its text parts run together.
MESSAGES = """[...document.querySelectorAll('#messages .message')].map((m) => ({
  role: m.dataset.role,
  id: m.dataset.id,
  text: [...m.querySelectorAll('.text')].map((t) => t.textContent).join(''),
}))"""
ANSWER = f"({MESSAGES}).filter((m) => m.role === 'assistant').map((m) => m.text).join('')"
# The transport the page says it uses, and the one its switch shows pressed.
TRANSPORT = """({
  body: document.body.dataset.transport,
  pressed: [...document.querySelectorAll('.transport button[aria-pressed="true"]')].map((b) => b.id),
  said: document.getElementById('transport-used')?.textContent,
  query: location.search,
})"""
OVER_SSE = {"body": "sse", "pressed": ["transport-sse"], "said": "over SSE", "query": ""}
OVER_WS = {
    "body": "ws",
    "pressed": ["transport-ws"],
    "said": "over WebSocket",
    "query": "?transport=ws",
}
# The paths this page load fetched over HTTP (a WebSocket is not among them).
FETCHED = "performance.getEntriesByType('resource').map((e) => new URL(e.name).pathname)"


# A pace a person can watch; short keep-alives, so that comments reach the page too.
watched = emulator_fixture("function", tokens_per_second=20, keepalive_interval=0.04)


@pytest.fixture
async def handinger(watched: Emulator) -> AsyncIterator[AsyncHandinger]:
    async with AsyncHandinger(api_key="any", base_url=watched.base_url) as client:
        yield client


@pytest.fixture
async def chat_server(handinger: AsyncHandinger) -> AsyncIterator[str]:
    """The page's base URL: the relay (MemoryStore) over the emulator, in an aiohttp app."""
    root = web.Application(middlewares=[web.normalize_path_middleware()])
    # Under a prefix, as a relay mounted in a bigger app would be: the page must not
    # assume it lives at /.
    async with Relay(handinger, MemoryStore()) as relay:
        root.add_subapp("/relay/", make_aiohttp_app(relay, keepalive=0.1))
        runner = web.AppRunner(root, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            yield f"http://127.0.0.1:{runner.addresses[0][1]}/relay/"
        finally:
            await runner.cleanup()


def errors(page: Page) -> list[str]:
    """The page's console errors, less the browser's own line for the history of a chat
    not begun yet: the relay answers it 404 (a chat it never saw), the page takes it for
    an empty history."""
    return [e for e in page.console_errors if not ("status of 404" in e and "/api/chat/" in e)]


TOKEN_KEY = "handinger-relay-token"  # where the page keeps its token (sessionStorage)

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
            if response.status == 404:
                return None  # a chat the relay has not seen yet
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
        assert await page.evaluate(TRANSPORT) == OVER_SSE

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
        assert "/relay/api/chat" in await page.evaluate(FETCHED)  # the turn came over SSE
        assert errors(page) == []


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
        assert errors(page) == []


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
        assert errors(page) == []


# -- the WebSocket transport ----------------------------------------------------------


def over_http(paths: list[str]) -> list[str]:
    """The chat requests among fetched paths: a turn or a resume over HTTP (not the history)."""
    return [p for p in paths if p.endswith("/api/chat") or p.endswith("/stream")]


async def test_a_turn_over_the_websocket_and_a_reload_mid_answer_keep_to_it(
    chat_server: str, handinger: AsyncHandinger
) -> None:
    async with launch() as browser:
        page = await browser.new_page()
        await page.goto(f"{chat_server}?transport=ws")
        chat_id = await chat_ready(page)
        assert await page.evaluate(TRANSPORT) == OVER_WS
        await page.type("#prompt", PROMPT)
        await page.click("#send")
        before = await watch_answer_grow(page)

        # A reload keeps the transport (the query) and the chat (the fragment); the turn
        # resumes over a new socket, from its start, and is shown once.
        await page.reload()
        assert await chat_ready(page) == chat_id
        assert await page.evaluate(TRANSPORT) == OVER_WS
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
        assert shown[1]["id"] == worker.messages[-1]["id"]
        assert over_http(await page.evaluate(FETCHED)) == []  # all of it over the socket
        assert errors(page) == []


async def test_the_switch_moves_a_running_answer_to_the_websocket_and_back(
    chat_server: str, handinger: AsyncHandinger
) -> None:
    async with launch() as browser:
        page = await browser.new_page()
        await page.goto(chat_server)
        chat_id = await chat_ready(page)
        await page.type("#prompt", PROMPT)
        await page.click("#send")
        before = await watch_answer_grow(page)

        # Mid-answer, to the WebSocket: the chat is mounted anew over it and resumes the turn.
        await page.click("#transport-ws")
        assert await chat_ready(page) == chat_id
        assert await page.evaluate(TRANSPORT) == OVER_WS
        assert await page.evaluate("location.hash") == f"#{chat_id}"
        await page.wait_for(f"{STATUS} === 'streaming'")
        await page.wait_for(f"{STATUS} === 'ready'", timeout=60)
        worker = await answering_worker(chat_server, chat_id, handinger)
        assert worker is not None
        expected = [("user", PROMPT), ("assistant", worker.output_text)]
        shown = await page.evaluate(MESSAGES)
        assert [(m["role"], m["text"]) for m in shown] == expected
        assert worker.output_text.startswith(before) and before != worker.output_text

        # And back: the query loses the parameter, the chat shows its history over SSE.
        await page.click("#transport-sse")
        assert await chat_ready(page) == chat_id
        assert await page.evaluate(TRANSPORT) == OVER_SSE
        await asyncio.sleep(0.3)  # the resume asked over SSE: nothing running
        assert await page.evaluate(STATUS) == "ready"
        assert [(m["role"], m["text"]) for m in await page.evaluate(MESSAGES)] == expected
        assert errors(page) == []


# -- several relay processes over Redis ---------------------------------------------


paced_emulator = emulator_fixture("function", tokens_per_second=20, keepalive_interval=0.2)


async def test_the_relay_serving_the_page_is_killed_and_another_finishes_the_answer_once(
    paced_emulator: Emulator,
) -> None:
    with redis_server() as redis:
        a = RelayProcess(base_url=paced_emulator.base_url, redis_url=redis.url)
        b = RelayProcess(base_url=paced_emulator.base_url, redis_url=redis.url)
        try:
            async with (
                launch() as browser,
                AsyncHandinger(api_key="any", base_url=paced_emulator.base_url) as client,
            ):
                page = await browser.new_page()
                await page.goto(a.url)
                chat_id = await chat_ready(page)
                await page.type("#prompt", PROMPT)
                await page.click("#send")
                before = await watch_answer_grow(page)
                # The process producing the answer dies (no goodbye: its lease expires).
                a.kill()
                # The same chat at another relay process: its history, then the answer,
                # resumed from the last event stored, shown once.
                other = await browser.new_page()
                await other.goto(f"{b.url}#{chat_id}")
                assert await chat_ready(other) == chat_id
                await other.wait_for(f"({ANSWER}).length > 0", timeout=30)
                await other.wait_for(f"{STATUS} === 'ready'", timeout=60)
                shown = await other.evaluate(MESSAGES)
                worker = await answering_worker(b.url, chat_id, client)
                assert worker is not None
                assert [(m["role"], m["text"]) for m in shown] == [
                    ("user", PROMPT),
                    ("assistant", worker.output_text),
                ]
                assert worker.output_text.startswith(before) and before != worker.output_text
                assert other.console_errors == []
        finally:
            a.stop()
            b.stop()


TOKEN = "page-token-" + "9f8e7d6c" * 4


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_the_page_takes_its_token_from_the_fragment_and_chats_with_it(
    handinger: AsyncHandinger, transport: str
) -> None:
    root = web.Application(middlewares=[web.normalize_path_middleware()])
    async with Relay(handinger, MemoryStore()) as relay:
        access = Access(relay.store, authenticate=bearer_token({"reader": TOKEN}))
        root.add_subapp("/relay/", make_aiohttp_app(relay, keepalive=0.1, access=access))
        runner = web.AppRunner(root, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/relay/"
        try:
            async with launch() as browser:
                page = await browser.new_page()
                query = "?transport=ws" if transport == "ws" else ""
                await page.goto(f"{url}{query}#token={TOKEN}")
                chat_id = await chat_ready(page)
                # Taken out of the URL at once, kept for this tab only.
                assert TOKEN not in await page.evaluate("location.href")
                assert await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") == TOKEN
                await page.type("#prompt", PROMPT)
                await page.click("#send")
                await page.wait_for(f"{STATUS} === 'ready' && ({ANSWER}).length > 0", timeout=60)
                info = await relay.chat(chat_id)
                assert info is not None and info.owner == "reader"
                # A reload keeps the token (sessionStorage) and shows the history.
                await page.reload()
                assert await chat_ready(page) == chat_id
                shown = await page.evaluate(MESSAGES)
                assert [m["role"] for m in shown] == ["user", "assistant"]
                assert errors(page) == []
        finally:
            await runner.cleanup()
