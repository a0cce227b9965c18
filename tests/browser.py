"""Headless Chromium over the Chrome DevTools Protocol, for the browser tests.

No new dependency: the protocol is JSON over a websocket, and aiohttp (already
ours) speaks websockets. One connection to the browser carries every page, each
page a flattened session (its messages tagged with a ``sessionId``).

>>> async def example(url: str) -> None:  # doctest: +SKIP
...     async with launch() as browser:
...         page = await browser.new_page()
...         await page.goto(url)
...         await page.type("#prompt", "Hi")
...         await page.click("#send")
...         await page.wait_for("document.querySelector('#status').textContent === 'ready'")
...         assert page.console_errors == []
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

__all__ = ["Browser", "CDPError", "JavaScriptError", "Page", "find_chromium", "launch"]

DEBIAN_CHROMIUM = "/usr/bin/chromium"
COMMAND_TIMEOUT = 30.0

# Without the background-networking flags Chromium phones home at start, and on a
# closed network those connections fail slowly and noisily.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)


class CDPError(Exception):
    """The browser answered a command with an error, or went away."""


class JavaScriptError(CDPError):
    """An expression evaluated in the page threw; the message is the page's own text."""


def find_chromium() -> str:
    """The Chromium binary: ``$CHROMIUM``, else Debian's, else ``chromium`` on the PATH."""
    for candidate in (os.environ.get("CHROMIUM"), DEBIAN_CHROMIUM, shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "Chromium is needed for the browser tests and was not found: "
        "install it (Debian: apt-get install -y chromium) or set CHROMIUM=/path/to/chromium"
    )


class _Connection:
    """One websocket to the browser: numbered commands, and events routed by session."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next_id = 0
        self._pending: dict[int, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        self._pages: dict[str, Page] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session_id: str | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> dict[str, Any]:
        if self._reader.done():
            raise CDPError(f"{method}: the DevTools connection is closed")
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = (method, answer)
        try:
            await self._ws.send_str(json.dumps(message))
            return await asyncio.wait_for(answer, timeout)
        except asyncio.TimeoutError:
            raise CDPError(f"{method}: no answer from the browser in {timeout:g} s") from None
        finally:
            self._pending.pop(message["id"], None)

    async def _read(self) -> None:
        try:
            async for frame in self._ws:
                if frame.type is aiohttp.WSMsgType.TEXT:
                    self._dispatch(json.loads(frame.data))
        finally:
            for method, answer in self._pending.values():
                if not answer.done():
                    answer.set_exception(CDPError(f"{method}: the browser closed the connection"))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            method, answer = self._pending.get(message["id"], ("", None))
            if answer is None or answer.done():
                return
            if "error" in message:
                error = message["error"]
                answer.set_exception(
                    CDPError(f"{method}: {error.get('message')} ({error.get('code')})")
                )
            else:
                answer.set_result(message.get("result", {}))
            return
        page = self._pages.get(message.get("sessionId", ""))
        if page is not None:
            page._on_event(message["method"], message.get("params", {}))

    async def aclose(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class Page:
    """One tab. Every method that waits takes or has a timeout; none waits forever."""

    def __init__(self, connection: _Connection, session_id: str, target_id: str) -> None:
        self._connection = connection
        self.session_id = session_id
        self.target_id = target_id
        self._waiters: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []
        self.console_errors: list[str] = []
        """What the page reported as errors: ``console.error``/``console.assert``
        calls, uncaught exceptions and rejections, and error entries of the browser's
        log (a failed resource load, say), in order."""

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A raw DevTools command in this page's session."""
        return await self._connection.send(method, params, self.session_id)

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.console_errors.append(" ".join(_describe(arg) for arg in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            thrown = details.get("exception", {})
            self.console_errors.append(thrown.get("description") or details.get("text", "?"))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.console_errors.append(f"{entry.get('text')} {entry.get('url', '')}".strip())
        for waiter in [w for w in self._waiters if w[0] == method]:
            self._waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(params)

    def _expect(self, method: str) -> asyncio.Future[dict[str, Any]]:
        # Registered before the command that causes the event, so it cannot be missed.
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, future))
        return future

    async def _until_loaded(self, loaded: asyncio.Future[dict[str, Any]], timeout: float) -> None:
        try:
            await asyncio.wait_for(loaded, timeout)
        except asyncio.TimeoutError:
            raise CDPError(f"the page did not finish loading in {timeout:g} s") from None

    async def goto(self, url: str, timeout: float = COMMAND_TIMEOUT) -> None:
        """Load ``url`` and wait for its ``load`` event (a new document, not just a new hash)."""
        loaded = self._expect("Page.loadEventFired")
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"could not load {url}: {result['errorText']}")
        await self._until_loaded(loaded, timeout)

    async def reload(self, timeout: float = COMMAND_TIMEOUT) -> None:
        loaded = self._expect("Page.loadEventFired")
        await self.send("Page.reload", {"ignoreCache": True})
        await self._until_loaded(loaded, timeout)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` (awaited if it is a promise)."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        details = result.get("exceptionDetails")
        if details is not None:
            thrown = details.get("exception", {})
            raise JavaScriptError(thrown.get("description") or details.get("text", "?"))
        return result.get("result", {}).get("value")

    async def wait_for(self, predicate: str, timeout: float = 10.0, interval: float = 0.05) -> Any:
        """Poll the JavaScript ``predicate`` until it is truthy; its value."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await self.evaluate(predicate)
            if value:
                return value
            if asyncio.get_running_loop().time() >= deadline:
                raise TimeoutError(f"still false after {timeout:g} s: {predicate}")
            await asyncio.sleep(interval)

    async def _element_call(self, selector: str, body: str) -> Any:
        # ``el`` is the element; a selector that matches nothing is an error, not a no-op.
        return await self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            f" if (!el) throw new Error('nothing matches ' + {json.dumps(selector)}); {body} }})()"
        )

    async def type(self, selector: str, text: str) -> None:
        """Focus the element and type ``text`` into it, as the keyboard would."""
        await self._element_call(selector, "el.focus();")
        await self.send("Input.insertText", {"text": text})

    async def press_enter(self, selector: str) -> None:
        await self._element_call(selector, "el.focus();")
        key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
        await self.send("Input.dispatchKeyEvent", {"type": "keyDown", "text": "\r", **key})
        await self.send("Input.dispatchKeyEvent", {"type": "keyUp", **key})

    async def click(self, selector: str) -> None:
        """A real mouse click at the element's centre; fails if something else is on top."""
        x, y = await self._element_call(
            selector,
            "el.scrollIntoView({block: 'center'}); const r = el.getBoundingClientRect();"
            " const x = r.left + r.width / 2, y = r.top + r.height / 2;"
            " const top = document.elementFromPoint(x, y);"
            " if (!top || !el.contains(top)) throw new Error('covered: ' + (top && top.outerHTML));"
            " return [x, y];",
        )
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    async def screenshot(self, path: str | os.PathLike[str]) -> bytes:
        """Save the viewport as a PNG at ``path``; its bytes."""
        result = await self.send("Page.captureScreenshot", {"format": "png"})
        data = base64.b64decode(result["data"])
        await asyncio.to_thread(Path(path).write_bytes, data)
        return data


class Browser:
    def __init__(
        self, connection: _Connection, width: int, height: int, *, pid: int, profile: Path
    ) -> None:
        self._connection = connection
        self._size = (width, height)
        self.pid = pid
        self.profile = profile

    async def new_page(self) -> Page:
        """A blank tab of the launch size, its console watched from the start."""
        connection = self._connection
        width, height = self._size
        target = await connection.send("Target.createTarget", {"url": "about:blank"})
        attached = await connection.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(connection, attached["sessionId"], target["targetId"])
        connection._pages[page.session_id] = page
        for domain in ("Page", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        # The same pixels whatever the window manager of a headless browser decides.
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        return page


@contextlib.asynccontextmanager
async def launch(*, width: int = 1100, height: int = 800) -> AsyncIterator[Browser]:
    """Start headless Chromium in a fresh profile; on exit nothing of it is left behind."""
    binary = find_chromium()
    profile = Path(tempfile.mkdtemp(prefix="handinger-chromium-"))
    stderr_path = profile.parent / f"{profile.name}.stderr"
    process: asyncio.subprocess.Process | None = None
    http: aiohttp.ClientSession | None = None
    connection: _Connection | None = None
    try:
        with stderr_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                binary,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
                # Its own process group, so its helpers (zygote, renderers) go with it.
                start_new_session=True,
            )
        address = await _devtools_address(profile, process, stderr_path)
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(address, max_msg_size=0)
        connection = _Connection(ws)
        yield Browser(connection, width, height, pid=process.pid, profile=profile)
    finally:
        if connection is not None:
            # The browser may drop the socket before it answers: closing is what we asked for.
            with contextlib.suppress(CDPError, aiohttp.ClientError, ConnectionError):
                await connection.send("Browser.close", timeout=5)
            await connection.aclose()
        if http is not None:
            await http.close()
        if process is not None:
            await _stop(process)
        shutil.rmtree(profile, ignore_errors=True)
        stderr_path.unlink(missing_ok=True)


async def _devtools_address(
    profile: Path, process: asyncio.subprocess.Process, stderr_path: Path, timeout: float = 30.0
) -> str:
    # Chromium writes the port it picked, and the browser target's path, once it listens.
    port_file = profile / "DevToolsActivePort"
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if process.returncode is not None:
            break
        with contextlib.suppress(FileNotFoundError):
            lines = (await asyncio.to_thread(port_file.read_text)).split()
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        await asyncio.sleep(0.05)
    tail = (await asyncio.to_thread(stderr_path.read_text, errors="replace"))[-2000:]
    raise CDPError(
        f"Chromium did not open its DevTools port (exit code {process.returncode}):\n{tail}"
    )


async def _stop(process: asyncio.subprocess.Process) -> None:
    try:
        await asyncio.wait_for(process.wait(), 10)
    except asyncio.TimeoutError:
        pass
    # The group is the one launch() created; whatever of it is still alive goes now.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


def _describe(arg: dict[str, Any]) -> str:
    if "value" in arg:
        value = arg["value"]
        return value if isinstance(value, str) else json.dumps(value)
    return str(arg.get("description") or arg.get("type", "?"))
