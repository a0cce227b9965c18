"""Compaction figures: events and bytes of a long turn's replay, whole and compacted.

    python -m benchmarks.compact            # the 400-chunk turn
    python -m benchmarks.compact -n 4000    # a longer one

The turn is shaped as a model streams one: a reasoning part, a tool call whose
input streams while the answer's first words do (the two interleave), the
tool's output, then the answer in deltas of a token or two; an SSE id on
every event, as the emulator and the relay send them.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import msgspec

from handinger_stream.protocol.compact import compact

_encode = msgspec.json.Encoder().encode
WORDS = "the quick brown fox jumps over a lazy dog while Zoë reads “quoted” text, 1 2 3".split()


def long_turn(chunks: int = 400, interleave: int = 16) -> list[tuple[bytes, str | None]]:
    """A turn of ``chunks`` events as (JSON bytes, SSE id), ids "0", "1", ...; a text
    delta after every fourth of the first ``interleave`` tool input deltas."""
    deltas = max(chunks - 20, 10)
    reasoning, tool = deltas // 6, deltas // 6
    out: list[dict[str, Any]] = [
        {"type": "start", "messageId": "msg-long"},
        {"type": "start-step"},
        {"type": "reasoning-start", "id": "r1"},
    ]
    out += [
        {"type": "reasoning-delta", "id": "r1", "delta": f" {WORDS[i % len(WORDS)]}"}
        for i in range(reasoning)
    ]
    out += [
        {"type": "reasoning-end", "id": "r1"},
        {"type": "tool-input-start", "toolCallId": "call-1", "toolName": "search"},
        {"type": "text-start", "id": "t1"},
    ]
    query = '{"query": "' + " ".join(WORDS) + '", "limit": 10}'
    step = max(len(query) // tool, 1)
    pieces = [query[i : i + step] for i in range(0, len(query), step)][: tool - 1]
    pieces.append(query[len("".join(pieces)) :])
    for i, piece in enumerate(pieces):  # the input streams while the answer starts
        out.append({"type": "tool-input-delta", "toolCallId": "call-1", "inputTextDelta": piece})
        if i % 4 == 3 and i < interleave:
            out.append({"type": "text-delta", "id": "t1", "delta": f" {WORDS[i % len(WORDS)]}"})
    out += [
        {
            "type": "tool-input-available",
            "toolCallId": "call-1",
            "toolName": "search",
            "input": msgspec.json.decode(query),
        },
        {
            "type": "tool-output-available",
            "toolCallId": "call-1",
            "output": {"results": ["https://example.com/a", "https://example.com/b"]},
        },
        {"type": "source-url", "sourceId": "s1", "url": "https://example.com/a"},
        {"type": "data-progress", "id": "p", "data": {"done": 1}},
        {"type": "data-progress", "id": "p", "data": {"done": 2}},
    ]
    tail: list[dict[str, Any]] = [
        {"type": "text-end", "id": "t1"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "stop"},
    ]
    out += [
        {"type": "text-delta", "id": "t1", "delta": f" {WORDS[i % len(WORDS)]}"}
        for i in range(max(chunks - len(out) - len(tail), 1))
    ]
    out += tail
    return [(_encode(chunk), str(i)) for i, chunk in enumerate(out)]


def wire_bytes(history: list[tuple[bytes, str | None]]) -> int:
    """The SSE bytes a replay of ``history`` writes (``id:`` and ``data:`` lines)."""
    return sum(len(data) + len(event_id or "") + 14 for data, event_id in history)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compact")
    parser.add_argument("-n", type=int, default=400, help="events in the turn (400)")
    parser.add_argument(
        "--interleave", type=int, default=16, help="tool input deltas the text interleaves with"
    )
    args = parser.parse_args()
    turn = long_turn(args.n, args.interleave)
    started = time.perf_counter()
    rounds = 200
    for _ in range(rounds):
        compacted = compact(turn)
    took = (time.perf_counter() - started) / rounds
    before, after = wire_bytes(turn), wire_bytes(compacted)
    print(f"events: {len(turn)} -> {len(compacted)} ({len(turn) / len(compacted):.1f}x fewer)")
    print(f"bytes:  {before} -> {after} ({before / after:.1f}x fewer, SSE framing with ids)")
    print(f"compact(): {took * 1e6:.0f} us for the turn, {took / len(turn) * 1e9:.0f} ns per event")


if __name__ == "__main__":
    main()
