"""The WebSocket fan-out benchmark runs (as a tiny smoke: 5 readers per transport, 50 events),
so that it does not rot.

Its numbers are not asserted here (shared, noisy machines): only that every reader of
either transport got every event of the turn. ``python -m benchmarks relay-ws`` measures.
"""

from __future__ import annotations

from benchmarks.relay_ws import section
from tests.helpers.benchmarks import benchmark

EVENTS = 50
# Around the deltas: start, text-start, text-end and finish; then the turn's end.
AROUND = 4 + 1


def test_the_websocket_fan_out_runs_and_every_reader_of_both_transports_gets_every_event() -> None:
    result = benchmark("relay-ws", "--readers", "5", "--events", str(EVENTS))
    assert [(r["store"], r["run"]) for r in result["results"]] == [
        ("memory", "sse"),
        ("memory", "ws"),
        ("memory", "both"),
    ]
    for body in result["results"]:
        assert body["expected_events"] == EVENTS + AROUND
        assert body["cpu_us_per_delivered_event"] > 0
        for figures in body["transports"].values():
            assert figures["every_reader_got_every_event"] and figures["readers_complete"] == 5
            assert figures["lag_ms_p50"] is not None
    assert sorted(result["results"][2]["transports"]) == ["sse", "ws"]
    assert any("| memory | both | ws | 5 | yes |" in line for line in section(result))
