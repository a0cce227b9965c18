"""The stall clock without a network or a real clock: which limit expires when."""

from __future__ import annotations

from handinger_stream.protocol.stall import Limit, StallClock


def test_first_event_then_idle_restart_with_each_event() -> None:
    clock = StallClock(first_event=10.0, idle=30.0, total=None)
    assert clock.limit is None  # not started
    clock.start(100.0)
    assert clock.limit == Limit("first_event", 10.0, 110.0)
    clock.start(104.0)  # reading again does not restart anything
    assert clock.limit == Limit("first_event", 10.0, 110.0)
    clock.progress(105.0)
    assert clock.limit == Limit("idle", 30.0, 135.0)
    clock.progress(120.0)
    assert clock.limit == Limit("idle", 30.0, 150.0)


def test_a_new_connection_gets_the_whole_allowance() -> None:
    clock = StallClock(first_event=10.0, idle=30.0, total=None)
    clock.start(0.0)
    clock.connected(8.0)  # resumed before any event: first_event restarts
    assert clock.limit == Limit("first_event", 10.0, 18.0)
    clock.progress(9.0)
    clock.connected(30.0)
    assert clock.limit == Limit("idle", 30.0, 60.0)


def test_the_total_limit_runs_from_the_start_and_wins_when_nearer() -> None:
    clock = StallClock(first_event=10.0, idle=30.0, total=50.0)
    clock.start(0.0)
    assert clock.limit == Limit("first_event", 10.0, 10.0)
    clock.progress(5.0)
    assert clock.limit == Limit("idle", 30.0, 35.0)
    clock.progress(25.0)  # idle would expire at 55, after the total deadline
    assert clock.limit == Limit("total", 50.0, 50.0)
    clock.connected(49.0)
    assert clock.limit == Limit("total", 50.0, 50.0)


def test_limits_turned_off() -> None:
    clock = StallClock(first_event=None, idle=None, total=None)
    clock.start(0.0)
    clock.progress(1.0)
    assert clock.limit is None
    clock = StallClock(first_event=None, idle=5.0, total=None)
    clock.start(0.0)
    assert clock.limit is None  # no first-event limit, and no event yet
    clock.progress(2.0)
    assert clock.limit == Limit("idle", 5.0, 7.0)
