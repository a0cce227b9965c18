"""The hand-over core without a network: the states' table, the queue, the fold.

What the driver (``client/stream.py``) does with the core is written here
with plain values: ``hand_over`` below takes items the way the stream's
iterators and ``_step`` do, minus the reads.
"""

from __future__ import annotations

from collections import deque
from itertools import product

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handinger_stream.errors import StreamDecodeError
from handinger_stream.protocol.handover import (
    BROKEN,
    CLOSED,
    DONE,
    FAILED,
    FINAL,
    FINISHED,
    OPEN,
    RESUMING,
    TRANSITIONS,
    Handover,
    StreamState,
    TooLarge,
    TransitionError,
)
from handinger_stream.types.events import (
    Event,
    Reconnected,
    TextDeltaEvent,
    TextStartEvent,
    WorkerSnapshotEvent,
)
from handinger_stream.types.worker import Worker

LIVE = [state for state in StreamState if state not in FINAL]

# -- the states ------------------------------------------------------------------

# Every transition the driver makes, and why: the table must allow exactly these.
DRIVER_TRANSITIONS = {
    (OPEN, DONE): "[DONE] decoded",
    (OPEN, BROKEN): "the connection broke, ended, or was silent past a stall limit",
    (OPEN, FAILED): "a bad event raised",
    (DONE, FINISHED): "all before [DONE] handed over, the connection drained",
    (DONE, FAILED): "a bad event before [DONE] raised",
    (BROKEN, RESUMING): "a resume begins",
    (BROKEN, FINISHED): "a clean end, and the worker completed",
    (BROKEN, FAILED): "not resumable, out of attempts, the total limit, or a bad event raised",
    (RESUMING, OPEN): "reopened: a stream",
    (RESUMING, FINISHED): "reopened: a JSON answer, nothing to follow",
    (RESUMING, BROKEN): "interrupted (cancelled): the next step decides again",
    (RESUMING, FAILED): "reopening failed for good",
    **{(state, CLOSED): "its consumer closed it" for state in LIVE},
}


@pytest.mark.parametrize(("start", "end"), list(product(StreamState, StreamState)))
def test_a_transition_happens_exactly_when_the_table_allows_it(
    start: StreamState, end: StreamState
) -> None:
    handover = Handover(state=start)
    if (start, end) in DRIVER_TRANSITIONS:
        assert end in TRANSITIONS[start]
        handover.enter(end)
        assert handover.state is end
    else:
        assert end not in TRANSITIONS[start]
        with pytest.raises(TransitionError, match=f"from {start.name} to {end.name}"):
            handover.enter(end)
        assert handover.state is start  # a refused transition changes nothing


def test_every_state_is_reached_from_open_and_every_live_one_can_end() -> None:
    def reachable(start: StreamState) -> set[StreamState]:
        seen, todo = {start}, deque([start])
        while todo:
            for then in TRANSITIONS[todo.popleft()] - seen:
                seen.add(then)
                todo.append(then)
        return seen

    assert reachable(OPEN) == set(StreamState)
    assert FINAL == {FINISHED, FAILED, CLOSED}
    for state in LIVE:
        assert {FAILED, CLOSED} <= TRANSITIONS[state]
        assert FINISHED in reachable(state)


@given(st.lists(st.sampled_from(list(StreamState)), max_size=30))
def test_a_random_walk_moves_only_along_the_table_and_stops_at_an_end(
    walk: list[StreamState],
) -> None:
    handover, entered = Handover(), [OPEN]
    for then in walk:
        before = handover.state
        if then in TRANSITIONS[before]:
            handover.enter(then)
            entered.append(then)
        else:
            with pytest.raises(TransitionError):
                handover.enter(then)
        assert handover.state is entered[-1]
        assert handover.reached_done == (DONE in entered)
    # Nothing comes after an end.
    assert all(state not in FINAL for state in entered[:-1])


@pytest.mark.parametrize("state", list(StreamState))
def test_closing_ends_a_live_stream_and_leaves_an_ended_one_as_it_was(
    state: StreamState,
) -> None:
    handover = Handover(state=state)
    handover.close()
    assert handover.state is (CLOSED if state in LIVE else state)
    handover.close()  # twice: nothing more
    assert handover.state is (CLOSED if state in LIVE else state)


def test_done_is_remembered_whatever_the_stream_becomes() -> None:
    handover = Handover()
    handover.enter(DONE)
    handover.close()
    assert handover.state is CLOSED and handover.reached_done


# -- the queue -------------------------------------------------------------------


def _start() -> TextStartEvent:
    return TextStartEvent(id="t")


def _delta(text: str, event_id: str | None = None) -> TextDeltaEvent:
    event = TextDeltaEvent(id="t", delta=text)
    event.event_id = event_id
    return event


def _bad(reason: str = "not JSON") -> StreamDecodeError:
    return StreamDecodeError(reason, index=0, event_id="b", data=b"{")


def _decoded(handover: Handover, items: list[Event | StreamDecodeError]) -> None:
    """What the driver does with one read: items into the queue, bad ones listed."""
    for item in items:
        if isinstance(item, StreamDecodeError):
            handover.stops.append(len(handover.queue))
        handover.queue.append(item)
    handover.set_limit()


def hand_over(handover: Handover) -> list[Event | Reconnected | StreamDecodeError]:
    """Everything the queue holds, in the order a stream's ``events(reconnects=True)`` gives it.

    Bad events come out as their errors, whether raised or skipped.
    """
    out: list[Event | Reconnected | StreamDecodeError] = []
    while True:
        head = handover.head
        if head < handover.limit:
            handover.head = head + 1
            out.append(handover.queue[head])
        elif handover.notice is not None:
            notice = handover.pop_notice()
            assert notice is not None
            out.append(notice)
        elif head < len(handover.queue):
            out.append(handover.hand_over_bad(head))
        else:
            return out


def test_plain_events_end_at_the_first_bad_one() -> None:
    handover = Handover("w1", events=[_start()])
    _decoded(handover, [_delta("a"), _bad(), _delta("b"), _bad("twice"), _delta("c")])
    assert (handover.head, handover.limit, handover.stops) == (0, 2, [2, 4])
    handover.head = handover.limit  # the two plain events, as an iterator takes them
    error = handover.hand_over_bad(2)
    assert (error.index, error.event_id, error.reason) == (2, "b", "not JSON")
    assert error.worker is not None and error.worker.output_text == "a"
    assert (handover.head, handover.limit, handover.stops) == (3, 4, [4])


def test_a_bad_event_is_skipped_when_asked_but_an_oversized_one_never() -> None:
    raising = Handover(events=[_start()])
    _decoded(raising, [_bad()])
    assert not raising.skips(1)
    skipping = Handover(events=[_start()], skip_bad=True)
    _decoded(skipping, [_bad()])
    skipping.add_too_large("event too large", "9")
    assert skipping.skips(1)
    assert not skipping.skips(2) and isinstance(skipping.queue[2], TooLarge)
    assert skipping.stops == [1, 2] and skipping.limit == 1


def test_a_notice_comes_before_the_events_the_resume_brought() -> None:
    handover = Handover(events=[_start(), _delta("a")])
    handover.head = 2
    handover.next_batch()
    notice = Reconnected(attempt=1, reason="broke", delay=0.5, last_event_id=None)
    handover.post_notice(notice, [_start(), _delta("b")])
    assert handover.limit == handover.head == 0  # nothing plain before the notice
    assert hand_over(handover) == [notice, _start(), _delta("b")]
    assert handover.index == 4


def test_a_new_batch_keeps_counting_and_folds_what_was_handed_over() -> None:
    handover = Handover("w1", events=[_start(), _delta("a", "1")])
    handover.head = handover.limit
    handover.next_batch()
    assert (handover.queue, handover.index, handover.last_event_id) == ([], 2, "1")
    _decoded(handover, [_delta("b", "2"), _delta("c")])
    handover.head = 1
    assert handover.index == 3
    assert handover.snapshot().output_text == "ab"
    assert handover.last_event_id == "2"
    assert not handover.fold()  # nothing new since


def test_closing_keeps_what_was_handed_over_and_drops_the_rest() -> None:
    handover = Handover("w1", events=[_start(), _delta("a"), _delta("b")])
    _decoded(handover, [_bad()])
    handover.notice = Reconnected(attempt=1, reason="", delay=0.0, last_event_id=None)
    handover.head = 2
    handover.close()
    assert handover.snapshot().output_text == "a"
    assert handover.notice is None
    assert (len(handover.queue), handover.stops) == (2, [])
    assert handover.limit == handover.head == 2  # nothing more to hand over
    assert hand_over(handover) == []


# One read's worth: text deltas (with or without an SSE id), and bad events (None).
_items = st.lists(
    st.one_of(
        st.tuples(st.text("xyz", max_size=3), st.one_of(st.none(), st.integers(0, 99))),
        st.none(),
    ),
    max_size=8,
)


@given(st.lists(_items, max_size=6), st.booleans(), st.data())
def test_what_is_handed_over_is_what_was_decoded_in_order_and_folded_exactly(
    reads: list[list[tuple[str, int | None] | None]], skip_bad: bool, data: st.DataObject
) -> None:
    start = _start()
    handover = Handover("w1", events=[start], skip_bad=skip_bad)
    sent: list[Event | StreamDecodeError] = [start]
    got: list[Event | Reconnected | StreamDecodeError] = []
    for read in reads:
        if data.draw(st.booleans(), label="handed over before the read"):
            got += hand_over(handover)
        if handover.head == len(handover.queue):
            handover.next_batch()  # the driver reads only once all was handed over
        items: list[Event | StreamDecodeError] = [
            _bad() if item is None else _delta(item[0], _id(item[1])) for item in read
        ]
        sent += items
        _decoded(handover, items)
    got += hand_over(handover)

    assert len(got) == len(sent) == handover.index
    for index, (given_, handed) in enumerate(zip(sent, got, strict=True)):
        if isinstance(given_, StreamDecodeError):
            assert isinstance(handed, StreamDecodeError) and handed.index == index
        else:
            assert handed is given_
    text = "".join(e.delta for e in sent if isinstance(e, TextDeltaEvent))
    assert handover.snapshot().output_text == text
    ids = [e.event_id for e in sent if isinstance(e, TextDeltaEvent) and e.event_id is not None]
    assert handover.last_event_id == (ids[-1] if ids else None)


def _id(number: int | None) -> str | None:
    return None if number is None else str(number)


def test_a_failure_keeps_its_error_for_the_observer() -> None:
    handover = Handover("w1")
    error = _bad()
    handover.fail(error)
    handover.close()  # the driver closes after raising it: still FAILED
    assert handover.state is FAILED and handover.error is error
    with pytest.raises(TransitionError):
        handover.fail(_bad("again"))
    assert handover.error is error


def test_the_worker_id_is_what_the_events_handed_over_tell() -> None:
    snapshot = WorkerSnapshotEvent(worker=Worker(id="w2"), fields=frozenset({"id"}))
    handover = Handover(events=[snapshot])
    assert handover.worker_id == ""  # not handed over yet
    handover.head = 1
    assert handover.worker_id == "w2"
