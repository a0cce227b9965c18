"""The watch table (issue 23, item 5): output tokens grow while a worker writes, the totals
are never cut, ids stay whole at 80 columns, and the rows' and totals' times agree."""

from __future__ import annotations

import re

from rich.console import Console

from handinger_stream.client.watch import WatchEvent
from handinger_stream.monitoring.dashboard import Board, Row
from handinger_stream.types.events import TextDeltaEvent
from handinger_stream.types.worker import Usage, Worker

ID = "wrk_0123456789abcdef0123"


def _text(board: Board, width: int, now: float) -> str:
    console = Console(width=width, record=True, force_terminal=False)
    console.print(board.table(height=30, width=width, now=now))
    return console.export_text()


def test_output_tokens_grow_while_a_worker_writes() -> None:
    board = Board(started=0)
    board.add(ID)
    writing = Worker(id=ID, status="running", running=True, usage=Usage(input_tokens=300))
    seen = []
    for words in range(1, 4):
        board.touch(WatchEvent(ID, TextDeltaEvent(id="t", delta="word "), writing))
        board.refresh({ID: writing}, now=float(words))
        seen.append(board.rows[ID].tokens_out)
    assert seen == [1, 2, 3]  # before, "0" until the next usage arrived
    assert "300/3" in _text(board, 140, now=4)
    # The usage at the end is what counts.
    done = Worker(id=ID, status="completed", usage=Usage(input_tokens=300, output_tokens=80))
    board.touch(WatchEvent(ID, None, done))
    board.refresh({ID: done}, now=5)
    assert board.rows[ID].tokens_out == 80


def test_the_totals_row_is_never_cut() -> None:
    board = Board(started=0)
    for i in range(12):
        board.rows[f"wrk_{i:020d}"] = Row(
            f"wrk_{i:020d}",
            status="running",
            started=0.0,
            tokens_in=123_456,
            tokens_out=98_765,
            cost=12.3456,
        )
    text = _text(board, 140, now=1)
    footer = text.splitlines()[-2] if not text.splitlines()[-1].strip() else text.splitlines()[-1]
    assert "12 workers" in footer and "12 running" in footer
    assert "1,481,472/1,185,180" in footer and "$148.1472" in footer
    assert "…" not in footer


def test_at_80_columns_the_id_stays_whole() -> None:
    board = Board(started=0)
    board.rows[ID] = Row(ID, status="running", started=0.0, step="writing", last_words="hello")
    for width in (80, 100):
        text = _text(board, width, now=1)
        assert ID in text, text
        assert max(len(line) for line in text.splitlines()) <= width


def test_the_rows_and_the_totals_tell_the_same_time() -> None:
    board = Board(started=100.0)
    # Created before the watch began (an existing worker): its row counts from then.
    board.rows["wrk_a"] = Row("wrk_a", status="completed", started=90.0, ended=102.25)
    board.rows["wrk_b"] = Row("wrk_b", status="running", started=101.0)
    text = _text(board, 140, now=104.5)
    assert "12.2s" in text and "3.5s" in text  # the rows
    assert re.search(r"\b14\.5s\b", text), text  # the totals: the span of the rows
    assert board.summary(now=104.5).endswith(" · 14.5s")
