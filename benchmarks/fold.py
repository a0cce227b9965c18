"""Fold cost: the reducer alone against a plain list-append-and-join.

The stream folds what it handed over in batches (``WorkerState.apply_all``,
a read's worth at a time); folding one event at a time (``apply``) is shown
beside it. Also shows that folding is linear: the per-event cost of the last
tenth of the deltas is about that of the first tenth (no copying of earlier
text).
"""

from __future__ import annotations

import time
from typing import Any

from handinger_stream.protocol.reducer import WorkerState
from handinger_stream.types.events import TextDeltaEvent, TextStartEvent


def _deltas(n: int) -> list[TextDeltaEvent]:
    return [TextDeltaEvent(id="t", delta=f"tok{i % 97} ") for i in range(n)]


BATCH = 1000  # about a read's worth of events


def run(n: int) -> dict[str, Any]:
    events = _deltas(n)
    state = WorkerState("w")
    state.apply(TextStartEvent(id="t"))
    tenth = max(n // 10, 1)
    marks = []
    t0 = time.perf_counter()
    for i in range(0, n, BATCH):
        if i % tenth < BATCH:
            marks.append(time.perf_counter())
        state.apply_all(events[i : i + BATCH])
    marks.append(time.perf_counter())  # the tenths measure folding; the join is paid once, here
    text = state.snapshot().output_text
    fold_s = time.perf_counter() - t0

    one = WorkerState("w")
    one.apply(TextStartEvent(id="t"))
    t0 = time.perf_counter()
    for event in events:
        one.apply(event)
    assert one.snapshot().output_text == text
    one_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    pieces: list[str] = []
    for event in events:
        pieces.append(event.delta)
    joined = "".join(pieces)
    baseline_s = time.perf_counter() - t0
    assert joined == text

    first, last = marks[1] - marks[0], marks[-1] - marks[-2]
    return {
        "deltas": n,
        "fold_s": fold_s,
        "baseline_s": baseline_s,
        "ratio_to_append_join": fold_s / baseline_s,
        "fold_us_per_event": fold_s / n * 1e6,
        "one_by_one_us_per_event": one_s / n * 1e6,
        "first_tenth_s": first,
        "last_tenth_s": last,
        "last_over_first": last / first,
    }
