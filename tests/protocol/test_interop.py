"""Fidelity to the real AI SDK (npm ``ai``, pinned in ``tests/interop/package.json``).

Three directions, one comparison: our ``Worker.messages[-1]`` against the
``UIMessage`` the SDK's own ``readUIMessageStream`` folds from the same bytes.

* Recorded fixtures (``tests/interop/fixtures``): bytes the SDK serialised and
  the message it folded, replayed byte-exact over loopback, whole and in small
  random pieces that split UTF-8 characters. No Node needed.
* Live: the SDK serves the scenarios from a real HTTP server (``server.mjs``)
  and folds a tee of the very bytes it sent; a fixture can never drift.
* Reverse: the SDK reads our emulator (``read_stream.mjs``) and must build
  the message our reducer builds.

No names are mapped: ``Worker.messages`` keeps the wire's camelCase keys, so a
message compares to the SDK's JSON as it is.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from handinger_stream import (
    AsyncHandinger,
    File,
    Source,
    Worker,
    WorkerFailedError,
)
from handinger_stream.client.transport import TransportName
from handinger_stream.emulator import Emulator
from handinger_stream.protocol.reducer import fold
from handinger_stream.protocol.sse import SSEDecoder
from handinger_stream.protocol.wire import DONE, decode_event
from tests.conftest import API_KEY, Canned, RawServer
from tests.nodejs import npm_project

INTEROP = Path(__file__).parent.parent / "interop"
FIXTURES = INTEROP / "fixtures"
SCENARIOS = sorted(p.stem for p in FIXTURES.glob("*.json"))
SSE_HEADERS = {"content-type": "text/event-stream", "x-vercel-ai-ui-message-stream": "v1"}


def recorded(name: str) -> tuple[bytes, dict[str, Any]]:
    record = json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))
    return (FIXTURES / f"{name}.sse").read_bytes(), record


def random_pieces(data: bytes, seed: int) -> list[bytes]:
    """Small random pieces (larger for big streams, to keep the test quick).

    Besides the random cuts, every other multi-byte UTF-8 character is cut in two.
    """
    rnd = random.Random(seed)
    top = 7 if len(data) < 100_000 else 200
    cuts, i = set(), 0
    while i < len(data):
        i += rnd.randint(1, top)
        cuts.add(i)
    starts = [i for i, b in enumerate(data) if b >= 0xC0]
    cuts.update(i + 1 for i in starts[::2])
    bounds = [0, *sorted(c for c in cuts if c < len(data)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def splits_a_character(pieces: list[bytes]) -> bool:
    # A piece that starts with a UTF-8 continuation byte cut a character in two.
    return any(p and 0x80 <= p[0] < 0xC0 for p in pieces[1:])


def text_of(messages: list[Any]) -> str:
    return "".join(part["text"] for m in messages for part in m["parts"] if part["type"] == "text")


def assert_follows_from_sdk(worker: Worker, sdk: dict[str, Any]) -> None:
    """The Worker's message is the SDK's, and its other fields follow from it."""
    message, errors = sdk["message"], sdk["errors"]
    if message is None:
        assert worker.messages == []
        assert worker.output_text == ""
        return
    assert worker.messages[-1] == message
    # Every message the stream started is kept; the SDK shows the last one.
    assert worker.output_text == text_of(worker.messages)
    parts = message["parts"]
    assert worker.sources == [
        Source(id=p["sourceId"], url=p["url"], title=p.get("title"))
        for p in parts
        if p["type"] == "source-url"
    ]
    assert worker.files == [
        File(url=p["url"], media_type=p["mediaType"]) for p in parts if p["type"] == "file"
    ]
    usage = (message.get("metadata") or {}).get("usage")
    if isinstance(usage, dict):
        assert worker.usage is not None
        assert worker.usage.input_tokens == usage.get("inputTokens", 0)
        assert worker.usage.output_tokens == usage.get("outputTokens", 0)
    else:
        assert worker.usage is None
    # The SDK reports an error chunk through onError; we keep its text on the Worker.
    assert worker.error == (errors[-1] if errors else None)


async def stream_worker(base_url: str, transport: TransportName, input: str = "replay") -> Worker:
    async with AsyncHandinger(
        api_key="interop-key", base_url=base_url, transport=transport, max_retries=0
    ) as client:
        async with await client.workers.create(input=input, stream=True) as stream:
            async for _ in stream:
                pass
            assert stream.completed
            return stream.snapshot


def test_every_scenario_has_a_fixture() -> None:
    # A scenario added without regenerating would silently test less.
    source = (INTEROP / "scenarios.mjs").read_text("utf-8")
    defined = set(re.findall(r'^  "?([a-z0-9-]+)"?: \{$', source, re.MULTILINE))
    assert len(defined) >= 24
    assert defined == set(SCENARIOS)
    for name in SCENARIOS:
        assert (FIXTURES / f"{name}.sse").exists()


@pytest.mark.parametrize("name", SCENARIOS)
async def test_fixture_whole(raw_server: RawServer, transport: TransportName, name: str) -> None:
    data, record = recorded(name)
    raw_server.serve(Canned([data], headers=SSE_HEADERS))
    assert_follows_from_sdk(await stream_worker(raw_server.base_url, transport), record)


@pytest.mark.parametrize("name", SCENARIOS)
async def test_fixture_rechunked(
    raw_server: RawServer, transport: TransportName, name: str
) -> None:
    data, record = recorded(name)
    pieces = random_pieces(data, seed=len(name))
    if any(b >= 0x80 for b in data):
        assert splits_a_character(pieces)
    raw_server.serve(Canned(pieces, headers=SSE_HEADERS))
    assert_follows_from_sdk(await stream_worker(raw_server.base_url, transport), record)


@pytest.mark.parametrize("name", SCENARIOS)
def test_fixture_sans_io_in_pieces(name: str) -> None:
    # The same pieces straight into the decoder: splits reach it whatever TCP coalesces.
    data, record = recorded(name)
    decoder = SSEDecoder()
    raw = [e for piece in random_pieces(data, seed=7) for e in decoder.feed(piece)]
    raw += decoder.close()
    events = [decode_event(e, i) for i, e in enumerate(raw) if e.raw != DONE]
    assert_follows_from_sdk(fold(events), record)


async def test_an_error_chunk_fails_get_final_worker(raw_server: RawServer) -> None:
    # Deliberate difference: the SDK only reports an error chunk to onError and
    # keeps the message; get_final_worker() raises, with that message attached.
    data, record = recorded("error-after-text")
    raw_server.serve(Canned([data], headers=SSE_HEADERS))
    async with AsyncHandinger(api_key="k", base_url=raw_server.base_url) as client:
        stream = await client.workers.create(input="x", stream=True)
        with pytest.raises(WorkerFailedError) as info:
            await stream.get_final_worker()
    assert info.value.message == record["errors"][0] == "failed: model overloaded"
    assert info.value.worker is not None
    assert info.value.worker.messages[-1] == record["message"]


async def test_abort_marks_the_worker_incomplete(raw_server: RawServer) -> None:
    # The SDK's message does not record an abort; our Worker says why it stopped.
    data, record = recorded("abort")
    raw_server.serve(Canned([data], headers=SSE_HEADERS))
    worker = await stream_worker(raw_server.base_url, "aiohttp")
    assert worker.messages[-1] == record["message"]
    assert worker.incomplete_details == {"reason": "user cancelled"}
    assert worker.status == "completed"


# -- live: the SDK itself serves and folds ------------------------------------


@pytest.fixture(scope="module")
def sdk_server() -> Iterator[str]:
    project = npm_project(INTEROP)
    process = subprocess.Popen(
        ["node", "server.mjs"], cwd=project, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    try:
        port = json.loads(process.stdout.readline())["port"]
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(5)
        process.stdout.close()


@pytest.mark.parametrize("name", SCENARIOS)
async def test_live_sdk_server(sdk_server: str, transport: TransportName, name: str) -> None:
    worker = await stream_worker(sdk_server, transport, input=name)
    async with httpx.AsyncClient() as http:
        sdk = (await http.get(f"{sdk_server}/sdk/{name}", timeout=30)).json()
    assert "failed" not in sdk, sdk
    assert_follows_from_sdk(worker, sdk)
    # The live stream and the recorded one fold to the same message.
    assert sdk["message"] == recorded(name)[1]["message"]


# -- reverse: the SDK reads our emulator --------------------------------------


@pytest.fixture(scope="module")
def sdk_reader() -> Path:
    return npm_project(INTEROP)


@pytest.fixture
async def reverse_client(emulator: Emulator) -> AsyncIterator[AsyncHandinger]:
    async with AsyncHandinger(api_key=API_KEY, base_url=emulator.base_url) as client:
        yield client


@pytest.mark.parametrize(
    "prompt",
    ["Hello there", "What's the weather in Barcelona?", "Research the history of SSE"],
)
async def test_sdk_reads_our_emulator(
    sdk_reader: Path, emulator: Emulator, reverse_client: AsyncHandinger, prompt: str
) -> None:
    with anyio.fail_after(60):
        result = await anyio.run_process(
            ["node", "read_stream.mjs", emulator.base_url, prompt],
            cwd=sdk_reader,
            env={**os.environ, "HANDINGER_API_KEY": API_KEY},
        )
    theirs = json.loads(result.stdout)
    assert theirs["status"] == 200, theirs
    assert theirs["uiMessageStream"] == "v1"
    assert theirs["errors"] == []
    # Our reducer, over the worker's replay of the same stream.
    stream = await reverse_client.workers.retrieve(theirs["workerId"], stream=True)
    ours = await stream.get_final_worker()
    assert ours.messages[-1] == theirs["message"]
    # And the server's own record of the worker agrees with both.
    stored = await reverse_client.workers.retrieve(theirs["workerId"])
    assert stored.messages[-1] == theirs["message"]
