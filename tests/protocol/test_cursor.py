"""The replay cursor without a network: every way a server may answer a resume.

Each case is a worker's stored events, the part of them a stream had when
its connection broke, and what the server replays when the stream resumes.
Whatever the server does, the events the cursor keeps must be exactly the
ones the stream had not received yet, in order, however the replay is cut
into reads.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from handinger_stream.protocol.cursor import ReplayCursor, not_after, reached
from handinger_stream.protocol.sse import ServerSentEvent
from handinger_stream.protocol.wire import DONE

Replay = Callable[[list[ServerSentEvent], str | None], list[ServerSentEvent]]


def worker_events(n: int, ids: str) -> list[ServerSentEvent]:
    """n stored events; ``ids`` is "decimal", "opaque" or "none"."""

    def make(i: int) -> str | None:
        if ids == "decimal":
            return str(i)
        return f"evt-{(i * 7919) % 10007:05x}" if ids == "opaque" else None

    return [ServerSentEvent(b'{"n":%d}' % i, id=make(i)) for i in range(n)]


def honours(events: list[ServerSentEvent], last_id: str | None) -> list[ServerSentEvent]:
    """A server that continues after Last-Event-ID (from the start without one)."""
    if last_id is None:
        return list(events)
    at = next(i for i, e in enumerate(events) if e.id == last_id)
    return events[at + 1 :]


def starts_over(events: list[ServerSentEvent], last_id: str | None) -> list[ServerSentEvent]:
    """A server that replays every stored event whatever the client says."""
    return list(events)


def done() -> ServerSentEvent:
    return ServerSentEvent(DONE)


def receive(cursor: ReplayCursor, events: list[ServerSentEvent]) -> None:
    """A read that arrives while nothing is being skipped (the stream's fast path)."""
    ids = [e.id for e in events if e.id is not None]
    cursor.take(len(events), ids[0] if ids else None, ids[-1] if ids else None)


def resume_through(
    cursor: ReplayCursor, replay: list[ServerSentEvent], read: int
) -> list[ServerSentEvent]:
    """Feed a replay to the cursor ``read`` events at a time; what it keeps."""
    kept: list[ServerSentEvent] = []
    for i in range(0, len(replay), read):
        kept += cursor.admit(replay[i : i + read])
    return kept


CASES = [
    # (name, ids, stream starts at, server)
    ("honours Last-Event-ID", "decimal", 0, honours),
    ("starts over, from our first event", "decimal", 0, starts_over),
    ("starts over, numeric ids on a continued turn", "decimal", 23, starts_over),
    ("honours, numeric ids on a continued turn", "decimal", 23, honours),
    ("opaque ids, honours", "opaque", 0, honours),
    ("opaque ids, starts over from our first event", "opaque", 0, starts_over),
    ("opaque ids on a continued turn, honours", "opaque", 23, honours),
    ("no ids: replay from the start, skip by count", "none", 0, starts_over),
]


@pytest.mark.parametrize("read", [1, 3, 1000])
@pytest.mark.parametrize(("name", "ids", "start", "server"), CASES, ids=[c[0] for c in CASES])
def test_a_resume_keeps_exactly_what_was_missing(
    name: str, ids: str, start: int, server: Replay, read: int
) -> None:
    stored = worker_events(40, ids)
    # A stream that did not start at the worker's first event needs an id to resume from.
    for cut in range(start + (start > 0), len(stored) + 1):
        cursor = ReplayCursor(from_start=start == 0)
        had = stored[start:cut]
        # What the stream received before its connection broke, in reads of five.
        for i in range(0, len(had), 5):
            receive(cursor, had[i : i + 5])
        assert cursor.received == len(had)
        assert cursor.unresumable() == ""
        sent_id = cursor.last_id
        skipped = cursor.resumed()
        assert skipped == (len(had) if sent_id is None else 0)
        kept = resume_through(cursor, [*server(stored, sent_id), done()], read)
        assert kept == [*stored[cut:], done()], (name, cut)
        assert cursor.received == len(stored) - start and not cursor.resuming


def test_a_second_break_while_skipping_still_resumes_exactly() -> None:
    stored = worker_events(30, "decimal")
    cursor = ReplayCursor(from_start=True)
    receive(cursor, stored[:20])
    cursor.resumed()
    # The replay starts over and breaks after 8 repeated events...
    assert cursor.admit(stored[:8]) == []
    cursor.resumed()
    # ...and the next one starts over too.
    assert resume_through(cursor, stored, 4) == stored[20:]


def test_a_cut_before_the_first_event_replays_everything() -> None:
    stored = worker_events(10, "decimal")
    cursor = ReplayCursor(from_start=True)
    assert cursor.last_id is None and cursor.resumed() == 0
    assert cursor.admit(stored) == stored


def test_events_before_the_first_id_are_skipped_by_count() -> None:
    stored = [*worker_events(3, "none"), *worker_events(10, "decimal")[3:]]
    cursor = ReplayCursor(from_start=True)
    cursor.take(2, None, None)
    assert cursor.resumed() == 2
    assert cursor.admit(stored) == stored[2:]


def test_no_ids_and_not_from_the_start_cannot_be_resumed() -> None:
    cursor = ReplayCursor(from_start=False)
    cursor.take(5, None, None)
    assert "no event ids" in cursor.unresumable()
    cursor = ReplayCursor(from_start=False)
    cursor.take(5, "70", "74")
    assert cursor.unresumable() == ""


def test_done_is_never_counted_nor_skipped() -> None:
    cursor = ReplayCursor(from_start=True)
    cursor.take(3, None, None)
    cursor.resumed()
    # A replay shorter than what we had: [DONE] still gets through.
    assert cursor.admit([ServerSentEvent(b"{}"), done()]) == [done()]


def test_decimal_ids_compare_as_numbers_and_others_only_by_equality() -> None:
    assert not_after("9", "10") and not not_after("11", "10") and not_after("10", "10")
    assert not_after("b", "b") and not not_after("a", "b") and not not_after(None, "1")
    assert not not_after("1", "x")


@pytest.mark.parametrize("ids", [True, False])
def test_a_checkpoint_is_reached_at_its_own_event(ids: bool) -> None:
    events = [str(i) if ids else None for i in range(30)]
    for position in range(1, 31):
        target_id = events[position - 1]
        first_loud = next(
            i for i, event_id in enumerate(events) if reached(target_id, position, event_id, i)
        )
        # Folded silently through the checkpoint's last event, loud from the next.
        assert first_loud == position - 1


@pytest.mark.parametrize("ids", ["decimal", "opaque"])
@pytest.mark.parametrize("server", [honours, starts_over], ids=["honours", "starts over"])
def test_a_resume_by_another_reader_keeps_exactly_what_follows_its_last_id(
    ids: str, server: Replay
) -> None:
    # A relay takes over a turn another process read: it knows the last id stored,
    # nothing of where that stream started, and sees the replay as decoded events (ids).
    stored = worker_events(30, ids)
    for cut in range(1, len(stored) + 1):
        last_id = stored[cut - 1].id
        assert last_id is not None
        cursor = ReplayCursor.resuming_after(last_id)
        replay = server(stored, last_id)
        kept = [e for e in replay if cursor.admit_id(e.id)]
        if ids == "opaque" and server is starts_over and cut > 1:
            # Opaque ids give no order: a server that starts over is not recognised.
            assert kept == stored, cut
        else:
            assert kept == stored[cut:], (ids, cut)
        # Until an event is kept (none is after a cut at the end), repeats may still come.
        assert cursor.received == len(kept) and cursor.resuming == (not kept)


# -- issue 21: ids a hostile server sends ----------------------------------------


@pytest.mark.parametrize(
    "digits",
    ["\u0663", "\u0661\u0660", "\uff13", "\u09e9", "\u00b2"],  # Arabic-Indic, full-width, ...
)
def test_digits_of_other_scripts_are_not_numbers(digits: str) -> None:
    assert not not_after(digits, "5") and not not_after("1", digits)
    # A replay that starts at such an id is taken as a continuation: nothing skipped.
    cursor = ReplayCursor(from_start=True)
    cursor.take(5, "1", "5")
    cursor.resumed()
    replay = [ServerSentEvent(b"{}", id=digits), ServerSentEvent(b"{}", id="6")]
    assert [e.id for e in cursor.admit(replay)] == [digits, "6"]


def test_ids_of_any_length_compare_without_int() -> None:
    # int() refuses 4,300 digits: a ValueError (not a HandingerError) out of a resume.
    long = "9" * 5000
    assert not_after(long, "1" + "0" * 5000) and not not_after("1" + "0" * 5000, long)
    assert not_after("0" * 6000 + "7", "8") and not_after("00", "0")
    cursor = ReplayCursor.resuming_after(long)
    assert [cursor.admit_id(i) for i in ("5", long, "1" + "0" * 5000)] == [False, False, True]
