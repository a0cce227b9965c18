"""Before and after: the same consumer from two revisions, against one server, in one run.

    python -m benchmarks.compare 281bf6e              replay and live figures, 3 rounds
    python -m benchmarks.compare 281bf6e --rounds 5

``REV`` is checked out into a temporary git worktree; each round runs
``handinger-stream (aiohttp)`` (``benchmarks/consumers.py``) once from that
tree and once from this one, interleaved, in fresh processes, against one
replay server. The medians say whether a change lost anything (issue 10's
"the benchmarks show no loss").
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .suite import measure, replay_server, spec_for

ROOT = Path(__file__).resolve().parent.parent
CONSUMER = "handinger-stream (aiohttp)"
SPECS = {
    "replay 1M, emulator shape": spec_for("emulator shape", n=1_000_000),
    "replay 1M, AI SDK shape": spec_for("AI SDK shape", n=1_000_000),
    "live 1/ms, emulator shape": spec_for("emulator shape", n=2000, pace_ms=1, stamp=1),
    "live 1/ms, AI SDK shape": spec_for("AI SDK shape", n=2000, pace_ms=1, stamp=1),
}


def _once(tree: Path, base_url: str, spec: str) -> dict[str, Any]:
    # cwd first on sys.path: the tree's own handinger_stream and consumers are imported.
    result = measure(CONSUMER, base_url, spec, cwd=tree)
    if "failed" in result:
        sys.exit(f"{tree}: {result['failed']}")
    return result


def _summary(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    live = "lag_ms" in runs[0]
    return {
        "events_per_s": statistics.median(r["events"] / r["wall_s"] for r in runs),
        "cpu_us_per_event": statistics.median(r["cpu_s"] / r["events"] * 1e6 for r in runs),
        "lag_p99_ms": statistics.median(r["lag_ms"]["p99"] for r in runs) if live else None,
    }


def compare(rev: str, rounds: int) -> dict[str, dict[str, dict[str, float | None]]]:
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(before), rev], cwd=ROOT, check=True
        )
        trees = {f"before ({rev})": before, "after": ROOT}
        try:
            out: dict[str, dict[str, dict[str, float | None]]] = {}
            with replay_server() as (base_url, _):
                for name, spec in SPECS.items():
                    runs: dict[str, list[dict[str, Any]]] = {tree: [] for tree in trees}
                    for _ in range(rounds):
                        for tree, path in trees.items():
                            runs[tree].append(_once(path, base_url, spec))
                    out[name] = {tree: _summary(r) for tree, r in runs.items()}
                    for tree, s in out[name].items():
                        lag = "" if s["lag_p99_ms"] is None else f"  p99 {s['lag_p99_ms']:.2f} ms"
                        print(
                            f"{name:28} {tree:20} {s['events_per_s']:12,.0f} ev/s"
                            f"  CPU {s['cpu_us_per_event']:7.2f} µs/ev{lag}",
                            file=sys.stderr,
                            flush=True,
                        )
            return out
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False
            )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare")
    parser.add_argument("rev", help="the revision to compare this tree with")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(compare(args.rev, args.rounds), indent=1))


if __name__ == "__main__":
    main()
