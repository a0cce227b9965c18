"""Compaction (protocol/compact.py) never changes a fold: ours under both ``ai_sdk``
values, on generated histories and every interop fixture of both majors, and the
AI SDK's own ``readUIMessageStream`` of each major (``tests/interop/fold_file.mjs``)
on every fixture and a long turn. A resume from any event of a compacted replay
is exact."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from benchmarks.compact import long_turn
from handinger_stream import AISDKVersion, Worker
from handinger_stream.protocol.compact import compact, compact_events
from handinger_stream.protocol.reducer import fold
from handinger_stream.protocol.sse import ServerSentEvent, SSEDecoder
from handinger_stream.protocol.wire import DONE, decode_event
from handinger_stream.types.events import Event, TextDeltaEvent, ToolInputDeltaEvent
from tests.nodejs import node_for, npm_project
from tests.protocol.test_interop import CASES, MAJORS, fixtures, project, recorded, scenarios

History = list[tuple[bytes, str | None]]
_encode = msgspec.json.Encoder().encode


def decoded(history: History) -> list[Event]:
    return [decode_event(ServerSentEvent(data, id=i), n) for n, (data, i) in enumerate(history)]


def folded(history: History, ai_sdk: AISDKVersion) -> Worker:
    return fold(decoded(history), "w", ai_sdk=ai_sdk)


def from_sse(raw: bytes) -> tuple[History, bool]:
    """A fixture's events with ids "0", "1", ... (the SDK sends none), and whether
    it ended with ``[DONE]``."""
    events = SSEDecoder().feed(raw)
    done = bool(events) and events[-1].raw == DONE
    return [(e.raw, str(n)) for n, e in enumerate(events) if e.raw != DONE], done


def to_sse(history: History, done: bool) -> bytes:
    out = b"".join(
        (b"id: %s\n" % i.encode() if i is not None else b"") + b"data: " + d + b"\n\n"
        for d, i in history
    )
    return out + (b"data: [DONE]\n\n" if done else b"")


# -- generated histories -------------------------------------------------------

_text = st.text(
    st.characters(codec="utf-8") | st.sampled_from('"\\\n\t/é😀'),
    max_size=6,
)
_meta = st.none() | st.dictionaries(st.sampled_from("ab"), st.integers(0, 3), max_size=1)


@st.composite
def _chunk(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(
            ["text-delta"] * 6
            + ["reasoning-delta", "tool-input-delta"] * 3
            + ["data"] * 2
            + [
                "start",
                "start-step",
                "finish-step",
                "reset-step",
                "text-start",
                "text-end",
                "reasoning-start",
                "reasoning-end",
                "tool-input-start",
                "tool-input-available",
                "message-metadata",
                "snapshot",
                "odd-delta",
            ]
        )
    )
    part = draw(st.sampled_from(["a", "b"]))
    call = draw(st.sampled_from(["c1", "c2"]))
    if kind in ("text-delta", "reasoning-delta"):
        chunk: dict[str, Any] = {"type": kind, "id": part if kind[0] == "t" else "r"}
        chunk["delta"] = draw(_text)
        meta = draw(_meta)
        if meta is not None:
            chunk["providerMetadata"] = meta
        return chunk
    if kind == "tool-input-delta":
        return {"type": kind, "toolCallId": call, "inputTextDelta": draw(_text)}
    if kind == "odd-delta":  # a key no schema names (ai 7's loose chunks): kept whole
        return {"type": "text-delta", "id": part, "delta": draw(_text), "future": 1}
    if kind == "data":
        chunk = {"type": draw(st.sampled_from(["data-x", "data-y"]))}
        if draw(st.booleans()):
            chunk["id"] = draw(st.sampled_from(["1", "2"]))
        chunk["data"] = draw(st.integers(0, 9))
        if draw(st.integers(0, 3)) == 0:
            chunk["transient"] = draw(st.booleans())
        return chunk
    if kind == "start":
        return {"type": "start", "messageId": draw(st.sampled_from(["m", "m2"]))}
    if kind in ("text-start", "text-end"):
        return {"type": kind, "id": part}
    if kind in ("reasoning-start", "reasoning-end"):
        return {"type": kind, "id": "r"}
    if kind == "tool-input-start":
        return {"type": kind, "toolCallId": call, "toolName": "t"}
    if kind == "tool-input-available":
        return {"type": kind, "toolCallId": call, "toolName": "t", "input": {"q": 1}}
    if kind == "message-metadata":
        return {"type": kind, "messageMetadata": {"n": draw(st.integers(0, 3))}}
    if kind == "snapshot":
        output = [
            {
                "type": "message",
                "id": part,
                "content": [{"type": "output_text", "text": draw(_text)}],
            }
        ]
        worker = {"id": "w", "status": "running", "output": output}
        return {"type": "data-worker", "data": worker}
    return {"type": kind}


@st.composite
def histories(draw: st.DrawFn) -> History:
    chunks = [{"type": "start", "messageId": "m"}, *draw(st.lists(_chunk(), max_size=40))]
    return [(_encode(c), str(n)) for n, c in enumerate(chunks)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
@example(  # a data part's "transient": false stays on the part a later one replaces
    [
        (b'{"type":"start","messageId":"m"}', "0"),
        (b'{"type":"data-x","id":"1","data":0,"transient":false}', "1"),
        (b'{"type":"data-x","id":"1","data":0}', "2"),
    ]
)
def test_compaction_never_changes_the_fold(history: History) -> None:
    compacted = compact(history)
    assert len(compacted) <= len(history)
    for ai_sdk in MAJORS:
        assert folded(compacted, ai_sdk) == folded(history, ai_sdk)
        typed = compact_events(decoded(history))
        assert fold(typed, "w", ai_sdk=ai_sdk) == folded(history, ai_sdk)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_a_resume_from_any_event_of_a_compacted_replay_is_exact(history: History) -> None:
    """Every event stands for exactly the history up to its id: what follows it is
    the compaction of the rest."""
    compacted = compact(history)
    assert compacted[-1][1] == history[-1][1]  # the last id is kept
    for k in range(1, len(compacted)):
        after = int(str(compacted[k - 1][1]))
        assert compacted[:k] + compact(history[after + 1 :]) == compacted


def test_adjacent_deltas_of_one_part_merge_and_interleaved_ones_keep_their_order() -> None:
    history = [
        (b'{"type":"text-delta","id":"a","delta":"x"}', "1"),
        (b'{"type":"text-delta","id":"a","delta":"\\"y\\u00e9"}', "2"),
        (b'{"type":"tool-input-delta","toolCallId":"c","inputTextDelta":"{\\"q"}', "3"),
        (b'{"type":"tool-input-delta","toolCallId":"c","inputTextDelta":"\\":1}"}', "4"),
        (b'{"type":"text-delta","id":"a","delta":"z"}', "5"),
        (b'{"type":"text-delta","id":"b","delta":"w"}', "6"),
    ]
    assert compact(history) == [
        (b'{"type":"text-delta","id":"a","delta":"x\\"y\\u00e9"}', "2"),
        (b'{"type":"tool-input-delta","toolCallId":"c","inputTextDelta":"{\\"q\\":1}"}', "4"),
        (b'{"type":"text-delta","id":"a","delta":"z"}', "5"),
        (b'{"type":"text-delta","id":"b","delta":"w"}', "6"),
    ]


@pytest.mark.parametrize(
    "second",
    [
        b'{"type":"text-delta","id":"a","delta":"\\ude00"}',  # half of a character
        b'{"type":"text-delta","id":"a","delta":"\xa9"}',  # invalid UTF-8
        b'{"type":"text-delta","id":"a","delta":"\\q"}',  # a bad escape
        b'{"type":"text-delta","id":"a","delta":"x","extra":true}',  # a key no schema names
        b'{"type":"text-delta","id":"a","delta":"x"',  # not JSON
        b'{"type":"text-delta","id":"a","delta":"x","providerMetadata":null}',  # `??` in the SDK
    ],
)
def test_what_could_fold_otherwise_is_never_merged(second: bytes) -> None:
    first = b'{"type":"text-delta","id":"a","delta":"\\ud83d"}'
    history: History = [(b'{"type":"text-delta","id":"a","delta":"ok"}', "0"), (second, "1")]
    assert compact(history) == history
    assert compact([(first, "0"), (first, "1")]) == [(first, "0"), (first, "1")]


def test_provider_metadata_the_last_given_is_kept() -> None:
    history: History = [
        (b'{"type":"text-delta","id":"a","delta":"x","providerMetadata":{"p":1}}', "1"),
        (b'{"type":"text-delta","delta":"y","id":"a"}', "2"),
    ]
    assert compact(history) == [
        (b'{"type":"text-delta","id":"a","delta":"xy","providerMetadata":{"p":1}}', "2")
    ]


def test_data_parts_adjacent_with_one_id_keep_the_last_and_the_rest_stay() -> None:
    v1, v2 = b'{"type":"data-x","id":"p","data":1}', b'{"type":"data-x","id":"p","data":2}'
    transient = b'{"type":"data-x","id":"p","data":3,"transient":true}'
    no_id = b'{"type":"data-x","data":4}'
    assert compact([(v1, "1"), (v2, "2")]) == [(v2, "2")]
    kept: History = [(v1, "1"), (transient, "2"), (no_id, "3"), (no_id, "4")]
    assert compact(kept) == kept


def test_the_same_stored_events_compact_the_same_every_time() -> None:
    # A relay's readers share its log's bytes, and each parse is remembered by them: a
    # merge must never change what the next reader's compaction starts from.
    delta = b'{"type":"text-delta","id":"t","delta":"%s","providerMetadata":{"b":{"t":%d}}}'
    history = [(delta % (b"w%d " % i, i), str(i)) for i in range(20)]
    first = compact(history)
    assert compact(history) == first == compact(history[:])
    assert compact(history[5:]) == [(first[0][0].replace(b"w0 w1 w2 w3 w4 ", b""), "19")]


def test_typed_compaction_merges_as_the_bytes_do() -> None:
    events: list[Event] = [
        TextDeltaEvent(id="a", delta="x", event_id="1"),
        TextDeltaEvent(id="a", delta="y", event_id="2"),
        ToolInputDeltaEvent(tool_call_id="c", input_text_delta="{", event_id="3"),
        ToolInputDeltaEvent(tool_call_id="c", input_text_delta="}", event_id="4"),
    ]
    assert compact_events(events) == [
        TextDeltaEvent(id="a", delta="xy", event_id="2"),
        ToolInputDeltaEvent(tool_call_id="c", input_text_delta="{}", event_id="4"),
    ]


# -- the interop fixtures and a long turn ----------------------------------------


@pytest.mark.parametrize(("major", "name"), CASES)
def test_every_fixture_folds_the_same_compacted(major: AISDKVersion, name: str) -> None:
    raw, record = recorded(major, name)
    history, _ = from_sse(raw)
    compacted = compact(history)
    whole = folded(history, major)
    assert folded(compacted, major) == whole
    if record["message"] is not None:
        assert whole.messages[-1] == record["message"]
    if name.startswith("long-"):
        assert len(compacted) * 100 < len(history)


def test_a_400_chunk_turn_shrinks_tenfold_in_events_and_threefold_in_bytes() -> None:
    turn = long_turn(400)
    compacted = compact(turn)
    assert len(turn) == 400
    assert len(compacted) * 10 <= len(turn)
    assert sum(len(d) + len(str(i)) for d, i in compacted) * 3 <= sum(
        len(d) + len(str(i)) for d, i in turn
    )
    for ai_sdk in MAJORS:
        assert folded(compacted, ai_sdk) == folded(turn, ai_sdk)


@pytest.mark.parametrize("major", MAJORS, ids=lambda m: f"ai{m}")
def test_the_sdk_folds_the_same_message_from_the_compacted_stream(
    major: AISDKVersion, tmp_path: Path
) -> None:
    """Each major's readUIMessageStream, over every fixture of that major and a long
    turn (interleaved deltas, every 4th tool delta; and a heavily interleaved one)."""
    streams: dict[str, tuple[History, bool]] = {
        name: from_sse(recorded(major, name)[0]) for name in scenarios(major)
    }
    streams["long-turn"] = (long_turn(400), True)
    streams["long-turn-interleaved"] = (long_turn(2000, interleave=1000), True)
    files: list[str] = []
    for name, (history, done) in streams.items():
        compacted = compact(history)
        assert name.startswith("long-turn") is False or len(compacted) < len(history)
        for kind, events in (("whole", history), ("compacted", compacted)):
            path = tmp_path / f"{name}.{kind}.sse"
            path.write_bytes(to_sse(events, done))
            files.append(str(path))
    cwd = npm_project(project(major))
    result = subprocess.run(
        [node_for(project(major)), "fold_file.mjs", *files],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    folds = {
        Path(r["file"]).name: r for r in map(json.loads, filter(None, result.stdout.split("\n")))
    }
    assert len(folds) == len(files)
    for name, (history, _) in streams.items():
        whole, compacted = folds[f"{name}.whole.sse"], folds[f"{name}.compacted.sse"]
        assert compacted["message"] == whole["message"], name
        assert compacted["errors"] == whole["errors"], name
        if name in scenarios(major):
            record = json.loads((fixtures(major) / f"{name}.json").read_text("utf-8"))
            assert whole["message"] == record["message"], name
        else:  # ours folds the long turn as the SDK does, whole and compacted
            ours = folded(compact(history), major).messages[-1]
            assert ours == whole["message"], name
