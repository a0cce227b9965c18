"""The emulator over real loopback HTTP: endpoints, auth, validation, stream, faults."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import msgspec
import pytest

from handinger_stream.emulator import FAULT_HEADER, Emulator, Fault
from handinger_stream.protocol.sse import SSEDecoder
from tests.conftest import API_KEY

AUTH = {"authorization": f"Bearer {API_KEY}"}


async def _sse(resp: aiohttp.ClientResponse) -> list[tuple[str | None, bytes]]:
    decoder = SSEDecoder()
    out = []
    async for chunk in resp.content.iter_any():
        out += [(e.id, e.raw) for e in decoder.feed(chunk)]
    return out


async def test_stream_headers_snapshots_chunks_and_done(emulator: Emulator) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            emulator.base_url + "/api/workers", json={"input": "hi", "stream": True}, headers=AUTH
        ) as resp,
    ):
        assert resp.status == 200
        for name, value in {
            "content-type": "text/event-stream",
            "cache-control": "no-cache",
            "x-vercel-ai-ui-message-stream": "v1",
            "x-accel-buffering": "no",
        }.items():
            assert resp.headers[name].startswith(value)
        worker_id = resp.headers["x-handinger-worker-id"]
        events = await _sse(resp)
    assert events[-1] == (events[-2][0], b"[DONE]")
    ids = [int(i) for i, _ in events[:-1]]  # type: ignore[arg-type]
    assert ids == sorted(ids) == list(range(len(ids)))
    chunks = [msgspec.json.decode(raw) for _, raw in events[:-1]]
    first, last = chunks[0], chunks[-1]
    assert first["type"] == last["type"] == "data-worker" and first["transient"] is True
    assert first["data"]["id"] == worker_id and first["data"]["status"] == "pending"
    assert last["data"]["status"] == "completed" and last["data"]["running"] is False
    types = [c["type"] for c in chunks[1:-1]]
    assert types[0] == "start" and types[-1] == "finish"
    for needed in (
        "text-delta",
        "source-url",
        "reasoning-delta",
        "tool-input-available",
        "message-metadata",
    ):
        assert needed in types
    text = "".join(c["delta"] for c in chunks if c["type"] == "text-delta")
    assert last["data"]["output_text"] == text
    usage = last["data"]["usage"]
    assert usage["outputTokens"] == types.count("text-delta") + types.count("reasoning-delta")
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]


async def test_deterministic_for_input_and_seed() -> None:
    async def answer(seed: int) -> str:
        async with (
            Emulator(seed=seed) as emu,
            aiohttp.ClientSession() as s,
            s.post(
                emu.base_url + "/api/workers",
                json={"input": "Same question", "stream": True},
                headers={"authorization": "Bearer any"},
            ) as resp,
        ):
            chunks = [msgspec.json.decode(r) for _, r in (await _sse(resp))[:-1]]
            return "".join(c.get("delta", "") for c in chunks if c["type"] == "text-delta")

    assert await answer(1) == await answer(1)
    assert await answer(1) != await answer(2)


@pytest.mark.parametrize("budget", ["low", "standard", "high", "unlimited"])
async def test_costs_scale_with_budget(emulator: Emulator, budget: str) -> None:
    async with aiohttp.ClientSession() as s:
        costs = {}
        for b in ("low", "standard", "high", "unlimited"):
            async with s.post(
                emulator.base_url + "/api/workers",
                json={"input": "cost check", "budget": b, "stream": True},
                headers=AUTH,
            ) as r:
                final = msgspec.json.decode((await _sse(r))[-2][1])["data"]
                costs[b] = (sum(final["costs"].values()), len(final["output_text"]))
    assert costs["low"] < costs["standard"] < costs["high"] < costs["unlimited"]


async def test_auth() -> None:
    async with Emulator(api_key="right") as emu, aiohttp.ClientSession() as s:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic right"}):
            async with s.get(emu.base_url + "/api/workers/x", headers=headers) as r:
                assert r.status == 401 and r.content_type == "application/json"
                body = await r.json()
                assert body["error"]["type"] == "authentication_error" and "right" not in str(body)
        async with s.get(
            emu.base_url + "/api/workers/x", headers={"authorization": "Bearer right"}
        ) as r:
            assert r.status == 404
    async with Emulator() as emu, aiohttp.ClientSession() as s:
        async with s.get(
            emu.base_url + "/api/workers/x", headers={"authorization": "Bearer anything"}
        ) as r:
            assert r.status == 404
        async with s.get(emu.base_url + "/api/workers/x") as r:
            assert r.status == 401


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1]",
        b"{}",
        b'{"input": ""}',
        b'{"input": 3}',
        b'{"input": "x", "budget": "huge"}',
        b'{"input": "x", "stream": "yes"}',
    ],
)
async def test_validation_is_a_json_400(emulator: Emulator, body: bytes) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            emulator.base_url + "/api/workers",
            data=body,
            headers={**AUTH, "content-type": "application/json"},
        ) as r,
    ):
        assert r.status == 400 and r.content_type == "application/json"
        assert (await r.json())["error"]["message"]


async def test_unknown_routes_and_methods_are_json(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(emulator.base_url + "/nope", headers=AUTH) as r:
            assert r.status == 404 and r.content_type == "application/json"
        async with s.delete(emulator.base_url + "/api/workers", headers=AUTH) as r:
            assert r.status == 405 and r.content_type == "application/json"


async def test_replay_and_last_event_id(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(
            emulator.base_url + "/api/workers", json={"input": "r", "stream": True}, headers=AUTH
        ) as r:
            wid = r.headers["x-handinger-worker-id"]
            original = await _sse(r)
        async with s.get(f"{emulator.base_url}/api/workers/{wid}?stream=true", headers=AUTH) as r:
            assert await _sse(r) == original
        async with s.get(
            f"{emulator.base_url}/api/workers/{wid}?stream=true",
            headers={**AUTH, "last-event-id": "9"},
        ) as r:
            assert await _sse(r) == original[10:]
        async with s.get(
            f"{emulator.base_url}/api/workers/{wid}/stream", headers={**AUTH, "last-event-id": "9"}
        ) as r:
            assert await _sse(r) == original[10:]


async def test_keepalive_comments_while_the_agent_thinks() -> None:
    async with (
        Emulator(tokens_per_second=5, keepalive_interval=0.05) as emu,
        aiohttp.ClientSession() as s,
    ):
        async with s.post(
            emu.base_url + "/api/workers",
            json={"input": "k", "stream": True},
            headers={"authorization": "Bearer x"},
        ) as r:
            raw = await r.content.read(4000)
            while b": keep-alive" not in raw:
                raw += await r.content.read(4000)
            assert b": keep-alive\n\n" in raw


async def test_fault_drop_after(emulator: Emulator) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            emulator.base_url + "/api/workers",
            json={"input": "d", "stream": True},
            headers={**AUTH, FAULT_HEADER: "drop-after=5"},
        ) as r,
    ):
        decoder = SSEDecoder()
        got = []
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in r.content.iter_any():
                got += decoder.feed(chunk)
        assert len(got) == 5


async def test_fault_stall(emulator: Emulator) -> None:
    # The clock starts before the request goes out, so the server's pause lies wholly
    # inside what is measured (started once the headers arrived, it could miss the
    # pause's first instant: 0.2989 s was seen).
    arrivals: list[float] = []
    async with aiohttp.ClientSession() as s:
        started = time.monotonic()
        async with s.post(
            emulator.base_url + "/api/workers",
            json={"input": "s", "stream": True},
            headers={**AUTH, FAULT_HEADER: "stall-after=3; stall-seconds=0.3"},
        ) as r:
            decoder = SSEDecoder()
            async for chunk in r.content.iter_any():
                arrivals += [time.monotonic() - started for _ in decoder.feed(chunk)]
    assert len(arrivals) > 4  # the stream went on after the pause, to its end
    assert arrivals[3] >= 0.3  # the fourth event came after it


async def test_fault_no_ids(emulator: Emulator) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            emulator.base_url + "/api/workers",
            json={"input": "n", "stream": True},
            headers={**AUTH, FAULT_HEADER: "no-ids=1"},
        ) as r,
    ):
        assert all(i is None for i, _ in await _sse(r))


async def test_fault_status_for_the_first_k_requests(emulator: Emulator) -> None:
    fault = "status=429; status-times=2; retry-after=3"
    async with aiohttp.ClientSession() as s:
        statuses = []
        for _ in range(3):
            async with s.post(
                emulator.base_url + "/api/workers",
                json={"input": "x"},
                headers={**AUTH, FAULT_HEADER: fault},
            ) as r:
                statuses.append((r.status, r.headers.get("retry-after")))
        assert statuses == [(429, "3"), (429, "3"), (200, None)]


async def test_bad_fault_header_is_a_400(emulator: Emulator) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            emulator.base_url + "/api/workers",
            json={"input": "x"},
            headers={**AUTH, FAULT_HEADER: "explode=1"},
        ) as r,
    ):
        assert r.status == 400 and "explode" in (await r.json())["error"]["message"]


def test_fault_parsing() -> None:
    f = Fault.parse("drop-after=3; stall-after=2; stall-seconds=1.5; no-ids=1")
    assert (f.drop_after, f.stall_after, f.stall_seconds, f.no_ids) == (3, 2, 1.5, True)
    with pytest.raises(ValueError):
        Fault.parse("drop-after=x")


async def test_continue_while_running_is_a_conflict() -> None:
    async with Emulator(tokens_per_second=50) as emu, aiohttp.ClientSession() as s:
        h = {"authorization": "Bearer x"}
        async with s.post(emu.base_url + "/api/workers", json={"input": "long"}, headers=h) as r:
            wid = (await r.json())["id"]
        async with s.post(
            f"{emu.base_url}/api/workers/{wid}", json={"input": "more"}, headers=h
        ) as r:
            assert r.status == 409


def test_thread_mode_and_pytest_fixture(handinger_emulator: Emulator) -> None:
    import httpx

    options = handinger_emulator.client_options()
    r = httpx.post(
        options["base_url"] + "/api/workers",
        json={"input": "sync"},
        headers={"authorization": f"Bearer {options['api_key']}"},
    )
    assert r.status_code == 200 and r.json()["object"] == "worker"


async def test_shutdown_with_running_agents_is_clean() -> None:
    async with Emulator(tokens_per_second=5) as emu, aiohttp.ClientSession() as s:
        async with s.post(
            emu.base_url + "/api/workers",
            json={"input": "bg"},
            headers={"authorization": "Bearer x"},
        ) as r:
            assert r.status == 200
    await asyncio.sleep(0)
