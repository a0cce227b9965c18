"""The relay in this process over loopback HTTP: the AI SDK chat transport through the
aiohttp sub-app and through the ASGI app mounted in FastAPI under uvicorn, against the
emulator; readers that leave, readers too slow, errors, the AI SDK's own fold, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest
import uvicorn
from aiohttp import web
from fastapi import FastAPI

from handinger_stream import AsyncHandinger
from handinger_stream.emulator import Emulator
from handinger_stream.relay import MemoryStore, NewEntry, Relay, RelayASGI, make_aiohttp_app
from tests.conftest import Canned, RawServer
from tests.helpers.emulators import emulator_fixture
from tests.nodejs import npm_project
from tests.relay_helpers import RelayProcess, chat_body, emulator_replay, free_port, read_sse

PROMPT = "What's the weather in Barcelona?"
INTEROP = Path(__file__).parent.parent / "interop" / "ai6"


emu = emulator_fixture("function", tokens_per_second=150, keepalive_interval=0.2)


@pytest.fixture
async def relay(emu: Emulator) -> AsyncIterator[Relay]:
    async with AsyncHandinger(api_key="sk-relay-key", base_url=emu.base_url) as client:
        async with Relay(client, MemoryStore(), lease_seconds=1.0) as relay:
            yield relay


async def serve_aiohttp(relay: Relay, **options: Any) -> tuple[web.AppRunner, str]:
    root = web.Application(middlewares=[web.normalize_path_middleware()])
    root.add_subapp("/relay/", make_aiohttp_app(relay, **options))
    runner = web.AppRunner(root, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/relay/"


@pytest.fixture(params=["aiohttp", "asgi"])
async def base(request: pytest.FixtureRequest, relay: Relay) -> AsyncIterator[str]:
    """The relay's URL, mounted under /relay/ in an aiohttp app or a FastAPI app (uvicorn)."""
    if request.param == "aiohttp":
        runner, url = await serve_aiohttp(relay, keepalive=0.05)
        yield url
        await runner.cleanup()
        return
    app = FastAPI()
    app.mount("/relay", RelayASGI(relay, keepalive=0.05))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}/relay/"
    server.should_exit = True
    await task


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def without_snapshots(chunks: list[Any]) -> list[Any]:
    return [c for c in chunks if not (isinstance(c, dict) and c.get("type") == "data-worker")]


async def test_a_chat_over_http(
    base: str, emu: Emulator, relay: Relay, http: aiohttp.ClientSession
) -> None:
    async with http.get(base) as page:
        assert page.status == 200 and "text/html" in page.headers["content-type"]
        assert 'src="./app.js"' in await page.text() or "app.js" in await page.text()
    async with http.get(base + "app.js") as script:
        assert script.status == 200 and "javascript" in script.headers["content-type"]
    async with http.get(base.rstrip("/"), allow_redirects=False) as bare:
        assert bare.status in (301, 307, 308) and bare.headers["location"].endswith("/relay/")
    async with http.get(base + "api/chat/c1") as history:
        # A chat never seen has no history: 404, which the page takes for an empty chat.
        assert history.status == 404 and (await history.json())["error"]["type"] == "not_found"
    async with http.get(base + "api/chat/c1/stream") as nothing:
        assert nothing.status == 204

    turn = await read_sse(http, "POST", base + "api/chat", json=chat_body("c1", PROMPT))
    assert turn.status == 200 and turn.complete
    headers = turn.headers
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert headers["cache-control"] == "no-cache"
    worker_id = headers["x-handinger-worker-id"]
    # An id on every event, increasing; the browser gets no Worker snapshots by default.
    ids = [int(i) for i, _ in turn.events if i is not None]
    assert len(ids) == len(turn.events) and ids == sorted(set(ids))
    replay = await emulator_replay(emu.base_url, worker_id)
    assert turn.chunks == without_snapshots(replay)
    async with http.get(base + "api/chat/c1/stream") as over:
        assert over.status == 204

    worker = await relay.client.workers.retrieve(worker_id)
    # The worker's messages, its question under the id the sender gave it.
    expected = [{**m, "id": "u-c1"} if m["role"] == "user" else m for m in worker.messages]
    async with http.get(base + "api/chat/c1") as history:
        assert await history.json() == {"id": "c1", "messages": expected}
    # The next message continues the same worker, in a new turn.
    second = await read_sse(
        http, "POST", base + "api/chat?snapshots=1", json=chat_body("c1", "And tomorrow?")
    )
    assert second.complete and second.headers["x-handinger-worker-id"] == worker_id
    assert int(second.events[0][0] or 0) > ids[-1]
    replay = await emulator_replay(emu.base_url, worker_id)
    assert second.chunks == replay[-len(second.chunks) :]
    async with http.get(base + "api/chat/c1") as history:
        messages = (await history.json())["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]


async def test_a_running_turn_is_served_to_late_joiners_and_resumers_with_keep_alives(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    async with (
        Emulator(tokens_per_second=20) as slow,
        AsyncHandinger(api_key="k", base_url=slow.base_url) as client,
        Relay(client) as relay,
    ):
        runner, base = await serve_aiohttp(relay, keepalive=0.02)
        try:
            first = await read_sse(
                http, "POST", base + "api/chat", json=chat_body("late", PROMPT), stop_after=4
            )
            readers = [read_sse(http, "GET", base + "api/chat/late/stream") for _ in range(20)]
            resumed = read_sse(
                http,
                "GET",
                base + "api/chat/late/stream",
                headers={"last-event-id": first.events[1][0] or ""},
            )
            *late, rest = await asyncio.gather(*readers, resumed)
            for reply in late:
                assert reply.complete and reply.events == late[0].events
            assert late[0].data[:4] == first.data
            assert rest.data == late[0].data[2:]
            # The worker pauses between tokens: the readers were kept alive meanwhile.
            assert all(reply.comments > 0 for reply in late)
        finally:
            await runner.cleanup()


async def test_a_reader_that_leaves_does_not_stop_the_turn(
    base: str, relay: Relay, emu: Emulator, http: aiohttp.ClientSession
) -> None:
    first = await read_sse(
        http, "POST", base + "api/chat", json=chat_body("leaves", PROMPT), stop_after=3
    )
    await relay.join("leaves")
    info = await relay.chat("leaves")
    assert info is not None and info.status == "completed" and not info.active
    worker = await relay.client.workers.retrieve(first.headers["x-handinger-worker-id"])
    assert worker.status == "completed" and worker.output_text
    entries = [e async for e in relay.read("leaves", after=0)]
    assert entries[-1].end and entries[-1].error is None
    replay = await emulator_replay(emu.base_url, worker.id)
    assert [msgspec.json.decode(e.data) for e in entries[:-1]] == replay


async def test_errors_are_json_with_the_right_status(
    base: str, relay: Relay, http: aiohttp.ClientSession
) -> None:
    async def error(method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        async with http.request(method, base + path, **kwargs) as response:
            assert response.headers["content-type"].startswith("application/json")
            body = await response.json()
            assert set(body["error"]) == {"message", "type", "status"}
            assert body["error"]["status"] == response.status
            return response.status, body["error"]

    as_json = {"content-type": "application/json"}
    assert (await error("POST", "api/chat", data=b"not json", headers=as_json))[0] == 400
    # Not declared JSON: what a page of another site could send without a preflight.
    plain = {"content-type": "text/plain"}
    assert (await error("POST", "api/chat", data=b"{}", headers=plain))[0] == 415
    assert (await error("POST", "api/chat", json={"id": "x", "messages": []}))[0] == 400
    no_text = {"id": "x", "messages": [{"role": "user", "parts": [{"type": "file"}]}]}
    assert (await error("POST", "api/chat", json=no_text))[0] == 400
    assert (await error("POST", "api/chat", json={**chat_body("x", "hi"), "budget": "huge"}))[
        0
    ] == 400
    assert (await error("GET", "api/chat"))[0] == 405
    assert (await error("DELETE", "api/chat/x"))[0] == 405
    assert (await error("GET", "nowhere"))[0] == 404
    status, body = await error("GET", "api/chat/x/stream", headers={"last-event-id": "abc"})
    assert status == 400 and "Last-Event-ID" in body["message"]
    # A second message while a turn runs: a conflict, and the turn is not disturbed.
    first = await read_sse(
        http, "POST", base + "api/chat", json=chat_body("busy", PROMPT), stop_after=1
    )
    assert first.status == 200
    status, body = await error("POST", "api/chat", json=chat_body("busy", "again"))
    assert status == 409 and body["type"] == "conflict"
    await relay.join("busy")


async def test_the_api_key_stays_on_the_server(http: aiohttp.ClientSession) -> None:
    secret = "sk-live-very-secret-key-42"
    async with (
        Emulator(api_key="the-right-key") as emulator,
        AsyncHandinger(api_key=secret, base_url=emulator.base_url) as client,
        Relay(client) as relay,
    ):
        runner, base = await serve_aiohttp(relay)
        try:
            async with http.post(base + "api/chat", json=chat_body("k", PROMPT)) as response:
                body = await response.text()
                assert response.status == 502 and "bad_gateway" in body
                assert secret not in body and secret not in str(response.headers)
            # The failed start left nothing running: the chat can be used again.
            info = await relay.chat("k")
            assert info is not None and not info.active
        finally:
            await runner.cleanup()


async def test_a_slow_reader_is_cut_and_resumes_while_the_others_get_everything(
    raw_server: RawServer, http: aiohttp.ClientSession
) -> None:
    # More bytes than the kernel's buffers hold (up to 4 MiB each way): the slow
    # reader's writes must block, whatever the socket autotuning makes of it.
    n = 30_000
    padding = b"x" * 500
    events = [
        b'id: %d\ndata: {"type":"text-delta","id":"t","delta":"word%d %s "}\n\n' % (i, i, padding)
        for i in range(n)
    ]
    raw_server.serve(
        Canned(
            [b"".join(events[i : i + 2000]) for i in range(0, n, 2000)] + [b"data: [DONE]\n\n"],
            headers={"content-type": "text/event-stream", "x-handinger-worker-id": "wrk_big"},
            delay=0.05,
        )
    )
    async with AsyncHandinger(api_key="k", base_url=raw_server.base_url) as client:
        async with Relay(client) as relay:
            runner, base = await serve_aiohttp(relay, write_timeout=0.5)
            try:
                stream = await client.workers.retrieve("wrk_big", stream=True)
                turn = await relay.attach(stream)
                assert turn.chat_id == "wrk_big"
                url = base + "api/chat/wrk_big/stream?compact=0"  # every event, as stored
                # A reader that takes (almost) nothing: a tiny window, and it does not read.
                slow = socket.socket()
                slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                slow.setblocking(False)
                port = int(base.split(":")[2].split("/")[0])
                await asyncio.get_running_loop().sock_connect(slow, ("127.0.0.1", port))
                slow.sendall(
                    b"GET /relay/api/chat/wrk_big/stream HTTP/1.1\r\n"
                    b"Host: x\r\nConnection: close\r\n\r\n"
                )
                # Read compacted (the default), the same turn comes in fewer, larger events.
                *fast, merged = await asyncio.gather(
                    *(read_sse(http, "GET", url) for _ in range(3)),
                    read_sse(http, "GET", url.replace("?compact=0", "")),
                )
                for reply in fast:
                    assert reply.complete and len(reply.events) == n
                assert merged.complete and len(merged.events) < n
                assert text_of(merged.chunks) == text_of(fast[0].chunks)
                assert merged.events[-1][0] == fast[0].events[-1][0]
                # The slow one was cut: what it has is a prefix, and a resume gets the rest.
                got = await _drain(slow)
                assert b"HTTP/1.1 200" in got and b"[DONE]" not in got
                body = got.split(b"\r\n\r\n", 1)[1]
                last = int(re.findall(rb"\bid: (\d+)\n", body)[-2])  # a whole event's id
                rest = await read_sse(http, "GET", url, headers={"last-event-id": str(last)})
                assert rest.complete and rest.data == fast[0].data[last:]
            finally:
                await runner.cleanup()


def text_of(chunks: list[Any]) -> str:
    return "".join(c["delta"] for c in chunks if c.get("type") == "text-delta")


async def _drain(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    out = b""
    with anyio.fail_after(30), sock:
        while chunk := await loop.sock_recv(sock, 1 << 16):
            out += chunk
    return out


@pytest.mark.parametrize(
    ("ids", "replayed_from"),
    [(["7", "8", "9", "10", "11", "12"], 0), (["a", "e", "c", "f", "b", "d"], 2)],
    ids=["decimal ids, the server starts over", "opaque ids, the server repeats the last"],
)
async def test_a_turn_taken_over_stores_each_event_once_however_the_server_resumes(
    raw_server: RawServer, ids: list[str], replayed_from: int
) -> None:
    def delta(i: int) -> bytes:
        return b'{"type":"text-delta","id":"t","delta":"w%d "}' % i

    # The worker's events; this server answers a resume from event `replayed_from` on.
    events = [b"id: %s\ndata: %s\n\n" % (ids[i].encode(), delta(i)) for i in range(len(ids))]
    raw_server.serve(
        Canned(
            [b"".join(events[replayed_from:]), b"data: [DONE]\n\n"],
            headers={"content-type": "text/event-stream", "x-handinger-worker-id": "wrk_1"},
        )
    )
    # A producer stored three events, then died: its lease expires, unrenewed.
    store = MemoryStore()
    lease = await store.begin_turn("c", holder="dead", ttl=0.2)
    await store.set_worker(lease, "wrk_1")
    await store.append(lease, [NewEntry(delta(i), ids[i]) for i in range(3)])
    await asyncio.sleep(0.3)
    async with AsyncHandinger(api_key="k", base_url=raw_server.base_url) as client:
        async with Relay(client, store, lease_seconds=1.0) as relay:
            with anyio.fail_after(10):
                entries = [entry async for entry in relay.read("c")]
    resumed = {k.lower(): v for k, v in raw_server.requests[-1]["headers"].items()}
    assert resumed["last-event-id"] == ids[2]
    assert [e.upstream_id for e in entries[:-1]] == ids
    assert [e.data for e in entries[:-1]] == [delta(i) for i in range(len(ids))]
    assert entries[-1].end and entries[-1].error is None


@pytest.fixture(scope="module")
def sdk_project() -> Path:
    project = npm_project(INTEROP)
    # A reader the way the AI SDK's chat transport is one: POST, then the SDK's own fold.
    (project / "relay_chat.mjs").write_text(
        "import { fold } from './sdk.mjs';\n"
        "const [url, chatId, text] = process.argv.slice(2);\n"
        "const response = await fetch(url, { method: 'POST',\n"
        "  headers: { 'content-type': 'application/json' },\n"
        "  body: JSON.stringify({ id: chatId, trigger: 'submit-message', messageId: undefined,\n"
        "    messages: [{ id: 'u1', role: 'user', parts: [{ type: 'text', text }] }] }) });\n"
        "const out = { status: response.status, workerId: response.headers.get('x-handinger-worker-id') };\n"
        "Object.assign(out, response.ok ? await fold(response.body) : { body: await response.text() });\n"
        "process.stdout.write(JSON.stringify(out) + '\\n');\n"
    )
    return project


async def test_the_ai_sdk_folds_the_relayed_stream_as_our_reducer_folds_the_worker(
    sdk_project: Path, base: str, relay: Relay, emu: Emulator
) -> None:
    for chat_id, prompt in (("sdk-1", PROMPT), ("sdk-2", "Write a report on SSE history")):
        with anyio.fail_after(60):
            result = await anyio.run_process(
                ["node", "relay_chat.mjs", base + "api/chat", chat_id, prompt], cwd=sdk_project
            )
        theirs = json.loads(result.stdout)
        assert theirs["status"] == 200 and theirs["errors"] == [], theirs
        stream = await relay.client.workers.retrieve(theirs["workerId"], stream=True)
        ours = await stream.get_final_worker()
        assert ours.messages[-1] == theirs["message"]


def test_the_relay_command_serves_the_page_and_a_chat_with_the_embedded_emulator() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDINGER_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "handinger_stream",
            "relay",
            *("--port", "0"),
            "--tokens-per-second=0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert process.stderr is not None
        said = process.stderr.readline()
        assert "embedded emulator" in said
        found = re.search(r"relay on (http://\S+/)", process.stderr.readline())
        assert found, said
        url = found.group(1)

        async def use() -> None:
            async with aiohttp.ClientSession() as http:
                async with http.get(url) as page:
                    assert page.status == 200
                turn = await read_sse(http, "POST", url + "api/chat", json=chat_body("cli", "Hi"))
                assert turn.complete and turn.chunks[-1]["type"] == "finish"

        asyncio.run(use())
    finally:
        process.terminate()
        assert process.wait(10) == 0
        assert process.stderr is not None
        assert "relay stopping" in process.stderr.read()
        process.stderr.close()


def test_the_relay_command_refuses_a_base_url_without_a_key() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDINGER_")}
    result = subprocess.run(
        [sys.executable, "-m", "handinger_stream", "relay", "--base-url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2 and "HANDINGER_API_KEY" in result.stderr


def test_the_relay_command_refuses_a_url_that_is_not_redis_s() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDINGER_")}
    result = subprocess.run(
        [sys.executable, "-m", "handinger_stream", "relay", "--port", "0", "--redis", "notaurl"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "redis://" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def relay_process(emu_thread: Emulator) -> Iterator[RelayProcess]:
    process = RelayProcess(base_url=emu_thread.base_url, redis_url=None)
    yield process
    process.stop()


@pytest.fixture
def emu_thread() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


async def test_a_relay_process_with_the_memory_store(
    relay_process: RelayProcess, emu_thread: Emulator, http: aiohttp.ClientSession
) -> None:
    turn = await read_sse(
        http,
        "POST",
        relay_process.url + "api/chat?snapshots=1&compact=0",
        json=chat_body("m", PROMPT),
    )
    assert turn.complete
    worker_id = turn.headers["x-handinger-worker-id"]
    assert turn.chunks == await emulator_replay(emu_thread.base_url, worker_id)


def test_a_relay_process_listens_with_a_backlog_for_a_crowd(relay_process: RelayProcess) -> None:
    # aiohttp's 128 drops the SYNs of a crowd joining at once (they retry 1, 3, 7 s
    # later). ss shows a listening socket's backlog as its Send-Q.
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed")
    port = relay_process.url.split(":")[2].split("/")[0]
    listing = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    if somaxconn <= 128:
        pytest.skip(f"net.core.somaxconn is {somaxconn}: no backlog over aiohttp's can show")
    assert int(listing[2]) == min(4096, somaxconn)
