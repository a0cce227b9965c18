"""``python -m benchmarks fold [N]`` or ``python -m benchmarks smoke``."""

from __future__ import annotations

import argparse
import json

from . import fold


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("scenario", choices=["fold", "smoke"])
    parser.add_argument("-n", type=int, default=1_000_000, help="number of deltas")
    args = parser.parse_args()
    if args.scenario == "smoke":
        # Keeps the suite from rotting; a few hundred events, no numbers judged.
        result = fold.run(500)
        print(f"benchmarks smoke: fold of {result['deltas']} deltas ran")
        return
    print(json.dumps(fold.run(args.n), indent=2))


main()
