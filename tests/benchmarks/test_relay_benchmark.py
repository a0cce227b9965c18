"""The relay benchmark runs (as a tiny smoke: 5 readers, 50 events, both stores), so that it
does not rot.

Its numbers are not asserted here (shared, noisy machines): only that every reader got
every event of the turn. ``python -m benchmarks relay`` measures.
"""

from __future__ import annotations

from tests.helpers.benchmarks import benchmark

EVENTS = 50
# Around the deltas: start, text-start, text-end and finish; then the relay's end marker.
AROUND = 4 + 1


def test_the_relay_scenario_runs_and_every_reader_gets_every_event() -> None:
    result = benchmark("relay", "--readers", "5", "--events", str(EVENTS))
    assert [r["store"] for r in result["results"]] == ["memory", "redis"]
    for body in result["results"]:
        assert body["expected_events"] == EVENTS + AROUND
        assert body["every_reader_got_every_event"] and body["readers_complete"] == 5
        assert body["cpu_us_per_delivered_event"] > 0 and body["lag_ms_p50"] is not None
