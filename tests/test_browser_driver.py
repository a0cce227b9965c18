"""The headless Chromium driver (tests/browser.py) against a static page on a real server."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.browser import CDPError, JavaScriptError, launch

pytestmark = pytest.mark.browser

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>driver check</title><link rel="icon" href="data:,"></head>
<body>
<input id="name" autocomplete="off">
<button id="greet">Greet</button>
<button id="fail">Fail</button>
<p id="out"></p>
<script>
const out = document.getElementById('out');
const name = document.getElementById('name');
document.getElementById('greet').addEventListener('click', () => { out.textContent = 'hello ' + name.value; });
name.addEventListener('keydown', (e) => { if (e.key === 'Enter') out.textContent = 'enter on ' + name.value; });
document.getElementById('fail').addEventListener('click', () => {
  console.error('logged on purpose', 42);
  setTimeout(() => { throw new Error('thrown on purpose'); });
});
</script>
</body></html>
"""


@pytest.fixture
async def site() -> AsyncIterator[str]:
    app = web.Application()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def test_goto_evaluate_type_click_and_enter(site: str) -> None:
    async with launch() as browser:
        page = await browser.new_page()
        await page.goto(site)
        assert await page.evaluate("document.title") == "driver check"
        assert await page.evaluate("({a: [1, 2.5, null], b: 'x'})") == {
            "a": [1, 2.5, None],
            "b": "x",
        }
        assert await page.evaluate("new Promise((r) => setTimeout(() => r(7), 20))") == 7
        assert await page.evaluate("undefined") is None
        with pytest.raises(JavaScriptError, match="nope"):
            await page.evaluate("(() => { throw new Error('nope') })()")

        await page.type("#name", "Ada")
        await page.click("#greet")
        assert await page.wait_for("document.getElementById('out').textContent") == "hello Ada"
        await page.press_enter("#name")
        assert await page.evaluate("document.getElementById('out').textContent") == "enter on Ada"

        with pytest.raises(JavaScriptError, match="nothing matches"):
            await page.click("#missing")
        with pytest.raises(CDPError, match=r"^No\.such: .*wasn't found"):
            await page.send("No.such")
        with pytest.raises(TimeoutError, match="still false"):
            await page.wait_for("false", timeout=0.2)
        # A page that did nothing wrong reported nothing.
        assert page.console_errors == []


async def test_click_refuses_a_covered_element(site: str) -> None:
    async with launch() as browser:
        page = await browser.new_page()
        await page.goto(site)
        await page.evaluate(
            "document.body.insertAdjacentHTML('beforeend',"
            " '<div style=\"position: fixed; inset: 0; background: white\">overlay</div>')"
        )
        with pytest.raises(JavaScriptError, match="covered"):
            await page.click("#greet")
        assert await page.evaluate("document.getElementById('out').textContent") == ""


async def test_screenshot_console_errors_and_cleanup(site: str, tmp_path: Path) -> None:
    async with launch(width=640, height=480) as browser:
        page = await browser.new_page()
        await page.goto(site)
        png = await page.screenshot(tmp_path / "shot.png")
        assert (tmp_path / "shot.png").read_bytes() == png
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert png[12:16] == b"IHDR"
        assert struct.unpack(">II", png[16:24]) == (640, 480)

        await page.click("#fail")
        # The page reports asynchronously: the exception comes from a timer.
        for _ in range(200):
            if len(page.console_errors) >= 2:
                break
            await asyncio.sleep(0.01)
        assert page.console_errors[0] == "logged on purpose 42"
        assert "thrown on purpose" in page.console_errors[1]

        # A reload keeps the page's history of errors, and loads a fresh document.
        await page.evaluate("window.marker = 1")
        await page.reload()
        assert await page.evaluate("typeof window.marker") == "undefined"
        assert len(page.console_errors) == 2
        pid, profile = browser.pid, browser.profile
        assert profile.is_dir()

    # Nothing of the browser outlives the block: not its process, not its profile.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not profile.exists()
