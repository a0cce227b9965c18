"""``python -m benchmarks all | smoke | report | fold | concurrency | watch | relay | relay-ws
| fanout | many-chats``.

See ``benchmarks/README.md``. ``watch --save``, ``relay --save``, ``relay-ws --save`` and
``fanout --save`` merge their figures into ``benchmarks/results.json`` (``all`` keeps them)
and re-render the docs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import fold
from .report import render
from .suite import add_concurrency, run_all

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results.json"
RELAY_STORES = ["memory", "redis"]
SEPARATE = ("watch", "relay", "relay_ws", "fanout")  # scenarios with commands of their own


def _render(result: dict[str, Any], docs: Path) -> Path:
    return render(result, docs)


def _save(key: str, figures: dict[str, object]) -> None:
    result = json.loads(RESULTS.read_text(encoding="utf-8"))
    result[key] = figures
    RESULTS.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {_render(result, ROOT / 'docs')}", file=sys.stderr)


def main() -> None:
    if sys.argv[1:2] == ["watch"]:  # the watch scenario has options of its own
        from .watch import main as watch

        argv = [a for a in sys.argv[2:] if a != "--save"]
        watched = watch(argv)
        if "--save" in sys.argv[2:]:
            _save("watch", watched)
        return
    if sys.argv[1:2] == ["many-chats"]:  # so has this one (prints its JSON)
        from .many_chats import main as many_chats

        many_chats(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument(
        "command",
        choices=["all", "smoke", "report", "fold", "concurrency", "relay", "relay-ws", "fanout"],
    )
    parser.add_argument(
        "--consumers", nargs="*", help="concurrency: the consumers to (re)measure and merge"
    )
    parser.add_argument("-n", type=int, default=1_000_000, help="fold: number of deltas")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency-rounds", type=int, default=3)
    parser.add_argument(
        "--readers", type=int, default=1000, help="relay: SSE readers; relay-ws: per transport"
    )
    parser.add_argument(
        "--events", type=int, default=2000, help="relay, fanout: events in the turn"
    )
    parser.add_argument(
        "--pace-ms", type=float, default=5.0, help="fanout: milliseconds between events"
    )
    parser.add_argument(
        "--join",
        choices=["before", "during"],
        default="before",
        help="fanout: the readers join as the turn begins, or spread over its first half",
    )
    parser.add_argument(
        "--systems",
        nargs="*",
        help="fanout: relay-memory relay-redis resumable minimal (default: all four)",
    )
    parser.add_argument(
        "--stores", nargs="*", help="relay: stores (memory redis); relay-ws: (memory)"
    )
    parser.add_argument(
        "--save",
        action="store_true",
        help="relay, relay-ws, fanout: merge into results.json and re-render the docs",
    )
    args = parser.parse_args()
    if args.command == "relay":
        from . import relay

        relayed = relay.run(args.readers, args.events, stores=tuple(args.stores or RELAY_STORES))
        print(json.dumps(relayed, indent=2))
        if args.save:
            _save("relay", relayed)
    elif args.command == "relay-ws":
        from . import relay_ws

        both = relay_ws.run(args.readers, args.events, stores=tuple(args.stores or ["memory"]))
        print(json.dumps(both, indent=2))
        if args.save:
            _save("relay_ws", both)
    elif args.command == "fanout":
        from . import fanout

        systems = tuple(args.systems or fanout.SYSTEMS)
        fanned = fanout.run(args.readers, args.events, args.pace_ms, args.join, systems)
        print(json.dumps(fanned, indent=2))
        if args.save:
            # One entry per mode (readers, events, join): a run replaces its own mode's.
            before = json.loads(RESULTS.read_text(encoding="utf-8")).get("fanout", {})
            _save("fanout", {**before, fanout.label(fanned): fanned})
    elif args.command == "fold":
        print(json.dumps(fold.run(args.n), indent=2))
    elif args.command == "smoke":
        # Every scenario and consumer, a few hundred events, one round: only that it runs.
        result = run_all(rounds=1, quick=True)
        failed = [
            f"{scenario}: {name}"
            for scenario, body in result["scenarios"].items()
            for name, entry in body["consumers"].items()
            if "failed" in entry
        ]
        with tempfile.TemporaryDirectory() as tmp:
            render(result, Path(tmp))
        if failed:
            sys.exit(f"benchmarks smoke: failed: {failed}")
        print(
            f"benchmarks smoke: {len(result['scenarios'])} scenarios ran, and the report rendered"
        )
    else:
        if args.command == "all":
            result = run_all(rounds=args.rounds, concurrency_rounds=args.concurrency_rounds)
            if RESULTS.exists():  # the separate commands' figures stay until they re-run
                before = json.loads(RESULTS.read_text(encoding="utf-8"))
                result.update({k: before[k] for k in SEPARATE if k in before})
            RESULTS.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        if args.command == "concurrency":
            result = json.loads(RESULTS.read_text(encoding="utf-8"))
            add_concurrency(result, args.consumers or [], args.concurrency_rounds)
            RESULTS.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        result = json.loads(RESULTS.read_text(encoding="utf-8"))
        print(f"wrote {_render(result, ROOT / 'docs')}")


main()
