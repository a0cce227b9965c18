"""The relay's WebSocket endpoint (ai 7's ``WebSocketChatTransport`` protocol) over loopback:
aiohttp's WebSocket client against the aiohttp sub-app and the ASGI app under uvicorn,
MemoryStore and RedisStore; late joiners, ``lastSequence``, abort, bad and oversize
frames, foreign origins, silent sockets; and ai 7's own transport class in Node.

What a reader got is checked against the emulator's own replay of the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import uvicorn
from aiohttp import web
from fastapi import FastAPI

from handinger_stream import AsyncHandinger
from handinger_stream.emulator import Emulator
from handinger_stream.relay import (
    MemoryStore,
    RedisStore,
    Relay,
    RelayASGI,
    WSLimits,
    make_aiohttp_app,
)
from handinger_stream.relay.http import RelayHTTP
from handinger_stream.relay.ws import BadFrame, RelayWS, decode_request, origin_allowed
from tests.helpers.emulators import emulator_fixture
from tests.nodejs import node22, npm_project
from tests.relay_helpers import RedisServer, emulator_replay, free_port, redis

__all__ = ["redis"]  # a fixture of tests/relay_helpers.py, used here

PROMPT = "What's the weather in Barcelona?"
LONG = "Write a report on SSE history"
NODE_PROJECT = Path(__file__).parent / "ws_node"

# A turn takes a second or two at this pace: long enough to join it, resume it, abort it.
paced = emulator_fixture(tokens_per_second=60, keepalive_interval=0.2)

Serve = Callable[..., contextlib.AbstractAsyncContextManager[str]]


@contextlib.asynccontextmanager
async def serve_aiohttp(relay: Relay, **options: Any) -> AsyncIterator[str]:
    root = web.Application(middlewares=[web.normalize_path_middleware()])
    root.add_subapp("/relay/", make_aiohttp_app(relay, **options))
    runner = web.AppRunner(root, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/relay/"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serve_asgi(relay: Relay, **options: Any) -> AsyncIterator[str]:
    # uvicorn speaks WebSocket through wsproto (or websockets), an optional dependency.
    pytest.importorskip("wsproto", reason="uvicorn needs wsproto for WebSockets")
    port = free_port()
    app = FastAPI()
    app.mount("/relay", RelayASGI(relay, **options))
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="wsproto"
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/relay/"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(params=["aiohttp", "asgi"])
def serve(request: pytest.FixtureRequest) -> Serve:
    """Serve a relay through one adapter or the other: ``async with serve(relay) as base``."""
    return serve_aiohttp if request.param == "aiohttp" else serve_asgi


@pytest.fixture
async def relay(paced: Emulator) -> AsyncIterator[Relay]:
    async with AsyncHandinger(api_key="sk-relay-key", base_url=paced.base_url) as client:
        async with Relay(client, MemoryStore(), lease_seconds=1.0) as relay:
            yield relay


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Chat:
    """One WebSocket of the protocol: requests out, every answer kept by its requestId."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.answers: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._heard = asyncio.Event()
        self._reading = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            frame = json.loads(message.data)
            self.answers[frame["requestId"]].append(frame)
            self._heard.set()
        self._heard.set()

    async def request(self, frame: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def send(self, request_id: str, chat_id: str, text: str = PROMPT) -> None:
        await self.request(
            {
                "type": "send",
                "requestId": request_id,
                "id": chat_id,
                "trigger": "submit-message",
                "messages": [
                    {
                        "id": f"u-{chat_id}",
                        "role": "user",
                        "parts": [{"type": "text", "text": text}],
                    }
                ],
                "headers": {},
                "body": {},
            }
        )

    async def resume(self, request_id: str, chat_id: str, last: int | None = None) -> None:
        frame: dict[str, Any] = {
            "type": "resume",
            "requestId": request_id,
            "id": chat_id,
            "headers": {},
            "body": {},
        }
        if last is not None:
            frame["lastSequence"] = last
        await self.request(frame)

    async def until(self, ready: Callable[[], bool], within: float = 30.0) -> None:
        with anyio.fail_after(within):
            while not ready():
                self._heard.clear()
                if self._reading.done():
                    assert ready(), "the socket closed first"
                    return
                await self._heard.wait()

    async def answer(self, request_id: str, within: float = 30.0) -> list[dict[str, Any]]:
        """The request's frames, once it has its last (``end``, ``error``, ``no-active``)."""
        frames = self.answers[request_id]
        await self.until(lambda: bool(frames) and frames[-1]["type"] in LAST, within)
        return frames

    async def chunks(self, request_id: str, count: int) -> list[dict[str, Any]]:
        await self.until(lambda: len(chunks_of(self.answers[request_id])) >= count)
        return chunks_of(self.answers[request_id])

    async def closed(self, within: float = 10.0) -> int | None:
        """Wait for the relay to close the socket: its close code."""
        with anyio.fail_after(within):
            await self._reading
        return self.ws.close_code

    async def aclose(self) -> None:
        await self.ws.close()
        await self._reading


LAST = ("end", "error", "no-active")


def chunks_of(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == "chunk"]


def without_snapshots(chunks: list[Any]) -> list[Any]:
    return [c for c in chunks if not (isinstance(c, dict) and c.get("type") == "data-worker")]


@contextlib.asynccontextmanager
async def connect(
    http: aiohttp.ClientSession, base: str, query: str = "", **kwargs: Any
) -> AsyncIterator[Chat]:
    ws = await http.ws_connect(base.replace("http", "ws", 1) + "api/chat/ws" + query, **kwargs)
    chat = Chat(ws)
    try:
        yield chat
    finally:
        await chat.aclose()


async def replay_of(emu: Emulator, relay: Relay, chat_id: str) -> list[Any]:
    """What the worker sent, less its snapshots: what a reader of the chat must get."""
    info = await relay.chat(chat_id)
    assert info is not None and info.worker_id
    return without_snapshots(await emulator_replay(emu.base_url, info.worker_id))


def well_numbered(frames: list[dict[str, Any]], first: int = 0) -> bool:
    """``start``, chunks numbered from ``first`` without a gap, ``end``."""
    chunks = chunks_of(frames)
    return (
        frames[0]["type"] == "start"
        and frames[-1]["type"] == "end"
        and [f["sequence"] for f in chunks] == list(range(first, first + len(chunks)))
        and len(chunks) == len(frames) - 2
    )


# -- the protocol, on both adapters -----------------------------------------------------


async def test_a_turn_over_the_socket_is_the_workers_stream(
    serve: Serve, relay: Relay, paced: Emulator, http: aiohttp.ClientSession
) -> None:
    async with serve(relay) as base:
        async with http.get(base + "api/chat/ws") as plain:
            assert plain.status == 426 and plain.headers["upgrade"] == "websocket"
        async with connect(http, base) as chat:
            await chat.send("r1", "ws-1")
            frames = await chat.answer("r1")
            assert well_numbered(frames)
            assert [f["chunk"] for f in chunks_of(frames)] == await replay_of(paced, relay, "ws-1")
            # The turn is over: a resume finds nothing running.
            await chat.resume("r2", "ws-1")
            assert await chat.answer("r2") == [{"type": "no-active", "requestId": "r2"}]
            await chat.resume("r3", "never-seen")
            assert (await chat.answer("r3"))[0]["type"] == "no-active"
            # The same socket carries the chat's next turn.
            await chat.send("r4", "ws-1", "And tomorrow?")
            assert well_numbered(await chat.answer("r4"))


async def test_late_joiners_get_the_whole_turn_and_last_sequence_exactly_the_rest(
    serve: Serve, relay: Relay, paced: Emulator, http: aiohttp.ClientSession
) -> None:
    async with serve(relay) as base:
        async with connect(http, base) as first, connect(http, base) as other:
            await first.send("s", "late", LONG)
            head = await first.chunks("s", 6)
            # Late, on another socket: the running turn from its first chunk.
            await other.resume("all", "late")
            # And a resume after the fourth chunk (sequence 3): exactly what follows.
            await other.resume("rest", "late", last=3)
            whole = await first.answer("s")
            joined = await other.answer("all")
            rest = await other.answer("rest")
        replay = await replay_of(paced, relay, "late")
        assert [f["chunk"] for f in chunks_of(whole)] == replay
        assert well_numbered(joined) and chunks_of(joined) == [
            {**f, "requestId": "all"} for f in chunks_of(whole)
        ]
        assert chunks_of(joined)[:6] == [{**f, "requestId": "all"} for f in head[:6]]
        assert well_numbered(rest, first=4)
        assert [f["chunk"] for f in chunks_of(rest)] == replay[4:]


async def test_two_chats_on_one_socket_and_an_abort_stops_only_its_answer(
    serve: Serve, relay: Relay, paced: Emulator, http: aiohttp.ClientSession
) -> None:
    async with serve(relay) as base, connect(http, base) as chat:
        await chat.send("a", "mux-a", LONG)
        await chat.send("b", "mux-b", PROMPT)
        got = await chat.chunks("a", 3)
        await chat.request({"type": "abort", "requestId": "a"})
        b = await chat.answer("b")
        assert well_numbered(b)
        assert [f["chunk"] for f in chunks_of(b)] == await replay_of(paced, relay, "mux-b")
        # The abort stopped the answer, not the turn: the worker went on to its end.
        await relay.join("mux-a")
        replay = await replay_of(paced, relay, "mux-a")
        a = chat.answers["a"]
        assert not any(f["type"] in LAST for f in a)
        assert len(chunks_of(a)) < len(replay)
        entries = [e async for e in relay.read("mux-a")]
        assert entries[-1].end and entries[-1].error is None
        # An abort of what is not running is nothing; the socket serves on.
        await chat.request({"type": "abort", "requestId": "a"})
        await chat.request({"type": "abort", "requestId": "never"})
        await chat.send("c", "mux-a", "And tomorrow?")
        assert well_numbered(await chat.answer("c"))
        assert len(got) >= 3


async def test_bad_frames_get_an_error_answer_and_the_socket_serves_on(
    serve: Serve, relay: Relay, http: aiohttp.ClientSession
) -> None:
    async with serve(relay, ws_limits=WSLimits(max_requests=2)) as base:
        async with connect(http, base) as chat:
            await chat.request({"type": "send", "requestId": "no-messages", "id": "x"})
            await chat.ws.send_str("not json")
            await chat.ws.send_str("[1, 2]")
            await chat.request({"type": "hello", "requestId": "odd"})
            await chat.resume("minus", "x", last=-1)
            await chat.resume("bad-id", "a/b")
            await chat.request(
                {
                    "type": "resume",
                    "requestId": "nohead",
                    "id": "x",
                    "headers": {"a": 1},
                    "body": {},
                }
            )
            await chat.send("empty", "x", "   ")
            for request_id in ("no-messages", "odd", "minus", "bad-id", "nohead", "empty"):
                frames = await chat.answer(request_id)
                assert [f["type"] for f in frames] == ["error"], (request_id, frames)
                assert frames[0]["errorText"] and "Traceback" not in frames[0]["errorText"]
            unnamed = await chat.answer("")
            assert [f["type"] for f in unnamed] == ["error", "error"]
            # Requests running at once are bounded; a requestId runs once at a time.
            await chat.send("turn", "bounded", LONG)
            await chat.chunks("turn", 1)
            await chat.resume("join", "bounded")
            await chat.chunks("join", 1)
            await chat.resume("join", "bounded")
            await chat.resume("third", "bounded")
            third = await chat.answer("third")
            assert "too many requests" in third[0]["errorText"]
            await chat.until(lambda: any(f["type"] == "error" for f in chat.answers["join"]))
            assert "already running" in chat.answers["join"][-1]["errorText"]
            await chat.answer("turn")
            # The turn over, the socket takes requests again.
            await chat.resume("after", "bounded", last=0)
            assert (await chat.answer("after"))[0]["type"] == "no-active"
            # A second message while the chat's turn runs: the relay's conflict, as an error.
            await chat.send("one", "busy", LONG)
            await chat.chunks("one", 1)
            await chat.send("two", "busy", "again")
            two = await chat.answer("two")
            assert two[0]["type"] == "error" and "running" in two[0]["errorText"]
            await chat.answer("one")


async def test_an_oversize_frame_closes_the_socket_with_1009(
    serve: Serve, relay: Relay, http: aiohttp.ClientSession
) -> None:
    async with serve(relay, ws_limits=WSLimits(max_frame=4096)) as base:
        async with connect(http, base) as chat:
            await chat.send("fits", "small", "x" * 1000)
            await chat.answer("fits")
            await chat.send("big", "big", "x" * 5000)
            assert await chat.closed() == 1009
            assert "big" not in chat.answers


async def test_the_origin_must_be_the_relays_own_or_allowed(
    serve: Serve, relay: Relay, http: aiohttp.ClientSession
) -> None:
    async with serve(relay, allowed_origins=["https://app.example"]) as base:
        url = base.replace("http", "ws", 1) + "api/chat/ws"
        host = base.split("/")[2]
        for foreign in ("http://evil.example", f"https://{host}.evil.example", "null"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url, origin=foreign)
            assert refused.value.status == 403
        for origin in (f"http://{host}", "https://app.example", None):
            ws = await http.ws_connect(url, origin=origin) if origin else await http.ws_connect(url)
            await ws.close()


async def test_a_silent_socket_is_closed(
    serve: Serve, relay: Relay, http: aiohttp.ClientSession
) -> None:
    limits = WSLimits(handshake_timeout=0.3, idle_timeout=0.5)
    async with serve(relay, ws_limits=limits) as base:
        async with connect(http, base) as mute:
            assert await mute.closed() == 1008  # never said a thing
        async with connect(http, base) as idle:
            await idle.resume("r", "nothing")
            await idle.answer("r")
            assert await idle.closed() == 1000


def test_frames_and_origins_without_a_network() -> None:
    assert decode_request('{"type":"resume","requestId":"r","id":"c","headers":{},"body":{}}')
    own = {"host": "127.0.0.1", "origin": "http://127.0.0.1:80"}
    assert origin_allowed(own, ())
    assert origin_allowed({"host": "localhost:443", "origin": "https://localhost"}, ())
    assert not origin_allowed({"host": "127.0.0.1:8788", "origin": "http://127.0.0.1"}, ())
    # A domain name equal in Host and Origin proves nothing: a site's name pointed at the
    # relay's address (DNS rebinding) gives exactly that. Such an origin must be listed.
    rebound = {"host": "evil.example:8788", "origin": "http://evil.example:8788"}
    assert not origin_allowed(rebound, ())
    assert origin_allowed(rebound, ("http://evil.example:8788",))
    assert not origin_allowed({"host": "relay.example", "origin": "null"}, ())
    assert origin_allowed({"host": "relay.example", "origin": "null"}, ("*",))
    assert origin_allowed({"host": "x", "origin": "https://App.Example"}, ("https://app.example",))


# -- RedisStore: one relay's turn, read through another -------------------------------


async def test_over_redis_a_turn_sent_to_one_relay_is_joined_and_resumed_at_another(
    redis: RedisServer, paced: Emulator, http: aiohttp.ClientSession
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            AsyncHandinger(api_key="sk-relay-key", base_url=paced.base_url)
        )
        bases = []
        prefix = f"ws-{free_port()}:"  # the two relays share the chats under it
        for serve_one in (serve_aiohttp, serve_asgi):
            store = RedisStore(redis.url, prefix=prefix)
            stack.push_async_callback(store.aclose)
            relay = await stack.enter_async_context(Relay(client, store, lease_seconds=1.0))
            bases.append(await stack.enter_async_context(serve_one(relay)))
        a, b = bases
        first = await stack.enter_async_context(connect(http, a))
        other = await stack.enter_async_context(connect(http, b, "?snapshots=1"))
        await first.send("s", "shared", LONG)
        await first.chunks("s", 5)
        await other.resume("late", "shared")
        await other.resume("rest", "shared", last=2)
        whole, late, rest = await asyncio.gather(
            first.answer("s"), other.answer("late"), other.answer("rest")
        )
        info = await relay.chat("shared")
        assert info is not None and info.worker_id
        everything = await emulator_replay(paced.base_url, info.worker_id)
        assert [f["chunk"] for f in chunks_of(whole)] == without_snapshots(everything)
        # With ?snapshots=1 the worker's snapshots are chunks too, numbered like any.
        assert well_numbered(late) and [f["chunk"] for f in chunks_of(late)] == everything
        assert (
            well_numbered(rest, first=3) and [f["chunk"] for f in chunks_of(rest)] == everything[3:]
        )


# -- ai 7's own WebSocketChatTransport ------------------------------------------------


@pytest.fixture(scope="module")
def node_project() -> tuple[str, Path]:
    return node22(), npm_project(NODE_PROJECT)


async def run_node(node: tuple[str, Path], *args: str) -> dict[str, Any]:
    binary, project = node
    with anyio.fail_after(90):
        result = await anyio.run_process([binary, "ws_chat.mjs", *args], cwd=project, check=False)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    out: dict[str, Any] = json.loads(result.stdout)
    return out


@pytest.mark.slow
async def test_ai7s_transport_folds_the_relayed_turns_into_the_stored_history(
    node_project: tuple[str, Path], relay: Relay, http: aiohttp.ClientSession
) -> None:
    async with serve_aiohttp(relay) as base:
        ws_url = base.replace("http", "ws", 1) + "api/chat/ws"

        async def history(chat_id: str) -> list[Any]:
            async with http.get(f"{base}api/chat/{chat_id}") as response:
                messages: list[Any] = (await response.json())["messages"]
                return messages

        one = await run_node(node_project, "turn", ws_url, "node-1")
        assert one["sockets"] == 1
        got = one["chats"]["node-1"]
        assert got["errors"] == [] and got["message"] == (await history("node-1"))[-1]

        two = await run_node(node_project, "multiplex", ws_url, "node-a", "node-b")
        assert two["sockets"] == 1  # two chats, one socket
        for chat_id in ("node-a", "node-b"):
            got = two["chats"][chat_id]
            assert got["errors"] == [] and got["message"] == (await history(chat_id))[-1]

        resumed = await run_node(node_project, "resume", ws_url, "node-r")
        assert resumed["sockets"] == 2  # the reconnect came from a transport of its own
        got = resumed["chats"]["node-r"]
        assert got["before"] == 5 and got["chunks"] > 5
        assert got["errors"] == [] and got["message"] == (await history("node-r"))[-1]


def test_a_frame_nested_past_the_decoders_depth_is_a_bad_frame() -> None:
    deep = b'{"type":"abort","requestId":"r","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(BadFrame, match="nested too deep"):
        decode_request(deep)


async def test_a_peer_that_stops_reading_after_a_bad_frame_is_cut() -> None:
    """The error frame is written under the slow-reader watch, as every other write: a
    peer that sends nonsense and then reads nothing does not hold the session."""

    class Stuck:
        def __init__(self) -> None:
            self.frames = [b"not json"]
            self.closed: list[int] = []

        async def receive(self, timeout: float) -> bytes:  # noqa: ASYNC109 (the socket protocol's)
            if self.frames:
                return self.frames.pop(0)
            await asyncio.sleep(timeout)
            raise TimeoutError

        async def send(self, texts: list[bytes]) -> None:
            await asyncio.Event().wait()  # never read: the socket's buffer stays full

        async def close(self, code: int, reason: str) -> None:
            self.closed.append(code)

    async with AsyncHandinger(api_key="k", base_url="http://127.0.0.1:9") as client:
        http = RelayHTTP(Relay(client), write_timeout=0.2)
        socket = Stuck()
        with anyio.fail_after(10):  # a hang guard: it ends at the write timeout
            await RelayWS(http, limits=WSLimits(idle_timeout=60)).serve(socket)
        await http.aclose()
    assert socket.closed  # cut, not left open


def test_origin_allowed_spells_origins_as_access_origins_does() -> None:
    from handinger_stream.relay.access import Origins

    host = {"host": "relay.example"}
    for listed, sent in [
        ("https://App.example/", "https://app.example"),
        ("https://app.example:443", "https://app.example"),
        ("https://app.example", "https://APP.example:443"),
    ]:
        # Whatever Origins takes as the same site, the WebSocket check does too.
        assert Origins([listed]).is_own(sent)
        assert origin_allowed({**host, "origin": sent}, (listed,))
    for sent in ("https://app.example/path", "https://u:p@app.example", "null", "app.example"):
        assert not Origins(["https://app.example"]).is_own(sent)
        assert not origin_allowed({**host, "origin": sent}, ("https://app.example",))
    # An app's own scheme is no web origin: let in only exactly as listed.
    extension = "chrome-extension://abcdefghijklmnop"
    assert origin_allowed({**host, "origin": extension}, (extension,))
    assert not origin_allowed({**host, "origin": extension}, ("https://app.example",))
