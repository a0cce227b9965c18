"""The relay's access control wired into both adapters over loopback HTTP, and the relay's
hardening findings (issue 21), each with the request that showed it: ownership and the
answers that hide a chat, limits, public error texts, upstream failures that wedged a
chat, a Redis that refuses writes, body and header bounds, the sender's message id."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import uvicorn
from aiohttp import web
from fastapi import FastAPI

from handinger_stream import AsyncHandinger
from handinger_stream.emulator import Emulator
from handinger_stream.relay import MemoryStore, RedisStore, Relay, RelayASGI, make_aiohttp_app
from handinger_stream.relay.access import (
    ANONYMOUS,
    WS_BEARER_PROTOCOL,
    Access,
    BadRequest,
    ChatRequest,
    Forbidden,
    Limits,
    Origins,
    RequestInfo,
    TurnOptions,
    Unauthorized,
    bearer_token,
)
from handinger_stream.relay.core import task_id_for
from handinger_stream.relay.errors import StoreFullError
from handinger_stream.relay.http import RelayHTTP
from handinger_stream.relay.store import Entry
from handinger_stream.relay.ws import RelayWS
from tests.conftest import Canned, RawServer
from tests.helpers.emulators import emulator_fixture
from tests.relay_helpers import (
    RedisServer,
    RelayProcess,
    chat_body,
    free_port,
    read_sse,
    redis_server,
)

ALICE = "alice-token-" + "0123456789abcdef" * 2
BOB = "bob-token-" + "fedcba9876543210" * 2
PROMPT = "What's the weather in Barcelona?"

emu = emulator_fixture("function", tokens_per_second=150, keepalive_interval=0.2)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Served:
    """A relay served on loopback (aiohttp or uvicorn), with its base URL and port."""

    def __init__(self, base: str, port: int) -> None:
        self.base = base
        self.port = port
        self.origin = f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def serve(relay: Relay, adapter: str = "aiohttp", **options: Any) -> AsyncIterator[Served]:
    """The relay mounted at /relay/ on a free loopback port; ``access`` may be a callable of
    the port (its Origins need it)."""
    port = free_port()
    make = options.pop("access", None)
    if callable(make):
        options["access"] = make(port)
    elif make is not None:
        options["access"] = make
    if adapter == "aiohttp":
        root = web.Application(middlewares=[web.normalize_path_middleware()])
        root.add_subapp("/relay/", make_aiohttp_app(relay, **options))
        runner = web.AppRunner(root, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield Served(f"http://127.0.0.1:{port}/relay/", port)
        finally:
            await runner.cleanup()
        return
    app = FastAPI()
    app.mount("/relay", RelayASGI(relay, **options))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}/relay/", port)
    finally:
        server.should_exit = True
        await task


def guarded(store: Any, **kw: Any) -> Any:
    """An Access for two principals, alice and bob, on the relay's own loopback origin."""

    def make(port: int) -> Access:
        return Access(
            store,
            authenticate=bearer_token({"alice": ALICE, "bob": BOB}),
            origins=Origins.for_bind("127.0.0.1", port, allow=["https://app.example"]),
            **kw,
        )

    return make


@pytest.fixture
async def relay(emu: Emulator) -> AsyncIterator[Relay]:
    async with AsyncHandinger(api_key="sk-relay-key", base_url=emu.base_url) as client:
        async with Relay(client, MemoryStore(), lease_seconds=1.0) as relay:
            yield relay


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def status_of(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> int:
    async with http.request(method, url, **kw) as response:
        await response.read()
        return response.status


# -- 1. authentication, ownership, CORS ------------------------------------------------


@pytest.mark.parametrize("adapter", ["aiohttp", "asgi"])
async def test_every_route_but_the_page_needs_a_token_and_a_chat_is_its_starters(
    relay: Relay, http: aiohttp.ClientSession, adapter: str
) -> None:
    async with serve(relay, adapter, access=guarded(relay.store)) as s:
        base = s.base
        # The page loads without credentials (its token is in the URL's fragment).
        assert await status_of(http, "GET", base) == 200
        for method, path in [("GET", "api/chat/c1"), ("GET", "api/chat/c1/stream")]:
            async with http.request(method, base + path) as response:
                assert response.status == 401
                assert response.headers["www-authenticate"].startswith("Bearer")
        async with http.post(base + "api/chat", json=chat_body("c1", PROMPT)) as response:
            assert response.status == 401
        # A chat never seen: 404 history, 204 resume.
        assert await status_of(http, "GET", base + "api/chat/c1", headers=auth(ALICE)) == 404
        assert await status_of(http, "GET", base + "api/chat/c1/stream", headers=auth(ALICE)) == 204
        turn = await read_sse(
            http, "POST", base + "api/chat", json=chat_body("c1", PROMPT), headers=auth(ALICE)
        )
        assert turn.status == 200 and turn.complete
        await relay.join("c1")
        async with http.get(base + "api/chat/c1", headers=auth(ALICE)) as history:
            assert history.status == 200 and len((await history.json())["messages"]) == 2
        # Bob: alice's chat does not exist for him, on every route.
        assert await status_of(http, "GET", base + "api/chat/c1", headers=auth(BOB)) == 404
        assert await status_of(http, "GET", base + "api/chat/c1/stream", headers=auth(BOB)) == 204
        resume = {**auth(BOB), "Last-Event-ID": "1"}
        assert await status_of(http, "GET", base + "api/chat/c1/stream", headers=resume) == 410
        never = {**auth(ALICE), "Last-Event-ID": "1"}
        assert await status_of(http, "GET", base + "api/chat/c9/stream", headers=never) == 410
        body = chat_body("c1", "mine now?")
        assert await status_of(http, "POST", base + "api/chat", json=body, headers=auth(BOB)) == 404


async def test_hosts_origins_content_types_and_cors(
    relay: Relay, http: aiohttp.ClientSession
) -> None:
    async with serve(relay, access=guarded(relay.store)) as s:
        url = s.base + "api/chat/c1"
        # DNS rebinding: a name the relay is not served under.
        rebound = {**auth(ALICE), "Host": f"evil.example:{s.port}"}
        assert await status_of(http, "GET", url, headers=rebound) == 403
        assert await status_of(http, "GET", s.base, headers={"Host": "evil.example"}) == 403
        # A page of another site: refused; of an allowed one: its CORS headers.
        foreign = {**auth(ALICE), "Origin": "https://evil.example"}
        assert await status_of(http, "GET", url, headers=foreign) == 403
        allowed = {**auth(ALICE), "Origin": "https://app.example"}
        async with http.get(url, headers=allowed) as response:
            assert response.status == 404  # never seen: still with CORS, so the page reads it
            assert response.headers["access-control-allow-origin"] == "https://app.example"
        async with http.options(
            s.base + "api/chat",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        ) as preflight:
            assert preflight.status == 204
            assert "POST" in preflight.headers["access-control-allow-methods"]
            assert "Access-Control-Request-Method" in preflight.headers["vary"]
            assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        # A cross-site form's text/plain POST (no preflight): refused before anything else.
        text = {**auth(ALICE), "Content-Type": "text/plain"}
        data = msgspec_json(chat_body("c2", PROMPT))
        assert await status_of(http, "POST", s.base + "api/chat", data=data, headers=text) == 415
        assert await relay.chat("c2") is None


def msgspec_json(value: Any) -> bytes:
    import msgspec

    return msgspec.json.encode(value)


async def test_without_access_a_domain_named_host_cannot_open_the_websocket(
    relay: Relay, http: aiohttp.ClientSession
) -> None:
    async with serve(relay) as s:
        rebound = {"Host": f"evil.example:{s.port}", "Origin": f"http://evil.example:{s.port}"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(s.base + "api/chat/ws", headers=rebound)
        assert refused.value.status == 403


@pytest.mark.parametrize("adapter", ["aiohttp", "asgi"])
async def test_the_websocket_takes_its_token_as_a_subprotocol_and_never_echoes_it(
    relay: Relay, http: aiohttp.ClientSession, adapter: str
) -> None:
    async with serve(relay, adapter, access=guarded(relay.store)) as s:
        url = s.base + "api/chat/ws"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url)
        assert refused.value.status == 401
        async with http.ws_connect(url, protocols=(WS_BEARER_PROTOCOL, ALICE)) as ws:
            assert ws.protocol == WS_BEARER_PROTOCOL
            send = {"type": "send", "requestId": "r1", "id": "w1", "trigger": "submit-message"}
            await ws.send_json(
                {**send, "messages": chat_body("w1", "Hi")["messages"], "headers": {}, "body": {}}
            )
            while (frame := await ws.receive_json())["type"] not in ("end", "error"):
                pass
            assert frame["type"] == "end"
        async with http.ws_connect(url, protocols=(WS_BEARER_PROTOCOL, BOB)) as ws:
            resume = {"type": "resume", "requestId": "r2", "id": "w1", "headers": {}, "body": {}}
            # Bob sees no turn of alice's chat, running or not; his send is refused as 404.
            await ws.send_json(resume)
            assert (await ws.receive_json())["type"] == "no-active"
            await ws.send_json(
                {
                    **send,
                    "requestId": "r3",
                    "messages": chat_body("w1", "Hi")["messages"],
                    "headers": {},
                    "body": {},
                }
            )
            frame = await ws.receive_json()
            assert frame["type"] == "error" and frame["errorText"] == "no such chat"


# -- 2. policy and limits -----------------------------------------------------------------


async def test_limits_answer_429_with_retry_after_and_the_policy_decides_the_budget(
    relay: Relay, http: aiohttp.ClientSession
) -> None:
    asked: list[str | None] = []

    async def policy(principal: str, info: RequestInfo, chat: ChatRequest) -> TurnOptions:
        asked.append(chat.budget)
        return TurnOptions(budget="low")

    sent: list[Any] = []
    original = relay.send

    async def spy(chat_id: str, text: str, **kw: Any) -> Any:
        sent.append(kw.get("budget"))
        return await original(chat_id, text, **kw)

    relay.send = spy  # type: ignore[method-assign,assignment]
    limits = Limits(concurrent_turns=1, turns_per_minute=2, chats=10)
    async with serve(relay, access=guarded(relay.store, limits=limits, policy=policy)) as s:
        body = {**chat_body("l1", PROMPT), "budget": "unlimited"}
        first = await read_sse(
            http, "POST", s.base + "api/chat", json=body, headers=auth(ALICE), stop_after=1
        )
        assert first.status == 200
        assert asked == ["unlimited"] and sent == ["low"]  # asked for, not given
        async with http.post(
            s.base + "api/chat", json=chat_body("l2", PROMPT), headers=auth(ALICE)
        ) as busy:
            assert busy.status == 429 and int(busy.headers["retry-after"]) >= 1
        await relay.join("l1")
        # Bob's limits are his own.
        other = await read_sse(
            http, "POST", s.base + "api/chat", json=chat_body("l3", PROMPT), headers=auth(BOB)
        )
        assert other.status == 200
        await relay.join("l3")
        second = await read_sse(
            http, "POST", s.base + "api/chat", json=chat_body("l1", "again"), headers=auth(ALICE)
        )
        assert second.status == 200
        await relay.join("l1")
        async with http.post(
            s.base + "api/chat", json=chat_body("l1", "and again"), headers=auth(ALICE)
        ) as rate:
            assert rate.status == 429 and "retry-after" in rate.headers


def test_a_template_chats_task_id_includes_its_owner() -> None:
    assert task_id_for("wrk_1", "c1", "alice") != task_id_for("wrk_1", "c1", "bob")
    assert task_id_for("wrk_1", "c1") == task_id_for("wrk_1", "c1", None)


# -- 4. no secret in any error ---------------------------------------------------------------


async def test_an_upstream_echoing_the_key_is_never_quoted_to_browsers_or_stored(
    raw_server: RawServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-live-relay-secret-0042"
    raw_server.serve(
        Canned(
            [b'{"error": {"message": "bad key ' + secret.encode() + b'"}}'],
            status=401,
            headers={"content-type": "application/json"},
        )
    )
    async with AsyncHandinger(api_key=secret, base_url=raw_server.base_url) as client:
        async with Relay(client) as relay, serve(relay) as s:
            async with http.post(s.base + "api/chat", json=chat_body("k", PROMPT)) as response:
                text = await response.text()
                assert response.status == 502 and secret not in text
            entries = await relay.store.read("k", 0, 10)
            assert entries[-1].end and secret not in (entries[-1].error or "")
    # Nor in the server's own log lines, which do say what failed.
    assert "could not be started" in caplog.text and secret not in caplog.text


async def test_a_redirect_loop_upstream_is_a_502_naming_nothing(
    raw_server: RawServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-live-relay-secret-0043"
    location = f"{raw_server.base_url}/api/workers?key={secret}"
    raw_server.serve(Canned([b""], status=307, headers={"location": location}))
    async with AsyncHandinger(api_key=secret, base_url=raw_server.base_url) as client:
        async with Relay(client) as relay, serve(relay) as s:
            async with http.post(s.base + "api/chat", json=chat_body("r", PROMPT)) as response:
                text = await response.text()
                assert response.status in (400, 404, 409, 422, 429, 502)
                assert secret not in text and "key=" not in text
            entries = await relay.store.read("r", 0, 10)
            assert secret not in (entries[-1].error or "")
    assert secret not in caplog.text


async def test_a_redis_password_is_never_shown_and_an_outage_is_a_bare_503(
    http: aiohttp.ClientSession,
) -> None:
    port = free_port()  # nothing listens there
    for url in (
        f"redis://:hunter2pw@127.0.0.1:{port}/0",
        f"redis://127.0.0.1:{port}/0?password=hunter2pw",
    ):
        store = RedisStore(url, socket_timeout=0.5)
        assert "hunter2pw" not in repr(store) and "hunter2pw" not in store.url
        async with AsyncHandinger(api_key="k", base_url="http://127.0.0.1:9") as client:
            async with Relay(client, store) as relay, serve(relay) as s:
                async with http.get(s.base + "api/chat/c1") as response:
                    text = await response.text()
                    assert response.status == 503 and response.headers["retry-after"]
                    assert "hunter2pw" not in text and str(port) not in text
                    assert "127.0.0.1" not in text
        await store.aclose()


# -- 5. medium and low findings --------------------------------------------------------------


class _Poisoned:
    """A worker's stream that fails with what is no client error (a bug, a surprise)."""

    worker_id = "wrk_poison"

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._events()

    async def _events(self) -> AsyncIterator[Any]:
        yield Entry(1, b'{"type":"start","messageId":"m1"}', upstream_id="1").event()
        raise ValueError("a field no parser expected: " + "9" * 50)

    async def aclose(self) -> None:
        pass


async def test_an_upstream_failure_that_is_no_client_error_ends_the_turn_and_frees_the_chat(
    emu: Emulator, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async with AsyncHandinger(api_key="k", base_url=emu.base_url) as client:
        async with Relay(client, lease_seconds=1.0) as relay, serve(relay) as s:
            await relay.attach(_Poisoned(), "p")  # type: ignore[arg-type]
            # The turn ended at once: read it from its first entry.
            after = {"Last-Event-ID": "0"}
            turn = await read_sse(http, "GET", s.base + "api/chat/p/stream", headers=after)
            assert turn.status == 200 and turn.complete
            errors = [c for c in turn.chunks if isinstance(c, dict) and c.get("type") == "error"]
            assert errors and "9999" not in errors[0]["errorText"]
            info = await relay.chat("p")
            assert info is not None and not info.active
            assert any(r.levelname == "ERROR" for r in caplog.records)  # said, not swallowed
            # Not wedged: the chat takes its next turn (not 409).
            await relay.attach(_Poisoned(), "p")  # type: ignore[arg-type]


@pytest.mark.parametrize("adapter", ["aiohttp", "asgi"])
async def test_one_body_limit_for_both_adapters_and_400_for_nonsense(
    relay: Relay, http: aiohttp.ClientSession, adapter: str
) -> None:
    access = lambda port: Access(relay.store, max_body=64 * 1024)  # noqa: E731
    async with serve(relay, adapter, access=access) as s:
        headers = {"Content-Type": "application/json"}
        big = io.BytesIO(msgspec_json(chat_body("b", "x" * (2 * 1024 * 1024))))
        async with http.post(s.base + "api/chat", data=big, headers=headers) as response:
            assert response.status == 413

        # Chunked, without a Content-Length: bounded as it is read.
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(64):
                yield b" " * 4096

        async with http.post(s.base + "api/chat", data=chunks(), headers=headers) as response:
            assert response.status == 413
        nested = b"[" * 5000 + b"]" * 5000
        async with http.post(s.base + "api/chat", data=nested, headers=headers) as response:
            assert response.status == 400
        for bad in ("\u0661\u0662", "1e3", "-1", "9" * 40):
            async with http.get(
                s.base + "api/chat/c/stream", headers={"Last-Event-ID": bad}
            ) as response:
                assert response.status == 400, bad
    # Without access, the same default bound (8 MiB) on both: 413, never aiohttp's own 1 MiB
    # answered as a 500.
    async with serve(relay, adapter) as s:
        big = io.BytesIO(msgspec_json(chat_body("b", "x" * (9 * 1024 * 1024))))
        headers = {"Content-Type": "application/json"}
        async with http.post(s.base + "api/chat", data=big, headers=headers) as response:
            assert response.status == 413


async def test_a_resume_after_the_store_forgot_the_answer_is_410(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    async with AsyncHandinger(api_key="k", base_url=emu.base_url) as client:
        async with Relay(client, MemoryStore(max_events=5)) as relay, serve(relay) as s:
            turn = await read_sse(http, "POST", s.base + "api/chat", json=chat_body("t", PROMPT))
            assert turn.status == 200
            await relay.join("t")
            resume = {"Last-Event-ID": "1"}
            async with http.get(s.base + "api/chat/t/stream", headers=resume) as response:
                assert response.status == 410


@pytest.fixture
def tight_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


async def test_a_redis_refusing_writes_is_503_with_retry_after_not_a_500(
    emu: Emulator, tight_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    store = RedisStore(tight_redis.url)
    async with AsyncHandinger(api_key="k", base_url=emu.base_url) as client:
        async with Relay(client, store, store_patience=0.5) as relay, serve(relay) as s:
            import redis.asyncio as aioredis

            admin = aioredis.Redis.from_url(tight_redis.url)
            await admin.config_set("maxmemory-policy", "noeviction")
            await admin.config_set("maxmemory", "1")  # below what is used: every write refused
            try:
                async with http.post(s.base + "api/chat", json=chat_body("o", PROMPT)) as response:
                    text = await response.text()
                    assert response.status == 503 and response.headers["retry-after"]
                    assert "OOM" not in text and "Traceback" not in text
                with pytest.raises(StoreFullError):
                    await store.begin_turn("o2", holder="h", ttl=1.0)
            finally:
                await admin.config_set("maxmemory", "0")
                await admin.aclose()
    await store.aclose()


# -- 6. the sender's message id ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_the_history_gives_each_question_its_senders_id(
    emu: Emulator, http: aiohttp.ClientSession, kind: str, tight_redis: RedisServer
) -> None:
    store: Any = MemoryStore() if kind == "memory" else RedisStore(tight_redis.url)
    async with AsyncHandinger(api_key="k", base_url=emu.base_url) as client:
        async with Relay(client, store) as relay, serve(relay) as s:
            for n, text in enumerate(["first", "second"]):
                body = chat_body("q", text)
                body["messages"][-1]["id"] = f"sender-{n}"
                turn = await read_sse(http, "POST", s.base + "api/chat", json=body)
                assert turn.status == 200
                await relay.join("q")
            async with http.get(s.base + "api/chat/q") as response:
                messages = (await response.json())["messages"]
            users = [m["id"] for m in messages if m["role"] == "user"]
            assert users == ["sender-0", "sender-1"]
    await store.aclose()


# -- the command line ----------------------------------------------------------------------------


def relay_command(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "HANDINGER_RELAY_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "handinger_stream", "relay", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        stdin=subprocess.DEVNULL,
    )


def test_the_relay_command_refuses_a_network_address_without_a_token() -> None:
    done = relay_command("--host", "0.0.0.0", "--port", "0")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "--token-file" in done.stderr
    done = relay_command("--token", "x" * 32)
    assert done.returncode == 2  # no such flag: a token on a command line is seen by ps
    assert "x" * 32 not in done.stderr


async def test_the_relay_command_takes_its_token_from_a_file_and_says_when_it_has_none(
    emu: Emulator, tmp_path: Any, http: aiohttp.ClientSession
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(ALICE + "\n")
    token_file.chmod(0o600)
    guarded_relay = RelayProcess(
        base_url=emu.base_url, redis_url=None, extra=("--token-file", str(token_file))
    )
    open_relay = RelayProcess(base_url=emu.base_url, redis_url=None)
    try:
        url = guarded_relay.url
        assert await status_of(http, "GET", url + "api/chat/c1") == 401
        assert await status_of(http, "GET", url + "api/chat/c1", headers=auth(ALICE)) == 404
        body = chat_body("c1", "Hi")
        text_plain = {**auth(ALICE), "Content-Type": "text/plain"}
        data = msgspec_json(body)
        assert await status_of(http, "POST", url + "api/chat", data=data, headers=text_plain) == 415
        turn = await read_sse(http, "POST", url + "api/chat", json=body, headers=auth(ALICE))
        assert turn.status == 200 and turn.complete
        assert "warning: no access control" not in guarded_relay.log()
        assert ALICE not in guarded_relay.log()
        # Without a token: a development server, and it says so.
        for _ in range(100):
            if "warning: no access control" in open_relay.log():
                break
            await asyncio.sleep(0.05)
        assert "warning: no access control" in open_relay.log()
    finally:
        guarded_relay.stop()
        open_relay.stop()


def test_the_relay_command_never_shows_a_redis_password() -> None:
    port = free_port()
    for url in (
        f"redis://:hunter2pw@127.0.0.1:{port}/0",
        f"redis://127.0.0.1:{port}/0?password=hunter2pw",
    ):
        done = relay_command("--port", "0", "--redis", url)
        assert done.returncode != 0 and done.stderr.startswith(("error: ", "No HANDINGER"))
        assert "hunter2pw" not in done.stderr + done.stdout


async def test_history_reads_are_folded_from_the_store_not_asked_of_the_api(
    emu: Emulator, http: aiohttp.ClientSession
) -> None:
    paced = Emulator(tokens_per_second=40)
    async with paced, AsyncHandinger(api_key="k", base_url=paced.base_url) as client:
        async with Relay(client, MemoryStore()) as relay, serve(relay) as s:
            first = await read_sse(http, "POST", s.base + "api/chat", json=chat_body("h", "Hi"))
            assert first.complete
            await relay.join("h")
            worker_id = first.headers["x-handinger-worker-id"]
            expected = (await client.workers.retrieve(worker_id)).messages
            asked: list[Any] = []
            original = client.workers.retrieve

            async def spy(*args: Any, **kw: Any) -> Any:
                asked.append(args)
                return await original(*args, **kw)

            client.workers.retrieve = spy  # type: ignore[method-assign]
            for _ in range(5):
                async with http.get(s.base + "api/chat/h") as response:
                    messages = (await response.json())["messages"]
                    mine = [{**m, "id": "u-h"} if m["role"] == "user" else m for m in expected]
                    assert messages == mine
            # Mid-answer: the question, not the answer being written.
            second = await read_sse(
                http, "POST", s.base + "api/chat", json=chat_body("h", PROMPT), stop_after=3
            )
            assert second.status == 200
            async with http.get(s.base + "api/chat/h") as response:
                during = (await response.json())["messages"]
            assert [m["role"] for m in during] == ["user", "assistant", "user"]
            assert during[-1]["parts"][0]["text"] == PROMPT
            await relay.join("h")
            assert asked == []  # not one request of the API for any of these reads


@pytest.mark.parametrize("adapter", ["aiohttp", "asgi"])
async def test_a_body_that_trickles_in_is_cut_with_408(relay: Relay, adapter: str) -> None:
    async with serve(relay, adapter, body_timeout=0.3) as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(
            b"POST /relay/api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 30)
        assert status.split()[1] == b"408", status
        writer.close()


async def test_a_redis_refusing_writes_mid_turn_gives_readers_and_posters_public_503s(
    tight_redis: RedisServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    import redis.asyncio as aioredis

    paced = Emulator(tokens_per_second=20)
    store = RedisStore(tight_redis.url)
    admin = aioredis.Redis.from_url(tight_redis.url)
    async with paced, AsyncHandinger(api_key="k", base_url=paced.base_url) as client:
        async with Relay(client, store, store_patience=0.5) as relay, serve(relay) as s:
            first = await read_sse(
                http, "POST", s.base + "api/chat", json=chat_body("m", PROMPT), stop_after=3
            )
            assert first.status == 200
            await admin.config_set("maxmemory-policy", "noeviction")
            await admin.config_set("maxmemory", "1")
            try:
                # The producer ends (Redis lets a running script finish its writes) or
                # stops, said in the log: it neither wedges nor crashes.
                await relay.join("m")
                assert not any(r.levelname == "ERROR" for r in caplog.records)
                rest = await read_sse(
                    http, "GET", s.base + "api/chat/m/stream", headers={"Last-Event-ID": "3"}
                )
                text = b"".join(rest.data).decode()
                assert rest.status in (200, 503)
                assert "OOM" not in text and "maxmemory" not in text and "127.0.0.1" not in text
                async with http.post(s.base + "api/chat", json=chat_body("n", "hi")) as response:
                    assert response.status == 503 and response.headers["retry-after"]
                    assert "maxmemory" not in await response.text()
            finally:
                await admin.config_set("maxmemory", "0")
    await admin.aclose()
    await store.aclose()


# -- found by a fresh-eyes review ---------------------------------------------------


def _chat_body(text: str, message_id: str) -> Any:
    raw = (
        b'{"id":"shared-id","messages":[{"id":"%s","role":"user","parts":[{"type":"text","text":"%s"}]}]}'
        % (message_id.encode(), text.encode())
    )

    async def read() -> bytes:
        return raw

    return read


async def _nothing() -> bytes:
    return b""


async def test_a_reclaimed_chat_id_is_never_served_the_first_owners_history() -> None:
    """The history cache is keyed by owner and worker too: after a chat's record is gone
    (expired, a Redis without persistence) and another principal claims its id, a turn
    of the same shape must not bring back the first owner's answer."""
    alice, bob = "a" * 32, "b" * 32
    async with Emulator(tokens_per_second=0) as emu:
        async with AsyncHandinger(api_key="k", base_url=emu.base_url) as client:
            store = MemoryStore()
            relay = Relay(client, store)
            http = RelayHTTP(
                relay,
                access=Access(
                    store,
                    authenticate=bearer_token({"alice": alice, "bob": bob}),
                    limits=Limits(turns_per_minute=100),
                ),
            )

            async def turn(token: str, message_id: str) -> str:
                headers = [(b"authorization", f"Bearer {token}".encode()),
                           (b"content-type", b"application/json")]  # fmt: skip
                reply = await http.handle(
                    "POST", "/api/chat", "", headers, _chat_body("same words", message_id)
                )
                assert reply.stream is not None
                async for _ in reply.stream:
                    pass
                info = await store.chat("shared-id")
                assert info is not None and info.worker_id
                return info.worker_id

            async def history(token: str) -> bytes:
                headers = [(b"authorization", f"Bearer {token}".encode())]
                reply = await http.handle("GET", "/api/chat/shared-id", "", headers, _nothing)
                return reply.body

            alices = await turn(alice, "m-a")
            assert alices.encode() in await history(alice)
            store._chats.pop("shared-id")  # the record gone, as after chat_seconds
            bobs = await turn(bob, "m-b")
            seen = await history(bob)
            await relay.aclose()
    assert bobs != alices
    assert bobs.encode() in seen and alices.encode() not in seen


async def test_a_listed_site_opens_the_websocket_without_the_visitors_cookies() -> None:
    """WebSockets have no CORS: a site allowed without credentials must not ride the
    visitor's session cookie; the relay's own page still may."""

    async def from_cookie(info: RequestInfo) -> str | None:
        return "alice" if "session=alice" in (info.headers.single("cookie") or "") else None

    store = MemoryStore()
    async with AsyncHandinger(api_key="k", base_url="http://127.0.0.1:9") as client:
        origins = Origins(["https://chat.example"], allow=["https://partner.example"])
        http = RelayHTTP(
            Relay(client, store), access=Access(store, authenticate=from_cookie, origins=origins)
        )
        ws = RelayWS(http)

        def upgrade(origin: str) -> RequestInfo:
            return RequestInfo.of("GET", "/api/chat/ws", {
                "host": "chat.example", "origin": origin, "cookie": "session=alice"
            })  # fmt: skip

        assert (await ws.check_upgrade(upgrade("https://chat.example")))[0] == "alice"
        with pytest.raises(Unauthorized):
            await ws.check_upgrade(upgrade("https://partner.example"))
        # Access without an origin list keeps the relay's own WebSocket origin rule.
        bare = RelayWS(
            RelayHTTP(Relay(client, store), access=Access(store, authenticate=from_cookie))
        )
        with pytest.raises(Forbidden):
            await bare.check_upgrade(upgrade("https://evil.example"))


async def test_a_hook_cannot_name_the_open_relays_principal() -> None:
    async def says_anonymous(info: RequestInfo) -> str | None:
        return ANONYMOUS

    info = RequestInfo.of("GET", "/api/chat/c", {"host": "127.0.0.1"})
    with pytest.raises(Unauthorized):
        await Access(MemoryStore(), authenticate=says_anonymous).request(info)


async def test_a_content_length_of_other_digits_is_a_400() -> None:
    info = RequestInfo.of("POST", "/api/chat", {
        "host": "127.0.0.1", "content-type": "application/json", "content-length": "\u00b2"
    })  # fmt: skip
    with pytest.raises(BadRequest):
        await Access(MemoryStore()).request(info)


async def test_kept_histories_are_bounded_in_bytes_not_only_in_count(
    emu: Emulator, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handinger_stream.relay import core

    async with AsyncHandinger(api_key="k", base_url=emu.base_url) as client:
        async with Relay(client, MemoryStore()) as relay, serve(relay) as s:
            for chat in ("b1", "b2", "b3"):
                got = await read_sse(http, "POST", s.base + "api/chat", json=chat_body(chat, "Hi"))
                assert got.complete
                await relay.join(chat)
            sizes = []
            for chat in ("b1", "b2", "b3"):
                async with http.get(s.base + f"api/chat/{chat}") as response:
                    sizes.append(len(await response.read()))
            assert len(relay._histories) == 3
            relay._histories.clear()
            relay._history_bytes = 0
            # Room for two histories: the third drops the oldest, whatever the count allows.
            monkeypatch.setattr(core, "_HISTORIES_BYTES", sizes[0] + sizes[1] + 10)
            reads = 0
            store_read = relay.store.read

            async def counted(*args: Any, **kw: Any) -> Any:
                nonlocal reads
                reads += 1
                return await store_read(*args, **kw)

            relay.store.read = counted  # type: ignore[method-assign]
            for chat in ("b1", "b2", "b3"):
                async with http.get(s.base + f"api/chat/{chat}") as response:
                    assert len((await response.json())["messages"]) == 2
            assert len(relay._histories) == 2
            assert relay._history_bytes <= core._HISTORIES_BYTES
            assert [k[0] for k in relay._histories] == ["b2", "b3"]
            # Over the bound for one history: read afresh at every load, never kept.
            monkeypatch.setattr(core, "_HISTORY_BYTES", 10)
            before = reads
            for _ in range(2):
                async with http.get(s.base + "api/chat/b1") as response:
                    assert len((await response.json())["messages"]) == 2
            assert reads > before + 1 and [k[0] for k in relay._histories] == ["b2", "b3"]
            # Two page loads that both missed store one chat twice: counted once.
            monkeypatch.setattr(core, "_HISTORY_BYTES", 4 << 20)
            key, (messages, _) = next(iter(relay._histories.items()))
            total = relay._history_bytes
            for _ in range(3):
                relay._keep_history(key, messages)
            assert relay._history_bytes == total and len(relay._histories) == 2


async def test_a_principal_holds_at_most_max_streams_answers_open_at_once(
    http: aiohttp.ClientSession,
) -> None:
    slow = Emulator(tokens_per_second=5)  # the turn runs while the answers are counted
    async with slow, AsyncHandinger(api_key="k", base_url=slow.base_url) as client:
        async with Relay(client, MemoryStore()) as relay:
            async with serve(relay, access=guarded(relay.store, max_streams=2)) as s:
                stream_url = s.base + "api/chat/c1/stream"
                posted = await http.post(
                    s.base + "api/chat", json=chat_body("c1", PROMPT), headers=auth(ALICE)
                )
                resumed = await http.get(stream_url, headers=auth(ALICE))
                assert (posted.status, resumed.status) == (200, 200)
                # A third answer for alice: refused, whether a resume or a new turn.
                async with http.get(stream_url, headers=auth(ALICE)) as third:
                    assert third.status == 429 and int(third.headers["retry-after"]) >= 1
                    assert (await third.json())["error"]["type"] == "rate_limited"
                async with http.post(
                    s.base + "api/chat", json=chat_body("c2", PROMPT), headers=auth(ALICE)
                ) as refused:
                    assert refused.status == 429
                assert await relay.chat("c2") is None  # refused before any turn began
                ws_url = s.base.replace("http", "ws", 1) + "api/chat/ws"
                async with http.ws_connect(ws_url, headers=auth(ALICE)) as ws:
                    closing = await ws.receive(timeout=5)
                    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1013
                # Counted per principal: bob is not held back by alice's answers.
                async with http.post(
                    s.base + "api/chat", json=chat_body("c3", PROMPT), headers=auth(BOB)
                ) as bobs:
                    assert bobs.status == 200
                # An answer that ends gives its place back.
                resumed.close()
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 5
                while True:
                    async with http.get(stream_url, headers=auth(ALICE)) as again:
                        if again.status == 200 or loop.time() > deadline:
                            break
                    await asyncio.sleep(0.05)
                assert again.status == 200
                posted.close()


async def test_a_policy_naming_another_template_is_refused_not_run_elsewhere(
    relay: Relay, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async def policy(principal: str, info: RequestInfo, chat: ChatRequest) -> TurnOptions:
        # A relay runs one template (here none: its chats are workers).
        return TurnOptions(worker_id="tmpl_other" if chat.chat_id == "bad" else None)

    limits = Limits(concurrent_turns=1, turns_per_minute=10, chats=10)
    async with serve(relay, access=guarded(relay.store, limits=limits, policy=policy)) as s:
        async with http.post(
            s.base + "api/chat", json=chat_body("bad", PROMPT), headers=auth(ALICE)
        ) as refused:
            assert refused.status == 500
            body = await refused.text()
        assert "tmpl_other" not in body and "Traceback" not in body
        assert "worker template other than the relay's own" in caplog.text
        # Its admission was given back: the one turn allowed at once can still start.
        good = await read_sse(
            http, "POST", s.base + "api/chat", json=chat_body("good", PROMPT), headers=auth(ALICE)
        )
        assert good.status == 200 and good.complete
