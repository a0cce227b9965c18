"""Folding as ai 6 or as ai 7: every difference between the two, under both values.

The expected messages are what ``readUIMessageStream`` of ai 6.0.326 and of
ai 7.0.185 build from the same chunks (checked by hand against both, and by
the interop fixtures of each major in ``tests/interop/ai*/fixtures``).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handinger_stream import AISDKVersion, Worker
from handinger_stream.protocol.reducer import WorkerState, check_ai_sdk, fold
from handinger_stream.protocol.sse import ServerSentEvent
from handinger_stream.protocol.wire import decode_event, encode_event
from handinger_stream.types.events import (
    AI_SDK_7_ONLY,
    CHUNK_TYPES,
    AbortEvent,
    CustomEvent,
    Event,
    ReasoningFileEvent,
    ResetStepEvent,
    StartEvent,
    SteeringMessageEvent,
    ToolApprovalResponseEvent,
)

MAJORS: list[AISDKVersion] = [6, 7]


def events(*chunks: dict[str, Any]) -> list[Event]:
    return [
        decode_event(ServerSentEvent(msgspec.json.encode(c), id=str(i)), i)
        for i, c in enumerate(chunks)
    ]


def run(ai_sdk: AISDKVersion, *chunks: dict[str, Any]) -> Worker:
    return fold(events(*chunks), worker_id="w", ai_sdk=ai_sdk)


def parts(ai_sdk: AISDKVersion, *chunks: dict[str, Any]) -> list[dict[str, Any]]:
    worker = run(ai_sdk, {"type": "start", "messageId": "m"}, *chunks)
    return list(worker.messages[-1]["parts"])


# -- the option ---------------------------------------------------------------------


def test_the_default_is_the_current_major() -> None:
    assert WorkerState().ai_sdk == 7
    assert fold([]).messages == fold([], ai_sdk=7).messages


@pytest.mark.parametrize("bad", [5, 8, "7", 7.0, True, None])
def test_a_major_the_reducer_does_not_know_is_refused_by_name(bad: object) -> None:
    with pytest.raises(ValueError, match=r"ai_sdk must be one of 6, 7 .*not "):
        check_ai_sdk(bad)
    with pytest.raises(ValueError, match="6, 7"):
        WorkerState(ai_sdk=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="6, 7"):
        fold([], ai_sdk=bad)  # type: ignore[arg-type]


def test_the_7_only_chunk_types_are_typed_events_with_the_sdk_s_wire_names() -> None:
    assert {"reset-step", "custom", "reasoning-file", "steering-message"} <= CHUNK_TYPES
    assert "tool-approval-response" in CHUNK_TYPES
    assert set(AI_SDK_7_ONLY) == {
        ResetStepEvent,
        CustomEvent,
        ReasoningFileEvent,
        SteeringMessageEvent,
        ToolApprovalResponseEvent,
    }
    (event,) = events(
        {
            "type": "tool-approval-response",
            "approvalId": "a",
            "approved": False,
            "reason": "no",
            "providerExecuted": True,
            "providerMetadata": {"p": {"k": 1}},
        }
    )
    assert event == ToolApprovalResponseEvent(
        approval_id="a",
        approved=False,
        reason="no",
        provider_executed=True,
        provider_metadata={"p": {"k": 1}},
        event_id="0",
    )


# -- finish-step --------------------------------------------------------------------


def test_finish_step_closes_open_parts_in_6_and_leaves_them_open_in_7() -> None:
    chunks = (
        {"type": "start-step"},
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": "a"},
        {"type": "reasoning-start", "id": "r"},
        {"type": "finish-step"},
        {"type": "text-delta", "id": "t", "delta": "b"},
        {"type": "text-end", "id": "t"},
        {"type": "reasoning-end", "id": "r"},
    )
    # 7: the delta and the ends after finish-step still find their parts.
    assert parts(7, *chunks) == [
        {"type": "step-start"},
        {"type": "text", "text": "ab", "state": "done"},
        {"type": "reasoning", "id": "r", "text": "", "state": "done"},
    ]
    assert run(7, *chunks).output_text == "ab"
    # 6 forgets them: the SDK fails the stream at the delta; we start a part for
    # it (our leniency), and the ends find nothing.
    assert parts(6, *chunks) == [
        {"type": "step-start"},
        {"type": "text", "text": "a", "state": "streaming"},
        {"type": "reasoning", "id": "r", "text": "", "state": "streaming"},
        {"type": "text", "text": "b", "state": "done"},
    ]


# -- text-end citations ---------------------------------------------------------------


CITATIONS = [
    {
        "source": {
            "type": "source",
            "sourceType": "url",
            "id": "s1",
            "url": "https://example.com",
            "title": "Example",
            "rank": 3,  # not in the schema: ai 7 drops it
        },
        "startIndex": 0,
        "endIndex": 5,
        "score": 0.5,  # idem
    },
    {
        "source": {
            "type": "source",
            "sourceType": "document",
            "id": "d1",
            "mediaType": "text/plain",
            "title": "Notes",
            "filename": "notes.txt",
            "url": "ignored for a document",
        },
        "citedText": "Hello",
    },
]


def test_text_end_citations_go_on_the_text_part_in_7_only() -> None:
    chunks = (
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": "Hello"},
        {"type": "text-end", "id": "t", "citations": CITATIONS},
    )
    assert parts(7, *chunks) == [
        {
            "type": "text",
            "text": "Hello",
            "state": "done",
            "citations": [
                {
                    "source": {
                        "type": "source",
                        "sourceType": "url",
                        "id": "s1",
                        "url": "https://example.com",
                        "title": "Example",
                    },
                    "startIndex": 0,
                    "endIndex": 5,
                },
                {
                    "source": {
                        "type": "source",
                        "sourceType": "document",
                        "id": "d1",
                        "mediaType": "text/plain",
                        "title": "Notes",
                        "filename": "notes.txt",
                    },
                    "citedText": "Hello",
                },
            ],
        }
    ]
    assert parts(6, *chunks) == [{"type": "text", "text": "Hello", "state": "done"}]


def test_an_empty_citation_list_is_kept_in_7() -> None:
    chunks = ({"type": "text-start", "id": "t"}, {"type": "text-end", "id": "t", "citations": []})
    assert parts(7, *chunks)[0]["citations"] == []
    assert "citations" not in parts(6, *chunks)[0]


# -- tool-input-error ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ai_sdk", "kept_as", "gone"), [(6, "rawInput", "input"), (7, "input", "rawInput")]
)
def test_a_static_tool_s_failed_input_is_raw_input_in_6_and_input_in_7(
    ai_sdk: AISDKVersion, kept_as: str, gone: str
) -> None:
    (part,) = parts(
        ai_sdk,
        {"type": "tool-input-start", "toolCallId": "c", "toolName": "w", "title": "W"},
        {"type": "tool-input-delta", "toolCallId": "c", "inputTextDelta": '{"ci'},
        {
            "type": "tool-input-error",
            "toolCallId": "c",
            "toolName": "w",
            "input": '{"ci',
            "errorText": "bad",
        },
    )
    assert part[kept_as] == '{"ci'
    assert gone not in part
    assert (part["state"], part["errorText"], part["title"]) == ("output-error", "bad", "W")


@pytest.mark.parametrize("ai_sdk", MAJORS)
def test_a_dynamic_tool_s_failed_input_is_input_in_both(ai_sdk: AISDKVersion) -> None:
    (part,) = parts(
        ai_sdk,
        {
            "type": "tool-input-error",
            "toolCallId": "c",
            "toolName": "mcp",
            "input": "?",
            "errorText": "bad",
            "dynamic": True,
        },
    )
    assert part == {
        "type": "dynamic-tool",
        "toolName": "mcp",
        "toolCallId": "c",
        "state": "output-error",
        "input": "?",
        "errorText": "bad",
    }


# -- approvals -----------------------------------------------------------------------


CALL = {"type": "tool-input-available", "toolCallId": "c", "toolName": "w", "input": {"a": 1}}


def request(**extra: Any) -> dict[str, Any]:
    return {"type": "tool-approval-request", "toolCallId": "c", "approvalId": "ap", **extra}


def test_an_approval_request_s_reason_and_is_automatic_are_7_s() -> None:
    chunk = request(reason="costs a credit", isAutomatic=True, signature="sig")
    assert parts(7, CALL, chunk)[0]["approval"] == {
        "id": "ap",
        "requestReason": "costs a credit",
        "isAutomatic": True,
        "signature": "sig",
    }
    assert parts(6, CALL, chunk)[0]["approval"] == {"id": "ap", "signature": "sig"}
    # Only true is said: false is the default.
    assert parts(7, CALL, request(isAutomatic=False))[0]["approval"] == {"id": "ap"}


def test_an_approval_response_answers_the_request_in_7() -> None:
    response = {
        "type": "tool-approval-response",
        "approvalId": "ap",
        "approved": False,
        "reason": "too dear",
        "providerExecuted": True,
        "providerMetadata": {"p": {"k": 1}},
    }
    (part,) = parts(7, CALL, request(reason="costs a credit"), response)
    assert part == {
        "type": "tool-w",
        "toolCallId": "c",
        "state": "approval-responded",
        "input": {"a": 1},
        "approval": {
            "id": "ap",
            "requestReason": "costs a credit",
            "approved": False,
            "reason": "too dear",
        },
        "providerExecuted": True,
        "callProviderMetadata": {"p": {"k": 1}},
    }
    # 6 does not know the chunk: the request stands.
    assert parts(6, CALL, request(), response)[0]["state"] == "approval-requested"


def test_a_second_response_without_a_reason_keeps_the_first_one_s() -> None:
    first = {"type": "tool-approval-response", "approvalId": "ap", "approved": False, "reason": "r"}
    second = {"type": "tool-approval-response", "approvalId": "ap", "approved": True}
    approval = parts(7, CALL, request(), first, second)[0]["approval"]
    assert approval == {"id": "ap", "approved": True, "reason": "r"}


def test_a_snapshot_taken_before_the_response_keeps_the_request() -> None:
    state = WorkerState(ai_sdk=7)
    state.apply_all(events({"type": "start", "messageId": "m"}, CALL, request()))
    before = state.snapshot()
    state.apply_all(
        events({"type": "tool-approval-response", "approvalId": "ap", "approved": True})
    )
    assert before.messages[0]["parts"][0]["approval"] == {"id": "ap"}
    assert state.snapshot().messages[0]["parts"][0]["approval"]["approved"] is True


def test_a_response_to_an_unknown_approval_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = WorkerState(ai_sdk=7)
    state.apply_all(events({"type": "start", "messageId": "m"}, CALL))
    before = state.snapshot()
    with caplog.at_level(logging.WARNING, logger="handinger_stream"):
        (response,) = events(
            {"type": "tool-approval-response", "approvalId": "x", "approved": True}
        )
        assert state.apply(response) is False
    assert state.snapshot() == before
    assert "unknown approval 'x'" in caplog.text


# -- parts only 7 has ----------------------------------------------------------------


SEVEN_ONLY_PARTS = (
    {"type": "custom", "kind": "app.card", "providerMetadata": {"p": {"k": 1}}},
    {"type": "reasoning-file", "url": "data:image/png;base64,AA==", "mediaType": "image/png"},
    {
        "type": "steering-message",
        "id": "s",
        "parts": [{"type": "text", "text": "Paris, TX", "x": 1}],
    },
)


def test_custom_reasoning_file_and_steering_message_parts_in_7() -> None:
    worker = run(7, {"type": "start", "messageId": "m"}, *SEVEN_ONLY_PARTS)
    assert worker.messages[0]["parts"] == [
        {"type": "custom", "kind": "app.card", "providerMetadata": {"p": {"k": 1}}},
        {"type": "reasoning-file", "mediaType": "image/png", "url": "data:image/png;base64,AA=="},
        {
            "type": "steering-message",
            "id": "s",
            "parts": [{"type": "text", "text": "Paris, TX", "x": 1}],
        },
    ]
    # A reasoning file is not among the answer's files.
    assert worker.files == []


@pytest.mark.parametrize(
    "chunk", [*SEVEN_ONLY_PARTS, {"type": "reset-step"}], ids=lambda c: c["type"]
)
def test_under_6_a_7_only_chunk_changes_nothing_as_an_unknown_one(chunk: dict[str, Any]) -> None:
    state = WorkerState("w", ai_sdk=6)
    (event,) = events(chunk)
    assert state.apply(event) is False
    # Not even the status: like an unknown chunk, it says nothing of the worker.
    assert state.snapshot() == WorkerState("w", ai_sdk=6).snapshot()
    state.apply_all(events({"type": "start", "messageId": "m"}, {"type": "text-start", "id": "t"}))
    before = state.snapshot()
    assert state.apply(event) is False
    assert state.snapshot() == before


# -- reset-step ----------------------------------------------------------------------


DRAFT = (
    {"type": "start-step"},
    {"type": "reasoning-start", "id": "r1"},
    {"type": "reasoning-delta", "id": "r1", "delta": "Draft thinking"},
    {"type": "text-start", "id": "t1"},
    {"type": "text-delta", "id": "t1", "delta": "Draft answer."},
    {"type": "source-url", "sourceId": "s1", "url": "https://draft.example", "title": "Draft"},
    {"type": "source-url", "sourceId": "s2", "url": "https://new.example"},
    {"type": "file", "url": "https://files.example/draft.txt", "mediaType": "text/plain"},
    {"type": "tool-input-start", "toolCallId": "c", "toolName": "w"},
    {"type": "tool-input-delta", "toolCallId": "c", "inputTextDelta": '{"ci'},
)
STEP_ONE = (
    {"type": "start", "messageId": "m"},
    {"type": "start-step"},
    {"type": "text-start", "id": "t0"},
    {"type": "text-delta", "id": "t0", "delta": "Kept."},
    {"type": "text-end", "id": "t0"},
    {"type": "source-url", "sourceId": "s1", "url": "https://kept.example", "title": "Kept"},
    {"type": "file", "url": "https://files.example/kept.txt", "mediaType": "text/plain"},
    {"type": "finish-step"},
)


def test_reset_step_throws_the_draft_away_from_the_message_and_the_worker() -> None:
    before = run(7, *STEP_ONE)
    worker = run(
        7,
        *STEP_ONE,
        *DRAFT,
        {"type": "reset-step"},
        {"type": "text-start", "id": "t1"},
        {"type": "text-delta", "id": "t1", "delta": " Final."},
        {"type": "text-end", "id": "t1"},
    )
    assert worker.messages[0]["parts"] == [
        *before.messages[0]["parts"],
        {"type": "step-start"},
        {"type": "text", "text": " Final.", "state": "done"},
    ]
    assert worker.output_text == "Kept. Final."
    assert [o.id for o in worker.output] == ["t0", "t1"]
    # s1 as step one said it, s2 gone; the draft's file gone.
    assert worker.sources == before.sources
    assert worker.files == before.files


def test_under_6_reset_step_is_not_known_and_the_draft_stays() -> None:
    worker = run(6, *STEP_ONE, *DRAFT, {"type": "reset-step"})
    assert worker.output_text == "Kept.Draft answer."
    assert [s.id for s in worker.sources] == ["s1", "s2"]
    assert len(worker.files) == 2


def test_reset_step_without_a_step_start_empties_the_message() -> None:
    worker = run(
        7,
        {"type": "start", "messageId": "m"},
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": "gone"},
        {"type": "reset-step"},
    )
    assert worker.messages == [{"id": "m", "role": "assistant", "parts": []}]
    assert (worker.output_text, worker.output) == ("", [])


def test_reset_step_of_an_empty_step_writes_nothing() -> None:
    # The bare step-start stays unshown (the SDK yields no message for it).
    chunks = (*STEP_ONE, {"type": "start-step"})
    before = run(7, *chunks)
    state = WorkerState("w", ai_sdk=7)
    state.apply_all(events(*chunks))
    (reset,) = events({"type": "reset-step"})
    assert state.apply(reset) is False
    assert state.snapshot().messages == before.messages
    assert before.messages[0]["parts"][-1] != {"type": "step-start"}


def test_after_reset_step_a_delta_for_a_forgotten_part_starts_a_new_one() -> None:
    # Every open part is forgotten, the earlier step's too: the SDK fails the
    # stream at such a delta; we start a part (our leniency), never append to the old.
    got = parts(
        7,
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": "a"},
        {"type": "start-step"},
        {"type": "text-start", "id": "u"},
        {"type": "reset-step"},
        {"type": "text-delta", "id": "t", "delta": "b"},
    )
    assert got == [
        {"type": "text", "text": "a", "state": "streaming"},
        {"type": "step-start"},
        {"type": "text", "text": "b", "state": "streaming"},
    ]


def test_reset_step_forgets_a_streaming_tool_input() -> None:
    state = WorkerState("w", ai_sdk=7)
    state.apply_all(events(*STEP_ONE, *DRAFT, {"type": "reset-step"}))
    before = state.snapshot()
    (delta,) = events({"type": "tool-input-delta", "toolCallId": "c", "inputTextDelta": "ty"})
    assert state.apply(delta) is False
    assert state.snapshot() == before


# A step's content: ids drawn from the step's own namespace, so that nothing in
# the step can reach a part of the steps before it (deltas to an open part of an
# earlier step would change that part, which a reset-step does not take back).


def step_chunks(space: str) -> st.SearchStrategy[list[dict[str, Any]]]:
    ids = st.sampled_from([f"{space}{i}" for i in range(3)])
    words = st.text(alphabet="ab ü", max_size=4)
    text = st.builds(
        lambda kind, i, deltas, end: [
            {"type": f"{kind}-start", "id": i},
            *({"type": f"{kind}-delta", "id": i, "delta": d} for d in deltas),
            *([{"type": f"{kind}-end", "id": i}] if end else []),
        ],
        st.sampled_from(["text", "reasoning"]),
        ids,
        st.lists(words, max_size=3),
        st.booleans(),
    )
    source = st.builds(
        lambda s, url: [{"type": "source-url", "sourceId": s, "url": url}],
        st.sampled_from(["s1", "s2", "s3"]),  # shared with the other steps: undone on reset
        st.sampled_from(["https://a.example", "https://b.example"]),
    )
    file = st.builds(
        lambda url: [{"type": "file", "url": url, "mediaType": "text/plain"}],
        st.sampled_from(["https://f.example/1", "https://f.example/2"]),
    )
    tool = st.builds(
        lambda c, pieces, done: [
            {"type": "tool-input-start", "toolCallId": c, "toolName": "w"},
            *({"type": "tool-input-delta", "toolCallId": c, "inputTextDelta": p} for p in pieces),
            *(
                [
                    {"type": "tool-input-available", "toolCallId": c, "toolName": "w", "input": {}},
                    {"type": "tool-output-available", "toolCallId": c, "output": 1},
                ]
                if done
                else []
            ),
        ],
        ids,
        st.lists(st.sampled_from(['{"a"', ":1", "}"]), max_size=3),
        st.booleans(),
    )
    data = st.builds(lambda n: [{"type": "data-note", "data": n}], st.integers(0, 9))
    custom = st.just([{"type": "custom", "kind": "k"}])
    block = st.one_of(text, source, file, tool, data, custom)
    return st.lists(block, max_size=5).map(lambda blocks: [c for b in blocks for c in b])


@settings(max_examples=150, deadline=None)
@given(
    earlier=step_chunks("p"),
    step=step_chunks("q"),
    finish=st.booleans(),
)
def test_reset_step_after_any_step_leaves_the_message_as_before_the_step_s_parts(
    earlier: list[dict[str, Any]], step: list[dict[str, Any]], finish: bool
) -> None:
    # The earlier step ends with a write (a data part), so that no step-start of
    # its own is left unshown; the step under way may end with finish-step or not.
    head = [
        {"type": "start", "messageId": "m"},
        {"type": "start-step"},
        *earlier,
        {"type": "data-end", "data": 0},
        *([{"type": "finish-step"}] if finish else []),
        {"type": "start-step"},
    ]
    before = run(7, *head)
    after = run(7, *head, *step, {"type": "reset-step"})
    # The step-start stays, shown when the step had parts to take away.
    shown = [{"type": "step-start"}] if step else []
    assert after.messages == [
        {**before.messages[0], "parts": [*before.messages[0]["parts"], *shown]}
    ]
    assert after.output_text == before.output_text
    assert after.output == before.output
    assert after.sources == before.sources
    assert after.files == before.files
    # ai 6 does not know the chunk: the reset changes nothing at all.
    assert run(6, *head, *step, {"type": "reset-step"}) == run(6, *head, *step)


# -- what is the same in both --------------------------------------------------------


@pytest.mark.parametrize("ai_sdk", MAJORS)
def test_interrupted_is_a_finish_reason_like_any_other(ai_sdk: AISDKVersion) -> None:
    # 7's schema adds "interrupted"; neither fold keeps the finish reason in the
    # message, and the Worker completes either way.
    worker = run(
        ai_sdk,
        {"type": "start", "messageId": "m"},
        {"type": "finish", "finishReason": "interrupted", "messageMetadata": {"i": True}},
    )
    assert (worker.status, worker.messages[0]["metadata"]) == ("completed", {"i": True})


@pytest.mark.parametrize("ai_sdk", MAJORS)
def test_ids_that_are_object_prototype_names_are_plain_ids(ai_sdk: AISDKVersion) -> None:
    # Both majors keep their id maps without a prototype: "__proto__" and "constructor"
    # are ids like any, each its own part, interleaved as they came.
    got = parts(
        ai_sdk,
        {"type": "text-start", "id": "__proto__"},
        {"type": "text-start", "id": "constructor"},
        {"type": "text-delta", "id": "__proto__", "delta": "x"},
        {"type": "text-delta", "id": "constructor", "delta": "y"},
        {"type": "text-delta", "id": "__proto__", "delta": "z"},
        {"type": "text-end", "id": "constructor"},
    )
    assert [(p["text"], p["state"]) for p in got] == [("xz", "streaming"), ("y", "done")]


@pytest.mark.parametrize("ai_sdk", MAJORS)
def test_a_data_part_keeps_its_other_keys_in_both(ai_sdk: AISDKVersion) -> None:
    # Both SDKs store the chunk itself as the part; a replacement changes only data.
    got = parts(
        ai_sdk,
        {"type": "data-row", "id": "r", "data": 1, "extra": {"kept": True}},
        {"type": "data-row", "id": "r", "data": 2, "other": "not kept"},
    )
    assert got == [{"type": "data-row", "id": "r", "data": 2, "extra": {"kept": True}}]


def test_encode_event_gives_a_7_only_chunk_back() -> None:
    for chunk in (*SEVEN_ONLY_PARTS, {"type": "reset-step"}):
        raw = msgspec.json.encode(chunk)
        (event,) = events(chunk)
        assert msgspec.json.decode(encode_event(event)) == msgspec.json.decode(raw)


def test_an_abort_with_a_reason_is_an_abort_and_a_running_error_no_ending() -> None:
    """ai 7's abort carries free text: still ``aborted``. An error on a worker that is
    still running (a snapshot mid-turn) is not its ending."""
    aborted = fold([StartEvent(message_id="m"), AbortEvent(reason="the user pressed stop")])
    assert aborted.outcome == "aborted"
    assert aborted.incomplete_details == {"reason": "aborted", "detail": "the user pressed stop"}
    assert Worker(id="w", status="running", running=True, error="old").outcome is None
