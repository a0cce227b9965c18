"""Replay ratios side by side: handinger-stream against the hand loop and httpx-sse.

    python -m benchmarks.replay_ratios                 # 1M events, emulator shape, 3 rounds
    python -m benchmarks.replay_ratios -n 200000 --rounds 5

Each round runs every consumer once, interleaved, in fresh processes against
one replay server (``benchmarks/suite.py``), so the ratios come from one run
on one machine's load. Prints medians of events per second and the ratios the
issue's targets name (ours ÷ each peer).
"""

from __future__ import annotations

import argparse
import statistics

from .suite import measure, replay_server, spec_for

OURS = "handinger-stream (aiohttp)"
PEERS = ("hand loop (aiohttp + msgspec)", "httpx-sse + msgspec")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replay_ratios")
    parser.add_argument("-n", type=int, default=1_000_000, help="events in the replay")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", default="emulator shape", help="or 'AI SDK shape'")
    args = parser.parse_args()
    spec = spec_for(args.shape, n=args.n)
    rates: dict[str, list[float]] = {name: [] for name in (OURS, *PEERS)}
    with replay_server() as (base_url, _):
        measure(PEERS[0], base_url, spec)  # warm the server's caches, as the suite does
        for _ in range(args.rounds):
            for name in rates:
                result = measure(name, base_url, spec)
                rates[name].append(result["events"] / result["wall_s"])
    medians = {name: statistics.median(r) for name, r in rates.items()}
    for name, rate in medians.items():
        print(
            f"{name:32} {rate:12,.0f} events/s",
            "(rounds: " + ", ".join(f"{r:,.0f}" for r in rates[name]) + ")",
        )
    for peer in PEERS:
        print(f"{OURS} / {peer}: {medians[OURS] / medians[peer]:.2f}x")


if __name__ == "__main__":
    main()
