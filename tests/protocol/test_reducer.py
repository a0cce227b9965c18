"""The reducer, without a network: every chunk type and its effect on the Worker."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import handinger_stream
from handinger_stream.protocol.partial_json import parse_partial_json
from handinger_stream.protocol.reducer import WorkerState, apply_event, fold
from handinger_stream.protocol.sse import ServerSentEvent
from handinger_stream.protocol.wire import decode_event
from handinger_stream.types.events import Event, UnknownEvent


def events(*chunks: dict[str, Any]) -> list[Event]:
    return [
        decode_event(ServerSentEvent(msgspec.json.encode(c), id=str(i)), i)
        for i, c in enumerate(chunks)
    ]


def run(*chunks: dict[str, Any], ai_sdk: handinger_stream.AISDKVersion = 7) -> Any:
    return fold(events(*chunks), worker_id="w1", ai_sdk=ai_sdk)


def test_text_parts_become_output_messages_and_ui_parts() -> None:
    w = run(
        {"type": "start", "messageId": "m1"},
        {"type": "start-step"},
        {"type": "text-start", "id": "a"},
        {"type": "text-delta", "id": "a", "delta": "Hello, "},
        {"type": "text-delta", "id": "a", "delta": "world."},
        {"type": "text-end", "id": "a"},
        {"type": "text-start", "id": "b"},
        {"type": "text-delta", "id": "b", "delta": " Bye."},
        {"type": "finish-step"},
        {"type": "finish"},
    )
    assert w.output_text == "Hello, world. Bye."
    assert [(o.id, o.content[0].text) for o in w.output] == [("a", "Hello, world."), ("b", " Bye.")]
    assert all(o.role == "assistant" and o.type == "message" for o in w.output)
    assert w.messages == [
        {
            "id": "m1",
            "role": "assistant",
            "parts": [
                {"type": "step-start"},
                {"type": "text", "text": "Hello, world.", "state": "done"},
                {"type": "text", "text": " Bye.", "state": "streaming"},
            ],
        }
    ]
    assert (w.status, w.running) == ("completed", False)


def test_status_moves_pending_running_completed() -> None:
    state = WorkerState("w")
    assert state.snapshot().status == "pending"
    state.apply(events({"type": "start"})[0])
    assert (state.snapshot().status, state.snapshot().running) == ("running", True)
    state.apply(events({"type": "finish"})[0])
    assert (state.snapshot().status, state.snapshot().running) == ("completed", False)


def test_reasoning_parts() -> None:
    w = run(
        {"type": "reasoning-start", "id": "r", "providerMetadata": {"x": {"y": 1}}},
        {"type": "reasoning-delta", "id": "r", "delta": "think"},
        {"type": "reasoning-end", "id": "r"},
    )
    assert w.messages[0]["parts"] == [
        {
            "type": "reasoning",
            "id": "r",
            "text": "think",
            "providerMetadata": {"x": {"y": 1}},
            "state": "done",
        }
    ]
    assert w.output_text == ""


def test_sources_one_per_id_in_arrival_order_and_documents_only_in_messages() -> None:
    w = run(
        {"type": "source-url", "sourceId": "s1", "url": "https://a", "title": "A"},
        {"type": "source-url", "sourceId": "s2", "url": "https://b"},
        {"type": "source-url", "sourceId": "s1", "url": "https://a2", "title": "A2"},
        {
            "type": "source-document",
            "sourceId": "d",
            "mediaType": "application/pdf",
            "title": "Doc",
        },
    )
    assert [(s.id, s.url, s.title, s.type) for s in w.sources] == [
        ("s1", "https://a2", "A2", "url"),
        ("s2", "https://b", None, "url"),
    ]
    assert w.messages[0]["parts"][1] == {"type": "source-url", "sourceId": "s2", "url": "https://b"}
    assert w.messages[0]["parts"][3] == {
        "type": "source-document",
        "sourceId": "d",
        "mediaType": "application/pdf",
        "title": "Doc",
    }


def test_files() -> None:
    w = run({"type": "file", "url": "https://f/x.png", "mediaType": "image/png"})
    assert [(f.url, f.media_type, f.filename) for f in w.files] == [
        ("https://f/x.png", "image/png", None)
    ]
    assert w.messages[0]["parts"] == [
        {"type": "file", "mediaType": "image/png", "url": "https://f/x.png"}
    ]


def test_static_tool_lifecycle_with_streamed_input() -> None:
    state = WorkerState("w")
    chunks = events(
        {"type": "tool-input-start", "toolCallId": "c1", "toolName": "search"},
        {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": '{"q": "bar'},
    )
    for e in chunks:
        state.apply(e)
    assert state.snapshot().messages[0]["parts"] == [
        {
            "type": "tool-search",
            "toolCallId": "c1",
            "state": "input-streaming",
            "input": {"q": "bar"},
            "rawInput": '{"q": "bar',
        }
    ]
    for e in events(
        {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": 'celona"}'},
        {
            "type": "tool-input-available",
            "toolCallId": "c1",
            "toolName": "search",
            "input": {"q": "barcelona"},
        },
        {"type": "tool-output-available", "toolCallId": "c1", "output": [1, 2]},
    ):
        state.apply(e)
    assert state.snapshot().messages[0]["parts"] == [
        {
            "type": "tool-search",
            "toolCallId": "c1",
            "state": "output-available",
            "input": {"q": "barcelona"},
            "output": [1, 2],
        }
    ]


@pytest.mark.parametrize(("ai_sdk", "kept_as"), [(6, "rawInput"), (7, "input")])
def test_tool_output_error_and_input_error(
    ai_sdk: handinger_stream.AISDKVersion, kept_as: str
) -> None:
    # The static tool's unusable input: ai 6 keeps it as rawInput, ai 7 as input.
    w = run(
        {"type": "tool-input-available", "toolCallId": "c1", "toolName": "t", "input": {}},
        {"type": "tool-output-error", "toolCallId": "c1", "errorText": "nope"},
        {
            "type": "tool-input-error",
            "toolCallId": "c2",
            "toolName": "t",
            "input": "bad",
            "errorText": "parse",
        },
        ai_sdk=ai_sdk,
    )
    parts = w.messages[0]["parts"]
    assert parts[0] == {
        "type": "tool-t",
        "toolCallId": "c1",
        "state": "output-error",
        "input": {},
        "errorText": "nope",
    }
    assert parts[1] == {
        "type": "tool-t",
        "toolCallId": "c2",
        "state": "output-error",
        kept_as: "bad",
        "errorText": "parse",
    }


def test_dynamic_tool() -> None:
    w = run(
        {"type": "tool-input-start", "toolCallId": "c", "toolName": "mcp", "dynamic": True},
        {
            "type": "tool-input-available",
            "toolCallId": "c",
            "toolName": "mcp",
            "input": {"a": 1},
            "dynamic": True,
        },
        {
            "type": "tool-output-available",
            "toolCallId": "c",
            "output": "ok",
            "dynamic": True,
            "preliminary": True,
        },
    )
    assert w.messages[0]["parts"] == [
        {
            "type": "dynamic-tool",
            "toolName": "mcp",
            "toolCallId": "c",
            "state": "output-available",
            "input": {"a": 1},
            "output": "ok",
            "preliminary": True,
        }
    ]


def test_data_parts_replace_by_id_and_transient_are_not_stored() -> None:
    w = run(
        {"type": "data-weather", "id": "x", "data": {"t": 1}},
        {"type": "data-weather", "data": {"t": 9}},
        {"type": "data-weather", "id": "x", "data": {"t": 2}},
        {"type": "data-note", "data": "n", "transient": True},
    )
    assert w.messages[0]["parts"] == [
        {"type": "data-weather", "id": "x", "data": {"t": 2}},
        {"type": "data-weather", "data": {"t": 9}},
    ]


def test_metadata_deep_merges_and_folds_usage_and_costs() -> None:
    w = run(
        {
            "type": "start",
            "messageMetadata": {"a": {"b": 1, "c": [1]}, "usage": {"inputTokens": 10}},
        },
        {"type": "start-step"},
        {
            "type": "message-metadata",
            "messageMetadata": {
                "a": {"c": [2]},
                "usage": {"outputTokens": 5, "cachedInputTokens": 3},
            },
        },
        {
            "type": "finish",
            "messageMetadata": {"costs": {"modelCostUsd": 0.5, "toolCostUsd": 0.25}},
        },
    )
    assert w.messages[0]["metadata"] == {
        "a": {"b": 1, "c": [2]},
        "usage": {"inputTokens": 10, "outputTokens": 5, "cachedInputTokens": 3},
        "costs": {"modelCostUsd": 0.5, "toolCostUsd": 0.25},
    }
    assert w.usage is not None and w.costs is not None
    assert (w.usage.input_tokens, w.usage.output_tokens, w.usage.cache_read_tokens) == (10, 5, 3)
    assert w.usage.total_tokens == 15 and w.usage.steps == 1
    assert w.costs.total_usd == 0.75


def test_error_sets_error_and_folding_goes_on() -> None:
    w = run(
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": "partial"},
        {"type": "error", "errorText": "model overloaded"},
        {"type": "text-delta", "id": "t", "delta": " more"},
        {"type": "finish"},
    )
    assert w.error == "model overloaded"
    assert w.output_text == "partial more"
    assert (w.status, w.running) == ("completed", False)


def test_abort_sets_incomplete_details() -> None:
    w = run({"type": "start"}, {"type": "abort"})
    assert w.incomplete_details == {"reason": "aborted"}
    assert w.status == "completed"


def test_snapshot_sets_only_the_fields_it_carries_and_deltas_apply_on_top() -> None:
    state = WorkerState()
    for e in events(
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": "Hel"},
        {
            "object": "worker",
            "id": "w9",
            "status": "running",
            "output": [{"id": "t", "content": [{"type": "output_text", "text": "Hel"}]}],
            "output_text": "Hel",
        },
        {"type": "text-delta", "id": "t", "delta": "lo"},
    ):
        state.apply(e)
    w = state.snapshot()
    assert (w.id, w.status, w.output_text) == ("w9", "running", "Hello")
    assert w.messages[0]["parts"][0]["text"] == "Hello"


def test_data_worker_snapshot_is_authoritative_at_the_end() -> None:
    final = {
        "id": "w1",
        "object": "worker",
        "status": "completed",
        "running": False,
        "output_text": "X",
        "output": [{"id": "o", "content": [{"type": "output_text", "text": "X"}]}],
        "messages": [{"id": "u", "role": "user", "parts": []}],
        "sources": [],
        "files": [],
    }
    w = run(
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": "draft"},
        {"type": "data-worker", "data": final, "transient": True},
    )
    assert (w.output_text, w.status, w.messages) == ("X", "completed", final["messages"])


def test_unknown_chunk_is_kept_and_changes_nothing() -> None:
    [e] = events({"type": "future-thing", "x": 1})
    state = WorkerState("w")
    assert state.apply(e) is False
    assert isinstance(e, UnknownEvent)
    assert e.type == "future-thing" and e.data == {"type": "future-thing", "x": 1}


def test_a_delta_after_a_snapshot_said_pending_makes_the_worker_running() -> None:
    # The hot path for deltas must give what the full arm gives, status included.
    state = WorkerState("w")
    state.apply_all(events({"type": "start"}, {"type": "text-start", "id": "t"}))
    [pending] = events({"type": "data-worker", "data": {"id": "w", "status": "pending"}})
    state.apply(pending)
    assert state.snapshot().status == "pending"
    state.apply(events({"type": "text-delta", "id": "t", "delta": "x"})[0])
    assert (state.snapshot().status, state.snapshot().running) == ("running", True)
    assert state.snapshot().output_text == "x"


CHUNKS = [
    {"type": "start", "messageId": "m"},
    {"type": "start-step"},
    {"type": "text-start", "id": "t"},
    {"type": "text-delta", "id": "t", "delta": "Hel"},
    {"type": "text-delta", "id": "t", "delta": "lo", "providerMetadata": {"p": {"x": 1}}},
    {"type": "reasoning-start", "id": "r"},
    {"type": "reasoning-delta", "id": "r", "delta": "hmm"},
    {"type": "reasoning-end", "id": "r"},
    {"type": "tool-input-start", "toolCallId": "c", "toolName": "search"},
    {"type": "tool-input-delta", "toolCallId": "c", "inputTextDelta": '{"q": "ti'},
    {"type": "tool-input-delta", "toolCallId": "c", "inputTextDelta": 'des"}'},
    {
        "type": "tool-input-available",
        "toolCallId": "c",
        "toolName": "search",
        "input": {"q": "tides"},
    },
    {"type": "tool-output-available", "toolCallId": "c", "output": [1, 2]},
    {"type": "source-url", "sourceId": "s", "url": "https://s"},
    {"type": "file", "url": "https://f", "mediaType": "text/plain"},
    {"type": "data-x", "id": "d", "data": {"n": 1}},
    {"type": "data-worker", "data": {"id": "w", "status": "running", "metadata": {"k": 1}}},
    {"type": "message-metadata", "messageMetadata": {"usage": {"inputTokens": 3}}},
    {"type": "text-end", "id": "t"},
    {"type": "finish-step"},
    {"type": "error", "errorText": "late"},
    {"type": "finish", "messageMetadata": {"costs": {"modelCostUsd": 0.5}}},
    {"type": "surprise", "x": 1},
]


@given(st.lists(st.sampled_from(CHUNKS), max_size=40), st.lists(st.booleans(), max_size=40))
def test_looking_at_the_snapshot_never_changes_the_fold(
    chunks: list[dict[str, Any]], looks: list[bool]
) -> None:
    # One batch, or one event at a time with snapshots taken in between (snapshots
    # settle streaming text and inputs): the same Worker either way.
    evs = events(*chunks)
    batch = WorkerState("w")
    batch.apply_all(evs)
    stepped = WorkerState("w")
    for event, look in zip(evs, looks + [False] * len(evs), strict=False):
        stepped.apply(event)
        if look:
            stepped.snapshot()
    assert stepped.snapshot() == batch.snapshot()
    assert stepped.snapshot() == fold(evs, worker_id="w")


def test_snapshot_is_cached_until_the_next_event() -> None:
    state = WorkerState("w")
    a = state.snapshot()
    assert state.snapshot() is a
    state.apply(events({"type": "start"})[0])
    assert state.snapshot() is not a


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": 1}', {"a": 1}),
        ('{"a": "hel', {"a": "hel"}),
        ('{"a": 1, "b', {"a": 1}),
        ('{"a": 1, "b":', {"a": 1}),
        ('{"a": [1, 2', {"a": [1, 2]}),
        ('{"a": tr', {"a": True}),
        ('{"a": nu', {"a": None}),
        ("[1, 2.", [1, 2]),
        ('{"a": "x\\', {"a": "x"}),
        ('{"a": {"b": "c"}, ', {"a": {"b": "c"}}),
        ("", msgspec.UNSET),
    ],
)
def test_partial_json(text: str, value: Any) -> None:
    assert parse_partial_json(text) == value


def test_tool_approval_and_denial() -> None:
    w = run(
        {"type": "tool-input-available", "toolCallId": "c", "toolName": "pay", "input": {"usd": 5}},
        {"type": "tool-approval-request", "approvalId": "a1", "toolCallId": "c"},
    )
    assert w.messages[0]["parts"][0]["state"] == "approval-requested"
    assert w.messages[0]["parts"][0]["approval"] == {"id": "a1"}
    w = run(
        {"type": "tool-input-available", "toolCallId": "c", "toolName": "pay", "input": {}},
        {"type": "tool-output-denied", "toolCallId": "c"},
    )
    assert w.messages[0]["parts"][0]["state"] == "output-denied"


def test_unknown_worker_fields_are_tolerated() -> None:
    from handinger_stream.protocol.wire import decode_worker

    w = decode_worker(
        b'{"id": "w", "object": "worker", "status": "running", "brand_new": {"x": 1},'
        b' "usage": {"inputTokens": 3.0, "futureTokens": 9}, "created_at": 1700000000}'
    )
    assert (w.id, w.status, w.created_at) == ("w", "running", 1700000000)
    assert w.usage is not None and w.usage.input_tokens == 3


def test_wire_names_are_the_references() -> None:
    from handinger_stream.types.worker import Costs, File, Usage, Worker

    encoded = msgspec.json.decode(
        msgspec.json.encode(
            Worker(
                id="w", files=[File(url="u", media_type="text/plain")], usage=Usage(), costs=Costs()
            )
        )
    )
    assert {"created_at", "output_text", "incomplete_details", "object"} <= encoded.keys()
    assert encoded["files"][0]["mediaType"] == "text/plain"
    assert {
        "cacheReadTokens",
        "cacheWriteTokens",
        "costUsd",
        "reasoningTokens",
        "totalTokens",
    } <= encoded["usage"].keys()
    assert set(encoded["costs"]) == {
        "internalCostUsd",
        "modelCostUsd",
        "sandboxCostUsd",
        "toolCostUsd",
    }


def test_null_tool_input_and_output_are_kept_as_null() -> None:
    w = run(
        {"type": "tool-input-available", "toolCallId": "c", "toolName": "t", "input": None},
        {"type": "tool-output-available", "toolCallId": "c", "output": None},
    )
    part = w.messages[0]["parts"][0]
    assert "input" in part and part["input"] is None
    assert "output" in part and part["output"] is None


def test_apply_event_is_the_earlier_name_of_apply() -> None:
    by_method, by_function = WorkerState("w"), WorkerState("w")
    for e in events({"type": "start"}, {"type": "text-start", "id": "t"}):
        assert by_method.apply(e) is apply_event(by_function, e) is True
    assert by_method.snapshot() == by_function.snapshot()
    assert handinger_stream.apply_event is apply_event


def test_today_s_fields_fold_from_snapshots() -> None:
    snap = {
        "type": "data-worker",
        "data": {
            "id": "wrk_1",
            "object": "worker",
            "status": "completed",
            "created_at": "2026-05-01T10:00:00Z",
            "structured_output": {"city": "Girona"},
            "url": "https://handinger.com/w/wrk_1",
            "usage": {"credits": 3, "durationMs": 1200},
            "files": [{"url": "u", "mediaType": "text/plain", "size": 12}],
        },
    }
    worker = fold(events({"type": "start"}, snap))
    assert worker.structured_output == {"city": "Girona"}
    assert worker.url == "https://handinger.com/w/wrk_1"
    assert worker.usage is not None and worker.usage.duration_ms == 1200
    assert worker.files[0].size == 12
    assert worker.created is not None and worker.created.year == 2026
