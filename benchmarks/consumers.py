"""The consumers compared, each as a user of that library would write it.

``python -m benchmarks.consumers NAME JOB`` runs one consumer in this process
and prints a JSON result: events, wall and CPU seconds, peak RSS (VmHWM from
``/proc/self/status``: ``ru_maxrss`` would inherit the parent's peak), and,
for stamped streams, receive-minus-send latencies. JOB is JSON:
``{"base_url", "spec", "streams"}``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from array import array
from collections.abc import Awaitable, Callable
from typing import Any

Result = dict[str, Any]
# Per-stream work: (base_url, spec, lags) -> (events, text length); lags gets stamped delays.
Consume = Callable[[str, str, "array[int]"], Awaitable[tuple[int, int]]]

_STAMP = b'"t":'


def _stamp(data: bytes | str) -> int | None:
    raw = data.encode() if isinstance(data, str) else data
    at = raw.find(_STAMP)
    if at < 0:
        return None
    end = raw.find(b"}", at)
    return int(raw[at + 4 : end])


_clients: dict[str, Any] = {}


def _shared(key: str, make: Callable[[], Any]) -> Any:
    """One client per process, shared by concurrent streams, as an application would."""
    if key not in _clients:
        _clients[key] = make()
    return _clients[key]


async def _close_shared() -> None:
    for client in _clients.values():
        # The Stainless SDKs close with close(); everything else with aclose().
        await (client.aclose() if hasattr(client, "aclose") else client.close())
    _clients.clear()


# -- the physical floor ---------------------------------------------------


async def limit_read(base_url: str, spec: str, lags: array[int]) -> tuple[int, int]:
    """Raw aiohttp read, bytes discarded (events counted by their blank lines, in C)."""
    import aiohttp

    events = 0
    last = 0
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{base_url}/api/workers", json={"input": spec, "stream": True}
        ) as resp:
            async for chunk in resp.content.iter_any():
                events += chunk.count(b"\n\n") + (last == 10 and chunk[0] == 10)
                last = chunk[-1]
    return events - 1, 0  # [DONE] is not an event


async def limit_split(base_url: str, spec: str, lags: array[int]) -> tuple[int, int]:
    """Raw aiohttp read split on blank lines: events counted, nothing decoded."""
    import aiohttp

    events = 0
    rest = b""
    stamped = "stamp" in spec
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{base_url}/api/workers", json={"input": spec, "stream": True}
        ) as resp:
            async for chunk in resp.content.iter_any():
                blocks = (rest + chunk).split(b"\n\n")
                rest = blocks.pop()
                events += len(blocks)
                if stamped:
                    now = time.monotonic_ns()
                    for block in blocks:
                        t = _stamp(block)
                        if t is not None:
                            lags.append(now - t)
    return events - 1, 0  # [DONE] is not an event


# -- by hand ----------------------------------------------------------------


async def hand_loop(base_url: str, spec: str, lags: array[int]) -> tuple[int, int]:
    """What a user writes in an afternoon: aiohttp, split on blank lines, msgspec per event.

    It keeps the id in force, as a resumable client must, and decodes each
    event's data into a dict; it folds nothing.
    """
    import aiohttp
    import msgspec

    decoder = msgspec.json.Decoder()
    session = _shared(
        "aiohttp", lambda: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    )
    stamped = "stamp" in spec
    events = text = 0
    last_id = None
    rest = b""
    body = {"input": spec, "stream": True}
    async with session.post(f"{base_url}/api/workers", json=body) as resp:
        async for chunk in resp.content.iter_any():
            blocks = (rest + chunk).split(b"\n\n")
            rest = blocks.pop()
            for block in blocks:
                data = None
                for line in block.split(b"\n"):
                    if line.startswith(b"data: "):
                        data = line[6:]
                    elif line.startswith(b"id: "):
                        last_id = line[4:]
                if data is None or data == b"[DONE]":
                    continue
                chunk_obj = decoder.decode(data)
                events += 1
                if chunk_obj.get("type") == "text-delta":
                    text += len(chunk_obj["delta"])
                    if stamped:
                        lags.append(time.monotonic_ns() - chunk_obj["providerMetadata"]["b"]["t"])
    assert last_id is not None or "ids=1" not in spec
    return events, text


# -- by hand: httpx-sse ---------------------------------------------------


async def _httpx_sse(
    base_url: str, spec: str, lags: array[int], decode: Callable[[str], Any]
) -> tuple[int, int]:
    import httpx
    from httpx_sse import aconnect_sse

    events = text = 0
    stamped = "stamp" in spec
    client = _shared(
        "httpx", lambda: httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=None))
    )
    body = {"input": spec, "stream": True}
    async with aconnect_sse(client, "POST", f"{base_url}/api/workers", json=body) as source:
        async for sse in source.aiter_sse():
            if sse.data == "[DONE]":
                break
            chunk = decode(sse.data)
            events += 1
            if chunk.get("type") == "text-delta":
                text += len(chunk["delta"])
                if stamped:
                    lags.append(time.monotonic_ns() - chunk["providerMetadata"]["b"]["t"])
    return events, text


async def httpx_sse_json(base_url: str, spec: str, lags: array[int]) -> tuple[int, int]:
    return await _httpx_sse(base_url, spec, lags, json.loads)


async def httpx_sse_msgspec(base_url: str, spec: str, lags: array[int]) -> tuple[int, int]:
    import msgspec

    decoder = msgspec.json.Decoder()
    return await _httpx_sse(base_url, spec, lags, decoder.decode)


# -- the SDK peers ---------------------------------------------------------


async def handinger_sdk(base_url: str, spec: str, lags: array[int]) -> tuple[int, int]:
    """The official ``handinger`` SDK's own stream path (``workers.stream_updates``).

    It decodes every event's data as JSON, ``[DONE]`` included, and so fails
    at the end of every UI message stream; the events before it are counted.
    """
    from handinger import AsyncHandinger

    events = text = 0
    stamped = "stamp" in spec
    client = _shared(
        "handinger", lambda: AsyncHandinger(api_key="bench", base_url=base_url, max_retries=0)
    )
    stream = await client.workers.stream_updates("wrk_bench", extra_query={"spec": spec})
    try:
        async for chunk in stream:
            events += 1
            data: Any = chunk
            if data.get("type") == "text-delta":
                text += len(data["delta"])
                if stamped:
                    lags.append(time.monotonic_ns() - data["providerMetadata"]["b"]["t"])
    except json.JSONDecodeError:
        pass  # [DONE]: expected, see the docstring
    return events, text


def _openai_models() -> Any:
    from typing import Annotated, Literal, Union

    from pydantic import BaseModel, Field

    class Start(BaseModel):
        type: Literal["start"]
        messageId: str | None = None

    class TextStart(BaseModel):
        type: Literal["text-start"]
        id: str

    class TextDelta(BaseModel):
        type: Literal["text-delta"]
        id: str
        delta: str
        providerMetadata: dict[str, Any] | None = None

    class TextEnd(BaseModel):
        type: Literal["text-end"]
        id: str

    class SourceUrl(BaseModel):
        type: Literal["source-url"]
        sourceId: str
        url: str
        title: str | None = None

    class MessageMetadata(BaseModel):
        type: Literal["message-metadata"]
        messageMetadata: Any = None

    class Finish(BaseModel):
        type: Literal["finish"]
        messageMetadata: Any = None

    class DataWorker(BaseModel):
        type: Literal["data-worker"]
        data: dict[str, Any]
        transient: bool | None = None

    return Annotated[
        Union[Start, TextStart, TextDelta, TextEnd, SourceUrl, MessageMetadata, Finish, DataWorker],  # noqa: UP007
        Field(discriminator="type"),
    ]


async def openai_stream(base_url: str, spec: str, lags: array[int]) -> tuple[int, int]:
    """openai-python's ``AsyncStream`` with a pydantic discriminated union of chunk models."""
    import openai

    chunk_type = _openai_models()
    events = text = 0
    stamped = "stamp" in spec
    client = _shared(
        "openai", lambda: openai.AsyncOpenAI(api_key="bench", base_url=base_url, max_retries=0)
    )
    http = client._client
    request = http.build_request(
        "POST", f"{base_url}/api/workers", json={"input": spec, "stream": True}
    )
    response = await http.send(request, stream=True)
    stream = openai.AsyncStream(cast_to=chunk_type, response=response, client=client)
    async for chunk in stream:
        events += 1
        if chunk.type == "text-delta":
            text += len(chunk.delta)
            if stamped:
                lags.append(time.monotonic_ns() - chunk.providerMetadata["b"]["t"])
    return events, text


# -- handinger-stream -------------------------------------------------------


def _handinger_stream(transport: str) -> Consume:
    async def consume(base_url: str, spec: str, lags: array[int]) -> tuple[int, int]:
        from handinger_stream import AsyncHandinger, TextDeltaEvent

        events = 0
        stamped = "stamp" in spec
        client = _shared(
            transport,
            lambda: AsyncHandinger(api_key="bench", base_url=base_url, transport=transport),
        )  # type: ignore[arg-type]
        stream = await client.workers.create(input=spec, stream=True)
        async for event in stream:
            events += 1
            if stamped and type(event) is TextDeltaEvent:
                lags.append(time.monotonic_ns() - event.provider_metadata["b"]["t"])  # type: ignore[index]
        # The folded text itself: the server's transient snapshots carry a short
        # stand-in output_text (benchmarks/server.py), which the Worker takes.
        parts = [part for message in stream.snapshot.messages for part in message["parts"]]
        return events, sum(len(part["text"]) for part in parts if part["type"] == "text")

    return consume


CONSUMERS: dict[str, Consume] = {
    "limit: read": limit_read,
    "limit: split": limit_split,
    "hand loop (aiohttp + msgspec)": hand_loop,
    "httpx-sse + json": httpx_sse_json,
    "httpx-sse + msgspec": httpx_sse_msgspec,
    "handinger SDK": handinger_sdk,
    "openai AsyncStream": openai_stream,
    "handinger-stream (aiohttp)": _handinger_stream("aiohttp"),
    "handinger-stream (httpx)": _handinger_stream("httpx"),
}


def vm_hwm_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(name: str, base_url: str, spec: str, streams: int = 1) -> Result:
    consume = CONSUMERS[name]
    lags: array[int] = array("q")
    baseline_kib = vm_hwm_kib()
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    if streams == 1:
        events, text = await consume(base_url, spec, lags)
    else:
        import anyio

        totals = [0, 0]

        async def one() -> None:
            e, t = await consume(base_url, spec, lags)
            totals[0] += e
            totals[1] += t

        async with anyio.create_task_group() as group:
            for _ in range(streams):
                group.start_soon(one)
        events, text = totals
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    await _close_shared()
    result: Result = {
        "consumer": name,
        "events": events,
        "text_chars": text,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_kib": vm_hwm_kib(),
        "baseline_rss_kib": baseline_kib,
    }
    if lags:
        ordered = sorted(lags)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6  # noqa: E731
        result.update(
            lag_ms={"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ordered[-1] / 1e6}
        )
        result["lag_samples"] = len(ordered)
    return result


async def _first_use_of_anyio() -> None:
    """anyio 4 imports its event loop backend at first use, ~30 ms: before the clock,
    as every other import (httpx's pool and handinger-stream's first read use it)."""
    import anyio.lowlevel

    with anyio.move_on_after(1):
        await anyio.lowlevel.checkpoint()


def main() -> None:
    name, job_text = sys.argv[1], sys.argv[2]
    job = json.loads(job_text)
    # Import what the consumer needs before the clock starts: start-up is not the subject.
    for module in ("aiohttp", "httpx", "httpx_sse", "msgspec", "anyio", "handinger_stream"):
        __import__(module)
    if name == "handinger SDK":
        __import__("handinger")
    if name == "openai AsyncStream":
        __import__("openai")
        _openai_models()
    asyncio.run(_first_use_of_anyio())
    result = asyncio.run(run(name, job["base_url"], job["spec"], job.get("streams", 1)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
