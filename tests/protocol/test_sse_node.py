"""npm's eventsource-parser as a second differential oracle for SSEDecoder.

Runs when ``node`` and ``npm`` are on the machine (CI has them): the pinned
parser is installed once into a cache directory outside the repository.
Without them the test is skipped, saying how to run it.

Documented deviations of eventsource-parser left out of the comparison: it
reports an ``id`` only on the event whose block set it (the EventSource
object keeps the last one), and leaves BOM stripping to the text decoder in
front of it, so no stream here starts with a BOM.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from handinger_stream.protocol.sse import SSEDecoder
from tests.nodejs import npm_package

VERSION = "3.1.1"
HERE = Path(__file__).parent.parent / "node"


_VALUES = ["", "a", '{"x":1}', " sp", "é", "ü 東"]
_LINES = [
    *("data: " + v for v in _VALUES),
    "id: 1",
    "id: 42",
    "id: abc",
    "event: ping",
    "event: update",
    "retry: 1000",
    "retry: x",
    ": comment",
    "",
    "",
    "data",
    "noise: 1",
]


def _streams(seed: int, count: int) -> list[tuple[str, list[str]]]:
    rnd = random.Random(seed)
    streams = []
    for _ in range(count):
        end = rnd.choice(["\n", "\r\n", "\r"])
        lines = [rnd.choice(_LINES) for _ in range(rnd.randint(0, 25))]
        # eventsource-parser waits for the byte after a last CR (it may start a
        # CRLF) and never learns the input ended: so every stream ends in LF.
        text = end.join(lines) + end + end + "\n"
        cuts = sorted(rnd.randint(0, len(text)) for _ in range(rnd.randint(0, 8)))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True) if b > a]
        streams.append((text, chunks))
    return streams


def _ours(chunks: list[str]) -> list[tuple[str, str, str | None]]:
    decoder = SSEDecoder()
    events = []
    for chunk in chunks:
        events += decoder.feed(chunk.encode())
    events += decoder.close()
    return [(e.event, e.data, e.id) for e in events]


@pytest.mark.parametrize("seed", range(3))
def test_matches_eventsource_parser(seed: int) -> None:
    streams = _streams(seed, 500)
    cache = npm_package(f"eventsource-parser@{VERSION}")
    result = subprocess.run(
        ["node", str(HERE / "sse_oracle.js")],
        input=json.dumps([chunks for _, chunks in streams]),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "NODE_PATH": str(cache / "node_modules")},
    )
    for (text, chunks), theirs in zip(streams, json.loads(result.stdout), strict=True):
        ours = _ours(chunks)
        assert [(e, d) for e, d, _ in ours] == [
            (t.get("event", "message"), t["data"]) for t in theirs
        ], text
        for (_, _, our_id), their in zip(ours, theirs, strict=True):
            if "id" in their:
                assert our_id == their["id"], text
