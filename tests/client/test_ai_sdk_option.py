"""The client's ``ai_sdk`` option: every stream it opens folds as that AI SDK major.

A real stream over loopback, served byte for byte, where ai 6 and ai 7 fold
differently: the default client (7) and ``ai_sdk=6`` must each build what
their major's ``readUIMessageStream`` builds.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from handinger_stream import AISDKVersion, AsyncHandinger, Handinger, Worker
from handinger_stream.client.transport import TransportName
from tests.conftest import API_KEY, Canned, RawServer

SSE_HEADERS = {"content-type": "text/event-stream", "x-handinger-worker-id": "w-ai-sdk"}

CHUNKS: list[dict[str, Any]] = [
    {"type": "start", "messageId": "m"},
    {"type": "start-step"},
    {"type": "text-start", "id": "t"},
    {"type": "text-delta", "id": "t", "delta": "Hel"},
    {"type": "finish-step"},
    # 7 keeps the part open across finish-step; 6 has forgotten it.
    {"type": "text-delta", "id": "t", "delta": "lo."},
    {"type": "text-end", "id": "t"},
    {"type": "start-step"},
    {"type": "text-start", "id": "d"},
    {"type": "text-delta", "id": "d", "delta": " Draft."},
    # 7 throws the draft step away; 6 does not know the chunk.
    {"type": "reset-step"},
    {
        "type": "tool-input-error",
        "toolCallId": "c",
        "toolName": "w",
        "input": "?",
        "errorText": "bad",
    },
    {"type": "finish"},
]
BODY = b"".join(b"data: %s\n\n" % msgspec.json.encode(c) for c in CHUNKS) + b"data: [DONE]\n\n"

AS_7 = [
    {"type": "step-start"},
    {"type": "text", "text": "Hello.", "state": "done"},
    {"type": "step-start"},
    {
        "type": "tool-w",
        "toolCallId": "c",
        "state": "output-error",
        "input": "?",
        "errorText": "bad",
    },
]
AS_6 = [
    {"type": "step-start"},
    {"type": "text", "text": "Hel", "state": "streaming"},
    {"type": "text", "text": "lo.", "state": "done"},
    {"type": "step-start"},
    {"type": "text", "text": " Draft.", "state": "streaming"},
    {
        "type": "tool-w",
        "toolCallId": "c",
        "state": "output-error",
        "rawInput": "?",
        "errorText": "bad",
    },
]


async def streamed(client: AsyncHandinger) -> Worker:
    async with await client.workers.create(input="x", stream=True) as stream:
        async for _ in stream:
            pass
        return stream.snapshot


@pytest.mark.parametrize(
    ("options", "parts", "text"),
    [({}, AS_7, "Hello."), ({"ai_sdk": 7}, AS_7, "Hello."), ({"ai_sdk": 6}, AS_6, "Hello. Draft.")],
    ids=["default", "ai_sdk=7", "ai_sdk=6"],
)
async def test_each_stream_folds_as_the_client_s_major(
    raw_server: RawServer,
    transport: TransportName,
    options: dict[str, Any],
    parts: list[dict[str, Any]],
    text: str,
) -> None:
    raw_server.serve(Canned([BODY], headers=SSE_HEADERS))
    async with AsyncHandinger(
        api_key=API_KEY, base_url=raw_server.base_url, transport=transport, **options
    ) as client:
        worker = await streamed(client)
    assert worker.messages == [{"id": "m", "role": "assistant", "parts": parts}]
    assert worker.output_text == text


async def test_with_options_changes_the_major_of_the_copy_only(raw_server: RawServer) -> None:
    async with AsyncHandinger(api_key=API_KEY, base_url=raw_server.base_url) as client:
        six = client.with_options(ai_sdk=6)
        assert (client.ai_sdk, six.ai_sdk) == (7, 6)
        raw_server.serve(Canned([BODY], headers=SSE_HEADERS))
        assert (await streamed(six)).messages[0]["parts"] == AS_6
        raw_server.serve(Canned([BODY], headers=SSE_HEADERS))
        assert (await streamed(client)).messages[0]["parts"] == AS_7


@pytest.mark.parametrize("ai_sdk", [6, 7])
def test_the_sync_client_folds_as_its_major(raw_server: RawServer, ai_sdk: AISDKVersion) -> None:
    raw_server.serve(Canned([BODY], headers=SSE_HEADERS))
    with Handinger(api_key=API_KEY, base_url=raw_server.base_url, ai_sdk=ai_sdk) as client:
        assert client.ai_sdk == ai_sdk
        worker = client.workers.create(input="x", stream=True).get_final_worker()
    assert worker.messages[0]["parts"] == (AS_6 if ai_sdk == 6 else AS_7)
    with Handinger(api_key=API_KEY, base_url=raw_server.base_url) as client:
        assert client.with_options(ai_sdk=6).ai_sdk == 6


@pytest.mark.parametrize("bad", [5, 8, "7", True, None])
def test_a_major_the_client_does_not_know_is_refused_early(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"ai_sdk must be one of 6, 7"):
        AsyncHandinger(api_key=API_KEY, ai_sdk=bad)
    with pytest.raises(ValueError, match=r"ai_sdk must be one of 6, 7"):
        AsyncHandinger(api_key=API_KEY).with_options(ai_sdk=bad)
    with pytest.raises(ValueError, match=r"ai_sdk must be one of 6, 7"):
        Handinger(api_key=API_KEY, ai_sdk=bad)
