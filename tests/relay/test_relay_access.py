"""The relay's access control (handinger_stream/relay/access.py) and the store support under
it: bearer tokens, token loading, the policy, Host/Origin/CORS, content type; chat owners
and per-principal limits over MemoryStore and over a real redis-server, with two store
clients on one Redis standing for two relay processes."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from handinger_stream import InvalidRequestError
from handinger_stream.relay import MemoryStore, RedisStore, Store
from handinger_stream.relay.access import (
    ANONYMOUS,
    MAX_HEADERS,
    WS_BEARER_PROTOCOL,
    Access,
    AccessRefused,
    BadRequest,
    ChatRequest,
    Forbidden,
    Headers,
    HeadersTooLarge,
    LimitChecker,
    Limits,
    NotFound,
    Origins,
    RequestInfo,
    TooLarge,
    TooManyRequests,
    TurnOptions,
    Unauthorized,
    UnsupportedMediaType,
    bearer_token,
    check_length,
    count_files,
    default_policy,
    load_token,
    require_json,
)
from handinger_stream.relay.store import Quota
from tests.relay_helpers import RedisServer, redis_server

TOKEN = "tok-" + "a1b2c3d4" * 4  # 36 characters
OTHER = "tok-" + "e5f6a7b8" * 4
HOST = "127.0.0.1:8788"
_prefixes = itertools.count()


def request(
    method: str = "GET",
    path: str = "/api/chat/c1",
    headers: Any = None,
    *,
    host: str | None = HOST,
) -> RequestInfo:
    pairs: list[tuple[str, str]] = [] if host is None else [("Host", host)]
    if isinstance(headers, dict):
        pairs += list(headers.items())
    elif headers:
        pairs += list(headers)
    return RequestInfo.of(method, path, pairs, "127.0.0.1")


def post(headers: Any = None, **kw: Any) -> RequestInfo:
    base = {"Content-Type": "application/json"}
    return request("POST", "/api/chat", {**base, **(headers or {})}, **kw)


def answer_json(refused: AccessRefused) -> Any:
    return msgspec.json.decode(refused.answer().body)


# -- bearer tokens ---------------------------------------------------------------------


async def test_a_bearer_token_names_its_principal_and_nothing_else_gets_in() -> None:
    auth = bearer_token({"alice": TOKEN, "bob": OTHER})
    assert await auth(request(headers={"Authorization": f"Bearer {TOKEN}"})) == "alice"
    assert await auth(request(headers={"authorization": f"bearer {OTHER}"})) == "bob"
    for header in (None, f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer"):
        headers = {} if header is None else {"Authorization": header}
        assert await auth(request(headers=headers)) is None
    assert await auth(request(headers={"Authorization": "Bearer " + "x" * 5000})) is None
    # Two Authorization headers are ambiguous: refused, not one of them picked.
    with pytest.raises(BadRequest):
        await auth(
            request(headers=[("Authorization", f"Bearer {TOKEN}"), ("Authorization", "Bearer x")])
        )
    # One token: one principal; a list: a principal per token, named by a digest.
    assert await bearer_token(TOKEN)(request(headers={"Authorization": f"Bearer {TOKEN}"})) == (
        "token"
    )
    listed = bearer_token([TOKEN, OTHER])
    names = {
        await listed(request(headers={"Authorization": f"Bearer {t}"})) for t in (TOKEN, OTHER)
    }
    assert len(names) == 2 and all(n and n.startswith("token:") for n in names)
    assert all(TOKEN not in (n or "") and OTHER not in (n or "") for n in names)
    assert TOKEN not in repr(auth) and "alice" not in repr(auth)
    # A browser's WebSocket offers the token as its second subprotocol.
    offered = {"Sec-WebSocket-Protocol": f"{WS_BEARER_PROTOCOL}, {TOKEN}"}
    assert await auth(request(headers=offered)) == "alice"
    for other in (f"chat, {TOKEN}", WS_BEARER_PROTOCOL, f"{WS_BEARER_PROTOCOL}, {OTHER}x"):
        assert await auth(request(headers={"Sec-WebSocket-Protocol": other})) is None


async def test_every_known_token_is_compared_in_constant_time_with_no_early_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The real hmac.compare_digest, watched: what it is given, and how often.
    real = hmac.compare_digest
    seen: list[tuple[int, int]] = []

    def watched(a: bytes, b: bytes) -> bool:
        seen.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", watched)
    tokens = {f"user{i}": f"tok-{i:02d}-" + "z" * 20 for i in range(5)}
    auth = bearer_token(tokens)
    for presented in (tokens["user0"], tokens["user4"], "nope", "x" * 500):
        seen.clear()
        await auth(request(headers={"Authorization": f"Bearer {presented}"}))
        # Every known token, whether the first matched, the last, or none: equal-length
        # digests, so neither where a match is nor a token's length shows in the time.
        assert seen == [(32, 32)] * len(tokens)


def test_weak_or_repeated_tokens_are_refused_without_saying_them() -> None:
    for bad in ("short", "has a space in it 123456", "é" * 20, ""):
        with pytest.raises(InvalidRequestError) as caught:
            bearer_token(bad)
        assert bad not in str(caught.value) or not bad
    with pytest.raises(InvalidRequestError, match="twice"):
        bearer_token({"a": TOKEN, "b": TOKEN})
    with pytest.raises(InvalidRequestError):
        bearer_token([])


# -- loading a token -----------------------------------------------------------------------


def test_a_token_loads_from_a_file_or_the_environment_and_errors_never_show_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "token"
    path.write_text(f"{TOKEN}\n")
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, "handinger_stream.relay"):
        assert load_token(file=path) == TOKEN
        assert not caplog.records
        path.chmod(0o644)
        assert load_token(file=path) == TOKEN  # loaded, and the looseness said
    assert [r.getMessage() for r in caplog.records] == [
        f"relay: the token file {str(path)!r} can be read by other users (chmod 600 it)"
    ]
    assert load_token(file=str(path)) == TOKEN
    monkeypatch.setenv("TEST_RELAY_TOKEN", f"  {TOKEN}\n")
    assert load_token(env="TEST_RELAY_TOKEN") == TOKEN

    short = "abc123-short"
    cases: list[tuple[dict[str, Any], str]] = []
    (tmp_path / "short").write_text(short)
    cases.append(({"file": tmp_path / "short"}, short))
    (tmp_path / "big").write_text(TOKEN * 200)
    cases.append(({"file": tmp_path / "big"}, TOKEN))
    (tmp_path / "empty").write_text("\n")
    cases.append(({"file": tmp_path / "empty"}, "\n"))
    (tmp_path / "latin").write_bytes(b"\xe9" * 20)
    cases.append(({"file": tmp_path / "latin"}, "\xe9"))
    cases.append(({"file": tmp_path / "missing"}, TOKEN))
    monkeypatch.setenv("TEST_RELAY_SHORT", short)
    cases.append(({"env": "TEST_RELAY_SHORT"}, short))
    monkeypatch.delenv("TEST_RELAY_UNSET", raising=False)
    cases.append(({"env": "TEST_RELAY_UNSET"}, TOKEN))
    cases.append(({}, TOKEN))
    cases.append(({"file": path, "env": "TEST_RELAY_TOKEN"}, TOKEN))
    for kwargs, secret in cases:
        with pytest.raises(InvalidRequestError) as caught:
            load_token(**kwargs)
        assert secret not in str(caught.value), kwargs


# -- the policy ----------------------------------------------------------------------------


async def test_the_default_policy_ignores_the_browser_s_budget() -> None:
    info = post()
    for asked in ("unlimited", "high", None):
        chat = ChatRequest("c1", "Hi", budget=asked)
        assert (await default_policy()(ANONYMOUS, info, chat)).budget == "low"
        assert (await default_policy("standard")("u", info, chat)).budget == "standard"
    with pytest.raises(ValueError):
        TurnOptions(budget="everything")  # type: ignore[arg-type]


async def test_a_policy_decides_the_turn_or_refuses_it_with_a_public_message() -> None:
    async def policy(principal: str, info: RequestInfo, chat: ChatRequest) -> TurnOptions:
        if principal == "intern" and len(chat.input) > 10:
            raise Forbidden("questions are short here")
        return TurnOptions(budget="high" if principal == "boss" else "low", files=True)

    access = Access(MemoryStore(), policy=policy, limits=None)
    boss = await access.admit("boss", post(), ChatRequest("c-boss", "Hi", budget="low", files=2))
    assert boss.options == TurnOptions(budget="high", files=True) and boss.new_chat
    with pytest.raises(Forbidden) as caught:
        await access.admit("intern", post(), ChatRequest("c-intern", "a long question"))
    assert caught.value.answer().status == 403
    assert answer_json(caught.value)["error"]["message"] == "questions are short here"
    # The default policy takes no files.
    plain = Access(MemoryStore(), limits=None)
    with pytest.raises(Forbidden, match="files"):
        await plain.admit(ANONYMOUS, post(), ChatRequest("c-files", "Hi", files=1))
    assert count_files({"parts": [{"type": "file"}, {"type": "file"}, "x"]}) == 2
    assert count_files({"parts": "no"}) == 0 and count_files(None) == 0


# -- Host, Origin, CORS, content type ----------------------------------------------------


def test_the_host_must_be_the_relay_s_own_so_dns_rebinding_is_refused() -> None:
    origins = Origins.for_bind("127.0.0.1", 8788)
    for host in ("127.0.0.1:8788", "localhost:8788", "LOCALHOST:8788", "[::1]:8788"):
        origins.check(request(host=host))
    # A name of the attacker's pointed at 127.0.0.1: the browser sends it as the Host.
    for host in ("evil.example:8788", "evil.example", "127.0.0.1:9999", "127.0.0.1", "a b"):
        with pytest.raises(Forbidden):
            origins.check(request(host=host))
    with pytest.raises(BadRequest):
        origins.check(request(host=None))
    with pytest.raises(BadRequest):
        origins.check(request(headers=[("Host", "localhost:8788")]))  # Host twice
    public = Origins.for_bind("0.0.0.0", 8788, public=["https://chat.example"])
    public.check(request(host="chat.example"))
    public.check(request(host="chat.example:443"))
    with pytest.raises(Forbidden):
        public.check(request(host="127.0.0.1:8788"))
    with pytest.raises(InvalidRequestError):
        Origins.for_bind("0.0.0.0", 8788)  # reached at which name? it must be said
    assert "relay.example:8788" in Origins.for_bind("relay.example", 8788).hosts


def test_only_allowed_origins_pass_and_get_cors_headers() -> None:
    origins = Origins(["https://chat.example"], allow=["https://app.example:8443"])
    own = dict(host="chat.example")
    for origin in ("https://chat.example", "https://CHAT.example:443", "https://app.example:8443"):
        info = request(headers={"Origin": origin}, **own)
        origins.check(info)
        cors = origins.cors_headers(info)
        assert cors["access-control-allow-origin"] == origin.lower().replace(":443", "")
        assert cors["vary"] == "Origin"
        assert "x-handinger-worker-id" in cors["access-control-expose-headers"]
        assert "access-control-allow-credentials" not in cors
    for origin in ("https://evil.example", "http://chat.example", "null", "https://app.example"):
        info = request(headers={"Origin": origin}, **own)
        with pytest.raises(Forbidden):
            origins.check(info)
        assert "access-control-allow-origin" not in origins.cors_headers(info)
    # No Origin: curl, a server, a navigation: fine. A page's fetch marked cross-site: not.
    origins.check(request(**own))
    origins.check(
        request(headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}, **own)
    )
    with pytest.raises(Forbidden):
        origins.check(
            request(headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}, **own)
        )
    anyone = Origins(["https://chat.example"], allow=["*"])
    anyone.check(request(headers={"Origin": "https://else.example"}, **own))
    with pytest.raises(InvalidRequestError):
        Origins(["https://chat.example"], allow=["*"], credentials=True)
    with pytest.raises(InvalidRequestError):
        Origins(["https://chat.example/path"])
    with pytest.raises(TypeError):
        Origins("https://chat.example")


def test_a_preflight_is_answered_for_allowed_origins_methods_and_headers_only() -> None:
    origins = Origins(["https://chat.example"], allow=["https://app.example"])
    own = dict(host="chat.example")
    asking = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, Authorization",
    }
    answer = origins.preflight(request("OPTIONS", "/api/chat", asking, **own))
    assert answer.status == 204
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert {"authorization", "content-type"} <= set(
        answer.headers["access-control-allow-headers"].split(", ")
    )
    assert answer.headers["access-control-max-age"] == "600"
    assert "Origin" in answer.headers["vary"]
    refused = [
        {**asking, "Origin": "https://evil.example"},
        {**asking, "Access-Control-Request-Method": "DELETE"},
        {**asking, "Access-Control-Request-Headers": "content-type, x-evil"},
        {**asking, "Access-Control-Request-Headers": ",".join(["accept"] * 40)},
    ]
    for headers in refused:
        with pytest.raises(Forbidden):
            origins.preflight(request("OPTIONS", "/api/chat", headers, **own))
    # A preflight through a rebinding name is refused like any request.
    with pytest.raises(Forbidden):
        origins.preflight(request("OPTIONS", "/api/chat", asking, host="evil.example"))
    assert "access-control-allow-private-network" not in answer.headers
    # A public page reaching a private address (Chrome's Private Network Access): only an
    # origin listed by name, not any origin through "*".
    private = {**asking, "Access-Control-Request-Private-Network": "true"}
    answer = origins.preflight(request("OPTIONS", "/api/chat", private, **own))
    assert answer.headers["access-control-allow-private-network"] == "true"
    anyone = Origins(["https://chat.example"], allow=["*"])
    private["Origin"] = "https://else.example"
    answer = anyone.preflight(request("OPTIONS", "/api/chat", private, **own))
    assert answer.status == 204 and "access-control-allow-private-network" not in answer.headers
    plain = origins.preflight(request("OPTIONS", "/api/chat", {}, **own))
    assert plain.status == 204 and "POST" in plain.headers["allow"]


def test_a_post_must_declare_json_and_a_length_within_bounds() -> None:
    for value in ("application/json", "Application/JSON; charset=utf-8"):
        require_json(post({"Content-Type": value}))
    for value in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""):
        with pytest.raises(UnsupportedMediaType):
            require_json(post({"Content-Type": value}))
    with pytest.raises(UnsupportedMediaType):
        require_json(request("POST", "/api/chat", {}))
    check_length(post({"Content-Length": "100"}), 100)
    with pytest.raises(TooLarge):
        check_length(post({"Content-Length": "101"}), 100)
    for bad in ("-1", "1e3", "9" * 40):
        with pytest.raises(BadRequest):
            check_length(post({"Content-Length": bad}), 100)


def test_headers_are_case_insensitive_multi_valued_bounded_and_hide_secrets() -> None:
    headers = Headers([(b"Cookie", b"sid=s3cret"), (b"Accept", b"a"), (b"accept", b"b")])
    assert headers.get_all("ACCEPT") == ("a", "b") and "cookie" in headers
    with pytest.raises(BadRequest):
        headers.single("accept")
    assert "s3cret" not in repr(headers) and "s3cret" not in repr(RequestInfo("GET", "/", headers))
    keyed = Headers({"X-Api-Key": "k3y-value", "Host": "relay.example"})
    assert "k3y" not in repr(keyed) and "relay.example" in repr(keyed)
    with pytest.raises(HeadersTooLarge):
        Headers([(f"x-{i}", "v") for i in range(MAX_HEADERS + 1)])
    with pytest.raises(HeadersTooLarge):
        Headers({"x-big": "v" * 100_000})


# -- all of it, in order -------------------------------------------------------------------


async def test_access_checks_in_order_and_answers_with_short_public_json() -> None:
    access = Access(
        MemoryStore(),
        authenticate=bearer_token({"alice": TOKEN}),
        origins=Origins.for_bind("127.0.0.1", 8788),
        max_body=1000,
    )
    assert not access.open and TOKEN not in repr(access)
    ok = {"Authorization": f"Bearer {TOKEN}"}
    assert await access.request(post(ok)) == "alice"
    assert await access.request(request(headers=ok)) == "alice"
    cases: list[tuple[RequestInfo, type[AccessRefused], int]] = [
        (post(ok, host="evil.example:8788"), Forbidden, 403),  # before any credential
        (post({**ok, "Content-Type": "text/plain"}), UnsupportedMediaType, 415),
        (post({**ok, "Content-Length": "1001"}), TooLarge, 413),
        (post(), Unauthorized, 401),
        (post({"Authorization": f"Bearer {OTHER}"}), Unauthorized, 401),
    ]
    for info, kind, status in cases:
        with pytest.raises(kind) as caught:
            await access.request(info)
        body = answer_json(caught.value)["error"]
        assert body["status"] == status == caught.value.answer().status
        assert TOKEN not in str(body) and OTHER not in str(body) and "alice" not in str(body)
    unauthorized = Unauthorized().answer()
    assert unauthorized.headers["www-authenticate"].startswith("Bearer")
    limited = TooManyRequests(retry_after=0.2).answer()
    assert limited.status == 429 and limited.headers["retry-after"] == "1"

    # A hook naming a principal no store can keep (from a token's claims, say): 401.
    async def sloppy(info: RequestInfo) -> str | None:
        return "x" * 10_000

    with pytest.raises(Unauthorized):
        await Access(MemoryStore(), authenticate=sloppy).request(request())
    # Without authenticate: everyone is one principal, and the limits hold for all.
    open_access = Access(MemoryStore(), limits=Limits(concurrent_turns=1))
    assert open_access.open and await open_access.request(request()) == ANONYMOUS


# -- owners and limits, over both stores ---------------------------------------------------


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Store, Store]]:
    """Two store clients on the same chats: two relay processes (over Redis), or one
    MemoryStore seen twice (a process's relays share it)."""
    if request.param == "memory":
        store = MemoryStore()
        yield store, store
        return
    server: RedisServer = request.getfixturevalue("redis")
    prefix = f"acc{next(_prefixes)}:"
    async with (
        RedisStore(server.url, prefix=prefix) as a,
        RedisStore(server.url, prefix=prefix) as b,
    ):
        yield a, b


async def test_a_chat_is_its_first_principal_s_and_nobody_else_s(
    stores: tuple[Store, Store],
) -> None:
    a, b = stores
    alice, bob = LimitChecker(a), LimitChecker(b)
    first = await alice.admit("alice", "c1")
    assert first.new_chat and await b.owner("c1") == "alice"
    with pytest.raises(NotFound):
        await bob.admit("bob", "c1")
    with pytest.raises(NotFound):
        await bob.check_owner("bob", "c1")
    await alice.check_owner("alice", "c1")
    # Another's chat and a chat never seen are alike to bob.
    assert not await bob.owns("bob", "c1") and not await bob.owns("bob", "never-seen")
    assert await alice.owns("alice", "c1")
    # The turn runs, ends; the chat is still alice's, and only hers.
    lease = await a.begin_turn("c1", holder="relay-a", ttl=5)
    await a.set_worker(lease, "wrk_1")
    await a.finish(lease)
    info = await b.chat("c1")
    assert info is not None and info.owner == "alice" and info.worker_id == "wrk_1"
    again = await LimitChecker(b).admit("alice", "c1")
    assert not again.new_chat
    with pytest.raises(NotFound):
        await bob.admit("bob", "c1")
    # A chat that was claimed and has no turn yet reads as an empty chat, not as an error.
    await alice.admit("alice", "claimed")
    assert await a.read("claimed", 0, 10) == []
    claimed = await a.chat("claimed")
    assert claimed is not None and not claimed.active and claimed.owner == "alice"
    # A chat made without access control (Relay.send from Python) is nobody's.
    await a.finish(await a.begin_turn("ownerless", holder="relay-a", ttl=5))
    assert await a.owner("ownerless") is None
    for who, checker in (("alice", alice), ("bob", bob)):
        with pytest.raises(NotFound):
            await checker.admit(who, "ownerless")
        with pytest.raises(NotFound):
            await checker.check_owner(who, "ownerless")
    assert await a.owner("never-seen") is None


async def test_two_principals_racing_for_a_new_chat_make_exactly_one_owner(
    stores: tuple[Store, Store],
) -> None:
    a, b = stores

    async def claim(store: Store, who: str, chat_id: str) -> str | None:
        try:
            await LimitChecker(store, Limits(None, None, None)).admit(who, chat_id)
        except NotFound:
            return None
        return who

    for n in range(40):
        chat_id = f"race-{n}"
        won = await asyncio.gather(
            claim(a, "alice", chat_id), claim(b, "bob", chat_id), claim(a, "bob", chat_id)
        )
        winners = {w for w in won if w is not None}
        assert len(winners) == 1, won
        assert await a.owner(chat_id) == await b.owner(chat_id) == winners.pop()


async def test_limits_hold_across_relays_sharing_the_store(stores: tuple[Store, Store]) -> None:
    a, b = stores
    limits = Limits(concurrent_turns=2, turns_per_minute=3, chats=3)
    on_a, on_b = LimitChecker(a, limits), LimitChecker(b, limits)
    # Turns at once: two, whichever relay admits them.
    one = await on_a.admit("alice", "t1")
    two = await on_b.admit("alice", "t2")
    with pytest.raises(TooManyRequests) as caught:
        await on_a.admit("alice", "t3")
    assert caught.value.retry_after >= 1 and "running" in str(caught.value)
    assert (await on_b.admit("bob", "t-bob")).principal == "bob"  # bob counts apart
    # A turn that did not start frees its slot; it still counted per minute.
    await on_a.release(one)
    three = await on_b.admit("alice", "t3")
    await on_a.release(three)
    await on_b.release(two)
    with pytest.raises(TooManyRequests) as caught:
        await on_b.admit("alice", "t1")  # slots free, but 3 turns this minute
    assert 0 < caught.value.retry_after <= 60 and "minute" in str(caught.value)
    # Chats kept: three (t1, t2, t3); a fourth is refused, an old one goes on.
    relaxed = Limits(concurrent_turns=None, turns_per_minute=None, chats=3)
    with pytest.raises(TooManyRequests, match="chats"):
        await LimitChecker(b, relaxed).admit("alice", "t4")
    assert not (await LimitChecker(a, relaxed).admit("alice", "t2")).new_chat


async def test_a_slot_is_held_while_the_turn_s_lease_lives_and_freed_when_it_expires(
    stores: tuple[Store, Store],
) -> None:
    a, b = stores
    quota = Quota(turns=1, hold=0.05)
    assert (await a.admit_turn("s1", "carol", quota)).admitted
    await a.begin_turn("s1", holder="relay-a", ttl=0.6)
    await asyncio.sleep(0.1)  # past the hold: the lease alone keeps the slot now
    refused = await b.admit_turn("s2", "carol", quota)
    assert refused.refused == "turns" and refused.retry_after >= 1
    # The relay producing it dies: its lease is never renewed and expires.
    await asyncio.sleep(0.7)
    info = await b.chat("s1")
    assert info is not None and info.active and not info.leased
    assert (await b.admit_turn("s2", "carol", quota)).admitted
    # A turn that ends frees its slot at once.
    second = await b.begin_turn("s2", holder="relay-b", ttl=30)
    await asyncio.sleep(0.1)
    assert (await a.admit_turn("s3", "carol", quota)).refused == "turns"
    await b.finish(second)
    assert (await a.admit_turn("s3", "carol", quota)).admitted
    # An admission that started no turn is dropped: its slot is free at once.
    await a.drop_admission("s3", "carol")
    assert (await b.admit_turn("s4", "carol", quota)).admitted
    # Dropped while the chat's turn runs (a second POST to a busy chat), it counts on.
    await b.begin_turn("s4", holder="relay-b", ttl=30)
    await b.drop_admission("s4", "carol")
    assert (await a.admit_turn("s5", "carol", quota)).refused == "turns"


async def test_a_quick_turn_frees_its_slot_when_it_ends_not_when_its_hold_would(
    stores: tuple[Store, Store],
) -> None:
    a, b = stores
    quota = Quota(turns=1, hold=3600)
    for n in range(3):
        assert (await a.admit_turn(f"q{n}", "gina", quota)).admitted
        # Admitted and not begun yet: held, on every relay.
        assert (await b.admit_turn("other", "gina", quota)).refused == "turns"
        lease = await b.begin_turn(f"q{n}", holder="relay-b", ttl=30)
        assert (await a.admit_turn("other", "gina", quota)).refused == "turns"
        await a.finish(lease)
    # An admission whose chat was busy (its POST got 409) holds nothing once dropped...
    assert (await a.admit_turn("q0", "gina", quota)).admitted
    running = await a.begin_turn("q0", holder="relay-a", ttl=30)
    assert (await a.admit_turn("q1", "gina", quota)).refused == "turns"
    assert (await b.admit_turn("q0", "gina", quota)).admitted  # the chat's own slot
    await b.drop_admission("q0", "gina")
    # ... but the turn running there still counts, until it ends.
    assert (await a.admit_turn("q1", "gina", quota)).refused == "turns"
    await b.finish(running)
    assert (await a.admit_turn("q1", "gina", quota)).admitted


async def test_an_unused_claim_expires_like_an_idle_chat_and_frees_its_count() -> None:
    store = MemoryStore(keep_seconds=0.05, chat_seconds=0.1)
    quota = Quota(chats=1)
    assert (await store.admit_turn("only", "dave", quota)).new_chat
    assert (await store.admit_turn("second", "dave", quota)).refused == "chats"
    await asyncio.sleep(0.2)
    assert await store.chat("only") is None  # swept with the idle chats
    assert (await store.admit_turn("second", "dave", quota)).admitted
    # Once its record is gone, the id is free: whoever comes first owns it anew.
    assert (await store.admit_turn("only", "erin", Quota())).new_chat


async def test_redis_claims_expire_and_principal_names_shape_no_key(redis: RedisServer) -> None:
    prefix = f"acc{next(_prefixes)}:"
    store = RedisStore(redis.url, prefix=prefix, keep_seconds=0.1, chat_seconds=0.3)
    async with store:
        weird = "user:with spaces/and:colons{braces}*"
        assert (await store.admit_turn("c", weird, Quota(turns=1, rate=5, chats=2))).new_chat
        found = await store._redis.keys(f"{prefix}*")
        keys = [k.decode() if isinstance(k, bytes) else k for k in found]
        assert sum(k.startswith(f"{prefix}principal:") for k in keys) == 3, keys
        assert all("colons" not in k and "spaces" not in k for k in keys), keys
        assert await store.owner("c") == weird
        await asyncio.sleep(0.5)
        assert await store.owner("c") is None and await store.chat("c") is None
        assert (await store.admit_turn("c", "frank", Quota(chats=2))).new_chat


def test_quotas_refuse_nonsense() -> None:
    cases: list[dict[str, Any]] = [{"turns": 0}, {"rate": -1}, {"chats": 1.5}, {"window": 0}]
    for bad in cases:
        with pytest.raises(ValueError):
            Quota(**bad)
    assert os.environ.get("DOC_RELAY_TOKEN") is None  # the module's doctest cleaned up
