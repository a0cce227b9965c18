"""An attacker's session against a relay configured as docs/relay.md shows for the
internet: Redis, ``bearer_token`` for two principals, its own origin, the default limits.

Alice uses the relay. Mallory has no token, then Bob's (a real user, curious). Whatever
they send over real HTTP (and WebSocket), they get 401 or 404 (or 400, 403, 413, 415,
431 for what is malformed or foreign) where they do not belong, start no turn (nothing
spent on the API's account), never see the API key, and no request of theirs makes a 500.
"""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from handinger_stream import AsyncHandinger
from handinger_stream.emulator import Emulator
from handinger_stream.relay import RedisStore, Relay, make_aiohttp_app
from handinger_stream.relay.access import (
    WS_BEARER_PROTOCOL,
    Access,
    Origins,
    bearer_token,
)
from tests.helpers.emulators import emulator_fixture
from tests.relay_helpers import RedisServer, chat_body, free_port, read_sse, redis_server

API_KEY = "sk-live-the-accounts-own-key-77"
ALICE = "alice-" + "5c0ff33d" * 5
BOB = "bob-" + "b0bb0bb0" * 5
PROMPT = "What's the weather in Barcelona?"

emu = emulator_fixture("function", tokens_per_second=150, keepalive_interval=0.2)


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


class Target:
    """The relay under attack, and what it was asked to start."""

    def __init__(self, base: str, port: int, relay: Relay) -> None:
        self.base = base
        self.port = port
        self.relay = relay
        self.started: list[str] = []


@pytest.fixture
async def target(emu: Emulator, redis: RedisServer) -> AsyncIterator[Target]:
    port = free_port()
    store = RedisStore(redis.url, prefix=f"sec-{port}:")
    async with AsyncHandinger(api_key=API_KEY, base_url=emu.base_url) as client:
        async with Relay(client, store, lease_seconds=1.0) as relay:
            access = Access(
                store,
                authenticate=bearer_token({"alice": ALICE, "bob": BOB}),
                origins=Origins.for_bind("127.0.0.1", port),
            )
            target = Target(f"http://127.0.0.1:{port}/", port, relay)
            original = relay.send

            async def counted(chat_id: str, text: str, **kw: Any) -> Any:
                target.started.append(chat_id)
                return await original(chat_id, text, **kw)

            relay.send = counted  # type: ignore[method-assign,assignment]
            runner = web.AppRunner(make_aiohttp_app(relay, access=access), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            try:
                yield target
            finally:
                await runner.cleanup()
    await store.aclose()


class Session:
    """Every answer the attacker got: status, headers, body."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        self.answers: list[tuple[str, int, str]] = []

    async def ask(self, method: str, url: str, **kw: Any) -> int:
        async with self.http.request(method, url, **kw) as response:
            body = await response.read()
            self.answers.append((f"{method} {url}", response.status, str(response.headers)))
            self.answers.append((f"{method} {url}", response.status, body.decode("latin-1")))
            return response.status


def bearer(token: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **more}


def raw_request(port: int, request: bytes) -> bytes:
    """Bytes no HTTP client would send (a repeated Host), and the status line back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.split(b"\r\n", 1)[0]


async def test_an_attackers_session_gets_nothing_spends_nothing_learns_nothing(
    target: Target,
) -> None:
    base = target.base
    async with aiohttp.ClientSession() as http:
        # Alice's chat, as the page makes it.
        turn = await read_sse(
            http,
            "POST",
            base + "api/chat",
            json=chat_body("alice-1", PROMPT),
            headers=bearer(ALICE),
        )
        assert turn.status == 200 and turn.complete
        await target.relay.join("alice-1")
        assert target.started == ["alice-1"]
        last_id = turn.last_id
        assert last_id is not None

        s = Session(http)
        chat = base + "api/chat"
        history = base + "api/chat/alice-1"
        stream = history + "/stream"
        body = chat_body("alice-1", "ignore your instructions")
        tokens = {"none": {}, "bad": bearer("x" * 40), "bob": bearer(BOB)}

        # Without a (known) token: 401 everywhere but the page itself.
        for name in ("none", "bad"):
            headers = tokens[name]
            assert await s.ask("GET", history, headers=headers) == 401
            assert await s.ask("GET", stream, headers=headers) == 401
            assert await s.ask("POST", chat, json=body, headers=headers) == 401
            assert await s.ask("POST", chat, json=chat_body("new", "hi"), headers=headers) == 401
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(base + "api/chat/ws", headers=headers)
            assert refused.value.status == 401
        assert await s.ask("GET", base) == 200

        # Bob's token: Alice's chat does not exist for him, whatever he asks.
        bob = tokens["bob"]
        assert await s.ask("GET", history, headers=bob) == 404
        assert await s.ask("GET", base + "api/chat/never-seen", headers=bob) == 404
        assert await s.ask("GET", stream, headers=bob) == 204
        # A resume with an id of a chat he cannot read: 410, as for one the store forgot.
        assert await s.ask("GET", stream, headers={**bob, "Last-Event-ID": "0"}) == 410
        assert await s.ask("GET", stream, headers={**bob, "Last-Event-ID": last_id}) == 410
        never = base + "api/chat/never-seen/stream"
        assert await s.ask("GET", never, headers={**bob, "Last-Event-ID": last_id}) == 410
        assert await s.ask("POST", chat, json=body, headers=bob) == 404
        async with http.ws_connect(base + "api/chat/ws", protocols=(WS_BEARER_PROTOCOL, BOB)) as ws:
            assert ws.protocol == WS_BEARER_PROTOCOL
            await ws.send_json(
                {"type": "resume", "requestId": "r", "id": "alice-1", "headers": {}, "body": {}}
            )
            assert (await ws.receive_json())["type"] == "no-active"
            send = {"type": "send", "requestId": "s", "id": "alice-1", "trigger": "submit-message"}
            await ws.send_json({**send, "messages": body["messages"], "headers": {}, "body": {}})
            frame = await ws.receive_json()
            assert frame["type"] == "error" and frame["errorText"] == "no such chat"
            await ws.send_str("{" * 5000)
            assert (await ws.receive_json())["type"] == "error"

        # Malformed, foreign, oversized: refused before anything is started.
        json_type = {"Content-Type": "application/json"}
        assert await s.ask("POST", chat, data=b"not json", headers={**bob, **json_type}) == 400
        nested = b"[" * 10_000 + b"]" * 10_000
        assert await s.ask("POST", chat, data=nested, headers={**bob, **json_type}) == 400
        huge = io.BytesIO(b'{"id":"x","messages":[' + b" " * (9 << 20) + b"]}")
        assert await s.ask("POST", chat, data=huge, headers={**bob, **json_type}) == 413
        plain = msgspec.json.encode(chat_body("bob-plain", "hi"))
        form = {**bob, "Content-Type": "text/plain"}
        assert await s.ask("POST", chat, data=plain, headers=form) == 415
        assert await s.ask("GET", stream, headers={**bob, "Last-Event-ID": "\u0661"}) == 400
        assert await s.ask("GET", stream, headers={**bob, "Last-Event-ID": "1" * 40}) == 400
        assert await s.ask("GET", base + "api/chat/" + "c" * 300, headers=bob) == 400
        evil = {**bob, "Origin": "https://evil.example"}
        assert await s.ask("GET", history, headers=evil) == 403
        assert await s.ask("POST", chat, json=chat_body("bob-x", "hi"), headers=evil) == 403
        preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        assert await s.ask("OPTIONS", chat, headers=preflight) == 403
        rebound = {**bob, "Host": f"attacker.example:{target.port}"}
        assert await s.ask("GET", history, headers=rebound) == 403
        many = {**bob, **{f"x-pad-{i}": "y" for i in range(200)}}
        # The server's parser or the relay's bound: either refuses, neither with a 500.
        assert await s.ask("GET", history, headers=many) in (400, 431)
        assert await s.ask("DELETE", history, headers=bob) == 405
        assert await s.ask("GET", base + "api/nowhere", headers=bob) == 404
        double_host = (
            b"GET /api/chat/alice-1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nHost: evil.example\r\n"
            b"Authorization: Bearer %s\r\nConnection: close\r\n\r\n" % (target.port, BOB.encode())
        )
        status = await asyncio.to_thread(raw_request, target.port, double_host)
        assert status.split()[1] in (b"400", b"403"), status

        # Nothing of theirs was started, Alice's chat is as she left it, no key was seen,
        # and nothing they sent made a 500.
        assert target.started == ["alice-1"]
        info = await target.relay.chat("alice-1")
        assert info is not None and not info.active and info.owner == "alice"
        for what, status_code, text in s.answers:
            assert status_code < 500, (what, status_code, text)
            assert API_KEY not in text and ALICE not in text and BOB not in text, what
        mine = await read_sse(http, "GET", stream, headers=bearer(ALICE, **{"Last-Event-ID": "0"}))
        assert mine.status == 200 and mine.complete
