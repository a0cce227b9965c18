"""The watch benchmark scenario runs (as a tiny smoke: 20 workers for 2 s), so that it does not rot.

Its numbers are not asserted here (shared, noisy machines): only that every
event reached each consumer once. ``python -m benchmarks watch`` measures.
"""

from __future__ import annotations

from tests.helpers.benchmarks import benchmark


def test_the_watch_scenario_runs_and_delivers_every_event_once() -> None:
    result = benchmark("watch", "--smoke")
    for consumer in ("streams", "watch"):
        body = result["consumers"][consumer]
        assert body["every_event_once"] and body["events"] == 20 * (100 + 4)
    assert result["targets"]["every event delivered once"]
    # The targets are ratios to separate streams in the same run (figures drift on a
    # shared machine; a round's pair does not).
    assert set(result["targets"]) == {
        "every event delivered once",
        "lag p50 within 1.2x of one WorkerStream each",
        "lag p99 within 1.2x of one WorkerStream each",
        "CPU per event within 1.05x of one WorkerStream each",
    }
