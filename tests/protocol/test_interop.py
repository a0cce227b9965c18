"""Fidelity to the real AI SDK, both majors: npm ``ai`` 6 and 7, pinned in
``tests/interop/ai6`` and ``tests/interop/ai7``.

Three directions, one comparison: our ``Worker.messages[-1]``, folded with
``ai_sdk=6`` or ``ai_sdk=7``, against the ``UIMessage`` that major's own
``readUIMessageStream`` folds from the same bytes.

* Recorded fixtures (``tests/interop/ai<N>/fixtures``): bytes the SDK
  serialised and the message it folded, replayed byte-exact over loopback:
  whole; in small random pieces that split UTF-8 characters; with the SDK's
  keep-alive comments between events; cut at a random byte and resumed from
  the worker's replay; and through the sans-IO decoder. No Node needed.
* Live: the SDK serves the scenarios from a real HTTP server (``server.mjs``)
  and folds a tee of the very bytes it sent; a fixture can never drift.
* Reverse: the SDK reads our emulator (``read_stream.mjs``) and must build
  the message our reducer builds.

ai 7 declares Node >= 22: its scripts run under ``tests.nodejs.node22()``
(``node_for`` reads each project's ``engines``). No names are mapped:
``Worker.messages`` keeps the wire's camelCase keys, so a message compares to
the SDK's JSON as it is.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from handinger_stream import (
    AISDKVersion,
    AsyncHandinger,
    File,
    Source,
    Worker,
    WorkerFailedError,
)
from handinger_stream.client.transport import TransportName
from handinger_stream.emulator import Emulator
from handinger_stream.protocol.reducer import fold
from handinger_stream.protocol.sse import ServerSentEvent, SSEDecoder
from handinger_stream.protocol.wire import DONE, decode_event, encode_event
from tests.conftest import API_KEY, Canned, RawServer
from tests.nodejs import node_for, npm_project

INTEROP = Path(__file__).parent.parent / "interop"
MAJORS: tuple[AISDKVersion, ...] = (6, 7)
SSE_HEADERS = {"content-type": "text/event-stream", "x-vercel-ai-ui-message-stream": "v1"}
# The SDK's own comments (createUIMessageStreamResponse with keepAliveMs).
STREAM_OPEN, KEEP_ALIVE = b": stream-open\n\n", b": keep-alive\n\n"


def project(major: AISDKVersion) -> Path:
    return INTEROP / f"ai{major}"


def fixtures(major: AISDKVersion) -> Path:
    return project(major) / "fixtures"


def scenarios(major: AISDKVersion) -> list[str]:
    return sorted(p.stem for p in fixtures(major).glob("*.json"))


# Every scenario of every major: ids like ``ai7-reset-step``.
CASES = [
    pytest.param(major, name, id=f"ai{major}-{name}")
    for major in MAJORS
    for name in scenarios(major)
]


def recorded(major: AISDKVersion, name: str) -> tuple[bytes, dict[str, Any]]:
    record = json.loads((fixtures(major) / f"{name}.json").read_text("utf-8"))
    return (fixtures(major) / f"{name}.sse").read_bytes(), record


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


def with_keep_alives(data: bytes, seed: int) -> bytes:
    """The stream as the SDK sends it with ``keepAliveMs``: a ``stream-open``
    comment first (unless it has one), and ``keep-alive`` comments between
    events, here after the first and a random half of the others."""
    rnd = random.Random(seed)
    events = data.split(b"\n\n")
    out = [] if data.startswith(STREAM_OPEN) else [STREAM_OPEN]
    for i, event in enumerate(events[:-1]):
        out.append(event + b"\n\n")
        if i == 0 or rnd.random() < 0.5:
            out.append(KEEP_ALIVE)
    out.append(events[-1])
    return b"".join(out)


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


async def stream_worker(
    base_url: str, transport: TransportName, major: AISDKVersion, input: str = "replay"
) -> Worker:
    async with AsyncHandinger(
        api_key="interop-key", base_url=base_url, transport=transport, max_retries=0, ai_sdk=major
    ) as client:
        async with await client.workers.create(input=input, stream=True) as stream:
            async for _ in stream:
                pass
            assert stream.completed
            return stream.snapshot


def sse_events(data: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return [e for e in decoder.feed(data) + decoder.close() if e.raw != DONE]


# -- the fixtures themselves ----------------------------------------------------


def defined_scenarios(script: str) -> set[str]:
    source = (INTEROP / script).read_text("utf-8")
    return set(re.findall(r'^  "?([a-z0-9-]+)"?: \{$', source, re.MULTILINE))


@pytest.mark.parametrize("major", MAJORS, ids=[f"ai{m}" for m in MAJORS])
def test_every_scenario_has_a_fixture_of_its_major(major: AISDKVersion) -> None:
    # A scenario added without regenerating would silently test less.
    both = defined_scenarios("scenarios.mjs")
    since7 = defined_scenarios("scenarios-ai7.mjs")
    assert len(both) >= 25 and len(since7) >= 18 and not both & since7
    assert set(scenarios(major)) == (both if major == 6 else both | since7)
    pinned = json.loads((project(major) / "package.json").read_text("utf-8"))["dependencies"]["ai"]
    assert pinned.startswith(f"{major}.")
    for name in scenarios(major):
        assert (fixtures(major) / f"{name}.sse").exists()
        # Made by the pinned SDK, not left over from another version.
        assert recorded(major, name)[1]["sdk"] == f"ai@{pinned}"


@pytest.mark.parametrize(("major", "name"), CASES)
def test_every_chunk_round_trips(major: AISDKVersion, name: str) -> None:
    # Typed events go back to the wire as the SDK wrote them (as JSON; the key
    # order of the fields we model may differ), without our eventId.
    data, _ = recorded(major, name)
    for index, sse in enumerate(sse_events(data)):
        encoded = encode_event(decode_event(sse, index))
        assert msgspec.json.decode(encoded) == msgspec.json.decode(sse.raw), sse.raw[:300]
        assert b"eventId" not in encoded


# The scenarios whose chunks carry fields no schema names (at the top level, or
# inside a citation or a steering message's part).
EXTRA_FIELDS = [
    case
    for case in CASES
    if str(case.values[1]).startswith("extra-fields") or case.values[1] == "citations-writer"
]


@pytest.mark.parametrize(("major", "name"), EXTRA_FIELDS)
def test_fields_we_do_not_model_survive_byte_for_byte(major: AISDKVersion, name: str) -> None:
    # The SDK's chunk schemas are loose objects: a field we do not model is the
    # SDK's to keep, and a chunk carrying one goes back exactly as it came.
    data, _ = recorded(major, name)
    for index, sse in enumerate(sse_events(data)):
        assert encode_event(decode_event(sse, index)) == sse.raw, sse.raw[:300]


# -- deliveries of the recorded bytes ---------------------------------------------


@pytest.mark.parametrize(("major", "name"), CASES)
async def test_fixture_whole(
    raw_server: RawServer, transport: TransportName, major: AISDKVersion, name: str
) -> None:
    data, record = recorded(major, name)
    raw_server.serve(Canned([data], headers=SSE_HEADERS))
    assert_follows_from_sdk(await stream_worker(raw_server.base_url, transport, major), record)


@pytest.mark.parametrize(("major", "name"), CASES)
async def test_fixture_rechunked(
    raw_server: RawServer, transport: TransportName, major: AISDKVersion, name: str
) -> None:
    data, record = recorded(major, name)
    pieces = random_pieces(data, seed=len(name) + major)
    if any(b >= 0x80 for b in data):
        assert splits_a_character(pieces)
    raw_server.serve(Canned(pieces, headers=SSE_HEADERS))
    assert_follows_from_sdk(await stream_worker(raw_server.base_url, transport, major), record)


@pytest.mark.parametrize(("major", "name"), CASES)
async def test_fixture_padded_with_sse_comments(
    raw_server: RawServer, transport: TransportName, major: AISDKVersion, name: str
) -> None:
    data, record = recorded(major, name)
    padded = with_keep_alives(data, seed=major * 100 + len(name))
    assert padded.count(KEEP_ALIVE) > data.count(KEEP_ALIVE)
    raw_server.serve(Canned(random_pieces(padded, seed=len(name)), headers=SSE_HEADERS))
    assert_follows_from_sdk(await stream_worker(raw_server.base_url, transport, major), record)


@pytest.mark.parametrize(("major", "name"), CASES)
async def test_fixture_cut_and_resumed(
    raw_server: RawServer, transport: TransportName, major: AISDKVersion, name: str
) -> None:
    # The POST's answer ends at a random byte; the client resumes from the
    # worker's replay (GET, from the start: the SDK's events carry no ids) and
    # skips what it had. `retry: 5` is the server's own line, as Handinger's.
    data, record = recorded(major, name)
    rnd = random.Random(f"{major}-{name}")
    headers = {**SSE_HEADERS, "x-handinger-worker-id": f"w-{name}"}
    for cut in sorted({rnd.randint(1, len(data) - 1) for _ in range(2)}):
        first = b"retry: 5\n\n" + data[:cut]
        raw_server.serve(
            Canned(random_pieces(first, seed=cut), headers=headers),
            Canned([data], headers=headers),
        )
        worker = await stream_worker(raw_server.base_url, transport, major)
        assert_follows_from_sdk(worker, record)
        methods = [r["method"] for r in raw_server.requests]
        assert methods[0] == "POST" and set(methods[1:]) <= {"GET"}, (cut, methods)


@pytest.mark.parametrize(("major", "name"), CASES)
def test_fixture_sans_io_in_pieces(major: AISDKVersion, name: str) -> None:
    # The same pieces straight into the decoder: splits reach it whatever TCP coalesces.
    data, record = recorded(major, name)
    decoder = SSEDecoder()
    raw = [e for piece in random_pieces(data, seed=7) for e in decoder.feed(piece)]
    raw += decoder.close()
    events = [decode_event(e, i) for i, e in enumerate(raw) if e.raw != DONE]
    assert_follows_from_sdk(fold(events, ai_sdk=major), record)


@pytest.mark.parametrize("major", MAJORS, ids=[f"ai{m}" for m in MAJORS])
async def test_an_error_chunk_fails_get_final_worker(
    raw_server: RawServer, major: AISDKVersion
) -> None:
    # Deliberate difference: the SDK only reports an error chunk to onError and
    # keeps the message; get_final_worker() raises, with that message attached.
    data, record = recorded(major, "error-after-text")
    raw_server.serve(Canned([data], headers=SSE_HEADERS))
    async with AsyncHandinger(api_key="k", base_url=raw_server.base_url, ai_sdk=major) as client:
        stream = await client.workers.create(input="x", stream=True)
        with pytest.raises(WorkerFailedError) as info:
            await stream.get_final_worker()
    assert info.value.message == record["errors"][0] == "failed: model overloaded"
    assert info.value.worker is not None
    assert info.value.worker.messages[-1] == record["message"]


@pytest.mark.parametrize("major", MAJORS, ids=[f"ai{m}" for m in MAJORS])
async def test_abort_marks_the_worker_incomplete(
    raw_server: RawServer, major: AISDKVersion
) -> None:
    # The SDK's message does not record an abort; our Worker says why it stopped.
    data, record = recorded(major, "abort")
    raw_server.serve(Canned([data], headers=SSE_HEADERS))
    worker = await stream_worker(raw_server.base_url, "aiohttp", major)
    assert worker.messages[-1] == record["message"]
    assert worker.incomplete_details == {"reason": "aborted", "detail": "user cancelled"}
    assert worker.status == "completed" and worker.outcome == "aborted"


# -- live: the SDK itself serves and folds ------------------------------------


@pytest.fixture(scope="module")
def sdk_servers() -> Iterator[Callable[[AISDKVersion], str]]:
    """The base URL of a major's ``server.mjs``, started on first use, stopped at the end."""
    running: dict[AISDKVersion, tuple[subprocess.Popen[str], str]] = {}

    def start(major: AISDKVersion) -> str:
        if major not in running:
            cwd = npm_project(project(major))
            process = subprocess.Popen(
                [node_for(project(major)), "server.mjs"], cwd=cwd, stdout=subprocess.PIPE, text=True
            )
            assert process.stdout is not None
            port = json.loads(process.stdout.readline())["port"]
            running[major] = process, f"http://127.0.0.1:{port}"
        return running[major][1]

    try:
        yield start
    finally:
        for process, _ in running.values():
            process.terminate()
            process.wait(5)
            if process.stdout is not None:
                process.stdout.close()


@pytest.mark.parametrize(("major", "name"), CASES)
async def test_live_sdk_server(
    sdk_servers: Callable[[AISDKVersion], str],
    transport: TransportName,
    major: AISDKVersion,
    name: str,
) -> None:
    server = sdk_servers(major)
    worker = await stream_worker(server, transport, major, input=name)
    async with httpx.AsyncClient() as http:
        sdk = (await http.get(f"{server}/sdk/{name}", timeout=30)).json()
    assert "failed" not in sdk, sdk
    assert_follows_from_sdk(worker, sdk)
    # The live stream and the recorded one fold to the same message.
    assert sdk["message"] == recorded(major, name)[1]["message"]


# -- reverse: the SDK reads our emulator --------------------------------------


@pytest.fixture(scope="module")
def sdk_readers() -> Callable[[AISDKVersion], tuple[str, Path]]:
    """A major's Node binary and its project copy, where ``read_stream.mjs`` runs."""

    def reader(major: AISDKVersion) -> tuple[str, Path]:
        return node_for(project(major)), npm_project(project(major))

    return reader


@pytest.fixture
async def reverse_clients(emulator: Emulator) -> AsyncIterator[dict[AISDKVersion, AsyncHandinger]]:
    """A client of our emulator per major, folding as that major does."""
    async with (
        AsyncHandinger(api_key=API_KEY, base_url=emulator.base_url, ai_sdk=6) as six,
        AsyncHandinger(api_key=API_KEY, base_url=emulator.base_url, ai_sdk=7) as seven,
    ):
        yield {6: six, 7: seven}


@pytest.mark.parametrize("major", MAJORS, ids=[f"ai{m}" for m in MAJORS])
@pytest.mark.parametrize(
    "prompt",
    ["Hello there", "What's the weather in Barcelona?", "Research the history of SSE"],
)
async def test_sdk_reads_our_emulator(
    sdk_readers: Callable[[AISDKVersion], tuple[str, Path]],
    emulator: Emulator,
    reverse_clients: dict[AISDKVersion, AsyncHandinger],
    major: AISDKVersion,
    prompt: str,
) -> None:
    node, cwd = sdk_readers(major)
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [node, "read_stream.mjs", emulator.base_url, prompt],
            cwd=cwd,
            env={**os.environ, "HANDINGER_API_KEY": API_KEY},
        )
    theirs = json.loads(result.stdout)
    assert theirs["status"] == 200, theirs
    assert theirs["uiMessageStream"] == "v1"
    assert theirs["errors"] == []
    # Our reducer, for the same major, over the worker's replay of the same stream.
    client = reverse_clients[major]
    stream = await client.workers.retrieve(theirs["workerId"], stream=True)
    ours = await stream.get_final_worker()
    assert ours.messages[-1] == theirs["message"]
    # And the server's own record of the worker agrees with both.
    stored = await client.workers.retrieve(theirs["workerId"])
    assert stored.messages[-1] == theirs["message"]
