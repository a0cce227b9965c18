"""The side-by-side suite: every consumer in its own subprocess, rounds interleaved.

One replay server (``benchmarks.server``) runs in its own process for the whole
suite; each measurement starts a fresh ``python -m benchmarks.consumers``
process, so imports, caches and peak RSS never leak from one to the next.
Rounds go A B C … A B C …, so drift on a shared machine hits all alike.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from . import fold
from .consumers import CONSUMERS

LIMITS = ["limit: read", "limit: split"]
HAND = "hand loop (aiohttp + msgspec)"
PEERS = [HAND, "httpx-sse + json", "httpx-sse + msgspec", "handinger SDK", "openai AsyncStream"]
OURS = ["handinger-stream (aiohttp)", "handinger-stream (httpx)"]
ALL = LIMITS + PEERS + OURS
# The shapes users receive, the emulator's own first: an id on every event, snapshots.
SHAPES = {"emulator shape": "ids=1", "AI SDK shape": ""}


@contextmanager
def replay_server() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        port = json.loads(process.stdout.readline())["port"]
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.stdin.close()
        process.wait(10)
        process.stdout.close()


def server_cpu(process: subprocess.Popen[str]) -> float:
    """CPU seconds the server process has used so far."""
    with open(f"/proc/{process.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    consumer: str, base_url: str, spec: str, streams: int = 1, cwd: Path | None = None
) -> dict[str, Any]:
    """One consumer's run in a fresh process (``cwd``: the tree whose code it runs)."""
    job = json.dumps({"base_url": base_url, "spec": spec, "streams": streams})
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.consumers", consumer, job],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=cwd,
    )
    if done.returncode != 0:
        # The last line naming an exception says more than a traceback's frame.
        lines = [ln.strip(" |+") for ln in done.stderr.splitlines()]
        named = [ln for ln in lines if re.match(r"[\w.]+(Error|Exception|Timeout)\b", ln)]
        return {"consumer": consumer, "failed": (named or lines or ["no output"])[-1]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "failed" not in r]
    if not ok:
        return {"failed": runs[0].get("failed")}
    rates = [r["events"] / r["wall_s"] for r in ok]
    cpu_per_event = [r["cpu_s"] / max(r["events"], 1) * 1e6 for r in ok]
    out: dict[str, Any] = {
        "rounds": len(ok),
        "events": ok[0]["events"],
        "text_chars": ok[0]["text_chars"],
        "events_per_s": {"median": statistics.median(rates), "min": min(rates), "max": max(rates)},
        "cpu_us_per_event": statistics.median(cpu_per_event),
        "wall_s": statistics.median(r["wall_s"] for r in ok),
        "peak_rss_mib": statistics.median(r["peak_rss_kib"] for r in ok) / 1024,
        "baseline_rss_mib": statistics.median(r["baseline_rss_kib"] for r in ok) / 1024,
    }
    if "lag_ms" in ok[0]:
        for q in ("p50", "p90", "p99", "max"):
            out[f"lag_{q}_ms"] = statistics.median(r["lag_ms"][q] for r in ok)
        out["lag_samples"] = ok[0]["lag_samples"]
    return out


def run_scenario(
    base_url: str,
    server: subprocess.Popen[str],
    name: str,
    spec: str,
    consumers: list[str],
    rounds: int,
    streams: int = 1,
) -> dict[str, Any]:
    print(f"# {name}: {spec} x{streams}, {rounds} rounds", file=sys.stderr, flush=True)
    measure(consumers[0], base_url, spec, streams)  # warm the server's caches
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in consumers}
    server_cpu_s: list[float] = []
    for _ in range(rounds):
        for consumer in consumers:
            cpu0, t0 = server_cpu(server), time.perf_counter()
            result = measure(consumer, base_url, spec, streams)
            wall = time.perf_counter() - t0
            server_cpu_s.append((server_cpu(server) - cpu0) / wall)
            runs[consumer].append(result)
            rate = result.get("events", 0) / result["wall_s"] if "wall_s" in result else 0
            print(f"  {consumer:28} {rate:12,.0f} events/s", file=sys.stderr, flush=True)
    return {
        "spec": spec,
        "streams": streams,
        "server_cpu_share": statistics.median(server_cpu_s),
        "consumers": {c: summarise(r) for c, r in runs.items()},
    }


# The concurrency targets compare with the hand loop; the slow peers are left out
# (each round paces 20 s per consumer): see the README for what they did before.
CONCURRENT = ["limit: split", HAND, "httpx-sse + msgspec", "handinger-stream (aiohttp)"]
PACINGS = ((1000, 20), (500, 5))


def spec_for(shape: str, **params: Any) -> str:
    """A server spec: the shape's parameters, then these."""
    parts = [f"{k}={v}" for k, v in params.items()]
    return "&".join(parts + ([SHAPES[shape]] if SHAPES[shape] else []))


def run_concurrency(
    base_url: str,
    server: subprocess.Popen[str],
    consumers: list[str],
    rounds: int,
    quick: bool = False,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for streams, pace in PACINGS:
        n = 20 if quick else 1000
        count = max(streams // 20, 2) if quick else streams
        out[f"concurrency {streams}x{1000 // pace}/s (emulator shape)"] = run_scenario(
            base_url,
            server,
            "concurrency",
            spec_for("emulator shape", n=n, pace_ms=pace, stamp=1),
            consumers,
            rounds,
            streams=count,
        )
    return out


def add_concurrency(results: dict[str, Any], consumers: list[str], rounds: int) -> None:
    """Measure more consumers in the concurrency scenarios and merge them into ``results``."""
    with replay_server() as (base_url, server):
        extra = run_concurrency(base_url, server, consumers, rounds)
    for key, scenario in extra.items():
        target = results["scenarios"].setdefault(key, scenario)
        if target is not scenario:
            target["consumers"].update(scenario["consumers"])


def machine() -> dict[str, Any]:
    packages = {}
    names = ("handinger-stream", "aiohttp", "httpx", "httpx-sse", "msgspec", "anyio")
    for name in (*names, "handinger", "openai", "pydantic"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "packages": packages,
        "date": time.strftime("%Y-%m-%d"),
    }


def run_all(*, rounds: int = 5, concurrency_rounds: int = 3, quick: bool = False) -> dict[str, Any]:
    """Every scenario; ``quick`` shrinks them to a few hundred events (the CI smoke).

    Concurrency rounds are fewer: each one paces 1,000 events 20 ms apart,
    so it lasts at least 20 s per consumer and stream count.
    """
    scale = 0.002 if quick else 1.0
    results: dict[str, Any] = {
        "machine": machine(),
        "rounds": rounds,
        "concurrency_rounds": concurrency_rounds,
        "quick": quick,
        "scenarios": {},
    }
    scenarios = results["scenarios"]
    with replay_server() as (base_url, server):
        for shape in SHAPES:
            for n in (100_000, 1_000_000):
                count = max(int(n * scale), 200)
                scenarios[f"replay {n:,} ({shape})"] = run_scenario(
                    base_url, server, f"replay {n:,}", spec_for(shape, n=count), ALL, rounds
                )
        live_n = max(int(2000 * scale), 200)
        for shape in SHAPES:
            scenarios[f"live 1/ms ({shape})"] = run_scenario(
                base_url, server, "live", spec_for(shape, n=live_n, pace_ms=1, stamp=1), ALL, rounds
            )
        rounds_here = concurrency_rounds if not quick else 1
        scenarios.update(run_concurrency(base_url, server, CONCURRENT, rounds_here, quick))
    fold_runs = [fold.run(max(int(1_000_000 * scale), 500)) for _ in range(rounds)]
    results["fold"] = {
        key: fold_runs[0][key] if key == "deltas" else statistics.median(r[key] for r in fold_runs)
        for key in fold_runs[0]
    }
    return results


__all__ = ["ALL", "CONSUMERS", "SHAPES", "add_concurrency", "run_all", "spec_for"]
