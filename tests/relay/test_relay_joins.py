"""What a reader joining a turn costs the store: one look at the chat, not two."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from handinger_stream import AsyncHandinger, InvalidRequestError
from handinger_stream.relay import ChatInfo, MemoryStore, Relay
from handinger_stream.relay.access import Access, bearer_token
from tests.conftest import Canned, RawServer
from tests.relay.test_relay import serve_aiohttp
from tests.relay_helpers import chat_body, http, read_sse

__all__ = ["http"]  # a fixture of tests/relay_helpers.py, used here


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.looks = 0

    async def chat(self, chat_id: str) -> ChatInfo | None:
        self.looks += 1
        return await super().chat(chat_id)


async def test_a_joiner_looks_at_the_chat_once(
    raw_server: RawServer, http: aiohttp.ClientSession
) -> None:
    events = [
        b'id: %d\ndata: {"type":"text-delta","id":"t","delta":"%d "}\n\n' % (i, i)
        for i in range(40)
    ]
    raw_server.serve(
        Canned(
            [b'id: s\ndata: {"type":"text-start","id":"t"}\n\n', *events, b"data: [DONE]\n\n"],
            headers={"content-type": "text/event-stream", "x-handinger-worker-id": "wrk_j"},
            pauses={0: 1.0},
            delay=0.01,
        )
    )
    store = CountingStore()
    async with (
        AsyncHandinger(api_key="k", base_url=raw_server.base_url) as client,
        Relay(client, store) as relay,
    ):
        runner, base = await serve_aiohttp(relay, keepalive=5.0)
        try:
            await relay.attach(await client.workers.retrieve("wrk_j", stream=True))
            store.looks = 0
            url = base + "api/chat/wrk_j/stream"
            replies = await asyncio.gather(*(read_sse(http, "GET", url) for _ in range(20)))
        finally:
            await runner.cleanup()
    assert all(reply.complete and len(reply.events) >= 2 for reply in replies)
    assert store.looks == 20  # the reader starts from what the request read


async def test_a_reader_given_another_chats_record_is_refused() -> None:
    async with AsyncHandinger(api_key="k", base_url="http://127.0.0.1:9") as client:
        relay = Relay(client)
        info = ChatInfo(
            chat_id="a",
            worker_id=None,
            active=False,
            turn_start=1,
            last_seq=0,
            last_upstream_id=None,
            status="pending",
            producer=None,
            leased=False,
        )
        with pytest.raises(InvalidRequestError):
            relay.read("b", info=info)
        await relay.aclose()


async def test_quiet_readers_share_their_checks_of_the_chat(
    raw_server: RawServer, http: aiohttp.ClientSession
) -> None:
    # A quiet turn: each reader checks every check_interval whether it is still produced.
    # Fifty readers share one look per chat for a quarter of that interval.
    raw_server.serve(
        Canned(
            [b'id: 0\ndata: {"type":"text-start","id":"t"}\n\n', b"data: [DONE]\n\n"],
            headers={"content-type": "text/event-stream", "x-handinger-worker-id": "wrk_q"},
            pauses={0: 2.5},
        )
    )
    store = CountingStore()
    async with (
        AsyncHandinger(api_key="k", base_url=raw_server.base_url) as client,
        Relay(client, store, lease_seconds=0.4) as relay,  # a check every 0.2 s
    ):
        runner, base = await serve_aiohttp(relay, keepalive=5.0)
        try:
            await relay.attach(await client.workers.retrieve("wrk_q", stream=True))
            url = base + "api/chat/wrk_q/stream"
            readers = [asyncio.ensure_future(read_sse(http, "GET", url)) for _ in range(50)]
            await asyncio.sleep(0.5)  # every reader joined, and waiting
            store.looks = 0
            await asyncio.sleep(1.0)
            looks = store.looks
            replies = await asyncio.gather(*readers)
        finally:
            await runner.cleanup()
    assert all(reply.complete for reply in replies)
    # One look per 0.05 s at most (20 in the second), where each reader's own was 250.
    assert looks <= 25, looks


class OwnerCountingStore(CountingStore):
    async def owner(self, chat_id: str) -> str | None:
        self.looks += 1
        return await super().owner(chat_id)


async def test_with_access_a_joiner_still_looks_once_and_only_the_owner_joins(
    raw_server: RawServer, http: aiohttp.ClientSession
) -> None:
    raw_server.serve(
        Canned(
            [b'id: 0\ndata: {"type":"text-start","id":"t"}\n\n', b"data: [DONE]\n\n"],
            headers={"content-type": "text/event-stream", "x-handinger-worker-id": "wrk_o"},
            pauses={0: 1.5},
        )
    )
    store = OwnerCountingStore()
    tokens = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab"}
    access = Access(store, authenticate=bearer_token(tokens))
    alice = {"authorization": "Bearer alice-token-0123456789"}
    bob = {"authorization": "Bearer bob-token-0123456789ab"}
    async with (
        AsyncHandinger(api_key="k", base_url=raw_server.base_url) as client,
        Relay(client, store) as relay,
    ):
        runner, base = await serve_aiohttp(relay, keepalive=5.0, access=access)
        try:
            first = await read_sse(
                http,
                "POST",
                base + "api/chat",
                json=chat_body("owned", "Hi"),
                headers=alice,
                stop_after=1,
            )
            assert first.status == 200
            store.looks = 0
            url = base + "api/chat/owned/stream"
            theirs = await asyncio.gather(
                *(read_sse(http, "GET", url, headers=alice) for _ in range(10))
            )
            looks = store.looks
            async with http.get(url, headers=bob) as other:
                assert other.status == 204  # another's chat looks like one never seen
        finally:
            await runner.cleanup()
    assert all(reply.status == 200 and reply.complete for reply in theirs)
    assert looks == 10
