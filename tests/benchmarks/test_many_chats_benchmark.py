"""The many-chats benchmark runs (as a tiny smoke: 10 chats x 20 readers, 20 events, both
stores), so that it does not rot.

Its numbers are not asserted here (shared, noisy machines): only that every reader got
every event of its chat's turn, and that the relay holds fewer Redis connections than it
has readers, with one blocked ``XREAD`` per chat at most (the readers of a chat share one).
``python -m benchmarks.many_chats`` measures (1,000 chats x 10 readers by default).
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers.benchmarks import ROOT

CHATS, PER_CHAT, EVENTS = 10, 20, 20
# Around the deltas: start, text-start, text-end and finish; then the relay's end marker.
AROUND = 4 + 1


def test_many_chats_every_reader_gets_every_event_on_few_redis_connections() -> None:
    size = ["--chats", str(CHATS), "--readers-per-chat", str(PER_CHAT), "--events", str(EVENTS)]
    options = ["--pace-ms", "50", "--idle-pause-s", "60", "--store", "both"]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.many_chats", *size, *options],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [r["store"] for r in result["results"]] == ["redis", "memory"]
    readers = CHATS * PER_CHAT
    for body in result["results"]:
        assert "failed" not in body, body
        active, idle = body["active"], body["idle"]
        assert active["every_reader_got_every_event"], active["chats_short_ids"]
        assert active["readers_complete"] == readers and active["statuses"] == {
            "200": readers + CHATS
        }
        assert active["posts_complete"] == CHATS
        assert active["relay_cpu_us_per_delivered_event"] > 0
        assert active["lag_ms_p50"] is not None
        # The idle readers joined a running turn, and were still waiting on it.
        assert idle["readers"] == readers and idle["readers_waiting"] == readers
        assert idle["reader_events_max"] <= 2 + AROUND  # this turn's events, nothing else
        if body["store"] == "redis":
            for phase in (active, idle):
                assert phase["redis_clients_peak"] < readers, phase
                assert 0 < phase["redis_blocked_peak"] <= CHATS, phase
