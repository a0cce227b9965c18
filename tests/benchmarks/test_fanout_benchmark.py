"""The four-system fan-out benchmark runs (as a tiny smoke: 20 readers, 100 events, all four
systems, joined at the start and during the turn), so that it does not rot.

Its numbers are not asserted here (shared, noisy machines): only that every reader got
every event (by content: the relay may merge a backlog's deltas): the whole turn from the relay and resumable-stream, which replay a joiner the
turn from its start; from its joining on from the minimal fan-out, which keeps no history.
``python -m benchmarks fanout`` measures. resumable-stream needs node and npm (its locked
packages are installed on the first run).
"""

from __future__ import annotations

import shutil

import pytest

from tests.helpers.benchmarks import benchmark

READERS = 20
EVENTS = 100
SYSTEMS = ["relay-memory", "relay-redis", "resumable", "minimal"]
REPLAYING = {"relay-memory", "relay-redis", "resumable"}


@pytest.mark.parametrize("join", ["before", "during"])
def test_the_fanout_scenario_runs_and_every_reader_gets_every_event(join: str) -> None:
    if not (shutil.which("node") and shutil.which("npm") and shutil.which("redis-server")):
        pytest.skip("node, npm and redis-server are needed for the four systems")
    args = ["--readers", str(READERS), "--events", str(EVENTS), "--join", join]
    result = benchmark("fanout", *args)
    assert [r["system"] for r in result["results"]] == SYSTEMS
    for body in result["results"]:
        assert body["turn_deltas"] == EVENTS, body["system"]
        assert body["readers_complete"] == READERS, body["system"]
        assert body["every_reader_got_every_event_from_join"], body["system"]
        if body["system"] in REPLAYING:
            assert body["every_reader_got_every_event"], body["system"]
            assert body["readers_missing_events_sent_after_connecting"] == 0, body["system"]
        assert body["cpu_us_per_delivered_delta_total"] is not None, body["system"]
        assert body["lag_ms_p50"] is not None and body["join_wait_ms_p99"] is not None
